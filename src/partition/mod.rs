//! The partition layer: what of a partition's log is visible, and to whom.
//!
//! Owns the visibility offsets, which storage does not decide:
//! - the *high watermark*: consumers read only below it. For a partition
//!   with one replica it is the log's durable offset (the disk is the
//!   replica: nothing a consumer has seen can vanish in a crash); for a
//!   replicated one, the end of what its Raft group committed and this
//!   replica applied, capped at the durable offset.
//! - the *last stable offset*: equal to the high watermark until
//!   transactions exist.
//! - the *leader epoch* stamped into every batch this replica appends as
//!   leader (0 on a single node, where there is no election).
//!
//! Reads pass the high watermark to storage as the visible end; appends
//! pass the leader epoch. A reader that finds nothing new asks the log for
//! a prompt sync, so acks=1 data becomes visible after one sync rather than
//! after `flush_interval_ms`.
//!
//! Lifecycle and cores: a [`Partition`] wraps the [`Log`] its owning shard
//! opened and lives on that shard, shared through `Rc`; closing it closes
//! the log. The shard reaches storage only through it: appends, reads and
//! maintenance (flusher, retention, cache trimming, config, close).

use crate::clock::Clock;
use crate::config::TopicConfig;
use crate::storage::file::Disk;
use crate::storage::producer_state::ProducerEntry;
use crate::storage::{
    AppendError, AppendOutcome, CacheBudget, Log, LogConfig, ReadError, StorageError, WriteBudget,
};
use bytes::{Bytes, BytesMut};
use std::cell::Cell;
use std::rc::Rc;

/// Leader epoch of a partition that no election ever changed (one node).
pub const SINGLE_NODE_LEADER_EPOCH: i32 = 0;

/// Result of a fetch from one partition.
#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    /// Whole frames; the first contains the requested offset.
    pub frames: Vec<Bytes>,
    pub bytes: usize,
    pub high_watermark: u64,
    pub last_stable_offset: u64,
    pub log_start_offset: u64,
}

/// One partition replica on its owning shard.
pub struct Partition<D: Disk> {
    log: Rc<Log<D>>,
    leader_epoch: Cell<i32>,
    /// For a replicated partition, the end of what its Raft group has
    /// committed and this replica applied (set by `replica::group`); None
    /// for a partition with one replica, whose disk decides.
    replicated_high_watermark: Cell<Option<u64>>,
}

impl<D: Disk> Partition<D> {
    pub fn new(log: Rc<Log<D>>) -> Rc<Self> {
        Rc::new(Partition {
            log,
            leader_epoch: Cell::new(SINGLE_NODE_LEADER_EPOCH),
            replicated_high_watermark: Cell::new(None),
        })
    }

    /// Open (recovering) or create the partition's log in `dir`, timed by
    /// `clock`.
    pub async fn open(
        disk: D,
        dir: std::path::PathBuf,
        cfg: LogConfig,
        cache: Rc<CacheBudget>,
        write: Rc<WriteBudget>,
        clock: Rc<dyn Clock>,
    ) -> Result<Rc<Self>, StorageError> {
        let log = Log::open_with_clock(disk, dir, cfg, cache, write, clock).await?;
        Ok(Self::new(log))
    }

    /// The log's directory (for messages).
    pub fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    /// The flusher: the task that writes and syncs what is appended. The
    /// owning shard runs it for as long as the partition is open.
    pub fn run_flusher(&self) -> impl std::future::Future<Output = ()> + 'static {
        self.log.clone().run_flusher()
    }

    /// Delete what retention allows, judged at wall time `now_ms`; returns
    /// the number of segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        self.log.apply_retention(now_ms).await
    }

    /// The log start retention would leave at wall time `now_ms`, if it
    /// would delete anything (a replicated partition's replica moves its
    /// Raft log's start there first; see `replica::group`).
    pub fn retention_candidate(&self, now_ms: i64) -> Option<u64> {
        self.log.retention_candidate(now_ms)
    }

    /// Empty the log and start it again at `start` (a replica installing a
    /// Raft snapshot); see `Log::restart_at`.
    pub async fn restart_at(&self, start: u64) -> Result<(), StorageError> {
        self.log.restart_at(start).await
    }

    /// Give cached batches beyond the cache's share back; returns bytes freed.
    pub fn trim_cache(&self) -> usize {
        self.log.trim_cache()
    }

    pub fn topic_config(&self) -> TopicConfig {
        self.log.topic_config()
    }

    /// Apply an altered topic config at once (retention, segment size).
    pub fn set_topic_config(&self, t: TopicConfig) {
        self.log.set_topic_config(t)
    }

    /// Flush, sync, write indexes and the checkpoint; the partition takes
    /// no more appends.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.log.close().await
    }

    /// Epoch stamped into the batches this replica appends as leader.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    /// In a cluster: the epoch the controller gave this partition's
    /// current placement (it never goes down).
    pub fn set_leader_epoch(&self, epoch: i32) {
        assert!(
            epoch >= self.leader_epoch.get(),
            "leader epoch went down: {} -> {epoch}",
            self.leader_epoch.get()
        );
        self.leader_epoch.set(epoch);
    }

    /// Consumers read below this: the durable offset with one replica; the
    /// committed (and locally durable) end with several.
    pub fn high_watermark(&self) -> u64 {
        let durable = self.log.durable_offset();
        match self.replicated_high_watermark.get() {
            Some(hw) => hw.min(durable),
            None => durable,
        }
    }

    /// The idempotent producers this replica's log remembers, by producer id.
    pub fn producers(&self) -> Vec<(i64, ProducerEntry)> {
        self.log.producers()
    }

    /// Bring in the producer table as of the log start (a replica whose
    /// log start retention or a Raft snapshot moved); see
    /// `Log::merge_start_producers`.
    pub fn merge_start_producers(&self, start: &crate::storage::producer_state::ProducerTable) {
        self.log.merge_start_producers(start)
    }

    /// Whether a Raft group replicates this partition.
    pub fn is_replicated(&self) -> bool {
        self.replicated_high_watermark.get().is_some()
    }

    /// A replicated partition's group committed and applied up to `offset`.
    /// It never goes down while this replica lives.
    /// Move the replicated high watermark up to `offset` if it is below.
    pub fn raise_replicated_high_watermark(&self, offset: u64) {
        if self
            .replicated_high_watermark
            .get()
            .is_none_or(|hw| hw < offset)
        {
            self.replicated_high_watermark.set(Some(offset));
        }
    }

    pub fn set_replicated_high_watermark(&self, offset: u64) {
        if let Some(old) = self.replicated_high_watermark.get() {
            assert!(offset >= old, "high watermark went down: {old} -> {offset}");
        }
        self.replicated_high_watermark.set(Some(offset));
    }

    /// Append frames whose offsets and epochs are already stamped, as a
    /// replica of a Raft group does (see `replica::entry`).
    pub fn append_at(&self, frames: Vec<BytesMut>) -> Result<AppendOutcome, AppendError> {
        self.log.append_at(frames)
    }

    /// Remove every batch from `offset` on (a divergent Raft suffix),
    /// durably; returns the new log end.
    pub async fn truncate_suffix(&self, offset: u64) -> Result<u64, StorageError> {
        self.log.truncate_suffix(offset).await
    }

    /// Read whole frames from `offset` up to the log end, visible or not:
    /// for replication and recovery, never for consumers.
    pub async fn read_unreplicated(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ReadError> {
        let end = self.log.next_offset();
        Ok(self.log.read_stored(offset, max_bytes, end).await?.frames)
    }

    /// The first offset [`Self::read_unreplicated`] serves (a replicated
    /// partition's Raft log starts there; the log start readers see may be
    /// above it, after DeleteRecords).
    pub fn first_stored_offset(&self) -> u64 {
        self.log.first_stored_offset()
    }

    /// A replicated partition's DeleteRecords, as each replica applies it
    /// (see `replica::entry::CONTROL_DELETE_RECORDS`): raise the log start
    /// readers see, durably, and delete nothing (the Raft log's start moves
    /// only with a compaction). `offset` must be durable here (asserted).
    pub async fn raise_log_start(&self, offset: u64) -> Result<u64, StorageError> {
        self.log.raise_log_start(offset).await
    }

    /// A replicated partition's compaction: delete the segments wholly
    /// below `boundary`, where its Raft log now starts.
    pub async fn delete_segments_before(&self, boundary: u64) -> Result<usize, StorageError> {
        self.log.delete_segments_before(boundary).await
    }

    /// Read-committed consumers read below this. Without transactions it
    /// is the high watermark.
    pub fn last_stable_offset(&self) -> u64 {
        self.high_watermark()
    }

    /// Every offset below this is covered by an fdatasync (acks=all).
    pub fn durable_offset(&self) -> u64 {
        self.log.durable_offset()
    }

    /// The log end: where the next append goes (may be beyond the high watermark).
    pub fn log_end_offset(&self) -> u64 {
        self.log.next_offset()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// An idempotent producer's batch against the producer table as of
    /// the log end (a replicated partition's leader checks before it
    /// proposes).
    pub fn check_sequence(
        &self,
        frame: &[u8],
    ) -> Result<
        crate::storage::producer_state::SeqCheck,
        crate::storage::producer_state::SequenceError,
    > {
        self.log.check_sequence(frame)
    }

    /// Append as leader, stamping `leader_epoch` into every batch.
    pub fn append(
        &self,
        frames: Vec<BytesMut>,
        leader_epoch: i32,
    ) -> Result<AppendOutcome, AppendError> {
        self.log.append(frames, leader_epoch)
    }

    /// Wait until `last_offset` is durable (acks=all).
    pub async fn wait_durable(&self, last_offset: u64) -> Result<(), StorageError> {
        self.log.wait_durable(last_offset).await
    }

    /// Fires when the high watermark may have moved.
    pub fn data_event(&self) -> &Rc<crate::event::LocalEvent> {
        &self.log.data_event
    }

    pub fn offline_cause(&self) -> Option<StorageError> {
        self.log.offline_cause()
    }

    /// Where the partition stands, with no data: the answer for a part of a
    /// fetch that was not read because the answer was already full.
    pub fn position(&self) -> FetchOutcome {
        FetchOutcome {
            frames: Vec::new(),
            bytes: 0,
            high_watermark: self.high_watermark(),
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: self.log_start_offset(),
        }
    }

    /// Read what is visible from `offset` on, up to about `max_bytes`.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<FetchOutcome, ReadError> {
        let visible = self.high_watermark();
        let r = self.log.read(offset, max_bytes, visible).await?;
        if offset >= visible {
            self.log.reader_waiting_at_end();
        }
        // The high watermark may have moved during a disk read: report the
        // current one (it only grows, so it still covers what was read).
        let high_watermark = self.high_watermark();
        Ok(FetchOutcome {
            frames: r.frames,
            bytes: r.bytes,
            high_watermark,
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: r.log_start_offset,
        })
    }

    /// DeleteRecords: make `offset` the log start, durably; returns the log
    /// start after the call. `offset` must not pass the high watermark
    /// (the caller checks; the log asserts it against its durable offset).
    pub async fn delete_records_before(&self, offset: u64) -> Result<u64, StorageError> {
        assert!(
            offset <= self.high_watermark(),
            "DeleteRecords past the high watermark"
        );
        self.log.delete_records_before(offset).await
    }

    /// First visible offset whose batch has max_timestamp >= `ts`; None
    /// when there is none (Kafka answers with the high watermark).
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>, ReadError> {
        self.log
            .offset_for_timestamp(ts, self.high_watermark())
            .await
    }

    /// Base offset of the first visible batch holding the partition's
    /// largest timestamp (Kafka's ListOffsets max_timestamp, -3); None when
    /// no visible record has one.
    pub async fn offset_of_max_timestamp(&self) -> Result<Option<u64>, ReadError> {
        let ts = self.log.max_timestamp();
        if ts < 0 {
            return Ok(None);
        }
        self.offset_for_timestamp(ts).await
    }
}
