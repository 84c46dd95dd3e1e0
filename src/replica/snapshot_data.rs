//! The `data` of a replica's Raft snapshot: where the leader's log now
//! starts, the entry that made the group's configuration, and the
//! idempotent-producer table as of the snapshot's index (the log start).
//!
//! A snapshot is only a position (see [`super::storage`]): the follower
//! that installs it starts its log again at `start_offset`, empty. The
//! producer sequences of the batches before that offset live nowhere else,
//! so they travel with it: without them, a follower that installed a
//! snapshot and then led would append a retry of a batch from the
//! compacted prefix a second time (or refuse the producer's next batch as
//! out of order). The table is the one as of the log start, not the
//! leader's live one (which already counts entries after the snapshot's
//! index: the follower replays those).
//!
//! Layout (little-endian; docs/replication.md, "Snapshot data"):
//! ```text
//!  0 u64 start_offset    8 u64 conf_index   16 u32 version = 1
//! 20 u32 producer_count
//! 24 producer_count x { i64 pid | i16 epoch | u16 batch_count (<= 5) | u32 reserved (0)
//!                       | u64 last_seen_offset | i64 last_timestamp
//!                       | batch_count x { i32 first_seq | i32 last_seq
//!                                         | u64 base_offset | u64 last_offset } }
//! ```
//! in increasing order of producer id, nothing after. Exactly 16 bytes
//! (start and configuration index only) is what a leader of an earlier
//! build sends: read as version 0, with no producer table.

use crate::storage::producer_state::{decode_table, encode_table, ProducerEntry, TableBytesError};

/// The version this build writes.
pub const VERSION: u32 = 1;
/// Bytes before the producer table.
const HEAD: usize = 20;
/// A version 0 snapshot's whole data.
const V0_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    /// The offset where the snapshot's next entry's frame starts.
    pub start_offset: u64,
    /// The entry that made the configuration the snapshot carries.
    pub conf_index: u64,
    /// The idempotent producers as of `start_offset`, by producer id.
    pub producers: Vec<(i64, ProducerEntry)>,
}

/// Why a snapshot's data was refused (checked before the follower changes
/// anything: its log and state are untouched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDataError {
    #[error("snapshot data of {len} bytes is too short (16, or at least 24)")]
    Truncated { len: usize },
    #[error("snapshot data version {version}; this build reads 0 and {VERSION}")]
    Version { version: u32 },
    #[error("snapshot data: {0}")]
    Table(#[from] TableBytesError),
    #[error("snapshot data has {extra} bytes after its producer table")]
    Trailing { extra: usize },
}

impl SnapshotData {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD + 4 + self.producers.len() * 152);
        b.extend_from_slice(&self.start_offset.to_le_bytes());
        b.extend_from_slice(&self.conf_index.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        encode_table(&self.producers, &mut b);
        b
    }

    pub fn decode(b: &[u8]) -> Result<SnapshotData, SnapshotDataError> {
        let le8 = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
        if b.len() < V0_LEN || (b.len() > V0_LEN && b.len() < HEAD) {
            return Err(SnapshotDataError::Truncated { len: b.len() });
        }
        let (start_offset, conf_index) = (le8(&b[..8]), le8(&b[8..16]));
        if b.len() == V0_LEN {
            return Ok(SnapshotData {
                start_offset,
                conf_index,
                producers: Vec::new(),
            });
        }
        let version = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotDataError::Version { version });
        }
        let (producers, used) = decode_table(&b[HEAD..])?;
        let extra = b.len() - HEAD - used;
        if extra != 0 {
            return Err(SnapshotDataError::Trailing { extra });
        }
        Ok(SnapshotData {
            start_offset,
            conf_index,
            producers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::producer_state::SeqBatch;

    fn sample() -> SnapshotData {
        let batch = |seq: i32, offset: u64| SeqBatch {
            first_seq: seq,
            last_seq: seq + 2,
            base_offset: offset,
            last_offset: offset + 2,
        };
        SnapshotData {
            start_offset: 4096,
            conf_index: 17,
            producers: vec![
                (
                    -3,
                    ProducerEntry {
                        epoch: 0,
                        batches: [batch(0, 10)].into(),
                        last_seen_offset: 12,
                        last_timestamp: -1,
                    },
                ),
                (
                    77,
                    ProducerEntry {
                        epoch: i16::MAX,
                        batches: (0..5).map(|i| batch(i * 3, 100 + i as u64 * 3)).collect(),
                        last_seen_offset: 114,
                        last_timestamp: 1_700_000_000_000,
                    },
                ),
            ],
        }
    }

    #[test]
    fn snapshot_data_round_trips_with_its_producer_table() {
        let s = sample();
        let b = s.encode();
        assert_eq!(b.len(), 24 + 2 * 32 + 6 * 24);
        assert_eq!(&b[16..20], &1u32.to_le_bytes());
        assert_eq!(SnapshotData::decode(&b), Ok(s));
        let empty = SnapshotData {
            producers: Vec::new(),
            ..sample()
        };
        assert_eq!(SnapshotData::decode(&empty.encode()), Ok(empty.clone()));
        // An earlier build's 16 bytes: a position with no producer table.
        assert_eq!(SnapshotData::decode(&empty.encode()[..16]), Ok(empty));
    }

    #[test]
    fn truncated_or_garbage_snapshot_data_is_refused_with_a_typed_error() {
        let b = sample().encode();
        for len in (0..b.len()).filter(|l| *l != 16) {
            let e = SnapshotData::decode(&b[..len]).expect_err("a cut snapshot");
            assert!(
                matches!(
                    e,
                    SnapshotDataError::Truncated { .. }
                        | SnapshotDataError::Table(TableBytesError::Truncated { .. })
                ),
                "{len} bytes: {e}"
            );
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(
            SnapshotData::decode(&extra),
            Err(SnapshotDataError::Trailing { extra: 1 })
        );
        let mut v = b.clone();
        v[16] = 9;
        assert_eq!(
            SnapshotData::decode(&v),
            Err(SnapshotDataError::Version { version: 9 })
        );
        // A lying count: no allocation of that size, an error.
        let mut many = b.clone();
        many[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            SnapshotData::decode(&many),
            Err(SnapshotDataError::Table(
                TableBytesError::TooManyProducers { count: u32::MAX }
            ))
        );
        let mut batches = b.clone();
        batches[24 + 10..24 + 12].copy_from_slice(&6u16.to_le_bytes());
        assert_eq!(
            SnapshotData::decode(&batches),
            Err(SnapshotDataError::Table(TableBytesError::TooManyBatches {
                pid: -3,
                count: 6
            }))
        );
        let mut reserved = b.clone();
        reserved[24 + 12] = 1;
        assert_eq!(
            SnapshotData::decode(&reserved),
            Err(SnapshotDataError::Table(TableBytesError::Reserved {
                pid: -3
            }))
        );
        // Random bytes never panic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in [17usize, 20, 24, 64, 300] {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = SnapshotData::decode(&garbage);
        }
    }
}
