//! Thread priorities: loadgen's producers yield the CPU to the broker and
//! to loadgen's consumers.
//!
//! Why: loadgen usually shares its machine with the broker (the embedded
//! broker, `--cluster`, or a broker on the same host). A closed-loop
//! producer is always runnable, so under the kernel's fair scheduler it
//! takes as much CPU as it can, and every thread that sleeps in between
//! (a broker shard waiting for a socket to drain, a consumer waiting for
//! its fetch) waits behind it for each wake-up. Measured on 2 cores, 2
//! producers at 1 MiB batches with 1 consumer: at equal priority the
//! consumer read 209 MiB/s of 944 produced and fell seconds behind; with
//! the producers' threads at nice +10 it read 736 of 738, e2e p50 140 ms.
//!
//! Which threads: the producers' own threads (message generation) and the
//! tokio workers that carry the native client's producer I/O are lowered
//! by `--producer-nice`; consumers run on a runtime of their own at the
//! process's priority. Threads a client library starts itself (librdkafka's)
//! keep the priority of the thread that created them.
//!
//! Nice values are per thread on Linux (`setpriority(PRIO_PROCESS, tid)`),
//! and a thread inherits its creator's, so threads record the process's
//! own value once ([`record_base`]) and set theirs relative to it.

use std::sync::OnceLock;

/// `--producer-nice`'s default.
pub const PRODUCER_NICE_DEFAULT: i32 = 10;

/// How many producer threads `--producer-nice` is set for: more are
/// lowered further, so that together they weigh no more than this many at
/// the given level ([`producer_thread_nice`]).
pub const PRODUCER_THREADS_WEIGHED: usize = 2;

/// The kernel's fair-scheduler weight of each nice level 0..=19
/// (`sched_prio_to_weight` in kernel/sched/core.c): a runnable thread gets
/// CPU in proportion to its weight.
const CFS_WEIGHT: [u32; 20] = [
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
];

/// The nice level (relative to the process) for each of `threads` producer
/// threads, given `--producer-nice` `nice`: at least `nice`, and lower
/// still until the threads together weigh no more than
/// [`PRODUCER_THREADS_WEIGHED`] threads at `nice` (19 at most; 0 stays 0).
///
/// Why: each producer has its own thread, and the scheduler weighs threads,
/// not processes. 2 producers at nice 10 weigh 220 against a consumer's
/// 1024 and the consumer kept up; 64 producers at nice 10 weigh 7,040, and
/// the live consumer beside them read 308-633 MiB/s of ~1,200-1,300
/// produced (16 partitions, 1 MiB batches). At nice 19 (960 together) it
/// read 1,021 of 1,022.
pub fn producer_thread_nice(nice: i32, threads: usize) -> i32 {
    if nice <= 0 {
        return 0;
    }
    let nice = nice.min(19) as usize;
    let total = CFS_WEIGHT[nice] as usize * PRODUCER_THREADS_WEIGHED;
    (nice..20)
        .find(|&n| CFS_WEIGHT[n] as usize * threads.max(1) <= total)
        .unwrap_or(19) as i32
}

static BASE: OnceLock<i32> = OnceLock::new();

/// The calling thread's nice value.
fn current() -> i32 {
    // SAFETY: getpriority has no memory preconditions. It may return -1
    // as a valid value; errno is not consulted because PRIO_PROCESS on
    // the calling thread cannot fail.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Remember the process's nice value (the first caller's: call from the
/// main thread before any thread lowers itself).
pub fn record_base() -> i32 {
    *BASE.get_or_init(current)
}

fn set_current(nice: i32) -> std::io::Result<()> {
    let tid = crate::cpu::gettid() as libc::id_t;
    // SAFETY: setpriority has no memory preconditions.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Run the calling thread `by` nice levels below the process (0: back at
/// the process's priority, for a thread created by a lowered one, which
/// inherits its value). Lowering one's own priority needs no privilege;
/// raising it back needs CAP_SYS_NICE unless RLIMIT_NICE allows it, and
/// without, the thread keeps the inherited value and a warning says so.
pub fn lower_current_thread(by: i32) {
    let target = (record_base() + by.max(0)).min(19);
    if current() != target {
        if let Err(e) = set_current(target) {
            // Once per process: every thread of a kind would say the same.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!("loadgen: warning: cannot set a thread's nice value to {target}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_producer_threads_together_weigh_no_more_than_two_at_the_given_level() {
        // Up to two threads: the level given, never raised.
        assert_eq!(producer_thread_nice(10, 1), 10);
        assert_eq!(producer_thread_nice(10, 2), 10);
        // 4 threads: each at most a quarter of 2 x 110 = 55, so nice 14 (45).
        assert_eq!(producer_thread_nice(10, 4), 14);
        // 64 threads cannot get down to 220 together: the lowest level.
        assert_eq!(producer_thread_nice(10, 64), 19);
        assert_eq!(producer_thread_nice(19, 3), 19);
        // 0 means equal priority, whatever the count.
        assert_eq!(producer_thread_nice(0, 64), 0);
        for threads in 1..100 {
            let n = producer_thread_nice(5, threads) as usize;
            assert!((5..=19).contains(&n));
            assert!(n == 19 || CFS_WEIGHT[n] as usize * threads <= 2 * CFS_WEIGHT[5] as usize);
        }
    }

    #[test]
    fn a_lowered_thread_runs_below_the_process_and_others_are_untouched() {
        let base = record_base();
        let by = 5;
        let (lowered, before_restore, restored) = std::thread::spawn(move || {
            lower_current_thread(by);
            let lowered = current();
            // A thread it creates inherits the lowered value.
            let child = std::thread::spawn(current).join().unwrap();
            lower_current_thread(0);
            (lowered, child, current())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (base + by).min(19));
        assert_eq!(before_restore, lowered);
        // Root (as in CI) may raise it back; others keep the lowered value.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(restored, base);
        }
        assert_eq!(current(), base, "the test thread itself was not changed");
    }
}
