//! One replica of a partition's Raft group: a raft-rs `RawNode` whose log
//! is the partition's own segment log, one frame per entry.
//!
//! What it does with raft-rs's output (`Ready`), in the order Raft needs:
//! 1. the leader's appends to followers go out at once (Raft allows a
//!    leader to send before its own write is durable: it counts itself
//!    only once it is);
//! 2. new entries are stamped (base offset = where this log ends, leader
//!    epoch = the entry's term; see [`super::entry`]) and appended to the
//!    partition's log after any divergent suffix is truncated;
//! 3. a changed term or vote is saved ([`super::hard_state`]);
//! 4. the appended entries become durable when the log's flusher syncs
//!    (its group commit, shared by every group and producer of the
//!    partition's shard; the driver asks for the sync);
//! 5. only then do the messages that promise durability go out (append
//!    acknowledgements, a candidate's vote requests), and raft-rs hears
//!    that the ready is persisted ([`PartitionGroup::on_durable`]);
//! 6. committed entries are "applied": for a partition that only moves
//!    the high watermark to the end of the last applied entry's frame.
//!
//! The high watermark therefore never passes the commit index: a consumer
//! never reads a batch that a failover could lose. A proposal is
//! acknowledged (acks=all) when the applied index reaches its index and
//! the entry there still has the proposal's term.
//!
//! Lifecycle and cores: opened by the shard that owns the partition's
//! replica on this broker (after the partition's log is open), driven by
//! that shard's replication driver (ticks, peer messages, proposals), and
//! dropped before the log is closed. Not `Send`.

use super::entry::{self, EntryError};
use super::hard_state::{ReplicaState, StateError, StateFile};
use super::log_index::{Found, LogIndex};
use super::snapshot_data::{SnapshotData, SnapshotDataError};
use super::storage::ReplicaStorage;
use crate::partition::Partition;
use crate::storage::file::Disk;
use crate::storage::producer_state::{last_seq_of, ProducerTable, SeqCheck, SequenceError};
use crate::storage::{AppendError, ReadError, StorageError};
use bytes::{Bytes, BytesMut};
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    HardState, Message, MessageType,
};
use raft::{RawNode, StateRole};
use std::collections::VecDeque;
use std::rc::Rc;

/// Settings of one group (the same on every replica).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// This replica's id (its broker's node id, never 0).
    pub id: u64,
    pub voters: Vec<u64>,
    /// Ticks without a leader before a follower campaigns (randomised
    /// between this and twice this by raft-rs).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Largest append message, and how many may be in flight to one
    /// follower: together the bound on what a slow follower costs.
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Bytes of recent entries a leader keeps in memory for followers
    /// that have not acknowledged them (beyond it, a lagging follower is
    /// served from disk); entries every follower has are dropped at once.
    pub window_bytes: usize,
    /// Election timeout range in ticks, `[min, max)`; None: raft-rs's
    /// default (`election_tick ..< 2 * election_tick`, drawn from the
    /// thread's RNG). A simulation fixes it per replica to replay exactly.
    pub election_range: Option<(usize, usize)>,
    /// The shard's budget for entries in memory, shared by its groups
    /// (see [`super::WindowBudget`]).
    pub memory: super::WindowBudget,
}

impl GroupConfig {
    /// Election timeouts that let the partition's placed leader win its
    /// group's elections when it is up: it times out after `election_tick`
    /// or one tick more, the other replicas in the second half of raft-rs's
    /// usual range (`1.5 ×` to `2 × election_tick`). Four ticks apart at
    /// the least, the placed leader wins the first election even if it
    /// opened the group a little later. Its range is two ticks wide, not
    /// one, because two replicas may both hold it (one placed before a
    /// reassignment, one after): with a fixed timeout each, both timing out
    /// together after the same leader's loss would split every vote.
    ///
    /// Why: with the whole range for every replica, which one led was
    /// chance and timing (whichever opened the group first), and the
    /// controller's placement, which spreads leaders over the brokers, was
    /// lost: a test once found every `__consumer_offsets` partition led by
    /// one node, so every group's coordinator was there. When the placed
    /// leader is down, a follower takes over within the usual worst case,
    /// 2 × `election_tick`.
    pub fn prefer_leader(&mut self, placed_leader: bool) {
        let (e, half) = (self.election_tick, self.election_tick / 2);
        self.election_range = Some(if placed_leader {
            (e, e + 2)
        } else {
            (e + half, 2 * e)
        });
    }

    pub fn new(id: u64, voters: Vec<u64>) -> GroupConfig {
        GroupConfig {
            id,
            voters,
            election_tick: 10,
            // Three heartbeats per shortest election timeout: fewer messages
            // for idle groups (each heartbeat costs both sides a step and a
            // ready cycle per group) while a lost one or two do not start
            // an election.
            heartbeat_tick: 3,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 16,
            window_bytes: 8 << 20,
            election_range: None,
            memory: super::WindowBudget::unlimited(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("the log holds {frames} frames but the replica has no saved Raft state")]
    Unmanaged { frames: u64 },
    #[error("the log starts at {log_start} but the replica's saved state at {saved}")]
    Start { log_start: u64, saved: u64 },
    #[error("a snapshot from the leader is not a shardlog position ({len} bytes of data): {why}")]
    BadSnapshot {
        len: usize,
        #[source]
        why: SnapshotDataError,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("proposal dropped by raft (leadership transfer or too many uncommitted bytes)")]
    Dropped,
    /// An idempotent producer's batch out of order or from a fenced epoch.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// A retry of a batch too far back for its entry to be known: it is in
    /// the log at `base_offset` (committed once the high watermark passed it).
    #[error("duplicate of the batch at offset {base_offset}")]
    Duplicate { base_offset: u64 },
}

/// A proposal of an idempotent producer not yet in this leader's log (so
/// not yet in the log's producer table): a retry of it must get the same
/// proposal, and the producer's next batch must follow it.
#[derive(Debug, Clone, Copy)]
struct PendingSeq {
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    proposed: Proposed,
}

/// Where a proposal went: acknowledged (acks=all) once
/// [`PartitionGroup::outcome`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    pub index: u64,
    pub term: u64,
}

/// What became of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Committed and applied; its frame starts at this offset.
    Committed {
        base_offset: u64,
    },
    /// Another leader's entry took its place: not written.
    Lost,
}

pub struct PartitionGroup<D: Disk> {
    raw: RawNode<ReplicaStorage>,
    store: ReplicaStorage,
    partition: Rc<Partition<D>>,
    state_file: StateFile<D>,
    /// What was last saved in `state_file`.
    saved: ReplicaState,
    applied: u64,
    /// Readies whose appends are not yet durable, oldest first, with the
    /// messages that must wait for them.
    unsent: VecDeque<Unsent>,
    /// Log reads made to serve lagging followers (for tests and the debug
    /// status line: a follower catching up costs about one read per
    /// `FETCH_CHUNK`, not one per message or per request).
    fetch_reads: u64,
    /// Per producer id, its proposals not yet appended here (leader only).
    pending_seqs: std::collections::HashMap<i64, VecDeque<PendingSeq>>,
    /// The leader's last index at each of the last [`ISR_LAG_TICKS`]
    /// ticks, oldest first (for [`Self::in_sync`]).
    last_index_ago: VecDeque<u64>,
    appends_refused: u64,
    /// Snapshots this replica installed (for tests and the status line).
    snapshots_installed: u64,
}

/// How far back (in ticks) a follower must have caught up to be in sync.
pub const ISR_LAG_TICKS: usize = 100;

struct Unsent {
    number: u64,
    /// The log end after this ready's appends.
    durable_at: u64,
    messages: Vec<Message>,
}

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Bytes read from the log per step of recovery's scan and of a fetch.
const READ_CHUNK: usize = 1 << 20;
/// What one fetch for a lagging follower reads ahead: several append
/// messages' worth, so raft-rs's stream of sends up to its in-flight limit
/// is served from memory instead of one disk read per message.
const FETCH_CHUNK: usize = 4 << 20;

impl<D: Disk> PartitionGroup<D> {
    /// Open the replica of an open partition: load the saved Raft state,
    /// index the log's frames as entries (recovery reads the whole log
    /// once), and start as a follower.
    pub async fn open(
        cfg: &GroupConfig,
        disk: D,
        partition: Rc<Partition<D>>,
    ) -> Result<PartitionGroup<D>, ReplicaError> {
        // A replica need not be among the initial voters: one added by a
        // reassignment starts from the group's initial configuration as a
        // non-member and replays the configuration changes that add it.
        assert!(cfg.id != 0 && !cfg.voters.is_empty());
        let (mut state_file, saved) = StateFile::load(disk, partition.dir()).await?;
        // The Raft log starts at the first stored offset; readers' log
        // start may be above it (a DeleteRecords entry applied, its
        // segments not yet compacted away).
        let start = partition.first_stored_offset();
        let mut saved = match saved {
            Some(s) => s,
            None => {
                if partition.log_end_offset() > start {
                    return Err(ReplicaError::Unmanaged {
                        frames: partition.log_end_offset() - start,
                    });
                }
                ReplicaState {
                    first_index: 1,
                    voters: cfg.voters.clone(),
                    start_offset: start,
                    ..Default::default()
                }
            }
        };
        // The log must start where the saved state says entry
        // `first_index` is: a crash may have interrupted a snapshot's log
        // restart (finish it) or a compaction's deletion (redo it).
        if saved.resetting {
            partition.restart_at(saved.start_offset).await?;
            saved.resetting = false;
            state_file.save(&saved).await?;
        } else if partition.first_stored_offset() < saved.start_offset {
            partition.raise_log_start(saved.start_offset).await?;
            partition.delete_segments_before(saved.start_offset).await?;
        }
        let start = partition.first_stored_offset();
        if start != saved.start_offset {
            return Err(ReplicaError::Start {
                log_start: start,
                saved: saved.start_offset,
            });
        }
        let index = LogIndex::new(saved.first_index, saved.prev_term, start);
        let conf: ConfState = saved.conf_state();
        let hard = HardState {
            term: saved.term,
            vote: saved.vote,
            commit: 0,
            ..Default::default()
        };
        let store = ReplicaStorage::new(
            index,
            hard,
            conf,
            saved.conf_index,
            cfg.window_bytes,
            cfg.memory.clone(),
        );
        // Index every frame; keep the entries in the window (it trims
        // itself to its budget once they are unpinned below).
        let mut offset = start;
        let mut next_index = saved.first_index;
        while offset < partition.log_end_offset() {
            let frames = partition.read_unreplicated(offset, READ_CHUNK).await?;
            assert!(
                !frames.is_empty(),
                "the log ends at {}",
                partition.log_end_offset()
            );
            for f in frames {
                let base = crate::format::frame::base_offset_of(&f);
                assert_eq!(base, offset, "recovered frames are contiguous");
                let end = base + entry::offsets_of(&f);
                let e = entry::from_frame(f, next_index)?;
                store.append(e, base, end);
                next_index += 1;
                offset = end;
            }
        }
        // The log's producer table was rebuilt from its files: from a
        // checkpoint (which may know batches before the log start) or from
        // the batches after the start alone (after a snapshot's restart, or
        // a truncation that removed the checkpoint). Either way it now
        // knows the batches the log start cut off too.
        partition.merge_start_producers(&ProducerTable::from_entries(&saved.start_producers));
        store.set_start_producers(saved.start_producers.clone());
        let last = store.last_index();
        // The saved commit may lag (it is not saved on every change), and
        // may not pass what the log holds.
        let commit = saved.commit.min(last);
        store.set_commit(commit);
        store.unpin_below(commit + 1);
        let mut rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            applied: commit,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        if let Some((min, max)) = cfg.election_range {
            rc.min_election_tick = min;
            rc.max_election_tick = max;
        }
        rc.validate()?;
        let raw = RawNode::new(&rc, store.clone(), &discard_logger())?;
        // From here on the partition is replicated: its high watermark is
        // the group's (at least the log start: nothing visible yet).
        let end = store.end_offset(commit).unwrap_or(start);
        partition.set_replicated_high_watermark(end);
        Ok(PartitionGroup {
            raw,
            store,
            partition,
            state_file,
            saved,
            applied: commit,
            unsent: VecDeque::new(),
            fetch_reads: 0,
            pending_seqs: std::collections::HashMap::new(),
            last_index_ago: VecDeque::with_capacity(ISR_LAG_TICKS),
            appends_refused: 0,
            snapshots_installed: 0,
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn partition(&self) -> &Rc<Partition<D>> {
        &self.partition
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Whether this replica leads and has applied an entry of its own
    /// term (the empty entry a new leader appends): by Raft's leader
    /// completeness, everything any earlier leader committed is then
    /// applied here, below the high watermark.
    pub fn applied_own_term(&self) -> bool {
        self.is_leader() && self.raw.raft.apply_to_current_term()
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    pub fn last_index(&self) -> u64 {
        self.store.last_index()
    }

    /// Kafka's OffsetForLeaderEpoch on this replica's log: the largest
    /// epoch at or below `epoch` and where it ends (see
    /// [`super::log_index::LogIndex::epoch_end`]).
    pub fn epoch_end(&self, epoch: u64) -> Option<(u64, u64)> {
        self.store.epoch_end(epoch)
    }

    /// Log reads made so far to serve lagging followers.
    pub fn fetch_reads(&self) -> u64 {
        self.fetch_reads
    }

    /// Memory held by recent entries kept for followers.
    pub fn window_bytes(&self) -> usize {
        self.store.window_bytes()
    }

    /// One line of this replica's state for the debug log: role, term,
    /// indexes, the log's durable end, held readies, and each follower's
    /// progress as the leader sees it (match, next, state, in flight).
    pub fn describe(&self) -> String {
        let r = &self.raw.raft;
        let mut s = format!(
            "{:?} term {} last {} commit {} applied {} next_offset {} durable {} held {} window {} fetch_reads {}",
            r.state,
            r.term,
            self.store.last_index(),
            r.raft_log.committed,
            self.applied,
            self.store.next_offset(),
            self.partition.durable_offset(),
            self.unsent.len(),
            self.store.window_bytes(),
            self.fetch_reads,
        );
        if r.state == StateRole::Leader {
            for (id, p) in r.prs().iter() {
                if *id == r.id {
                    continue;
                }
                s.push_str(&format!(
                    " | {id}: match {} next {} {:?} inflight {}{}",
                    p.matched,
                    p.next_idx,
                    p.state,
                    p.ins.count(),
                    if p.is_paused() { " paused" } else { "" }
                ));
            }
        }
        s
    }

    /// Whether [`Self::ready`] (or [`Self::fetch_for_followers`]) has work.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready() || self.store.has_wanted()
    }

    pub fn tick(&mut self) {
        self.raw.tick();
        if self.is_leader() {
            if self.last_index_ago.len() == ISR_LAG_TICKS {
                self.last_index_ago.pop_front();
            }
            self.last_index_ago.push_back(self.store.last_index());
        } else {
            self.last_index_ago.clear();
        }
    }

    /// Kafka's in-sync replicas, as this replica sees them when it leads
    /// (None otherwise): itself, and each follower that is heard from and
    /// holds everything the leader held [`ISR_LAG_TICKS`] ticks ago (10 s
    /// at the broker's 100 ms tick; Kafka's `replica.lag.time.max.ms` is
    /// 30 s). A follower that is down or far behind drops out; a follower
    /// a few batches behind a steady stream stays in.
    pub fn in_sync(&self) -> Option<Vec<u64>> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            return None;
        }
        let floor = self.last_index_ago.front().copied().unwrap_or(0);
        let mut isr: Vec<u64> = r
            .prs()
            .iter()
            .filter(|(id, p)| **id == r.id || (p.recent_active && p.matched >= floor))
            .map(|(id, _)| *id)
            .collect();
        isr.sort_unstable();
        Some(isr)
    }

    /// Take a message from a peer. Entries are checked first (a frame that
    /// is not one valid batch refuses the whole message); an error means
    /// the message was dropped.
    pub fn step(&mut self, m: Message) -> Result<(), ReplicaError> {
        for e in m.get_entries() {
            entry::check(e)?;
        }
        // The shard holds twice its budget of entries it cannot drop yet
        // (not durable or not applied): new entries wait. Raft resends
        // them once the leader probes again.
        if m.get_msg_type() == MessageType::MsgAppend
            && !m.get_entries().is_empty()
            && self.store.shard_budget().full()
        {
            self.appends_refused += 1;
            return Ok(());
        }
        Ok(self.raw.step(m)?)
    }

    /// Snapshots installed since this replica opened.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
    }

    /// Appends from a leader dropped because the shard's memory budget was
    /// full.
    pub fn appends_refused(&self) -> u64 {
        self.appends_refused
    }

    /// The transport could not reach `to`: Raft probes it rather than
    /// streaming appends into the void.
    pub fn report_unreachable(&mut self, to: u64) {
        self.raw.report_unreachable(to);
    }

    /// Propose one validated frame as the next entry (leader only). The
    /// frame's bytes travel as they are: no copy until each replica
    /// stamps it.
    pub fn propose(&mut self, frame: Bytes) -> Result<Proposed, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id(),
            });
        }
        // Idempotent producers: a retry of a batch this group already took
        // gets that batch's proposal (its outcome is the original's), never
        // a second entry; a batch out of order is refused. The log's
        // producer table is replicated with the log itself (every replica
        // records the sequences it appends), so a new leader knows them;
        // the table as of the log start travels in snapshots.
        let h = crate::format::frame::parse_header(&frame)
            .expect("frames are validated before they are proposed");
        let idempotent = h.producer_id >= 0 && h.base_sequence >= 0;
        if idempotent {
            if let Some(original) = self.check_sequence(&h, &frame)? {
                return Ok(original);
            }
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.id();
        m.set_entries(
            vec![Entry {
                data: frame,
                ..Default::default()
            }]
            .into(),
        );
        let before = self.raw.raft.raft_log.last_index();
        self.raw.raft.step(m).map_err(|_| ProposeError::Dropped)?;
        let index = self.raw.raft.raft_log.last_index();
        if index == before {
            return Err(ProposeError::Dropped);
        }
        let proposed = Proposed {
            index,
            term: self.raw.raft.term,
        };
        if idempotent {
            self.pending_seqs
                .entry(h.producer_id)
                .or_default()
                .push_back(PendingSeq {
                    epoch: h.producer_epoch,
                    first_seq: h.base_sequence,
                    last_seq: last_seq_of(&h),
                    proposed,
                });
        }
        Ok(proposed)
    }

    /// Where an idempotent producer's batch stands: Some(the original's
    /// proposal) for a retry, None for the producer's next batch.
    fn check_sequence(
        &mut self,
        h: &crate::format::BatchHeader,
        frame: &[u8],
    ) -> Result<Option<Proposed>, ProposeError> {
        // What is appended is in the log's table now (or was replaced by
        // another term's entry, which the log's table reflects).
        let (last, term) = (self.store.last_index(), self.raw.raft.term);
        self.pending_seqs.retain(|_, q| {
            q.retain(|x| x.proposed.index > last && x.proposed.term == term);
            !q.is_empty()
        });
        let last_seq = last_seq_of(h);
        let in_log = |g: &Self| -> Result<Option<Proposed>, ProposeError> {
            match g.partition.check_sequence(frame)? {
                SeqCheck::Append => Ok(None),
                SeqCheck::Duplicate { base_offset, .. } => match g.store.index_at(base_offset) {
                    Some(index) => Ok(Some(Proposed {
                        index,
                        term: g.store.term_of(index).expect("an entry in the log"),
                    })),
                    None => Err(ProposeError::Duplicate { base_offset }),
                },
            }
        };
        let Some(back) = self
            .pending_seqs
            .get(&h.producer_id)
            .and_then(|q| q.back().copied())
        else {
            return in_log(self);
        };
        let out_of_order = |expected: i32| {
            ProposeError::Sequence(SequenceError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            })
        };
        if h.producer_epoch < back.epoch {
            return Err(ProposeError::Sequence(
                SequenceError::InvalidProducerEpoch {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    current: back.epoch,
                },
            ));
        }
        if h.producer_epoch > back.epoch {
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(out_of_order(0))
            };
        }
        if let Some(x) = self.pending_seqs[&h.producer_id]
            .iter()
            .find(|x| x.first_seq == h.base_sequence && x.last_seq == last_seq)
        {
            return Ok(Some(x.proposed));
        }
        // A retry of a batch already appended, before the pending ones.
        if let Ok(Some(original)) = in_log(self) {
            return Ok(Some(original));
        }
        let expected = if back.last_seq == i32::MAX {
            0
        } else {
            back.last_seq + 1
        };
        if h.base_sequence == expected {
            Ok(None)
        } else {
            Err(out_of_order(expected))
        }
    }

    /// What became of proposal `p` as far as this replica knows: decided
    /// only once this replica applied its index (before that, a later
    /// leader may still hold and commit it).
    pub fn outcome(&self, p: Proposed) -> Outcome {
        if p.index > self.applied {
            return Outcome::Pending;
        }
        match (self.store.term_of(p.index), self.store.find(p.index)) {
            (Some(t), Some(Found::At(base_offset))) if t == p.term => {
                Outcome::Committed { base_offset }
            }
            (Some(t), _) if t != p.term => Outcome::Lost,
            _ => Outcome::Pending,
        }
    }

    /// acks=1: where proposal `p` sits in this leader's log, if it was
    /// appended there and not replaced.
    pub fn appended_at(&self, p: Proposed) -> Option<u64> {
        if self.store.term_of(p.index)? != p.term {
            return None;
        }
        match self.store.find(p.index)? {
            Found::At(o) => Some(o),
            Found::ScanFrom { .. } => None,
        }
    }

    /// Handle what raft-rs produced since the last call; returns the
    /// messages that may go out now, in order. Call after every tick, step,
    /// proposal and [`Self::on_durable`]. Appends are not awaited: the
    /// messages that promise them (a follower's acknowledgement) wait in
    /// this replica until [`Self::on_durable`] sees the log durable past
    /// them, so many groups' appends share one group commit.
    pub async fn ready(&mut self) -> Result<Vec<Message>, ReplicaError> {
        self.note_followers();
        let mut out = Vec::new();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        let sent = rd.take_messages();
        // raft-rs holds a follower in snapshot state until it hears the
        // snapshot's fate. Ours is a position, applied at once on arrival:
        // report it finished as it goes; if it is lost, the follower
        // refuses the next append and is probed (and sent one) again.
        for m in sent
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
        {
            self.raw.report_snapshot(m.to, raft::SnapshotStatus::Finish);
        }
        out.extend(sent);
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install(&snap).await?;
        }
        // Committed entries come only up to what this replica persisted.
        let committed = rd.take_committed_entries();
        self.apply(&committed).await?;
        let entries = rd.take_entries();
        self.append_entries(&entries).await?;
        if let Some(hs) = rd.hs().cloned() {
            // Term and vote are saved before anything that depends on them
            // goes out (rare: elections only); the commit index rides along.
            self.save_hard_state(&hs).await?;
            self.store.set_hard_state(hs);
        }
        self.unsent.push_back(Unsent {
            number: rd.number(),
            durable_at: self.store.next_offset(),
            messages: rd.take_persisted_messages(),
        });
        self.raw.advance_append_async(rd);
        self.advance_applied();
        out.extend(self.on_durable());
        Ok(out)
    }

    /// Tell raft-rs what is applied, once it is also persisted (an
    /// installed snapshot is applied before raft-rs hears it persisted).
    fn advance_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        if self.applied > log.applied && self.applied <= log.persisted.min(log.committed) {
            self.raw.advance_apply_to(self.applied);
        }
    }

    /// A follower behind the leader's log start got a snapshot: a position
    /// (index, term, configuration, and the offset where the leader's log
    /// now starts). The log is emptied and starts again at that offset;
    /// everything up to the index counts as applied. The intent is saved
    /// first (`resetting`), so a crash in between finishes the restart at
    /// the next open.
    async fn install(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<(), ReplicaError> {
        let m = snap.get_metadata();
        let (index, term) = (m.index, m.term);
        let data = SnapshotData::decode(&snap.data).map_err(|why| ReplicaError::BadSnapshot {
            len: snap.data.len(),
            why,
        })?;
        let start = data.start_offset;
        // The configuration is the leader's current one, made by entry
        // `conf_index` (possibly after the snapshot's index: those changes
        // are skipped as the entries are replayed).
        let conf_index = data.conf_index.max(index);
        assert!(
            index > self.applied,
            "snapshot at {index} below the applied index {}",
            self.applied
        );
        let conf = m.get_conf_state().clone();
        let mut next = self.saved.clone();
        next.first_index = index + 1;
        next.prev_term = term;
        next.start_offset = start;
        next.set_conf_state(&conf, conf_index);
        next.commit = index;
        next.resetting = true;
        // The producers as of the snapshot's index: the entries after it,
        // replayed here, bring the table to where the leader's is.
        next.start_producers = data.producers;
        self.state_file.save(&next).await?;
        self.partition.restart_at(start).await?;
        self.partition
            .merge_start_producers(&ProducerTable::from_entries(&next.start_producers));
        next.resetting = false;
        self.state_file.save(&next).await?;
        self.saved = next;
        self.store.reset(
            LogIndex::new(index + 1, term, start),
            conf.clone(),
            conf_index,
        );
        self.store
            .set_start_producers(self.saved.start_producers.clone());
        self.applied = index;
        self.partition.set_replicated_high_watermark(start);
        // The restart made everything before `start` durable, and what the
        // held readies appended is gone.
        for u in &mut self.unsent {
            u.durable_at = u.durable_at.min(start);
        }
        self.pending_seqs.clear();
        self.snapshots_installed += 1;
        tracing::info!(group = self.id(), index, term, start, voters = ?conf.voters, "replica: installed a snapshot; the log starts again at {start}");
        Ok(())
    }

    /// Retention on a replica: when the partition's retention would delete
    /// segments, move the Raft log's start there first (saved: the first
    /// index, the term before it, the offset), then delete. Never past
    /// what this replica applied. A follower that then needs entries from
    /// before the start gets a snapshot. Returns whether it compacted.
    pub async fn compact(&mut self, now_ms: i64) -> Result<bool, ReplicaError> {
        if self.saved.resetting {
            return Ok(false);
        }
        let Some(start) = self.partition.retention_candidate(now_ms) else {
            return Ok(false);
        };
        let applied_end = self.store.end_offset(self.applied);
        if start <= self.store.first_offset() || applied_end.is_none_or(|e| start > e) {
            return Ok(false);
        }
        let index = self.index_at_offset(start).await?;
        let prev_term = self.store.term_of(index - 1).expect("an entry in the log");
        let mut next = self.saved.clone();
        next.first_index = index;
        next.prev_term = prev_term;
        next.start_offset = start;
        next.start_producers = self.producers_at(start).await?.sorted();
        // Everything before the new start is applied (raft-rs starts its
        // commit index at the first index - 1).
        next.commit = next.commit.max(index - 1);
        self.state_file.save(&next).await?;
        self.saved = next;
        // Exactly the segments below the new first index: retention's
        // limits may have moved on since the candidate was chosen.
        self.partition.raise_log_start(start).await?;
        self.partition.delete_segments_before(start).await?;
        self.store.compact(index, prev_term, start);
        self.store
            .set_start_producers(self.saved.start_producers.clone());
        tracing::info!(
            group = self.id(),
            first_index = index,
            start,
            "replica: retention moved the log start"
        );
        Ok(true)
    }

    /// The producer table as of `offset` (a frame boundary within the
    /// log): the one as of the log start, and the batches before `offset`,
    /// read from the log (retention is about to delete them: once per
    /// compaction, only when the log has idempotent producers at all).
    async fn producers_at(&self, offset: u64) -> Result<ProducerTable, ReplicaError> {
        let mut t = ProducerTable::from_entries(&self.saved.start_producers);
        if t.is_empty() && self.partition.producers().is_empty() {
            // The live table knows every producer of the whole log.
            return Ok(t);
        }
        self.scan_frames(self.store.first_offset(), offset, |h| t.record(h))
            .await?;
        Ok(t)
    }

    /// The entry whose frame starts at `offset` (a frame boundary within
    /// the log): from the nearest place the index knows exactly at or
    /// after it, counting the frames in between.
    async fn index_at_offset(&self, offset: u64) -> Result<u64, ReplicaError> {
        let (index, at) = self.store.known_at_or_after(offset);
        assert!(at >= offset, "{offset} is within the log");
        let mut n = 0u64;
        self.scan_frames(offset, at, |_| n += 1).await?;
        Ok(index - n)
    }

    /// Read the log's frames from `from` up to `to` (both frame
    /// boundaries), handing each one's header to `each`.
    async fn scan_frames(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(&crate::format::BatchHeader),
    ) -> Result<(), ReplicaError> {
        let mut o = from;
        while o < to {
            let frames = self.partition.read_unreplicated(o, READ_CHUNK).await?;
            assert!(!frames.is_empty(), "frames from {o} up to {to}");
            for f in frames {
                if o >= to {
                    break;
                }
                let h = crate::format::frame::parse_header(&f).expect("a stored frame");
                assert_eq!(h.base_offset, o, "contiguous frames");
                each(&h);
                o = h.last_offset() + 1;
            }
        }
        assert_eq!(o, to, "frames from {from} reach {to}");
        Ok(())
    }

    /// Tell the window from which index followers still need entries: a
    /// leader's slowest follower's acknowledged end (not its optimistic
    /// next index: what is in flight may be lost and resent).
    fn note_followers(&self) {
        let r = &self.raw.raft;
        let from = if r.state == StateRole::Leader {
            r.prs()
                .iter()
                .filter(|(id, _)| **id != r.id)
                .map(|(_, p)| p.matched + 1)
                .min()
                .unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        self.store.set_needed_from(from);
    }

    /// The log offset that must become durable before the held messages
    /// may go out, if any are held (the driver asks the log to sync it).
    pub fn durable_wanted(&self) -> Option<u64> {
        self.unsent.back().map(|u| u.durable_at)
    }

    /// Tell raft-rs how far this replica's log is durable, and release the
    /// messages that waited for it. Call [`Self::ready`] afterwards (the
    /// leader may commit more).
    pub fn on_durable(&mut self) -> Vec<Message> {
        let durable = self.partition.durable_offset();
        let mut out = Vec::new();
        let mut number = None;
        while self.unsent.front().is_some_and(|u| u.durable_at <= durable) {
            let u = self.unsent.pop_front().expect("not empty");
            number = Some(u.number);
            out.extend(u.messages);
        }
        if let Some(n) = number {
            self.raw.on_persist_ready(n);
            self.advance_applied();
        }
        out
    }

    /// Serve raft-rs's requests for entries older than the window (a
    /// follower catching up): read them from the log, then let raft-rs ask
    /// again. Returns whether there were any (call [`Self::ready`] after).
    pub async fn fetch_for_followers(&mut self) -> Result<bool, ReplicaError> {
        let wanted = self.store.take_wanted();
        let any = !wanted.is_empty();
        // raft-rs asks again at every trigger (each proposal, each
        // acknowledgement) while a follower's entries are unavailable, so
        // the requests repeat: one read per distinct start. Each read takes
        // a chunk of several messages' worth, so the sends that follow
        // (raft-rs streams up to its in-flight limit) find their entries.
        let mut seen = std::collections::BTreeSet::new();
        for w in wanted {
            if w.low < self.store.first_index() || w.high > self.store.last_index() + 1 {
                // The log moved since (compacted: raft-rs then sends a
                // snapshot; truncated): let raft-rs ask again.
                self.raw.on_entries_fetched(w.context);
                continue;
            }
            if !seen.insert(w.low) {
                continue;
            }
            if self.store.holds(w.low) {
                self.raw.on_entries_fetched(w.context);
                continue;
            }
            let mut offset = self.locate(w.low).await?;
            let mut index = w.low;
            let mut got = Vec::new();
            let mut bytes = 0u64;
            // Read ahead only while the shard's budget has room.
            let ahead = if self.store.shard_budget().over() {
                READ_CHUNK
            } else {
                FETCH_CHUNK
            };
            let chunk = (ahead as u64).max(w.max_size.min(READ_CHUNK as u64));
            'read: while index < w.high && bytes < chunk {
                let frames = self.partition.read_unreplicated(offset, READ_CHUNK).await?;
                self.fetch_reads += 1;
                if frames.is_empty() {
                    break;
                }
                for f in frames {
                    if index >= w.high {
                        break 'read;
                    }
                    let base = crate::format::frame::base_offset_of(&f);
                    assert_eq!(base, offset, "entry {index} starts at {offset}");
                    offset = base + entry::offsets_of(&f);
                    bytes += f.len() as u64;
                    got.push(entry::from_frame(f, index)?);
                    index += 1;
                }
            }
            self.store.fetched(w.low, got);
            self.raw.on_entries_fetched(w.context);
        }
        Ok(any)
    }

    /// The base offset of entry `index`, reading forward from the nearest
    /// known one when the index keeps no exact place for it.
    async fn locate(&self, index: u64) -> Result<u64, ReplicaError> {
        match self.store.find(index).expect("index within the log") {
            Found::At(o) => Ok(o),
            Found::ScanFrom {
                index: mut i,
                offset: mut o,
            } => {
                while i < index {
                    let frames = self.partition.read_unreplicated(o, READ_CHUNK).await?;
                    assert!(!frames.is_empty());
                    for f in frames {
                        if i == index {
                            break;
                        }
                        o = crate::format::frame::base_offset_of(&f) + entry::offsets_of(&f);
                        i += 1;
                    }
                }
                Ok(o)
            }
        }
    }

    /// Step 2: truncate a divergent suffix, stamp and append.
    async fn append_entries(&mut self, entries: &[Entry]) -> Result<(), ReplicaError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.store.last_index() {
            // Raft replaces everything from `first.index` on; what it
            // replaces was never committed (Raft's log matching), so no
            // consumer saw it.
            assert!(
                first.index > self.applied,
                "truncating applied entry {} (applied {})",
                first.index,
                self.applied
            );
            let at = self.locate(first.index).await?;
            let end = self.partition.truncate_suffix(at).await?;
            assert_eq!(end, at, "entries are whole frames");
            self.store.truncate_after(first.index - 1, at);
            // The truncation rebuilt the log's producer table from its
            // files, without the batches before the log start.
            self.partition
                .merge_start_producers(&ProducerTable::from_entries(&self.saved.start_producers));
            // Truncation made everything before it durable: the readies
            // still held are persisted, their end now lies at most here.
            for u in &mut self.unsent {
                u.durable_at = u.durable_at.min(at);
            }
        }
        assert_eq!(first.index, self.store.last_index() + 1);
        let mut frames = Vec::with_capacity(entries.len());
        let mut offset = self.store.next_offset();
        let mut placed = Vec::with_capacity(entries.len());
        for e in entries {
            let f: BytesMut = entry::to_frame(e, offset)?;
            let end = offset + entry::offsets_of(&f);
            placed.push((offset, end));
            offset = end;
            frames.push(f);
        }
        let outcome = self.partition.append_at(frames)?;
        assert_eq!(outcome.last_offset + 1, offset);
        for (e, (base, end)) in entries.iter().zip(placed) {
            self.store.append(e.clone(), base, end);
        }
        Ok(())
    }

    /// Step 3: term and vote before anything that depends on them is sent.
    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), ReplicaError> {
        if hs.term == self.saved.term && hs.vote == self.saved.vote {
            return Ok(());
        }
        let mut next = self.saved.clone();
        next.term = hs.term;
        next.vote = hs.vote;
        // Never past what was applied: a restart applies again what
        // follows the saved commit, configuration changes included.
        next.commit = hs.commit.min(self.store.last_index()).min(self.applied);
        next.first_index = self.store.first_index();
        next.prev_term = self
            .store
            .term_of(next.first_index - 1)
            .expect("the term before the log start is kept");
        self.state_file.save(&next).await?;
        self.saved = next;
        Ok(())
    }

    /// Step 6: apply configuration changes (each saved before the next
    /// step), and move the high watermark to the end of the last applied
    /// entry.
    async fn apply(&mut self, committed: &[Entry]) -> Result<(), ReplicaError> {
        let Some(last) = committed.last() else {
            return Ok(());
        };
        assert!(last.index > self.applied || committed.is_empty());
        for e in committed {
            if e.get_entry_type() == EntryType::EntryNormal {
                if let Some(offset) = entry::delete_records_of(&e.data) {
                    self.apply_delete_records(e.index, offset).await?;
                }
                continue;
            }
            if e.index <= self.saved.conf_index {
                continue;
            }
            let cc: ConfChangeV2 = match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    // Never proposed here; read as raft-rs would.
                    protobuf::Message::parse_from_bytes(&e.data).map(|c: ConfChange| {
                        let mut one = ConfChangeSingle::default();
                        one.set_change_type(c.get_change_type());
                        one.node_id = c.node_id;
                        let mut v2 = ConfChangeV2::default();
                        v2.mut_changes().push(one);
                        v2
                    })
                }
                _ => protobuf::Message::parse_from_bytes(&e.data),
            }
            .map_err(|x| EntryError::BadControl {
                index: e.index,
                why: x.into(),
            })?;
            let cs = self.raw.apply_conf_change(&cc)?;
            // A leader whose group no longer counts it as a voter (a
            // reassignment removed it while another replica led, and it
            // was elected before the removal applied) stops leading: it is
            // not among the replicas whose acknowledgements commit entries,
            // and raft-rs does not handle that case (it panics on the next
            // acknowledgement). The others elect a leader of the new set.
            let me = self.id();
            if self.is_leader() && !cs.voters.contains(&me) && !cs.voters_outgoing.contains(&me) {
                let term = self.term();
                self.raw.raft.become_follower(term, raft::INVALID_ID);
                tracing::info!(
                    group = me,
                    term,
                    "replica: removed from the group while leading; stepped down"
                );
            }
            self.store.set_conf(cs.clone(), e.index);
            let mut next = self.saved.clone();
            next.set_conf_state(&cs, e.index);
            next.commit = next.commit.max(e.index);
            self.state_file.save(&next).await?;
            self.saved = next;
            tracing::info!(
                group = self.id(),
                index = e.index,
                voters = ?cs.voters,
                learners = ?cs.learners,
                outgoing = ?cs.voters_outgoing,
                "replica: configuration changed"
            );
        }
        self.applied = last.index;
        if let Some(end) = self.store.end_offset(self.applied) {
            self.partition.set_replicated_high_watermark(end);
        }
        self.store.unpin_below(self.applied + 1);
        Ok(())
    }

    /// A committed DeleteRecords entry: raise this replica's log start,
    /// durably, before the entry counts as applied (a crash before then
    /// applies it again after the restart: raising is idempotent). The
    /// leader checked the offset against its high watermark when it
    /// proposed, so everything below it precedes this entry, which this
    /// replica holds durably (raft-rs hands out only persisted committed
    /// entries); capped there all the same. The high watermark moves up
    /// to the entry first: the log start never passes it.
    async fn apply_delete_records(&mut self, index: u64, offset: u64) -> Result<(), ReplicaError> {
        let Some(at) = self.store.end_offset(index - 1) else {
            return Ok(()); // before the log's start: compacted past it
        };
        if offset > at {
            tracing::warn!(
                group = self.id(),
                index,
                offset,
                at,
                "replica: a DeleteRecords entry past its own position; capped"
            );
        }
        self.partition.raise_replicated_high_watermark(at);
        let start = self.partition.raise_log_start(offset.min(at)).await?;
        tracing::info!(
            group = self.id(),
            index,
            log_start = start,
            "replica: DeleteRecords applied"
        );
        Ok(())
    }

    /// The group's configuration as this replica last applied it.
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// Move the group's membership one step towards `target` (leader
    /// only; call again every tick until [`Reconfig::Done`]): add the
    /// missing replicas as learners; once every learner to promote has
    /// caught up with the commit index, make them voters and remove the
    /// replicas outside the target in one change (joint consensus when
    /// more than one voter changes, left automatically). A leader outside
    /// the target first hands its leadership to a caught-up voter that
    /// stays, which carries on from there. One change at a time: Raft
    /// refuses a second while one is unapplied.
    pub fn reconfigure(&mut self, target: &[u64]) -> Reconfig {
        use std::collections::BTreeSet;
        if !self.is_leader() {
            return Reconfig::NotLeader;
        }
        let r = &self.raw.raft;
        if r.has_pending_conf() || r.lead_transferee.is_some() {
            return Reconfig::Waiting;
        }
        let cs = self.conf_state();
        if !cs.voters_outgoing.is_empty() {
            // A joint configuration is left automatically by the leader
            // that entered it; a leader elected before that happened
            // leaves it explicitly (an empty change).
            return match self
                .raw
                .propose_conf_change(Vec::new(), ConfChangeV2::default())
            {
                Ok(()) => Reconfig::Proposed,
                Err(_) => Reconfig::Waiting,
            };
        }
        let target: BTreeSet<u64> = target.iter().copied().collect();
        let voters: BTreeSet<u64> = cs.voters.iter().copied().collect();
        let learners: BTreeSet<u64> = cs.learners.iter().copied().collect();
        let single = |id: u64, ty: ConfChangeType| {
            let mut c = ConfChangeSingle::default();
            c.set_change_type(ty);
            c.node_id = id;
            c
        };
        let add: Vec<ConfChangeSingle> = target
            .iter()
            .filter(|id| !voters.contains(id) && !learners.contains(id))
            .map(|id| single(*id, ConfChangeType::AddLearnerNode))
            .collect();
        let changes = if !add.is_empty() {
            add
        } else {
            let promote: Vec<u64> = learners.intersection(&target).copied().collect();
            let committed = r.raft_log.committed;
            let caught_up = |id: &u64| {
                r.prs()
                    .get(*id)
                    .is_some_and(|p| p.recent_active && p.matched >= committed)
            };
            if !promote.iter().all(caught_up) {
                return Reconfig::Waiting;
            }
            let remove: Vec<u64> = voters
                .difference(&target)
                .chain(learners.difference(&target))
                .copied()
                .collect();
            if promote.is_empty() && remove.is_empty() {
                return Reconfig::Done;
            }
            if remove.contains(&r.id) {
                // Hand over to a voter that stays and is caught up to the
                // commit index (raft-rs sends it the rest before it asks
                // it to campaign).
                let to = voters
                    .intersection(&target)
                    .copied()
                    .filter(|id| *id != r.id)
                    .find(caught_up);
                match to {
                    Some(to) => {
                        self.raw.transfer_leader(to);
                        return Reconfig::Transferring(to);
                    }
                    // No voter of the target yet: promote first, remove after.
                    None if promote.is_empty() => return Reconfig::Waiting,
                    None => promote
                        .iter()
                        .map(|id| single(*id, ConfChangeType::AddNode))
                        .collect(),
                }
            } else {
                promote
                    .iter()
                    .map(|id| single(*id, ConfChangeType::AddNode))
                    .chain(
                        remove
                            .iter()
                            .map(|id| single(*id, ConfChangeType::RemoveNode)),
                    )
                    .collect()
            }
        };
        let mut cc = ConfChangeV2::default();
        cc.set_changes(changes.into());
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => Reconfig::Proposed,
            Err(_) => Reconfig::Waiting,
        }
    }
}

/// What [`PartitionGroup::reconfigure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfig {
    NotLeader,
    /// A change is under way, or learners are catching up.
    Waiting,
    /// A configuration change was proposed.
    Proposed,
    /// Leadership is being handed to this voter (the leader leaves).
    Transferring(u64),
    /// The voters are exactly the target, with no learners.
    Done,
}
