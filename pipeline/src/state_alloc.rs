//! Where the job's large, long-lived tables live: each allocation of at least
//! [`MAPPED_FROM`] bytes is a memory mapping of its own, handed back to the kernel when freed.
//!
//! The state's tables (the stage's slots, sample arena and index, the rows operator's
//! per-peer map, the edges' sums) grow by doubling. In glibc's heap an outgrown table left a
//! hole as large as itself among the buffers of each advance's updates, which are allocated
//! and freed all the time; mapped, it goes back to the kernel, and the heap is left to the
//! small allocations and those buffers: 571-573 -> 527-539 bytes per live key on the medium
//! stream at the same speed, -12% on the large one for -1.5% records/s (docs/BENCHMARKS.md,
//! item 38). Smaller allocations (every table while the fleet is small) go to the global
//! allocator.

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes mapped by [`StateAlloc`] now, over every job in the process (capacity: the pages
/// never touched are not resident).
static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of state tables mapped outside the heap now, in this process: what glibc's heap
/// figures (`malloc_info`) no longer count. Capacity, so pages never touched are included.
pub fn mapped_state_bytes() -> usize {
    MAPPED_BYTES.load(Ordering::Relaxed)
}

/// The smallest allocation mapped on its own: 256 KiB, well above a page, so a mapping's
/// rounding to pages costs at most 1.6%. (glibc maps large blocks too, but its threshold rises
/// to the size of each mapped block freed, up to 32 MiB, after which a doubling table stays in
/// its heap.) It was 1 MiB, which left the stage's index of a fleet of ~100,000 keys (0.66 MB)
/// and its doublings in the heap: 256 KiB is 522-527 -> 507-508 bytes per live key on the
/// 400 s medium stream at the same speed (docs/BENCHMARKS.md, item 45).
pub(crate) const MAPPED_FROM: usize = 1 << 18;

/// Mappings are page-aligned; a stricter alignment goes to the global allocator.
const PAGE: usize = 4096;

/// The allocator of the job's long-lived tables (see the module's documentation).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StateAlloc;

impl StateAlloc {
    fn mapped(layout: Layout) -> bool {
        layout.size() >= MAPPED_FROM && layout.align() <= PAGE
    }
}

// SAFETY: a mapped block is valid for reads and writes of `layout.size()` bytes, page-aligned,
// and stays so until `deallocate` unmaps it; whether a block is mapped is decided by its layout
// alone, which the caller hands back unchanged to `deallocate` (the trait's contract), so every
// block is freed by the allocator that made it. Everything else is `Global`'s.
#[allow(unsafe_code)]
unsafe impl Allocator for StateAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !Self::mapped(layout) {
            return Global.allocate(layout);
        }
        // SAFETY: an anonymous private mapping: no file, no address hint, nothing aliased.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(AllocError);
        }
        let start = NonNull::new(address.cast::<u8>()).ok_or(AllocError)?;
        MAPPED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        Ok(NonNull::slice_from_raw_parts(start, layout.size()))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !Self::mapped(layout) {
            return Global.allocate_zeroed(layout);
        }
        // A fresh anonymous mapping reads as zeros.
        self.allocate(layout)
    }

    unsafe fn grow(&self, block: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if Self::mapped(old) && Self::mapped(new) {
            // The kernel moves the pages: no copy, and no page of the old block faulted in again
            // (a vector of a million keys' slots, 88 MB, doubles without touching them).
            // SAFETY: `block` is a mapping of `old.size()` bytes made here (the trait's contract:
            // `old` fits it); on success the old address is not used again.
            let address = unsafe { libc::mremap(block.as_ptr().cast(), old.size(), new.size(), libc::MREMAP_MAYMOVE) };
            if address == libc::MAP_FAILED {
                return Err(AllocError);
            }
            let start = NonNull::new(address.cast::<u8>()).ok_or(AllocError)?;
            MAPPED_BYTES.fetch_add(new.size() - old.size(), Ordering::Relaxed);
            return Ok(NonNull::slice_from_raw_parts(start, new.size()));
        }
        // Into (or within) the global allocator's blocks: allocate, copy, free.
        let grown = self.allocate(new)?;
        // SAFETY: both blocks are valid for `old.size()` bytes (`new` is at least as large) and
        // distinct (the old one is not freed yet); the old one is freed with the layout it was
        // allocated with.
        unsafe {
            std::ptr::copy_nonoverlapping(block.as_ptr(), grown.as_ptr().cast::<u8>(), old.size());
            self.deallocate(block, old);
        }
        Ok(grown)
    }

    unsafe fn deallocate(&self, block: NonNull<u8>, layout: Layout) {
        if !Self::mapped(layout) {
            // SAFETY: by the trait's contract `block` came from `allocate` with this layout,
            // which handed such layouts to `Global`.
            unsafe { Global.deallocate(block, layout) };
            return;
        }
        // SAFETY: `block` is the start of a mapping of `layout.size()` bytes made by `allocate`
        // (same layout), not used after this call (the trait's contract).
        let unmapped = unsafe { libc::munmap(block.as_ptr().cast(), layout.size()) };
        debug_assert_eq!(unmapped, 0, "munmap of a block this allocator mapped");
        MAPPED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_tables_grow_and_keep_their_contents() {
        // Crosses MAPPED_FROM while growing: the move from the global allocator to a mapping.
        let mut table: allocator_api2::vec::Vec<u64, StateAlloc> = allocator_api2::vec::Vec::new_in(StateAlloc);
        let count = 3 * MAPPED_FROM / std::mem::size_of::<u64>();
        for i in 0..count as u64 {
            table.push(i);
        }
        assert!(table.iter().enumerate().all(|(i, &v)| v == i as u64));
        table.truncate(10);
        table.shrink_to_fit();
        assert_eq!(table.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

        let mut map: hashbrown::HashMap<u64, u64, rustc_hash::FxBuildHasher, StateAlloc> =
            hashbrown::HashMap::with_hasher_in(rustc_hash::FxBuildHasher, StateAlloc);
        for i in 0..200_000u64 {
            map.insert(i, i * 2);
        }
        assert!((0..200_000u64).all(|i| map.get(&i) == Some(&(i * 2))));
        // 200,000 entries of 16 bytes are over 3 MB of buckets: mapped, and counted.
        assert!(mapped_state_bytes() >= MAPPED_FROM, "{} bytes mapped", mapped_state_bytes());
        drop(map);
        drop(table);
    }
}
