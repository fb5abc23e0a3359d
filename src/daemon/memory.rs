//! Giving memory back after a load. A burst of clients (a thread each,
//! each acquire reading a whole lease area) used to leave the daemon at
//! 8-18x its idle RSS for good: glibc kept a heap arena per busy thread
//! (up to 8 x cores), raised its mmap threshold so that freed 1 MiB I/O
//! buffers stayed in the heap, cached the stacks of exited threads (40
//! MiB), and the I/O pool kept 64 idle threads. Under `-l 2` all of it
//! stayed locked. Here: two arenas, a fixed mmap threshold (large buffers
//! are mapped and unmapped; `io::buf` keeps a small bounded pool), no
//! stack cache, small connection stacks, and a periodic `malloc_trim`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The stack of a connection's thread. Commands run on it (acquire with
/// its Paxos rounds, rindex updates, the history as JSON), none deeply
/// recursive; 512 KiB leaves room in a debug build. Under `-l 2` each
/// thread's stack is resident while it lives.
pub const CONN_STACK: usize = 512 * 1024;

/// Heap arenas: one for the main thread, one shared by the others (the
/// daemon's threads mostly wait on sockets and disks, not on malloc).
const ARENA_MAX: libc::c_int = 2;
/// Allocations from this size up are mapped on their own and unmapped
/// when freed (glibc's default, fixed so it does not climb to 32 MiB).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// Free memory at the top of a heap beyond this goes back at once.
const TRIM_THRESHOLD: libc::c_int = 128 * 1024;
/// `malloc_trim` at most this often, and only after connections.
const TRIM_EVERY: Duration = Duration::from_secs(10);

const TUNABLE: &str = "glibc.pthread.stack_cache_size=0";

/// glibc keeps up to 40 MiB of exited threads' stacks for reuse, and that
/// can only be set when a process starts: re-executes the daemon (same
/// pid, same arguments) with `GLIBC_TUNABLES` saying so, once. Call it
/// first, while the process has one thread. Returns only if it did not
/// exec (already tuned, or exec failed: then the daemon runs untuned).
pub fn reexec_without_stack_cache() {
    let cur = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if cur.split(':').any(|t| t == TUNABLE) {
        return;
    }
    let new = if cur.is_empty() {
        TUNABLE.to_string()
    } else {
        format!("{cur}:{TUNABLE}")
    };
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // exec keeps the pid, open descriptors without CLOEXEC and the
    // parent-death signal, so whoever started the daemon sees no change.
    // The binary by its own path, so the process is still named hactl
    // (exec of /proc/self/exe would name it "exe").
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| "/proc/self/exe".into());
    let _err = std::process::Command::new(exe)
        .arg0(argv0)
        .args(args)
        .env("GLIBC_TUNABLES", new)
        .exec();
}

/// mallopt: two arenas, fixed mmap and trim thresholds. Call before the
/// daemon starts its threads.
pub fn tune_allocator() {
    // SAFETY: mallopt takes two integers and has no other preconditions.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

static LAST_TRIM: AtomicU64 = AtomicU64::new(0);
static LAST_DECAY: AtomicU64 = AtomicU64::new(0);
static CONNS_ENDED: AtomicU64 = AtomicU64::new(0);

/// A connection ended (what it used is free now): the next
/// [`trim_if_due`] trims.
pub fn connection_ended() {
    CONNS_ENDED.fetch_add(1, Ordering::Relaxed);
}

/// From the main loop: once a second, the I/O buffers a burst left idle
/// in the pool; and freed heap pages and the whole pool back to the system
/// (`malloc_trim`, every arena) if connections ended since the last trim
/// and it is at least [`TRIM_EVERY`] ago.
pub fn trim_if_due() {
    let now = crate::timeouts::monotime();
    // Once a second: I/O buffers a burst left in the pool and nobody
    // took since go back (io::buf::decay_pool).
    if LAST_DECAY.swap(now, Ordering::Relaxed) != now {
        crate::io::decay_pool();
    }
    let last = LAST_TRIM.load(Ordering::Relaxed);
    if now.saturating_sub(last) < TRIM_EVERY.as_secs() {
        return;
    }
    LAST_TRIM.store(now, Ordering::Relaxed);
    if CONNS_ENDED.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    crate::io::drain_pool();
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}
