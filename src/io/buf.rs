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
/// At most this many free buffers of one size are kept: as many as lease
/// operations run at once (`MAX_LEASE_OPS`), each with one area read in
/// flight. With 8, 64 clients on fast storage mapped and zeroed a fresh
/// 1 MiB buffer for most reads: page faults were a third of the daemon's
/// CPU. Keeping them does not raise the peak, which is what was in flight.
const POOL_PER_SIZE: usize = 64;
/// ... and at most this many bytes in all (64 areas of 1 MiB, 8 of 8 MiB):
/// the rest is freed. What a burst leaves behind goes back at the daemon's
/// next trim ([`drain_pool`]).
const POOL_BYTES: usize = 64 << 20;

/// Free buffers, by address; owned by the pool.
struct Pool {
    free: Vec<(usize, usize)>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

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
            if let Some(i) = pool.free.iter().position(|&(_, l)| l == len) {
                let (addr, _) = pool.free.swap_remove(i);
                pool.bytes -= len;
                drop(pool);
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
            let same = pool.free.iter().filter(|&&(_, l)| l == self.len).count();
            if same < POOL_PER_SIZE && pool.bytes + self.len <= POOL_BYTES {
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

/// Frees every pooled buffer (after a burst of clients, with the
/// daemon's malloc_trim: RSS comes back).
pub fn drain_pool() {
    let free = {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        pool.bytes = 0;
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

    #[test]
    fn large_buffers_are_reused_zeroed_and_the_pool_is_bounded() {
        // A size no other test uses, so the pool's count is ours.
        let len = 3 * POOL_MIN + 4096;
        let mut bufs: Vec<AlignedBuf> = (0..POOL_PER_SIZE + 3)
            .map(|_| AlignedBuf::zeroed(len))
            .collect();
        for b in &mut bufs {
            b.fill(0xab);
        }
        let addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        drop(bufs);
        let kept = POOL
            .lock()
            .unwrap()
            .free
            .iter()
            .filter(|&&(_, l)| l == len)
            .count();
        assert_eq!(kept, POOL_PER_SIZE);
        let again = AlignedBuf::zeroed(len);
        assert!(addrs.contains(&(again.as_ptr() as usize)), "reused");
        assert_eq!(again.as_ptr() as usize % BUF_ALIGN, 0);
        assert!(again.iter().all(|&x| x == 0), "zeroed on reuse");
    }
}
