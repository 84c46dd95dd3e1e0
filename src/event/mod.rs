//! A single-core broadcast event: tasks wait for "something changed" and
//! re-check their condition. Used for data arrival (long-poll fetch), durable
//! progress (acks=all) and waking a partition's flusher.
//!
//! Lives on one executor; never crosses cores (`!Send` by construction).
//! [`turns`] builds ordered tickets on it.

pub mod turns;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct LocalEvent {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wake every current listener.
    pub fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.take() {
            w.wake();
        }
    }

    /// A future that completes at the next `notify` after this call. Take
    /// the listener *before* checking the condition, so no notify is missed.
    pub fn listen(self: &Rc<Self>) -> Listener {
        Listener {
            event: self.clone(),
            generation: self.generation.get(),
        }
    }
}

pub struct Listener {
    event: Rc<LocalEvent>,
    generation: u64,
}

impl Future for Listener {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.event.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
