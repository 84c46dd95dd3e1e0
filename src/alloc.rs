//! The process allocator of shardlog's binaries (`shardlog`, `loadgen`):
//! jemalloc, with one arena, up to 128 MiB of freed pages kept for reuse
//! (a governor thread purges past that), and huge pages.
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
//! in the same run with no decay, ~300,000 with a 250 ms decay), and
//! `thp:always` makes its extents huge pages, so the first touch of each
//! 2 MiB costs one fault rather than 512.
//! Measured on 2 cores (README, "Against the disk"): ~780 → ~1,100 MiB/s
//! produced, broker CPU 0.94 → ~0.5 s per GB.
//!
//! **What it costs, and the budget.** Pages jemalloc keeps are resident
//! on top of what the budgets hold. A time limit alone did not fit: with
//! the 250 ms decay of earlier builds, a steady stream of requests still
//! had its freed pages purged and faulted in again (100 B loadgen run:
//! 4.81-5.08 M msg/s; with pages never purged 5.20-5.75 M, the broker's
//! CPU per GB 0.87-0.91 against 0.69-0.82 s), while under floods the kept
//! pages fragmented and a longer decay passed the memory bound. On a
//! virtual machine that hands free memory back to its host (this one's
//! virtio-balloon free page reporting) a purged page costs more again:
//! the next touch waits for the host to back it. So jemalloc keeps freed
//! pages for up to [`KEEP_DECAY_MS`] and a governor thread
//! ([`govern_kept_pages`]) purges them all once they pass
//! [`KEPT_BYTES_MAX`], the budget, checked every [`GOVERN_EVERY`]. Peak
//! RSS stays within `BrokerConfig::memory_bound`, whose 256 MiB beyond the
//! data budgets covers the kept pages (tests/memory_bounds, README
//! "Memory"). Set `_RJEM_MALLOC_CONF` (jemalloc's own syntax) to override
//! the settings at run time.
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
/// - `dirty_decay_ms:10000`: freed pages are kept for reuse, and given back
///   over about 10 s once the process stops reusing them (after a burst).
///   While it runs, [`govern_kept_pages`] holds them within the budget:
///   never purged (-1) or decayed over 1 s, the free-but-kept extents of
///   30 s floods of 54 MiB requests (`SHARDLOG_MEMORY_DEFAULTS=1
///   SHARDLOG_FLOOD_SECS=30`, tests/memory_bounds) fragmented and peak RSS
///   reached 2,493-3,597 MiB against the 2,465 MiB bound.
///   `muzzy_decay_ms:0`: purged pages are unmapped, not kept lazily.
pub const MALLOC_CONF: &[u8] =
    b"narenas:1,oversize_threshold:0,thp:always,dirty_decay_ms:10000,muzzy_decay_ms:0\0";

/// [`MALLOC_CONF`]'s decay, in milliseconds.
pub const KEEP_DECAY_MS: u64 = 10_000;

/// The most bytes of freed pages the process keeps for reuse: past this
/// the governor purges them all. Part of the 256 MiB that
/// `BrokerConfig::memory_bound` allows beyond the data budgets.
pub const KEPT_BYTES_MAX: usize = 128 << 20;

/// How often the governor reads the kept pages while the process
/// allocates and frees pages. At the disk's rate (~1.5 GB/s freed) this
/// interval adds at most ~15 MiB past the budget before the purge.
pub const GOVERN_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The longest the governor sleeps while no page moves (idle), doubling
/// its sleep from [`GOVERN_EVERY`] up to this. Why: a read refreshes
/// jemalloc's statistics (the `epoch` control), 86-112 µs, and on this
/// project's VMs even a timer wake-up costs the thread about 46 µs; at
/// 100 per second an idle broker's governor used 0.5-0.9% of a core,
/// against 0.003% for each of its idle shards; with the doubling, 0.01%
/// (0.099 ms of CPU per second, `/proc/PID/task/TID/schedstat` of an idle
/// `shardlog serve`). Whether pages moved is one load of each arena's
/// active-page counter.
pub const GOVERN_IDLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The governor's next sleep after one of `slept`: [`GOVERN_EVERY`] if
/// pages moved since its last read of the kept pages, else twice as long
/// as before, up to [`GOVERN_IDLE_EVERY`].
pub fn next_sleep(moved: bool, slept: std::time::Duration) -> std::time::Duration {
    if moved {
        GOVERN_EVERY
    } else {
        (slept * 2).min(GOVERN_IDLE_EVERY)
    }
}

/// Purges the governor made in this process (for logs and tests).
static PURGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times the governor purged the kept pages.
pub fn purges() -> u64 {
    PURGES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Dirty (freed, kept) pages of every arena; 4096 is jemalloc's
/// `MALLCTL_ARENAS_ALL`.
const KEPT_PAGES_CTL: &str = "stats.arenas.4096.pdirty";

/// Purge every arena's dirty pages.
const PURGE_CTL: &str = "arena.4096.purge";

/// The allocator's page size, read once.
fn page_bytes() -> Option<usize> {
    static PAGE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| ctl_read("arenas.page"))
}

/// Read a jemalloc control of type `T` (a `size_t` or `uint64_t` one).
fn ctl_read<T: Copy + Default>(name: &str) -> Option<T> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `name` is NUL-terminated, `v` is a T that lives across the
    // call, and `len` tells jemalloc its size (it fails rather than write
    // past it when the control's type is larger).
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&mut v as *mut T).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0 && len == std::mem::size_of::<T>()).then_some(v)
}

/// Write `v` to a jemalloc control; with `None`, run a control that takes
/// nothing (a purge). True if jemalloc accepted it.
fn ctl_write<T: Copy>(name: &str, v: Option<T>) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    let mut v = v;
    let (ptr, len) = match v.as_mut() {
        Some(v) => ((v as *mut T).cast(), std::mem::size_of::<T>()),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `name` is NUL-terminated; `ptr` is null with length 0, or
    // points at a T of `len` bytes that lives across the call. jemalloc
    // only reads it.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            ptr,
            len,
        ) == 0
    }
}

/// Bytes of freed pages jemalloc keeps, all arenas: refreshes its
/// statistics first (the `epoch` control). None if jemalloc is not the
/// process's allocator or was built without statistics.
pub fn kept_bytes() -> Option<usize> {
    if !ctl_write("epoch", Some(1u64)) {
        return None;
    }
    let dirty: usize = ctl_read(KEPT_PAGES_CTL)?;
    Some(dirty * page_bytes()?)
}

/// Start the thread that holds the pages jemalloc keeps within `max`
/// bytes: every [`GOVERN_EVERY`] while pages move, and at most every
/// [`GOVERN_IDLE_EVERY`] while none do ([`next_sleep`]), it reads them
/// ([`kept_bytes`]) and, past `max`, purges them all. Lives as long as
/// the process; call once, from a binary that uses
/// [`use_jemalloc!`](crate::use_jemalloc). Err: the thread could not
/// start, or jemalloc's statistics cannot be read (a binary with another
/// allocator).
pub fn govern_kept_pages(max: usize) -> std::io::Result<()> {
    if kept_bytes().is_none() {
        return Err(std::io::Error::other(
            "jemalloc's statistics are not available: is it the global allocator?",
        ));
    }
    std::thread::Builder::new()
        .name("alloc-governor".into())
        .spawn(move || {
            let (mut narenas, mut counters) = active_counters();
            let (mut active_at_read, mut sleep) = (usize::MAX, GOVERN_EVERY);
            loop {
                std::thread::sleep(sleep);
                let moved = active_pages(&counters) != active_at_read;
                sleep = next_sleep(moved, sleep);
                // Idle: read anyway once the sleep has grown to its longest.
                if !moved && sleep < GOVERN_IDLE_EVERY {
                    continue;
                }
                // The read refreshes jemalloc's statistics, its count of
                // arenas too: take the counters again after it if that grew
                // or an arena had none yet (jemalloc makes them lazily).
                let kept = kept_bytes();
                if ctl_read::<u32>("arenas.narenas") != Some(narenas)
                    || counters.len() < narenas as usize
                {
                    (narenas, counters) = active_counters();
                }
                active_at_read = active_pages(&counters);
                let Some(kept) = kept.filter(|&kept| kept > max) else {
                    continue;
                };
                if ctl_write::<u64>(PURGE_CTL, None) {
                    PURGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(kept, max, "purged the freed pages the allocator kept");
                }
            }
        })?;
    Ok(())
}

/// Each arena's count of pages in use, as jemalloc keeps it
/// (`experimental.arenas.<i>.pactivep`: the counter's address, to be read
/// with one load and no statistics refresh). The arenas are those of
/// jemalloc's last statistics refresh; returned with their number.
fn active_counters() -> (u32, Vec<&'static std::sync::atomic::AtomicUsize>) {
    let narenas: u32 = ctl_read("arenas.narenas").unwrap_or(0);
    let counters = (0..narenas)
        .filter_map(|i| ctl_read::<usize>(&format!("experimental.arenas.{i}.pactivep")))
        .map(|p| {
            // SAFETY: jemalloc hands out the address of the arena's
            // `nactive` counter, an aligned word it only changes
            // atomically; arenas are never freed, so it stays valid.
            unsafe { std::sync::atomic::AtomicUsize::from_ptr(p as *mut usize) }
        })
        .collect();
    (narenas, counters)
}

/// The pages in use in the arenas of `counters`.
fn active_pages(counters: &[&std::sync::atomic::AtomicUsize]) -> usize {
    counters
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of 4 MiB from jemalloc itself (the test binary keeps the
    /// system allocator), every page touched; freed on drop. Below
    /// jemalloc's default huge threshold (8 MiB), so they come from an
    /// arena that exists from the start.
    struct Blocks(Vec<*mut u8>);

    const BLOCK: usize = 4 << 20;

    impl Blocks {
        fn touched(n: usize) -> Blocks {
            Blocks(
                (0..n)
                    .map(|_| {
                        // SAFETY: a plain allocation, checked for null and
                        // written within its size; freed once, in drop.
                        let p = unsafe { tikv_jemalloc_sys::malloc(BLOCK) }.cast::<u8>();
                        assert!(!p.is_null());
                        unsafe { std::ptr::write_bytes(p, 1, BLOCK) };
                        p
                    })
                    .collect(),
            )
        }
    }

    impl Drop for Blocks {
        fn drop(&mut self) {
            for &p in &self.0 {
                // SAFETY: each pointer came from jemalloc's malloc.
                unsafe { tikv_jemalloc_sys::free(p.cast()) };
            }
        }
    }

    /// Real jemalloc (called directly: the test binary keeps the system
    /// allocator; one test, as parallel tests would share its arenas). The
    /// active-page counters the governor watches follow allocations; then,
    /// set to keep freed pages, jemalloc keeps them past the budget until
    /// the governor purges them.
    #[test]
    fn the_governor_sees_pages_move_and_purges_kept_pages_past_its_budget() {
        const BUDGET: usize = 32 << 20;
        // Bind this thread to its arena (made on its first allocation)
        // before taking the counters.
        drop(Blocks::touched(1));
        let (_, counters) = active_counters();
        let before = active_pages(&counters);
        let blocks = Blocks::touched(16);
        let during = active_pages(&counters);
        drop(blocks);
        let page = page_bytes().unwrap();
        assert!(
            during >= before + 16 * BLOCK / page,
            "{before} -> {during} pages"
        );
        assert!(
            active_pages(&counters) < during,
            "freeing did not lower the count"
        );

        let arena: u32 = ctl_read("thread.arena").expect("jemalloc answers");
        assert!(ctl_write(
            &format!("arena.{arena}.dirty_decay_ms"),
            Some(-1isize)
        ));
        drop(Blocks::touched(48));
        let kept = kept_bytes().expect("jemalloc is built with statistics");
        assert!(kept >= 128 << 20, "freed pages were not kept: {kept} bytes");
        govern_kept_pages(BUDGET).expect("the governor starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = kept_bytes().unwrap();
            if now <= BUDGET && purges() >= 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {now} bytes kept after 10 s, {} purges",
                purges()
            );
            std::thread::sleep(GOVERN_EVERY);
        }
    }

    #[test]
    fn the_documented_decay_is_the_configured_one() {
        let conf = std::str::from_utf8(MALLOC_CONF).unwrap();
        assert!(conf.ends_with('\0'), "jemalloc reads a C string");
        assert!(
            conf.contains(&format!(",dirty_decay_ms:{KEEP_DECAY_MS},")),
            "{conf}"
        );
    }

    #[test]
    fn the_governor_sleeps_longer_while_idle_and_briefly_once_pages_move() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(next_sleep(true, GOVERN_IDLE_EVERY), GOVERN_EVERY);
        assert_eq!(next_sleep(false, ms(10)), ms(20));
        assert_eq!(next_sleep(false, ms(640)), GOVERN_IDLE_EVERY);
        assert_eq!(next_sleep(false, GOVERN_IDLE_EVERY), GOVERN_IDLE_EVERY);
    }
}
