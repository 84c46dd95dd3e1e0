//! The offsets of one partition log and the order they keep.
//!
//! Owns four numbers, all in Kafka offsets:
//! - `log_start`: the first offset a reader may ask for. Retention moves it
//!   up to the first stored segment's base; DeleteRecords moves it up to
//!   any offset not past `durable` (a floor persisted in the partition's
//!   `log-start` file, so it may sit inside the first stored segment, or
//!   past sealed segments retention has not removed yet);
//! - `durable`: every offset below it is covered by an fdatasync;
//! - `flushed`: every offset below it is written to its segment file
//!   (perhaps not synced yet);
//! - `next`: the offset the next appended record gets (the log end).
//!
//! They always satisfy `log_start <= durable <= flushed <= next`:
//! - `log_start <= durable`: retention deletes only sealed segments, and a
//!   segment is sealed when its roll is processed, which makes everything
//!   below the next segment's base durable. DeleteRecords never passes the
//!   high watermark, which is at most `durable`. An empty log has all four
//!   equal (a fresh log, or one whose checkpoint says where it starts).
//! - `durable <= flushed`: a sync moves both to its target; a roll moves
//!   both to the new segment's base.
//! - `flushed <= next`: a write covers only what was appended.
//! - After recovery (or a suffix truncation, which recovers) all but
//!   `log_start` equal the recovered end: what is on disk was synced by
//!   recovery. `log_start` is then the larger of the first segment's base
//!   and the persisted DeleteRecords floor, capped at the end (a recovery
//!   cut of an unsynced tail can leave the floor past it).
//!
//! Pure state, no I/O. Owned by the partition's log, on its shard. The log
//! calls [`LogOffsets::assert_invariants`] after every append, sync, roll,
//! truncation and retention step; it is an `assert!`, on in release builds.

/// The offsets of one partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    log_start: u64,
    durable: u64,
    flushed: u64,
    next: u64,
}

impl LogOffsets {
    /// A log recovered from disk (or created): everything it holds is durable.
    pub fn recovered(log_start: u64, next: u64) -> Self {
        let o = LogOffsets {
            log_start,
            durable: next,
            flushed: next,
            next,
        };
        o.assert_invariants();
        o
    }

    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    pub fn durable(&self) -> u64 {
        self.durable
    }

    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// `log_start <= durable <= flushed <= next`.
    pub fn assert_invariants(&self) {
        assert!(
            self.log_start <= self.durable
                && self.durable <= self.flushed
                && self.flushed <= self.next,
            "log offsets out of order: {self:?} (want log_start <= durable <= flushed <= next)"
        );
    }

    /// Records up to (not including) `next` were appended.
    pub fn appended(&mut self, next: u64) {
        assert!(next > self.next, "an append moves the log end forward");
        self.next = next;
        self.assert_invariants();
    }

    /// Everything below `end` is written to its segment file.
    pub fn written(&mut self, end: u64) {
        assert!(end <= self.next, "written past the log end");
        self.flushed = self.flushed.max(end);
        self.assert_invariants();
    }

    /// An fdatasync (or a closed segment) covers everything below `end`.
    pub fn synced(&mut self, end: u64) {
        assert!(end <= self.next, "synced past the log end");
        self.durable = self.durable.max(end);
        self.flushed = self.flushed.max(end);
        self.assert_invariants();
    }

    /// Retention deleted everything below `log_start`.
    pub fn start_moved(&mut self, log_start: u64) {
        assert!(
            log_start >= self.log_start,
            "retention moves the log start forward"
        );
        self.log_start = log_start;
        self.assert_invariants();
    }

    /// DeleteRecords: offsets below `floor` are gone. Never moves the log
    /// start back (two concurrent calls: the larger floor wins); the floor
    /// must not pass `durable` (the high watermark is at most that).
    pub fn records_deleted(&mut self, floor: u64) {
        self.log_start = self.log_start.max(floor);
        self.assert_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_keep_their_order_through_a_lifecycle() {
        let mut o = LogOffsets::recovered(0, 0);
        o.appended(10);
        o.written(4);
        assert_eq!((o.durable(), o.flushed(), o.next()), (0, 4, 10));
        o.synced(10);
        assert_eq!((o.durable(), o.flushed()), (10, 10));
        o.start_moved(5);
        assert_eq!(o.log_start(), 5);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn retention_past_the_durable_offset_is_refused() {
        let mut o = LogOffsets::recovered(0, 0);
        o.appended(10);
        o.start_moved(5);
    }

    #[test]
    fn delete_records_moves_the_start_forward_only() {
        let mut o = LogOffsets::recovered(0, 10);
        o.records_deleted(7);
        assert_eq!(o.log_start(), 7);
        o.records_deleted(3);
        assert_eq!(o.log_start(), 7);
        o.records_deleted(10);
        assert_eq!(o.log_start(), 10);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn delete_records_past_the_durable_offset_is_refused() {
        let mut o = LogOffsets::recovered(0, 5);
        o.appended(10);
        o.records_deleted(6);
    }

    #[test]
    #[should_panic(expected = "synced past the log end")]
    fn a_sync_cannot_pass_the_log_end() {
        let mut o = LogOffsets::recovered(3, 7);
        o.synced(8);
    }
}
