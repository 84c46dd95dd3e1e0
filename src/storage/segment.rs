//! One segment file of a partition's log, and the names of its files.
//!
//! Lifecycle: created empty by a roll (or at partition creation); *active*
//! while it is the last segment and appends go to it; *closed* after the
//! next roll, when it is synced, truncated to its exact length and its
//! indexes are written; deleted whole by retention. Owned by the partition's
//! log on the partition's shard.

use super::index::SegmentIndex;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// `00000000000000012345` style name: 20 digits, so names sort by offset.
pub fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}{LOG_SUFFIX}", file_stem(base)))
}

pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}{INDEX_SUFFIX}", file_stem(base)))
}

pub fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}{TIME_INDEX_SUFFIX}", file_stem(base)))
}

/// Parse a segment file name back into its base offset.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(LOG_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub struct Segment<F> {
    pub base_offset: u64,
    /// Open file; None until the flusher creates the file of a new segment.
    pub file: Option<Rc<F>>,
    /// Logical length: bytes of frames appended (some may still be in memory only).
    pub len: u64,
    /// One past the last offset in this segment.
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// Wall-clock ms when the segment received its first batch (for segment_ms rolls).
    pub first_append_ms: Option<i64>,
    pub index: SegmentIndex,
    /// Closed for good: every byte written and synced, exact length, indexes
    /// on disk. Only sealed segments may be deleted by retention.
    pub sealed: bool,
    /// Bytes of file space reserved (the file's size while active).
    pub reserved: u64,
}

impl<F> Segment<F> {
    pub fn new(base_offset: u64) -> Self {
        Segment {
            base_offset,
            file: None,
            len: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_ms: None,
            index: SegmentIndex::default(),
            sealed: false,
            reserved: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_stem(42), "00000000000000000042");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
    }
}
