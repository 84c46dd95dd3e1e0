//! The fixed batch header: an rkyv-archived struct of exactly 64 bytes.
//!
//! Every batch on the wire (native protocol), on disk (segment files) and in
//! the batch cache is `header (64 bytes) | payload (payload_len bytes)`. The
//! payload is the Kafka v2 records section, compressed as a whole when the
//! codec bits say so. The broker never looks inside it.
//!
//! Byte layout (little-endian, see docs/segment_format.md):
//!
//! ```text
//!  off size field                   CRC'd  stamped by broker
//!    0    8 base_offset u64           no    yes
//!    8    8 base_timestamp i64        yes
//!   16    8 max_timestamp i64         yes
//!   24    8 producer_id i64           yes
//!   32    4 magic u32 = "SLB1"        no
//!   36    4 payload_len u32           (implicitly: the CRC covers exactly payload_len bytes)
//!   40    4 crc u32                   no
//!   44    4 partition_leader_epoch    no    yes
//!   48    4 last_offset_delta i32     yes
//!   52    4 base_sequence i32         yes
//!   56    4 record_count i32          yes
//!   60    2 producer_epoch i16        yes
//!   62    2 attributes i16            yes
//! ```
//!
//! The layout is rkyv's archived form of [`BatchHeader`] (rkyv archives
//! structs as `repr(C)`); the compile-time asserts below pin it, so a change
//! in rkyv or in the struct that would move a byte fails the build instead of
//! silently changing the disk format.

use rkyv::{Archive, Deserialize, Serialize};

/// Frame magic, "SLB1" read as little-endian bytes. A zero magic marks the
/// zero-filled tail that direct I/O leaves after the last written block.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"SLB1");

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
    /// [`FRAME_MAGIC`].
    pub magic: u32,
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
pub const OFF_MAGIC: usize = 32;
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
    assert!(offset_of!(ArchivedBatchHeader, magic) == OFF_MAGIC);
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

    /// Serialise into the archived 64-byte form.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("serialising a fixed-size header cannot fail");
        assert_eq!(archived.len(), HEADER_LEN);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&archived);
        out
    }
}
