//! Giving freed memory back to the kernel, whichever allocator the binary runs on.
//!
//! The `portcullis` binary runs on mimalloc (`src/main.rs`): loading a large directory
//! (100,000 projects, 10,000 users, 100,000 tokens) makes and frees millions of small strings,
//! and glibc's malloc spent about a third of that start-up in malloc, free,
//! `malloc_consolidate` and `unlink_chunk` (perf, BENCHMARKS.md); mimalloc's thread-local free
//! lists made start-up to ready 1.2-1.4 s -> 0.72 s. Both allocators keep freed pages for
//! reuse, so [`release_freed_memory`] runs after a load. The library itself (its unit tests,
//! the fuzz targets under a sanitizer) keeps the system allocator.
//!
//! The binary installs [`Mimalloc`], not the `mimalloc` crate's `MiMalloc`: that one sends
//! every allocation through `mi_malloc_aligned`, and mimalloc 3's aligned path takes its
//! over-allocating fallback (a bigger block, an interior pointer, a slower free) for any block
//! over 1 KiB or whose size class has no free block at hand, even at alignment 1 or 8: about
//! ten allocations a small proxied request (gdb on `mi_theap_malloc_zero_aligned_at_overalloc`:
//! 8 KiB buffers at alignment 1, boxed futures of 3-7 KiB at alignment 8); going around it
//! saves 1.2-1.7% of a request's instructions (callgrind, BENCHMARKS.md). Every mimalloc block is aligned to a word, so [`Mimalloc`] asks for
//! an aligned block only when the layout needs more than that.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block `mi_malloc` returns has: blocks are whole words, pages start at
/// 16 bytes or more.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator, asking for alignment only where a layout needs more than
/// a word (see the module's doc).
pub struct Mimalloc;

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks of the
// plain and the aligned calls alike); a block is aligned as its layout asks: to a word by
// `mi_malloc`/`mi_zalloc`/`mi_realloc`, to more only through the `_aligned` calls, and a
// reallocation keeps the layout's alignment, so it takes the same branch as the allocation.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

/// Give the pages of memory freed so far back to the kernel (after the start-up's and a
/// reload's directory load, whose transient parse data would otherwise stay resident: 660 MiB
/// instead of 116 after start at 100,000 projects on mimalloc).
pub fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers; it frees this thread's unused pages and purges
    // abandoned ones, and may be called from any thread at any time (and does nothing when
    // mimalloc is not the allocator in use).
    unsafe { libmimalloc_sys::mi_collect(true) }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and only returns free pages of glibc's own
        // heap to the kernel; it is safe to call at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class up to 64 KiB at every alignment up to 4 KiB: the block is aligned as
    /// asked, writable to its end, keeps its bytes through a reallocation, and goes back.
    #[test]
    fn blocks_are_aligned_as_their_layout_asks_and_survive_reallocation() {
        let sizes = (1..=64)
            .chain((65..=65536).step_by(97))
            .chain([1024, 1025, 8192, 65536]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: the layout's size is not zero; each block is freed once, with its layout.
                unsafe {
                    for zeroed in [false, true] {
                        let p = if zeroed {
                            Mimalloc.alloc_zeroed(layout)
                        } else {
                            Mimalloc.alloc(layout)
                        };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if zeroed {
                            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                        }
                        std::ptr::write_bytes(p, 0xa5, size);
                        let grown = Mimalloc.realloc(p, layout, size * 2 + 7);
                        assert!(!grown.is_null());
                        assert_eq!(
                            grown as usize % align,
                            0,
                            "realloc size {size} align {align}"
                        );
                        assert!(std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|&b| b == 0xa5));
                        let grown_layout = Layout::from_size_align(size * 2 + 7, align).unwrap();
                        Mimalloc.dealloc(grown, grown_layout);
                    }
                }
            }
        }
    }
}
