//! Giving freed memory back to the kernel, whichever allocator the binary runs on.
//!
//! The `portcullis` binary runs on mimalloc (`src/main.rs`): loading a large directory
//! (100,000 projects, 10,000 users, 100,000 tokens) makes and frees millions of small strings,
//! and glibc's malloc spent about a third of that start-up in malloc, free,
//! `malloc_consolidate` and `unlink_chunk` (perf, BENCHMARKS.md); mimalloc's thread-local free
//! lists made start-up to ready 1.2-1.4 s -> 0.72 s. Both allocators keep freed pages for
//! reuse, so [`release_freed_memory`] runs after a load. The library itself (its unit tests,
//! the fuzz targets under a sanitizer) keeps the system allocator.

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
