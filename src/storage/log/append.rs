//! Appends and segment rolls: the synchronous front of the write path.
//!
//! Owns the step from "frames validated at ingress" to "frames in the log":
//! producer sequence checks, offsets (assigned here for a leader, kept for
//! a follower), the leader epoch stamped into each header (under the header
//! CRC), the segment index, the appender's aligned buffer, the batch cache,
//! and the roll decision. Nothing here awaits: an append happens wholly, in
//! request arrival order, on the partition's shard; the flusher picks up
//! what it queued.

use super::super::appender::Chunk;
use super::super::cache::CachedBatch;
use super::super::producer_state::{SeqCheck, SequenceError};
use super::super::segment::Segment;
use super::super::{AppendError, StorageError};
use super::{AppendOutcome, Buf, Log, LogState, Pending};
use crate::format::frame;
use crate::format::BatchHeader;
use bytes::BytesMut;
use tracing::debug;

impl<D: super::Disk> Log<D> {
    /// Append validated frames as the leader (their CRCs were checked at
    /// ingress), stamping offsets and `leader_epoch` into each header. All
    /// or nothing: every frame is checked before any is appended. The frame
    /// bytes move into the cache.
    pub fn append(
        &self,
        frames: Vec<BytesMut>,
        leader_epoch: i32,
    ) -> Result<AppendOutcome, AppendError> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        self.check_writable(st)?;
        assert!(!frames.is_empty());
        let checked = self.check_batches(st, &frames)?;
        let now = self.clock.wall_ms();
        let mut outcome = AppendOutcome {
            base_offset: u64::MAX,
            last_offset: 0,
            log_start_offset: st.offsets.log_start(),
            duplicate: true,
        };
        let mut sealed = Vec::new();
        for (mut f, (mut h, check)) in frames.into_iter().zip(checked) {
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
            let base = st.offsets.next();
            frame::stamp(&mut f, base, leader_epoch);
            h.base_offset = base;
            h.partition_leader_epoch = leader_epoch;
            self.place(st, f, &h, now, &mut sealed);
            outcome.base_offset = outcome.base_offset.min(base);
            outcome.last_offset = h.last_offset();
        }
        self.after_append(st, !outcome.duplicate, sealed);
        Ok(outcome)
    }

    /// Append frames whose offsets (and leader epochs) a leader assigned,
    /// as a follower does: offsets are kept, and must continue the log
    /// exactly (an `assert!`: the replication layer truncates a divergent
    /// tail first). Producer state records them without sequence checks:
    /// the leader checked.
    pub fn append_at(&self, frames: Vec<BytesMut>) -> Result<AppendOutcome, AppendError> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        self.check_writable(st)?;
        assert!(!frames.is_empty());
        let now = self.clock.wall_ms();
        let mut outcome = AppendOutcome {
            base_offset: u64::MAX,
            last_offset: 0,
            log_start_offset: st.offsets.log_start(),
            duplicate: false,
        };
        let mut sealed = Vec::new();
        let mut expected = st.offsets.next();
        let headers: Vec<BatchHeader> = frames
            .iter()
            .map(|f| {
                let h = frame::parse_header(f).expect("frames are validated before append_at");
                assert_eq!(h.frame_len(), f.len(), "one frame per buffer");
                assert_eq!(
                    h.base_offset, expected,
                    "leader-assigned offsets continue the log end"
                );
                expected = h.last_offset() + 1;
                h
            })
            .collect();
        for (f, h) in frames.into_iter().zip(headers) {
            self.maybe_roll(st, f.len() as u64, now, &mut sealed);
            self.place(st, f, &h, now, &mut sealed);
            outcome.base_offset = outcome.base_offset.min(h.base_offset);
            outcome.last_offset = h.last_offset();
        }
        self.after_append(st, true, sealed);
        Ok(outcome)
    }

    /// Where a batch of an idempotent producer stands against the log's
    /// producer table (as of the log end): new, a retry of one of the
    /// producer's last batches, or out of order. A replicated partition's
    /// leader asks before it proposes (see `replica::group`).
    pub fn check_sequence(&self, frame: &[u8]) -> Result<SeqCheck, SequenceError> {
        let h = frame::parse_header(frame).expect("frames are validated before they are checked");
        self.st.borrow().producers.check(&h)
    }

    /// The error an append gets before it is looked at, if any.
    fn check_writable(&self, st: &LogState<D>) -> Result<(), StorageError> {
        if let Some(e) = &st.offline {
            return Err(e.clone());
        }
        self.check_health(&st.health)?;
        if st.closing || st.truncating {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Check every frame (size, producer sequence) before any is appended.
    /// A scratch producer table lets a request with several batches of one
    /// producer be checked as a whole.
    fn check_batches(
        &self,
        st: &LogState<D>,
        frames: &[BytesMut],
    ) -> Result<Vec<(BatchHeader, SeqCheck)>, AppendError> {
        let parsed: Vec<BatchHeader> = frames
            .iter()
            .map(|f| frame::parse_header(f).expect("frames are validated at ingress"))
            .collect();
        let idempotent = parsed
            .iter()
            .any(|h| h.producer_id >= 0 && h.base_sequence >= 0);
        let mut scratch = idempotent.then(|| st.producers.clone());
        let max = self.topic.borrow().max_batch_bytes as usize;
        let mut checked = Vec::with_capacity(frames.len());
        for (f, h) in frames.iter().zip(parsed) {
            assert_eq!(h.frame_len(), f.len(), "one frame per buffer");
            if f.len() > max {
                return Err(AppendError::BatchTooLarge { len: f.len(), max });
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
            checked.push((h, check));
        }
        Ok(checked)
    }

    /// Put one stamped frame at the log end: segment index, appender,
    /// producer state, write budget, cache, offsets.
    fn place(
        &self,
        st: &mut LogState<D>,
        f: BytesMut,
        h: &BatchHeader,
        now: i64,
        sealed: &mut Vec<Chunk<Buf<D>>>,
    ) {
        let base = h.base_offset;
        let next = h.last_offset() + 1;
        let seg = st.segments.active_mut();
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
        st.appender.append(&f, base, next, &self.disk, sealed);
        st.producers.record(h);
        st.unwritten.appended(next, f.len());
        st.unsynced_bytes += f.len();
        st.cache.push(CachedBatch {
            base_offset: base,
            last_offset: h.last_offset(),
            segment_base: seg_base,
            position: pos,
            frame: f.freeze(),
        });
        st.offsets.appended(next);
        st.assert_invariants();
    }

    /// After the frames are placed: mark the log dirty, hand sealed chunks
    /// to the flusher, and keep the cache within budget.
    fn after_append(&self, st: &mut LogState<D>, appended: bool, sealed: Vec<Chunk<Buf<D>>>) {
        if appended {
            if st.dirty_since.is_none() {
                // The first dirty data since the last sync: an idle flusher
                // waits with no timer, so wake it to start the flush
                // interval (else the data would wait for the next chunk,
                // waiter or reader, however long that takes).
                st.dirty_since = Some(self.clock.now());
                self.flusher_event.notify();
            }
            if st.reader_waiting {
                // Someone is long-polling for this: sync it now rather than
                // at the flush interval.
                st.reader_waiting = false;
                st.sync_wanted_offset = st.sync_wanted_offset.max(st.offsets.next());
                self.flusher_event.notify();
            } else if st.unsynced_bytes >= sync_trigger_bytes(st.cache.share())
                && st.sync_wanted_offset < st.offsets.next()
            {
                // Consumers see only durable data, and the cache keeps the
                // newest `share` bytes. Left to the flush interval (1 s),
                // a partition at 350 MiB/s made a second of data visible at
                // once, most of it already evicted: a consumer with a
                // backlog (so not long-polling, which asks for a sync
                // itself) then read everything from disk, beside the
                // writes, and never caught up (issue 14). Syncing every
                // quarter share keeps the visible end inside the cache.
                st.sync_wanted_offset = st.offsets.next();
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
        let flushed = st.offsets.flushed();
        st.cache.evict(flushed);
    }

    fn maybe_roll(
        &self,
        st: &mut LogState<D>,
        frame_len: u64,
        now: i64,
        sealed: &mut Vec<Chunk<Buf<D>>>,
    ) {
        let seg = st.segments.active();
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

    /// Start a new active segment at the log end; the flusher closes the
    /// old one (queued behind the old segment's last chunks).
    pub(super) fn roll_locked(&self, st: &mut LogState<D>, sealed: &mut Vec<Chunk<Buf<D>>>) {
        let old = st.segments.active();
        let (old_base, old_len) = (old.base_offset, old.len);
        let new_base = st.offsets.next();
        assert!(new_base > old_base, "rolling an empty segment");
        // Push the tail of the old segment ahead of the roll marker.
        st.appender.roll(new_base, new_base, &self.disk, sealed);
        st.pending.extend(sealed.drain(..).map(Pending::Chunk));
        st.pending.push_back(Pending::Roll {
            old_base,
            old_len,
            new_base,
        });
        st.segments.push_active(Segment::new(new_base));
        st.assert_invariants();
        debug!(dir = %self.dir.display(), old_base, new_base, "segment roll");
        self.flusher_event.notify();
    }
}

/// Unsynced bytes of one partition at which its flusher syncs without
/// waiting for the flush interval: a quarter of the partition's cache
/// share, so that what becomes visible is still cached, but at least
/// [`SYNC_TRIGGER_MIN_BYTES`], so that a shard with many partitions (and so
/// a small share each) does not sync each one every few batches; the flush
/// interval still bounds how long their data waits. With 1,000 partitions
/// (a share of ~1 MiB each) a 4 MiB floor left that to the interval, and
/// the live consumer read 416 of 694 MiB/s; at 256 KiB, 497 of 692 (one
/// run each; broker CPU per GB 1.02 and 0.94 s).
pub fn sync_trigger_bytes(cache_share: usize) -> usize {
    (cache_share / 4).max(SYNC_TRIGGER_MIN_BYTES)
}

/// See [`sync_trigger_bytes`].
pub const SYNC_TRIGGER_MIN_BYTES: usize = 256 << 10;
