//! Time as an input: what "now" is and how to wait for a later moment.
//!
//! Code that decides by time (the flusher's flush interval and checkpoint
//! interval, segment age and time-based retention, the long-poll fetch
//! deadline, group sessions and rebalance deadlines, committed-offset
//! expiry, connection idle and partial-frame timeouts, a new topic's
//! creation time) asks a [`Clock`] instead of calling `Instant::now` and
//! `glommio::timer::sleep` itself, so a test can drive time by hand and
//! replay a timing exactly. Production uses [`SystemClock`]; tests use
//! [`ManualClock`], whose time moves only when the test calls
//! [`ManualClock::advance`].
//!
//! Lifecycle and cores: a clock is created per shard (or per test) and
//! shared there through `Rc`; neither implementation is `Send`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A source of monotonic time and of timers.
pub trait Clock {
    /// The current monotonic time.
    fn now(&self) -> Instant;
    /// Resolve once `now()` has moved `d` past the moment of the call.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()>>>;
    /// Wall-clock time in ms since the Unix epoch: the time stamped into
    /// batches (log-append time, segment age) and compared with record
    /// timestamps by time-based retention. Not monotonic on a real clock.
    fn wall_ms(&self) -> i64;
}

/// The machine's monotonic clock, with glommio's timers (shard threads only).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> Rc<dyn Clock> {
        Rc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            glommio::timer::sleep(d).await;
        })
    }

    fn wall_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Where a [`ManualClock`]'s wall time starts: 2023-11-14T22:13:20Z, a
/// fixed moment so a test's timestamps replay exactly.
pub const MANUAL_WALL_START_MS: i64 = 1_700_000_000_000;

/// A clock that stands still until the test advances it. Sleepers wake
/// when an [`advance`](ManualClock::advance) reaches their deadline.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    /// Wall-clock ms at `start` (see [`Clock::wall_ms`]); moves with `advance`.
    wall_start_ms: i64,
    // Shared with the sleep futures, which outlive the `&self` of `sleep`.
    elapsed: Rc<Cell<Duration>>,
    sleepers: Rc<RefCell<Vec<(Instant, Waker)>>>,
}

impl ManualClock {
    pub fn new() -> Rc<Self> {
        Rc::new(ManualClock {
            start: Instant::now(),
            wall_start_ms: MANUAL_WALL_START_MS,
            elapsed: Rc::new(Cell::new(Duration::ZERO)),
            sleepers: Rc::new(RefCell::new(Vec::new())),
        })
    }

    /// Move time forward by `d` and wake every sleeper whose deadline passed.
    pub fn advance(&self, d: Duration) {
        self.elapsed.set(self.elapsed.get() + d);
        let now = self.now();
        let due: Vec<Waker> = {
            let mut sleepers = self.sleepers.borrow_mut();
            let (due, waiting): (Vec<_>, Vec<_>) = sleepers
                .drain(..)
                .partition(|(deadline, _)| *deadline <= now);
            *sleepers = waiting;
            due.into_iter().map(|(_, w)| w).collect()
        };
        for w in due {
            w.wake();
        }
    }

    /// Time advanced so far.
    pub fn elapsed(&self) -> Duration {
        self.elapsed.get()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed.get()
    }

    fn wall_ms(&self) -> i64 {
        self.wall_start_ms + self.elapsed.get().as_millis() as i64
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(ManualSleep {
            start: self.start,
            deadline: self.now() + d,
            elapsed: self.elapsed.clone(),
            sleepers: self.sleepers.clone(),
        })
    }
}

struct ManualSleep {
    start: Instant,
    deadline: Instant,
    elapsed: Rc<Cell<Duration>>,
    sleepers: Rc<RefCell<Vec<(Instant, Waker)>>>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.start + self.elapsed.get() >= self.deadline {
            return Poll::Ready(());
        }
        let mut sleepers = self.sleepers.borrow_mut();
        sleepers.retain(|(_, w)| !w.will_wake(cx.waker()));
        sleepers.push((self.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_sleep_wakes_when_time_reaches_the_deadline() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let clock = ManualClock::new();
            let done = Rc::new(Cell::new(false));
            let d = done.clone();
            let sleep = clock.sleep(Duration::from_millis(10));
            let t = glommio::spawn_local(async move {
                sleep.await;
                d.set(true);
            });
            glommio::executor().yield_task_queue_now().await;
            clock.advance(Duration::from_millis(9));
            glommio::executor().yield_task_queue_now().await;
            assert!(!done.get(), "woke before the deadline");
            clock.advance(Duration::from_millis(1));
            t.await;
            assert!(done.get());
            assert_eq!(clock.elapsed(), Duration::from_millis(10));
        });
    }
}
