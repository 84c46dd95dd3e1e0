//! Ordered turns: tickets handed out in arrival order and served one at a
//! time in that order; a ticket dropped before its turn is skipped.
//!
//! **Why.** Work that used to run synchronously when its request arrived
//! (and so kept arrival order for free) now may await in the middle: an
//! append waits for the write budget, a large produce yields the core so a
//! fresh client's Metadata is not stuck behind 50 ms of batch conversion.
//! Taking a ticket when the request arrives, and doing the order-sensitive
//! step only once the ticket is served, keeps the order without keeping
//! the core.
//!
//! Lifecycle: a [`Turns`] lives as long as what it orders (a shard's
//! appends, a connection's requests); owned by one executor (`!Send`).

use super::LocalEvent;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

#[derive(Default)]
pub struct Turns {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    next_ticket: Cell<u64>,
    /// The ticket whose turn it is.
    serving: Cell<u64>,
    /// Tickets dropped before their turn (their task was cancelled, or had
    /// nothing order-sensitive to do).
    abandoned: RefCell<BTreeSet<u64>>,
    turn: Rc<LocalEvent>,
}

/// A place in line. Its turn comes once every earlier ticket is dropped;
/// dropping it lets the next one go.
pub struct Turn {
    inner: Rc<Inner>,
    number: u64,
}

impl Turns {
    /// Take the next place in line (call when the request arrives).
    pub fn take(&self) -> Turn {
        let number = self.inner.next_ticket.get();
        self.inner.next_ticket.set(number + 1);
        Turn {
            inner: self.inner.clone(),
            number,
        }
    }
}

impl Inner {
    fn advance(&self) {
        let mut next = self.serving.get() + 1;
        let mut abandoned = self.abandoned.borrow_mut();
        while abandoned.remove(&next) {
            next += 1;
        }
        self.serving.set(next);
        self.turn.notify();
    }
}

impl Turn {
    /// Whether it is this ticket's turn now.
    pub fn is_now(&self) -> bool {
        self.inner.serving.get() == self.number
    }

    /// Wait for this ticket's turn.
    pub async fn wait(&self) {
        loop {
            let l = self.inner.turn.listen();
            if self.is_now() {
                return;
            }
            l.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let serving = self.inner.serving.get();
        if serving == self.number {
            self.inner.advance();
        } else {
            assert!(self.number > serving, "a turn is served once");
            self.inner.abandoned.borrow_mut().insert(self.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_served_in_order_and_abandoned_ones_skipped() {
        glommio::LocalExecutor::default().run(async {
            let turns = Turns::default();
            let a = turns.take();
            let b = turns.take();
            let c = turns.take();
            let d = turns.take();
            assert!(a.is_now());
            assert!(!b.is_now());
            drop(c); // cancelled before its turn
            drop(a);
            assert!(b.is_now());
            drop(b);
            assert!(d.is_now(), "the abandoned ticket is skipped");
            d.wait().await;
        });
    }

    #[test]
    fn a_waiting_turn_wakes_when_the_earlier_one_is_dropped() {
        glommio::LocalExecutor::default().run(async {
            let turns = Rc::new(Turns::default());
            let first = turns.take();
            let second = turns.take();
            let order = Rc::new(RefCell::new(Vec::new()));
            let o = order.clone();
            let waiter = glommio::spawn_local(async move {
                second.wait().await;
                o.borrow_mut().push(2);
            });
            glommio::executor().yield_task_queue_now().await;
            assert!(order.borrow().is_empty(), "the second waits for the first");
            order.borrow_mut().push(1);
            drop(first);
            waiter.await;
            assert_eq!(*order.borrow(), vec![1, 2]);
        });
    }
}
