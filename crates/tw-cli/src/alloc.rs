//! The global allocator: mimalloc, asked the way Rust's own system allocator asks `malloc`.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`, alignment 1 included.
//! mimalloc 3 takes its fast path there only for blocks of at most 1 KiB; a larger block with any
//! alignment goes through its slow, over-allocating path (callgrind: about 230 instructions instead of
//! 35, for 17 of the 147 allocations of each delivery: bodies, payload copies, read buffers). Like
//! `std`'s `System`, this calls plain `mi_malloc` whenever its guaranteed alignment (16 bytes,
//! that of `max_align_t`) is enough, and `mi_malloc_aligned` only for the rare larger alignment.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

// mimalloc's own entry points (linked in through the `mimalloc` crate).
unsafe extern "C" {
    fn mi_malloc(size: usize) -> *mut c_void;
    fn mi_zalloc(size: usize) -> *mut c_void;
    fn mi_realloc(p: *mut c_void, new_size: usize) -> *mut c_void;
    fn mi_free(p: *mut c_void);
}

/// The alignment every `mi_malloc` block of at least this size has (`MI_MAX_ALIGN_SIZE`); a
/// smaller block is aligned to its size rounded up to a power of two, which `align <= size` covers.
const MALLOC_ALIGN: usize = 16;

pub struct Mimalloc;

/// Whether plain `mi_malloc(size)` already gives `align` (the condition `std` uses for `malloc`).
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: each method hands mimalloc a pointer it returned (mi_free and mi_realloc take any
// mimalloc block, aligned ones included) and returns blocks of at least `layout.size()` bytes at
// `layout.align()`: plain blocks only where mimalloc guarantees that alignment, the aligned
// functions of `mimalloc::MiMalloc` otherwise. A block is reallocated with plain `mi_realloc`
// only when both its old and its new size are plain, so an aligned block stays aligned.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), layout.size()) && plain(layout.align(), new_size) {
            unsafe { mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class from a byte to past mimalloc's small and medium blocks, at every alignment
    /// up to a page: aligned, writable, zeroed when asked, and grown and shrunk with its contents.
    #[test]
    fn blocks_are_aligned_sized_and_keep_their_contents() {
        let sizes = (1..=64).chain((72..=2048).step_by(40)).chain([4095, 4096, 65_537, 1 << 20]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let zeroed = Mimalloc.alloc_zeroed(layout);
                    assert!(!zeroed.is_null() && (zeroed as usize).is_multiple_of(align), "{size} {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0), "{size} {align}");
                    Mimalloc.dealloc(zeroed, layout);

                    let mut p = Mimalloc.alloc(layout);
                    assert!(!p.is_null() && (p as usize).is_multiple_of(align), "{size} {align}");
                    for i in 0..size {
                        *p.add(i) = i as u8;
                    }
                    for new_size in [size / 2 + 1, size * 3 + 5] {
                        let q = Mimalloc.realloc(p, layout, new_size);
                        assert!(!q.is_null() && (q as usize).is_multiple_of(align), "{size} -> {new_size} at {align}");
                        let kept = size.min(new_size);
                        assert!((0..kept).all(|i| *q.add(i) == i as u8), "{size} -> {new_size} at {align}");
                        // Back to the original size for the next round.
                        let layout_now = Layout::from_size_align(new_size, align).unwrap();
                        let back = Mimalloc.realloc(q, layout_now, size);
                        assert!((back as usize).is_multiple_of(align));
                        for i in kept..size {
                            *back.add(i) = i as u8;
                        }
                        assert!((0..size).all(|i| *back.add(i) == i as u8));
                        p = back;
                    }
                    Mimalloc.dealloc(p, layout);
                }
            }
        }
    }

    /// A block that starts on the aligned path (smaller than its alignment) and grows into a
    /// plain size is later reallocated by plain `mi_realloc`: still aligned, contents kept.
    #[test]
    fn an_aligned_block_grown_past_its_alignment_is_reallocated_plainly() {
        for align in [2, 4, 8, 16] {
            let small = Layout::from_size_align(align / 2, align).unwrap();
            unsafe {
                let p = Mimalloc.alloc(small);
                *p = 7;
                let grown = Mimalloc.realloc(p, small, 40);
                assert!((grown as usize).is_multiple_of(align) && *grown == 7);
                for i in 1..40 {
                    *grown.add(i) = i as u8;
                }
                let layout = Layout::from_size_align(40, align).unwrap();
                assert!(plain(align, 40) && plain(align, 3000));
                let larger = Mimalloc.realloc(grown, layout, 3000);
                assert!((larger as usize).is_multiple_of(align), "{align}");
                assert!(*larger == 7 && (1..40).all(|i| *larger.add(i) == i as u8), "{align}");
                Mimalloc.dealloc(larger, Layout::from_size_align(3000, align).unwrap());
            }
        }
    }
}
