//! Sparse offset and time indexes of one segment.
//!
//! Lifecycle: built in memory as batches are appended (one entry every
//! `index_interval_bytes`), written to `<base>.index` / `<base>.timeindex`
//! when the segment is closed (roll or clean shutdown), loaded on start.
//! A missing or broken file is rebuilt by scanning the segment.
//!
//! File layout (little-endian), see docs/segment_format.md:
//! ```text
//! .index      N x { rel_offset u32, position u32 }         8 bytes each
//! .timeindex  N x { timestamp i64, rel_offset u32 }        12 bytes each
//! trailer     { crc32c u32 over the entries, magic u32 }   8 bytes
//! ```
//! Entries are strictly increasing in every field.
//!
//! Owned by its segment, on the partition's shard.

use std::fmt;

pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;
const TRAILER_LEN: usize = 8;
const OFFSET_INDEX_MAGIC: u32 = u32::from_le_bytes(*b"SLXO");
const TIME_INDEX_MAGIC: u32 = u32::from_le_bytes(*b"SLXT");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index length {0} is not entries plus an 8-byte trailer")]
    BadLength(usize),
    #[error("index trailer magic or CRC does not match")]
    BadTrailer,
    #[error("index entries are not strictly increasing at entry {0}")]
    NotMonotonic(usize),
    #[error(
        "index entry {entry} points at position {position}, past the segment's {segment_len} bytes"
    )]
    PastEnd {
        entry: usize,
        position: u64,
        segment_len: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl fmt::Debug for OffsetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}@{}", self.rel_offset, self.position)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

/// Both indexes of a segment, and the bookkeeping that decides when to add entries.
#[derive(Debug, Default, Clone)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
}

impl SegmentIndex {
    /// Account for a batch appended at `position` (relative offset `rel`).
    pub fn on_append(
        &mut self,
        rel: u32,
        position: u64,
        max_timestamp: i64,
        frame_len: usize,
        interval: u32,
    ) {
        assert!(position <= u32::MAX as u64, "segment positions fit in u32");
        let first = self.offsets.is_empty();
        if first || self.bytes_since_offset_entry >= interval as u64 {
            if let Some(last) = self.offsets.last() {
                assert!(rel > last.rel_offset && position as u32 > last.position);
            }
            self.offsets.push(OffsetEntry {
                rel_offset: rel,
                position: position as u32,
            });
            self.bytes_since_offset_entry = 0;
        }
        self.bytes_since_offset_entry += frame_len as u64;
        let newer = self
            .times
            .last()
            .is_none_or(|t| max_timestamp > t.timestamp);
        if newer && (self.times.is_empty() || self.bytes_since_time_entry >= interval as u64) {
            self.times.push(TimeEntry {
                timestamp: max_timestamp,
                rel_offset: rel,
            });
            self.bytes_since_time_entry = 0;
        }
        self.bytes_since_time_entry += frame_len as u64;
    }

    /// Position of the last indexed batch starting at or before `rel`.
    pub fn position_for(&self, rel: u32) -> u64 {
        let i = self.offsets.partition_point(|e| e.rel_offset <= rel);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position as u64
        }
    }

    /// The last indexed batch starting at or before `rel`, as
    /// `(rel_offset, position)`: `(0, 0)` (the first batch) when none is.
    /// Reads check that the batch found there really starts at `rel_offset`.
    pub fn entry_for(&self, rel: u32) -> (u32, u64) {
        let i = self.offsets.partition_point(|e| e.rel_offset <= rel);
        if i == 0 {
            (0, 0)
        } else {
            let e = &self.offsets[i - 1];
            (e.rel_offset, e.position as u64)
        }
    }

    /// Position of the last indexed batch that starts after `from` and at
    /// or before `limit`: where a read starting at the batch at `from` may
    /// end on a batch boundary, so that it holds whole batches only.
    pub fn batch_start_within(&self, from: u64, limit: u64) -> Option<u64> {
        let i = self.offsets.partition_point(|e| e.position as u64 <= limit);
        let p = self.offsets[..i].last()?.position as u64;
        (p > from).then_some(p)
    }

    /// Position of the first indexed batch that starts after `from`: where
    /// a read starting at the batch at `from` may end so that it holds that
    /// batch whole (with any batches too small to be indexed after it).
    pub fn batch_start_after(&self, from: u64) -> Option<u64> {
        let i = self.offsets.partition_point(|e| e.position as u64 <= from);
        self.offsets.get(i).map(|e| e.position as u64)
    }

    /// Relative offset of the last time entry whose timestamp is below `ts`:
    /// a safe place to start scanning for the first batch with max_timestamp >= ts.
    pub fn rel_offset_for_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].rel_offset
        }
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN + TRAILER_LEN);
        for e in &self.offsets {
            out.extend_from_slice(&e.rel_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
        }
        seal(out, OFFSET_INDEX_MAGIC)
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN + TRAILER_LEN);
        for e in &self.times {
            out.extend_from_slice(&e.timestamp.to_le_bytes());
            out.extend_from_slice(&e.rel_offset.to_le_bytes());
        }
        seal(out, TIME_INDEX_MAGIC)
    }

    /// Load both files, checking them against the segment's length.
    pub fn decode(offsets: &[u8], times: &[u8], segment_len: u64) -> Result<Self, IndexError> {
        let ob = unseal(offsets, OFFSET_ENTRY_LEN, OFFSET_INDEX_MAGIC)?;
        let tb = unseal(times, TIME_ENTRY_LEN, TIME_INDEX_MAGIC)?;
        let mut idx = SegmentIndex::default();
        for (i, c) in ob.chunks_exact(OFFSET_ENTRY_LEN).enumerate() {
            let e = OffsetEntry {
                rel_offset: u32::from_le_bytes(c[0..4].try_into().unwrap()),
                position: u32::from_le_bytes(c[4..8].try_into().unwrap()),
            };
            if let Some(p) = idx.offsets.last() {
                if e.rel_offset <= p.rel_offset || e.position <= p.position {
                    return Err(IndexError::NotMonotonic(i));
                }
            }
            if e.position as u64 >= segment_len.max(1) {
                return Err(IndexError::PastEnd {
                    entry: i,
                    position: e.position as u64,
                    segment_len,
                });
            }
            idx.offsets.push(e);
        }
        for (i, c) in tb.chunks_exact(TIME_ENTRY_LEN).enumerate() {
            let e = TimeEntry {
                timestamp: i64::from_le_bytes(c[0..8].try_into().unwrap()),
                rel_offset: u32::from_le_bytes(c[8..12].try_into().unwrap()),
            };
            if let Some(p) = idx.times.last() {
                if e.timestamp <= p.timestamp || e.rel_offset < p.rel_offset {
                    return Err(IndexError::NotMonotonic(i));
                }
            }
            idx.times.push(e);
        }
        Ok(idx)
    }
}

fn seal(mut entries: Vec<u8>, magic: u32) -> Vec<u8> {
    let crc = crate::format::crc::crc32c(&entries);
    entries.extend_from_slice(&crc.to_le_bytes());
    entries.extend_from_slice(&magic.to_le_bytes());
    entries
}

fn unseal(bytes: &[u8], entry_len: usize, magic: u32) -> Result<&[u8], IndexError> {
    if bytes.len() < TRAILER_LEN || !(bytes.len() - TRAILER_LEN).is_multiple_of(entry_len) {
        return Err(IndexError::BadLength(bytes.len()));
    }
    let (entries, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let crc = u32::from_le_bytes(trailer[0..4].try_into().unwrap());
    let m = u32::from_le_bytes(trailer[4..8].try_into().unwrap());
    if m != magic || crc != crate::format::crc::crc32c(entries) {
        return Err(IndexError::BadTrailer);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_and_lookup() {
        let mut idx = SegmentIndex::default();
        let mut pos = 0u64;
        for rel in 0..100u32 {
            idx.on_append(rel, pos, 1000 + rel as i64, 1000, 4096);
            pos += 1000;
        }
        // One entry every ~4 KiB: batch 0, 5, 10, ...
        assert_eq!(
            idx.offsets[1],
            OffsetEntry {
                rel_offset: 5,
                position: 5000
            }
        );
        assert_eq!(idx.position_for(7), 5000);
        assert_eq!(idx.position_for(0), 0);
        assert_eq!(idx.rel_offset_for_time(1007), 5);
        let back = SegmentIndex::decode(&idx.encode_offsets(), &idx.encode_times(), pos).unwrap();
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        let mut broken = idx.encode_offsets();
        broken[3] ^= 1;
        assert_eq!(
            SegmentIndex::decode(&broken, &idx.encode_times(), pos).unwrap_err(),
            IndexError::BadTrailer
        );
        assert!(matches!(
            SegmentIndex::decode(&idx.encode_offsets()[1..], &idx.encode_times(), pos),
            Err(IndexError::BadLength(_))
        ));
    }
}
