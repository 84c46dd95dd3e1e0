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
//! pages (no decay of its own) and a governor thread
//! ([`govern_kept_pages`]) purges them all once they pass their budget,
//! checked every [`GOVERN_EVERY`]: [`KEPT_BYTES_MAX`], or in a broker the
//! room its data budgets leave beyond the pages in use
//! ([`set_heap_bytes_max`]); and once the process has not reused them for
//! [`KEEP_IDLE`]. Peak
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
/// - `dirty_decay_ms:-1`: freed pages are kept for reuse until the
///   governor ([`govern_kept_pages`]) purges them: past the budget, or
///   once the process stops reusing them for [`KEEP_IDLE`]. jemalloc's own
///   decay (10 s in earlier builds) purged the pool a steady stream reuses,
///   a little at a time: 85,000-106,000 page faults in a 10 s 1 KB acks=1
///   run of `shardlog serve` (96% of them in `recv` into fresh request
///   buffers), against 1,188 with no decay, and the broker's CPU per GB
///   0.62 against 0.55-0.57 s (README, "Against the disk").
///   `muzzy_decay_ms:0`: purged pages are unmapped, not kept lazily.
pub const MALLOC_CONF: &[u8] =
    b"narenas:1,oversize_threshold:0,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:0\0";

/// How long the process may go without reusing its kept pages before
/// the governor gives them back: an idle broker returns to its idle
/// size about this long after a burst, as jemalloc's 10 s decay did.
pub const KEEP_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Fewer large allocations (jemalloc's blocks of 16 KiB and more: request
/// buffers, batches, fetch answers) than this over [`KEEP_IDLE`] count as
/// idle. A client producing one small batch a second is idle; one
/// streaming at any benchmark's rate is not.
pub const IDLE_LARGE_ALLOCS: u64 = 64;

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

/// The most bytes the heap may hold, pages in use and freed pages kept
/// together, before the governor purges the kept ones; 0 while no
/// process has set it ([`set_heap_bytes_max`]). Why: a broker's budgets
/// bound the memory its data may hold, and while the data holds less
/// (a batch cache not yet full, few requests in flight) the pages it
/// freed are better kept than purged and faulted in afresh. With
/// jemalloc's decay off and only the fixed 128 MiB, loadgen's embedded
/// broker purged all its kept pages 4-7 times in a 13 s 1 KB run (each
/// one ~32,000 pages to fault in and zero again); with its data budgets
/// here, none.
static HEAP_BYTES_MAX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Let the governor keep freed pages while pages in use plus kept stay
/// within `bytes` (and always up to its `max`). The broker sets its data
/// budgets here (`BrokerConfig::data_memory_bound` less the io_uring
/// memory, which jemalloc does not hold), so its resident memory keeps
/// within `BrokerConfig::memory_bound` as before.
pub fn set_heap_bytes_max(bytes: usize) {
    HEAP_BYTES_MAX.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// How many bytes of freed pages the governor lets jemalloc keep while
/// `active` bytes are in use: `kept_max`, or more while the heap budget
/// `heap_max` has room beyond what is in use.
pub fn kept_allowance(kept_max: usize, heap_max: usize, active: usize) -> usize {
    kept_max.max(heap_max.saturating_sub(active))
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
    read_heap().map(|r| r.kept)
}

/// What the governor reads of the heap, from one statistics refresh.
struct HeapRead {
    /// Bytes of freed pages kept.
    kept: usize,
    /// Bytes of pages in use (jemalloc's `stats.active`).
    active: usize,
    /// Large allocations since the process started, all arenas.
    large_allocs: u64,
}

fn read_heap() -> Option<HeapRead> {
    if !ctl_write("epoch", Some(1u64)) {
        return None;
    }
    let dirty: usize = ctl_read(KEPT_PAGES_CTL)?;
    Some(HeapRead {
        kept: dirty * page_bytes()?,
        active: ctl_read("stats.active")?,
        large_allocs: ctl_read("stats.arenas.4096.large.nmalloc")?,
    })
}

/// Whether the governor purges the kept pages after a read: they passed
/// what it allows, or the process has not reused them for [`KEEP_IDLE`].
pub fn should_purge(kept: usize, allowed: usize, idle_for: std::time::Duration) -> bool {
    kept > allowed || (kept > 0 && idle_for >= KEEP_IDLE)
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
        decay_instead();
        return Err(std::io::Error::other(
            "jemalloc's statistics are not available: is it the global allocator?",
        ));
    }
    let spawned = std::thread::Builder::new()
        .name("alloc-governor".into())
        .spawn(move || {
            let (mut narenas, mut counters) = active_counters();
            let (mut active_at_read, mut sleep) = (usize::MAX, GOVERN_EVERY);
            // The idle clock: restarted whenever the process has made
            // more than IDLE_LARGE_ALLOCS large allocations since its last
            // restart (and at a purge); with the count at that restart.
            let (mut busy_at, mut large_at_busy) = (std::time::Instant::now(), 0u64);
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
                let read = read_heap();
                if ctl_read::<u32>("arenas.narenas") != Some(narenas)
                    || counters.len() < narenas as usize
                {
                    (narenas, counters) = active_counters();
                }
                active_at_read = active_pages(&counters);
                let Some(HeapRead {
                    kept,
                    active,
                    large_allocs,
                }) = read
                else {
                    continue;
                };
                let now = std::time::Instant::now();
                if large_allocs.saturating_sub(large_at_busy) > IDLE_LARGE_ALLOCS {
                    (busy_at, large_at_busy) = (now, large_allocs);
                }
                let heap_max = HEAP_BYTES_MAX.load(std::sync::atomic::Ordering::Relaxed);
                let allowed = kept_allowance(max, heap_max, active);
                if !should_purge(kept, allowed, now - busy_at) {
                    continue;
                }
                // Idle or not, the clock starts again: an idle process is
                // purged once per KEEP_IDLE at most.
                busy_at = now;
                if ctl_write::<u64>(PURGE_CTL, None) {
                    PURGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(
                        kept,
                        active,
                        allowed,
                        "purged the freed pages the allocator kept"
                    );
                }
            }
        });
    if spawned.is_err() {
        decay_instead();
    }
    spawned.map(drop)
}

/// Without the governor nothing would give kept pages back
/// ([`MALLOC_CONF`] turns jemalloc's decay off): let jemalloc decay them
/// over [`KEEP_IDLE`] instead, in every arena and in those it makes
/// later. Does nothing if jemalloc is not the process's allocator.
fn decay_instead() {
    let ms = KEEP_IDLE.as_millis() as isize;
    ctl_write("arenas.dirty_decay_ms", Some(ms));
    for i in 0..ctl_read::<u32>("arenas.narenas").unwrap_or(0) {
        ctl_write(&format!("arena.{i}.dirty_decay_ms"), Some(ms));
    }
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

        // A process whose governor cannot run falls back to jemalloc's
        // own decay (in this test, after the governor, so that the
        // arena's pages stayed kept above).
        decay_instead();
        let decay: isize = ctl_read(&format!("arena.{arena}.dirty_decay_ms")).unwrap();
        assert_eq!(decay, KEEP_IDLE.as_millis() as isize);
    }

    #[test]
    fn jemalloc_keeps_freed_pages_for_the_governor_to_purge() {
        let conf = std::str::from_utf8(MALLOC_CONF).unwrap();
        assert!(conf.ends_with('\0'), "jemalloc reads a C string");
        // The governor, not jemalloc's decay, gives kept pages back.
        assert!(conf.contains(",dirty_decay_ms:-1,"), "{conf}");
    }

    #[test]
    fn a_broker_keeps_freed_pages_while_its_data_leaves_room_in_the_budget() {
        const MIB: usize = 1 << 20;
        // No heap budget (loadgen, client commands): the fixed budget.
        assert_eq!(kept_allowance(128 * MIB, 0, 900 * MIB), 128 * MIB);
        // A broker whose data holds 1 GiB of its 2 GiB budgets keeps up
        // to the other 1 GiB of freed pages...
        assert_eq!(
            kept_allowance(128 * MIB, 2048 * MIB, 1024 * MIB),
            1024 * MIB
        );
        // ...and never less than the fixed budget, however full.
        assert_eq!(kept_allowance(128 * MIB, 2048 * MIB, 2040 * MIB), 128 * MIB);
        assert_eq!(kept_allowance(128 * MIB, 2048 * MIB, 4096 * MIB), 128 * MIB);
    }

    #[test]
    fn kept_pages_are_purged_past_their_budget_or_once_idle() {
        let s = std::time::Duration::from_secs;
        assert!(!should_purge(100, 100, s(0)));
        assert!(should_purge(101, 100, s(0)));
        assert!(!should_purge(100, 100, KEEP_IDLE - s(1)));
        assert!(should_purge(1, 100, KEEP_IDLE));
        // Nothing kept: nothing to give back.
        assert!(!should_purge(0, 100, KEEP_IDLE * 2));
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
