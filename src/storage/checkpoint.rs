//! The partition checkpoint: a durable lower bound of what is synced, plus
//! the idempotent-producer table as of that point.
//!
//! Written by the flusher after a sync (at most every
//! `recovery_point_interval_ms`), after every roll, and at clean close.
//! Recovery trusts every byte before the checkpoint (a bad frame there is
//! corruption, refused) and treats bad bytes after it as a torn tail (cut).
//! A stale checkpoint is always safe: it only makes recovery more lenient.
//!
//! Layout (little-endian), see docs/segment_format.md:
//! ```text
//!  0 u32 magic "SLCP"      4 u32 version = 2 (1 is read too)
//!  8 u64 segment_base     16 u64 position      24 u64 next_offset
//! 32 u32 producer_count   36 u32 reserved (0)
//! 40 producers: { i64 pid, i16 epoch, u16 batch_count, u32 reserved,
//!                 u64 last_seen_offset, i64 last_timestamp (version 2 only),
//!                 batch_count x { i32 first_seq, i32 last_seq, u64 base_offset, u64 last_offset } }
//! .. u32 crc32c of every preceding byte
//! ```
//!
//! This module only encodes and decodes (no I/O, no state); the partition's
//! flusher writes the file and the replayer reads it, both on the
//! partition's shard.

use super::producer_state::{decode_entry, ProducerEntry, ProducerTable, TableBytesError};

const MAGIC: u32 = u32::from_le_bytes(*b"SLCP");
const VERSION: u32 = 2;
/// Version 1 had no last_timestamp per producer; read as -1 (not known).
const VERSION_1: u32 = 1;
pub const FILE_NAME: &str = "checkpoint";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub segment_base: u64,
    pub position: u64,
    pub next_offset: u64,
    pub producers: Vec<(i64, ProducerEntry)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint truncated")]
    Truncated,
    #[error("checkpoint magic, version or CRC does not match")]
    Invalid,
}

impl Checkpoint {
    pub fn from_table(
        segment_base: u64,
        position: u64,
        next_offset: u64,
        t: &ProducerTable,
    ) -> Self {
        Checkpoint {
            segment_base,
            position,
            next_offset,
            producers: t.sorted(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.producers.len() * 64);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.segment_base.to_le_bytes());
        b.extend_from_slice(&self.position.to_le_bytes());
        b.extend_from_slice(&self.next_offset.to_le_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (pid, e) in &self.producers {
            super::producer_state::encode_entry(*pid, e, &mut b);
        }
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        if bytes.len() < 44 {
            return Err(CheckpointError::Truncated);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if u32::from_le_bytes(crc.try_into().unwrap()) != crate::format::crc::crc32c(body) {
            return Err(CheckpointError::Invalid);
        }
        let mut r = Reader { b: body, at: 0 };
        if r.u32()? != MAGIC {
            return Err(CheckpointError::Invalid);
        }
        let version = r.u32()?;
        if version != VERSION && version != VERSION_1 {
            return Err(CheckpointError::Invalid);
        }
        let segment_base = r.u64()?;
        let position = r.u64()?;
        let next_offset = r.u64()?;
        let n = r.u32()? as usize;
        r.u32()?;
        let mut producers = Vec::with_capacity(n.min(100_000));
        for _ in 0..n {
            let (entry, used) =
                decode_entry(body, r.at, version != VERSION_1).map_err(|e| match e {
                    TableBytesError::Truncated { .. } => CheckpointError::Truncated,
                    _ => CheckpointError::Invalid,
                })?;
            producers.push(entry);
            r.at += used;
        }
        if r.at != body.len() {
            return Err(CheckpointError::Invalid);
        }
        Ok(Checkpoint {
            segment_base,
            position,
            next_offset,
            producers,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let s = self
            .b
            .get(self.at..self.at + N)
            .ok_or(CheckpointError::Truncated)?;
        self.at += N;
        Ok(s.try_into().unwrap())
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::producer_state::SeqBatch;
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn round_trip_and_refuse_damage() {
        let mut batches = VecDeque::new();
        batches.push_back(SeqBatch {
            first_seq: 0,
            last_seq: 9,
            base_offset: 100,
            last_offset: 109,
        });
        let cp = Checkpoint {
            segment_base: 100,
            position: 4096,
            next_offset: 110,
            producers: vec![(
                7,
                ProducerEntry {
                    epoch: 2,
                    batches,
                    last_seen_offset: 109,
                    last_timestamp: 1_700_000_000_123,
                },
            )],
        };
        let b = cp.encode();
        assert_eq!(Checkpoint::decode(&b).unwrap(), cp);
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert_eq!(Checkpoint::decode(&bad), Err(CheckpointError::Invalid));
        assert_eq!(
            Checkpoint::decode(&b[..20]),
            Err(CheckpointError::Truncated)
        );
        // A version 1 checkpoint (before last_timestamp): the same, minus
        // the 8 bytes after last_seen_offset; the timestamp reads as -1.
        let mut v1 = b[..b.len() - 4].to_vec();
        v1[4..8].copy_from_slice(&VERSION_1.to_le_bytes());
        v1.drain(40 + 24..40 + 32);
        let crc = crate::format::crc::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let mut want = cp.clone();
        want.producers[0].1.last_timestamp = -1;
        assert_eq!(Checkpoint::decode(&v1).unwrap(), want);
    }
}
