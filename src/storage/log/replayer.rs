//! The replayer: opening a partition directory and recovering its log.
//!
//! Owns the decisions made at open: which segments exist, what the
//! checkpoint vouches for, which segments are scanned (the last always;
//! a closed one when its index is missing or broken), where a torn tail is
//! cut, and how producer state is rebuilt (the checkpoint's table, then
//! every batch after it). Each segment goes through the pure decision table
//! of [`super::super::recovery`].
//!
//! Lifecycle: runs once per [`Log::open`] and again after a suffix
//! truncation (which recovers from what it left on disk). It runs on the
//! partition's shard before the flusher exists (or while it is idle), so
//! it owns the files while it runs.

use super::super::appender::Appender;
use super::super::cache::{BatchCache, CacheBudget};
use super::super::checkpoint::{self, Checkpoint};
use super::super::file::{read_small_file, Disk, SegmentFile};
use super::super::index::SegmentIndex;
use super::super::offsets::LogOffsets;
use super::super::producer_state::ProducerTable;
use super::super::recovery::{classify, SegmentScan, Step, TailDamage};
use super::super::segment::{self, Segment};
use super::super::segment_set::SegmentSet;
use super::super::write_budget::{Unwritten, WriteBudget};
use super::super::{Corruption, StorageError};
use super::{index_files, io_err, Buf, Health, Log, LogConfig, LogState, LOG_START_FILE};
use crate::clock::{Clock, SystemClock};
use crate::event::LocalEvent;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tracing::{error, info, warn};

/// What recovery rebuilt from disk.
pub(super) struct Replayed<D: Disk> {
    pub segments: SegmentSet<D::File>,
    pub appender: Appender<Buf<D>>,
    pub producers: ProducerTable,
    /// The log start: the first segment's base, or the persisted
    /// DeleteRecords floor when that is higher (capped at the log end).
    pub log_start: u64,
}

impl<D: Disk> Log<D> {
    /// Open (recovering) or create the log in `dir`, on the system clock.
    pub async fn open(
        disk: D,
        dir: PathBuf,
        cfg: LogConfig,
        budget: Rc<CacheBudget>,
        write_budget: Rc<WriteBudget>,
    ) -> Result<Rc<Self>, StorageError> {
        Self::open_with_clock(disk, dir, cfg, budget, write_budget, SystemClock::shared()).await
    }

    /// Open (recovering) or create the log in `dir`; the flusher measures
    /// its intervals on `clock`.
    pub async fn open_with_clock(
        disk: D,
        dir: PathBuf,
        cfg: LogConfig,
        budget: Rc<CacheBudget>,
        write_budget: Rc<WriteBudget>,
        clock: Rc<dyn Clock>,
    ) -> Result<Rc<Self>, StorageError> {
        let r = replay(&disk, &dir, &cfg).await?;
        let next = r.segments.active().next_offset;
        info!(
            dir = %dir.display(),
            segments = r.segments.len(),
            log_start = r.log_start,
            next_offset = next,
            "partition log open"
        );
        let st = LogState {
            offsets: LogOffsets::recovered(r.log_start, next),
            segments: r.segments,
            appender: r.appender,
            pending: VecDeque::new(),
            cache: BatchCache::new(budget),
            unwritten: Unwritten::new(write_budget),
            producers: r.producers,
            sync_wanted_offset: 0,
            unsynced_bytes: 0,
            dirty_since: None,
            last_sync_at: None,
            reader_waiting: false,
            health: Health::Ok,
            offline: None,
            closing: false,
            closed: false,
            last_checkpoint: None,
            flusher_busy: false,
            truncating: false,
        };
        st.assert_invariants();
        Ok(Rc::new(Log {
            disk,
            dir,
            topic: RefCell::new(cfg.topic.clone()),
            cfg,
            clock,
            st: RefCell::new(st),
            data_event: Rc::new(LocalEvent::new()),
            durable_event: Rc::new(LocalEvent::new()),
            flusher_event: Rc::new(LocalEvent::new()),
        }))
    }
}

/// Recover the log in `dir` from its files: segments, producer state, and
/// an appender positioned at the exact end.
pub(super) async fn replay<D: Disk>(
    disk: &D,
    dir: &Path,
    cfg: &LogConfig,
) -> Result<Replayed<D>, StorageError> {
    disk.create_dir_all(dir)
        .map_err(io_err("create_dir", dir))?;
    let bases = segment_bases(disk, dir)?;
    let cp = read_checkpoint(disk, dir).await?;
    let mut producers = ProducerTable::default();
    let replay_from = producers_from_checkpoint(cp.as_ref(), &bases, &mut producers);
    let mut segments = Vec::new();
    let mut tail = Vec::new();
    let floor = read_log_start(disk, dir).await?;
    if bases.is_empty() {
        // A new log, or one whose segments retention deleted entirely: it
        // starts where the checkpoint says the last one ended, or at the
        // log start floor when that is higher (a log restarted at an
        // offset: `Log::restart_at`).
        segments.push(Segment::new(
            cp.as_ref().map(|c| c.next_offset).unwrap_or(0).max(floor),
        ));
    }
    for (i, &base) in bases.iter().enumerate() {
        let at = SegmentAt {
            dir,
            base,
            next_base: bases.get(i + 1).copied(),
            replay_from,
            cp: cp.as_ref(),
        };
        let (seg, seg_tail) = recover_segment(disk, cfg, &at, &mut producers).await?;
        tail = seg_tail;
        segments.push(seg);
    }
    let segments = SegmentSet::new(segments);
    // A recovery cut of an unsynced tail can leave the floor beyond the
    // end: the log then starts (empty) at its end.
    let log_start = segments
        .log_start()
        .max(floor.min(segments.active().next_offset));
    let active = segments.active();
    let appender = Appender::resume(
        active.base_offset,
        active.len,
        &tail,
        cfg.write_chunk_bytes,
        disk.alignment(),
    );
    Ok(Replayed {
        segments,
        appender,
        producers,
        log_start,
    })
}

/// The DeleteRecords floor persisted in [`LOG_START_FILE`], or 0 (no file,
/// or an unreadable one: then deleted records below it may reappear).
async fn read_log_start<D: Disk>(disk: &D, dir: &Path) -> Result<u64, StorageError> {
    let path = dir.join(LOG_START_FILE);
    if !disk.exists(&path) {
        return Ok(0);
    }
    let b = read_small_file(disk, &path)
        .await
        .map_err(io_err("read log start", &path))?;
    match std::str::from_utf8(&b)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(o) => Ok(o),
        None => {
            warn!(file = %path.display(), "ignoring an unreadable log start (deleted records below it may reappear)");
            Ok(0)
        }
    }
}

/// Base offsets of the segment files in `dir`, sorted.
fn segment_bases<D: Disk>(disk: &D, dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut bases: Vec<u64> = disk
        .list(dir)
        .map_err(io_err("list", dir))?
        .iter()
        .filter_map(|n| segment::parse_log_name(n))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// The checkpoint, if there is a readable one (an unreadable one is
/// ignored: recovery then scans from the start, which is only slower).
async fn read_checkpoint<D: Disk>(
    disk: &D,
    dir: &Path,
) -> Result<Option<Checkpoint>, StorageError> {
    let path = dir.join(checkpoint::FILE_NAME);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let bytes = read_small_file(disk, &path)
        .await
        .map_err(io_err("read checkpoint", &path))?;
    match Checkpoint::decode(&bytes) {
        Ok(cp) => Ok(Some(cp)),
        Err(e) => {
            warn!(dir = %dir.display(), "ignoring unreadable checkpoint: {e}");
            Ok(None)
        }
    }
}

/// Restore the checkpoint's producer table when the log still reaches back
/// to it; returns the offset from which batches must be replayed into it.
fn producers_from_checkpoint(
    cp: Option<&Checkpoint>,
    bases: &[u64],
    producers: &mut ProducerTable,
) -> u64 {
    match cp {
        Some(c) if bases.first().is_some_and(|b| *b <= c.next_offset) => {
            for (pid, e) in &c.producers {
                producers.restore(*pid, e.clone());
            }
            c.next_offset
        }
        _ => 0,
    }
}

/// Where one segment sits among the others, and what the checkpoint says.
struct SegmentAt<'a> {
    dir: &'a Path,
    base: u64,
    /// Base of the following segment; None for the last (active) one.
    next_base: Option<u64>,
    /// Batches from this offset on are replayed into producer state.
    replay_from: u64,
    cp: Option<&'a Checkpoint>,
}

impl SegmentAt<'_> {
    fn is_last(&self) -> bool {
        self.next_base.is_none()
    }

    fn path(&self) -> PathBuf {
        segment::log_path(self.dir, self.base)
    }
}

/// Recover one segment; returns it with its file open, and (for the last
/// segment) the bytes of its partial last block for the appender.
async fn recover_segment<D: Disk>(
    disk: &D,
    cfg: &LogConfig,
    at: &SegmentAt<'_>,
    producers: &mut ProducerTable,
) -> Result<(Segment<D::File>, Vec<u8>), StorageError> {
    let path = at.path();
    let file = if at.is_last() {
        disk.open_rw(&path).await
    } else {
        disk.open_ro(&path).await
    }
    .map_err(io_err("open segment", &path))?;
    let size = file.size().await.map_err(io_err("stat segment", &path))?;
    // The last segment is always scanned (every header and CRC checked),
    // even after a clean shutdown: corruption there is found now, not by a
    // consumer. Closed segments are trusted through their index and checked
    // again on every disk read.
    let loaded = if at.is_last() {
        None
    } else {
        index_files::load(disk, at.dir, at.base, size).await
    };
    let mut seg = match loaded {
        Some(index) => recover_indexed(disk, cfg, at, &file, size, index, producers).await?,
        None => recover_by_scan(disk, cfg, at, &file, size, producers).await?,
    };
    let tail = if at.is_last() {
        read_tail_block(disk, &file, &path, seg.len).await?
    } else {
        Vec::new()
    };
    seg.sealed = !at.is_last();
    seg.reserved = seg.len;
    seg.file = Some(Rc::new(file));
    Ok((seg, tail))
}

/// A closed segment with a good index: trusted without a scan, except to
/// replay producers after the checkpoint.
async fn recover_indexed<D: Disk>(
    disk: &D,
    cfg: &LogConfig,
    at: &SegmentAt<'_>,
    file: &D::File,
    size: u64,
    index: SegmentIndex,
    producers: &mut ProducerTable,
) -> Result<Segment<D::File>, StorageError> {
    let mut seg = Segment::new(at.base);
    seg.len = size;
    seg.next_offset = match at.next_base {
        Some(nb) => nb,
        None => at.cp.map(|c| c.next_offset).unwrap_or(at.base),
    };
    seg.max_timestamp = index.times.last().map(|t| t.timestamp).unwrap_or(-1);
    seg.index = index;
    let fully_before_cp = at.next_base.is_some_and(|nb| nb <= at.replay_from);
    if !fully_before_cp {
        let scan = scan_segment(disk, at.dir, file, at.base, size, size, cfg).await?;
        replay_producers(&scan, at.replay_from, producers);
    }
    Ok(seg)
}

/// The last segment, or a closed one without a usable index: scan every
/// frame through the decision table, cut a torn tail, rebuild the index.
async fn recover_by_scan<D: Disk>(
    disk: &D,
    cfg: &LogConfig,
    at: &SegmentAt<'_>,
    file: &D::File,
    size: u64,
    producers: &mut ProducerTable,
) -> Result<Segment<D::File>, StorageError> {
    let trusted = trusted_length(at, size);
    let scan = scan_segment(disk, at.dir, file, at.base, size, trusted, cfg).await?;
    if scan.valid_len < size {
        assert!(at.is_last(), "a closed segment never gets cut");
        cut_torn_tail(file, &at.path(), size, &scan).await?;
    }
    if let Some(nb) = at.next_base {
        if scan.next_offset != nb {
            return Err(StorageError::Corrupt {
                dir: at.dir.to_path_buf(),
                segment: at.path(),
                position: scan.valid_len,
                detail: Corruption::SegmentGap {
                    ends: scan.next_offset,
                    next_base: nb,
                },
            });
        }
    }
    replay_producers(&scan, at.replay_from, producers);
    let mut seg = Segment::new(at.base);
    seg.len = scan.valid_len;
    seg.next_offset = scan.next_offset;
    seg.max_timestamp = scan.max_timestamp;
    seg.index = scan.index;
    if !at.is_last() {
        // Rebuilt: write it back so the next start is fast.
        index_files::write(disk, at.dir, seg.base_offset, &seg.index).await?;
        info!(segment = %at.path().display(), "rebuilt missing or broken index");
    }
    Ok(seg)
}

/// How much of the segment the checkpoint vouches for: bad bytes below it
/// are corruption, above it a torn tail.
fn trusted_length(at: &SegmentAt<'_>, size: u64) -> u64 {
    if !at.is_last() {
        return size;
    }
    match at.cp {
        Some(c) if c.segment_base == at.base => c.position,
        Some(c) if c.segment_base > at.base => size,
        _ => 0,
    }
}

/// Cut what the scan did not accept, durably, and say why.
async fn cut_torn_tail<F: SegmentFile>(
    file: &F,
    path: &Path,
    size: u64,
    scan: &SegmentScan,
) -> Result<(), StorageError> {
    let cut = size - scan.valid_len;
    if scan.end == Some(TailDamage::ZeroFilled) {
        // Zeros after the last batch: the padding of the last direct-I/O
        // block, preallocated space, or a block that was never written (so
        // never acknowledged).
        info!(segment = %path.display(), "trimmed {cut} bytes of zero-filled space after the last batch");
    } else {
        warn!(
            segment = %path.display(),
            "recovery cut a torn tail of {cut} bytes at byte {} ({}; offsets from {} on were never acknowledged as durable)",
            scan.valid_len,
            scan.end.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            scan.next_offset
        );
    }
    file.truncate(scan.valid_len)
        .await
        .map_err(io_err("truncate torn tail", path))?;
    file.sync().await.map_err(io_err("sync", path))
}

fn replay_producers(scan: &SegmentScan, from: u64, producers: &mut ProducerTable) {
    for h in scan.headers.iter().filter(|h| h.base_offset >= from) {
        producers.record(h);
    }
}

/// The bytes of the last segment's partial last block, which the appender
/// rewrites (padded) with the next batches.
async fn read_tail_block<D: Disk>(
    disk: &D,
    file: &D::File,
    path: &Path,
    len: u64,
) -> Result<Vec<u8>, StorageError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let from = len - len % disk.alignment() as u64;
    let tail = file
        .read_at(from, (len - from) as usize)
        .await
        .map_err(io_err("read tail block", path))?
        .to_vec();
    assert_eq!(tail.len() as u64, len - from);
    Ok(tail)
}

/// Scan a segment file from the start through the recovery decision table.
pub(super) async fn scan_segment<F: SegmentFile>(
    _disk: &impl Disk,
    dir: &Path,
    file: &F,
    base: u64,
    size: u64,
    trusted: u64,
    cfg: &LogConfig,
) -> Result<SegmentScan, StorageError> {
    const WINDOW: usize = 1 << 20;
    let path = segment::log_path(dir, base);
    let mut scan = SegmentScan::starting_at(base, 0, base, SegmentIndex::default());
    let mut window = Bytes::new();
    let mut window_pos = 0u64;
    loop {
        let pos = scan.valid_len;
        let off = (pos - window_pos) as usize;
        let eof = window_pos + window.len() as u64 >= size;
        let view = if off <= window.len() {
            &window[off..]
        } else {
            &[][..]
        };
        match classify(view, eof, pos, scan.next_offset, trusted) {
            Step::Frame(h) => scan.accept(base, &h, cfg.topic.index_interval_bytes),
            Step::End => return Ok(scan),
            Step::Torn(damage) => {
                scan.end = Some(damage);
                return Ok(scan);
            }
            Step::Corrupt(damage) => {
                error!(segment = %path.display(), position = pos, "corruption in durable data: {damage}");
                return Err(StorageError::Corrupt {
                    dir: dir.to_path_buf(),
                    segment: path,
                    position: pos,
                    detail: Corruption::Recovery(damage),
                });
            }
            Step::NeedMore(n) => {
                let want = n.max(WINDOW).min((size - pos) as usize);
                window = file
                    .read_at(pos, want)
                    .await
                    .map_err(io_err("read", &path))?;
                window_pos = pos;
                if window.is_empty() && pos < size {
                    return Err(StorageError::io(
                        "read",
                        &path,
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
                    ));
                }
            }
        }
    }
}
