//! What a shard's reads were served from: the batch cache or the segment
//! files, and how many bytes the disk reads fetched for them.
//!
//! Owned by the shard's thread (thread-local counters, no sharing); they
//! only grow, from the shard's start, and the shard logs them when it
//! stops. They answer "do my consumers read from memory?": a live consumer
//! that falls behind the cache reads from disk, in competition with the
//! writes, and may never catch up again.

use std::cell::Cell;

thread_local! {
    static STATS: ReadStats = const {
        ReadStats {
            cache_bytes: Cell::new(0),
            disk_bytes: Cell::new(0),
            disk_reads: Cell::new(0),
            disk_read_bytes: Cell::new(0),
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
}

/// A snapshot of this thread's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub cache_bytes: u64,
    pub disk_bytes: u64,
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
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

/// This thread's counters so far.
pub fn counts() -> ReadCounts {
    STATS.with(|s| ReadCounts {
        cache_bytes: s.cache_bytes.get(),
        disk_bytes: s.disk_bytes.get(),
        disk_reads: s.disk_reads.get(),
        disk_read_bytes: s.disk_read_bytes.get(),
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
        let after = counts();
        assert_eq!(after.cache_bytes - before.cache_bytes, 10);
        assert_eq!(after.disk_bytes - before.disk_bytes, 20);
        assert_eq!(after.disk_reads - before.disk_reads, 2);
        assert_eq!(after.disk_read_bytes - before.disk_read_bytes, 4196);
        // Another thread has its own.
        let other = std::thread::spawn(counts).join().unwrap();
        assert_eq!(other, ReadCounts::default());
    }
}
