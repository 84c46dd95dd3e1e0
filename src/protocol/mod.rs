//! The native wire protocol: a sans-IO codec. No sockets, no async, no
//! runtime: bytes in, messages out, and back. The broker's connections and
//! the client library both use it, and it is fuzzed on its own.
//!
//! The byte-by-byte layout is in docs/wire_protocol.md; [`frame`] has the
//! frame header and [`messages`] the bodies.

pub mod codec;
pub mod error_code;
pub mod frame;
pub mod gather;
pub mod messages;
pub mod raft_codec;

pub use error_code::ErrorCode;
pub use frame::{ApiKey, FrameHeader, ResponseHeader};

/// Version of every API in this release but Metadata (see
/// [`ApiKey::version_max`]); bumped per API when a body changes.
pub const API_VERSION: u16 = 0;

/// Decoding failed: the frame is malformed. The connection answers with an
/// error (when the request id is known) and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated: needed {need} more bytes for {what}")]
    Truncated { what: &'static str, need: usize },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("unknown api key {0}")]
    UnknownApi(u16),
    #[error("unsupported version {version} of {api:?} (this broker speaks up to version {})", api.version_max())]
    UnsupportedVersion { api: ApiKey, version: u16 },
    #[error("{count} {what} exceed the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}
