//! Reading, validating and stamping batch frames. No I/O.
//!
//! A frame is `header (64 bytes, rkyv-archived) | payload`. Validation is two
//! steps, kept apart because they cost very different amounts:
//! 1. [`parse_header`]: the header check (SLB2 header CRC, or the legacy
//!    SLB1 magic; see [`super::header`]), rkyv `access` (bytecheck) on
//!    exactly the 64 header bytes, then the semantic checks rkyv cannot
//!    know (bounds, codec). ~ns.
//! 2. [`verify_crc`]: CRC-32C over the payload. ~15-28 GB/s.
//!
//! The records inside the payload are checked by [`super::validate`] at
//! ingress only (it may decompress, so it costs much more).

use super::crc::batch_crc;
use super::header::{
    attr, header_version, seal, ArchivedBatchHeader, BatchHeader, HeaderVersion, HEADER_LEN,
    OFF_BASE_OFFSET, OFF_LEADER_EPOCH,
};
use bytes::{Bytes, BytesMut};

/// Why a frame was refused. Each case names what a reader would need to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("zero-filled header (the unwritten tail of a preallocated or torn block)")]
    Zeroed,
    /// Bytes 32..36 are neither the legacy SLB1 magic nor the SLB2 header
    /// CRC: not a frame, or a frame whose header was damaged.
    #[error("header check failed: bytes 32..36 hold {stored:#010x}, which is neither the SLB1 magic nor the header CRC {computed:#010x} of the other header bytes (not a frame, or a damaged header)")]
    BadHeaderCrc { stored: u32, computed: u32 },
    #[error("header failed rkyv validation: {0}")]
    Archive(String),
    #[error("invalid header field: {0}")]
    InvalidField(&'static str),
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    #[error("CRC mismatch: header says {stored:#010x}, payload gives {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
}

/// 8-byte aligned scratch so rkyv's alignment check passes whatever the
/// alignment of the source buffer (network buffers have none guaranteed).
#[repr(C, align(8))]
struct AlignedHeader([u8; HEADER_LEN]);

/// Largest payload a frame may declare; larger frames are refused before any
/// allocation. Real limits (max_request_bytes, segment size) are tighter.
pub const PAYLOAD_LEN_MAX: usize = 256 << 20;

/// Parse and check the header at the start of `bytes`. Does not look at the payload.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        });
    }
    let mut scratch = AlignedHeader([0u8; HEADER_LEN]);
    scratch.0.copy_from_slice(&bytes[..HEADER_LEN]);
    // The header check comes first: no field is trusted before it.
    match header_version(&scratch.0) {
        Ok(HeaderVersion::V1 | HeaderVersion::V2) => {}
        Err((stored, computed)) => {
            if scratch.0.iter().all(|b| *b == 0) {
                return Err(FrameError::Zeroed);
            }
            return Err(FrameError::BadHeaderCrc { stored, computed });
        }
    }
    // rkyv finds the root at the end of the slice: pass exactly the header.
    let archived = rkyv::access::<ArchivedBatchHeader, rkyv::rancor::BoxedError>(&scratch.0)
        .map_err(|e| FrameError::Archive(e.to_string()))?;
    let h: BatchHeader = rkyv::deserialize::<BatchHeader, rkyv::rancor::BoxedError>(archived)
        .map_err(|e| FrameError::Archive(e.to_string()))?;
    check_fields(&h)?;
    Ok(h)
}

fn check_fields(h: &BatchHeader) -> Result<(), FrameError> {
    if h.payload_len as usize > PAYLOAD_LEN_MAX {
        return Err(FrameError::TooLarge {
            len: h.payload_len as usize,
            max: PAYLOAD_LEN_MAX,
        });
    }
    if h.record_count <= 0 {
        return Err(FrameError::InvalidField("record_count must be positive"));
    }
    if h.last_offset_delta < 0 || h.last_offset_delta < h.record_count - 1 {
        return Err(FrameError::InvalidField(
            "last_offset_delta must be >= record_count - 1",
        ));
    }
    if h.base_offset > i64::MAX as u64 - h.last_offset_delta as u64 {
        return Err(FrameError::InvalidField("base_offset out of range"));
    }
    let codec = (h.attributes & attr::CODEC_MASK) as u8;
    if codec > 4 {
        return Err(FrameError::UnknownCodec(codec));
    }
    Ok(())
}

/// Check the CRC of a complete frame whose header was already parsed.
pub fn verify_crc(h: &BatchHeader, frame: &[u8]) -> Result<(), FrameError> {
    let end = h.frame_len();
    if frame.len() < end {
        return Err(FrameError::Truncated {
            need: end,
            have: frame.len(),
        });
    }
    let computed = batch_crc(h, &frame[HEADER_LEN..end]);
    if computed != h.crc {
        return Err(FrameError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(())
}

/// Parse a header and check the CRC: a complete validation of one frame.
pub fn validate(frame: &[u8]) -> Result<BatchHeader, FrameError> {
    let h = parse_header(frame)?;
    verify_crc(&h, frame)?;
    Ok(h)
}

/// Stamp the broker-owned fields in place and reseal the header (SLB2
/// header CRC over the 60 other header bytes, a few ns). The fields sit
/// outside the Kafka CRC, so the payload is not touched. A legacy SLB1
/// frame becomes an SLB2 frame here: everything the broker stores is
/// covered by a header CRC.
pub fn stamp(frame: &mut [u8], base_offset: u64, leader_epoch: i32) {
    assert!(frame.len() >= HEADER_LEN);
    frame[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
    frame[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_le_bytes());
    seal(&mut frame[..HEADER_LEN]);
}

/// Read the (already validated) base offset of a frame without a full parse.
pub fn base_offset_of(frame: &[u8]) -> u64 {
    u64::from_le_bytes(
        frame[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8]
            .try_into()
            .unwrap(),
    )
}

/// Split a buffer of back-to-back frames, validating each header and CRC.
/// Used at ingress: everything after this point trusts the frames.
pub fn split_frames(mut buf: BytesMut) -> Result<Vec<(BatchHeader, BytesMut)>, FrameError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let h = parse_header(&buf)?;
        let len = h.frame_len();
        if buf.len() < len {
            return Err(FrameError::Truncated {
                need: len,
                have: buf.len(),
            });
        }
        verify_crc(&h, &buf[..len])?;
        out.push((h, buf.split_to(len)));
    }
    Ok(out)
}

/// Iterate over back-to-back trusted frames (from disk after recovery, or
/// from the cache). Stops at the first incomplete frame.
pub struct FrameIter {
    buf: Bytes,
}

impl FrameIter {
    pub fn new(buf: Bytes) -> Self {
        FrameIter { buf }
    }
}

impl Iterator for FrameIter {
    type Item = Result<(BatchHeader, Bytes), FrameError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let h = match parse_header(&self.buf) {
            Ok(h) => h,
            Err(FrameError::Truncated { .. }) => return None,
            Err(e) => {
                self.buf.clear();
                return Some(Err(e));
            }
        };
        if self.buf.len() < h.frame_len() {
            return None;
        }
        Some(Ok((h, self.buf.split_to(h.frame_len()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::{FRAME_MAGIC_V1, OFF_HEADER_CRC};
    use crate::format::{BatchBuilder, Compression, ProducerIds};

    fn stamped() -> Vec<u8> {
        let mut b = BatchBuilder::new();
        b.push(1, Some(b"k"), Some(b"value"), &[]);
        let mut f = b.finish(Compression::None, ProducerIds::NONE).to_vec();
        stamp(&mut f, 1234, 0);
        f
    }

    #[test]
    fn the_header_crc_covers_the_leader_epoch() {
        let mut f = stamped();
        stamp(&mut f, 1234, 7);
        let h = parse_header(&f).expect("a stamped header parses");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1234, 7));
        verify_crc(&h, &f).expect("the batch CRC does not cover the epoch");
        // An epoch changed without re-sealing the header is caught.
        f[OFF_LEADER_EPOCH] ^= 1;
        assert!(
            parse_header(&f).is_err(),
            "a flipped epoch must fail the header check"
        );
    }

    #[test]
    fn every_single_bit_flip_in_the_header_is_refused() {
        let f = stamped();
        assert_eq!(validate(&f).unwrap().base_offset, 1234);
        for bit in 0..HEADER_LEN * 8 {
            let mut bad = f.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let r = parse_header(&bad);
            assert!(
                matches!(r, Err(FrameError::BadHeaderCrc { .. })),
                "bit {bit}: {r:?}"
            );
        }
    }

    #[test]
    fn stamping_reseals_and_converts_legacy_frames() {
        let mut f = stamped();
        stamp(&mut f, 99, 7);
        let h = validate(&f).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (99, 7));
        // A legacy SLB1 frame (no header CRC) still parses, unchecked ...
        let mut v1 = f.clone();
        v1[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&FRAME_MAGIC_V1.to_le_bytes());
        v1[0] ^= 1; // a flipped base offset goes unnoticed in SLB1
        assert_eq!(validate(&v1).unwrap().base_offset, 98);
        // ... and stamping makes it SLB2, covered again.
        stamp(&mut v1, 5, 0);
        assert_ne!(
            u32::from_le_bytes(v1[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].try_into().unwrap()),
            FRAME_MAGIC_V1
        );
        v1[1] ^= 1;
        assert!(matches!(
            parse_header(&v1),
            Err(FrameError::BadHeaderCrc { .. })
        ));
        assert_eq!(parse_header(&[0u8; 64]), Err(FrameError::Zeroed));
    }
}
