//! The fixed batch header: an rkyv-archived struct of exactly 64 bytes.
//!
//! Every batch on the wire (native protocol), on disk (segment files) and in
//! the batch cache is `header (64 bytes) | payload (payload_len bytes)`. The
//! payload is the Kafka v2 records section, compressed as a whole when the
//! codec bits say so. The broker stores it as sent; at ingress only,
//! [`super::validate`] walks it (decompressing in a discarded stream).
//!
//! Byte layout (little-endian, see docs/segment_format.md). "Kafka CRC":
//! covered by the Kafka batch CRC (`crc`); "hdr CRC": covered by the header
//! CRC of SLB2 frames (`header_crc`).
//!
//! ```text
//!  off size field                   Kafka CRC  hdr CRC  stamped by broker
//!    0    8 base_offset u64           no         yes      yes
//!    8    8 base_timestamp i64        yes        yes
//!   16    8 max_timestamp i64         yes        yes
//!   24    8 producer_id i64           yes        yes
//!   32    4 header_crc u32            no         (itself) yes (recomputed by every stamp)
//!   36    4 payload_len u32           (length)   yes
//!   40    4 crc u32                   no         yes
//!   44    4 partition_leader_epoch    no         yes      yes
//!   48    4 last_offset_delta i32     yes        yes
//!   52    4 base_sequence i32         yes        yes
//!   56    4 record_count i32          yes        yes
//!   60    2 producer_epoch i16        yes        yes
//!   62    2 attributes i16            yes        yes
//! ```
//!
//! Bytes 32..36 are the frame's magic *and* its header check at once:
//! - **SLB2** (written since the header CRC exists): `header_crc` is CRC-32C
//!   seeded with the four bytes `"SLB2"` over the other 60 header bytes
//!   (0..32 and 36..64). A frame is an SLB2 frame exactly when that CRC
//!   matches, so garbage, a zeroed block or a flipped bit anywhere in the
//!   header (base offset and leader epoch included) is refused before any
//!   field is trusted.
//! - **SLB1** (legacy, before the header CRC): the constant `"SLB1"`. Such
//!   frames are still read (segments written by older brokers, frames from
//!   older native clients) but carry no header check; the broker seals
//!   every frame as SLB2 when it stamps its offset, so new segments hold
//!   SLB2 frames only.
//!
//! Why fold the magic into the CRC rather than add a field: the header is
//! 64 bytes and every byte was taken; growing it would give old and new
//! frames different header lengths, which every reader, the recovery
//! scanner and the Kafka conversion assume fixed. A 32-bit check seeded
//! with a version tag identifies a frame as reliably as a 32-bit magic did
//! (random bytes pass either with probability 2^-32), and it also proves
//! the stamped fields intact. The seed is the version: a future layout
//! seeds with another tag.
//!
//! The layout is rkyv's archived form of [`BatchHeader`] (rkyv archives
//! structs as `repr(C)`); the compile-time asserts below pin it, so a change
//! in rkyv or in the struct that would move a byte fails the build instead of
//! silently changing the disk format.

use rkyv::{Archive, Deserialize, Serialize};

/// Legacy (SLB1) frame magic, "SLB1" read as little-endian bytes: the
/// value of bytes 32..36 in frames written before the header CRC. A zeroed
/// header marks the zero-filled tail that direct I/O leaves after the last
/// written block.
pub const FRAME_MAGIC_V1: u32 = u32::from_le_bytes(*b"SLB1");

/// The seed of the SLB2 header CRC: the format's version tag.
pub const HEADER_CRC_SEED_V2: [u8; 4] = *b"SLB2";

/// Size of the archived header. Every frame starts with exactly this many bytes.
pub const HEADER_LEN: usize = 64;

/// The plain (native Rust) batch header. Use [`crate::format::frame`] to read
/// it out of untrusted bytes; never transmute.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BatchHeader {
    /// Offset of the first record. Assigned by the broker at append.
    pub base_offset: u64,
    /// Timestamp (ms since the Unix epoch) of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// SLB2: CRC-32C (seeded with [`HEADER_CRC_SEED_V2`]) of the other 60
    /// header bytes, see [`header_crc`]; legacy SLB1 frames: [`FRAME_MAGIC_V1`].
    /// [`BatchHeader::to_bytes`] and `frame::stamp` compute it.
    pub header_crc: u32,
    /// Bytes of payload that follow the header.
    pub payload_len: u32,
    /// CRC-32C, defined to be bit-for-bit the Kafka v2 batch CRC (see [`super::crc`]).
    pub crc: u32,
    /// Leader epoch, stamped by the broker (always 0: shardlog has one replica).
    pub partition_leader_epoch: i32,
    /// Offset delta of the last record (record_count - 1 for uncompacted batches).
    pub last_offset_delta: i32,
    /// Idempotent producer sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the payload.
    pub record_count: i32,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Kafka attributes: bits 0-2 codec, bit 3 log-append-time, bit 4 transactional, bit 5 control.
    pub attributes: i16,
}

// Byte offsets of the fields the broker stamps in place and of the ones the
// recovery scanner reads first. Pinned against rkyv's archived layout.
pub const OFF_BASE_OFFSET: usize = 0;
pub const OFF_HEADER_CRC: usize = 32;
pub const OFF_PAYLOAD_LEN: usize = 36;
pub const OFF_CRC: usize = 40;
pub const OFF_LEADER_EPOCH: usize = 44;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<ArchivedBatchHeader>() == HEADER_LEN);
    assert!(align_of::<ArchivedBatchHeader>() == 8);
    assert!(offset_of!(ArchivedBatchHeader, base_offset) == OFF_BASE_OFFSET);
    assert!(offset_of!(ArchivedBatchHeader, base_timestamp) == 8);
    assert!(offset_of!(ArchivedBatchHeader, max_timestamp) == 16);
    assert!(offset_of!(ArchivedBatchHeader, producer_id) == 24);
    assert!(offset_of!(ArchivedBatchHeader, header_crc) == OFF_HEADER_CRC);
    assert!(offset_of!(ArchivedBatchHeader, payload_len) == OFF_PAYLOAD_LEN);
    assert!(offset_of!(ArchivedBatchHeader, crc) == OFF_CRC);
    assert!(offset_of!(ArchivedBatchHeader, partition_leader_epoch) == OFF_LEADER_EPOCH);
    assert!(offset_of!(ArchivedBatchHeader, last_offset_delta) == 48);
    assert!(offset_of!(ArchivedBatchHeader, base_sequence) == 52);
    assert!(offset_of!(ArchivedBatchHeader, record_count) == 56);
    assert!(offset_of!(ArchivedBatchHeader, producer_epoch) == 60);
    assert!(offset_of!(ArchivedBatchHeader, attributes) == 62);
};

/// Attribute bits (Kafka v2).
pub mod attr {
    pub const CODEC_MASK: i16 = 0x07;
    pub const LOG_APPEND_TIME: i16 = 0x08;
    pub const TRANSACTIONAL: i16 = 0x10;
    pub const CONTROL: i16 = 0x20;
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta as u64
    }

    /// Total frame length: header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Codec id in the low attribute bits.
    pub fn codec_id(&self) -> u8 {
        (self.attributes & attr::CODEC_MASK) as u8
    }

    /// Serialise into the archived 64-byte form, sealed as an SLB2 header:
    /// whatever `header_crc` holds, the bytes carry the CRC of the other
    /// fields (so a header built in code is always a valid SLB2 header).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("serialising a fixed-size header cannot fail");
        assert_eq!(archived.len(), HEADER_LEN);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&archived);
        seal(&mut out);
        out
    }
}

/// The SLB2 header CRC of a 64-byte header: CRC-32C seeded with `"SLB2"`
/// over bytes 0..32 and 36..64 (everything but the CRC itself). About 60
/// bytes of hardware CRC: a few nanoseconds.
pub fn header_crc(header: &[u8]) -> u32 {
    assert!(header.len() >= HEADER_LEN);
    use super::crc::{crc32c, crc32c_append};
    let c = crc32c(&HEADER_CRC_SEED_V2);
    let c = crc32c_append(c, &header[..OFF_HEADER_CRC]);
    crc32c_append(c, &header[OFF_HEADER_CRC + 4..HEADER_LEN])
}

/// Write the header CRC into bytes 32..36 of a header, making it SLB2.
pub fn seal(header: &mut [u8]) {
    let c = header_crc(header);
    header[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&c.to_le_bytes());
}

/// Which frame format bytes 32..36 of a header say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderVersion {
    /// Legacy frame: the `"SLB1"` magic, no header check.
    V1,
    /// The header CRC matches.
    V2,
}

/// Identify a 64-byte header: SLB1 by its magic, SLB2 by its CRC, or
/// neither (`Err` carries the stored and the computed value).
pub fn header_version(header: &[u8]) -> Result<HeaderVersion, (u32, u32)> {
    let stored = u32::from_le_bytes(
        header[OFF_HEADER_CRC..OFF_HEADER_CRC + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if stored == FRAME_MAGIC_V1 {
        return Ok(HeaderVersion::V1);
    }
    let computed = header_crc(header);
    if stored == computed {
        Ok(HeaderVersion::V2)
    } else {
        Err((stored, computed))
    }
}
