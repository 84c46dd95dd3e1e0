//! The ordered segments of one partition log.
//!
//! Owns every [`Segment`] of the log, oldest first: closed segments, then
//! exactly one active segment (the last) that appends go to. Lookups by
//! base offset or by offset live here, once. The set is never empty.
//!
//! Lifecycle: built by recovery (or with one empty segment for a new log);
//! a roll pushes a new active segment; retention removes sealed segments
//! from the front; a suffix truncation rebuilds the set from disk.
//! Owned by the partition's log, on its shard; no I/O.

use super::segment::Segment;

pub struct SegmentSet<F> {
    segments: Vec<Segment<F>>,
}

impl<F> SegmentSet<F> {
    /// A set of recovered (or new) segments: contiguous, oldest first.
    pub fn new(segments: Vec<Segment<F>>) -> Self {
        let set = SegmentSet { segments };
        set.assert_ordered();
        set
    }

    /// Segments are non-empty, sorted and contiguous, and only the last is active.
    pub fn assert_ordered(&self) {
        assert!(!self.segments.is_empty(), "a log has at least one segment");
        for w in self.segments.windows(2) {
            assert_eq!(
                w[0].next_offset, w[1].base_offset,
                "segments are contiguous: one ends where the next starts"
            );
            assert!(w[0].base_offset < w[1].base_offset);
        }
        assert!(!self.active().sealed, "the active segment is never sealed");
    }

    /// First offset stored.
    pub fn log_start(&self) -> u64 {
        self.segments[0].base_offset
    }

    pub fn active(&self) -> &Segment<F> {
        self.segments
            .last()
            .expect("a log has at least one segment")
    }

    pub fn active_mut(&mut self) -> &mut Segment<F> {
        self.segments
            .last_mut()
            .expect("a log has at least one segment")
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = &Segment<F>> {
        self.segments.iter()
    }

    /// Bytes of frames in every segment.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// The segment whose base offset is `base`, if it is still in the log.
    pub fn get(&self, base: u64) -> Option<&Segment<F>> {
        self.index_of(base).map(|i| &self.segments[i])
    }

    pub fn get_mut(&mut self, base: u64) -> Option<&mut Segment<F>> {
        self.index_of(base).map(|i| &mut self.segments[i])
    }

    fn index_of(&self, base: u64) -> Option<usize> {
        self.segments
            .binary_search_by_key(&base, |s| s.base_offset)
            .ok()
    }

    /// The segment that holds `offset` (the last one starting at or before it).
    pub fn containing(&self, offset: u64) -> &Segment<F> {
        assert!(
            offset >= self.log_start(),
            "offset {offset} is below the log start"
        );
        let i = self.segments.partition_point(|s| s.base_offset <= offset) - 1;
        &self.segments[i]
    }

    /// The first segment holding a batch with a timestamp at or after `ts`.
    pub fn first_with_timestamp_at_least(&self, ts: i64) -> Option<&Segment<F>> {
        self.segments.iter().find(|s| s.max_timestamp >= ts)
    }

    /// How many segments, from the front, are sealed (safe to delete).
    pub fn sealed_prefix(&self) -> &[Segment<F>] {
        let n = self.segments.iter().take_while(|s| s.sealed).count();
        assert!(
            n < self.segments.len(),
            "the active segment is never sealed"
        );
        &self.segments[..n]
    }

    /// Start a new active segment where the current one ends.
    pub fn push_active(&mut self, segment: Segment<F>) {
        let active = self.active();
        assert_eq!(
            segment.base_offset, active.next_offset,
            "a new segment starts where the active one ends"
        );
        assert!(!active.is_empty(), "rolling an empty segment");
        self.segments.push(segment);
    }

    /// Remove the `n` oldest segments (all sealed) and return them.
    pub fn remove_oldest(&mut self, n: usize) -> Vec<Segment<F>> {
        assert!(
            n <= self.sealed_prefix().len(),
            "only sealed segments are removed"
        );
        let removed: Vec<_> = self.segments.drain(..n).collect();
        self.assert_ordered();
        removed
    }
}
