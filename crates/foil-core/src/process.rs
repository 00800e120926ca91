//! Process-wide settings a foil program starts with.

/// Keeps freed memory in the process for the next allocation. glibc serves blocks above its
/// mmap threshold (at most 32 MB) with fresh mappings and unmaps them on free, and frees a
/// worker thread's whole heap (64 MB mappings) once it is empty, so every large tensor — a
/// training step's attention scores are [48, 12, 128, 128] floats, 38 MB — costs page faults
/// and zeroed pages again, on every op. One arena, served from the heap and not trimmed, keeps
/// those pages: a MiniLM training step went from 4.0 to 2.7 s (2 threads) and its peak RSS from
/// 4.1 to 2.7 GB; encoding ran within 2% of its speed at 25% less RSS. Small blocks still come
/// from each thread's cache without the arena's lock.
///
/// Call it first in `main`, before any other thread exists (the foil CLI and the benchmark
/// programs do). Elsewhere than Linux with glibc it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; the caller runs it before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
