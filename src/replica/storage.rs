//! What raft-rs reads through `raft::Storage` for one replicated
//! partition: terms and indexes from the [`LogIndex`], recent entries from
//! a bounded window, older ones fetched from the partition's log.
//!
//! raft-rs asks synchronously; the log answers asynchronously (a DMA read).
//! So:
//! - the **window** keeps the most recent entries (their `Bytes` frames),
//!   never dropping one that is not yet durable or not yet applied: raft-rs
//!   reads those synchronously (committed entries for apply, a new leader's
//!   check for pending configuration changes). On a leader it also keeps
//!   what some follower has not yet acknowledged, up to its byte budget, so
//!   a follower a few batches behind is served from memory; an entry every
//!   replica has leaves at once, so an idle partition holds nothing.
//! - an older range is asked for only to send it to a follower that is
//!   behind. raft-rs allows that request to be asynchronous: the storage
//!   answers `LogTemporarilyUnavailable` and records the request; the
//!   replica reads the frames from the log, hands them over with
//!   [`ReplicaStorage::fetched`], and calls raft-rs's `on_entries_fetched`,
//!   which asks again and gets them.
//! - entries below the first index (retention moved the log start) are
//!   compacted: a follower that needs them gets a **snapshot** instead,
//!   which is only a position: the index and term before the first entry,
//!   the group's current configuration and the entry that made it, the
//!   offset where the log now starts, and the idempotent-producer table
//!   as of that offset (`data`: see [`super::snapshot_data`]). The
//!   follower empties its log and starts it at that offset (the records
//!   before it are gone by retention on the leader, as on any Kafka
//!   replica), takes the producer table and the configuration, and
//!   skips the configuration changes up to that index as it replays the
//!   entries after the snapshot (they are in the configuration already).
//!   The current configuration, not the one at the snapshot's index: a
//!   replica a reassignment added after that index must find itself in
//!   it, or raft-rs refuses the snapshot.
//!
//! Lifecycle and cores: one per replicated partition, on the shard that
//! owns the partition's replica; a clone shares the same state (the
//! replica and its `RawNode` both hold one). Changed only by the replica,
//! after the log itself changed.

use super::log_index::LogIndex;
use super::snapshot_data::SnapshotData;
use super::window_budget::WindowBudget;
use crate::storage::producer_state::ProducerEntry;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// A range raft-rs asked for that the window does not hold.
#[derive(Debug)]
pub struct FetchRequest {
    pub low: u64,
    pub high: u64,
    pub max_size: u64,
    pub context: GetEntriesContext,
}

struct State {
    index: LogIndex,
    hard: HardState,
    conf: ConfState,
    /// Contiguous entries ending at `index.last_index()` (or empty).
    window: VecDeque<Entry>,
    window_bytes: usize,
    window_budget: usize,
    /// The shard's budget: `window_bytes` and `fetched_bytes` count in it.
    shard_budget: WindowBudget,
    fetched_bytes: usize,
    /// Entries at or above this index stay in the window (not durable or
    /// not applied yet).
    pinned_from: u64,
    /// Entries at or above this index are still wanted by a follower
    /// (kept while the window is within its budget); `u64::MAX` on a
    /// replica that leads nobody.
    needed_from: u64,
    wanted: Vec<FetchRequest>,
    /// Entries read from the log for a fetch request, starting at `.0`.
    fetched: Option<(u64, Vec<Entry>)>,
    /// The entry whose configuration change `conf` is (0: the first).
    conf_index: u64,
    /// The idempotent producers as of the log start (sent in snapshots).
    start_producers: Vec<(i64, ProducerEntry)>,
}

#[derive(Clone)]
pub struct ReplicaStorage {
    st: Rc<RefCell<State>>,
}

fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 48
}

/// raft-rs's rule: at least one entry, then as many as fit `max`.
fn limit(entries: impl Iterator<Item = Entry>, max: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut size = 0u64;
    for e in entries {
        size += entry_bytes(&e) as u64;
        if !out.is_empty() && size > max {
            break;
        }
        out.push(e);
    }
    out
}

impl ReplicaStorage {
    pub fn new(
        index: LogIndex,
        hard: HardState,
        conf: ConfState,
        conf_index: u64,
        window_budget: usize,
        shard_budget: WindowBudget,
    ) -> Self {
        let pinned_from = index.last_index() + 1;
        ReplicaStorage {
            st: Rc::new(RefCell::new(State {
                index,
                hard,
                conf,
                window: VecDeque::new(),
                window_bytes: 0,
                window_budget,
                shard_budget,
                fetched_bytes: 0,
                pinned_from,
                needed_from: u64::MAX,
                wanted: Vec::new(),
                fetched: None,
                conf_index,
                start_producers: Vec::new(),
            })),
        }
    }

    pub fn last_index(&self) -> u64 {
        self.st.borrow().index.last_index()
    }

    pub fn first_index(&self) -> u64 {
        self.st.borrow().index.first_index()
    }

    /// Where the next entry's frame goes.
    pub fn next_offset(&self) -> u64 {
        self.st.borrow().index.next_offset()
    }

    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.st.borrow().index.term(index)
    }

    /// The offset right after entry `index`'s frame, when known exactly
    /// (always for the last [`super::log_index::TAIL_ENTRIES`] entries).
    pub fn end_offset(&self, index: u64) -> Option<u64> {
        let st = self.st.borrow();
        if index == st.index.last_index() {
            return Some(st.index.next_offset());
        }
        match st.index.find(index + 1)? {
            super::log_index::Found::At(o) => Some(o),
            super::log_index::Found::ScanFrom { .. } => None,
        }
    }

    /// See [`LogIndex::epoch_end`].
    pub fn epoch_end(&self, term: u64) -> Option<(u64, u64)> {
        self.st.borrow().index.epoch_end(term)
    }

    /// The entry whose frame starts at `offset`, if recent (see
    /// [`LogIndex::index_at`]).
    pub fn index_at(&self, offset: u64) -> Option<u64> {
        self.st.borrow().index.index_at(offset)
    }

    pub fn find(&self, index: u64) -> Option<super::log_index::Found> {
        self.st.borrow().index.find(index)
    }

    pub fn hard_state(&self) -> HardState {
        self.st.borrow().hard.clone()
    }

    pub fn set_hard_state(&self, hs: HardState) {
        self.st.borrow_mut().hard = hs;
    }

    pub fn set_commit(&self, commit: u64) {
        self.st.borrow_mut().hard.commit = commit;
    }

    pub fn conf_state(&self) -> ConfState {
        self.st.borrow().conf.clone()
    }

    /// Record entry `e` (the next index), stored at `base .. end` offsets.
    pub fn append(&self, e: Entry, base: u64, end: u64) {
        let mut st = self.st.borrow_mut();
        let i = st.index.append(e.term, base, end);
        assert_eq!(i, e.index, "entries are appended in index order");
        if st.window.back().is_some_and(|b| b.index + 1 != e.index) {
            st.window.clear();
            st.shard_budget.sub(st.window_bytes);
            st.window_bytes = 0;
        }
        st.window_bytes += entry_bytes(&e);
        st.shard_budget.add(entry_bytes(&e));
        st.window.push_back(e);
        st.pinned_from = st.pinned_from.min(i);
        Self::trim(&mut st);
    }

    /// Entries after `index` are gone (a follower's divergent suffix); the
    /// log now ends at `end_offset`.
    pub fn truncate_after(&self, index: u64, end_offset: u64) {
        let mut st = self.st.borrow_mut();
        st.index.truncate_after(index, end_offset);
        while st.window.back().is_some_and(|e| e.index > index) {
            let e = st.window.pop_back().expect("not empty");
            st.window_bytes -= entry_bytes(&e);
            st.shard_budget.sub(entry_bytes(&e));
        }
        Self::set_fetched(&mut st, None);
        st.pinned_from = st.pinned_from.min(index + 1);
    }

    /// Retention moved the log start: entry `first_index`, at
    /// `first_offset`, is the first.
    pub fn compact(&self, first_index: u64, prev_term: u64, first_offset: u64) {
        let mut st = self.st.borrow_mut();
        st.index.compact_to(first_index, prev_term, first_offset);
        while st.window.front().is_some_and(|e| e.index < first_index) {
            let e = st.window.pop_front().expect("not empty");
            st.window_bytes -= entry_bytes(&e);
            st.shard_budget.sub(entry_bytes(&e));
        }
        Self::set_fetched(&mut st, None);
    }

    /// The producer table as of the log start changed (retention moved the
    /// start, a snapshot was installed, the replica opened).
    pub fn set_start_producers(&self, producers: Vec<(i64, ProducerEntry)>) {
        self.st.borrow_mut().start_producers = producers;
    }

    /// The group applied configuration change `index`: `conf`.
    pub fn set_conf(&self, conf: ConfState, index: u64) {
        let mut st = self.st.borrow_mut();
        st.conf = conf;
        st.conf_index = index;
    }

    /// A snapshot was installed: the log is `index` (empty), the
    /// configuration `conf` (made by entry `conf_index`), and everything
    /// before the log is committed.
    pub fn reset(&self, index: LogIndex, conf: ConfState, conf_index: u64) {
        let mut st = self.st.borrow_mut();
        let bytes = st.window_bytes;
        st.shard_budget.sub(bytes);
        st.window.clear();
        st.window_bytes = 0;
        Self::set_fetched(&mut st, None);
        st.pinned_from = index.last_index() + 1;
        st.hard.commit = st.hard.commit.max(index.last_index());
        st.index = index;
        st.conf = conf;
        st.conf_index = conf_index;
    }

    /// The first entry's offset (the log start).
    pub fn first_offset(&self) -> u64 {
        self.st.borrow().index.first_offset()
    }

    /// A place known exactly at or after `offset` (see
    /// [`LogIndex::known_at_or_after`]).
    pub fn known_at_or_after(&self, offset: u64) -> (u64, u64) {
        self.st.borrow().index.known_at_or_after(offset)
    }

    /// Entries below `index` are durable and applied: the window may let
    /// them go.
    pub fn unpin_below(&self, index: u64) {
        let mut st = self.st.borrow_mut();
        st.pinned_from = st.pinned_from.max(index);
        Self::trim(&mut st);
    }

    /// The lowest index some follower still needs (a leader's slowest
    /// follower's next index); `u64::MAX` when no replica needs entries
    /// from this one.
    pub fn set_needed_from(&self, index: u64) {
        let mut st = self.st.borrow_mut();
        st.needed_from = index;
        Self::trim(&mut st);
    }

    fn trim(st: &mut State) {
        while st.window.front().is_some_and(|e| {
            e.index < st.pinned_from
                && (e.index < st.needed_from
                    || st.window_bytes > st.window_budget
                    || st.shard_budget.over())
        }) {
            let e = st.window.pop_front().expect("not empty");
            st.window_bytes -= entry_bytes(&e);
            st.shard_budget.sub(entry_bytes(&e));
        }
        // A range read for a follower goes too once the shard is over
        // budget (the follower's next request reads again).
        if st.shard_budget.over() && st.fetched.is_some() {
            Self::set_fetched(st, None);
        }
    }

    fn set_fetched(st: &mut State, fetched: Option<(u64, Vec<Entry>)>) {
        st.shard_budget.sub(st.fetched_bytes);
        st.fetched_bytes = fetched
            .as_ref()
            .map_or(0, |(_, v)| v.iter().map(entry_bytes).sum());
        st.shard_budget.add(st.fetched_bytes);
        st.fetched = fetched;
    }

    /// The shard's budget for entries in memory.
    pub fn shard_budget(&self) -> WindowBudget {
        self.st.borrow().shard_budget.clone()
    }

    pub fn window_bytes(&self) -> usize {
        self.st.borrow().window_bytes
    }

    /// Whether raft-rs asked for entries that are not in memory.
    pub fn has_wanted(&self) -> bool {
        !self.st.borrow().wanted.is_empty()
    }

    /// Fetch requests raft-rs made since the last call.
    pub fn take_wanted(&self) -> Vec<FetchRequest> {
        std::mem::take(&mut self.st.borrow_mut().wanted)
    }

    /// Whether the window or the last fetched range holds entry `index`
    /// (a request for it needs no read).
    pub fn holds(&self, index: u64) -> bool {
        let st = self.st.borrow();
        st.window
            .front()
            .is_some_and(|f| index >= f.index && index <= st.index.last_index())
            || st
                .fetched
                .as_ref()
                .is_some_and(|(from, got)| index >= *from && index < *from + got.len() as u64)
    }

    /// Entries read from the log for a request, from `low` on.
    pub fn fetched(&self, low: u64, entries: Vec<Entry>) {
        if let Some(f) = entries.first() {
            assert_eq!(f.index, low);
        }
        Self::set_fetched(&mut self.st.borrow_mut(), Some((low, entries)));
    }
}

impl Storage for ReplicaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let st = self.st.borrow();
        Ok(RaftState::new(st.hard.clone(), st.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut st = self.st.borrow_mut();
        if low < st.index.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= st.index.last_index() + 1,
            "entries {low}..{high} asked past the last index {}",
            st.index.last_index()
        );
        if low >= high {
            return Ok(Vec::new());
        }
        if let Some(front) = st.window.front() {
            if low >= front.index {
                let skip = (low - front.index) as usize;
                let n = (high - low) as usize;
                return Ok(limit(st.window.iter().skip(skip).take(n).cloned(), max));
            }
        }
        if let Some((from, got)) = &st.fetched {
            if low >= *from && low < *from + got.len() as u64 {
                let skip = (low - from) as usize;
                let n = (high - low) as usize;
                return Ok(limit(got.iter().skip(skip).take(n).cloned(), max));
            }
        }
        assert!(
            context.can_async(),
            "raft-rs read entries {low}..{high} synchronously below the window (from {:?}); \
             entries not durable or not applied are always in it",
            st.window.front().map(|e| e.index)
        );
        st.wanted.push(FetchRequest {
            low,
            high,
            max_size: max,
            context,
        });
        Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let st = self.st.borrow();
        if idx + 1 < st.index.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        st.index
            .term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.st.borrow().index.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.st.borrow().index.last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let st = self.st.borrow();
        let first = st.index.first_index();
        if first == 1 {
            // Nothing compacted: a follower is sent entries, not this.
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        if !st.conf.voters_outgoing.is_empty() {
            // Mid-change: a follower replaying from the snapshot could not
            // tell which half of the joint configuration it has.
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut s = Snapshot::default();
        let data = SnapshotData {
            start_offset: st.index.first_offset(),
            conf_index: st.conf_index,
            producers: st.start_producers.clone(),
        };
        s.data = data.encode().into();
        let m = s.mut_metadata();
        m.index = first - 1;
        m.term = st.index.prev_term();
        m.set_conf_state(st.conf.clone());
        Ok(s)
    }
}

impl Drop for State {
    /// A closed group gives its bytes back to the shard's budget.
    fn drop(&mut self) {
        self.shard_budget
            .sub(self.window_bytes + self.fetched_bytes);
    }
}
