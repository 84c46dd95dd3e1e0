//! Slow disk operations: timed, counted and logged, so that a second in
//! which nothing moved can be traced to the disk.
//!
//! Why: with acks=1 a producer waits only once its shard's bounded
//! write-behind is full, so a disk that stands still shows up in a client
//! as throughput falling to zero while every broker and client thread
//! waits (issue 14: a 1 KB run stood still for 4 s that way, and nothing
//! in the broker's log said why). Every write, sync, space reservation,
//! file creation and read of a partition is timed here on the log's clock, from
//! submission to completion. One that takes `io_stats::SLOW_DISK_OP` or
//! longer is counted in the shard's I/O counters (logged when the shard
//! stops) and logged as a warning, at most once a second per shard, with
//! how many slow operations that warning stands for.
//!
//! Runs inside the flusher task of the log (see [`super::flusher`]) and
//! its readers, on the partition's shard.

use super::super::io_stats;
use super::{Disk, Log};
use std::future::Future;
use std::path::Path;
use tracing::warn;

impl<D: Disk> Log<D> {
    /// Await one disk operation `op` on `path` (moving `bytes`, 0 for one
    /// that moves no data), timing it.
    pub(super) async fn timed<T>(
        &self,
        op: &'static str,
        path: &Path,
        bytes: usize,
        io: impl Future<Output = T>,
    ) -> T {
        self.timed_took(op, path, bytes, io).await.0
    }

    /// [`Self::timed`], also returning how long the operation took (one
    /// pair of clock reads serves both the warning and the caller's own
    /// statistics).
    pub(super) async fn timed_took<T>(
        &self,
        op: &'static str,
        path: &Path,
        bytes: usize,
        io: impl Future<Output = T>,
    ) -> (T, std::time::Duration) {
        let start = self.clock.now();
        let out = io.await;
        let now = self.clock.now();
        let took = now.saturating_duration_since(start);
        if let Some(slow_ops) = io_stats::disk_op(took, now) {
            let took_ms = took.as_millis() as u64;
            warn!(
                op,
                path = %path.display(),
                bytes,
                took_ms,
                slow_ops,
                "slow disk: one {op} took {took_ms} ms; this partition waited for it \
                 (slow_ops: slow operations on this shard since the last such warning)"
            );
        }
        (out, took)
    }
}
