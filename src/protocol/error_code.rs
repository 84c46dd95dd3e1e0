//! Error codes of the native protocol (u16 on the wire). Each comes with a
//! human-readable message in the response; the code is for programs.
//!
//! This module is wire vocabulary only and depends on nothing else in the
//! crate; mapping a layer's errors onto these codes (storage, ops, groups)
//! is done where both are visible, in `server::native`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    None = 0,
    Unknown = 1,
    /// A malformed frame, batch header or CRC mismatch.
    Corrupt = 2,
    UnknownTopic = 3,
    UnknownPartition = 4,
    OffsetOutOfRange = 5,
    TopicExists = 6,
    InvalidRequest = 7,
    RequestTooLarge = 8,
    BatchTooLarge = 9,
    NoSpace = 10,
    /// The partition is offline: failed I/O or corruption found at recovery.
    StorageFailed = 11,
    Timeout = 12,
    OutOfOrderSequence = 13,
    InvalidProducerEpoch = 14,
    InvalidPartitions = 15,
    UnsupportedVersion = 16,
    /// Over a resource bound (connections, in-flight bytes); retry later.
    Busy = 17,
    ShuttingDown = 18,
    InvalidConfig = 19,
    /// In a cluster: another broker leads the partition; refresh metadata.
    NotLeader = 20,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> ErrorCode {
        use ErrorCode::*;
        match v {
            0 => None,
            2 => Corrupt,
            3 => UnknownTopic,
            4 => UnknownPartition,
            5 => OffsetOutOfRange,
            6 => TopicExists,
            7 => InvalidRequest,
            8 => RequestTooLarge,
            9 => BatchTooLarge,
            10 => NoSpace,
            11 => StorageFailed,
            12 => Timeout,
            13 => OutOfOrderSequence,
            14 => InvalidProducerEpoch,
            15 => InvalidPartitions,
            16 => UnsupportedVersion,
            17 => Busy,
            18 => ShuttingDown,
            19 => InvalidConfig,
            20 => NotLeader,
            _ => Unknown,
        }
    }

    /// Worth retrying the same request later.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NoSpace
                | ErrorCode::Timeout
                | ErrorCode::Busy
                | ErrorCode::ShuttingDown
                | ErrorCode::NotLeader
        )
    }
}
