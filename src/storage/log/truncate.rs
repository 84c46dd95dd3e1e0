//! Truncation at either end of the log.
//!
//! - Retention ([`Log::apply_retention`]) removes whole sealed segments
//!   from the front, by age and size, and those wholly below the log start
//!   (after DeleteRecords), and moves the log start.
//! - DeleteRecords ([`Log::delete_records_before`]) raises the log start to
//!   an offset, durably (the [`LOG_START_FILE`] floor, read back by the
//!   replayer at open and after a suffix truncation), then applies
//!   retention to free the segments wholly below it. A replicated
//!   partition raises the floor alone ([`Log::raise_log_start`]) and frees
//!   segments only where its Raft log's start moved
//!   ([`Log::delete_segments_before`]).
//! - Suffix truncation ([`Log::truncate_suffix`]) removes every batch at
//!   and after an offset, for a follower whose tail diverged from its
//!   leader's. It waits for the flusher to be idle with everything durable,
//!   changes the files durably, and then recovers from them with the
//!   replayer, so segments, indexes, producer state, the appender and the
//!   offsets are rebuilt exactly as a restart would rebuild them; the cache
//!   is emptied.
//!
//! Both run on the partition's shard. While a suffix truncation runs,
//! appends are refused ([`StorageError::Closed`]) and the flusher idles.
//! A suffix truncation that fails takes the partition offline (reads and
//! writes refused) until it is reopened: the files may then be cut part
//! way, and only recovery can say how far.

use super::super::checkpoint;
use super::super::file::write_small_file;
use super::super::file::SegmentFile;
use super::super::offsets::LogOffsets;
use super::super::retention::{segments_to_delete, SegmentStat};
use super::super::segment;
use super::super::StorageError;
use super::replayer::{replay, scan_segment};
use super::{io_err, Disk, Health, Log, LogConfig, LogState, LOG_START_FILE};
use crate::format::BatchHeader;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;
use tracing::{error, info, warn};

/// A segment taken out of the log, whose files are to be removed.
struct Doomed<F> {
    base: u64,
    file: Option<Rc<F>>,
}

/// How long a deleted segment's close waits for reads still holding it.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl<D: Disk> Log<D> {
    /// The log start retention would leave now (the base of the first
    /// segment it would keep), if it would delete any segment; deletes
    /// nothing. A replicated partition's replica moves its Raft log's
    /// start there first, then deletes with [`Self::delete_records_before`].
    pub fn retention_candidate(&self, now: i64) -> Option<u64> {
        let st = self.st.borrow();
        if st.truncating {
            return None;
        }
        let n = self.by_limits(&st, now).max(Self::below_floor(&st));
        (n > 0).then(|| st.segments.sealed_prefix()[n - 1].next_offset)
    }

    /// How many sealed segments, oldest first, lie wholly below the log
    /// start (DeleteRecords' floor).
    fn below_floor(st: &LogState<D>) -> usize {
        let floor = st.offsets.log_start();
        st.segments
            .sealed_prefix()
            .iter()
            .take_while(|s| s.next_offset <= floor)
            .count()
    }

    /// How many sealed segments, oldest first, the topic's retention limits
    /// delete at wall time `now`. Only sealed segments: a roll the flusher
    /// is still finishing must not race with deleting its files;
    /// cleanup.policy without "delete" (compact only) deletes nothing.
    fn by_limits(&self, st: &LogState<D>, now: i64) -> usize {
        let t = self.topic_config();
        if !t.deletes() {
            return 0;
        }
        let stats: Vec<SegmentStat> = st
            .segments
            .sealed_prefix()
            .iter()
            .map(|s| SegmentStat {
                base_offset: s.base_offset,
                len: s.len,
                max_timestamp: s.max_timestamp,
            })
            .collect();
        let total = st.segments.total_bytes();
        segments_to_delete(&stats, total, now, t.retention_ms, t.retention_bytes).len()
    }

    /// Make the log empty, starting at `start` (any offset, below or past
    /// the current end): a replica that installs a Raft snapshot. Waits,
    /// like a suffix truncation, until everything appended is durable and
    /// the flusher is idle; removes the checkpoint and every segment
    /// (newest first, each removal durable), then writes the log start
    /// file, then recovers from the (empty) directory, which starts the
    /// log at that floor. A crash in between leaves a prefix of the old
    /// log or an empty one; the caller (which saved its intent first)
    /// calls this again.
    pub async fn restart_at(&self, start: u64) -> Result<(), StorageError> {
        self.quiesce_for_truncation().await?;
        let r = self.remove_all_and_recover(start).await;
        self.end_truncation(r, "restarting the log")
    }

    async fn remove_all_and_recover(&self, start: u64) -> Result<(), StorageError> {
        let bases: Vec<u64> = self
            .st
            .borrow()
            .segments
            .iter()
            .map(|s| s.base_offset)
            .collect();
        remove_if_exists(&self.disk, &self.dir.join(checkpoint::FILE_NAME)).await?;
        self.sync_dir().await?;
        for &base in bases.iter().rev() {
            self.remove_segment_files(base, true).await?;
            self.sync_dir().await?;
        }
        let path = self.dir.join(LOG_START_FILE);
        write_small_file(&self.disk, &path, format!("{start}\n").as_bytes())
            .await
            .map_err(io_err("write log start", &path))?;
        self.sync_dir().await?;
        self.recover_after_truncation().await?;
        let (s, next) = (self.log_start_offset(), self.next_offset());
        assert_eq!(
            (s, next),
            (start, start),
            "an emptied log starts at its floor"
        );
        warn!(dir = %self.dir.display(), start, "log emptied; it starts again at {start}");
        Ok(())
    }

    /// Apply retention: delete whole closed segments past the limits.
    /// Returns the number of segments deleted.
    pub async fn apply_retention(&self, now: i64) -> Result<usize, StorageError> {
        let doomed = {
            let mut st = self.st.borrow_mut();
            if st.truncating {
                return Ok(0);
            }
            self.roll_expired_active(&mut st, now);
            // Sealed segments wholly below the log start (DeleteRecords'
            // floor) go too.
            let n = self.by_limits(&st, now).max(Self::below_floor(&st));
            self.unlink_oldest(&mut st, n)
        };
        self.remove_unlinked(doomed).await
    }

    /// A replicated partition's compaction: delete the sealed segments
    /// wholly below `boundary` (a segment boundary at or below the log
    /// start), and no others: the Raft log's first index was moved to
    /// exactly there, so retention's limits (which may have moved on since
    /// the boundary was chosen) must not delete more.
    pub async fn delete_segments_before(&self, boundary: u64) -> Result<usize, StorageError> {
        let doomed = {
            let mut st = self.st.borrow_mut();
            if st.truncating {
                return Err(StorageError::Closed);
            }
            assert!(
                boundary <= st.offsets.log_start(),
                "segments below {boundary} are deleted only once the log starts there ({})",
                st.offsets.log_start()
            );
            let n = st
                .segments
                .sealed_prefix()
                .iter()
                .take_while(|s| s.next_offset <= boundary)
                .count();
            let doomed = self.unlink_oldest(&mut st, n);
            assert!(
                st.segments.log_start() >= boundary || n == 0,
                "{boundary} is a segment boundary"
            );
            doomed
        };
        self.remove_unlinked(doomed).await
    }

    /// Take the `n` oldest (sealed) segments out of the set and move the
    /// log start past them; returns their base offsets, whose files the
    /// caller removes ([`Self::remove_unlinked`]).
    fn unlink_oldest(&self, st: &mut LogState<D>, n: usize) -> Vec<Doomed<D::File>> {
        let removed: Vec<Doomed<D::File>> = st
            .segments
            .remove_oldest(n)
            .into_iter()
            .map(|s| Doomed {
                base: s.base_offset,
                file: s.file,
            })
            .collect();
        if n > 0 {
            // The floor may be above the new first segment's base.
            let new_start = st.segments.log_start().max(st.offsets.log_start());
            st.offsets.start_moved(new_start);
            // Cached batches below the new start are gone too.
            st.cache.evict_below(new_start);
            st.assert_invariants();
            info!(dir = %self.dir.display(), deleted = n, log_start = new_start, "retention deleted segments");
        }
        removed
    }

    async fn remove_unlinked(&self, doomed: Vec<Doomed<D::File>>) -> Result<usize, StorageError> {
        let n = doomed.len();
        for d in doomed {
            // Close our descriptor before the file is unlinked: the inode is
            // freed (its blocks released, and discarded on a file system
            // mounted with `discard`) by whichever of the two comes last,
            // and the unlink runs off the shard (`Disk::remove`). Freeing a
            // 0.5 GiB segment on the shard's thread held it 200 ms.
            if let Some(file) = d.file {
                self.close_when_unshared(file).await;
            }
            self.remove_segment_files(d.base, true).await?;
        }
        if n > 0 {
            self.sync_dir().await?;
        }
        Ok(n)
    }

    /// Close a deleted segment's file once no read holds it any more
    /// (reads in flight keep a reference for a few ms). After
    /// [`CLOSE_WAIT`] it is dropped instead, and the descriptor closes
    /// when the last read ends.
    async fn close_when_unshared(&self, mut file: Rc<D::File>) {
        let waited = self.clock.now();
        loop {
            match Rc::try_unwrap(file) {
                Ok(f) => {
                    if let Err(e) = f.close().await {
                        warn!(dir = %self.dir.display(), "closing a deleted segment: {e}");
                    }
                    return;
                }
                Err(shared) if self.clock.now() - waited < CLOSE_WAIT => {
                    file = shared;
                    self.clock.sleep(Duration::from_millis(1)).await;
                }
                Err(_) => return,
            }
        }
    }

    /// DeleteRecords: make `offset` the log start, durably, then delete the
    /// sealed segments wholly below it. `offset` must not pass the durable
    /// offset (the caller checks it against the high watermark; asserted).
    /// Returns the log start after the call (unchanged if `offset` is not
    /// above it). Allowed on a full disk (freeing space is what it is
    /// for), refused on a failed or offline log and during a suffix
    /// truncation.
    pub async fn delete_records_before(&self, offset: u64) -> Result<u64, StorageError> {
        self.raise_log_start(offset).await?;
        self.apply_retention(self.clock.wall_ms()).await?;
        Ok(self.log_start_offset())
    }

    /// Make `offset` the log start, durably, and delete nothing: readers
    /// no longer see what is below it, but [`Self::read_stored`] still
    /// does (a replicated partition's followers may need those entries
    /// until its compaction moves the Raft log's start past them). Returns
    /// the log start after the call.
    pub async fn raise_log_start(&self, offset: u64) -> Result<u64, StorageError> {
        if let Some(e) = self.offline_cause() {
            return Err(e);
        }
        {
            let st = self.st.borrow();
            if let Health::Failed(_) = st.health {
                self.check_health(&st.health)?;
            }
            if st.closing || st.truncating {
                return Err(StorageError::Closed);
            }
            assert!(
                offset <= st.offsets.durable(),
                "DeleteRecords past the high watermark"
            );
            if offset <= st.offsets.log_start() {
                return Ok(st.offsets.log_start());
            }
        }
        // Durable before it is visible: a crash after the answer must not
        // bring the deleted records back.
        let path = self.dir.join(LOG_START_FILE);
        write_small_file(&self.disk, &path, format!("{offset}\n").as_bytes())
            .await
            .map_err(io_err("write log start", &path))?;
        self.sync_dir().await?;
        {
            let mut st = self.st.borrow_mut();
            if st.truncating {
                // A suffix truncation started meanwhile; its recovery reads
                // the file back (capped at the new end).
                return Err(StorageError::Closed);
            }
            // Two concurrent calls: the larger floor wins (records_deleted
            // never moves the start back).
            st.offsets.records_deleted(offset);
            let start = st.offsets.log_start();
            st.cache.evict_below(start);
            st.assert_invariants();
        }
        info!(dir = %self.dir.display(), log_start = offset, "records deleted (DeleteRecords)");
        Ok(self.log_start_offset())
    }

    /// An active segment whose data is all older than retention is rolled
    /// so it can go next time (Kafka does the same).
    fn roll_expired_active(&self, st: &mut LogState<D>, now: i64) {
        let t = self.topic_config();
        let active = st.segments.active();
        if t.retention_ms >= 0
            && t.deletes()
            && !active.is_empty()
            && active.max_timestamp >= 0
            && now - active.max_timestamp > t.retention_ms
            && matches!(st.health, Health::Ok)
        {
            let mut sealed = Vec::new();
            self.roll_locked(st, &mut sealed);
        }
    }

    /// Remove every batch whose last offset is at or after `offset`,
    /// durably, and return the new log end (`offset`, or the base of the
    /// batch that straddles it). For a follower whose tail diverged from
    /// its leader's. `offset` at or past the log end changes nothing.
    /// `offset` must not be below the log start (an `assert!`): a replica
    /// whose whole log diverged starts over rather than truncating.
    pub async fn truncate_suffix(&self, offset: u64) -> Result<u64, StorageError> {
        {
            let st = self.st.borrow();
            if offset >= st.offsets.next() {
                return Ok(st.offsets.next());
            }
            assert!(
                offset >= st.offsets.log_start(),
                "truncating below the log start ({offset} < {})",
                st.offsets.log_start()
            );
        }
        self.quiesce_for_truncation().await?;
        let r = self.truncate_files_and_recover(offset).await;
        self.end_truncation(r, "suffix truncation")
    }

    /// Give the files back to appends and the flusher after a truncation
    /// or restart. One that failed may have changed the files part way
    /// (always a valid prefix of the log) while the state still describes
    /// them whole: reads and writes are refused until the log is reopened
    /// and recovery says what is there.
    fn end_truncation<T>(&self, r: Result<T, StorageError>, what: &str) -> Result<T, StorageError> {
        {
            let mut st = self.st.borrow_mut();
            st.truncating = false;
            if let Err(e) = &r {
                error!(dir = %self.dir.display(), "{what} failed; partition offline until reopened: {e}");
                st.health = Health::Failed(Box::new(e.clone()));
                st.offline.get_or_insert(StorageError::Failed {
                    dir: self.dir.clone(),
                    cause: Box::new(e.clone()),
                });
                st.unwritten.abandon();
            }
        }
        self.flusher_event.notify();
        self.notify_durable();
        r
    }

    /// Wait until everything appended is durable and the flusher is idle,
    /// then take the files (appends refused, flusher parked).
    async fn quiesce_for_truncation(&self) -> Result<(), StorageError> {
        loop {
            let listener = self.durable_event.listen();
            {
                let mut st = self.st.borrow_mut();
                if let Some(e) = &st.offline {
                    return Err(e.clone());
                }
                self.check_health(&st.health)?;
                if st.closing || st.truncating {
                    return Err(StorageError::Closed);
                }
                let next = st.offsets.next();
                if st.pending.is_empty() && st.offsets.durable() == next && !st.flusher_busy {
                    st.truncating = true;
                    return Ok(());
                }
                st.sync_wanted_offset = st.sync_wanted_offset.max(next);
                self.flusher_event.notify();
            }
            listener.await;
        }
    }

    /// Cut the files at the first batch ending at or after `offset`, then
    /// rebuild the state from disk. Order matters for a crash in between:
    /// the checkpoint goes first (it may vouch for bytes about to go), then
    /// later segments newest first, then the cut, so every intermediate
    /// state is a valid, contiguous log.
    async fn truncate_files_and_recover(&self, offset: u64) -> Result<u64, StorageError> {
        let (cut_base, later) = {
            let st = self.st.borrow();
            let cut_base = st.segments.containing(offset).base_offset;
            let later: Vec<u64> = st
                .segments
                .iter()
                .map(|s| s.base_offset)
                .filter(|b| *b > cut_base)
                .collect();
            (cut_base, later)
        };
        // Each removal is made durable before the next, so no crash can
        // keep a newer file while losing an older one's removal.
        remove_if_exists(&self.disk, &self.dir.join(checkpoint::FILE_NAME)).await?;
        self.sync_dir().await?;
        for &base in later.iter().rev() {
            self.remove_segment_files(base, true).await?;
            self.sync_dir().await?;
        }
        // The cut segment becomes the active one: its index files are
        // rewritten when it is closed, and recovery scans it meanwhile.
        self.remove_segment_files(cut_base, false).await?;
        self.sync_dir().await?;
        let (position, new_end) = self.cut_point(cut_base, offset).await?;
        self.cut_segment(cut_base, position).await?;
        warn!(dir = %self.dir.display(), requested = offset, new_end, "log suffix truncated");
        self.recover_after_truncation().await?;
        let next = self.next_offset();
        assert_eq!(next, new_end, "recovery ends where the truncation cut");
        Ok(new_end)
    }

    /// Byte position and offset of the first batch in segment `base` whose
    /// last offset is at or after `offset`.
    async fn cut_point(&self, base: u64, offset: u64) -> Result<(u64, u64), StorageError> {
        let file = self.ensure_file(base).await?;
        let path = segment::log_path(&self.dir, base);
        let size = file.size().await.map_err(io_err("stat segment", &path))?;
        let len = self.st.borrow().segments.get(base).map(|s| s.len);
        let len = len.expect("the cut segment is in the log");
        assert!(len <= size, "a durable segment holds its logical length");
        let scan = scan_segment(&self.disk, &self.dir, &*file, base, len, len, &self.cfg).await?;
        Ok(first_batch_at_or_after(&scan.headers, offset))
    }

    async fn cut_segment(&self, base: u64, position: u64) -> Result<(), StorageError> {
        // A closed segment's file is open read-only: open it for the cut.
        let path = segment::log_path(&self.dir, base);
        let file = self
            .disk
            .open_rw(&path)
            .await
            .map_err(io_err("open segment", &path))?;
        file.truncate(position)
            .await
            .map_err(io_err("truncate suffix", &path))?;
        file.sync().await.map_err(io_err("sync", &path))
    }

    /// Replace the state with what recovery finds on disk now.
    async fn recover_after_truncation(&self) -> Result<(), StorageError> {
        // The topic config in force (index spacing), not the one at open.
        let cfg = LogConfig {
            topic: self.topic_config(),
            ..self.cfg.clone()
        };
        let r = replay(&self.disk, &self.dir, &cfg).await?;
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        // The replayer reads the DeleteRecords floor back: it survives.
        st.offsets = LogOffsets::recovered(r.log_start, r.segments.active().next_offset);
        st.segments = r.segments;
        st.appender = r.appender;
        st.producers = r.producers;
        // The cache may hold batches past the cut, and positions that moved.
        st.cache.clear();
        st.sync_wanted_offset = 0;
        st.unsynced_bytes = 0;
        st.dirty_since = None;
        st.last_checkpoint = None;
        st.segments.assert_ordered();
        st.assert_invariants();
        Ok(())
    }

    /// Delete a segment's files (the log file too, or only its indexes).
    async fn remove_segment_files(&self, base: u64, with_log: bool) -> Result<(), StorageError> {
        let log = segment::log_path(&self.dir, base);
        let indexes = [
            segment::index_path(&self.dir, base),
            segment::time_index_path(&self.dir, base),
        ];
        let paths = indexes.iter().chain(with_log.then_some(&log));
        for p in paths {
            remove_if_exists(&self.disk, p).await?;
        }
        Ok(())
    }

    async fn sync_dir(&self) -> Result<(), StorageError> {
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(io_err("sync dir", &self.dir))
    }
}

async fn remove_if_exists<D: Disk>(disk: &D, p: &Path) -> Result<(), StorageError> {
    if disk.exists(p) {
        disk.remove(p).await.map_err(io_err("remove", p))?;
    }
    Ok(())
}

/// Position and base offset of the first batch (of a segment scanned from
/// byte 0) whose last offset is at or after `offset`.
fn first_batch_at_or_after(headers: &[BatchHeader], offset: u64) -> (u64, u64) {
    let mut position = 0u64;
    for h in headers {
        if h.last_offset() >= offset {
            return (position, h.base_offset);
        }
        position += h.frame_len() as u64;
    }
    unreachable!("offset {offset} is in the segment, so some batch ends at or after it (scanned to byte {position})")
}
