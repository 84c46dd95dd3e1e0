//! What a controller replica must have on stable storage before Raft may
//! go on: log entries, the hard state (term, vote, commit) and the latest
//! snapshot. Raft's safety rests on it: a replica that acknowledged an
//! entry or a vote must still have it after a crash.
//!
//! [`Persist`] is the interface; [`super::file_log::FileLog`] implements it
//! on files, [`MemPersist`] in memory for simulations (a simulated crash
//! drops the replica, keeps its `MemPersist`, and reopens from it).

use crate::protocol::DecodeError;
use raft::eraftpb::{Entry, HardState, Snapshot};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("controller file {path} is damaged at byte {offset}: {problem}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        problem: &'static str,
    },
    #[error("controller file {path}: {source}")]
    Decode { path: PathBuf, source: DecodeError },
}

impl PersistError {
    pub fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> PersistError {
        let path = path.to_path_buf();
        move |source| PersistError::Io { op, path, source }
    }
}

/// Everything a replica had made durable, as read back at start.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The latest snapshot (its data is an encoded
    /// [`super::state::ControllerState`]); None before the first one.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl Persisted {
    /// Index of the snapshot (0 without one).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.get_metadata().index)
    }

    /// Add entries the way Raft does: an entry at an index already held
    /// replaces it and everything after it. Entries at or below the
    /// snapshot are ignored (they are in it).
    pub fn append(&mut self, entries: &[Entry]) {
        append_entries(self.snapshot_index(), &mut self.entries, entries);
    }

    /// Replace the snapshot, keeping the entries after it in `kept`.
    pub fn set_snapshot(&mut self, snap: &Snapshot, kept: &[Entry]) {
        self.snapshot = Some(snap.clone());
        self.entries.clear();
        self.append(kept);
    }
}

/// Add `new` to `log` (whose first entry follows `base`) the way Raft
/// does: an entry at an index already held replaces it and everything
/// after it; entries at or below `base` are ignored (a snapshot holds them).
pub fn append_entries(base: u64, log: &mut Vec<Entry>, new: &[Entry]) {
    for e in new {
        if e.index <= base {
            continue;
        }
        let last = base + log.len() as u64;
        assert!(
            e.index <= last + 1,
            "controller log gap: entry {} after {last}",
            e.index
        );
        log.truncate((e.index - base - 1) as usize);
        log.push(e.clone());
    }
}

/// Stable storage for one controller replica. Every method returns once
/// what it wrote is durable (fsynced), or with an error; after an error
/// the replica stops (the caller reopens it).
pub trait Persist {
    /// Append `entries` (those from `entries[0].index` on replace what is
    /// held) and record `hard_state`, in one durable write.
    fn write(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), PersistError>;
    /// Make `snap` the snapshot; the entries after it are `kept` (all
    /// others are dropped); `hard_state` is recorded with it.
    fn save_snapshot(
        &mut self,
        snap: &Snapshot,
        kept: &[Entry],
        hard_state: &HardState,
    ) -> Result<(), PersistError>;
    /// What was made durable (at start).
    fn load(&mut self) -> Result<Persisted, PersistError>;
}

/// Stable storage in memory: everything written survives a simulated
/// crash. Clones share the same storage.
#[derive(Debug, Clone, Default)]
pub struct MemPersist {
    inner: Rc<RefCell<Persisted>>,
    /// Durable writes made, for tests that count them.
    pub writes: Rc<RefCell<u64>>,
}

impl Persist for MemPersist {
    fn write(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), PersistError> {
        let mut p = self.inner.borrow_mut();
        p.append(entries);
        if let Some(hs) = hard_state {
            p.hard_state = hs.clone();
        }
        *self.writes.borrow_mut() += 1;
        Ok(())
    }

    fn save_snapshot(
        &mut self,
        snap: &Snapshot,
        kept: &[Entry],
        hard_state: &HardState,
    ) -> Result<(), PersistError> {
        let mut p = self.inner.borrow_mut();
        p.set_snapshot(snap, kept);
        p.hard_state = hard_state.clone();
        *self.writes.borrow_mut() += 1;
        Ok(())
    }

    fn load(&mut self) -> Result<Persisted, PersistError> {
        Ok(self.inner.borrow().clone())
    }
}
