//! Reading, validating and stamping batch frames. No I/O.
//!
//! A frame is `header (64 bytes, rkyv-archived) | payload`. Validation is two
//! steps, kept apart because they cost very different amounts:
//! 1. [`parse_header`]: rkyv `access` (bytecheck) on exactly the 64 header
//!    bytes, then the semantic checks rkyv cannot know (magic, bounds, codec). ~ns.
//! 2. [`verify_crc`]: CRC-32C over the payload. ~15-28 GB/s.

use super::crc::batch_crc;
use super::header::{
    attr, ArchivedBatchHeader, BatchHeader, FRAME_MAGIC, HEADER_LEN, OFF_BASE_OFFSET,
    OFF_LEADER_EPOCH, OFF_MAGIC,
};
use bytes::{Bytes, BytesMut};

/// Why a frame was refused. Each case names what a reader would need to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("zero-filled header (the unwritten tail of a preallocated or torn block)")]
    Zeroed,
    #[error("bad frame magic {found:#010x} (expected {FRAME_MAGIC:#010x})")]
    BadMagic { found: u32 },
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
    let magic = u32::from_le_bytes(scratch.0[OFF_MAGIC..OFF_MAGIC + 4].try_into().unwrap());
    if magic != FRAME_MAGIC {
        if scratch.0.iter().all(|b| *b == 0) {
            return Err(FrameError::Zeroed);
        }
        return Err(FrameError::BadMagic { found: magic });
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

/// Stamp the broker-owned fields in place. They sit outside the CRC, so this
/// costs two stores and no recompute.
pub fn stamp(frame: &mut [u8], base_offset: u64, leader_epoch: i32) {
    assert!(frame.len() >= HEADER_LEN);
    frame[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
    frame[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_le_bytes());
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
