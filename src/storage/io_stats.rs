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
//! holds its partition's writes; see `storage::io_workers`).

use std::cell::Cell;

thread_local! {
    static STATS: ReadStats = const {
        ReadStats {
            cache_bytes: Cell::new(0),
            disk_bytes: Cell::new(0),
            disk_reads: Cell::new(0),
            disk_read_bytes: Cell::new(0),
            syncs: Cell::new(0),
            sync_micros: Cell::new(0),
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

/// This thread's counters so far.
pub fn counts() -> ReadCounts {
    STATS.with(|s| ReadCounts {
        cache_bytes: s.cache_bytes.get(),
        disk_bytes: s.disk_bytes.get(),
        disk_reads: s.disk_reads.get(),
        disk_read_bytes: s.disk_read_bytes.get(),
        syncs: s.syncs.get(),
        sync_micros: s.sync_micros.get(),
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
        // Another thread has its own.
        let other = std::thread::spawn(counts).join().unwrap();
        assert_eq!(other, ReadCounts::default());
    }
}
