//! One Raft entry is one frame of the partition's log.
//!
//! - A normal entry carries a record batch: its `data` is the frame
//!   itself, as the producer sent it (the leader proposes it before any
//!   offset is known). Every replica stamps the frame when it appends it:
//!   the base offset is where its log ends, and the leader epoch is the
//!   entry's term. Replicas hold the same entries in the same order, and a
//!   frame's size in offsets is its record count, so every replica stamps
//!   every frame alike without the leader telling it the offset.
//! - Raft's own entries (the empty entry a new leader appends, and
//!   configuration changes) are stored as one-record control batches
//!   (attributes bit 5, as Kafka's transaction markers are), which Kafka
//!   consumers skip. The record's key is Kafka's control key (`i16 version
//!   = 0 | i16 type`, big-endian) with type [`CONTROL_LEADER_CHANGE`] for
//!   the empty entry and [`CONTROL_RAFT_CONFIG`] for a configuration
//!   change; its value is `u8 entry_type | data` (raft-rs's `EntryType`
//!   number and the change's protobuf bytes). Their timestamp is 0, so
//!   every replica builds the same bytes.
//! - A DeleteRecords entry is a normal entry whose frame the leader built:
//!   a one-record control batch with type [`CONTROL_DELETE_RECORDS`] and
//!   value `u8 0 | u64 new log start` (little-endian). Each replica raises
//!   its log start when it applies the entry. Producers cannot write
//!   control batches (`format::check_records` refuses them), so every
//!   control batch in a replicated log is the broker's own.
//!
//! See docs/replication.md, "Raft index and Kafka offsets".

use crate::format::builder::BatchReadError;
use crate::format::frame::{self, FrameError};
use crate::format::header::attr;
use crate::format::{read_records, BatchBuilder, BatchHeader, Compression, ProducerIds};
use bytes::{Bytes, BytesMut};
use raft::eraftpb::{Entry, EntryType};

/// Kafka's control record type for a leader change (KRaft's numbering),
/// used for the empty entry each new Raft leader appends.
pub const CONTROL_LEADER_CHANGE: i16 = 2;
/// Control record type of a Raft configuration change (KRaft's voters
/// record number).
pub const CONTROL_RAFT_CONFIG: i16 = 6;

/// Control record type of a DeleteRecords entry: shardlog's own number,
/// far from Kafka's (0-6), which Kafka consumers skip like any control
/// record outside a transaction.
pub const CONTROL_DELETE_RECORDS: i16 = 1000;

/// The frame of a DeleteRecords entry moving the log start to `offset`
/// (proposed as a normal entry: every replica stores these bytes).
pub fn delete_records_frame(offset: u64) -> Bytes {
    let mut value = [0u8; 9];
    value[1..].copy_from_slice(&offset.to_le_bytes());
    control_frame(CONTROL_DELETE_RECORDS, &value)
}

/// The new log start a stored or proposed frame carries, if it is a
/// DeleteRecords entry.
pub fn delete_records_of(frame: &Bytes) -> Option<u64> {
    let h = frame::parse_header(frame).ok()?;
    if h.attributes & attr::CONTROL == 0 {
        return None;
    }
    let (_, recs) = read_records(frame, 1 << 20).ok()?;
    let [rec] = &recs[..] else { return None };
    let key = i16::from_be_bytes(rec.key.as_deref()?.get(2..4)?.try_into().ok()?);
    match rec.value.as_deref()? {
        [0, rest @ ..] if key == CONTROL_DELETE_RECORDS && rest.len() == 8 => {
            Some(u64::from_le_bytes(rest.try_into().ok()?))
        }
        _ => None,
    }
}

/// A one-record control batch: Kafka's control key (`i16 version = 0 |
/// i16 type`, big-endian) and `value`; timestamp 0, so every replica
/// builds the same bytes.
fn control_frame(kind: i16, value: &[u8]) -> Bytes {
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&kind.to_be_bytes());
    let mut b = BatchBuilder::new();
    b.push(0, Some(&key), Some(value), &[]);
    b.finish_with_attributes(Compression::None, ProducerIds::NONE, attr::CONTROL)
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("entry {index}: not one valid batch frame: {cause}")]
    BadFrame { index: u64, cause: FrameError },
    #[error("entry {index}: {len} bytes hold a frame of {frame_len}")]
    Length {
        index: u64,
        len: usize,
        frame_len: usize,
    },
    #[error("entry {index}: a control batch that is not a Raft entry: {why}")]
    BadControl { index: u64, why: ControlError },
    #[error("entry {index}: term {term} does not fit a leader epoch (i32)")]
    Term { index: u64, term: u64 },
}

/// Why a stored control batch is not one of Raft's own entries.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("negative leader epoch {0}")]
    NegativeEpoch(i32),
    #[error("{0}")]
    Records(#[from] BatchReadError),
    #[error("{0} records, Raft's entries have one")]
    RecordCount(usize),
    #[error("control key {0:?} (a Raft entry's is 4 bytes: 0, 0, type)")]
    Key(Vec<u8>),
    #[error("empty control value")]
    EmptyValue,
    #[error("control type {kind} with entry type {entry_type}")]
    Type { kind: i16, entry_type: u8 },
    #[error("configuration change: {0}")]
    ConfChange(#[from] protobuf::ProtobufError),
}

/// The leader epoch a term is stamped as.
pub fn epoch_of(index: u64, term: u64) -> Result<i32, EntryError> {
    i32::try_from(term).map_err(|_| EntryError::Term { index, term })
}

/// Check an entry that came from a peer before Raft takes it: a normal
/// entry must be exactly one frame whose header and Kafka CRC hold. Bytes
/// from the network are hostile until checked, even from a peer broker.
pub fn check(e: &Entry) -> Result<(), EntryError> {
    epoch_of(e.index, e.term)?;
    if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
        return Ok(());
    }
    let h = frame::validate(&e.data).map_err(|cause| EntryError::BadFrame {
        index: e.index,
        cause,
    })?;
    if h.frame_len() != e.data.len() {
        return Err(EntryError::Length {
            index: e.index,
            len: e.data.len(),
            frame_len: h.frame_len(),
        });
    }
    Ok(())
}

/// The frame entry `e` is stored as, stamped at `base_offset` with its
/// term as the leader epoch. A normal entry's frame is copied (Raft keeps
/// its own reference to the bytes until they are durable).
pub fn to_frame(e: &Entry, base_offset: u64) -> Result<BytesMut, EntryError> {
    let epoch = epoch_of(e.index, e.term)?;
    let mut f = if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
        check(e)?;
        BytesMut::from(&e.data[..])
    } else {
        let kind = if e.get_entry_type() == EntryType::EntryNormal {
            CONTROL_LEADER_CHANGE
        } else {
            CONTROL_RAFT_CONFIG
        };
        let mut value = Vec::with_capacity(1 + e.data.len());
        value.push(e.get_entry_type() as u8);
        value.extend_from_slice(&e.data);
        BytesMut::from(&control_frame(kind, &value)[..])
    };
    frame::stamp(&mut f, base_offset, epoch);
    Ok(f)
}

/// The entry a stored frame holds; it is entry `index`. Frames read back
/// from the log were checked by the reader.
pub fn from_frame(frame: Bytes, index: u64) -> Result<Entry, EntryError> {
    let h: BatchHeader =
        frame::parse_header(&frame).map_err(|cause| EntryError::BadFrame { index, cause })?;
    let mut e = Entry {
        index,
        term: u64::try_from(h.partition_leader_epoch).map_err(|_| EntryError::BadControl {
            index,
            why: ControlError::NegativeEpoch(h.partition_leader_epoch),
        })?,
        ..Default::default()
    };
    if h.attributes & attr::CONTROL == 0 || delete_records_of(&frame).is_some() {
        // A batch, or a DeleteRecords entry: its frame is the proposal.
        e.set_entry_type(EntryType::EntryNormal);
        e.data = frame;
        return Ok(e);
    }
    let bad = |why: ControlError| EntryError::BadControl { index, why };
    let (_, recs) = read_records(&frame, 1 << 20).map_err(|x| bad(x.into()))?;
    let [rec] = &recs[..] else {
        return Err(bad(ControlError::RecordCount(recs.len())));
    };
    let key = rec.key.as_deref().unwrap_or_default();
    let kind = match key {
        [0, 0, a, b] => i16::from_be_bytes([*a, *b]),
        _ => return Err(bad(ControlError::Key(key.to_vec()))),
    };
    let value = rec.value.clone().unwrap_or_default();
    let Some((&ty, data)) = value.split_first() else {
        return Err(bad(ControlError::EmptyValue));
    };
    let ty = match (kind, ty) {
        (CONTROL_LEADER_CHANGE, 0) => EntryType::EntryNormal,
        (CONTROL_RAFT_CONFIG, 1) => EntryType::EntryConfChange,
        (CONTROL_RAFT_CONFIG, 2) => EntryType::EntryConfChangeV2,
        _ => {
            return Err(bad(ControlError::Type {
                kind,
                entry_type: ty,
            }))
        }
    };
    e.set_entry_type(ty);
    e.data = value.slice(1..1 + data.len());
    Ok(e)
}

/// Offsets a stored entry's frame takes.
pub fn offsets_of(frame: &[u8]) -> u64 {
    let h = frame::parse_header(frame).expect("a stamped frame");
    h.last_offset() + 1 - h.base_offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(5, None, Some(format!("v{i}").as_bytes()), &[]);
        }
        b.finish(Compression::None, ProducerIds::NONE)
    }

    fn entry(index: u64, term: u64, ty: EntryType, data: Bytes) -> Entry {
        let mut e = Entry {
            index,
            term,
            data,
            ..Default::default()
        };
        e.set_entry_type(ty);
        e
    }

    #[test]
    fn entries_round_trip_through_frames() {
        let cases = [
            entry(4, 3, EntryType::EntryNormal, batch(3)),
            entry(5, 3, EntryType::EntryNormal, Bytes::new()),
            entry(
                6,
                4,
                EntryType::EntryConfChangeV2,
                Bytes::from_static(b"\x08\x01cc"),
            ),
            entry(7, 4, EntryType::EntryConfChange, Bytes::from_static(b"x")),
        ];
        let mut offset = 100;
        for e in cases {
            let f = to_frame(&e, offset).unwrap().freeze();
            let h = frame::validate(&f).unwrap();
            assert_eq!(h.base_offset, offset);
            assert_eq!(h.partition_leader_epoch as u64, e.term);
            let back = from_frame(f.clone(), e.index).unwrap();
            assert_eq!(back.index, e.index);
            assert_eq!(back.term, e.term);
            assert_eq!(back.get_entry_type(), e.get_entry_type());
            if e.data.is_empty() || e.get_entry_type() != EntryType::EntryNormal {
                assert_eq!(back.data, e.data);
                assert!(h.attributes & attr::CONTROL != 0);
            } else {
                // The stored frame is the proposal, stamped.
                assert_eq!(&back.data[HEADER..], &e.data[HEADER..]);
            }
            offset += offsets_of(&f);
        }
        assert_eq!(offset, 100 + 3 + 1 + 1 + 1);
    }

    const HEADER: usize = crate::format::HEADER_LEN;

    #[test]
    fn a_delete_records_entry_round_trips_as_a_normal_entry() {
        let f = delete_records_frame(123_456);
        assert_eq!(delete_records_of(&f), Some(123_456));
        assert!(check(&entry(9, 2, EntryType::EntryNormal, f.clone())).is_ok());
        let stored = to_frame(&entry(9, 2, EntryType::EntryNormal, f), 40).unwrap();
        let back = from_frame(stored.clone().freeze(), 9).unwrap();
        assert_eq!(back.get_entry_type(), EntryType::EntryNormal);
        assert_eq!(&back.data[..], &stored[..]);
        assert_eq!(delete_records_of(&back.data), Some(123_456));
        // Batches and Raft's own entries are not DeleteRecords entries.
        assert_eq!(delete_records_of(&batch(1)), None);
        let leader = to_frame(&entry(3, 1, EntryType::EntryNormal, Bytes::new()), 0)
            .unwrap()
            .freeze();
        assert_eq!(delete_records_of(&leader), None);
    }

    #[test]
    fn a_peer_entry_that_is_not_one_frame_is_refused() {
        let good = batch(2);
        assert!(check(&entry(1, 1, EntryType::EntryNormal, good.clone())).is_ok());
        let mut two = BytesMut::from(&good[..]);
        two.extend_from_slice(&good);
        assert!(matches!(
            check(&entry(1, 1, EntryType::EntryNormal, two.freeze())),
            Err(EntryError::Length { .. })
        ));
        let mut flipped = BytesMut::from(&good[..]);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(check(&entry(1, 1, EntryType::EntryNormal, flipped.freeze())).is_err());
        assert!(matches!(
            check(&entry(1, u64::MAX, EntryType::EntryNormal, good)),
            Err(EntryError::Term { .. })
        ));
    }
}
