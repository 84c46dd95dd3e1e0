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
//! **Who goes next.** Waiters are of two [`Class`]es: requests (charged
//! their frame: produce and the rest) and reads (a fetch, charged for the
//! answer it may return). Within a class, first come, first served. Between
//! classes, the one granted fewer bytes so far goes first, so that while
//! both wait each gets half the bytes granted. Why: 64 producers keep a
//! queue of up to 64 requests of ~1 MiB waiting (one per connection);
//! first come, first served across all of them made a consumer's 32 MiB
//! fetch wait behind that whole queue every time (p99 115 ms), and it read
//! 27% of what was produced (issue 14). A class that had no waiter starts
//! level with the other (no credit saved up while idle), so neither can
//! take the budget for long after a pause.
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
    /// Waiting acquisitions by ticket, one queue per class (indexed by
    /// `Class as usize`), each in arrival order; tickets grow, so they also
    /// order the two heads. Only the one [`Self::next_turn`] names may take
    /// bytes, and it holds the others back until its bytes fit. Why no
    /// passing: a fetch is charged for its whole answer (32 MiB), and with
    /// 64 producers' 1 MiB requests keeping the budget nearly spent, each
    /// release fitted one of theirs and never the fetch: a live consumer
    /// read nothing for as long as the producers ran (issue 14). Why a
    /// queue per class: every release wakes every waiter to look, so the
    /// look must not walk the queue.
    queues: [RefCell<VecDeque<u64>>; 2],
    next_ticket: Cell<u64>,
    /// Bytes granted through [`Self::acquire`] so far, per class (indexed
    /// by `Class as usize`); only their difference matters.
    granted: [Cell<u64>; 2],
}

/// What a charge is for; see "Who goes next" above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A request charged its own frame (produce, metadata, commits, ...).
    Requests = 0,
    /// A fetch, charged for the answer it may return.
    Reads = 1,
}

impl Class {
    fn other(self) -> Class {
        match self {
            Class::Requests => Class::Reads,
            Class::Reads => Class::Requests,
        }
    }
}

/// A place in [`RequestMemory`]'s queue; leaving it (granted or given up)
/// lets the next waiter look.
struct Turn<'a> {
    mem: &'a RequestMemory,
    ticket: u64,
    class: Class,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut q = self.mem.queues[self.class as usize].borrow_mut();
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
            queues: [RefCell::new(VecDeque::new()), RefCell::new(VecDeque::new())],
            next_ticket: Cell::new(0),
            granted: [Cell::new(0), Cell::new(0)],
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

    /// The ticket whose turn it is: the first waiter of the class granted
    /// fewer bytes (the earlier of the two heads on a tie).
    fn next_turn(&self) -> Option<u64> {
        let head = |c: Class| self.queues[c as usize].borrow().front().copied();
        let granted = |c: Class| self.granted[c as usize].get();
        match (head(Class::Requests), head(Class::Reads)) {
            (Some(req), Some(read)) => {
                Some(match granted(Class::Requests).cmp(&granted(Class::Reads)) {
                    std::cmp::Ordering::Less => req,
                    std::cmp::Ordering::Greater => read,
                    std::cmp::Ordering::Equal => req.min(read),
                })
            }
            (one, other) => one.or(other),
        }
    }

    fn nobody_waits(&self) -> bool {
        self.queues.iter().all(|q| q.borrow().is_empty())
    }

    /// Charge `n` bytes of `class` through the queue's accounting.
    fn grant(self: &Rc<Self>, n: usize, class: Class) -> Grant {
        let g = &self.granted[class as usize];
        g.set(g.get().wrapping_add(n as u64));
        self.charge_now(n)
    }

    /// Wait until `n` bytes fit and it is this waiter's turn (see "Who
    /// goes next"), then charge them.
    pub async fn acquire(self: &Rc<Self>, n: usize, class: Class) -> Grant {
        if self.nobody_waits() && self.fits(n) {
            return self.grant(n, class);
        }
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        {
            let mut q = self.queues[class as usize].borrow_mut();
            if q.is_empty() {
                // No credit saved up while this class had nobody waiting.
                let (mine, other) = (
                    &self.granted[class as usize],
                    self.granted[class.other() as usize].get(),
                );
                mine.set(mine.get().max(other));
            }
            q.push_back(ticket);
        }
        let _turn = Turn {
            mem: self,
            ticket,
            class,
        };
        loop {
            let l = self.freed.listen();
            if self.next_turn() == Some(ticket) && self.fits(n) {
                return self.grant(n, class);
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

    /// Hold exactly `bytes` from now on: more without waiting (as
    /// [`Self::grow`]), or fewer, releasing the rest at once (a fetch
    /// charged for the answer it may return, once the answer is known).
    pub fn resize(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            self.grow(bytes - self.bytes);
            return;
        }
        let less = self.bytes - bytes;
        let used = self.mem.used.get();
        assert!(used >= less, "request memory released twice");
        self.mem.used.set(used - less);
        self.bytes = bytes;
        self.mem.freed.notify();
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
            let a = m.acquire(60, Class::Requests).await;
            assert_eq!(m.used(), 60);
            // 60 + 50 does not fit: the second waits until the first goes.
            let m2 = m.clone();
            let waiter =
                glommio::spawn_local(async move { m2.acquire(50, Class::Requests).await.bytes() });
            glommio::executor().yield_task_queue_now().await;
            assert_eq!(m.used(), 60);
            drop(a);
            assert_eq!(waiter.await, 50);
            assert_eq!(m.used(), 0);
            // Larger than the budget: goes alone.
            let big = m.acquire(500, Class::Requests).await;
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
            let a = m.acquire(90, Class::Requests).await;
            let m2 = m.clone();
            let large = glommio::spawn_local(async move { m2.acquire(60, Class::Requests).await });
            glommio::executor().yield_task_queue_now().await;
            let m3 = m.clone();
            let small = glommio::spawn_local(async move { m3.acquire(10, Class::Requests).await });
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
            let a = m.acquire(90, Class::Requests).await;
            let m4 = m.clone();
            let gone = glommio::spawn_local(async move { m4.acquire(60, Class::Requests).await });
            glommio::executor().yield_task_queue_now().await;
            drop(gone.cancel().await);
            let after = m.acquire(5, Class::Requests).await;
            assert_eq!(m.used(), 95);
            drop((a, after));
            assert_eq!(m.used(), 0);
        });
    }

    /// Between classes, the one granted fewer bytes goes first: a fetch
    /// waiting behind a queue of produce requests is served after at most
    /// one of them, and while both classes keep waiting they share the
    /// bytes granted about evenly.
    #[test]
    fn a_read_is_not_queued_behind_every_request() {
        glommio::LocalExecutor::default().run(async {
            let m = RequestMemory::new(100);
            let order = Rc::new(RefCell::new(Vec::new()));
            let hold = m.acquire(100, Class::Requests).await;
            let mut tasks = Vec::new();
            // Ten requests of 10 wait, then one read of 40.
            for i in 0..10 {
                let (m, order) = (m.clone(), order.clone());
                tasks.push(glommio::spawn_local(async move {
                    let g = m.acquire(10, Class::Requests).await;
                    order.borrow_mut().push(format!("w{i}"));
                    g
                }));
                glommio::executor().yield_task_queue_now().await;
            }
            let (m2, o2) = (m.clone(), order.clone());
            let read = glommio::spawn_local(async move {
                let g = m2.acquire(40, Class::Reads).await;
                o2.borrow_mut().push("r".to_string());
                g
            });
            glommio::executor().yield_task_queue_now().await;
            drop(hold);
            // The grants are kept, so the budget fills: w0, the read and
            // w1..w5 make 100; the rest wait.
            for _ in 0..100 {
                if order.borrow().len() >= 7 {
                    break;
                }
                glommio::executor().yield_task_queue_now().await;
            }
            let seen = order.borrow().clone();
            // The read came in level with the requests (the 100 granted to
            // `hold` counted), so exactly one request, the oldest, went
            // before it; without classes it would be last.
            assert_eq!(seen, ["w0", "r", "w1", "w2", "w3", "w4", "w5"]);
            assert_eq!(m.used(), 100);
            // Releasing the read lets the other four requests in.
            drop(read.await);
            let mut rest = Vec::new();
            for t in tasks {
                rest.push(t.await);
            }
            assert_eq!(m.used(), 100);
            drop(rest);
            assert_eq!(m.used(), 0);
        });
    }

    /// A grant resized down (a fetch's answer smaller than what it was
    /// charged for) releases the difference at once and lets a waiter in;
    /// resized up, it holds more without waiting.
    #[test]
    fn a_resized_grant_releases_what_it_no_longer_needs() {
        glommio::LocalExecutor::default().run(async {
            let m = RequestMemory::new(100);
            let mut fetch = m.acquire(80, Class::Reads).await;
            let m2 = m.clone();
            let waiter = glommio::spawn_local(async move { m2.acquire(50, Class::Requests).await });
            glommio::executor().yield_task_queue_now().await;
            assert_eq!(m.used(), 80);
            fetch.resize(30);
            let w = waiter.await;
            assert_eq!(m.used(), 80);
            fetch.resize(60);
            assert_eq!((fetch.bytes(), m.used()), (60, 110));
            drop((fetch, w));
            assert_eq!(m.used(), 0);
        });
    }
}
