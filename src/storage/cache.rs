//! The batch cache: the tail of a partition, kept in memory.
//!
//! Direct I/O bypasses the page cache, so without this every consumer at the
//! tail would pay a disk read. Each partition keeps its most recent batches
//! as `Bytes` (the very buffers that arrived from the network, stamped);
//! batches not yet written to disk are pinned, since the cache is their only
//! readable copy. Written batches are evicted oldest-first when the partition
//! or its shard goes over budget.
//!
//! Owned by one partition's log, on that partition's shard; the shard-wide
//! byte count is shared through an `Rc<Cell<usize>>` within that shard only.

use bytes::Bytes;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: u64,
    pub last_offset: u64,
    /// Where the frame sits: segment and byte position.
    pub segment_base: u64,
    pub position: u64,
    pub frame: Bytes,
}

/// Shard-wide cache accounting.
#[derive(Debug, Default)]
pub struct CacheBudget {
    pub used_bytes: Cell<usize>,
    pub max_bytes: Cell<usize>,
    /// Partition caches on the shard that hold something: the ones that
    /// share the budget (idle partitions, and the 50 partitions of
    /// `__consumer_offsets` that a group never writes, do not shrink the
    /// others' share).
    active: Cell<usize>,
}

impl CacheBudget {
    pub fn new(max_bytes: usize) -> Rc<Self> {
        Rc::new(CacheBudget {
            used_bytes: Cell::new(0),
            max_bytes: Cell::new(max_bytes),
            active: Cell::new(0),
        })
    }

    pub fn over(&self) -> bool {
        self.used_bytes.get() > self.max_bytes.get()
    }

    /// What one partition may keep of written batches: an equal share of
    /// the shard's budget among the partitions whose caches hold something.
    /// Why not a fixed fraction: the fraction was
    /// 1/64, so with 2 partitions on a shard each kept 2 MiB of a 128 MiB
    /// budget (10 ms at 200 MiB/s), a live consumer a few milliseconds
    /// behind read from disk, and at max rate it fell seconds behind and
    /// never caught up. With equal shares the shard's total stays within
    /// its budget (plus unwritten batches and the callers' floor).
    pub fn fair_share(&self) -> usize {
        self.max_bytes.get() / self.active.get().max(1)
    }
}

pub struct BatchCache {
    entries: VecDeque<CachedBatch>,
    bytes: usize,
    budget: Rc<CacheBudget>,
}

impl Drop for BatchCache {
    fn drop(&mut self) {
        self.set_bytes(0);
    }
}

impl BatchCache {
    pub fn new(budget: Rc<CacheBudget>) -> Self {
        BatchCache {
            entries: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// What this partition may keep of written batches now (see
    /// [`CacheBudget::fair_share`]).
    pub fn share(&self) -> usize {
        self.budget.fair_share()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The one place this cache's byte count changes: the shard's count
    /// and its number of active caches follow.
    fn set_bytes(&mut self, new: usize) {
        let b = &self.budget;
        b.used_bytes.set(b.used_bytes.get() - self.bytes + new);
        match (self.bytes, new) {
            (0, n) if n > 0 => b.active.set(b.active.get() + 1),
            (o, 0) if o > 0 => b.active.set(b.active.get() - 1),
            _ => {}
        }
        self.bytes = new;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// First offset the cache can serve; None when empty.
    pub fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(|b| b.base_offset)
    }

    /// Segment and position of the first cached frame.
    pub fn first_position(&self) -> Option<(u64, u64)> {
        self.entries.front().map(|b| (b.segment_base, b.position))
    }

    pub fn push(&mut self, b: CachedBatch) {
        if let Some(last) = self.entries.back() {
            assert!(
                b.base_offset > last.last_offset,
                "cache batches out of order"
            );
        }
        self.set_bytes(self.bytes + b.frame.len());
        self.entries.push_back(b);
    }

    /// Evict written batches (last_offset < `flushed_offset`) from the front
    /// while this partition holds more than its share of the shard's budget
    /// (at least `keep_bytes`), or the shard is over budget.
    pub fn evict(&mut self, flushed_offset: u64, keep_bytes: usize) -> usize {
        self.evict_while(flushed_offset, keep_bytes.max(self.budget.fair_share()))
    }

    /// Evict every batch that ends below `offset` (the log start moved past
    /// it: retention, DeleteRecords), whatever the budget.
    pub fn evict_below(&mut self, offset: u64) -> usize {
        self.evict_while(offset, 0)
    }

    fn evict_while(&mut self, below: u64, keep_bytes: usize) -> usize {
        let mut freed = 0;
        while let Some(front) = self.entries.front() {
            if front.last_offset >= below {
                break;
            }
            if self.bytes <= keep_bytes && !self.budget.over() {
                break;
            }
            let b = self.entries.pop_front().unwrap();
            self.set_bytes(self.bytes - b.frame.len());
            freed += b.frame.len();
        }
        freed
    }

    /// Drop everything (truncation, deletion).
    pub fn clear(&mut self) {
        self.set_bytes(0);
        self.entries.clear();
    }

    /// Frames from the batch containing `offset`, up to `max_bytes` (at least
    /// one frame, as Kafka does, so a batch larger than max_bytes still moves),
    /// and only batches below `visible_end`.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        visible_end: u64,
        out: &mut Vec<Bytes>,
    ) -> usize {
        let i = self.entries.partition_point(|b| b.last_offset < offset);
        let mut total = 0;
        for b in self.entries.range(i..) {
            if b.base_offset >= visible_end {
                break;
            }
            if !out.is_empty() && total + b.frame.len() > max_bytes {
                break;
            }
            total += b.frame.len();
            out.push(b.frame.clone());
            if total >= max_bytes {
                break;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, len: usize) -> CachedBatch {
        CachedBatch {
            base_offset: base,
            last_offset: base,
            segment_base: 0,
            position: base * len as u64,
            frame: Bytes::from(vec![0u8; len]),
        }
    }

    fn fill(c: &mut BatchCache, from: u64, n: u64, len: usize) {
        for o in from..from + n {
            c.push(batch(o, len));
        }
    }

    #[test]
    fn each_partition_keeps_its_equal_share_of_the_shard_budget() {
        let budget = CacheBudget::new(100_000);
        let mut a = BatchCache::new(budget.clone());
        let mut b = BatchCache::new(budget.clone());
        // Empty caches do not count: alone, `a` may keep the whole budget.
        assert_eq!(budget.fair_share(), 100_000);
        fill(&mut a, 0, 80, 1000);
        a.evict(80, 1000);
        assert_eq!(a.bytes(), 80_000);
        // Once `b` holds something, each keeps half: `a` gives up 30 KB
        // at its next eviction, not down to the floor.
        fill(&mut b, 0, 1, 1000);
        assert_eq!(budget.fair_share(), 50_000);
        a.evict(80, 1000);
        assert_eq!(a.bytes(), 50_000);
        assert_eq!(a.first_offset(), Some(30));
        // `b` fills its share too; the shard is exactly at budget.
        fill(&mut b, 1, 49, 1000);
        b.evict(50, 1000);
        assert_eq!(b.bytes(), 50_000);
        assert_eq!(budget.used_bytes.get(), 100_000);
        // 10 KB more, not yet written: over budget, `b` evicts written
        // batches until the shard is back within it.
        fill(&mut b, 50, 10, 1000);
        b.evict(50, 1000);
        assert_eq!(budget.used_bytes.get(), 100_000);
        assert_eq!(b.first_offset(), Some(10));
        // Unwritten batches are never evicted, even over budget.
        fill(&mut b, 60, 60, 1000);
        b.evict(50, 1000);
        assert_eq!(b.first_offset(), Some(50), "only unwritten batches left");
        assert_eq!(b.bytes(), 70_000);
        // A third partition with data shrinks the shares; `a` also gives
        // up what puts the shard over budget (b's 70 KB unwritten): 50 -> 30 KB.
        let mut c = BatchCache::new(budget.clone());
        fill(&mut c, 0, 1, 1000);
        assert_eq!(budget.fair_share(), 33_333);
        a.evict(80, 1000);
        assert_eq!(a.bytes(), 29_000);
        assert_eq!(budget.used_bytes.get(), 100_000);
        drop(c);
        assert_eq!(budget.fair_share(), 50_000);
        // Emptied by eviction, a cache stops counting.
        a.evict_below(80);
        assert!(a.is_empty());
        assert_eq!(budget.fair_share(), 100_000);
        drop(a);
        assert_eq!(budget.used_bytes.get(), 70_000);
    }

    #[test]
    fn evict_below_ignores_the_share() {
        let budget = CacheBudget::new(1 << 30);
        let mut a = BatchCache::new(budget.clone());
        fill(&mut a, 0, 10, 100);
        // Within budget and share: a plain evict keeps everything.
        assert_eq!(a.evict(10, 0), 0);
        // The log start moved to 4: batches 0..=3 are gone.
        assert_eq!(a.evict_below(4), 400);
        assert_eq!(a.first_offset(), Some(4));
        assert_eq!(budget.used_bytes.get(), 600);
    }
}
