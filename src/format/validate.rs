//! Record-level validation of a batch at ingress. No I/O.
//!
//! The header and CRC checks ([`super::frame`]) prove that a batch arrived
//! as its producer sealed it; they say nothing about whether the producer
//! told the truth. A batch whose header says 1 record but whose payload
//! holds 3 would be stored with offsets for 1, and the next batch's offsets
//! would collide with the 2 extra records (consumers see `7, 8, 7, 8`). A
//! compressed payload of garbage with a valid CRC would be stored and then
//! fail to decode in every consumer, which would stop at it forever. Both
//! must be refused before anything is stored, so every produced batch is
//! walked here, on the connection's shard, before it is routed:
//!
//! - the records are walked by their varint lengths (no copies, no
//!   decoding of keys, values or headers): every record's fields must fill
//!   exactly its declared length, and the records exactly the payload;
//! - the record count must equal the header's `record_count`;
//! - record `i` must have offset delta `i` (what every Kafka producer
//!   writes; Kafka's broker refuses batches whose offset range and count
//!   disagree), so the last delta equals the header's `last_offset_delta`;
//! - a compressed payload is decompressed in one streaming pass through a
//!   fixed scratch buffer ([`Compression::decompress_streaming`]), the
//!   output walked and discarded, and the decompressed size bounded by
//!   [`RecordLimits::max_records_bytes`]. This costs CPU (see
//!   benches/README.md) and can be turned off per topic
//!   (`validate_compressed=false`), at the risk stated in the README.
//!
//! - header keys must be UTF-8 (they are strings; the native client refuses
//!   a record whose header key is not).
//!
//! Not checked: timestamps, record attributes.
//! The walk is a push state machine ([`RecordWalker`]) so that compressed
//! output can be fed in pieces that split records anywhere.

use super::codec::{CodecError, Compression, StreamError};
use super::header::{attr, BatchHeader};

/// A batch's records may decompress to at most this many times the
/// topic's `max_batch_bytes` ...
pub const DECOMPRESSED_FACTOR: usize = 32;
/// ... and never to more than this (256 MiB: 32 x the default 8 MiB).
/// Real batches compress 2-10x; the bound only stops a decompression bomb
/// from burning a shard's CPU (decompression runs at 0.3-2 GB/s).
pub const DECOMPRESSED_CAP: usize = 256 << 20;

/// What the validation of one topic's batches allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest records section (decompressed) a batch may carry.
    pub max_records_bytes: usize,
    /// Decompress compressed batches and walk their records. Off: only the
    /// header and CRC of compressed batches are checked.
    pub check_compressed: bool,
    /// Every record must have a key (a compacted topic, Kafka's rule).
    /// Implies walking compressed batches too.
    pub keys_required: bool,
}

impl RecordLimits {
    /// The limits for a topic with these settings.
    pub fn for_topic(max_batch_bytes: u32, validate_compressed: bool) -> Self {
        RecordLimits {
            max_records_bytes: (max_batch_bytes as usize)
                .saturating_mul(DECOMPRESSED_FACTOR)
                .min(DECOMPRESSED_CAP),
            check_compressed: validate_compressed,
            keys_required: false,
        }
    }

    /// The same limits, requiring keys or not.
    pub fn with_keys_required(mut self, keys_required: bool) -> Self {
        self.keys_required = keys_required;
        if keys_required {
            self.check_compressed = true;
        }
        self
    }
}

/// Why a batch's records were refused. Positions are byte offsets in the
/// (decompressed) records section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("records end inside record {index} (at byte {at})")]
    Truncated { index: u32, at: u64 },
    #[error("varint longer than 10 bytes at byte {at}")]
    VarintOverflow { at: u64 },
    #[error("record {index}: invalid {what} {value} at byte {at}")]
    BadLength {
        index: u32,
        what: &'static str,
        value: i64,
        at: u64,
    },
    #[error("record {index} declares {declared} bytes but its fields take {used}")]
    LengthMismatch {
        index: u32,
        declared: i64,
        used: u64,
    },
    #[error("the header declares {header} records but the payload holds more")]
    TooManyRecords { header: i32 },
    #[error("record {index} has no key: a compacted topic needs one per record")]
    MissingKey { index: u32 },
    #[error("the header declares {header} records but the payload holds {found}")]
    TooFewRecords { header: i32, found: u32 },
    #[error("record {index}: header key at byte {at} is not UTF-8")]
    HeaderKeyUtf8 { index: u32, at: u64 },
    #[error(
        "record {index} has offset delta {found}, expected {index} (deltas must run 0, 1, 2, ...)"
    )]
    OffsetDelta { index: u32, found: i64 },
    #[error("the header declares last_offset_delta {header} but the last record's offset delta is {found}")]
    LastOffsetDelta { header: i32, found: i64 },
    #[error("the records decompress to more than {limit} bytes (the topic's max_batch_bytes x {DECOMPRESSED_FACTOR}, at most {DECOMPRESSED_CAP})")]
    TooLarge { limit: usize },
    #[error("{codec} payload does not decompress: {detail}")]
    Decompress { codec: Compression, detail: String },
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    /// Control batches (transaction markers, and the Raft entries of a
    /// replicated partition, see `replica::entry`) are the broker's to
    /// write: a producer's control batch would be read back as one.
    #[error("a control batch (attributes bit 5): producers may not write control batches")]
    ControlBatch,
    #[error("a transactional batch (attributes bit 4): transactions are not served")]
    Transactional,
}

/// What validation did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Records walked: the count and bytes of the (decompressed) records.
    Walked { records: u32, records_bytes: u64 },
    /// Compressed, and the topic does not decompress at ingress.
    CompressedUnchecked,
}

/// Validate the records of a batch whose header (and CRC) already passed.
/// `payload` is the records section as stored (maybe compressed).
pub fn check_records(
    h: &BatchHeader,
    payload: &[u8],
    limits: &RecordLimits,
) -> Result<Checked, RecordsError> {
    if h.attributes & attr::CONTROL != 0 {
        return Err(RecordsError::ControlBatch);
    }
    if h.attributes & attr::TRANSACTIONAL != 0 {
        return Err(RecordsError::Transactional);
    }
    let codec =
        Compression::from_id(h.codec_id()).map_err(|_| RecordsError::UnknownCodec(h.codec_id()))?;
    let mut w = RecordWalker::new(h.record_count, h.last_offset_delta);
    w.keys_required = limits.keys_required;
    if codec == Compression::None {
        w.feed(payload)?;
        return w.finish();
    }
    if !limits.check_compressed {
        return Ok(Checked::CompressedUnchecked);
    }
    match codec.decompress_streaming(payload, limits.max_records_bytes, &mut |piece| {
        w.feed(piece)
    }) {
        Ok(_) => w.finish(),
        Err(StreamError::Sink(e)) => Err(e),
        Err(StreamError::Codec(CodecError::TooLarge { limit })) => {
            Err(RecordsError::TooLarge { limit })
        }
        Err(StreamError::Codec(e)) => Err(RecordsError::Decompress {
            codec,
            detail: e.to_string(),
        }),
    }
}

/// Where the walker is inside a record. Each `*Len`/varint state reads one
/// varint; each `Skip*` state skips a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length,
    Attributes,
    TimestampDelta,
    OffsetDelta,
    KeyLen,
    SkipKey,
    ValueLen,
    SkipValue,
    HeaderCount,
    HeaderKeyLen,
    SkipHeaderKey,
    HeaderValueLen,
    SkipHeaderValue,
}

/// The record walk as a push state machine: [`RecordWalker::feed`] takes
/// the records section in pieces of any size (split anywhere), and
/// [`RecordWalker::finish`] checks the totals. Memory is constant.
#[derive(Debug, Clone)]
pub struct RecordWalker {
    expected: i32,
    last_offset_delta: i32,
    state: State,
    /// Bytes consumed so far.
    pos: u64,
    /// Records started so far; the current one is `started - 1`.
    started: u32,
    /// Partial varint: accumulated bits, shift, start position.
    acc: u64,
    shift: u32,
    acc_start: u64,
    /// Start (after the length varint) and declared length of the current record.
    body_start: u64,
    body_len: i64,
    skip: u64,
    headers_left: i64,
    last_delta: i64,
    /// UTF-8 check of the current header key: continuation bytes still
    /// expected, and the range the next one must fall in.
    utf8_need: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    /// Refuse a record with a null key (compacted topics).
    pub keys_required: bool,
}

impl RecordWalker {
    pub fn new(record_count: i32, last_offset_delta: i32) -> Self {
        RecordWalker {
            expected: record_count,
            last_offset_delta,
            state: State::Length,
            pos: 0,
            started: 0,
            acc: 0,
            shift: 0,
            acc_start: 0,
            body_start: 0,
            body_len: 0,
            skip: 0,
            headers_left: 0,
            last_delta: -1,
            utf8_need: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xBF,
            keys_required: false,
        }
    }

    fn index(&self) -> u32 {
        self.started.saturating_sub(1)
    }

    fn body_end(&self) -> u64 {
        self.body_start + self.body_len as u64
    }

    /// Feed the next piece of the records section.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), RecordsError> {
        while !data.is_empty() {
            if self.state == State::Length && self.shift == 0 {
                if let Some((n, index)) = self.whole_record(data) {
                    self.started += 1;
                    self.pos += n as u64;
                    self.last_delta = index;
                    data = &data[n..];
                    continue;
                }
            }
            match self.state {
                State::SkipHeaderKey => {
                    // Header keys are short: checked byte by byte, so a key
                    // split between two pieces needs no buffering.
                    let n = (self.skip.min(data.len() as u64)) as usize;
                    for &b in &data[..n] {
                        if !self.utf8_byte(b) {
                            return Err(RecordsError::HeaderKeyUtf8 {
                                index: self.index(),
                                at: self.pos,
                            });
                        }
                        self.pos += 1;
                    }
                    data = &data[n..];
                    self.skip -= n as u64;
                    if self.skip == 0 {
                        if self.utf8_need != 0 {
                            return Err(RecordsError::HeaderKeyUtf8 {
                                index: self.index(),
                                at: self.pos,
                            });
                        }
                        self.after_skip()?;
                    }
                }
                State::SkipKey | State::SkipValue | State::SkipHeaderValue => {
                    let n = (self.skip.min(data.len() as u64)) as usize;
                    data = &data[n..];
                    self.pos += n as u64;
                    self.skip -= n as u64;
                    if self.skip == 0 {
                        self.after_skip()?;
                    }
                }
                State::Attributes => {
                    data = &data[1..];
                    self.pos += 1;
                    self.check_inside()?;
                    self.state = State::TimestampDelta;
                }
                _ => {
                    if self.state == State::Length && self.shift == 0 {
                        // A new record starts here.
                        if self.started >= self.expected.max(0) as u32 {
                            return Err(RecordsError::TooManyRecords {
                                header: self.expected,
                            });
                        }
                        self.started += 1;
                    }
                    if self.shift == 0 {
                        self.acc_start = self.pos;
                    }
                    let b = data[0];
                    data = &data[1..];
                    self.pos += 1;
                    if self.shift == 63 && b > 1 {
                        return Err(RecordsError::VarintOverflow { at: self.acc_start });
                    }
                    self.acc |= ((b & 0x7f) as u64) << self.shift;
                    if b & 0x80 != 0 {
                        self.shift += 7;
                        if self.shift > 63 {
                            return Err(RecordsError::VarintOverflow { at: self.acc_start });
                        }
                        continue;
                    }
                    let z = self.acc;
                    let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
                    let at = self.acc_start;
                    self.acc = 0;
                    self.shift = 0;
                    self.on_varint(v, at)?;
                }
            }
        }
        Ok(())
    }

    /// The record starting at `data[0]`, if all of it is in `data` and it
    /// passes every check the byte-by-byte walk makes: the bytes it takes
    /// and its offset delta. None leaves it to that walk: a record split
    /// between pieces, or one with something wrong, whose error the walk
    /// then names as it always did. So this only ever accepts what the
    /// walk accepts.
    ///
    /// Why: the walk's state machine, a branch per byte of every varint,
    /// was 17% of a shard's CPU with 100 B records (perf); most records
    /// arrive whole, in one uncompressed payload.
    #[inline]
    fn whole_record(&self, data: &[u8]) -> Option<(usize, i64)> {
        use crate::format::record::decode_varlong;
        let var = |buf: &[u8], p: &mut usize| decode_varlong(buf, p).ok();
        // Skip a length-prefixed field of `n` bytes (-1: null, if allowed).
        let skip = |body: &[u8], p: &mut usize, n: i64, null_ok: bool| -> Option<()> {
            if n == -1 && null_ok {
                return Some(());
            }
            let end = p.checked_add(usize::try_from(n).ok()?)?;
            (end <= body.len()).then(|| *p = end)
        };
        if self.started >= self.expected.max(0) as u32 {
            return None;
        }
        let index = self.started as i64;
        let mut p = 0;
        let len = var(data, &mut p)?;
        if !(6..=i32::MAX as i64).contains(&len) {
            return None;
        }
        let end = p.checked_add(len as usize)?;
        let body = data.get(..end)?;
        p += 1; // attributes
        var(body, &mut p)?; // timestamp delta
        if var(body, &mut p)? != index {
            return None;
        }
        let key_len = var(body, &mut p)?;
        skip(body, &mut p, key_len, !self.keys_required)?;
        let value_len = var(body, &mut p)?;
        skip(body, &mut p, value_len, true)?;
        let headers = var(body, &mut p)?;
        if headers < 0 || headers > (end - p) as i64 / 2 {
            return None;
        }
        for _ in 0..headers {
            let key_len = var(body, &mut p)?;
            let at = p;
            skip(body, &mut p, key_len, false)?;
            std::str::from_utf8(&body[at..p]).ok()?;
            let value_len = var(body, &mut p)?;
            skip(body, &mut p, value_len, true)?;
        }
        (p == end).then_some((end, index))
    }

    /// One byte of a header key through a UTF-8 validator (the ranges of
    /// RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
    fn utf8_byte(&mut self, b: u8) -> bool {
        if self.utf8_need > 0 {
            if b < self.utf8_lo || b > self.utf8_hi {
                return false;
            }
            self.utf8_need -= 1;
            (self.utf8_lo, self.utf8_hi) = (0x80, 0xBF);
            return true;
        }
        let (need, lo, hi) = match b {
            0x00..=0x7F => return true,
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return false,
        };
        (self.utf8_need, self.utf8_lo, self.utf8_hi) = (need, lo, hi);
        true
    }

    /// A field inside the current record must not run past its declared end.
    fn check_inside(&self) -> Result<(), RecordsError> {
        if self.pos > self.body_end() {
            return Err(RecordsError::LengthMismatch {
                index: self.index(),
                declared: self.body_len,
                used: self.pos - self.body_start,
            });
        }
        Ok(())
    }

    /// Skip `n` bytes of the current record, or move on if there are none.
    fn start_skip(
        &mut self,
        n: i64,
        what: &'static str,
        at: u64,
        state: State,
    ) -> Result<(), RecordsError> {
        if n < 0 || self.pos + n as u64 > self.body_end() {
            return Err(RecordsError::BadLength {
                index: self.index(),
                what,
                value: n,
                at,
            });
        }
        self.skip = n as u64;
        self.state = state;
        if n == 0 {
            self.after_skip()?;
        }
        Ok(())
    }

    fn on_varint(&mut self, v: i64, at: u64) -> Result<(), RecordsError> {
        let index = self.index();
        let bad = |what: &'static str| RecordsError::BadLength {
            index,
            what,
            value: v,
            at,
        };
        match self.state {
            State::Length => {
                // attributes, timestampDelta, offsetDelta, keyLength,
                // valueLength, headerCount: at least 6 bytes.
                if !(6..=i32::MAX as i64).contains(&v) {
                    return Err(bad("record length"));
                }
                self.body_start = self.pos;
                self.body_len = v;
                self.state = State::Attributes;
            }
            State::TimestampDelta => {
                self.check_inside()?;
                self.state = State::OffsetDelta;
            }
            State::OffsetDelta => {
                self.check_inside()?;
                if v != index as i64 {
                    return Err(RecordsError::OffsetDelta { index, found: v });
                }
                self.last_delta = v;
                self.state = State::KeyLen;
            }
            State::KeyLen | State::ValueLen => {
                self.check_inside()?;
                let (what, next) = if self.state == State::KeyLen {
                    ("key length", State::SkipKey)
                } else {
                    ("value length", State::SkipValue)
                };
                if v == -1 && self.keys_required && self.state == State::KeyLen {
                    return Err(RecordsError::MissingKey { index });
                }
                if v == -1 {
                    // Null: nothing to skip.
                    self.skip = 0;
                    self.state = next;
                    self.after_skip()?;
                } else {
                    self.start_skip(v, what, at, next)?;
                }
            }
            State::HeaderCount => {
                self.check_inside()?;
                // Each header takes at least 2 bytes.
                let room = (self.body_end() - self.pos) as i64;
                if v < 0 || v > room / 2 {
                    return Err(bad("header count"));
                }
                self.headers_left = v;
                self.next_header()?;
            }
            State::HeaderKeyLen => {
                self.check_inside()?;
                // Header keys are strings: never null.
                self.start_skip(v, "header key length", at, State::SkipHeaderKey)?;
            }
            State::HeaderValueLen => {
                self.check_inside()?;
                if v == -1 {
                    self.skip = 0;
                    self.state = State::SkipHeaderValue;
                    self.after_skip()?;
                } else {
                    self.start_skip(v, "header value length", at, State::SkipHeaderValue)?;
                }
            }
            _ => unreachable!("not a varint state"),
        }
        Ok(())
    }

    fn after_skip(&mut self) -> Result<(), RecordsError> {
        match self.state {
            State::SkipKey => self.state = State::ValueLen,
            State::SkipValue => self.state = State::HeaderCount,
            State::SkipHeaderKey => self.state = State::HeaderValueLen,
            State::SkipHeaderValue => {
                self.headers_left -= 1;
                self.next_header()?;
            }
            _ => unreachable!("not a skip state"),
        }
        Ok(())
    }

    /// The next header, or the end of the record.
    fn next_header(&mut self) -> Result<(), RecordsError> {
        if self.headers_left > 0 {
            self.state = State::HeaderKeyLen;
            return Ok(());
        }
        if self.pos != self.body_end() {
            return Err(RecordsError::LengthMismatch {
                index: self.index(),
                declared: self.body_len,
                used: self.pos - self.body_start,
            });
        }
        self.state = State::Length;
        Ok(())
    }

    /// The whole records section was fed: check the totals.
    pub fn finish(self) -> Result<Checked, RecordsError> {
        if self.state != State::Length || self.shift != 0 {
            return Err(RecordsError::Truncated {
                index: self.index(),
                at: self.pos,
            });
        }
        if self.started as i64 != self.expected as i64 {
            return Err(RecordsError::TooFewRecords {
                header: self.expected,
                found: self.started,
            });
        }
        if self.last_delta != self.last_offset_delta as i64 {
            return Err(RecordsError::LastOffsetDelta {
                header: self.last_offset_delta,
                found: self.last_delta,
            });
        }
        Ok(Checked::Walked {
            records: self.started,
            records_bytes: self.pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::codec::ALL;
    use crate::format::record;
    use bytes::BytesMut;

    /// A records section of `n` records with offset deltas `deltas(i)`.
    fn records(n: i32, delta: impl Fn(i32) -> i32) -> Vec<u8> {
        let mut b = BytesMut::new();
        for i in 0..n {
            let v = format!("value-{i}").repeat(i as usize % 7 + 1);
            let headers: &[(&str, Option<&[u8]>)] = if i % 3 == 0 {
                &[("h", Some(b"hv")), ("n", None)]
            } else {
                &[]
            };
            let key = format!("k{i}");
            let key = (i % 4 != 1).then_some(key.as_bytes());
            record::encode(
                &mut b,
                i as i64 * 3,
                delta(i),
                key,
                Some(v.as_bytes()),
                headers,
            );
        }
        b.to_vec()
    }

    fn header(count: i32, last: i32, codec: Compression) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            header_crc: 0,
            payload_len: 0,
            crc: 0,
            partition_leader_epoch: -1,
            last_offset_delta: last,
            base_sequence: -1,
            record_count: count,
            producer_epoch: -1,
            attributes: codec.id() as i16,
        }
    }

    const LIMITS: RecordLimits = RecordLimits {
        max_records_bytes: 1 << 20,
        check_compressed: true,
        keys_required: false,
    };

    #[test]
    fn honest_batches_pass_in_every_codec_and_any_split() {
        let recs = records(50, |i| i);
        for codec in ALL {
            let payload = codec.compress(&recs);
            let r = check_records(&header(50, 49, codec), &payload, &LIMITS).unwrap();
            assert_eq!(
                r,
                Checked::Walked {
                    records: 50,
                    records_bytes: recs.len() as u64
                },
                "{codec}"
            );
        }
        // Fed one byte at a time, and in odd pieces: the same answer.
        for piece in [1, 2, 3, 7, 64] {
            let mut w = RecordWalker::new(50, 49);
            for c in recs.chunks(piece) {
                w.feed(c).unwrap();
            }
            assert!(matches!(
                w.finish(),
                Ok(Checked::Walked { records: 50, .. })
            ));
        }
    }

    #[test]
    fn control_and_transactional_batches_from_producers_are_refused() {
        let recs = records(1, |i| i);
        let mut h = header(1, 0, Compression::None);
        assert!(check_records(&h, &recs, &LIMITS).is_ok());
        h.attributes |= attr::CONTROL;
        assert_eq!(
            check_records(&h, &recs, &LIMITS),
            Err(RecordsError::ControlBatch)
        );
        let mut h = header(1, 0, Compression::None);
        h.attributes |= attr::TRANSACTIONAL;
        assert_eq!(
            check_records(&h, &recs, &LIMITS),
            Err(RecordsError::Transactional)
        );
    }

    #[test]
    fn a_lying_record_count_is_refused_both_ways() {
        let recs = records(3, |i| i);
        assert_eq!(
            check_records(&header(1, 0, Compression::None), &recs, &LIMITS),
            Err(RecordsError::TooManyRecords { header: 1 })
        );
        assert_eq!(
            check_records(&header(4, 3, Compression::None), &recs, &LIMITS),
            Err(RecordsError::TooFewRecords {
                header: 4,
                found: 3
            })
        );
        for codec in ALL {
            let z = codec.compress(&recs);
            assert_eq!(
                check_records(&header(1, 0, codec), &z, &LIMITS),
                Err(RecordsError::TooManyRecords { header: 1 }),
                "{codec}"
            );
        }
    }

    #[test]
    fn offset_deltas_must_run_from_zero() {
        let recs = records(3, |i| if i == 2 { 5 } else { i });
        assert_eq!(
            check_records(&header(3, 5, Compression::None), &recs, &LIMITS),
            Err(RecordsError::OffsetDelta { index: 2, found: 5 })
        );
        let recs = records(3, |i| i);
        assert_eq!(
            check_records(&header(3, 4, Compression::None), &recs, &LIMITS),
            Err(RecordsError::LastOffsetDelta {
                header: 4,
                found: 2
            })
        );
    }

    #[test]
    fn lengths_must_add_up() {
        let recs = records(3, |i| i);
        // Cut anywhere: refused.
        for cut in 1..recs.len() {
            assert!(
                check_records(&header(3, 2, Compression::None), &recs[..cut], &LIMITS).is_err(),
                "cut at {cut}"
            );
        }
        // Trailing bytes: a 4th (bogus) record.
        let mut more = recs.clone();
        more.push(0);
        assert!(check_records(&header(3, 2, Compression::None), &more, &LIMITS).is_err());
        // A record length one too long or short.
        for d in [1i64, -1] {
            let mut b = BytesMut::new();
            record::encode(&mut b, 0, 0, Some(b"k"), Some(b"v"), &[]);
            let body = (b[0] as i64) / 2; // zigzag, one byte
            let mut bad = b.to_vec();
            bad[0] = ((body + d) * 2) as u8;
            bad.push(0);
            assert!(
                check_records(&header(1, 0, Compression::None), &bad, &LIMITS).is_err(),
                "{d}"
            );
        }
        // Empty payload.
        assert_eq!(
            check_records(&header(1, 0, Compression::None), &[], &LIMITS),
            Err(RecordsError::TooFewRecords {
                header: 1,
                found: 0
            })
        );
    }

    #[test]
    fn header_keys_must_be_utf8_even_when_split() {
        let mut ok = BytesMut::new();
        record::encode(&mut ok, 0, 0, None, Some(b"v"), &[("ké€😀", None)]);
        for piece in [1, 2, 3, 100] {
            let mut w = RecordWalker::new(1, 0);
            for c in ok.chunks(piece) {
                w.feed(c).unwrap();
            }
            assert!(w.finish().is_ok(), "split every {piece}");
        }
        for bad_key in [
            &b"\xff"[..],
            b"\xc3",
            b"\xe0\x80\x80",
            b"\xed\xa0\x80",
            b"a\xf4\x90\x80\x80",
        ] {
            let mut b = BytesMut::new();
            // Encode with a placeholder key of the same length, then swap it in.
            let placeholder = "x".repeat(bad_key.len());
            record::encode(&mut b, 0, 0, None, Some(b"v"), &[(&placeholder, None)]);
            let at = b.len() - 1 - bad_key.len();
            b[at..at + bad_key.len()].copy_from_slice(bad_key);
            assert!(
                matches!(
                    check_records(&header(1, 0, Compression::None), &b, &LIMITS),
                    Err(RecordsError::HeaderKeyUtf8 { .. })
                ),
                "{bad_key:?}"
            );
            assert!(std::str::from_utf8(bad_key).is_err());
        }
    }

    #[test]
    fn garbage_compressed_payloads_are_refused() {
        let garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for codec in ALL {
            if codec == Compression::None {
                continue;
            }
            let r = check_records(&header(10, 9, codec), &garbage, &LIMITS);
            assert!(r.is_err(), "{codec}: {r:?}");
            // Valid compression of garbage records: refused by the walk.
            let z = codec.compress(&garbage);
            let r = check_records(&header(10, 9, codec), &z, &LIMITS);
            assert!(r.is_err(), "{codec}: {r:?}");
        }
    }

    #[test]
    fn bombs_stop_at_the_limit_without_allocating_it() {
        // 64 MiB of one record's value compresses to little; the limit is 1 MiB.
        let mut b = BytesMut::new();
        let big = vec![0u8; 8 << 20];
        record::encode(&mut b, 0, 0, None, Some(&big), &[]);
        for codec in ALL {
            if codec == Compression::None {
                continue;
            }
            let z = codec.compress(&b);
            assert_eq!(
                check_records(&header(1, 0, codec), &z, &LIMITS),
                Err(RecordsError::TooLarge { limit: 1 << 20 }),
                "{codec}"
            );
        }
        // Raw snappy declares its size up front: refused before decoding.
        let raw = snap::raw::Encoder::new().compress_vec(&b).unwrap();
        assert_eq!(
            check_records(&header(1, 0, Compression::Snappy), &raw, &LIMITS),
            Err(RecordsError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn compressed_checks_can_be_turned_off() {
        let off = RecordLimits {
            check_compressed: false,
            ..LIMITS
        };
        assert_eq!(
            check_records(&header(1, 0, Compression::Zstd), b"garbage", &off),
            Ok(Checked::CompressedUnchecked)
        );
        // Uncompressed batches are always walked.
        assert!(check_records(&header(1, 0, Compression::None), b"garbage", &off).is_err());
    }

    #[test]
    fn limits_follow_the_topic() {
        assert_eq!(
            RecordLimits::for_topic(1 << 20, true).max_records_bytes,
            32 << 20
        );
        assert_eq!(
            RecordLimits::for_topic(64 << 20, true).max_records_bytes,
            DECOMPRESSED_CAP
        );
    }

    /// Fed whole, a records section takes the one-pass path for each whole
    /// record; fed a byte at a time, it never can. Both must give the same
    /// answer, error included, for any damage to any byte.
    mod whole_records_match_the_walk {
        use super::*;
        use proptest::prelude::*;

        fn walk(
            recs: &[u8],
            piece: usize,
            count: i32,
            last: i32,
            keys: bool,
        ) -> Result<Checked, RecordsError> {
            let mut w = RecordWalker::new(count, last);
            w.keys_required = keys;
            for c in recs.chunks(piece.max(1)) {
                w.feed(c)?;
            }
            w.finish()
        }

        proptest! {
            #[test]
            fn for_damaged_sections(
                n in 1i32..12,
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                cut in proptest::option::of(any::<prop::sample::Index>()),
                count_off in -1i32..=1,
                keys in any::<bool>(),
            ) {
                let mut recs = records(n, |i| i);
                for (at, b) in &edits {
                    let i = at.index(recs.len());
                    recs[i] = *b;
                }
                if let Some(c) = cut {
                    recs.truncate(c.index(recs.len() + 1));
                }
                let (count, last) = (n + count_off, n - 1);
                let whole = walk(&recs, recs.len(), count, last, keys);
                let bytewise = walk(&recs, 1, count, last, keys);
                prop_assert_eq!(&whole, &bytewise);
                if edits.is_empty() && cut.is_none() && count_off == 0 && !keys {
                    prop_assert!(whole.is_ok());
                }
            }
        }
    }
}
