//! The flusher: the one task that writes a partition's files.
//!
//! Owns when I/O happens. Each round writes the chunks queued at its start (see
//! [`super::writer`]) and, when a sync is due, runs a group commit: seal
//! everything appended so far, write it, one fdatasync, publish the new
//! durable offset, maybe write a checkpoint. A sync is due when an acks=all
//! waiter or a waiting reader asks, when a quarter of the partition's cache
//! share is unsynced (`append::sync_trigger_bytes`) (these three no sooner
//! than `sync_min_interval` after the last sync started), when data has been dirty for
//! `flush_interval_ms` (measured on the log's clock), when the shard's
//! write budget is under pressure, when closing, and (to retry) after a
//! full disk.
//!
//! Lifecycle: spawned by the owning shard after [`Log::open`]; exits when
//! the log is closed or has failed. Failure handling: ENOSPC keeps the data
//! queued and retries every 100 ms; any other write or sync error fails the
//! partition (writes refused until reopened).

use super::super::checkpoint::{self, Checkpoint};
use super::super::file::{write_small_file, IoBuf, SegmentFile};
use super::super::io_stats;
use super::super::segment;
use super::super::StorageError;
use super::index_files;
use super::{io_err, Buf, Disk, Health, Log, Pending};
use std::rc::Rc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// How long a full disk waits before the next try.
const NO_SPACE_RETRY: Duration = Duration::from_millis(100);

/// What one flusher round has to do.
struct Round {
    has_chunks: bool,
    want_sync: bool,
    closing: bool,
    /// When to look again if there is nothing to do now.
    timeout: Option<Duration>,
}

/// What a group commit takes from the state at its sync point.
struct SyncPoint<B> {
    items: std::collections::VecDeque<Pending<B>>,
    tail: Option<(u64, B)>,
    target: u64,
    active_base: u64,
    active_len: u64,
    checkpoint: Option<Checkpoint>,
}

impl<D: Disk> Log<D> {
    /// The flusher: the only task that writes this partition's files.
    /// Runs until the log is closed or fails.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            let wake = self.flusher_event.listen();
            let pressure = self.st.borrow().unwritten.budget().pressure();
            let Some(round) = self.plan_round() else {
                return;
            };
            if !round.has_chunks && !round.want_sync {
                if round.closing {
                    self.notify_durable();
                    return;
                }
                // Woken by work, by an append waiting for the shard's
                // write budget, or by the flush interval.
                let wake = futures_lite::future::or(wake, pressure);
                match round.timeout {
                    Some(t) => futures_lite::future::or(wake, self.clock.sleep(t)).await,
                    None => wake.await,
                }
                continue;
            }
            self.st.borrow_mut().flusher_busy = true;
            let round_start = self.clock.now();
            let result = async {
                self.write_pending().await?;
                if round.want_sync {
                    self.sync_now(round.closing).await?;
                }
                Ok::<(), StorageError>(())
            }
            .await;
            self.st.borrow_mut().flusher_busy = false;
            let took = self.clock.now().saturating_duration_since(round_start);
            if took >= io_stats::SLOW_DISK_OP {
                // Each operation may be quick while the round is not: with
                // acks=1, readers see only synced data, so a long round is
                // a visible end that stood still.
                debug!(
                    dir = %self.dir.display(),
                    took_ms = took.as_millis() as u64,
                    synced = round.want_sync,
                    "a flusher round (writes, then a group commit when due) took long"
                );
            }
            if !self.finish_round(result).await {
                return;
            }
            self.trim_cache();
        }
    }

    /// Decide what this round does; None when the partition has failed.
    fn plan_round(&self) -> Option<Round> {
        let st = self.st.borrow();
        if matches!(st.health, Health::Failed(_)) {
            return None;
        }
        if st.truncating {
            // The truncation owns the files; it wakes us when done.
            return Some(Round {
                has_chunks: false,
                want_sync: false,
                closing: false,
                timeout: None,
            });
        }
        let now = self.clock.now();
        let dirty_for = st.dirty_since.map(|t| now.saturating_duration_since(t));
        let interval = Duration::from_millis(self.cfg.flush_interval_ms);
        let interval_due = dirty_for.is_some_and(|d| d >= interval);
        // A full disk is retried by syncing again: whatever failed (a
        // chunk, the tail, the checkpoint) is redone by that round.
        // An asked-for sync (a waiting reader or acks=all producer, the
        // cache trigger) gathers what arrives for `sync_min_interval` after
        // the last one started: back to back, a tailing consumer made a
        // sync per append.
        let asked = st.sync_wanted_offset > st.offsets.durable();
        let asked_at = st
            .last_sync_at
            .map(|t| t + self.cfg.sync_min_interval)
            .filter(|t| *t > now);
        let want_sync = (asked && asked_at.is_none())
            || interval_due
            || st.unwritten.pressed()
            || (st.closing && !st.closed)
            || matches!(st.health, Health::NoSpace);
        let timeout = match st.health {
            Health::NoSpace => Some(NO_SPACE_RETRY),
            _ => dirty_for.map(|d| interval.saturating_sub(d)),
        };
        let timeout = match asked_at.filter(|_| asked && !want_sync) {
            Some(t) => Some(timeout.map_or(t - now, |d| d.min(t - now))),
            None => timeout,
        };
        Some(Round {
            has_chunks: !st.pending.is_empty(),
            want_sync,
            closing: st.closing,
            timeout,
        })
    }

    /// Record a round's outcome in the partition's health. Returns false
    /// when the flusher must stop (the partition failed).
    async fn finish_round(&self, result: Result<(), StorageError>) -> bool {
        match result {
            Ok(()) => {
                let mut st = self.st.borrow_mut();
                if matches!(st.health, Health::NoSpace) {
                    info!(dir = %self.dir.display(), "space available again; writes resumed");
                    st.health = Health::Ok;
                }
                drop(st);
                // A truncation may be waiting for the flusher to be idle.
                self.durable_event.notify();
                true
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
                self.clock.sleep(NO_SPACE_RETRY).await;
                true
            }
            Err(e) => {
                error!(dir = %self.dir.display(), "partition failed, refusing further writes: {e}");
                {
                    let mut st = self.st.borrow_mut();
                    st.health = Health::Failed(Box::new(e));
                    // Never to be written: give the shard its budget back.
                    st.unwritten.abandon();
                }
                self.notify_durable();
                false
            }
        }
    }

    /// Group commit: seal what was appended, write it, fdatasync, publish.
    ///
    /// Only the items queued up to the sync point are written in this round:
    /// later appends may queue a chunk that rewrites the tail block, and it
    /// must not land before this round's (older) tail write.
    pub(super) async fn sync_now(&self, closing: bool) -> Result<(), StorageError> {
        let sp = self.take_sync_point(closing);
        let (target, active_base, active_len) = (sp.target, sp.active_base, sp.active_len);
        let checkpoint = sp.checkpoint;
        let file = self
            .write_and_sync(sp.items, sp.tail, active_base)
            .await
            .inspect_err(|_| self.mark_dirty())?;
        {
            let mut st = self.st.borrow_mut();
            st.offsets.synced(target);
            let flushed = st.offsets.flushed();
            st.unwritten.written_up_to(flushed);
            st.assert_invariants();
        }
        self.notify_durable();
        if closing {
            self.finish_close(&file, active_base, active_len).await?;
        }
        if let Some(cp) = checkpoint {
            self.write_checkpoint(&cp, active_base, active_len, target)
                .await?;
        }
        if closing {
            let mut st = self.st.borrow_mut();
            if st.pending.is_empty() && st.offsets.next() == target {
                st.closed = true;
            }
        }
        self.notify_durable();
        Ok(())
    }

    /// Seal everything appended so far and take it, with the checkpoint
    /// that describes exactly this point (when one is due).
    fn take_sync_point(&self, closing: bool) -> SyncPoint<Buf<D>> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        let mut sealed = Vec::new();
        let next = st.offsets.next();
        let tail = st.appender.sync_point(next, &self.disk, &mut sealed);
        st.pending.extend(sealed.into_iter().map(Pending::Chunk));
        let items = std::mem::take(&mut st.pending);
        let seg = st.segments.active();
        let interval = Duration::from_millis(self.cfg.checkpoint_interval_ms);
        let now = self.clock.now();
        let due = closing
            || st
                .last_checkpoint
                .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        let checkpoint =
            due.then(|| Checkpoint::from_table(seg.base_offset, seg.len, next, &st.producers));
        st.dirty_since = None;
        st.last_sync_at = Some(now);
        st.unsynced_bytes = 0;
        SyncPoint {
            items,
            tail,
            target: next,
            active_base: seg.base_offset,
            active_len: seg.len,
            checkpoint,
        }
    }

    /// A failed sync leaves the data dirty: the flush interval applies again.
    fn mark_dirty(&self) {
        let now = self.clock.now();
        self.st.borrow_mut().dirty_since.get_or_insert(now);
    }

    /// Write the items and the padded tail block, then fdatasync the active segment.
    async fn write_and_sync(
        &self,
        items: std::collections::VecDeque<Pending<Buf<D>>>,
        tail: Option<(u64, Buf<D>)>,
        active_base: u64,
    ) -> Result<Rc<D::File>, StorageError> {
        self.write_items(items).await?;
        let file = self.ensure_file(active_base).await?;
        if let Some((pos, buf)) = tail {
            let end = pos + buf.as_bytes().len() as u64;
            self.reserve(active_base, &file, end).await?;
            self.write_all(&file, Rc::new(buf), pos).await?;
        }
        let path = segment::log_path(&self.dir, active_base);
        let (synced, took) = self.timed_took("sync", &path, 0, file.sync()).await;
        synced.map_err(io_err("sync", &path))?;
        io_stats::synced(took);
        Ok(file)
    }

    /// Drop the zero padding of the last block: the file then ends exactly
    /// at the checkpointed length, so the next open's scan of the last
    /// segment finds no tail to cut. Appending again rewrites that block
    /// from the appender's copy, so nothing depends on the padding.
    async fn finish_close(
        &self,
        file: &Rc<D::File>,
        active_base: u64,
        active_len: u64,
    ) -> Result<(), StorageError> {
        let path = segment::log_path(&self.dir, active_base);
        self.timed("truncate", &path, 0, file.truncate(active_len))
            .await
            .map_err(io_err("truncate", &path))?;
        self.timed("sync", &path, 0, file.sync())
            .await
            .map_err(io_err("sync", &path))?;
        let index = self.st.borrow().segments.active().index.clone();
        index_files::write(&self.disk, &self.dir, active_base, &index).await
    }

    async fn write_checkpoint(
        &self,
        cp: &Checkpoint,
        active_base: u64,
        active_len: u64,
        target: u64,
    ) -> Result<(), StorageError> {
        let p = self.dir.join(checkpoint::FILE_NAME);
        let cp = cp.encode();
        self.timed(
            "write checkpoint",
            &p,
            cp.len(),
            write_small_file(&self.disk, &p, &cp),
        )
        .await
        .map_err(io_err("write checkpoint", &p))?;
        debug!(dir = %self.dir.display(), segment = active_base, position = active_len, next = target, "checkpoint");
        self.st.borrow_mut().last_checkpoint = Some(self.clock.now());
        Ok(())
    }
}
