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

    /// A table of these entries (as [`Self::sorted`] lists them).
    pub fn from_entries(entries: &[(i64, ProducerEntry)]) -> ProducerTable {
        ProducerTable {
            producers: entries.iter().cloned().collect(),
        }
    }

    /// Bring in `start`, the table as of this log's start offset, when
    /// this table was rebuilt from the log's batches from that start on
    /// (a replica's log after retention or a Raft snapshot moved its start,
    /// then was truncated or reopened; the batches before the start are
    /// gone) — or already knows older batches too (a checkpoint): the
    /// result is the table as of the log end either way, as replaying
    /// every batch from the beginning would have left it. Per producer:
    /// the start's entry when no later batch has one; the later entry
    /// when its epoch differs (a new epoch forgets the old one's batches;
    /// epochs never go down along a log, the leader refuses older ones);
    /// with the same epoch, the last [`BATCHES_REMEMBERED`] of both
    /// entries' batches by offset, each once.
    pub fn merge_start(&mut self, start: &ProducerTable) {
        for (pid, s) in &start.producers {
            let Some(e) = self.producers.get_mut(pid) else {
                self.producers.insert(*pid, s.clone());
                continue;
            };
            if e.epoch != s.epoch {
                continue;
            }
            let mut all: Vec<SeqBatch> = s.batches.iter().chain(&e.batches).copied().collect();
            all.sort_by_key(|b| b.base_offset);
            all.dedup_by_key(|b| b.base_offset);
            let keep = all.len().saturating_sub(BATCHES_REMEMBERED);
            e.batches = all.into_iter().skip(keep).collect();
            if s.last_seen_offset > e.last_seen_offset {
                e.last_seen_offset = s.last_seen_offset;
                e.last_timestamp = s.last_timestamp;
            }
        }
        while self.producers.len() > PRODUCERS_MAX {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(pid, e)| (e.last_seen_offset, **pid))
                .map(|(pid, _)| *pid)
                .expect("not empty");
            self.producers.remove(&oldest);
        }
    }
}

/// Bytes of one producer's fixed part in [`encode_table`].
const ENTRY_BYTES: usize = 32;
/// Bytes of one batch in [`encode_table`].
const BATCH_BYTES: usize = 24;

/// One producer's entry, little-endian (the layout of the partition
/// checkpoint's version 2, docs/segment_format.md): i64 pid | i16 epoch |
/// u16 batch_count | u32 reserved (0) | u64 last_seen_offset | i64
/// last_timestamp | batch_count x { i32 first_seq | i32 last_seq | u64
/// base_offset | u64 last_offset }.
pub fn encode_entry(pid: i64, e: &ProducerEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&pid.to_le_bytes());
    out.extend_from_slice(&e.epoch.to_le_bytes());
    out.extend_from_slice(&(e.batches.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&e.last_seen_offset.to_le_bytes());
    out.extend_from_slice(&e.last_timestamp.to_le_bytes());
    for s in &e.batches {
        out.extend_from_slice(&s.first_seq.to_le_bytes());
        out.extend_from_slice(&s.last_seq.to_le_bytes());
        out.extend_from_slice(&s.base_offset.to_le_bytes());
        out.extend_from_slice(&s.last_offset.to_le_bytes());
    }
}

/// A whole table as a replica's Raft state and snapshots carry it:
/// u32 producer_count, then each entry ([`encode_entry`]) by producer id.
pub fn encode_table(entries: &[(i64, ProducerEntry)], out: &mut Vec<u8>) {
    assert!(
        entries.len() <= PRODUCERS_MAX,
        "a table of at most {PRODUCERS_MAX} producers"
    );
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (pid, e) in entries {
        assert!(e.batches.len() <= BATCHES_REMEMBERED);
        encode_entry(*pid, e, out);
    }
}

/// Why bytes are not a producer table ([`decode_table`]): they come from
/// a disk or a peer, so a lie is an error, never a panic or a large
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableBytesError {
    #[error("producer table ends at byte {len}, {needed} bytes needed")]
    Truncated { len: usize, needed: usize },
    #[error("producer table lists {count} producers, at most {PRODUCERS_MAX}")]
    TooManyProducers { count: u32 },
    #[error("producer {pid} lists {count} batches, at most {BATCHES_REMEMBERED}")]
    TooManyBatches { pid: i64, count: u16 },
    #[error("producer {pid} is not listed in increasing order of producer id")]
    Unsorted { pid: i64 },
    #[error("producer {pid}: reserved bytes are not zero")]
    Reserved { pid: i64 },
}

/// Read a table written by [`encode_table`] at the start of `b`; returns
/// the entries (by producer id) and the bytes it took.
pub fn decode_table(b: &[u8]) -> Result<(Vec<(i64, ProducerEntry)>, usize), TableBytesError> {
    let count = u32::from_le_bytes(
        b.get(..4)
            .ok_or(TableBytesError::Truncated {
                len: b.len(),
                needed: 4,
            })?
            .try_into()
            .expect("4 bytes"),
    );
    if count as usize > PRODUCERS_MAX {
        return Err(TableBytesError::TooManyProducers { count });
    }
    let mut at = 4;
    let mut entries: Vec<(i64, ProducerEntry)> = Vec::new();
    for _ in 0..count {
        let ((pid, e), used) = decode_entry(b, at, true)?;
        if entries.last().is_some_and(|(p, _)| *p >= pid) {
            return Err(TableBytesError::Unsorted { pid });
        }
        entries.push((pid, e));
        at += used;
    }
    Ok((entries, at))
}

/// Read one entry written by [`encode_entry`] at `b[at..]` (without
/// `last_timestamp` when `with_timestamp` is false: the partition
/// checkpoint's version 1, read as -1); returns it and the bytes it took.
pub fn decode_entry(
    b: &[u8],
    at: usize,
    with_timestamp: bool,
) -> Result<((i64, ProducerEntry), usize), TableBytesError> {
    let mut pos = at;
    let mut take = |n: usize| -> Result<&[u8], TableBytesError> {
        let s = b.get(pos..pos + n).ok_or(TableBytesError::Truncated {
            len: b.len(),
            needed: pos + n,
        })?;
        pos += n;
        Ok(s)
    };
    let le8 = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let le4 = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
    let head = take(ENTRY_BYTES - 8)?;
    let pid = le8(&head[..8]) as i64;
    let epoch = i16::from_le_bytes(head[8..10].try_into().expect("2 bytes"));
    let n = u16::from_le_bytes(head[10..12].try_into().expect("2 bytes"));
    if le4(&head[12..16]) != 0 {
        return Err(TableBytesError::Reserved { pid });
    }
    let last_seen_offset = le8(&head[16..24]);
    let last_timestamp = if with_timestamp {
        le8(take(8)?) as i64
    } else {
        -1
    };
    if n as usize > BATCHES_REMEMBERED {
        return Err(TableBytesError::TooManyBatches { pid, count: n });
    }
    let mut batches = VecDeque::with_capacity(n as usize);
    for _ in 0..n {
        let s = take(BATCH_BYTES)?;
        batches.push_back(SeqBatch {
            first_seq: le4(&s[..4]) as i32,
            last_seq: le4(&s[4..8]) as i32,
            base_offset: le8(&s[8..16]),
            last_offset: le8(&s[16..24]),
        });
    }
    let e = ProducerEntry {
        epoch,
        batches,
        last_seen_offset,
        last_timestamp,
    };
    Ok(((pid, e), pos - at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, base_offset: u64, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset,
            base_timestamp: base_offset as i64,
            max_timestamp: base_offset as i64,
            producer_id: pid,
            header_crc: 0,
            payload_len: 0,
            crc: 0,
            partition_leader_epoch: 0,
            last_offset_delta: records - 1,
            base_sequence: seq,
            record_count: records,
            producer_epoch: epoch,
            attributes: 0,
        }
    }

    /// The table as of a log start, merged into the table rebuilt from the
    /// batches after it (or from a checkpoint that knows them all), is
    /// the table replaying every batch leaves, wherever the start is.
    #[test]
    fn the_table_as_of_the_start_merged_with_the_rest_is_the_whole_replay() {
        // Three producers: one that bumps its epoch half way, one with few
        // batches, one with many; a plain batch now and then.
        let mut log = Vec::new();
        let (mut offset, mut seqs) = (0u64, [0i32; 3]);
        for i in 0..40u64 {
            let p = (i % 3) as usize;
            let epoch = if p == 0 && i >= 20 { 1 } else { 0 };
            if p == 0 && i == 21 {
                seqs[0] = 0;
            }
            let (pid, records) = if i % 7 == 6 {
                (-1, 1)
            } else {
                (p as i64 + 10, 1 + (i % 3) as i32)
            };
            let seq = if pid < 0 { -1 } else { seqs[p] };
            log.push(header(pid, epoch, seq, offset, records));
            if pid >= 0 {
                seqs[p] += records;
            }
            offset += records as u64;
        }
        let replay = |hs: &[BatchHeader], base: &ProducerTable| {
            let mut t = base.clone();
            for h in hs {
                t.record(h);
            }
            t
        };
        let whole = replay(&log, &ProducerTable::default());
        for split in 0..=log.len() {
            let start = replay(&log[..split], &ProducerTable::default());
            let mut after = replay(&log[split..], &ProducerTable::default());
            after.merge_start(&start);
            assert_eq!(after.sorted(), whole.sorted(), "split at batch {split}");
            // Merging into a table that already knows everything changes nothing.
            let mut again = whole.clone();
            again.merge_start(&start);
            assert_eq!(again.sorted(), whole.sorted(), "split at batch {split}");
        }
        let mut bytes = Vec::new();
        encode_table(&whole.sorted(), &mut bytes);
        let (back, used) = decode_table(&bytes).unwrap();
        assert_eq!((back, used), (whole.sorted(), bytes.len()));
    }
}
