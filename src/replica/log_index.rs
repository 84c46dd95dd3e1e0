//! Where each Raft entry of a partition's log is, and its term.
//!
//! In a replicated partition (docs/replication.md, "Raft index and Kafka
//! offsets") one Raft entry is one frame of the partition's log: a record
//! batch, or a one-record control batch for Raft's own entries. Entry
//! `first_index + k` is the log's `k`-th frame, so a Raft index and a
//! Kafka offset differ by how many records the earlier frames hold. Raft
//! (raft-rs's `Storage`) asks, synchronously, for the term of an index and
//! for entries by index; the log answers by offset, asynchronously. This
//! index is the bridge, kept in memory and bounded:
//!
//! - the **epochs**: where each term starts (index and offset), one entry
//!   per leader change, so `term(i)` is a binary search for any index still
//!   in the log;
//! - the **tail**: the exact base offset of each of the last
//!   [`TAIL_ENTRIES`] entries, where replication, conflicts and truncation
//!   happen;
//! - **marks**: the base offset of every [`MARK_EVERY`]-th entry before the
//!   tail, so an older entry is found by reading forward from the mark
//!   below it (at most `MARK_EVERY - 1` frames).
//!
//! Memory: 24 bytes per epoch, 16 per tail entry (64 KiB), 16 per mark
//! (16 KiB per million entries).
//!
//! Lifecycle and cores: one per replicated partition, owned by the shard
//! that owns the partition's replica; rebuilt at recovery by
//! [`LogIndex::append`]ing the frames of a forward scan after
//! [`LogIndex::new`] with the log start (the first index and the term
//! before it are kept with the replica's hard state).

use std::collections::VecDeque;

/// Entries whose base offset is kept exactly.
pub const TAIL_ENTRIES: usize = 4096;
/// Before the tail, one entry in this many keeps its base offset.
pub const MARK_EVERY: u64 = 1024;

/// Where a term starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    pub term: u64,
    pub index: u64,
    pub offset: u64,
}

/// Where an entry's frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Its base offset.
    At(u64),
    /// Not kept exactly: read forward from the frame at `offset`, which is
    /// entry `index`, counting frames.
    ScanFrom { index: u64, offset: u64 },
}

/// The index of one partition's log. Indexes run `first_index ..=
/// last_index` (empty when `last_index == first_index - 1`).
#[derive(Debug, Clone)]
pub struct LogIndex {
    first_index: u64,
    /// Term of entry `first_index - 1` (the compacted prefix's last, or 0).
    prev_term: u64,
    first_offset: u64,
    last_index: u64,
    /// Offset after the last entry's records: the next entry's base offset.
    next_offset: u64,
    epochs: Vec<EpochStart>,
    /// (index, base offset) of the last entries, ascending, contiguous.
    tail: VecDeque<(u64, u64)>,
    /// (index, base offset) of every `MARK_EVERY`-th entry older than the
    /// tail, ascending.
    marks: Vec<(u64, u64)>,
}

impl LogIndex {
    /// An empty log whose next entry is `first_index`, at `first_offset`;
    /// the entry before it (compacted, or none) had term `prev_term`.
    pub fn new(first_index: u64, prev_term: u64, first_offset: u64) -> LogIndex {
        assert!(first_index >= 1, "Raft indexes start at 1");
        LogIndex {
            first_index,
            prev_term,
            first_offset,
            last_index: first_index - 1,
            next_offset: first_offset,
            epochs: Vec::new(),
            tail: VecDeque::new(),
            marks: Vec::new(),
        }
    }

    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Where the next entry's frame starts.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn last_term(&self) -> u64 {
        self.epochs.last().map_or(self.prev_term, |e| e.term)
    }

    /// Record the next entry: index `last_index + 1`, term `term`, its
    /// frame at `base_offset .. end_offset`. Terms never go down, and
    /// frames are contiguous.
    pub fn append(&mut self, term: u64, base_offset: u64, end_offset: u64) -> u64 {
        assert_eq!(base_offset, self.next_offset, "frames are contiguous");
        assert!(
            end_offset > base_offset,
            "a frame holds at least one offset"
        );
        assert!(term >= self.last_term(), "terms never go down");
        let index = self.last_index + 1;
        if self.epochs.last().is_none_or(|e| e.term != term) {
            self.epochs.push(EpochStart {
                term,
                index,
                offset: base_offset,
            });
        }
        self.tail.push_back((index, base_offset));
        if self.tail.len() > TAIL_ENTRIES {
            let (i, o) = self.tail.pop_front().expect("tail is not empty");
            if (i - self.first_index).is_multiple_of(MARK_EVERY) {
                self.marks.push((i, o));
            }
        }
        self.last_index = index;
        self.next_offset = end_offset;
        index
    }

    /// Term of entry `index`: for `first_index - 1 ..= last_index`, else
    /// None (compacted away, or not written yet).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first_index {
            return Some(self.prev_term);
        }
        if index < self.first_index || index > self.last_index {
            return None;
        }
        let i = self.epochs.partition_point(|e| e.index <= index);
        Some(self.epochs[i - 1].term)
    }

    /// The first index of `term`'s entries, if any are in the log (for
    /// conflict hints and OffsetForLeaderEpoch).
    pub fn epoch(&self, term: u64) -> Option<EpochStart> {
        self.epochs.iter().find(|e| e.term == term).copied()
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch (term) at or below
    /// `term` that has entries in the log, and where it ends (the next
    /// epoch's first offset, or the log end for the last epoch). None when
    /// `term` is below every epoch the log holds, or above the last (as
    /// Kafka answers UNDEFINED for an epoch it has not seen).
    pub fn epoch_end(&self, term: u64) -> Option<(u64, u64)> {
        if self.epochs.last().is_some_and(|e| term > e.term) {
            return None;
        }
        let k = self.epochs.partition_point(|e| e.term <= term);
        let epoch = self.epochs.get(k.checked_sub(1)?)?;
        let end = self.epochs.get(k).map_or(self.next_offset(), |e| e.offset);
        Some((epoch.term, end))
    }

    /// Where entry `index` (`first_index ..= last_index`) is.
    pub fn find(&self, index: u64) -> Option<Found> {
        if index < self.first_index || index > self.last_index {
            return None;
        }
        if let Some(&(t0, _)) = self.tail.front() {
            if index >= t0 {
                let (i, o) = self.tail[(index - t0) as usize];
                assert_eq!(i, index);
                return Some(Found::At(o));
            }
        }
        if index == self.first_index {
            return Some(Found::At(self.first_offset));
        }
        // The mark at or below, or the log start; an epoch start is exact too.
        let m = self.marks.partition_point(|(i, _)| *i <= index);
        let mut from = match m {
            0 => (self.first_index, self.first_offset),
            _ => self.marks[m - 1],
        };
        let e = self.epochs.partition_point(|e| e.index <= index);
        if e > 0 && self.epochs[e - 1].index > from.0 {
            from = (self.epochs[e - 1].index, self.epochs[e - 1].offset);
        }
        Some(if from.0 == index {
            Found::At(from.1)
        } else {
            Found::ScanFrom {
                index: from.0,
                offset: from.1,
            }
        })
    }

    /// The entry whose frame starts at `offset`, if it is one of the tail's
    /// (where a producer's retry finds the batch it repeats).
    pub fn index_at(&self, offset: u64) -> Option<u64> {
        let k = self.tail.partition_point(|(_, o)| *o < offset);
        match self.tail.get(k) {
            Some(&(i, o)) if o == offset => Some(i),
            _ => None,
        }
    }

    /// The first place this index knows exactly at or after `offset`: an
    /// entry (index, base offset) from the marks, the epochs or the tail,
    /// or the log end (`last_index + 1`, `next_offset`). An entry that
    /// starts at `offset` is then found by reading the frames from
    /// `offset` up to that place and counting them.
    pub fn known_at_or_after(&self, offset: u64) -> (u64, u64) {
        let mut best = (self.last_index + 1, self.next_offset);
        let mut consider = |p: (u64, u64)| {
            if p.1 >= offset && p.1 < best.1 {
                best = p;
            }
        };
        let m = self.marks.partition_point(|(_, o)| *o < offset);
        if let Some(&p) = self.marks.get(m) {
            consider(p);
        }
        let e = self.epochs.partition_point(|e| e.offset < offset);
        if let Some(ep) = self.epochs.get(e) {
            consider((ep.index, ep.offset));
        }
        let t = self.tail.partition_point(|(_, o)| *o < offset);
        if let Some(&p) = self.tail.get(t) {
            consider(p);
        }
        if self.first_offset >= offset {
            consider((self.first_index, self.first_offset));
        }
        best
    }

    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    pub fn prev_term(&self) -> u64 {
        self.prev_term
    }

    /// Drop every entry after `index` (a follower's divergent suffix), given
    /// `end_offset`, where entry `index`'s frame ends (the base offset of
    /// entry `index + 1`, which the caller found with [`Self::find`]).
    /// `index` may be `first_index - 1` (everything goes).
    pub fn truncate_after(&mut self, index: u64, end_offset: u64) {
        assert!(
            index + 1 >= self.first_index && index <= self.last_index,
            "truncating to {index}, outside {}..={}",
            self.first_index - 1,
            self.last_index
        );
        if index == self.last_index {
            assert_eq!(end_offset, self.next_offset);
            return;
        }
        if let Some(Found::At(o)) = self.find(index + 1) {
            assert_eq!(end_offset, o, "entry {} starts at {o}", index + 1);
        }
        self.epochs.retain(|e| e.index <= index);
        self.tail.retain(|(i, _)| *i <= index);
        self.marks.retain(|(i, _)| *i <= index);
        self.last_index = index;
        self.next_offset = end_offset;
    }

    /// Retention moved the log start: entry `first_index` (at
    /// `first_offset`) is now the first; `prev_term` is the term of the
    /// entry before it.
    pub fn compact_to(&mut self, first_index: u64, prev_term: u64, first_offset: u64) {
        assert!(
            first_index > self.first_index && first_index <= self.last_index + 1,
            "compacting to {first_index}, outside {}..={}",
            self.first_index + 1,
            self.last_index + 1
        );
        assert_eq!(self.term(first_index - 1), Some(prev_term));
        self.first_index = first_index;
        self.prev_term = prev_term;
        self.first_offset = first_offset;
        self.tail.retain(|(i, _)| *i >= first_index);
        self.marks.retain(|(i, _)| *i >= first_index);
        // The epoch in force at the new start begins there now.
        let keep = self.epochs.partition_point(|e| e.index <= first_index);
        if keep > 0 {
            self.epochs.drain(..keep - 1);
            let e = &mut self.epochs[0];
            if e.index < first_index {
                e.index = first_index;
                e.offset = first_offset;
            }
        }
        if first_index > self.last_index {
            self.epochs.clear();
            self.next_offset = first_offset;
        }
    }

    /// Memory held, in bytes (for the shard's budget).
    pub fn heap_bytes(&self) -> usize {
        self.epochs.capacity() * std::mem::size_of::<EpochStart>()
            + self.tail.capacity() * 16
            + self.marks.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: every entry's (term, base offset, end offset).
    #[derive(Debug, Clone)]
    struct Model {
        first_index: u64,
        prev_term: u64,
        first_offset: u64,
        entries: Vec<(u64, u64, u64)>,
    }

    impl Model {
        fn last_index(&self) -> u64 {
            self.first_index + self.entries.len() as u64 - 1
        }
        fn next_offset(&self) -> u64 {
            self.entries.last().map_or(self.first_offset, |e| e.2)
        }
        fn term(&self, i: u64) -> Option<u64> {
            if i + 1 == self.first_index {
                return Some(self.prev_term);
            }
            if i < self.first_index || i > self.last_index() {
                return None;
            }
            Some(self.entries[(i - self.first_index) as usize].0)
        }
        fn base(&self, i: u64) -> u64 {
            self.entries[(i - self.first_index) as usize].1
        }
    }

    /// What a reader does with [`Found::ScanFrom`]: walk frames forward.
    fn resolve(model: &Model, idx: &LogIndex, i: u64) -> u64 {
        match idx.find(i).expect("in range") {
            Found::At(o) => o,
            Found::ScanFrom { index, offset } => {
                assert!(index < i && i - index < MARK_EVERY.max(1) + TAIL_ENTRIES as u64);
                assert_eq!(model.base(index), offset, "scan start {index}");
                let mut at = offset;
                for k in index..i {
                    let (_, b, e) = model.entries[(k - model.first_index) as usize];
                    assert_eq!(b, at);
                    at = e;
                }
                at
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append { bump_term: bool, records: u64 },
        Truncate { back: u64 },
        Compact { forward: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => (any::<bool>(), 1..50u64).prop_map(|(b, r)| Op::Append { bump_term: b, records: r }),
            2 => (0..20_000u64).prop_map(|back| Op::Truncate { back }),
            1 => (0..20_000u64).prop_map(|forward| Op::Compact { forward }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn agrees_with_a_list_of_every_entry(
            start in 1..1000u64,
            ops in proptest::collection::vec(op(), 1..40),
            bursts in proptest::collection::vec(0..3000usize, 1..40),
        ) {
            let mut model = Model { first_index: start, prev_term: 3, first_offset: start * 7, entries: vec![] };
            let mut idx = LogIndex::new(start, 3, start * 7);
            let mut term = 3;
            for (op, burst) in ops.into_iter().zip(bursts.into_iter().cycle()) {
                match op {
                    Op::Append { bump_term, records } => {
                        if bump_term { term += 1; }
                        // Bursts push entries past the tail into marks.
                        for k in 0..=burst as u64 {
                            let b = model.next_offset();
                            let e = b + 1 + (records + k) % 50;
                            let i = idx.append(term, b, e);
                            model.entries.push((term, b, e));
                            prop_assert_eq!(i, model.last_index());
                        }
                    }
                    Op::Truncate { back } => {
                        if model.entries.is_empty() { continue; }
                        let keep = model.entries.len() as u64 - (back % (model.entries.len() as u64 + 1));
                        let to = model.first_index + keep - 1;
                        let end = if to == model.last_index() {
                            model.next_offset()
                        } else {
                            resolve(&model, &idx, to + 1)
                        };
                        idx.truncate_after(to, end);
                        model.entries.truncate(keep as usize);
                        // A new leader's entries come in a new term.
                        term += 1;
                    }
                    Op::Compact { forward } => {
                        let n = model.entries.len() as u64;
                        if n == 0 { continue; }
                        let k = 1 + forward % n; // entries dropped
                        let first = model.first_index + k;
                        let prev = model.term(first - 1).unwrap();
                        let off = if k < n { resolve(&model, &idx, first) } else { model.next_offset() };
                        idx.compact_to(first, prev, off);
                        model.entries.drain(..k as usize);
                        model.first_index = first;
                        model.prev_term = prev;
                        model.first_offset = off;
                    }
                }
                prop_assert_eq!(idx.first_index(), model.first_index);
                prop_assert_eq!(idx.last_index(), model.first_index + model.entries.len() as u64 - 1);
                prop_assert_eq!(idx.next_offset(), model.next_offset());
                let lo = model.first_index - 1;
                let hi = model.first_index + model.entries.len() as u64;
                for i in lo.saturating_sub(2)..=hi + 1 {
                    prop_assert_eq!(idx.term(i), model.term(i), "term of {}", i);
                }
                // Every entry is found (sampled: every 97th and the last 50).
                let last = model.first_index + model.entries.len() as u64;
                for i in (model.first_index..last).step_by(97).chain(last.saturating_sub(50).max(model.first_index)..last) {
                    prop_assert_eq!(resolve(&model, &idx, i), model.base(i), "entry {}", i);
                }
                prop_assert!(idx.heap_bytes() < 1 << 20);
            }
        }
    }

    #[test]
    fn terms_and_offsets_of_a_small_log() {
        let mut idx = LogIndex::new(1, 0, 0);
        assert_eq!(idx.term(0), Some(0));
        assert_eq!(idx.term(1), None);
        idx.append(1, 0, 1); // a new leader's empty entry: one control record
        idx.append(1, 1, 11);
        idx.append(2, 11, 12);
        idx.append(2, 12, 20);
        assert_eq!(
            (idx.term(1), idx.term(2), idx.term(3), idx.term(4)),
            (Some(1), Some(1), Some(2), Some(2))
        );
        assert_eq!(idx.find(4), Some(Found::At(12)));
        assert_eq!(idx.epoch(2).map(|e| (e.index, e.offset)), Some((3, 11)));
        // OffsetForLeaderEpoch: epoch 1 ends where epoch 2 starts, epoch 2
        // at the log end; an epoch never seen is undefined.
        assert_eq!(idx.epoch_end(1), Some((1, 11)));
        assert_eq!(idx.epoch_end(2), Some((2, 20)));
        assert_eq!(idx.epoch_end(0), None);
        assert_eq!(idx.epoch_end(3), None);
        // A retry finds its batch by base offset among the tail's entries.
        assert_eq!((idx.index_at(11), idx.index_at(5)), (Some(3), None));
        // A follower drops its divergent suffix from entry 3 on.
        idx.truncate_after(2, 11);
        assert_eq!(
            (idx.last_index(), idx.next_offset(), idx.last_term()),
            (2, 11, 1)
        );
        assert_eq!(idx.epoch(2), None);
        idx.append(3, 11, 15);
        assert_eq!(idx.term(3), Some(3));
    }
}
