//! A shard's I/O counters: what its reads were served from (the batch
//! cache or the segment files, and how many bytes the disk reads fetched
//! for them), and how many group-commit fdatasyncs its partitions ran and
//! how long they took.
//!
//! Owned by the shard's thread (thread-local counters, no sharing); they
//! only grow, from the shard's start, and the shard logs them when it
//! stops. They answer "do my consumers read from memory?" (a live consumer
//! that falls behind the cache reads from disk, in competition with the
//! writes, and may never catch up again) and "are syncs slow?" (a sync
//! holds its partition's writes; see `storage::io_workers`) and "did the
//! disk stand still?" (slow operations, see `storage::log::slow_disk`).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A disk operation that takes this long or longer is a slow one: counted,
/// and logged by the caller. A healthy disk completes a write chunk in
/// milliseconds and a group commit's fdatasync in tens of them; a second
/// is a disk that stood still (issue 14: a run that stood still for 4 s
/// with every thread waiting).
pub const SLOW_DISK_OP: Duration = Duration::from_secs(1);

/// At most one slow-disk warning per shard per this interval: a disk that
/// stands still slows every partition's writes at once.
pub const SLOW_DISK_WARN_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static STATS: ReadStats = const {
        ReadStats {
            cache_bytes: Cell::new(0),
            disk_bytes: Cell::new(0),
            disk_reads: Cell::new(0),
            disk_read_bytes: Cell::new(0),
            syncs: Cell::new(0),
            sync_micros: Cell::new(0),
            slow_ops: Cell::new(0),
            slowest_op_micros: Cell::new(0),
            unlogged_slow_ops: Cell::new(0),
            slow_warned_at: Cell::new(None),
        }
    };
}

struct ReadStats {
    /// Bytes of frames answered from the cache.
    cache_bytes: Cell<u64>,
    /// Bytes of frames answered from segment files.
    disk_bytes: Cell<u64>,
    /// Reads issued to segment files, and the bytes they fetched (more
    /// than `disk_bytes` when a read ends inside a frame, or starts at an
    /// index entry before the offset asked for).
    disk_reads: Cell<u64>,
    disk_read_bytes: Cell<u64>,
    /// Group-commit fdatasyncs of segment files, and their summed wall
    /// time (from submission to completion, as the flusher waited).
    syncs: Cell<u64>,
    sync_micros: Cell<u64>,
    /// Disk operations (writes, syncs, reservations, file creation, reads)
    /// that took at least `SLOW_DISK_OP`, and the longest of all of them.
    slow_ops: Cell<u64>,
    slowest_op_micros: Cell<u64>,
    /// Slow operations not yet named in a warning, and when the last
    /// warning was logged (the rate limit).
    unlogged_slow_ops: Cell<u64>,
    slow_warned_at: Cell<Option<Instant>>,
}

/// A snapshot of this thread's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub cache_bytes: u64,
    pub disk_bytes: u64,
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
    pub syncs: u64,
    pub sync_micros: u64,
    pub slow_ops: u64,
    pub slowest_op_micros: u64,
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

pub fn served_from_cache(bytes: usize) {
    STATS.with(|s| add(&s.cache_bytes, bytes as u64));
}

pub fn served_from_disk(bytes: usize) {
    STATS.with(|s| add(&s.disk_bytes, bytes as u64));
}

pub fn disk_read(bytes: usize) {
    STATS.with(|s| {
        add(&s.disk_reads, 1);
        add(&s.disk_read_bytes, bytes as u64);
    });
}

/// One group-commit fdatasync that took `took`.
pub fn synced(took: std::time::Duration) {
    STATS.with(|s| {
        add(&s.syncs, 1);
        add(&s.sync_micros, took.as_micros() as u64);
    });
}

/// One disk operation that took `took`, ending at `now`. When it was slow
/// and no warning was logged in the last `SLOW_DISK_WARN_EVERY`, returns
/// how many slow operations the warning to log now stands for (this one
/// and those since the previous warning).
pub fn disk_op(took: Duration, now: Instant) -> Option<u64> {
    STATS.with(|s| {
        let micros = took.as_micros() as u64;
        s.slowest_op_micros
            .set(s.slowest_op_micros.get().max(micros));
        if took < SLOW_DISK_OP {
            return None;
        }
        add(&s.slow_ops, 1);
        add(&s.unlogged_slow_ops, 1);
        let quiet = s
            .slow_warned_at
            .get()
            .is_none_or(|t| now.saturating_duration_since(t) >= SLOW_DISK_WARN_EVERY);
        if !quiet {
            return None;
        }
        s.slow_warned_at.set(Some(now));
        Some(s.unlogged_slow_ops.replace(0))
    })
}

/// This thread's counters so far.
pub fn counts() -> ReadCounts {
    STATS.with(|s| ReadCounts {
        cache_bytes: s.cache_bytes.get(),
        disk_bytes: s.disk_bytes.get(),
        disk_reads: s.disk_reads.get(),
        disk_read_bytes: s.disk_read_bytes.get(),
        syncs: s.syncs.get(),
        sync_micros: s.sync_micros.get(),
        slow_ops: s.slow_ops.get(),
        slowest_op_micros: s.slowest_op_micros.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_thread() {
        let before = counts();
        served_from_cache(10);
        served_from_disk(20);
        disk_read(4096);
        disk_read(100);
        synced(std::time::Duration::from_millis(3));
        let after = counts();
        assert_eq!(after.cache_bytes - before.cache_bytes, 10);
        assert_eq!(after.disk_bytes - before.disk_bytes, 20);
        assert_eq!(after.disk_reads - before.disk_reads, 2);
        assert_eq!(after.disk_read_bytes - before.disk_read_bytes, 4196);
        assert_eq!(after.syncs - before.syncs, 1);
        assert_eq!(after.sync_micros - before.sync_micros, 3000);
        assert_eq!(after.slow_ops, before.slow_ops);
        // Another thread has its own.
        let other = std::thread::spawn(counts).join().unwrap();
        assert_eq!(other, ReadCounts::default());
    }

    #[test]
    fn slow_operations_are_counted_and_warned_of_at_most_once_a_second() {
        std::thread::spawn(|| {
            let t0 = Instant::now();
            let ms = Duration::from_millis;
            assert_eq!(disk_op(ms(30), t0), None, "a fast one is not slow");
            assert_eq!(
                disk_op(SLOW_DISK_OP, t0),
                Some(1),
                "the first slow one warns"
            );
            assert_eq!(
                disk_op(ms(4000), t0 + ms(500)),
                None,
                "within a second: counted only"
            );
            assert_eq!(disk_op(ms(1500), t0 + ms(900)), None);
            assert_eq!(
                disk_op(ms(999), t0 + ms(1200)),
                None,
                "not slow, warns of nothing"
            );
            assert_eq!(
                disk_op(ms(1200), t0 + ms(1000)),
                Some(3),
                "a second later: this one and the two unlogged"
            );
            let c = counts();
            assert_eq!(c.slow_ops, 4);
            assert_eq!(c.slowest_op_micros, 4_000_000);
        })
        .join()
        .unwrap();
    }
}
