//! Recovery: scanning a segment and deciding, frame by frame, what to keep.
//!
//! The decision table, for the frame starting at position `p` of a segment,
//! where `trusted` is the checkpointed durable length (see [`super::checkpoint`];
//! for a closed segment, its whole length). It is data: [`RECOVERY_CASES`],
//! which [`classify`] looks up and a test walks row by row.
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
//! the storage seam; the fuzzer feeds it arbitrary bytes. A scan lives for
//! one segment's recovery, on the shard that opens the partition.

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

/// What was found at a position: the rows of the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    EndOfFile,
    ShortHeader,
    ZeroBlock,
    BadHeader,
    PastEndOfFile,
    CrcMismatch,
    OffsetGap,
    ValidFrame,
}

/// What recovery does about it: the cells of the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep the frame and go on.
    Keep,
    /// The segment ends here, cleanly.
    CleanEnd,
    /// Untrusted bad bytes: cut the tail here.
    Cut,
    /// Trusted (durable) bytes are bad: refuse the partition.
    Corrupt,
}

/// One row of the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryCase {
    pub found: Found,
    /// Decision when `p < trusted` (the checkpoint vouches for the bytes).
    pub below_trusted: Decision,
    /// Decision when `p >= trusted`.
    pub from_trusted: Decision,
}

const fn case(found: Found, below_trusted: Decision, from_trusted: Decision) -> RecoveryCase {
    RecoveryCase {
        found,
        below_trusted,
        from_trusted,
    }
}

/// The decision table (see the module doc), one row per [`Found`].
pub const RECOVERY_CASES: &[RecoveryCase] = &[
    case(Found::EndOfFile, Decision::Corrupt, Decision::CleanEnd),
    case(Found::ShortHeader, Decision::Corrupt, Decision::Cut),
    case(Found::ZeroBlock, Decision::Corrupt, Decision::Cut),
    case(Found::BadHeader, Decision::Corrupt, Decision::Cut),
    case(Found::PastEndOfFile, Decision::Corrupt, Decision::Cut),
    case(Found::CrcMismatch, Decision::Corrupt, Decision::Cut),
    case(Found::OffsetGap, Decision::Corrupt, Decision::Cut),
    case(Found::ValidFrame, Decision::Keep, Decision::Keep),
];

/// Look up the decision for `found` at `pos`.
pub fn decide(found: Found, pos: u64, trusted: u64) -> Decision {
    let row = RECOVERY_CASES
        .iter()
        .find(|c| c.found == found)
        .expect("every Found has a row in RECOVERY_CASES");
    if pos < trusted {
        row.below_trusted
    } else {
        row.from_trusted
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

/// What is at a position, with the detail a log message needs.
enum Observed {
    Found(Found, Option<TailDamage>, Option<BatchHeader>),
    NeedMore(usize),
}

/// Classify the bytes at position `pos`. `window` holds the bytes from `pos`
/// on; `eof` says whether the file ends at the end of `window`.
pub fn classify(window: &[u8], eof: bool, pos: u64, expected_offset: u64, trusted: u64) -> Step {
    let (found, damage, header) = match observe(window, eof, expected_offset) {
        Observed::NeedMore(n) => return Step::NeedMore(n),
        Observed::Found(f, d, h) => (f, d, h),
    };
    match decide(found, pos, trusted) {
        Decision::Keep => Step::Frame(header.expect("a valid frame has a header")),
        Decision::CleanEnd => Step::End,
        Decision::Cut => Step::Torn(damage.expect("a cut names its damage")),
        Decision::Corrupt => Step::Corrupt(damage.expect("corruption names its damage")),
    }
}

/// Which row of the table the bytes at a position fall in.
fn observe(window: &[u8], eof: bool, expected_offset: u64) -> Observed {
    let bad = |f: Found, d: TailDamage| Observed::Found(f, Some(d), None);
    if window.is_empty() && eof {
        // Damage only when the checkpoint vouched for bytes that are not there.
        return bad(Found::EndOfFile, TailDamage::MissingDurableBytes);
    }
    if window.len() < HEADER_LEN {
        return if eof {
            bad(Found::ShortHeader, TailDamage::ShortHeader)
        } else {
            Observed::NeedMore(HEADER_LEN)
        };
    }
    let h = match frame::parse_header(window) {
        Ok(h) => h,
        Err(FrameError::Zeroed) => return bad(Found::ZeroBlock, TailDamage::ZeroFilled),
        Err(e) => return bad(Found::BadHeader, TailDamage::BadHeader(e)),
    };
    if h.frame_len() > window.len() {
        return if eof {
            bad(
                Found::PastEndOfFile,
                TailDamage::PastEnd {
                    frame_len: h.frame_len(),
                    available: window.len(),
                },
            )
        } else {
            Observed::NeedMore(h.frame_len())
        };
    }
    if let Err(e) = frame::verify_crc(&h, window) {
        return bad(Found::CrcMismatch, TailDamage::Crc(e));
    }
    if h.base_offset != expected_offset {
        return bad(
            Found::OffsetGap,
            TailDamage::OffsetGap {
                expected: expected_offset,
                found: h.base_offset,
            },
        );
    }
    Observed::Found(Found::ValidFrame, None, Some(h))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchBuilder, Compression, ProducerIds};

    /// A stamped frame at offset 10.
    fn frame() -> Vec<u8> {
        let mut b = BatchBuilder::new();
        b.push(1, Some(b"k"), Some(b"a value to check"), &[]);
        let mut f = b.finish(Compression::None, ProducerIds::NONE).to_vec();
        frame::stamp(&mut f, 10, 3);
        f
    }

    /// Bytes (at end of file) that fall in `found`'s row, for a scan expecting offset 10.
    fn sample(found: Found) -> Vec<u8> {
        let f = frame();
        match found {
            Found::EndOfFile => Vec::new(),
            Found::ShortHeader => f[..HEADER_LEN - 1].to_vec(),
            Found::ZeroBlock => vec![0; 4096],
            Found::BadHeader => {
                let mut f = f;
                f[crate::format::header::OFF_BASE_OFFSET] ^= 0x40;
                f
            }
            Found::PastEndOfFile => f[..f.len() - 1].to_vec(),
            Found::CrcMismatch => {
                let mut f = f;
                let last = f.len() - 1;
                f[last] ^= 1;
                f
            }
            Found::OffsetGap => {
                let mut f = f;
                frame::stamp(&mut f, 11, 3);
                f
            }
            Found::ValidFrame => f,
        }
    }

    fn decision_of(step: &Step) -> Decision {
        match step {
            Step::Frame(_) => Decision::Keep,
            Step::End => Decision::CleanEnd,
            Step::Torn(_) => Decision::Cut,
            Step::Corrupt(_) => Decision::Corrupt,
            Step::NeedMore(n) => panic!("a whole sample at end of file needs no more bytes ({n})"),
        }
    }

    #[test]
    fn recovery_cases_row_by_row() {
        let mut rows: Vec<Found> = RECOVERY_CASES.iter().map(|c| c.found).collect();
        rows.dedup();
        assert_eq!(rows.len(), RECOVERY_CASES.len(), "one row per case");
        for case in RECOVERY_CASES {
            let bytes = sample(case.found);
            let Observed::Found(found, _, _) = observe(&bytes, true, 10) else {
                panic!("{:?}: the sample is whole", case.found);
            };
            assert_eq!(found, case.found, "the sample falls in its own row");
            // p = 100: below a trusted length of 1000, at a trusted length of 100.
            for (trusted, want) in [(1000, case.below_trusted), (100, case.from_trusted)] {
                let step = classify(&bytes, true, 100, 10, trusted);
                assert_eq!(
                    decision_of(&step),
                    want,
                    "{:?} with trusted {trusted}: {step:?}",
                    case.found
                );
            }
        }
    }

    #[test]
    fn a_short_window_asks_for_more_instead_of_deciding() {
        let f = frame();
        assert_eq!(
            classify(&f[..10], false, 0, 10, 0),
            Step::NeedMore(HEADER_LEN)
        );
        let h = frame::parse_header(&f).unwrap();
        assert_eq!(
            classify(&f[..HEADER_LEN], false, 0, 10, 0),
            Step::NeedMore(h.frame_len())
        );
    }
}
