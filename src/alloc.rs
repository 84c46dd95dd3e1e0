//! The process allocator of shardlog's binaries (`shardlog`, `loadgen`):
//! jemalloc, with one arena, freed pages kept a quarter of a second for
//! reuse, and huge pages.
//!
//! **Why.** A produce request's frame is read into a buffer of exactly its
//! size, and its batches stay in the batch cache (they are the cache) until
//! evicted: request memory is allocated and freed first-in first-out through
//! about the cache's size, a gigabyte a second at the disk's rate. glibc's
//! malloc handed most of it back to the kernel (whole arena heaps are
//! unmapped when they empty, large chunks are mmapped) and took fresh pages
//! for the next requests, so every byte received faulted in a zeroed page:
//! 6.8 M minor faults in a 15 s 1 KB acks=1 run of `shardlog serve`, with
//! page-fault handling and `clear_page_erms` about 30% of the broker's
//! samples. jemalloc keeps what it frees for reuse a while (2,900 faults
//! in the same run with no decay, ~300,000 with the 250 ms below), and
//! `thp:always` makes its extents huge pages, so the first touch of each
//! 2 MiB costs one fault rather than 512.
//! Measured on 2 cores (README, "Against the disk"): ~780 → ~1,100 MiB/s
//! produced, broker CPU 0.94 → ~0.5 s per GB.
//!
//! **What it costs.** Freed memory stays resident for about 250 ms before
//! it is given back, on top of what the budgets hold; peak RSS stays within
//! `BrokerConfig::memory_bound` (tests/memory_bounds, README "Memory").
//! Set `_RJEM_MALLOC_CONF` (jemalloc's own syntax) to override at run
//! time.
//!
//! Not in the library: tests, benches (one of which counts allocations with
//! its own allocator) and embedding programs keep theirs. Each binary names
//! it once with [`use_jemalloc!`](crate::use_jemalloc).

/// jemalloc's settings, read at its first allocation (before `main`).
/// - `narenas:1`: one arena for all threads. With one per thread (and no
///   decay) each arena kept its own high-water mark, and a 54 MiB produce
///   flood peaked at 2,039 MiB against tests/memory_bounds' 1,057 MiB.
/// - `oversize_threshold:0`: no separate arena for blocks of 8 MiB and
///   more, which jemalloc purges at once whatever the decay (a client's
///   16-32 MiB fetch answers faulted in afresh each time: 3,370 against
///   1,550 faults in a 13 s loadgen run).
/// - `thp:always`: extents are `madvise(MADV_HUGEPAGE)`d; the kernel's
///   transparent-huge-page mode `madvise` (the common default) then backs
///   them with 2 MiB pages.
/// - `dirty_decay_ms:250`: freed pages are kept about a quarter of a
///   second for reuse, then given back. Never giving them back (-1) was as
///   fast, but under 30 s floods of 54 MiB requests with the default
///   budgets (`SHARDLOG_MEMORY_DEFAULTS=1 SHARDLOG_FLOOD_SECS=30`,
///   tests/memory_bounds) the free-but-kept extents fragmented and peak RSS
///   reached 3,155-3,597 MiB against the 2,465 MiB bound; at 1 s, 2,493.
///   At 250 ms: 2,358-2,396 MiB, and the 1 KB acks=1 run's broker CPU per
///   GB stayed where it was without decay (0.47 against 0.45 s/GB).
///   `muzzy_decay_ms:0`: purged pages are unmapped, not kept lazily.
pub const MALLOC_CONF: &[u8] =
    b"narenas:1,oversize_threshold:0,thp:always,dirty_decay_ms:250,muzzy_decay_ms:0\0";

pub use tikv_jemallocator::Jemalloc;

/// Make jemalloc, configured with [`MALLOC_CONF`], the binary's global
/// allocator. Use once, at the binary's crate root.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::alloc::Jemalloc = $crate::alloc::Jemalloc;

        /// jemalloc reads its settings from this symbol (`malloc_conf`,
        /// with the prefix tikv-jemalloc-sys builds it with).
        #[allow(non_upper_case_globals)]
        #[export_name = "_rjem_malloc_conf"]
        pub static malloc_conf: &[u8; $crate::alloc::MALLOC_CONF.len()] = {
            match $crate::alloc::MALLOC_CONF.first_chunk() {
                Some(c) => c,
                None => unreachable!(),
            }
        };
    };
}
