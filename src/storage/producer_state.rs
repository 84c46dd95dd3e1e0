//! Idempotent-producer state of one partition: for each producer id, its
//! epoch and its last few batches' sequence ranges.
//!
//! Lifecycle: owned by the partition's [`super::log::Log`] on the partition's
//! shard; updated on every append; rebuilt at open from the checkpoint and
//! the scanned tail of the log.

use crate::format::BatchHeader;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer (Kafka's max.in.flight for idempotence is 5).
pub const BATCHES_REMEMBERED: usize = 5;
/// Producers remembered per partition; the least recently seen is forgotten first.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<SeqBatch>,
    pub last_seen_offset: u64,
    /// Max timestamp of the producer's last batch (-1: not known, an entry
    /// restored from a version 1 checkpoint). DescribeProducers reports it.
    pub last_timestamp: i64,
}

impl ProducerEntry {
    /// Sequence of the producer's last record (-1 before any).
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }
}

/// What an append must do with a batch.
/// Why an idempotent producer's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent, or the next sequence: append.
    Append,
    /// Already appended: answer with the original offsets, append nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
}

#[derive(Debug, Default, Clone)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

/// The last sequence number a batch carries (sequences wrap past i32::MAX).
pub fn last_seq_of(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX, as in Kafka.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, pid: i64) -> Option<&ProducerEntry> {
        self.producers.get(&pid)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }

    /// A copy of every entry, by producer id.
    pub fn sorted(&self) -> Vec<(i64, ProducerEntry)> {
        let mut v: Vec<_> = self.iter().map(|(p, e)| (*p, e.clone())).collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// Decide what to do with a batch, without changing state.
    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, SequenceError> {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Ok(SeqCheck::Append);
        }
        let Some(e) = self.producers.get(&h.producer_id) else {
            return Ok(SeqCheck::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(SequenceError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: e.epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(SequenceError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_seq_of(h);
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(SeqCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = e
            .batches
            .back()
            .map(|b| {
                if b.last_seq == i32::MAX {
                    0
                } else {
                    b.last_seq + 1
                }
            })
            .unwrap_or(0);
        if h.base_sequence == expected {
            Ok(SeqCheck::Append)
        } else {
            Err(SequenceError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            })
        }
    }

    /// Record an appended batch (with its stamped offsets).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        if !self.producers.contains_key(&h.producer_id) && self.producers.len() >= PRODUCERS_MAX {
            // Forget the producer seen longest ago.
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_seen_offset)
                .map(|(pid, _)| *pid)
            {
                self.producers.remove(&oldest);
            }
        }
        let e = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_seen_offset: 0,
                last_timestamp: -1,
            });
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(SeqBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq_of(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        if e.batches.len() > BATCHES_REMEMBERED {
            e.batches.pop_front();
        }
        e.last_seen_offset = h.last_offset();
        e.last_timestamp = h.max_timestamp;
    }

    /// Restore an entry from a checkpoint.
    pub fn restore(&mut self, pid: i64, entry: ProducerEntry) {
        self.producers.insert(pid, entry);
    }
}
