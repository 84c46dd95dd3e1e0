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
