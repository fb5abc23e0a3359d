//! Page-aligned buffers for O_DIRECT I/O.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Mutex;

/// Alignment of every I/O buffer: a page, which satisfies 512 and 4K sectors.
pub const BUF_ALIGN: usize = 4096;

/// A zeroed, page-aligned heap buffer. It is moved into the thread doing the
/// I/O, so a buffer behind an I/O that timed out is freed only once the
/// kernel is done with it, never reused while it may still be written.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf uniquely owns its allocation, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

/// Buffers from this size up (lease areas, 1-8 MiB) are kept for reuse
/// when freed, rather than mapped and unmapped for every read.
const POOL_MIN: usize = 64 * 1024;
/// At most this many free buffers of one size are kept: [`POOL_KEEP`], and
/// one more for each lease operation running now ([`PoolDemand`]), each
/// with an area read in flight, up to `MAX_LEASE_OPS`. With 8 in all, 64
/// clients on fast storage mapped and zeroed a fresh 1 MiB buffer for most
/// reads: page faults were a third of the daemon's CPU. Bursts with no
/// lease operation behind them (1,000 lockspaces joining) keep 8, as before.
const POOL_PER_SIZE: usize = 64;
/// ... and at most this many bytes in all (64 areas of 1 MiB, 8 of 8 MiB):
/// the rest is freed. What a burst leaves behind goes back within two
/// calls of [`decay_pool`] (the daemon's main loop: a second or two), down
/// to [`POOL_KEEP`] per size, or all of it at the daemon's trim
/// ([`drain_pool`]). With 1,000 lockspaces joining at once, 64 retained
/// areas were 0.02x sanlock's RSS more for as long as they stayed.
const POOL_BYTES: usize = 64 << 20;
/// Free buffers of a size kept however long they stay unused.
const POOL_KEEP: usize = 8;

/// Lease operations running now (see [`PoolDemand`]).
static DEMAND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Held by a lease operation while it runs: the pool keeps one more free
/// buffer of a size for each (a steady load of operations, each reading
/// its area, finds them there), up to [`POOL_PER_SIZE`].
pub struct PoolDemand(());

impl PoolDemand {
    pub fn new() -> PoolDemand {
        DEMAND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PoolDemand(())
    }
}

impl Default for PoolDemand {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PoolDemand {
    fn drop(&mut self) {
        DEMAND.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn per_size_cap() -> usize {
    (POOL_KEEP + DEMAND.load(std::sync::atomic::Ordering::Relaxed)).min(POOL_PER_SIZE)
}

/// Free buffers, by address; owned by the pool.
struct Pool {
    free: Vec<(usize, usize)>,
    bytes: usize,
    /// Per size, the fewest free buffers there were since the last
    /// [`decay_pool`]: that many were not needed all along.
    low: Vec<(usize, usize)>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
    low: Vec::new(),
});

impl Pool {
    fn count(&self, len: usize) -> usize {
        self.free.iter().filter(|&&(_, l)| l == len).count()
    }
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` > 0).
    pub fn zeroed(len: usize) -> Self {
        Self::get(len, true)
    }

    /// A buffer for an exact read of `len` bytes: a pooled one is not
    /// zeroed again (an exact read overwrites every byte, and a read that
    /// fails or stops short is an error whose buffer is never looked at).
    /// Zeroing 1 MiB per area read was 8% of the daemon's CPU under load.
    pub fn for_read(len: usize) -> Self {
        Self::get(len, false)
    }

    fn get(len: usize, zero: bool) -> Self {
        assert!(len > 0, "empty I/O buffer");
        if len >= POOL_MIN {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            let hit = pool.free.iter().position(|&(_, l)| l == len);
            let got = hit.map(|i| pool.free.swap_remove(i).0);
            if got.is_some() {
                pool.bytes -= len;
            }
            // Asked for, hit or miss: what is free of it now is the surplus.
            let n = pool.count(len);
            match pool.low.iter_mut().find(|(l, _)| *l == len) {
                Some((_, low)) => *low = (*low).min(n),
                None => pool.low.push((len, n)),
            }
            drop(pool);
            if let Some(addr) = got {
                let ptr = NonNull::new(addr as *mut u8).expect("pooled buffers are not null");
                if zero {
                    // SAFETY: the pool owned this allocation of `len` bytes.
                    unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
                }
                return AlignedBuf { ptr, len };
            }
        }
        let layout = Layout::from_size_align(len, BUF_ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::zeroed(data.len());
        b.copy_from_slice(data);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len >= POOL_MIN {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            let same = pool.count(self.len);
            if same < per_size_cap() && pool.bytes + self.len <= POOL_BYTES {
                pool.free.push((self.ptr.as_ptr() as usize, self.len));
                pool.bytes += self.len;
                return;
            }
        }
        let layout = Layout::from_size_align(self.len, BUF_ALIGN).expect("buffer layout");
        // SAFETY: allocated in zeroed() with this same layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Frees the pooled buffers that stayed unused since the last call, beyond
/// [`POOL_KEEP`] of each size: what the load takes stays, with up to
/// POOL_KEEP spare; after a burst the surplus goes within two calls.
pub fn decay_pool() {
    let surplus = {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        let mut sizes: Vec<usize> = pool.free.iter().map(|&(_, l)| l).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut out = Vec::new();
        for &len in &sizes {
            let n = pool.count(len);
            // A size nobody took since the last call: all of it was idle.
            let idle = pool
                .low
                .iter()
                .find(|(l, _)| *l == len)
                .map_or(n, |&(_, low)| low.min(n));
            for _ in 0..idle.saturating_sub(POOL_KEEP) {
                let i = pool
                    .free
                    .iter()
                    .position(|&(_, l)| l == len)
                    .expect("counted");
                out.push(pool.free.swap_remove(i));
                pool.bytes -= len;
            }
        }
        // Every size keeps POOL_KEEP or more: the same sizes, counted anew.
        pool.low = sizes.iter().map(|&l| (l, pool.count(l))).collect();
        out
    };
    for (addr, len) in surplus {
        let layout = Layout::from_size_align(len, BUF_ALIGN).expect("buffer layout");
        // SAFETY: pooled entries are allocations of `len` bytes with this
        // layout, owned by the pool and now by no one else.
        unsafe { dealloc(addr as *mut u8, layout) }
    }
}

/// Frees every pooled buffer (after a burst of clients, with the
/// daemon's malloc_trim: RSS comes back).
pub fn drain_pool() {
    let free = {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        pool.bytes = 0;
        pool.low.clear();
        std::mem::take(&mut pool.free)
    };
    for (addr, len) in free {
        let layout = Layout::from_size_align(len, BUF_ALIGN).expect("buffer layout");
        // SAFETY: pooled entries are allocations of `len` bytes with this
        // layout, owned by the pool and now by no one else.
        unsafe { dealloc(addr as *mut u8, layout) }
    }
}

/// Bytes an I/O read: the engine's aligned buffer itself (a lease area is
/// 1-8 MiB: copying it out cost a fifth of the daemon's CPU under load,
/// most of it in page faults), or plain bytes (the simulated disk).
pub enum IoData {
    Bytes(Vec<u8>),
    Aligned(AlignedBuf),
}

impl std::ops::Deref for IoData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IoData::Bytes(v) => v,
            IoData::Aligned(b) => b,
        }
    }
}

impl std::ops::DerefMut for IoData {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            IoData::Bytes(v) => v,
            IoData::Aligned(b) => b,
        }
    }
}

impl From<Vec<u8>> for IoData {
    fn from(v: Vec<u8>) -> IoData {
        IoData::Bytes(v)
    }
}

impl From<AlignedBuf> for IoData {
    fn from(b: AlignedBuf) -> IoData {
        IoData::Aligned(b)
    }
}

/// A copy is plain bytes (only the simulation and tests copy results).
impl Clone for IoData {
    fn clone(&self) -> IoData {
        IoData::Bytes(self.to_vec())
    }
}

impl std::fmt::Debug for IoData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoData({} bytes)", self.len())
    }
}

impl PartialEq for IoData {
    fn eq(&self, o: &IoData) -> bool {
        **self == **o
    }
}

impl Eq for IoData {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let b = AlignedBuf::zeroed(8192);
        assert_eq!(b.as_ptr() as usize % BUF_ALIGN, 0);
        assert!(b.iter().all(|&x| x == 0));
    }

    /// The tests that count what the pool keeps (its caps are global).
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn large_buffers_are_reused_zeroed_and_the_pool_is_bounded() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        // A size no other test uses, so the pool's count is ours.
        let len = 3 * POOL_MIN + 4096;
        let count = || POOL.lock().unwrap().count(len);
        let burst = |n| {
            let bufs: Vec<AlignedBuf> = (0..n).map(|_| AlignedBuf::for_read(len)).collect();
            drop(bufs);
        };
        // No lease operation running: a burst leaves POOL_KEEP.
        burst(POOL_PER_SIZE + 3);
        assert_eq!(count(), POOL_KEEP);
        // 10 running: 10 more; 100: the bound.
        let ops: Vec<PoolDemand> = (0..10).map(|_| PoolDemand::new()).collect();
        burst(POOL_PER_SIZE + 3);
        assert_eq!(count(), POOL_KEEP + 10);
        let more: Vec<PoolDemand> = (0..90).map(|_| PoolDemand::new()).collect();
        let mut bufs: Vec<AlignedBuf> = (0..POOL_PER_SIZE + 3)
            .map(|_| AlignedBuf::zeroed(len))
            .collect();
        for b in &mut bufs {
            b.fill(0xab);
        }
        let addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        drop(bufs);
        drop((ops, more));
        assert_eq!(count(), POOL_PER_SIZE);
        let again = AlignedBuf::zeroed(len);
        assert!(addrs.contains(&(again.as_ptr() as usize)), "reused");
        assert_eq!(again.as_ptr() as usize % BUF_ALIGN, 0);
        assert!(again.iter().all(|&x| x == 0), "zeroed on reuse");
    }

    #[test]
    fn what_a_burst_leaves_in_the_pool_goes_unless_it_is_used() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let _ops: Vec<PoolDemand> = (0..20).map(|_| PoolDemand::new()).collect();
        // A size no other test uses; only this test calls decay_pool.
        let len = 5 * POOL_MIN + 4096;
        let count = || POOL.lock().unwrap().count(len);
        let burst = |n| {
            let bufs: Vec<AlignedBuf> = (0..n).map(|_| AlignedBuf::for_read(len)).collect();
            drop(bufs);
        };
        burst(20);
        assert_eq!(count(), 20);
        // Taken during the interval that just ended: kept, this time.
        decay_pool();
        assert_eq!(count(), 20);
        // In steady use 10 at a time: those 10 stay, and POOL_KEEP idle ones.
        burst(10);
        decay_pool();
        assert_eq!(count(), 10 + POOL_KEEP);
        burst(10);
        decay_pool();
        assert_eq!(count(), 10 + POOL_KEEP);
        // Idle for a whole interval: down to POOL_KEEP.
        decay_pool();
        assert_eq!(count(), POOL_KEEP);
    }
}
