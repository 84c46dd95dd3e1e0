//! The shard's request memory: one budget for every byte the shard holds on
//! behalf of clients' requests (request frames being read or served, and
//! answers assembled but not yet written to the socket).
//!
//! **Why one budget, charged before allocation.** A bound checked after
//! the fact is no bound: a client that sends the length prefix of a 64 MiB
//! frame, or asks for a 2 GiB fetch, would already have made the broker
//! allocate. So every large allocation for a client first takes a
//! [`Grant`] here, and waits (the socket is not read meanwhile, so TCP flow
//! control pushes back on the client) while the budget is spent. Small
//! requests (at most [`SMALL_REQUEST_BYTES`]) from a connection with nothing
//! else in flight are charged without waiting, so that a fresh client's
//! Metadata request is answered even while the budget is spent; that
//! allowance is part of the fixed per-connection overhead stated in the
//! README.
//!
//! One request larger than the whole budget still goes when nothing else is
//! charged, so an oversized (but allowed) request cannot deadlock.
//!
//! Lifecycle: created with its shard, lives as long as the shard; owned by
//! that shard's executor (`!Send`). Grants are dropped on the same shard.

use crate::event::LocalEvent;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// Requests up to this size, from a connection with nothing in flight, are
/// charged without waiting for budget.
pub const SMALL_REQUEST_BYTES: usize = 64 << 10;

pub struct RequestMemory {
    used: Cell<usize>,
    max: usize,
    /// Fires whenever bytes are released (and when a waiter leaves the
    /// queue, so that the next one looks).
    freed: Rc<LocalEvent>,
    /// Waiting acquisitions, by ticket, in arrival order. Only the first
    /// may take bytes. Why first come, first served: a fetch is charged
    /// for its whole answer (32 MiB), and with 64 producers' 1 MiB
    /// requests keeping the budget nearly spent, each release fitted one
    /// of theirs and never the fetch: a live consumer read nothing for as
    /// long as the producers ran (issue 14).
    queue: RefCell<VecDeque<u64>>,
    next_ticket: Cell<u64>,
}

/// A place in [`RequestMemory`]'s queue; leaving it (granted or given up)
/// lets the next waiter look.
struct Turn<'a> {
    mem: &'a RequestMemory,
    ticket: u64,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut q = self.mem.queue.borrow_mut();
        if let Some(i) = q.iter().position(|t| *t == self.ticket) {
            q.remove(i);
        }
        drop(q);
        self.mem.freed.notify();
    }
}

impl RequestMemory {
    pub fn new(max: usize) -> Rc<Self> {
        Rc::new(RequestMemory {
            used: Cell::new(0),
            max,
            freed: Rc::new(LocalEvent::new()),
            queue: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(0),
        })
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Whether nothing more may be charged (except the small-request allowance).
    pub fn is_spent(&self) -> bool {
        self.used.get() >= self.max
    }

    /// A future that completes the next time bytes are released.
    pub fn released(&self) -> crate::event::Listener {
        self.freed.listen()
    }

    fn fits(&self, n: usize) -> bool {
        let used = self.used.get();
        used == 0 || used.saturating_add(n) <= self.max
    }

    fn add(&self, n: usize) {
        self.used.set(self.used.get() + n);
    }

    /// Charge `n` bytes at once, without waiting. For allowances that are
    /// bounded elsewhere (the small-request allowance, an answer whose
    /// size was already bounded by a grant).
    pub fn charge_now(self: &Rc<Self>, n: usize) -> Grant {
        self.add(n);
        Grant {
            mem: self.clone(),
            bytes: n,
        }
    }

    /// Wait until `n` bytes fit and every earlier waiter has been served,
    /// then charge them.
    pub async fn acquire(self: &Rc<Self>, n: usize) -> Grant {
        if self.queue.borrow().is_empty() && self.fits(n) {
            return self.charge_now(n);
        }
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.queue.borrow_mut().push_back(ticket);
        let _turn = Turn { mem: self, ticket };
        loop {
            let l = self.freed.listen();
            if self.queue.borrow().front() == Some(&ticket) && self.fits(n) {
                return self.charge_now(n);
            }
            l.await;
        }
    }
}

/// Bytes charged to a [`RequestMemory`]; dropping it releases them.
pub struct Grant {
    mem: Rc<RequestMemory>,
    bytes: usize,
}

impl Grant {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hold `more` bytes too, without waiting (for bytes already bounded by
    /// an earlier charge, such as an answer whose size its request was charged for).
    pub fn grow(&mut self, more: usize) {
        self.mem.add(more);
        self.bytes += more;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let used = self.mem.used.get();
        assert!(used >= self.bytes, "request memory released twice");
        self.mem.used.set(used - self.bytes);
        self.mem.freed.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_charged_and_released() {
        glommio::LocalExecutor::default().run(async {
            let m = RequestMemory::new(100);
            let a = m.acquire(60).await;
            assert_eq!(m.used(), 60);
            // 60 + 50 does not fit: the second waits until the first goes.
            let m2 = m.clone();
            let waiter = glommio::spawn_local(async move { m2.acquire(50).await.bytes() });
            glommio::executor().yield_task_queue_now().await;
            assert_eq!(m.used(), 60);
            drop(a);
            assert_eq!(waiter.await, 50);
            assert_eq!(m.used(), 0);
            // Larger than the budget: goes alone.
            let big = m.acquire(500).await;
            assert_eq!(m.used(), 500);
            drop(big);
            assert_eq!(m.used(), 0);
        });
    }

    /// First come, first served: a small request that would fit does not
    /// pass a large one waiting before it, and a waiter that gives up does
    /// not hold the queue.
    #[test]
    fn a_large_waiter_is_not_passed_by_smaller_ones() {
        glommio::LocalExecutor::default().run(async {
            let m = RequestMemory::new(100);
            let a = m.acquire(90).await;
            let m2 = m.clone();
            let large = glommio::spawn_local(async move { m2.acquire(60).await });
            glommio::executor().yield_task_queue_now().await;
            let m3 = m.clone();
            let small = glommio::spawn_local(async move { m3.acquire(10).await });
            glommio::executor().yield_task_queue_now().await;
            // 10 fits beside the 90, but the 60 came first.
            assert_eq!(m.used(), 90, "the small request went before the large one");
            drop(a);
            let large = large.await;
            assert_eq!(large.bytes(), 60);
            let small = small.await;
            assert_eq!(m.used(), 70);
            drop((large, small));
            // A waiter that gives up leaves the queue.
            let a = m.acquire(90).await;
            let m4 = m.clone();
            let gone = glommio::spawn_local(async move { m4.acquire(60).await });
            glommio::executor().yield_task_queue_now().await;
            drop(gone.cancel().await);
            let after = m.acquire(5).await;
            assert_eq!(m.used(), 95);
            drop((a, after));
            assert_eq!(m.used(), 0);
        });
    }
}
