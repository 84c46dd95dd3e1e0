//! Recovery: scanning a segment and deciding, frame by frame, what to keep.
//!
//! The decision table, for the frame starting at position `p` of a segment,
//! where `trusted` is the checkpointed durable length (see [`super::checkpoint`];
//! for a closed segment, its whole length):
//!
//! | what is at `p`                               | p < trusted      | p >= trusted      |
//! |----------------------------------------------|------------------|-------------------|
//! | end of file                                  | corrupt (missing durable bytes) | clean end |
//! | fewer than 64 bytes                          | corrupt          | torn: cut at p    |
//! | 64 zero bytes (unwritten block)              | corrupt          | torn: cut at p    |
//! | header check (SLB2 CRC, SLB1 magic) or fields fail | corrupt     | torn: cut at p    |
//! | frame runs past end of file                  | corrupt          | torn: cut at p    |
//! | CRC mismatch                                 | corrupt          | torn: cut at p    |
//! | base offset is not the expected next offset  | corrupt          | torn: cut at p    |
//! | valid frame                                  | keep, go on      | keep, go on       |
//!
//! Why this is safe: an acks=all reply is sent only after a sync that covers
//! the batch, and every sync waits for all earlier writes, so acknowledged
//! data always lies before the first hole, torn block or stale frame. A
//! torn tail can only be unacknowledged data. Corruption of synced data
//! (below the checkpoint) is refused loudly rather than silently cut.
//!
//! This module is pure: [`classify`] works on bytes, [`SegmentScan`]
//! accumulates what the log needs. The log feeds it windows read through
//! the storage seam; the fuzzer feeds it arbitrary bytes.

use super::index::SegmentIndex;
use crate::format::frame::{self, FrameError};
use crate::format::{BatchHeader, HEADER_LEN};

/// Why a tail was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailDamage {
    ShortHeader,
    ZeroFilled,
    BadHeader(FrameError),
    PastEnd { frame_len: usize, available: usize },
    Crc(FrameError),
    OffsetGap { expected: u64, found: u64 },
    MissingDurableBytes,
}

impl std::fmt::Display for TailDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailDamage::ShortHeader => write!(f, "fewer than {HEADER_LEN} bytes left"),
            TailDamage::ZeroFilled => write!(f, "zero-filled block"),
            TailDamage::BadHeader(e) => write!(f, "bad header: {e}"),
            TailDamage::PastEnd {
                frame_len,
                available,
            } => {
                write!(f, "frame of {frame_len} bytes but only {available} left")
            }
            TailDamage::Crc(e) => write!(f, "{e}"),
            TailDamage::OffsetGap { expected, found } => {
                write!(f, "frame has base offset {found}, expected {expected}")
            }
            TailDamage::MissingDurableBytes => write!(f, "file ends before its durable length"),
        }
    }
}

/// The outcome for one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A valid frame; advance by `h.frame_len()`.
    Frame(BatchHeader),
    /// Clean end of the segment.
    End,
    /// Bad bytes in the untrusted tail: cut here.
    Torn(TailDamage),
    /// Bad bytes in the trusted (durable) region: refuse the partition.
    Corrupt(TailDamage),
    /// The window is too short to decide; supply at least this many bytes from `p`.
    NeedMore(usize),
}

/// Classify the bytes at position `pos`. `window` holds the bytes from `pos`
/// on; `eof` says whether the file ends at the end of `window`.
pub fn classify(window: &[u8], eof: bool, pos: u64, expected_offset: u64, trusted: u64) -> Step {
    let bad = |d: TailDamage| {
        if pos < trusted {
            Step::Corrupt(d)
        } else {
            Step::Torn(d)
        }
    };
    if window.is_empty() && eof {
        return if pos < trusted {
            Step::Corrupt(TailDamage::MissingDurableBytes)
        } else {
            Step::End
        };
    }
    if window.len() < HEADER_LEN {
        return if eof {
            bad(TailDamage::ShortHeader)
        } else {
            Step::NeedMore(HEADER_LEN)
        };
    }
    let h = match frame::parse_header(window) {
        Ok(h) => h,
        Err(FrameError::Zeroed) => return bad(TailDamage::ZeroFilled),
        Err(e) => return bad(TailDamage::BadHeader(e)),
    };
    if h.frame_len() > window.len() {
        return if eof {
            bad(TailDamage::PastEnd {
                frame_len: h.frame_len(),
                available: window.len(),
            })
        } else {
            Step::NeedMore(h.frame_len())
        };
    }
    if let Err(e) = frame::verify_crc(&h, window) {
        return bad(TailDamage::Crc(e));
    }
    if h.base_offset != expected_offset {
        return bad(TailDamage::OffsetGap {
            expected: expected_offset,
            found: h.base_offset,
        });
    }
    Step::Frame(h)
}

/// What a scan learnt about a segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentScan {
    /// Length of the valid prefix.
    pub valid_len: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub index: SegmentIndex,
    /// Headers of the valid frames, for rebuilding producer state.
    pub headers: Vec<BatchHeader>,
    /// Why the scan stopped before the end of the file, if it did.
    pub end: Option<TailDamage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    Clean,
    Cut { at: u64, damage: TailDamage },
    Corrupt { at: u64, damage: TailDamage },
}

impl SegmentScan {
    pub fn starting_at(base_offset: u64, pos: u64, next_offset: u64, index: SegmentIndex) -> Self {
        assert!(next_offset >= base_offset);
        SegmentScan {
            valid_len: pos,
            next_offset,
            max_timestamp: -1,
            index,
            headers: Vec::new(),
            end: None,
        }
    }

    /// Record a valid frame at the current end.
    pub fn accept(&mut self, base_offset: u64, h: &BatchHeader, index_interval: u32) {
        let rel = (h.base_offset - base_offset) as u32;
        self.index.on_append(
            rel,
            self.valid_len,
            h.max_timestamp,
            h.frame_len(),
            index_interval,
        );
        self.valid_len += h.frame_len() as u64;
        self.next_offset = h.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.headers.push(*h);
    }
}

/// Scan a whole in-memory segment image: the same decisions the log makes
/// on disk, for tests and fuzzing.
pub fn scan_bytes(
    bytes: &[u8],
    base_offset: u64,
    trusted: u64,
    index_interval: u32,
) -> (SegmentScan, ScanEnd) {
    let mut scan = SegmentScan::starting_at(base_offset, 0, base_offset, SegmentIndex::default());
    loop {
        let pos = scan.valid_len;
        let window = &bytes[pos as usize..];
        match classify(window, true, pos, scan.next_offset, trusted) {
            Step::Frame(h) => scan.accept(base_offset, &h, index_interval),
            Step::End => return (scan, ScanEnd::Clean),
            Step::Torn(damage) => return (scan, ScanEnd::Cut { at: pos, damage }),
            Step::Corrupt(damage) => return (scan, ScanEnd::Corrupt { at: pos, damage }),
            Step::NeedMore(_) => unreachable!("a whole image is at eof"),
        }
    }
}
