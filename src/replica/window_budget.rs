//! A shard's memory budget for replicated entries kept in memory: every
//! group's window of recent entries and the ranges read back from disk
//! for lagging followers.
//!
//! Each group's window already has its own byte budget
//! (`GroupConfig::window_bytes`), but a shard holds a thousand groups:
//! without a shard-wide bound a burst of lagging followers could hold
//! thousands of windows. With this budget over its limit:
//! - every group drops the entries it may drop (durable, applied) from its
//!   window at once, whatever its own budget (a lagging follower is then
//!   served from disk);
//! - reads for lagging followers take one read's worth instead of a
//!   read-ahead chunk;
//! - a follower refuses new appends while the shard holds twice the
//!   limit (entries not yet durable cannot be dropped; Raft resends them
//!   once the leader probes again).
//!
//! So a shard holds at most twice the limit plus one message and one read
//! (README, "Guarantees: memory").
//!
//! Lifecycle and cores: one per shard (made with the shard's replication
//! task), shared by every group on that shard through `Rc`; not `Send`.

use std::cell::Cell;
use std::rc::Rc;

#[derive(Clone)]
pub struct WindowBudget {
    used: Rc<Cell<usize>>,
    limit: usize,
}

impl std::fmt::Debug for WindowBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WindowBudget({} of {})", self.used.get(), self.limit)
    }
}

impl WindowBudget {
    pub fn new(limit: usize) -> WindowBudget {
        WindowBudget {
            used: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// No shard-wide limit (each group's own window budget still holds).
    pub fn unlimited() -> WindowBudget {
        WindowBudget::new(usize::MAX / 4)
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Over the limit: groups drop what they may.
    pub fn over(&self) -> bool {
        self.used.get() > self.limit
    }

    /// At twice the limit: followers refuse new appends.
    pub fn full(&self) -> bool {
        self.used.get() > self.limit.saturating_mul(2)
    }

    pub fn add(&self, bytes: usize) {
        self.used.set(self.used.get() + bytes);
    }

    pub fn sub(&self, bytes: usize) {
        let used = self.used.get();
        assert!(bytes <= used, "releasing {bytes} of {used} bytes");
        self.used.set(used - bytes);
    }
}
