//! The shard's task queues: control and bulk.
//!
//! Why: glommio runs the tasks of one queue in FIFO order, and polls for
//! I/O completions of ordinary ("latency not important") queues only
//! between time slices. With every task in one queue, a fresh client's
//! Metadata request waited behind every produce conversion, append and
//! fetch already runnable on its shard, at every step of its way (accept,
//! hand-over, read, answer, write): 290–430 ms at p99 under a produce flood
//! (issue 10).
//!
//! - The **bulk** queue holds the work whose cost grows with the data:
//!   produce and fetch handlers, routed appends and reads, flushers, and
//!   the socket reads and writes of large request bodies and answers
//!   (`server::conn`; the kernel's copy runs in the task that reads).
//! - The **control** queue holds the connections themselves: accept loops,
//!   connection readers and writers, and the handlers of every other
//!   request (Metadata, groups, offsets, administration). It is
//!   latency-sensitive: glommio puts its I/O on the latency ring, and a
//!   completion there ends the running time slice, so a control task runs
//!   within one poll of the bulk task on the core, not after the backlog.
//! - Everything else (the shard's message loop, housekeeping, replication)
//!   stays in the executor's default queue. Tried and not kept (issue 10):
//!   the message loop as a control task (glommio then interrupts a busy
//!   slice for each message from another shard, where now a connection
//!   handed over waits ~5 ms at p50 under a produce flood). Metadata p99
//!   under the flood fell from ~67 to ~52 ms, but a 1-partition max-rate
//!   run then stopped dead (no CPU, nothing acknowledged) for 1-2 s in 2
//!   of 10 runs, against 0 of 18 without it; the cause was not found.
//!
//! `glommio::spawn_local` spawns into the queue of the running task, so a
//! task started by a control task is a control task too, and so on; the
//! entry points choose the queue ([`TaskQueues::spawn_control`] for
//! accepted connections, [`TaskQueues::spawn_bulk`] for data requests).
//!
//! All queues have equal shares: when busy, the bulk queue still gets its
//! share of the core, and control work is small, so in practice the bulk
//! queue gets nearly all of it.
//!
//! Lifecycle: created by [`TaskQueues::create`] on the shard's executor when
//! the shard starts (owned by that core's [`super::Shard`]); the queues
//! live as long as the executor.

use glommio::{Latency, Shares, TaskQueueHandle};
use std::future::Future;
use std::time::Duration;

/// How soon a control task's I/O completion interrupts the bulk queue's
/// time slice (glommio's latency bound for the queue).
pub const CONTROL_LATENCY: Duration = Duration::from_millis(1);

/// Handles of a shard's control and bulk task queues.
#[derive(Clone, Copy, Debug)]
pub struct TaskQueues {
    control: TaskQueueHandle,
    bulk: TaskQueueHandle,
}

impl TaskQueues {
    /// Create the queues on the current executor.
    pub fn create() -> TaskQueues {
        let ex = glommio::executor();
        TaskQueues {
            control: ex.create_task_queue(
                Shares::Static(1000),
                Latency::Matters(CONTROL_LATENCY),
                "control",
            ),
            bulk: ex.create_task_queue(Shares::Static(1000), Latency::NotImportant, "bulk"),
        }
    }

    /// Start `fut` as a task of the control queue.
    pub fn spawn_control<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
    ) -> glommio::Task<T> {
        spawn_into(fut, self.control)
    }

    /// Start `fut` as a task of the bulk queue.
    pub fn spawn_bulk<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
    ) -> glommio::Task<T> {
        spawn_into(fut, self.bulk)
    }
}

fn spawn_into<T: 'static>(
    fut: impl Future<Output = T> + 'static,
    queue: TaskQueueHandle,
) -> glommio::Task<T> {
    glommio::spawn_local_into(fut, queue)
        .expect("a shard's task queues live as long as its executor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    /// The property the queue exists for: with a backlog of busy bulk
    /// tasks, a task spawned in the control queue runs after at most about
    /// one time slice of them, not after the whole backlog.
    #[test]
    fn a_control_task_does_not_wait_for_the_bulk_backlog() {
        let ex = glommio::LocalExecutorBuilder::default()
            .preempt_timer(Duration::from_millis(10))
            .make()
            .unwrap();
        ex.run(async {
            let queues = TaskQueues::create();
            let order = Rc::new(RefCell::new(Vec::new()));
            // 40 bulk tasks of 5 ms each: 200 ms of backlog.
            let mut tasks = Vec::new();
            for i in 0..40 {
                let o = order.clone();
                tasks.push(queues.spawn_bulk(async move {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(5) {
                        std::hint::spin_loop();
                    }
                    o.borrow_mut().push(i);
                }));
            }
            let o = order.clone();
            let control = queues.spawn_control(async move { o.borrow().len() });
            let bulk_done_before = control.await;
            for t in tasks {
                t.await;
            }
            assert!(
                bulk_done_before <= 8,
                "the control task waited for {bulk_done_before} of 40 bulk tasks"
            );
            // And with a single queue it would have waited for all of them:
            // the test can fail.
            assert_eq!(order.borrow().len(), 40);
        });
    }
}
