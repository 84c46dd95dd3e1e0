//! The in-memory Raft log that raft-rs reads through `raft::Storage`: the
//! latest snapshot, the entries after it, the hard state and the voters.
//!
//! Lifecycle: built by [`super::node::ControllerNode`] from what
//! [`super::persist::Persist`] loaded, then kept in step with it: the node
//! changes this view only after the same change is durable. Lives on the
//! controller's shard. Its size is bounded by the snapshot interval: the
//! node snapshots every `snapshot_every` applied entries and drops the
//! entries the snapshot covers.

use super::persist::{append_entries, Persisted};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

pub struct LogView {
    hard_state: HardState,
    conf_state: ConfState,
    /// Latest snapshot, data included (index 0: none yet).
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

impl LogView {
    /// The view of a replica with the fixed voter set `voters`, from its
    /// durable state.
    pub fn new(voters: &[u64], p: Persisted) -> LogView {
        let conf_state = ConfState::from((voters.to_vec(), vec![]));
        let mut snapshot = Snapshot::default();
        if let Some(s) = p.snapshot {
            snapshot = s;
        }
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        let view = LogView {
            hard_state: p.hard_state,
            conf_state,
            snapshot,
            entries: p.entries,
        };
        view.check();
        view
    }

    fn check(&self) {
        let base = self.snapshot_index();
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(
                e.index,
                base + 1 + i as u64,
                "controller log is not contiguous"
            );
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    fn last(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Same rule as [`Persisted::append`].
    pub fn append(&mut self, entries: &[Entry]) {
        append_entries(self.snapshot_index(), &mut self.entries, entries);
        self.check();
    }

    /// A snapshot from the leader replaces the whole log.
    pub fn install(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.snapshot = snap;
        self.snapshot
            .mut_metadata()
            .set_conf_state(self.conf_state.clone());
    }

    /// A snapshot of our own at `snap`'s index: entries up to it go.
    pub fn compact(&mut self, snap: Snapshot) {
        let index = snap.get_metadata().index;
        assert!(index >= self.snapshot_index() && index <= self.last());
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snap;
        self.check();
    }

    /// Entries after `index` (which must be held or be the snapshot's).
    pub fn entries_after(&self, index: u64) -> &[Entry] {
        let from = (index - self.snapshot_index()) as usize;
        &self.entries[from..]
    }
}

impl Storage for LogView {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last() + 1,
            "entries up to {high} asked, last is {}",
            self.last()
        );
        let base = self.snapshot_index() + 1;
        let mut out = self.entries[(low - base) as usize..(high - base) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot_index();
        if idx == snap {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < snap {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - snap - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index || self.snapshot_index() == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
