//! The reader: batches out of the cache or the segment files, checked.
//!
//! Owns how a read is served, not what is visible: the caller passes the
//! visible end (`max_offset`, the partition's high watermark) and no batch
//! at or past it is returned. Recent batches come from the cache; older
//! ones from a DMA read located through the sparse offset index, with every
//! header, CRC and offset checked again on the way out. Corruption found
//! there takes the partition offline.
//!
//! Runs on the partition's shard; state is borrowed to locate the data,
//! then released for the disk read.

use super::super::file::SegmentFile;
use super::super::io_stats;
use super::super::segment;
use super::super::{Corruption, ReadError, StorageError};
use super::{io_err, Disk, Log, ReadOutcome};
use crate::format::frame::{self, FrameIter};
use crate::format::HEADER_LEN;
use bytes::Bytes;
use std::path::PathBuf;
use std::rc::Rc;
use tracing::error;

/// Smallest disk read: a frame header and its neighbours.
const READ_MIN_BYTES: usize = 64 << 10;

/// Where a read below the cache goes, taken from the state before awaiting.
struct DiskRead<F> {
    file: Rc<F>,
    path: PathBuf,
    /// Position of the index entry at or before the requested offset.
    pos: u64,
    /// Offset of the batch at `pos` (checked when it is read).
    first_offset: u64,
    /// Bytes of the segment that may be read: later ones may not be written yet.
    readable_len: u64,
    /// Offset the readable bytes end at.
    end_offset: u64,
    /// Where the first read ends: at the last indexed batch start within
    /// `max_bytes`, when there is one, so the read holds whole batches.
    /// Why: a read that ended inside a batch threw that batch's head away
    /// and the next fetch read it again; a consumer catching up through
    /// 4 MiB reads of 1 MiB batches read 1.33× the data from disk, beside
    /// the producers' writes to the same disk.
    read_end: u64,
    /// Batches from here on are served from the cache, or are not visible.
    stop_offset: u64,
}

/// What the state says about a read.
enum Located<F> {
    Served(ReadOutcome),
    Disk(DiskRead<F>),
}

impl<D: Disk> Log<D> {
    /// Read whole frames starting with the one that contains `offset`, up to
    /// about `max_bytes` (at least one frame when any is available), none at
    /// or past `max_offset` (the visible end, which the partition decides),
    /// from the cache or the segment files. Corruption found on disk (a
    /// header or CRC check, or offsets that are not contiguous) takes the
    /// partition offline: this read and every later append and read get
    /// the same [`StorageError::Corrupt`], naming the segment and byte,
    /// until the broker is restarted (the files are not touched).
    pub async fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<ReadOutcome, ReadError> {
        self.read_above(Floor::LogStart, offset, max_bytes, max_offset)
            .await
    }

    /// Read as [`Self::read`] does, but from the first stored segment on,
    /// below the log start too: a replicated partition's Raft log holds
    /// the entries DeleteRecords hid from readers until its compaction
    /// deletes their segments, and followers may still need them.
    pub async fn read_stored(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<ReadOutcome, ReadError> {
        self.read_above(Floor::Stored, offset, max_bytes, max_offset)
            .await
    }

    /// The first offset [`Self::read_stored`] serves: the first stored
    /// segment's base.
    pub fn first_stored_offset(&self) -> u64 {
        self.st.borrow().segments.log_start()
    }

    async fn read_above(
        &self,
        floor: Floor,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<ReadOutcome, ReadError> {
        if let Some(e) = self.offline_cause() {
            return Err(e.into());
        }
        let r = self
            .read_checked(floor, offset, max_bytes, max_offset)
            .await;
        if let Err(ReadError::Unavailable(e @ StorageError::Corrupt { .. })) = &r {
            self.take_offline(e.clone());
        }
        r
    }

    /// Why the partition refuses everything, if it found corruption.
    pub fn offline_cause(&self) -> Option<StorageError> {
        self.st.borrow().offline.clone()
    }

    /// Refuse all further appends and reads with `cause`, loudly.
    fn take_offline(&self, cause: StorageError) {
        let mut st = self.st.borrow_mut();
        if st.offline.is_none() {
            if let StorageError::Corrupt {
                segment, position, ..
            } = &cause
            {
                error!(segment = %segment.display(), position, "corruption found reading durable data; partition offline: {cause}");
            }
            st.offline = Some(cause);
        }
    }

    async fn read_checked(
        &self,
        floor: Floor,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<ReadOutcome, ReadError> {
        let mut out = match self.locate(floor, offset, max_bytes, max_offset)? {
            Located::Served(out) => return Ok(out),
            Located::Disk(at) => self.read_disk(&at, offset, max_bytes).await?,
        };
        out.log_start_offset = self.st.borrow().offsets.log_start();
        Ok(out)
    }

    /// Serve the read from the state if it can be (out of range, nothing
    /// visible, cached); otherwise say where on disk it goes.
    fn locate(
        &self,
        floor: Floor,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Located<D::File>, ReadError> {
        let st = self.st.borrow();
        let log_start = st.offsets.log_start();
        let next = st.offsets.next();
        assert!(max_offset <= next, "the visible end is within the log");
        let mut out = ReadOutcome {
            log_start_offset: log_start,
            ..Default::default()
        };
        let lowest = match floor {
            Floor::LogStart => log_start,
            Floor::Stored => st.segments.log_start(),
        };
        if offset < lowest || offset > next {
            return Err(ReadError::OffsetOutOfRange {
                requested: offset,
                log_start,
                high_watermark: max_offset,
            });
        }
        if offset >= max_offset {
            return Ok(Located::Served(out));
        }
        let cache_from = st.cache.first_offset().unwrap_or(next);
        if offset >= cache_from {
            out.bytes = st
                .cache
                .read(offset, max_bytes, max_offset, &mut out.frames);
            io_stats::served_from_cache(out.bytes);
            return Ok(Located::Served(out));
        }
        let seg = st.segments.containing(offset);
        let file = seg
            .file
            .clone()
            .expect("data below the cache is written, so its file is open");
        let (rel, pos) = seg.index.entry_for((offset - seg.base_offset) as u32);
        // Bytes from the first cached batch on may not be written yet.
        let (readable_len, end_offset) = match st.cache.first_position() {
            Some((b, p)) if b == seg.base_offset => (p, cache_from),
            _ => (seg.len, seg.next_offset),
        };
        // An answer holds whole batches up to `max_bytes` (the first one
        // whatever its size), so a read to the last batch start within
        // `max_bytes` fetches just what is served. When the first batch
        // alone is larger, the read ends where the next batch starts (or
        // at the readable end, when none is indexed after it): it holds
        // that batch whole. Why: a read of `max_bytes` (at least
        // READ_MIN_BYTES) cut it, and reading on re-read its head; and a
        // fetch that shares its budget among many partitions asks each
        // for less than a batch (1,000 partitions: 1.22x the data read
        // from disk). Otherwise (the rest of the readable data is
        // shorter) read at least READ_MIN_BYTES; a batch cut short is
        // read on.
        let wanted_end = pos.saturating_add(max_bytes as u64);
        let read_end = match seg.index.batch_start_within(pos, wanted_end) {
            Some(p) if wanted_end < readable_len => p,
            None if wanted_end < readable_len => seg
                .index
                .batch_start_after(pos)
                .map_or(readable_len, |p| p.min(readable_len)),
            _ => pos + (max_bytes.max(READ_MIN_BYTES) as u64).min(readable_len - pos),
        };
        Ok(Located::Disk(DiskRead {
            file,
            path: segment::log_path(&self.dir, seg.base_offset),
            pos,
            first_offset: seg.base_offset + rel as u64,
            readable_len,
            end_offset,
            read_end,
            stop_offset: cache_from.min(max_offset),
        }))
    }

    /// Read from a segment file, every byte checked on the way out.
    async fn read_disk(
        &self,
        at: &DiskRead<D::File>,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadOutcome, StorageError> {
        let mut out = ReadOutcome::default();
        let mut cursor = Cursor {
            at: at.pos,
            expected: at.first_offset,
        };
        let want = (at.read_end - at.pos) as usize;
        let mut data = self.read_bytes(at, at.pos, want).await?;
        loop {
            let (consumed, progressed) =
                self.take_frames(at, &data, &mut cursor, offset, max_bytes, &mut out)?;
            if !out.frames.is_empty() || cursor.at + consumed as u64 >= at.readable_len {
                break;
            }
            // Either the first frame did not fit in the read, or we skipped
            // frames before `offset`: read on from where parsing stopped.
            cursor.at += consumed as u64;
            let need = self.bytes_needed(at, &data[consumed..], cursor.at)?;
            let want = (need.max(max_bytes) as u64).min(at.readable_len - cursor.at) as usize;
            data = self.read_bytes(at, cursor.at, want).await?;
            if data.is_empty() && !progressed {
                break;
            }
        }
        io_stats::served_from_disk(out.bytes);
        Ok(out)
    }

    async fn read_bytes(
        &self,
        at: &DiskRead<D::File>,
        pos: u64,
        len: usize,
    ) -> Result<Bytes, StorageError> {
        let data = self
            .timed("read", &at.path, len, at.file.read_at(pos, len))
            .await
            .map_err(io_err("read", &at.path))?;
        io_stats::disk_read(data.len());
        Ok(data)
    }

    fn corrupt(&self, at: &DiskRead<D::File>, position: u64, detail: Corruption) -> StorageError {
        StorageError::Corrupt {
            dir: self.dir.clone(),
            segment: at.path.clone(),
            position,
            detail,
        }
    }

    /// Check the frames in `data` (read at `cursor.at`) and take those at
    /// or after `offset` into `out`. Returns the bytes consumed and whether
    /// any frame was taken.
    ///
    /// Disk data is checked again on the way out: bit rot in a closed
    /// segment must not reach consumers as valid data. The header check
    /// (in FrameIter's parse) covers every stamped field; contiguity
    /// catches what a legacy SLB1 header (no header CRC) cannot prove: the
    /// batch at an index entry starts at that entry's offset, and each
    /// batch starts right after the previous one ends.
    fn take_frames(
        &self,
        at: &DiskRead<D::File>,
        data: &Bytes,
        cursor: &mut Cursor,
        offset: u64,
        max_bytes: usize,
        out: &mut ReadOutcome,
    ) -> Result<(usize, bool), StorageError> {
        let mut consumed = 0usize;
        let mut progressed = false;
        for item in FrameIter::new(data.clone()) {
            let position = cursor.at + consumed as u64;
            let (h, f) = item.map_err(|e| self.corrupt(at, position, Corruption::Frame(e)))?;
            if h.base_offset != cursor.expected {
                return Err(self.corrupt(
                    at,
                    position,
                    Corruption::OffsetGap {
                        found: h.base_offset,
                        expected: cursor.expected,
                    },
                ));
            }
            if h.base_offset >= at.stop_offset {
                break;
            }
            frame::verify_crc(&h, &f)
                .map_err(|e| self.corrupt(at, position, Corruption::Frame(e)))?;
            cursor.expected = h.last_offset() + 1;
            consumed += f.len();
            let end = cursor.at + consumed as u64;
            if end == at.readable_len && cursor.expected != at.end_offset {
                return Err(self.corrupt(
                    at,
                    end,
                    Corruption::ReadableEnd {
                        found: cursor.expected,
                        expected: at.end_offset,
                    },
                ));
            }
            if h.last_offset() < offset {
                continue;
            }
            if !out.frames.is_empty() && out.bytes + f.len() > max_bytes {
                break;
            }
            out.bytes += f.len();
            out.frames.push(f);
            progressed = true;
            if out.bytes >= max_bytes {
                break;
            }
        }
        Ok((consumed, progressed))
    }

    /// How many bytes the next read needs: the whole next frame when its
    /// header is at hand. Frames end exactly at the readable end: one that
    /// claims to run past it is damaged (and re-reading would never
    /// complete it).
    fn bytes_needed(
        &self,
        at: &DiskRead<D::File>,
        rest: &[u8],
        pos: u64,
    ) -> Result<usize, StorageError> {
        if rest.len() < HEADER_LEN {
            return Ok(READ_MIN_BYTES);
        }
        let need = frame::parse_header(rest)
            .map(|h| h.frame_len())
            .unwrap_or(READ_MIN_BYTES);
        if pos + need as u64 > at.readable_len {
            return Err(self.corrupt(
                at,
                pos,
                Corruption::PastReadableEnd {
                    frame_len: need,
                    readable_len: at.readable_len,
                },
            ));
        }
        Ok(need)
    }

    /// First offset whose batch has max_timestamp >= `ts` among the offsets
    /// below `max_offset`, or None (the caller answers with its visible end).
    pub async fn offset_for_timestamp(
        &self,
        ts: i64,
        max_offset: u64,
    ) -> Result<Option<u64>, ReadError> {
        let candidate = {
            let st = self.st.borrow();
            let Some(seg) = st.segments.first_with_timestamp_at_least(ts) else {
                return Ok(None);
            };
            // Never below the log start: DeleteRecords may have cut into
            // the first segment.
            (seg.base_offset + seg.index.rel_offset_for_time(ts) as u64).max(st.offsets.log_start())
        };
        let mut offset = candidate;
        loop {
            let r = self.read(offset, 1 << 20, max_offset).await?;
            if r.frames.is_empty() {
                return Ok(None);
            }
            for f in &r.frames {
                let h = frame::parse_header(f).expect("stored frames are valid");
                if h.max_timestamp >= ts && h.last_offset() >= offset {
                    return Ok(Some(h.base_offset));
                }
                offset = h.last_offset() + 1;
            }
        }
    }
}

/// The lowest offset a read may start at.
#[derive(Clone, Copy)]
enum Floor {
    /// What readers see: the log start (DeleteRecords' floor included).
    LogStart,
    /// What is stored: the first segment's base.
    Stored,
}

/// Where a disk read has got to.
struct Cursor {
    /// File position of `data[0]`.
    at: u64,
    /// Base offset the next batch must have.
    expected: u64,
}
