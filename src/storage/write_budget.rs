//! The shard's unwritten bytes: data appended to its partitions' logs that
//! the flushers have not yet written to segment files.
//!
//! **Why.** With acks=1 (or acks=0) a produce is answered as soon as its
//! batches are appended in memory, so nothing else stops a client from
//! appending faster than the disk writes: the flushers' queues, and the
//! cached batches pinned until written, grew without bound (7.9 GB after
//! 30 s of a 53 MiB-request flood). Appends on a shard therefore wait
//! (in arrival order, see `shard::append_gate`) while this budget is spent;
//! the produce's answer waits with them, the connection's in-flight budget
//! fills, and the connection stops reading its socket.
//!
//! Charged per batch at append, released when the flusher has written the
//! chunk holding the batch's last byte (or when the log gives up on
//! writing it: failed storage, close). One batch larger than the budget
//! still goes when nothing else is unwritten. An append waits until all
//! of its bytes fit, so the budget is a bound, not a threshold.
//!
//! Lifecycle: one per shard, shared by that shard's logs (`Rc`, never
//! crosses cores).

use crate::event::LocalEvent;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

pub struct WriteBudget {
    used: Cell<usize>,
    max: usize,
    freed: Rc<LocalEvent>,
    /// Appends waiting for room.
    waiting: Cell<usize>,
    /// Fires when an append starts waiting: flushers then write what they
    /// hold (the partial last chunk is otherwise written only at the flush
    /// interval, and an append waiting for it would wait that long).
    pressure: Rc<LocalEvent>,
}

impl WriteBudget {
    pub fn new(max: usize) -> Rc<Self> {
        Rc::new(WriteBudget {
            used: Cell::new(0),
            max,
            freed: Rc::new(LocalEvent::new()),
            waiting: Cell::new(0),
            pressure: Rc::new(LocalEvent::new()),
        })
    }

    /// No limit (tools and tests that open a log on its own).
    pub fn unlimited() -> Rc<Self> {
        Self::new(usize::MAX)
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Whether an append of `bytes` may go now: it fits, or nothing else
    /// is unwritten (so one append larger than the budget still goes).
    pub fn has_room(&self, bytes: usize) -> bool {
        let used = self.used.get();
        used == 0 || used.saturating_add(bytes) <= self.max
    }

    /// Wait until an append of `bytes` may go.
    pub async fn wait_for_room(&self, bytes: usize) {
        if self.has_room(bytes) {
            return;
        }
        struct Waiting<'a>(&'a Cell<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.waiting.set(self.waiting.get() + 1);
        let _waiting = Waiting(&self.waiting);
        self.pressure.notify();
        loop {
            let l = self.freed.listen();
            if self.has_room(bytes) {
                return;
            }
            l.await;
        }
    }

    /// Whether an append is waiting for room.
    pub fn pressed(&self) -> bool {
        self.waiting.get() > 0
    }

    /// A future that completes when an append starts waiting for room.
    pub fn pressure(&self) -> crate::event::Listener {
        self.pressure.listen()
    }

    fn charge(&self, n: usize) {
        self.used.set(self.used.get() + n);
    }

    fn release(&self, n: usize) {
        let used = self.used.get();
        assert!(used >= n, "unwritten bytes released twice");
        self.used.set(used - n);
        self.freed.notify();
    }
}

/// One log's share: its appended batches not yet written, in offset order.
/// Dropping it (the log is gone) releases whatever is left.
pub struct Unwritten {
    budget: Rc<WriteBudget>,
    /// (offset after the batch, its bytes).
    batches: VecDeque<(u64, usize)>,
    bytes: usize,
}

impl Unwritten {
    pub fn new(budget: Rc<WriteBudget>) -> Self {
        Unwritten {
            budget,
            batches: VecDeque::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether this log should write what it holds now: it holds unwritten
    /// bytes and an append on its shard waits for room.
    pub fn pressed(&self) -> bool {
        self.bytes > 0 && self.budget.pressed()
    }

    pub fn budget(&self) -> &Rc<WriteBudget> {
        &self.budget
    }

    /// A batch ending before `end_offset` was appended.
    pub fn appended(&mut self, end_offset: u64, bytes: usize) {
        if let Some(&(last_end, _)) = self.batches.back() {
            assert!(end_offset > last_end, "appends go in offset order");
        }
        self.batches.push_back((end_offset, bytes));
        self.bytes += bytes;
        self.budget.charge(bytes);
    }

    /// Every offset below `flushed` is written: release those batches.
    pub fn written_up_to(&mut self, flushed: u64) {
        let mut freed = 0;
        while let Some(&(end, bytes)) = self.batches.front() {
            if end > flushed {
                break;
            }
            self.batches.pop_front();
            freed += bytes;
        }
        if freed > 0 {
            self.bytes -= freed;
            self.budget.release(freed);
        }
    }

    /// The log will never write what is left (its storage failed).
    pub fn abandon(&mut self) {
        self.batches.clear();
        let b = std::mem::take(&mut self.bytes);
        if b > 0 {
            self.budget.release(b);
        }
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charged_at_append_and_released_when_written() {
        let b = WriteBudget::new(100);
        let mut u = Unwritten::new(b.clone());
        assert!(b.has_room(500), "an oversized append goes alone");
        u.appended(10, 60);
        assert!(b.has_room(40));
        assert!(!b.has_room(41));
        u.appended(20, 40);
        assert!(!b.has_room(1));
        u.written_up_to(15);
        assert_eq!(b.used(), 40);
        assert!(b.has_room(60));
        u.appended(30, 10);
        drop(u);
        assert_eq!(b.used(), 0);
    }
}
