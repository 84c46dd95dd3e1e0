//! The kernel threads that run a shard's blocking file operations.
//!
//! io_uring completes direct reads and writes of segment files without a
//! thread, but fdatasync, fallocate and ftruncate block, so the kernel
//! hands them to io-wq worker threads of the submitting thread ("bounded"
//! workers, the ones for regular files). Every partition's group commit is
//! one fdatasync, so with many partitions these workers decide how long a
//! flusher waits for its sync, and its writes wait behind it.
//!
//! **Why we set their number.** The kernel sizes a thread's pool once, from
//! the first io_uring that thread creates: min(its queue depth, 4 × online
//! CPUs). glommio 0.9 checks the kernel's opcodes (liburing's
//! `io_uring_get_probe`, a 2-entry ring) on the first thread that creates
//! an executor, before that executor's own rings, so one shard got 2
//! workers and the others 8 (on 2 CPUs; read back with
//! `IORING_REGISTER_IOWQ_MAX_WORKERS`, which shard varied from run to run).
//! With 1,000 partitions and no consumer that shard's syncs averaged
//! 80-101 ms against 1.3-16 ms on the other, and the broker took 1,290-1,576
//! MiB/s; with every shard's pool set (4 to 32 workers), 1,648-1,925
//! (README, "Against the disk").
//!
//! Each shard therefore sets its own limit at start (`io_workers_per_shard`,
//! default 4 × online CPUs, the kernel's intended size) through a
//! throwaway 1-entry ring: the limit belongs to the calling thread's
//! worker pool, which all its rings share, so glommio's rings get it too.
//! Linux 5.15 or later; on older kernels the call fails and the kernel's
//! sizes stay (logged as a warning by the caller).
//!
//! Owned by: nothing persists here; called once on each shard's thread.

use std::io;

/// `IORING_REGISTER_IOWQ_MAX_WORKERS` (linux/io_uring.h): get or set the
/// calling thread's io-wq limits, `[bounded, unbounded]`; 0 leaves one as
/// it is. Both are returned as they were before the call.
const IORING_REGISTER_IOWQ_MAX_WORKERS: libc::c_long = 19;

/// The bounded-worker limit the kernel would pick for a ring of glommio's
/// depth: 4 × online CPUs (all of them, not this thread's affinity: a
/// shard's thread is pinned to one).
pub fn default_bounded() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    (4 * online).min(u32::MAX as libc::c_long) as u32
}

/// Set this thread's io-wq bounded-worker limit to `bounded` (> 0) and
/// return `(before, after)`, read back from the kernel.
pub fn set_bounded(bounded: u32) -> io::Result<(u32, u32)> {
    assert!(bounded > 0, "a zero limit would leave the kernel's choice");
    let ring = ScratchRing::new()?;
    let before = ring.max_workers([bounded, 0])?[0];
    let after = ring.max_workers([0, 0])?[0];
    Ok((before, after))
}

/// This thread's io-wq bounded-worker limit.
pub fn bounded() -> io::Result<u32> {
    Ok(ScratchRing::new()?.max_workers([0, 0])?[0])
}

/// A 1-entry io_uring made only to name this thread's worker pool in
/// `io_uring_register`; closed on drop.
struct ScratchRing(libc::c_int);

impl ScratchRing {
    fn new() -> io::Result<Self> {
        // struct io_uring_params: 120 bytes, all zero = no flags.
        let mut params = [0u32; 30];
        // SAFETY: io_uring_setup reads and writes exactly the 120-byte
        // params struct, which `params` is.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd as libc::c_int))
    }

    fn max_workers(&self, mut limits: [u32; 2]) -> io::Result<[u32; 2]> {
        // SAFETY: the opcode reads and writes two u32s at the pointer.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.0,
                IORING_REGISTER_IOWQ_MAX_WORKERS,
                limits.as_mut_ptr(),
                2u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(limits)
    }
}

impl Drop for ScratchRing {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sets_and_reads_back_its_own_limit() {
        // On a thread of its own: the limit is per thread.
        std::thread::spawn(|| {
            let (_, after) = set_bounded(5).expect("Linux 5.15+");
            assert_eq!(after, 5);
            assert_eq!(bounded().unwrap(), 5);
            let (before, after) = set_bounded(7).unwrap();
            assert_eq!((before, after), (5, 7));
            let cpus = std::thread::available_parallelism().unwrap().get() as u32;
            assert_eq!(default_bounded(), 4 * cpus);
        })
        .join()
        .unwrap();
        // Another thread's pool is its own.
        std::thread::spawn(|| assert_ne!(bounded().unwrap(), 7))
            .join()
            .unwrap();
    }
}
