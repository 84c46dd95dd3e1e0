//! Frame headers.
//!
//! ```text
//! request   u32 length | u16 api_key | u16 api_version | u32 request_id | body
//! response  u32 length | u16 api_key | u16 error_code  | u32 request_id | str message | body
//! ```
//! `length` counts the bytes after itself. All integers little-endian. A
//! connection may have many requests in flight; responses carry the request
//! id and may arrive in any order.

use super::codec::{put_str, Reader};
use super::{DecodeError, ErrorCode, API_VERSION};
use bytes::{BufMut, BytesMut};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of a request header after the length prefix.
pub const REQUEST_HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    Produce = 1,
    Fetch = 2,
    ListOffsets = 3,
    Metadata = 4,
    CreateTopic = 5,
    DeleteTopic = 6,
    CreatePartitions = 7,
    OffsetCommit = 8,
    OffsetFetch = 9,
    FindCoordinator = 10,
}

impl ApiKey {
    /// The newest version of this API the release speaks. Every API is at
    /// [`API_VERSION`] (0) but Metadata, which also answers version 1.
    pub fn version_max(self) -> u16 {
        match self {
            ApiKey::Metadata => super::messages::METADATA_VERSION_MAX,
            _ => API_VERSION,
        }
    }

    pub fn from_u16(v: u16) -> Result<ApiKey, DecodeError> {
        Ok(match v {
            1 => ApiKey::Produce,
            2 => ApiKey::Fetch,
            3 => ApiKey::ListOffsets,
            4 => ApiKey::Metadata,
            5 => ApiKey::CreateTopic,
            6 => ApiKey::DeleteTopic,
            7 => ApiKey::CreatePartitions,
            8 => ApiKey::OffsetCommit,
            9 => ApiKey::OffsetFetch,
            10 => ApiKey::FindCoordinator,
            other => return Err(DecodeError::UnknownApi(other)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub request_id: u32,
}

impl FrameHeader {
    /// Decode the header at the start of a request frame body (after the length prefix).
    pub fn decode(r: &mut Reader) -> Result<FrameHeader, DecodeError> {
        Ok(FrameHeader {
            api_key: r.u16("api key")?,
            api_version: r.u16("api version")?,
            request_id: r.u32("request id")?,
        })
    }

    /// Start a request frame: writes the length placeholder and header.
    /// Finish with [`finish_frame`].
    pub fn begin(&self, b: &mut BytesMut) -> usize {
        let start = b.len();
        b.put_u32_le(0);
        b.put_u16_le(self.api_key);
        b.put_u16_le(self.api_version);
        b.put_u32_le(self.request_id);
        start
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    pub api_key: u16,
    pub error: ErrorCode,
    pub request_id: u32,
    pub message: String,
}

impl ResponseHeader {
    pub fn begin(&self, b: &mut BytesMut) -> usize {
        let start = b.len();
        b.put_u32_le(0);
        b.put_u16_le(self.api_key);
        b.put_u16_le(self.error as u16);
        b.put_u32_le(self.request_id);
        put_str(b, &self.message);
        start
    }

    pub fn decode(r: &mut Reader) -> Result<ResponseHeader, DecodeError> {
        Ok(ResponseHeader {
            api_key: r.u16("api key")?,
            error: ErrorCode::from_u16(r.u16("error code")?),
            request_id: r.u32("request id")?,
            message: r.string("error message")?,
        })
    }
}

/// Patch the length prefix of a frame started at `start`.
pub fn finish_frame(b: &mut BytesMut, start: usize) {
    let len = (b.len() - start - LEN_PREFIX) as u32;
    b[start..start + LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
}

/// The total length (prefix included) of the frame that `buf` starts
/// with, as soon as the length prefix is readable: the rest may not have
/// arrived yet. Errors when the declared length exceeds `max_frame_bytes`.
pub fn frame_total_len(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, DecodeError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
    if len > max_frame_bytes {
        return Err(DecodeError::TooMany {
            what: "frame bytes",
            count: len,
            max: max_frame_bytes,
        });
    }
    if len < REQUEST_HEADER_LEN {
        return Err(DecodeError::Invalid {
            what: "frame length",
            detail: format!("{len} is shorter than a header"),
        });
    }
    Ok(Some(LEN_PREFIX + len))
}
