//! Periodic per-shard work: retention, cache trimming, the glommio
//! poll-ring assertion, and (on the controller) the metadata space reserve.

use super::Shard;
use std::rc::Rc;
use std::time::Duration;
use tracing::warn;

pub async fn run(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.retention_check_interval_ms.max(10));
    loop {
        shard.clock.sleep(interval).await;
        let now = shard.clock.wall_ms();
        for partition in shard.online_partitions() {
            // A replicated partition's retention runs in the shard's
            // replication task: its Raft log's start moves with it
            // (`replica::PartitionGroup::compact`).
            if !partition.is_replicated() {
                if let Err(e) = partition.apply_retention(now).await {
                    warn!(dir = %partition.dir().display(), "retention failed: {e}");
                }
            }
            partition.trim_cache();
        }
        if shard.id == 0 {
            // Space freed by retention or by the operator refills the
            // reserve first, ready for the next full disk.
            super::admin::refill_reserve(&shard);
        }
        crate::storage::dma::assert_poll_ring_idle();
    }
}
