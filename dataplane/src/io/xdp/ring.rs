//! Single-producer / single-consumer rings shared with the kernel.
//!
//! Each ring is an mmap'd region holding a producer index, a consumer index,
//! a flags word and an array of descriptors. Indices grow without bound and
//! are masked on access. We own one side of every ring: the producer side of
//! the fill and TX rings, the consumer side of the RX and completion rings.
//! Local copies of the indices avoid touching the shared cache lines more
//! than once per batch.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Ring<T> {
    map: NonNull<libc::c_void>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: the ring is only ever used through `&mut self` by one thread at a
// time; the raw pointers point into a private mapping that moves with it.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Map ring `pgoff` of socket `fd` using the offsets from XDP_MMAP_OFFSETS.
    pub fn map(
        fd: RawFd,
        size: u32,
        off: &libc::xdp_ring_offset,
        pgoff: libc::off_t,
    ) -> io::Result<Self> {
        assert!(size.is_power_of_two());
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mmap with a null hint creates a fresh mapping; the kernel
        // checks that fd is an AF_XDP socket with this ring configured and that
        // map_len fits the ring it allocated.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as *mut u8;
        // SAFETY: the offsets come from the kernel and lie inside the mapping
        // of map_len bytes; the index words are 4-byte aligned there.
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.flags as usize) as *const AtomicU32,
                base.add(off.desc as usize) as *mut T,
            )
        };
        let mut r = Ring {
            map: NonNull::new(p).expect("mmap returned null"),
            map_len,
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
        };
        // SAFETY: producer/consumer point to live u32 words in our mapping.
        unsafe {
            r.cached_prod = (*r.producer).load(Ordering::Relaxed);
            r.cached_cons = (*r.consumer).load(Ordering::Relaxed);
        }
        Ok(r)
    }

    #[inline]
    pub fn flags(&self) -> u32 {
        // SAFETY: `flags` points into the live mapping owned by self.
        unsafe { (*self.flags).load(Ordering::Relaxed) }
    }

    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        self.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, TX) ----

    /// Number of slots we may fill right now, refreshing the kernel's
    /// consumer index only if the cached view is not enough.
    #[inline]
    pub fn free_slots(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        // SAFETY: consumer points into the live mapping. Acquire pairs with
        // the kernel's release of the slots it has finished reading.
        self.cached_cons = unsafe { (*self.consumer).load(Ordering::Acquire) };
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Write one descriptor; the caller checked `free_slots` first.
    #[inline]
    pub fn push(&mut self, d: T) {
        debug_assert!(self.cached_prod.wrapping_sub(self.cached_cons) < self.size);
        let i = (self.cached_prod & self.mask) as usize;
        // SAFETY: i <= mask < size, so the slot is inside the descriptor array,
        // and the slot is free (we are ahead of the kernel consumer by less
        // than size), so the kernel is not reading it.
        unsafe { self.descs.add(i).write_volatile(d) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publish pushed descriptors to the kernel.
    #[inline]
    pub fn submit(&mut self) {
        // SAFETY: producer points into the live mapping. Release makes the
        // descriptor writes visible before the new index.
        unsafe { (*self.producer).store(self.cached_prod, Ordering::Release) };
    }

    /// Descriptors pushed but not yet consumed by the kernel.
    #[inline]
    pub fn outstanding(&mut self) -> u32 {
        // SAFETY: as in free_slots.
        self.cached_cons = unsafe { (*self.consumer).load(Ordering::Acquire) };
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    // ---- consumer side (RX, completion) ----

    /// Number of descriptors ready to read, up to `max`.
    #[inline]
    pub fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            // SAFETY: producer points into the live mapping. Acquire pairs
            // with the kernel's release after writing the descriptors.
            self.cached_prod = unsafe { (*self.producer).load(Ordering::Acquire) };
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max)
    }

    /// Read the descriptor `k` positions after the consumer index.
    #[inline]
    pub fn read(&self, k: u32) -> T {
        let i = (self.cached_cons.wrapping_add(k) & self.mask) as usize;
        // SAFETY: i is inside the descriptor array and the slot is between
        // the consumer and producer indices, so the kernel has finished
        // writing it and will not touch it until we release it.
        unsafe { self.descs.add(i).read_volatile() }
    }

    /// Hand `n` read descriptors back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        // SAFETY: consumer points into the live mapping. Release orders our
        // reads of the slots before the kernel may reuse them.
        unsafe { (*self.consumer).store(self.cached_cons, Ordering::Release) };
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: map/map_len describe a mapping created in `map` and not
        // unmapped elsewhere; no pointers into it outlive self.
        unsafe {
            libc::munmap(self.map.as_ptr(), self.map_len);
        }
    }
}
