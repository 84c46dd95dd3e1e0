//! The batch CRC.
//!
//! shardlog's CRC-32C is defined to equal Kafka's RecordBatch v2 CRC: CRC-32C
//! (Castagnoli) over the big-endian Kafka encoding of
//! `attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32`
//! (40 bytes) followed by the payload. It covers every header field except the
//! ones the broker stamps (base offset, leader epoch) and the framing fields
//! (magic, payload length, the CRC itself).
//!
//! Why Kafka's definition rather than a CRC over our own little-endian header:
//! one checksum then serves both protocols. A batch produced through the Kafka
//! listener is checked once and stored with its CRC as is; a Fetch over Kafka
//! copies the stored CRC into the rebuilt Kafka header with no recompute; a
//! batch produced natively passes the CRC check of every Kafka client.

use super::header::BatchHeader;

/// Length of the big-endian prefix the CRC covers before the payload.
pub const CRC_PREFIX_LEN: usize = 40;

/// The 40 CRC'd header bytes in Kafka's big-endian order.
pub fn crc_prefix(h: &BatchHeader) -> [u8; CRC_PREFIX_LEN] {
    let mut b = [0u8; CRC_PREFIX_LEN];
    b[0..2].copy_from_slice(&h.attributes.to_be_bytes());
    b[2..6].copy_from_slice(&h.last_offset_delta.to_be_bytes());
    b[6..14].copy_from_slice(&h.base_timestamp.to_be_bytes());
    b[14..22].copy_from_slice(&h.max_timestamp.to_be_bytes());
    b[22..30].copy_from_slice(&h.producer_id.to_be_bytes());
    b[30..32].copy_from_slice(&h.producer_epoch.to_be_bytes());
    b[32..36].copy_from_slice(&h.base_sequence.to_be_bytes());
    b[36..40].copy_from_slice(&h.record_count.to_be_bytes());
    b
}

/// CRC-32C of a batch: the Kafka v2 batch CRC.
pub fn batch_crc(h: &BatchHeader, payload: &[u8]) -> u32 {
    let prefix = crc_prefix(h);
    let c = crc32c::crc32c(&prefix);
    crc32c::crc32c_append(c, payload)
}
