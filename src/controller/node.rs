//! One controller replica: a raft-rs `RawNode` over a [`LogView`], the
//! state machine it applies to, and the stable storage behind both.
//!
//! Driving it (the caller owns time, the network and the thread):
//! - [`ControllerNode::tick`] once per tick interval (the broker: 100 ms);
//! - [`ControllerNode::step`] for each Raft message that arrives;
//! - [`ControllerNode::propose`] for a command (leader only);
//! - then [`ControllerNode::ready`], which makes what Raft produced durable
//!   (one fsync for the entries and hard state of that round), applies the
//!   newly committed commands and returns the messages to send and what
//!   was applied. Messages must be sent only after `ready` returns: some
//!   of them acknowledge entries that are durable only from then on.
//!
//! Lifecycle and cores: opened from its [`Persist`] at start (state from
//! the snapshot, then the log after it replayed as Raft re-commits it);
//! lives on the controller shard; a crash loses nothing `ready` returned.
//! Every `snapshot_every` applied entries it snapshots the state and drops
//! the entries before it, so a restart replays at most that many.
//!
//! Every committed entry is applied once, in index order (asserted by
//! [`ControllerState::skip`]); a request committed twice (a retry after a
//! leader change) is recognised by its origin and seq and changes nothing
//! the second time.

use super::command::{Command, Envelope, MAX_COMMAND_BYTES};
use super::log_view::LogView;
use super::persist::{Persist, PersistError};
use super::state::{ApplyResult, ControllerState};
use crate::protocol::DecodeError;
use raft::eraftpb::{EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("controller snapshot does not decode: {0}")]
    Snapshot(DecodeError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("command of {bytes} bytes is over the limit of {MAX_COMMAND_BYTES}")]
    TooLarge { bytes: usize },
    #[error("raft dropped the proposal: {0}")]
    Dropped(raft::Error),
}

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This replica's id (its broker id); one of `voters`.
    pub id: u64,
    /// The controller's voters (fixed; every replica is given the same set).
    pub voters: Vec<u64>,
    /// Ticks without a leader before an election (randomised up to twice
    /// this, unless `fixed_election_timeout`).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
    /// Always wait exactly `election_tick` (raft-rs otherwise draws the
    /// timeout from its own unseeded RNG): for seeded simulations, which
    /// break ties with their own randomness.
    pub fixed_election_timeout: bool,
}

impl NodeConfig {
    pub fn new(id: u64, voters: Vec<u64>) -> NodeConfig {
        NodeConfig {
            id,
            voters,
            election_tick: 10,
            heartbeat_tick: 1,
            snapshot_every: 1000,
            fixed_election_timeout: false,
        }
    }
}

/// One committed command, as applied here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub origin: u32,
    pub seq: u64,
    pub command: Command,
    pub result: ApplyResult,
}

/// What one [`ControllerNode::ready`] round produced.
#[derive(Debug, Default)]
pub struct Output {
    /// To send, each to `msg.to`.
    pub messages: Vec<Message>,
    /// Commands applied, in index order.
    pub applied: Vec<Applied>,
    /// The state was replaced by a snapshot from the leader, at this
    /// index, before `applied` (a consumer of `applied` must re-read the
    /// whole state).
    pub installed_snapshot: Option<u64>,
}

pub struct ControllerNode<P: Persist> {
    raw: RawNode<LogView>,
    persist: P,
    state: ControllerState,
    snapshot_every: u64,
}

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl<P: Persist> ControllerNode<P> {
    pub fn open(cfg: &NodeConfig, mut persist: P) -> Result<ControllerNode<P>, NodeError> {
        assert!(
            cfg.voters.contains(&cfg.id),
            "a controller replica must be a voter"
        );
        assert!(cfg.snapshot_every >= 1);
        let p = persist.load()?;
        let state = match &p.snapshot {
            Some(s) => ControllerState::decode(&s.data).map_err(NodeError::Snapshot)?,
            None => ControllerState::default(),
        };
        assert_eq!(
            state.applied_index,
            p.snapshot_index(),
            "a snapshot holds the state at its own index"
        );
        let view = LogView::new(&cfg.voters, p);
        let mut rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            max_inflight_msgs: 256,
            max_size_per_msg: 1 << 20,
            // A restarted or partitioned replica asks before it disrupts a
            // working leader; a leader that lost its quorum steps down, so
            // brokers stop sending it requests it cannot commit.
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        if cfg.fixed_election_timeout {
            rc.min_election_tick = cfg.election_tick;
            rc.max_election_tick = cfg.election_tick + 1;
        }
        rc.validate()?;
        let raw = RawNode::new(&rc, view, &discard_logger())?;
        Ok(ControllerNode {
            raw,
            persist,
            state,
            snapshot_every: cfg.snapshot_every,
        })
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Feed a message from a peer. An error means Raft ignored it (from an
    /// unknown peer, or a local-only type): the caller drops it.
    pub fn step(&mut self, m: Message) -> Result<(), raft::Error> {
        self.raw.step(m)
    }

    /// The transport's word on a snapshot it carried to `to`: delivered
    /// (`ok`) or lost. raft-rs holds a follower in snapshot state until it
    /// hears one or the other, so every `MsgSnapshot` sent must be
    /// reported.
    pub fn report_snapshot(&mut self, to: u64, ok: bool) {
        let status = if ok {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// `to` could not be reached (connection failed): Raft probes it
    /// again instead of streaming appends into the void.
    pub fn report_unreachable(&mut self, to: u64) {
        self.raw.report_unreachable(to);
    }

    /// Propose a command; Ok gives the log index it was appended at. That
    /// index may still be overwritten by another leader's entry: the
    /// caller learns the outcome from [`Output::applied`], matching origin
    /// and seq.
    pub fn propose(&mut self, env: &Envelope) -> Result<u64, ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id(),
            });
        }
        let bytes = env.encode();
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(ProposeError::TooLarge { bytes: bytes.len() });
        }
        self.raw
            .propose(vec![], bytes.to_vec())
            .map_err(ProposeError::Dropped)?;
        Ok(self.raw.raft.raft_log.last_index())
    }

    pub fn state(&self) -> &ControllerState {
        &self.state
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn leader_id(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Index of the latest snapshot (what a restart starts from).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Persist, apply, and collect what Raft produced since the last call.
    pub fn ready(&mut self) -> Result<Output, NodeError> {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        // The leader may send its appends before persisting them (Raft
        // allows it: it counts its own vote only once durable).
        out.messages.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let state = ControllerState::decode(&snap.data).map_err(NodeError::Snapshot)?;
            assert_eq!(state.applied_index, snap.get_metadata().index);
            self.raw.mut_store().install(snap.clone());
            let hs = self.raw.store().hard_state().clone();
            self.persist.save_snapshot(&snap, &[], &hs)?;
            self.state = state;
            out.installed_snapshot = Some(snap.get_metadata().index);
        }
        self.apply(rd.take_committed_entries(), &mut out);
        let hs = rd.hs().cloned();
        if !rd.entries().is_empty() || hs.is_some() {
            self.persist.write(rd.entries(), hs.as_ref())?;
            let entries = rd.take_entries();
            self.raw.mut_store().append(&entries);
            if let Some(hs) = hs {
                self.raw.mut_store().set_hard_state(hs);
            }
        }
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            // Not fsynced on its own: a restart that finds an older commit
            // index learns the newer one from the leader again.
            let mut hs = self.raw.store().hard_state().clone();
            hs.commit = commit;
            self.raw.mut_store().set_hard_state(hs);
        }
        out.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut out);
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        Ok(out)
    }

    fn apply(&mut self, entries: Vec<raft::eraftpb::Entry>, out: &mut Output) {
        for e in entries {
            if e.index <= self.state.applied_index {
                // Covered by a snapshot installed in this same round.
                continue;
            }
            if e.data.is_empty() || e.get_entry_type() != EntryType::EntryNormal {
                // A new leader's empty entry (we propose no configuration changes).
                self.state.skip(e.index);
                continue;
            }
            match Envelope::decode(&e.data) {
                Ok(env) => {
                    let result = self.state.apply(e.index, &env);
                    out.applied.push(Applied {
                        index: e.index,
                        origin: env.origin,
                        seq: env.seq,
                        command: env.command,
                        result,
                    });
                }
                Err(err) => {
                    // Every replica reads the same bytes, so every replica
                    // skips this entry alike (only a newer broker version
                    // could have written it).
                    warn!(index = e.index, error = %err, "controller log entry not understood; skipped");
                    self.state.skip(e.index);
                }
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.state.applied_index;
        if applied - self.raw.store().snapshot_index() < self.snapshot_every {
            return Ok(());
        }
        let mut snap = Snapshot {
            data: self.state.encode().freeze(),
            ..Default::default()
        };
        let term = self.raw.store().term(applied)?;
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(self.raw.store().conf_state().clone());
        let kept = self.raw.store().entries_after(applied).to_vec();
        let hs = self.raw.store().hard_state().clone();
        assert!(
            hs.commit >= applied,
            "applied {applied} beyond commit {}",
            hs.commit
        );
        self.persist.save_snapshot(&snap, &kept, &hs)?;
        self.raw.mut_store().compact(snap);
        Ok(())
    }
}
