//! Issue 12 spike: the same small Raft task on glommio with two libraries,
//! openraft (async, with our glommio `AsyncRuntime`) and raft-rs (TiKV's
//! sans-IO `RawNode`, driven by our own loop). Bench-only code: nothing here
//! ships in the broker; `docs/replication.md` records the choice.
//!
//! Both spikes run three in-process nodes per group on one glommio
//! `LocalExecutor`, connected by in-memory channels, with in-memory logs and
//! no fsync. So "commit" here is pure protocol and scheduling cost: three
//! replicas' CPU on one core, and no disk or network latency.
//!
//! The executor runs on its own thread; criterion's thread sends it a
//! number of iterations and gets back a `Duration` (`iter_custom`), so a
//! cluster is built once and measured many times.
#![allow(dead_code)]

pub mod glommio_rt;
pub mod openraft_spike;
pub mod raftrs_spike;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting live heap bytes (one relaxed atomic add
/// per allocation and free), so a bench can report memory per Raft group.
/// Install with `#[global_allocator]` in the bench file.
pub struct CountingAlloc;

// SAFETY: defers to `System`; the counter has no effect on the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap bytes currently allocated through `CountingAlloc` (0 if it is not
/// the global allocator).
pub fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Size of one proposed entry's payload.
pub const ENTRY_BYTES: usize = 64;

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`). On
/// a glommio executor thread that is all the Raft work, both libraries'
/// runtime overhead and our channels, user and kernel time.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident set size of the process (`/proc/self/statm`, 4 KiB pages).
pub fn rss_bytes() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Heartbeats sent by leaders: openraft `append_entries` RPCs with no
/// entries, raft-rs `MsgHeartbeat`s. With this the idle figure can be CPU per
/// heartbeat actually sent, which stays right when a saturated executor
/// falls behind its timers.
static HEARTBEATS_SENT: AtomicU64 = AtomicU64::new(0);

pub fn count_heartbeat() {
    HEARTBEATS_SENT.fetch_add(1, Ordering::Relaxed);
}

pub fn heartbeats_sent() -> u64 {
    HEARTBEATS_SENT.load(Ordering::Relaxed)
}

/// What a measured cluster does for `iters` iterations, on its executor.
pub trait Scenario: 'static {
    /// Runs `iters` iterations and returns the time criterion should see
    /// (wall or CPU, as the scenario documents).
    fn run(&self, iters: u64) -> impl Future<Output = Duration>;
}

type Job = (u64, flume::Sender<Duration>);

/// A glommio executor thread that owns one scenario.
pub struct OnExecutor {
    /// Heap bytes the scenario's setup left allocated (its whole cluster).
    pub setup_bytes: isize,
    /// Growth of the process RSS during setup (pages actually touched; an
    /// earlier scenario's freed memory can hide some of it).
    pub setup_rss: isize,
    jobs: Option<flume::Sender<Job>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl OnExecutor {
    /// Starts an executor pinned to CPU 0 (unbound on a 1-CPU machine),
    /// builds the scenario there with `setup`, then serves `run` calls.
    pub fn start<S, F, Fut>(name: &str, setup: F) -> OnExecutor
    where
        S: Scenario,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = S> + 'static,
    {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let placement = if cpus >= 2 {
            glommio::Placement::Fixed(0)
        } else {
            glommio::Placement::Unbound
        };
        let (jobs_tx, jobs_rx) = flume::unbounded::<Job>();
        let (ready_tx, ready_rx) = flume::bounded::<(isize, isize)>(1);
        let thread = glommio::LocalExecutorBuilder::new(placement)
            .name(name)
            .io_memory(1 << 20)
            .preempt_timer(Duration::from_millis(50))
            .spawn(move || async move {
                let (heap0, rss0) = (live_bytes(), rss_bytes());
                let scenario = setup().await;
                let _ = ready_tx.send((live_bytes() - heap0, rss_bytes() - rss0));
                while let Ok((iters, reply)) = jobs_rx.recv_async().await {
                    let _ = reply.send(scenario.run(iters).await);
                }
                // Dropping the scenario here stops its tasks' handles; any
                // task still parked is dropped with the executor.
            })
            .expect("start bench executor");
        let (setup_bytes, setup_rss) = ready_rx.recv().expect("scenario setup failed");
        OnExecutor {
            setup_bytes,
            setup_rss,
            jobs: Some(jobs_tx),
            thread: Some(thread),
        }
    }

    pub fn run(&self, iters: u64) -> Duration {
        let (tx, rx) = flume::bounded(1);
        self.jobs
            .as_ref()
            .expect("executor running")
            .send((iters, tx))
            .expect("executor alive");
        rx.recv().expect("executor answered")
    }
}

impl Drop for OnExecutor {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The idle-groups measurement both spikes share: let the groups run for
/// `rounds` heartbeat intervals of wall time and return the executor's CPU
/// time over that window. Criterion then reports CPU per heartbeat round for
/// all groups together.
pub async fn cpu_over_rounds(rounds: u64, heartbeat: Duration) -> Duration {
    let cpu0 = thread_cpu();
    glommio::timer::sleep(heartbeat * rounds as u32).await;
    thread_cpu() - cpu0
}
