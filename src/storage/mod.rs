//! Storage: one append-only log per partition, made of segment files with
//! sparse offset and time indexes, written with direct I/O.
//!
//! Map of the module:
//! - [`file`]: the storage seam (a small file trait); [`dma`] implements it
//!   with glommio, [`sim`] in memory with faults and crashes;
//! - [`segment`], [`index`]: one segment and its indexes;
//! - [`cache`]: the in-memory tail of each partition;
//! - [`appender`]: the aligned write buffer and its chunks;
//! - [`recovery`], [`checkpoint`]: what survives a crash, and why;
//! - [`retention`]: which segments to delete;
//! - [`producer_state`]: idempotent-producer sequence tracking;
//! - [`io_stats`]: a shard's reads served from the cache and from disk,
//!   and its syncs;
//! - [`io_workers`]: the kernel threads that run a shard's blocking file
//!   operations (fdatasync, fallocate);
//! - [`write_budget`]: the shard's appended-but-unwritten bytes;
//! - [`segment_set`]: the ordered segments of a log, looked up by offset;
//! - [`offsets`]: log start, durable, flushed and next offsets, and their order;
//! - [`log`]: the partition log that ties these together: replayer,
//!   appends, write pipeline and flusher, reader, truncation.

pub mod appender;
pub mod cache;
pub mod checkpoint;
pub mod dma;
pub mod file;
pub mod index;
pub mod io_stats;
pub mod io_workers;
pub mod log;
pub mod offsets;
pub mod producer_state;
pub mod recovery;
pub mod retention;
pub mod segment;
pub mod segment_set;
pub mod sim;
pub mod stream_copy;
pub mod write_budget;

pub use cache::CacheBudget;
pub use log::{AppendOutcome, Log, LogConfig, ReadOutcome};
pub use producer_state::SequenceError;
pub use write_budget::WriteBudget;

use std::path::PathBuf;
use std::sync::Arc;

/// What is wrong with durable data (found by recovery or by a read).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Corruption {
    /// A frame the recovery decision table refuses below the trusted length.
    #[error("{0}")]
    Recovery(recovery::TailDamage),
    /// A header or CRC check failed on a read.
    #[error("{0}")]
    Frame(crate::format::FrameError),
    #[error("batch has base offset {found}, expected {expected} (offsets must be contiguous)")]
    OffsetGap { found: u64, expected: u64 },
    #[error("the segment's readable data ends at offset {found}, expected {expected}")]
    ReadableEnd { found: u64, expected: u64 },
    #[error(
        "frame of {frame_len} bytes runs past the segment's readable end at byte {readable_len}"
    )]
    PastReadableEnd { frame_len: usize, readable_len: u64 },
    #[error("segment ends at offset {ends} but the next segment starts at {next_base}")]
    SegmentGap { ends: u64, next_base: u64 },
}

/// Why an append was refused. Nothing of the request was appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("batch of {len} bytes exceeds max_batch_bytes {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// The partition takes no writes now: a full disk (retryable), a
    /// failure or corruption (until reopened), or closing.
    #[error(transparent)]
    Unavailable(#[from] StorageError),
}

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("offset {requested} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        high_watermark: u64,
    },
    /// A disk read failed, or the partition is offline (corruption found,
    /// now or earlier).
    #[error(transparent)]
    Unavailable(#[from] StorageError),
}

/// Errors of the storage layer's own state and I/O, shared by every
/// operation (each operation's enum wraps it). Cloneable (I/O errors are
/// shared) because one failure is reported to every waiter it affects.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("no space left on the device holding {path}; produce is refused until space is freed (reads keep working)")]
    NoSpace { path: PathBuf },
    #[error("partition {dir} refuses writes after an earlier I/O failure ({cause}); restart the broker to reopen it after fixing the cause")]
    Failed {
        dir: PathBuf,
        cause: Box<StorageError>,
    },
    #[error("partition {dir} is corrupt: segment {segment} at byte {position}: {detail}. Refusing to guess: move the partition directory aside, or truncate the segment to {position} bytes to accept the loss, then restart")]
    Corrupt {
        dir: PathBuf,
        segment: PathBuf,
        position: u64,
        detail: Corruption,
    },
    #[error("partition is closing")]
    Closed,
}

impl StorageError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        let path = path.into();
        if file::is_no_space(&e) {
            return StorageError::NoSpace { path };
        }
        StorageError::Io {
            op,
            path,
            source: Arc::new(e),
        }
    }
}
