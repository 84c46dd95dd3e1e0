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
}

impl CacheBudget {
    pub fn new(max_bytes: usize) -> Rc<Self> {
        Rc::new(CacheBudget {
            used_bytes: Cell::new(0),
            max_bytes: Cell::new(max_bytes),
        })
    }

    pub fn over(&self) -> bool {
        self.used_bytes.get() > self.max_bytes.get()
    }
}

pub struct BatchCache {
    entries: VecDeque<CachedBatch>,
    bytes: usize,
    budget: Rc<CacheBudget>,
}

impl Drop for BatchCache {
    fn drop(&mut self) {
        let used = self.budget.used_bytes.get();
        self.budget.used_bytes.set(used - self.bytes);
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

    pub fn bytes(&self) -> usize {
        self.bytes
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
        self.bytes += b.frame.len();
        self.budget
            .used_bytes
            .set(self.budget.used_bytes.get() + b.frame.len());
        self.entries.push_back(b);
    }

    /// Evict written batches (last_offset < `flushed_offset`) from the front
    /// while this partition holds more than `keep_bytes` or the shard is over budget.
    pub fn evict(&mut self, flushed_offset: u64, keep_bytes: usize) -> usize {
        let mut freed = 0;
        while let Some(front) = self.entries.front() {
            if front.last_offset >= flushed_offset {
                break;
            }
            if self.bytes <= keep_bytes && !self.budget.over() {
                break;
            }
            let b = self.entries.pop_front().unwrap();
            self.bytes -= b.frame.len();
            self.budget
                .used_bytes
                .set(self.budget.used_bytes.get() - b.frame.len());
            freed += b.frame.len();
        }
        freed
    }

    /// Drop everything (truncation, deletion).
    pub fn clear(&mut self) {
        let used = self.budget.used_bytes.get();
        self.budget.used_bytes.set(used - self.bytes);
        self.bytes = 0;
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
