//! The log of one partition: segments, appender, batch cache, producer
//! state, and the flusher task that does its I/O.
//!
//! Lifecycle: [`Log::open`] recovers (or creates) the partition directory
//! and returns the log with its flusher future, which the owning shard
//! spawns. [`Log::append`] and [`Log::read`] serve requests.
//! [`Log::close`] drains, syncs, writes indexes and a checkpoint.
//!
//! Ownership and concurrency: a log lives on exactly one shard (the owner of
//! its partition) and is shared there through `Rc`. All state is in a
//! `RefCell` that is never borrowed across an `.await`: appends and cache
//! reads are synchronous; only the flusher and disk reads await, on `Rc`'d
//! file handles taken out of the state first. That makes appends ordered
//! (they happen in the order requests reach the shard) and keeps the I/O
//! pipeline (write-behind, group commit) in one place.
//!
//! Durability contract:
//! - after `append` returns, the batches are readable (cache) but in memory only;
//! - [`Log::wait_durable`] resolves once an fdatasync covers the given offset;
//!   concurrent waiters share one sync (group commit);
//! - the flusher syncs on its own at most `flush_interval_ms` after data
//!   becomes dirty.

use super::appender::{Appender, Chunk};
use super::cache::{BatchCache, CacheBudget, CachedBatch};
use super::checkpoint::{self, Checkpoint};
use super::file::{read_small_file, write_small_file, Disk, IoBuf, SegmentFile};
use super::index::SegmentIndex;
use super::producer_state::{ProducerTable, SeqCheck};
use super::recovery::{classify, SegmentScan, Step, TailDamage};
use super::retention::{segments_to_delete, SegmentStat};
use super::segment::{self, Segment};
use super::write_budget::{Unwritten, WriteBudget};
use super::{now_ms, StorageError};
use crate::config::TopicConfig;
use crate::event::LocalEvent;
use crate::format::frame::{self, FrameIter};
use crate::format::BatchHeader;
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub topic: TopicConfig,
    pub write_chunk_bytes: usize,
    pub write_behind: usize,
    pub flush_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
    /// Bytes of written batches a partition keeps cached even when the shard is over budget.
    pub cache_keep_bytes: usize,
    /// Reserve segment file space this far ahead of the writes (0: never).
    pub preallocate_bytes: u64,
}

impl LogConfig {
    pub fn from_broker(b: &crate::config::BrokerConfig, topic: TopicConfig) -> Self {
        LogConfig {
            topic,
            write_chunk_bytes: b.write_chunk_bytes,
            write_behind: b.write_behind,
            flush_interval_ms: b.flush_interval_ms,
            checkpoint_interval_ms: b.recovery_point_interval_ms,
            cache_keep_bytes: (b.shard_cache_bytes_max / 64).max(1 << 20),
            preallocate_bytes: b.segment_preallocate_bytes,
        }
    }
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record appended (or, for a pure duplicate, originally appended).
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_start_offset: u64,
    /// Every batch was a duplicate of an earlier idempotent append.
    pub duplicate: bool,
}

/// Result of a read.
#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    /// Whole frames; the first contains the requested offset.
    pub frames: Vec<Bytes>,
    pub bytes: usize,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

#[derive(Debug, Clone)]
enum Health {
    Ok,
    /// Writes failed with ENOSPC; the data stays queued and is retried.
    NoSpace,
    /// A write or sync failed: no more writes until the log is reopened.
    Failed(String),
}

enum Pending<B> {
    Chunk(Chunk<B>),
    /// Close segment `old_base` at `old_len` bytes and start `new_base`.
    Roll {
        old_base: u64,
        old_len: u64,
        new_base: u64,
    },
}

struct LogState<D: Disk> {
    segments: Vec<Segment<D::File>>,
    appender: Appender<<D::File as SegmentFile>::Buf>,
    pending: VecDeque<Pending<<D::File as SegmentFile>::Buf>>,
    cache: BatchCache,
    /// Appended batches not yet written, charged to the shard's write budget.
    unwritten: Unwritten,
    producers: ProducerTable,
    next_offset: u64,
    /// Every offset below this is written to its segment file (maybe not synced).
    flushed_offset: u64,
    /// Every offset below this is covered by an fdatasync.
    durable_offset: u64,
    /// Highest offset an acks=all waiter is waiting to see durable.
    sync_wanted_offset: u64,
    dirty_since: Option<Instant>,
    /// A reader found nothing new and waits: the next append asks for a sync.
    reader_waiting: bool,
    health: Health,
    /// Corruption found in durable data on a read: everything is refused.
    offline: Option<StorageError>,
    closing: bool,
    /// The closing sync finished: everything is durable, indexed and checkpointed.
    closed: bool,
    last_checkpoint: Option<Instant>,
    /// Offsets below this were deleted by DeleteRecords (persisted in
    /// [`LOG_START_FILE`]); the log start is the larger of this and the
    /// first segment's base.
    start_floor: u64,
}

/// The file holding a partition's DeleteRecords floor (a decimal offset):
/// records below it are gone even while their segment is still on disk.
pub const LOG_START_FILE: &str = "log-start";

impl<B> LogState<B>
where
    B: Disk,
{
    /// First offset a reader may ask for.
    fn log_start(&self) -> u64 {
        self.segments[0].base_offset.max(self.start_floor)
    }
}

pub struct Log<D: Disk> {
    disk: D,
    dir: PathBuf,
    cfg: LogConfig,
    /// The topic config in force: starts as `cfg.topic`, replaced live by
    /// [`Log::set_topic_config`] when an admin alters the topic.
    topic: RefCell<TopicConfig>,
    st: RefCell<LogState<D>>,
    /// Fires when data becomes visible (durable): long-poll fetches wait on it.
    pub data_event: Rc<LocalEvent>,
    durable_event: Rc<LocalEvent>,
    flusher_event: Rc<LocalEvent>,
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::io(op, path, e)
}

impl<D: Disk> Log<D> {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    pub fn next_offset(&self) -> u64 {
        self.st.borrow().next_offset
    }

    pub fn durable_offset(&self) -> u64 {
        self.st.borrow().durable_offset
    }

    /// What consumers may read up to: the durable offset.
    pub fn high_watermark(&self) -> u64 {
        self.st.borrow().durable_offset
    }

    /// The error writes get in this health state, if any.
    fn check_health(&self, health: &Health) -> Result<(), StorageError> {
        match health {
            Health::Ok => Ok(()),
            Health::NoSpace => Err(StorageError::NoSpace {
                path: self.dir.clone(),
            }),
            Health::Failed(cause) => Err(StorageError::Failed {
                dir: self.dir.clone(),
                cause: cause.clone(),
            }),
        }
    }

    /// Durable progress (or a failure): wake acks=all waiters and long polls.
    fn notify_durable(&self) {
        self.durable_event.notify();
        self.data_event.notify();
    }

    pub fn log_start_offset(&self) -> u64 {
        self.st.borrow().log_start()
    }

    /// The topic config in force now.
    pub fn topic_config(&self) -> TopicConfig {
        self.topic.borrow().clone()
    }

    /// Apply an altered topic config from now on (segment rolls, index
    /// spacing, batch limit, retention).
    pub fn set_topic_config(&self, t: TopicConfig) {
        *self.topic.borrow_mut() = t;
    }

    /// DeleteRecords: make `offset` the log start, durably, then delete the
    /// sealed segments wholly below it. `offset` must not pass the high
    /// watermark (the caller checks; asserted). Returns the log start after
    /// the call (unchanged if `offset` is not above it).
    pub async fn delete_records_before(&self, offset: u64) -> Result<u64, StorageError> {
        if let Some(e) = self.offline_cause() {
            return Err(e);
        }
        {
            let st = self.st.borrow();
            // A full disk (Health::NoSpace) is no reason to refuse: freeing
            // space is what this is for. A failed log writes nothing more.
            if let Health::Failed(_) = st.health {
                self.check_health(&st.health)?;
            }
            assert!(
                offset <= st.durable_offset,
                "DeleteRecords past the high watermark"
            );
            if offset <= st.log_start() {
                return Ok(st.log_start());
            }
        }
        // Durable before it is visible: a crash after the answer must not
        // bring the deleted records back.
        let path = self.dir.join(LOG_START_FILE);
        write_small_file(&self.disk, &path, format!("{offset}\n").as_bytes())
            .await
            .map_err(io_err("write log start", &path))?;
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(io_err("sync dir", &self.dir))?;
        {
            let mut st = self.st.borrow_mut();
            // Two concurrent calls: the larger floor wins.
            st.start_floor = st.start_floor.max(offset);
            let start = st.log_start();
            st.cache.evict(start, 0);
        }
        info!(dir = %self.dir.display(), log_start = offset, "records deleted (DeleteRecords)");
        self.apply_retention(now_ms()).await?;
        Ok(self.log_start_offset())
    }

    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }

    pub fn size_bytes(&self) -> u64 {
        self.st.borrow().segments.iter().map(|s| s.len).sum()
    }

    pub fn cache_bytes(&self) -> usize {
        self.st.borrow().cache.bytes()
    }

    /// Open (recovering) or create the log in `dir`.
    pub async fn open(
        disk: D,
        dir: PathBuf,
        cfg: LogConfig,
        budget: Rc<CacheBudget>,
        write_budget: Rc<WriteBudget>,
    ) -> Result<Rc<Self>, StorageError> {
        disk.create_dir_all(&dir)
            .map_err(io_err("create_dir", &dir))?;
        let mut bases: Vec<u64> = disk
            .list(&dir)
            .map_err(io_err("list", &dir))?
            .iter()
            .filter_map(|n| segment::parse_log_name(n))
            .collect();
        bases.sort_unstable();
        let cp_path = dir.join(checkpoint::FILE_NAME);
        let cp = if disk.exists(&cp_path) {
            match read_small_file(&disk, &cp_path).await {
                Ok(b) => match Checkpoint::decode(&b) {
                    Ok(cp) => Some(cp),
                    Err(e) => {
                        warn!(dir = %dir.display(), "ignoring unreadable checkpoint: {e}");
                        None
                    }
                },
                Err(e) => return Err(StorageError::io("read checkpoint", &cp_path, e)),
            }
        } else {
            None
        };
        let floor_path = dir.join(LOG_START_FILE);
        let start_floor = if disk.exists(&floor_path) {
            let b = read_small_file(&disk, &floor_path)
                .await
                .map_err(io_err("read log start", &floor_path))?;
            match std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                Some(o) => o,
                None => {
                    warn!(file = %floor_path.display(), "ignoring an unreadable log start (deleted records below it may reappear)");
                    0
                }
            }
        } else {
            0
        };
        let align = disk.alignment();
        let mut producers = ProducerTable::default();
        let mut segments: Vec<Segment<D::File>> = Vec::new();
        let mut tail = Vec::new();
        if bases.is_empty() {
            let base = cp.as_ref().map(|c| c.next_offset).unwrap_or(0);
            segments.push(Segment::new(base));
        }
        // Producer state: the checkpoint's table, then every batch after it.
        let replay_from = match &cp {
            Some(c) if bases.first().is_some_and(|b| *b <= c.next_offset) => {
                for (pid, e) in &c.producers {
                    producers.restore(*pid, e.clone());
                }
                c.next_offset
            }
            _ => 0,
        };
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let path = segment::log_path(&dir, base);
            let file = if is_last {
                disk.open_rw(&path).await
            } else {
                disk.open_ro(&path).await
            }
            .map_err(io_err("open segment", &path))?;
            let size = file.size().await.map_err(io_err("stat segment", &path))?;
            let next_base = bases.get(i + 1).copied();
            let mut seg = Segment::new(base);
            let fully_before_cp = next_base.is_some_and(|nb| nb <= replay_from);
            // The last segment is always scanned (every header and CRC
            // checked), even after a clean shutdown: corruption there is
            // found now, not by a consumer. Closed segments are trusted
            // through their index and checked again on every disk read.
            let loaded = if !is_last {
                load_index(&disk, &dir, base, size).await
            } else {
                None
            };
            match loaded {
                Some(index) => {
                    seg.len = size;
                    seg.next_offset = match next_base {
                        Some(nb) => nb,
                        None => cp.as_ref().map(|c| c.next_offset).unwrap_or(base),
                    };
                    seg.max_timestamp = index.times.last().map(|t| t.timestamp).unwrap_or(-1);
                    seg.index = index;
                    if !fully_before_cp {
                        // Closed segment after the checkpoint: replay its producers.
                        let scan = scan_segment(&disk, &dir, &file, base, size, size, &cfg).await?;
                        for h in scan.headers.iter().filter(|h| h.base_offset >= replay_from) {
                            producers.record(h);
                        }
                    }
                }
                _ => {
                    // Scan: the last segment always,
                    // a closed one whose index is missing or broken.
                    let trusted = if !is_last {
                        size
                    } else {
                        match &cp {
                            Some(c) if c.segment_base == base => c.position,
                            Some(c) if c.segment_base > base => size,
                            _ => 0,
                        }
                    };
                    let scan = scan_segment(&disk, &dir, &file, base, size, trusted, &cfg).await?;
                    if scan.valid_len < size {
                        assert!(is_last, "a closed segment never gets cut");
                        let cut = size - scan.valid_len;
                        if scan.end == Some(TailDamage::ZeroFilled) {
                            // Zeros after the last batch: the padding of the last
                            // direct-I/O block, preallocated space, or a block that
                            // was never written (so never acknowledged).
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
                            .map_err(io_err("truncate torn tail", &path))?;
                        file.sync().await.map_err(io_err("sync", &path))?;
                    }
                    if let Some(nb) = next_base {
                        if scan.next_offset != nb {
                            return Err(StorageError::Corrupt {
                                dir: dir.clone(),
                                segment: path.clone(),
                                position: scan.valid_len,
                                detail: format!(
                                    "segment ends at offset {} but the next segment starts at {nb}",
                                    scan.next_offset
                                ),
                            });
                        }
                    }
                    for h in scan.headers.iter().filter(|h| h.base_offset >= replay_from) {
                        producers.record(h);
                    }
                    seg.len = scan.valid_len;
                    seg.next_offset = scan.next_offset;
                    seg.max_timestamp = scan.max_timestamp;
                    seg.index = scan.index;
                    if !is_last {
                        // Rebuilt: write it back so the next start is fast.
                        write_index(&disk, &dir, &seg).await?;
                        info!(segment = %path.display(), "rebuilt missing or broken index");
                    }
                }
            }
            if is_last && seg.len > 0 {
                let from = seg.len - seg.len % align as u64;
                tail = file
                    .read_at(from, (seg.len - from) as usize)
                    .await
                    .map_err(io_err("read tail block", &path))?
                    .to_vec();
                assert_eq!(tail.len() as u64, seg.len - from);
            }
            seg.sealed = !is_last;
            seg.reserved = seg.len;
            seg.file = Some(Rc::new(file));
            segments.push(seg);
        }
        let last = segments.last().unwrap();
        let next_offset = last.next_offset;
        let appender = Appender::resume(
            last.base_offset,
            last.len,
            &tail,
            cfg.write_chunk_bytes,
            align,
            |n| disk.alloc(n),
        );
        info!(
            dir = %dir.display(),
            segments = segments.len(),
            log_start = segments[0].base_offset.max(start_floor.min(next_offset)),
            next_offset,
            "partition log open"
        );
        let st = LogState {
            segments,
            appender,
            pending: VecDeque::new(),
            cache: BatchCache::new(budget),
            unwritten: Unwritten::new(write_budget),
            producers,
            next_offset,
            flushed_offset: next_offset,
            durable_offset: next_offset,
            sync_wanted_offset: 0,
            dirty_since: None,
            reader_waiting: false,
            health: Health::Ok,
            offline: None,
            closing: false,
            closed: false,
            last_checkpoint: None,
            // A recovery cut of an unsynced tail can leave the floor
            // beyond the end: the log then starts (empty) at its end.
            start_floor: start_floor.min(next_offset),
        };
        Ok(Rc::new(Log {
            disk,
            dir,
            topic: RefCell::new(cfg.topic.clone()),
            cfg,
            st: RefCell::new(st),
            data_event: Rc::new(LocalEvent::new()),
            durable_event: Rc::new(LocalEvent::new()),
            flusher_event: Rc::new(LocalEvent::new()),
        }))
    }

    /// Append validated frames (their CRCs were checked at ingress). All or
    /// nothing: every frame is checked before any is appended. Offsets are
    /// stamped in place, then the frame bytes move into the cache.
    pub fn append(&self, frames: Vec<BytesMut>) -> Result<AppendOutcome, StorageError> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        if let Some(e) = &st.offline {
            return Err(e.clone());
        }
        self.check_health(&st.health)?;
        if st.closing {
            return Err(StorageError::Closed);
        }
        assert!(!frames.is_empty());
        // Check everything first.
        let parsed: Vec<BatchHeader> = frames
            .iter()
            .map(|f| frame::parse_header(f).expect("frames are validated at ingress"))
            .collect();
        let idempotent = parsed
            .iter()
            .any(|h| h.producer_id >= 0 && h.base_sequence >= 0);
        // A scratch table so a request with several batches of one producer is checked as a whole.
        let mut scratch = idempotent.then(|| st.producers.clone());
        let mut headers = Vec::with_capacity(frames.len());
        for (f, h) in frames.iter().zip(parsed) {
            assert_eq!(h.frame_len(), f.len(), "one frame per buffer");
            let max = self.topic.borrow().max_batch_bytes as usize;
            if f.len() > max {
                return Err(StorageError::BatchTooLarge { len: f.len(), max });
            }
            let check = match scratch.as_mut() {
                Some(table) => {
                    let c = table.check(&h)?;
                    if c == SeqCheck::Append {
                        table.record(&h);
                    }
                    c
                }
                None => SeqCheck::Append,
            };
            headers.push((h, check));
        }
        let now = now_ms();
        let mut outcome = AppendOutcome {
            base_offset: u64::MAX,
            last_offset: 0,
            log_start_offset: st.log_start(),
            duplicate: true,
        };
        let mut sealed = Vec::new();
        let mut alloc = |n| self.disk.alloc(n);
        for (mut f, (mut h, check)) in frames.into_iter().zip(headers) {
            if let SeqCheck::Duplicate {
                base_offset,
                last_offset,
            } = check
            {
                outcome.base_offset = outcome.base_offset.min(base_offset);
                outcome.last_offset = outcome.last_offset.max(last_offset);
                continue;
            }
            outcome.duplicate = false;
            self.maybe_roll(st, f.len() as u64, now, &mut sealed);
            let base = st.next_offset;
            frame::stamp(&mut f, base, 0);
            h.base_offset = base;
            h.partition_leader_epoch = 0;
            let next = h.last_offset() + 1;
            let seg = st.segments.last_mut().unwrap();
            let seg_base = seg.base_offset;
            let pos = st.appender.position();
            assert_eq!(pos, seg.len, "appender and segment agree on the end");
            seg.index.on_append(
                (base - seg.base_offset) as u32,
                pos,
                h.max_timestamp,
                f.len(),
                self.topic.borrow().index_interval_bytes,
            );
            seg.len += f.len() as u64;
            seg.next_offset = next;
            seg.max_timestamp = seg.max_timestamp.max(h.max_timestamp);
            seg.first_append_ms.get_or_insert(now);
            st.appender.append(&f, base, next, &mut alloc, &mut sealed);
            st.producers.record(&h);
            st.unwritten.appended(next, f.len());
            st.cache.push(CachedBatch {
                base_offset: base,
                last_offset: h.last_offset(),
                segment_base: seg_base,
                position: pos,
                frame: f.freeze(),
            });
            st.next_offset = next;
            outcome.base_offset = outcome.base_offset.min(base);
            outcome.last_offset = h.last_offset();
        }
        if !outcome.duplicate {
            st.dirty_since.get_or_insert_with(Instant::now);
            if st.reader_waiting {
                // Someone is long-polling for this: sync it now rather than
                // at the flush interval.
                st.reader_waiting = false;
                st.sync_wanted_offset = st.sync_wanted_offset.max(st.next_offset);
                self.flusher_event.notify();
            }
        }
        if !sealed.is_empty() {
            st.pending.extend(sealed.into_iter().map(Pending::Chunk));
            self.flusher_event.notify();
        }
        // Make room in the cache now rather than at the flusher's next
        // round: between rounds, appends would otherwise hold written
        // batches in memory beyond the shard's cache budget.
        let flushed = st.flushed_offset;
        st.cache.evict(flushed, self.cfg.cache_keep_bytes);
        Ok(outcome)
    }

    fn maybe_roll(
        &self,
        st: &mut LogState<D>,
        frame_len: u64,
        now: i64,
        sealed: &mut Vec<Chunk<<D::File as SegmentFile>::Buf>>,
    ) {
        let seg = st.segments.last().unwrap();
        if seg.is_empty() {
            return;
        }
        let by_size = seg.len + frame_len > self.topic.borrow().segment_bytes;
        let by_age = seg
            .first_append_ms
            .is_some_and(|t| now - t >= self.topic.borrow().segment_ms as i64);
        if by_size || by_age {
            self.roll_locked(st, sealed);
        }
    }

    fn roll_locked(
        &self,
        st: &mut LogState<D>,
        sealed: &mut Vec<Chunk<<D::File as SegmentFile>::Buf>>,
    ) {
        let old = st.segments.last().unwrap();
        let (old_base, old_len) = (old.base_offset, old.len);
        let new_base = st.next_offset;
        assert!(new_base > old_base, "rolling an empty segment");
        // Push the tail of the old segment ahead of the roll marker.
        st.appender.roll(new_base, new_base, sealed);
        st.pending.extend(sealed.drain(..).map(Pending::Chunk));
        st.pending.push_back(Pending::Roll {
            old_base,
            old_len,
            new_base,
        });
        st.segments.push(Segment::new(new_base));
        debug!(dir = %self.dir.display(), old_base, new_base, "segment roll");
        self.flusher_event.notify();
    }

    /// Wait until every offset up to and including `last_offset` is durable.
    /// Asks the flusher for a sync; concurrent waiters share it.
    pub async fn wait_durable(&self, last_offset: u64) -> Result<(), StorageError> {
        loop {
            let listener = self.durable_event.listen();
            {
                let mut st = self.st.borrow_mut();
                if st.durable_offset > last_offset {
                    return Ok(());
                }
                self.check_health(&st.health)?;
                if st.sync_wanted_offset <= last_offset {
                    st.sync_wanted_offset = last_offset + 1;
                    self.flusher_event.notify();
                }
            }
            listener.await;
        }
    }

    /// Read whole frames starting with the one that contains `offset`, up to
    /// about `max_bytes` (at least one frame when any is available), from
    /// the cache or the segment files. Corruption found on disk (a header
    /// or CRC check, or offsets that are not contiguous) takes the
    /// partition offline: this read and every later append and read get
    /// the same [`StorageError::Corrupt`], naming the segment and byte,
    /// until the broker is restarted (the files are not touched).
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<FetchOutcome, StorageError> {
        if let Some(e) = self.offline_cause() {
            return Err(e);
        }
        let r = self.read_checked(offset, max_bytes).await;
        if let Err(e @ StorageError::Corrupt { .. }) = &r {
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

    /// The read itself, every disk byte checked on the way out.
    async fn read_checked(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchOutcome, StorageError> {
        let (file, pos, seg_len, seg_path, cache_from, visible, first_offset, end_offset) = {
            let mut st = self.st.borrow_mut();
            let log_start = st.log_start();
            // Consumers see only durable data: nothing they read can be lost
            // by a crash (Kafka's high watermark, with fsync as the commit).
            let visible = st.durable_offset;
            let mut out = FetchOutcome {
                high_watermark: visible,
                log_start_offset: log_start,
                ..Default::default()
            };
            if offset < log_start || offset > st.next_offset {
                return Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    log_start,
                    high_watermark: visible,
                });
            }
            if offset >= visible {
                // A reader waits at the end: make what is appended durable
                // soon (group-committed with any acks=all waiters), now and
                // on the next append.
                st.reader_waiting = true;
                if st.next_offset > visible && st.sync_wanted_offset < st.next_offset {
                    st.sync_wanted_offset = st.next_offset;
                    self.flusher_event.notify();
                }
                return Ok(out);
            }
            let cache_from = st.cache.first_offset().unwrap_or(st.next_offset);
            let cache_at = st.cache.first_position();
            if offset >= cache_from {
                out.bytes = st.cache.read(offset, max_bytes, visible, &mut out.frames);
                return Ok(out);
            }
            let i = st.segments.partition_point(|s| s.base_offset <= offset) - 1;
            let seg = &st.segments[i];
            let file = seg
                .file
                .clone()
                .expect("data below the cache is written, so its file is open");
            let (rel, pos) = seg.index.entry_for((offset - seg.base_offset) as u32);
            // Bytes from the first cached batch on may not be written yet.
            let (readable_len, end_offset) = match cache_at {
                Some((b, p)) if b == seg.base_offset => (p, cache_from),
                _ => (seg.len, seg.next_offset),
            };
            (
                file,
                pos,
                readable_len,
                segment::log_path(&self.dir, seg.base_offset),
                cache_from,
                visible,
                seg.base_offset + rel as u64,
                end_offset,
            )
        };
        let mut out = FetchOutcome::default();
        let want = (max_bytes as u64).max(64 << 10).min(seg_len - pos) as usize;
        let mut data = file
            .read_at(pos, want)
            .await
            .map_err(io_err("read", &seg_path))?;
        let mut at = pos;
        // Disk data is checked again on the way out: bit rot in a closed
        // segment must not reach consumers as valid data. The header check
        // (in FrameIter's parse) covers every stamped field; contiguity
        // catches what a legacy SLB1 header (no header CRC) cannot prove:
        // the batch at an index entry starts at that entry's offset, and
        // each batch starts right after the previous one ends.
        let mut expected = first_offset;
        let corrupt = |position: u64, detail: String| StorageError::Corrupt {
            dir: self.dir.clone(),
            segment: seg_path.clone(),
            position,
            detail,
        };
        loop {
            let mut consumed = 0usize;
            let mut progressed = false;
            for item in FrameIter::new(data.clone()) {
                let position = at + consumed as u64;
                let (h, f) = item.map_err(|e| corrupt(position, e.to_string()))?;
                if h.base_offset != expected {
                    return Err(corrupt(
                        position,
                        format!(
                            "batch has base offset {}, expected {expected} (offsets must be contiguous)",
                            h.base_offset
                        ),
                    ));
                }
                if h.base_offset >= cache_from || h.base_offset >= visible {
                    break;
                }
                frame::verify_crc(&h, &f).map_err(|e| corrupt(position, e.to_string()))?;
                expected = h.last_offset() + 1;
                consumed += f.len();
                if at + consumed as u64 == seg_len && expected != end_offset {
                    return Err(corrupt(
                        at + consumed as u64,
                        format!("the segment's readable data ends at offset {expected}, expected {end_offset}"),
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
            if !out.frames.is_empty() || at + consumed as u64 >= seg_len {
                break;
            }
            // Either the first frame did not fit in the read, or we skipped
            // frames before `offset`: read on from where parsing stopped.
            at += consumed as u64;
            let rest = &data[consumed..];
            let need = if rest.len() >= crate::format::HEADER_LEN {
                frame::parse_header(rest)
                    .map(|h| h.frame_len())
                    .unwrap_or(64 << 10)
            } else {
                64 << 10
            };
            // Frames end exactly at the readable end: one that claims to
            // run past it is damaged (and re-reading would never complete it).
            if at + need as u64 > seg_len && rest.len() >= crate::format::HEADER_LEN {
                return Err(corrupt(
                    at,
                    format!(
                        "frame of {need} bytes runs past the segment's readable end at byte {seg_len}"
                    ),
                ));
            }
            let want = (need.max(max_bytes) as u64).min(seg_len - at) as usize;
            data = file
                .read_at(at, want)
                .await
                .map_err(io_err("read", &seg_path))?;
            if data.is_empty() && !progressed {
                break;
            }
        }
        let st = self.st.borrow();
        out.high_watermark = st.durable_offset;
        out.log_start_offset = st.log_start();
        Ok(out)
    }

    /// First offset whose batch has max_timestamp >= `ts`, or None (use the high watermark).
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>, StorageError> {
        let candidate = {
            let st = self.st.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= ts) else {
                return Ok(None);
            };
            // Never below the log start: DeleteRecords may have cut into
            // the first segment.
            (seg.base_offset + seg.index.rel_offset_for_time(ts) as u64).max(st.log_start())
        };
        let mut offset = candidate;
        loop {
            let r = self.read(offset, 1 << 20).await?;
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

    /// Apply retention: delete whole closed segments past the limits.
    /// Returns the number of segments deleted.
    pub async fn apply_retention(&self, now: i64) -> Result<usize, StorageError> {
        let doomed: Vec<(u64, Option<Rc<D::File>>)> = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            // An active segment whose data is all older than retention is
            // rolled so it can go next time (Kafka does the same).
            let t = self.topic_config();
            let active = st.segments.last().unwrap();
            if t.retention_ms >= 0
                && !active.is_empty()
                && active.max_timestamp >= 0
                && now - active.max_timestamp > t.retention_ms
                && matches!(st.health, Health::Ok)
            {
                let mut sealed = Vec::new();
                self.roll_locked(st, &mut sealed);
            }
            // Only sealed segments: a roll the flusher is still finishing
            // must not race with deleting its files.
            let closed = st.segments.iter().take_while(|s| s.sealed).count();
            assert!(
                closed < st.segments.len(),
                "the active segment is never sealed"
            );
            let stats: Vec<SegmentStat> = st.segments[..closed]
                .iter()
                .map(|s| SegmentStat {
                    base_offset: s.base_offset,
                    len: s.len,
                    max_timestamp: s.max_timestamp,
                })
                .collect();
            let total: u64 = st.segments.iter().map(|s| s.len).sum();
            let bases = segments_to_delete(&stats, total, now, t.retention_ms, t.retention_bytes);
            // Sealed segments wholly below the DeleteRecords floor go too.
            let below_floor = (0..closed)
                .take_while(|&i| st.segments[i + 1].base_offset <= st.start_floor)
                .count();
            let n = bases.len().max(below_floor);
            let removed: Vec<_> = st
                .segments
                .drain(..n)
                .map(|s| (s.base_offset, s.file))
                .collect();
            let new_start = st.log_start();
            if n > 0 {
                // Cached batches below the new start are gone too.
                st.cache.evict(new_start, 0);
                info!(dir = %self.dir.display(), deleted = n, log_start = new_start, "retention deleted segments");
            }
            removed
        };
        let n = doomed.len();
        for (base, _file) in doomed {
            for p in [
                segment::log_path(&self.dir, base),
                segment::index_path(&self.dir, base),
                segment::time_index_path(&self.dir, base),
            ] {
                if self.disk.exists(&p) {
                    self.disk.remove(&p).await.map_err(io_err("remove", &p))?;
                }
            }
        }
        if n > 0 {
            self.disk
                .sync_dir(&self.dir)
                .await
                .map_err(io_err("sync dir", &self.dir))?;
        }
        Ok(n)
    }

    /// Evict written batches from the cache if the partition or shard is over budget.
    pub fn trim_cache(&self) -> usize {
        let mut st = self.st.borrow_mut();
        let flushed = st.flushed_offset;
        st.cache.evict(flushed, self.cfg.cache_keep_bytes)
    }

    /// Stop accepting appends, write everything, sync, write indexes and a
    /// checkpoint. The flusher exits after this completes.
    pub async fn close(&self) -> Result<(), StorageError> {
        {
            let mut st = self.st.borrow_mut();
            st.closing = true;
        }
        self.flusher_event.notify();
        loop {
            let l = self.durable_event.listen();
            {
                let st = self.st.borrow();
                if st.closed {
                    return Ok(());
                }
                // On a full disk, closing cannot wait for space that may
                // never come: what is unsynced stays unsynced (acks=all data
                // is durable already) and recovery sorts out the tail.
                self.check_health(&st.health)?;
            }
            l.await;
        }
    }

    /// The flusher: the only task that writes this partition's files.
    /// Runs until the log is closed or fails.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            let wake = self.flusher_event.listen();
            let pressure = self.st.borrow().unwritten.budget().pressure();
            let (has_chunks, want_sync, closing, timeout) = {
                let st = self.st.borrow();
                if matches!(st.health, Health::Failed(_)) {
                    return;
                }
                let dirty_for = st.dirty_since.map(|t| t.elapsed());
                let interval = Duration::from_millis(self.cfg.flush_interval_ms);
                let interval_due = dirty_for.is_some_and(|d| d >= interval);
                // A full disk is retried by syncing again: whatever failed
                // (a chunk, the tail, the checkpoint) is redone by that round.
                let want_sync = st.sync_wanted_offset > st.durable_offset
                    || interval_due
                    || st.unwritten.pressed()
                    || (st.closing && !st.closed)
                    || matches!(st.health, Health::NoSpace);
                let timeout = match st.health {
                    Health::NoSpace => Some(Duration::from_millis(100)),
                    _ => dirty_for.map(|d| interval.saturating_sub(d)),
                };
                (!st.pending.is_empty(), want_sync, st.closing, timeout)
            };
            if !has_chunks && !want_sync {
                if closing {
                    self.notify_durable();
                    return;
                }
                // Woken by work, by an append waiting for the shard's
                // write budget, or by the flush interval.
                let wake = futures_lite::future::or(wake, pressure);
                match timeout {
                    Some(t) => {
                        futures_lite::future::or(wake, async {
                            glommio::timer::sleep(t).await;
                        })
                        .await
                    }
                    None => wake.await,
                }
                continue;
            }
            let result = async {
                self.write_pending().await?;
                if want_sync {
                    self.sync_now(closing).await?;
                }
                Ok::<(), StorageError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    let mut st = self.st.borrow_mut();
                    if matches!(st.health, Health::NoSpace) {
                        info!(dir = %self.dir.display(), "space available again; writes resumed");
                        st.health = Health::Ok;
                    }
                }
                Err(StorageError::NoSpace { path }) => {
                    {
                        let mut st = self.st.borrow_mut();
                        if !matches!(st.health, Health::NoSpace) {
                            warn!(path = %path.display(), "device full: produce refused until space is freed");
                        } else {
                            debug!(path = %path.display(), "still no space");
                        }
                        st.health = Health::NoSpace;
                    }
                    self.notify_durable();
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    error!(dir = %self.dir.display(), "partition failed, refusing further writes: {e}");
                    {
                        let mut st = self.st.borrow_mut();
                        st.health = Health::Failed(e.to_string());
                        // Never to be written: give the shard its budget back.
                        st.unwritten.abandon();
                    }
                    self.notify_durable();
                    return;
                }
            }
            self.trim_cache();
        }
    }

    fn file_of(&self, base: u64) -> Option<Rc<D::File>> {
        let st = self.st.borrow();
        st.segments
            .iter()
            .find(|s| s.base_offset == base)
            .and_then(|s| s.file.clone())
    }

    /// Open (creating) the file of segment `base` if it is not open yet.
    async fn ensure_file(&self, base: u64) -> Result<Rc<D::File>, StorageError> {
        if let Some(f) = self.file_of(base) {
            return Ok(f);
        }
        assert!(
            self.st
                .borrow()
                .segments
                .iter()
                .any(|s| s.base_offset == base),
            "opening the file of segment {base}, which is not in the log"
        );
        let path = segment::log_path(&self.dir, base);
        let f = Rc::new(
            self.disk
                .open_rw(&path)
                .await
                .map_err(io_err("create segment", &path))?,
        );
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(io_err("sync dir", &self.dir))?;
        let mut st = self.st.borrow_mut();
        if let Some(s) = st.segments.iter_mut().find(|s| s.base_offset == base) {
            s.file = Some(f.clone());
        }
        Ok(f)
    }

    /// Write every pending chunk and process rolls, until none are left.
    async fn write_pending(&self) -> Result<(), StorageError> {
        loop {
            let items = std::mem::take(&mut self.st.borrow_mut().pending);
            if items.is_empty() {
                return Ok(());
            }
            self.write_items(items).await?;
        }
    }

    /// Write `items` in order: runs of chunks `write_behind` at a time,
    /// rolls one by one. On failure the unwritten items go back to the
    /// front of the pending queue, in order, for a retry.
    async fn write_items(
        &self,
        mut items: VecDeque<Pending<<D::File as SegmentFile>::Buf>>,
    ) -> Result<(), StorageError> {
        let put_back = |rest: VecDeque<Pending<_>>| {
            let mut st = self.st.borrow_mut();
            for item in rest.into_iter().rev() {
                st.pending.push_front(item);
            }
        };
        while let Some(front) = items.front() {
            if let Pending::Roll {
                old_base,
                old_len,
                new_base,
            } = *front
            {
                let r = async {
                    self.close_segment(old_base, old_len).await?;
                    self.ensure_file(new_base).await
                }
                .await;
                if let Err(e) = r {
                    put_back(items);
                    return Err(e);
                }
                items.pop_front();
                let mut st = self.st.borrow_mut();
                if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == old_base) {
                    seg.sealed = true;
                }
                st.durable_offset = st.durable_offset.max(new_base);
                st.flushed_offset = st.flushed_offset.max(new_base);
                let flushed = st.flushed_offset;
                st.unwritten.written_up_to(flushed);
                drop(st);
                self.notify_durable();
                continue;
            }
            // A run of consecutive chunks, written through a sliding window
            // of `write_behind` writes: a new one starts as soon as one ends.
            let mut run = Vec::new();
            while let Some(Pending::Chunk(_)) = items.front() {
                match items.pop_front() {
                    Some(Pending::Chunk(c)) => run.push(c),
                    _ => unreachable!(),
                }
            }
            let mut files = Vec::with_capacity(run.len());
            let mut failed = None;
            for c in &run {
                let end = c.pos + c.buf.as_bytes().len() as u64;
                match self.ensure_file(c.segment_base).await {
                    Ok(f) => match self.reserve(c.segment_base, &f, end).await {
                        Ok(()) => files.push(f),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    },
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                for c in run.into_iter().rev() {
                    items.push_front(Pending::Chunk(c));
                }
                put_back(items);
                return Err(e);
            }
            let shared: Vec<_> = run
                .into_iter()
                .map(|c| (c.pos, Rc::new(c.buf), c.end_offset, c.segment_base))
                .collect();
            let mut in_flight = FuturesUnordered::new();
            let mut next = 0;
            let mut err = None;
            loop {
                while err.is_none()
                    && next < shared.len()
                    && in_flight.len() < self.cfg.write_behind
                {
                    let (pos, buf, _, _) = &shared[next];
                    in_flight.push(self.write_all(&files[next], buf.clone(), *pos));
                    next += 1;
                }
                match in_flight.next().await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        err.get_or_insert(e);
                    }
                    None => break,
                }
            }
            drop(in_flight);
            if let Some(err) = err {
                // Rewrite the whole run later: writes are idempotent.
                let mut back = VecDeque::new();
                for (pos, buf, end_offset, segment_base) in shared {
                    let buf = Rc::try_unwrap(buf).unwrap_or_else(|rc| {
                        let mut b = self.disk.alloc(rc.as_bytes().len());
                        b.as_bytes_mut().copy_from_slice(rc.as_bytes());
                        b
                    });
                    back.push_back(Pending::Chunk(Chunk {
                        segment_base,
                        pos,
                        buf,
                        end_offset,
                    }));
                }
                back.extend(items);
                put_back(back);
                return Err(err);
            }
            let end = shared.iter().map(|c| c.2).max().unwrap_or(0);
            for (_, buf, _, _) in shared {
                if let Ok(b) = Rc::try_unwrap(buf) {
                    self.disk.recycle(b);
                }
            }
            let mut st = self.st.borrow_mut();
            st.flushed_offset = st.flushed_offset.max(end);
            let flushed = st.flushed_offset;
            st.unwritten.written_up_to(flushed);
        }
        Ok(())
    }

    /// Make sure segment `base`'s file has space reserved up to `end`,
    /// reserving `preallocate_bytes` ahead (but not past the segment's
    /// nominal size) so most writes land in reserved space.
    async fn reserve(&self, base: u64, file: &Rc<D::File>, end: u64) -> Result<(), StorageError> {
        let step = self.cfg.preallocate_bytes;
        let reserved = {
            let st = self.st.borrow();
            st.segments
                .iter()
                .find(|s| s.base_offset == base)
                .map(|s| s.reserved)
                .unwrap_or(u64::MAX)
        };
        if step == 0 || end <= reserved {
            return Ok(());
        }
        let align = self.disk.alignment() as u64;
        let nominal = self.topic.borrow().segment_bytes.div_ceil(align) * align;
        let mut ahead = (end + step).min(nominal).max(end);
        // Near a full disk, reserve only what this write needs: a large
        // reservation would take the last free blocks from everyone else
        // (and a failed fallocate may keep part of what it allocated).
        if self
            .disk
            .free_bytes(&self.dir)
            .is_some_and(|free| free < 4 * (ahead - reserved.min(ahead)))
        {
            ahead = end;
        }
        let path = segment::log_path(&self.dir, base);
        let got = match file.preallocate(ahead).await {
            Ok(()) => ahead,
            Err(e) if super::file::is_no_space(&e) && ahead > end => {
                // Give back whatever the failed reservation took, then try the minimum.
                let _ = file.truncate(reserved).await;
                file.preallocate(end)
                    .await
                    .map_err(io_err("preallocate", &path))?;
                end
            }
            Err(e) => return Err(StorageError::io("preallocate", &path, e)),
        };
        let mut st = self.st.borrow_mut();
        if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == base) {
            seg.reserved = seg.reserved.max(got);
        }
        Ok(())
    }

    /// Write a whole buffer, continuing after short writes.
    async fn write_all(
        &self,
        file: &Rc<D::File>,
        buf: Rc<<D::File as SegmentFile>::Buf>,
        pos: u64,
    ) -> Result<(), StorageError> {
        let align = self.disk.alignment();
        let len = buf.as_bytes().len();
        let path = || self.dir.join("<segment>");
        let mut done = file
            .write_at(buf.clone(), pos)
            .await
            .map_err(|e| StorageError::io("write", path(), e))?;
        while done < len {
            if done == 0 || done % align != 0 {
                return Err(StorageError::io(
                    "write",
                    path(),
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write of {done} of {len} bytes, not block aligned"),
                    ),
                ));
            }
            let mut rest = self.disk.alloc(len - done);
            rest.as_bytes_mut().copy_from_slice(&buf.as_bytes()[done..]);
            let n = file
                .write_at(Rc::new(rest), pos + done as u64)
                .await
                .map_err(|e| StorageError::io("write", path(), e))?;
            if n == 0 {
                return Err(StorageError::io(
                    "write",
                    path(),
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "write returned 0"),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Finish a rolled segment: exact length, synced, indexes written.
    async fn close_segment(&self, base: u64, len: u64) -> Result<(), StorageError> {
        let path = segment::log_path(&self.dir, base);
        let file = self.ensure_file(base).await?;
        file.truncate(len)
            .await
            .map_err(io_err("truncate", &path))?;
        file.sync().await.map_err(io_err("sync", &path))?;
        {
            let mut st = self.st.borrow_mut();
            if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == base) {
                // Make the last time-index entry the segment's max timestamp, for retention after restart.
                let rel = (seg.next_offset - 1 - seg.base_offset) as u32;
                if seg
                    .index
                    .times
                    .last()
                    .is_none_or(|t| t.timestamp < seg.max_timestamp)
                {
                    seg.index.times.push(super::index::TimeEntry {
                        timestamp: seg.max_timestamp,
                        rel_offset: rel,
                    });
                }
            }
        }
        let seg_index = {
            let st = self.st.borrow();
            st.segments
                .iter()
                .find(|s| s.base_offset == base)
                .map(|s| (s.base_offset, s.index.clone()))
        };
        if let Some((b, index)) = seg_index {
            write_index_files(&self.disk, &self.dir, b, &index).await?;
        }
        Ok(())
    }

    /// Group commit: seal what was appended, write it, fdatasync, publish.
    ///
    /// Only the items queued up to the sync point are written in this round:
    /// later appends may queue a chunk that rewrites the tail block, and it
    /// must not land before this round's (older) tail write.
    async fn sync_now(&self, closing: bool) -> Result<(), StorageError> {
        let (items, tail, target, active_base, active_len, cp) = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let mut sealed = Vec::new();
            let next = st.next_offset;
            let mut alloc = |n| self.disk.alloc(n);
            let tail = st.appender.sync_point(next, &mut alloc, &mut sealed);
            st.pending.extend(sealed.into_iter().map(Pending::Chunk));
            let items = std::mem::take(&mut st.pending);
            let seg = st.segments.last().unwrap();
            let due = closing
                || st.last_checkpoint.is_none_or(|t| {
                    t.elapsed() >= Duration::from_millis(self.cfg.checkpoint_interval_ms)
                });
            // The checkpoint must describe exactly the state at `next`.
            let cp =
                due.then(|| Checkpoint::from_table(seg.base_offset, seg.len, next, &st.producers));
            st.dirty_since = None;
            (items, tail, next, seg.base_offset, seg.len, cp)
        };
        let restore_dirty = |e: StorageError| {
            self.st
                .borrow_mut()
                .dirty_since
                .get_or_insert_with(Instant::now);
            e
        };
        self.write_items(items).await.map_err(restore_dirty)?;
        let file = self.ensure_file(active_base).await.map_err(restore_dirty)?;
        let path = segment::log_path(&self.dir, active_base);
        if let Some((pos, buf)) = tail {
            let end = pos + buf.as_bytes().len() as u64;
            self.reserve(active_base, &file, end)
                .await
                .map_err(restore_dirty)?;
            self.write_all(&file, Rc::new(buf), pos)
                .await
                .map_err(restore_dirty)?;
        }
        file.sync()
            .await
            .map_err(io_err("sync", &path))
            .map_err(restore_dirty)?;
        {
            let mut st = self.st.borrow_mut();
            st.durable_offset = st.durable_offset.max(target);
            st.flushed_offset = st.flushed_offset.max(target);
            let flushed = st.flushed_offset;
            st.unwritten.written_up_to(flushed);
        }
        self.notify_durable();
        if closing {
            // Drop the zero padding of the last block: the file then ends
            // exactly at the checkpointed length, so the next open's scan of
            // the last segment finds no tail to cut. Appending again rewrites that block from the
            // appender's copy, so nothing depends on the padding.
            file.truncate(active_len)
                .await
                .map_err(io_err("truncate", &path))?;
            file.sync().await.map_err(io_err("sync", &path))?;
            let index = {
                let st = self.st.borrow();
                st.segments.last().map(|s| s.index.clone())
            };
            if let Some(index) = index {
                write_index_files(&self.disk, &self.dir, active_base, &index).await?;
            }
        }
        if let Some(cp) = cp {
            let p = self.dir.join(checkpoint::FILE_NAME);
            write_small_file(&self.disk, &p, &cp.encode())
                .await
                .map_err(io_err("write checkpoint", &p))?;
            debug!(dir = %self.dir.display(), segment = active_base, position = active_len, next = target, "checkpoint");
            self.st.borrow_mut().last_checkpoint = Some(Instant::now());
        }
        if closing {
            let mut st = self.st.borrow_mut();
            if st.pending.is_empty() && st.next_offset == target {
                st.closed = true;
            }
        }
        self.notify_durable();
        Ok(())
    }
}

async fn load_index<D: Disk>(disk: &D, dir: &Path, base: u64, size: u64) -> Option<SegmentIndex> {
    let ip = segment::index_path(dir, base);
    let tp = segment::time_index_path(dir, base);
    if !disk.exists(&ip) || !disk.exists(&tp) {
        info!(segment = base, dir = %dir.display(), "index missing; rebuilding");
        return None;
    }
    let (o, t) = match (
        read_small_file(disk, &ip).await,
        read_small_file(disk, &tp).await,
    ) {
        (Ok(o), Ok(t)) => (o, t),
        _ => return None,
    };
    match SegmentIndex::decode(&o, &t, size) {
        Ok(i) => Some(i),
        Err(e) => {
            warn!(segment = base, dir = %dir.display(), "broken index ({e}); rebuilding");
            None
        }
    }
}

async fn write_index<D: Disk, F>(
    disk: &D,
    dir: &Path,
    seg: &Segment<F>,
) -> Result<(), StorageError> {
    write_index_files(disk, dir, seg.base_offset, &seg.index).await
}

async fn write_index_files<D: Disk>(
    disk: &D,
    dir: &Path,
    base: u64,
    index: &SegmentIndex,
) -> Result<(), StorageError> {
    let ip = segment::index_path(dir, base);
    let tp = segment::time_index_path(dir, base);
    write_small_file(disk, &ip, &index.encode_offsets())
        .await
        .map_err(io_err("write index", &ip))?;
    write_small_file(disk, &tp, &index.encode_times())
        .await
        .map_err(io_err("write time index", &tp))?;
    Ok(())
}

/// Scan a segment file from the start through the recovery decision table.
async fn scan_segment<F: SegmentFile>(
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
                    detail: damage.to_string(),
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
