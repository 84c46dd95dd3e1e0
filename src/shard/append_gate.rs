//! The append gate: a shard's appends go one at a time, in the order their
//! requests arrived, and wait while the shard's write budget is spent.
//!
//! **Why order.** A connection's produce requests must be appended in the
//! order it sent them (Kafka's per-partition ordering, and idempotent
//! sequences). Appends used to run synchronously when their request
//! arrived, which gave that order for free; now an append may have to
//! wait for the flushers (see `storage::write_budget`), so each takes a
//! ticket when its request arrives and appends when its ticket is served.
//! When nothing waits and the budget has room, the append still happens at
//! once, with no task switch.
//!
//! Lifecycle: one per shard, owned by its executor.

use crate::event::turns::{Turn, Turns};
use crate::storage::WriteBudget;

#[derive(Default)]
pub struct AppendGate {
    turns: Turns,
}

/// A place in the shard's append order. Appending is allowed once
/// [`Ticket::wait`] returns; dropping the ticket lets the next one go.
pub struct Ticket {
    turn: Turn,
}

impl AppendGate {
    /// Take the next place in line (call when the request arrives).
    pub fn ticket(&self) -> Ticket {
        Ticket {
            turn: self.turns.take(),
        }
    }
}

impl Ticket {
    /// Whether this ticket may append `bytes` right now, without waiting.
    pub fn ready(&self, budget: &WriteBudget, bytes: usize) -> bool {
        self.turn.is_now() && budget.has_room(bytes)
    }

    /// Wait for this ticket's turn, then for room for `bytes` in the write budget.
    pub async fn wait(&self, budget: &WriteBudget, bytes: usize) {
        self.turn.wait().await;
        budget.wait_for_room(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_served_in_order_and_abandoned_ones_skipped() {
        glommio::LocalExecutor::default().run(async {
            let gate = AppendGate::default();
            let budget = WriteBudget::unlimited();
            let a = gate.ticket();
            let b = gate.ticket();
            let c = gate.ticket();
            let d = gate.ticket();
            assert!(a.ready(&budget, 1));
            assert!(!b.ready(&budget, 1));
            drop(c); // cancelled before its turn
            drop(a);
            assert!(b.ready(&budget, 1));
            drop(b);
            assert!(d.ready(&budget, 1), "the abandoned ticket is skipped");
            d.wait(&budget, 1).await;
        });
    }
}
