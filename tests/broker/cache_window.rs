//! The batch cache evicts shard-wide, oldest written first: a partition
//! that writes a lot keeps its recent batches as long as the shard's budget
//! holds them, and what goes first is the batch written longest ago on the
//! shard, whichever partition holds it (`storage::cache`). Under the old
//! rule (each partition down to an equal share of the budget, at its own
//! appends) the busy partition below kept only a third of it, and a
//! consumer a few batches behind read the rest from disk: with 1,000
//! partitions, one live consumer read 83-85% of its bytes from disk.
//! The shard's read counters, logged when it stops, say where reads went.

use crate::block_on;
use crate::common::BrokerProc;
use crate::disk_reads::sum_field;
use shardlog::client::{Client, Producer, ProducerConfig};
use shardlog::format::frame::FrameIter;
use shardlog::protocol::messages::{Acks, FetchPartition, FetchRequest};

const VALUE_BYTES: usize = 4 << 10;
/// 1 MiB of values.
const RECORDS_PER_MIB: u64 = 256;

/// Read `partition` of `topic` from offset 0 to `end`; returns the bytes.
async fn read_all(c: &Client, topic: &str, partition: u32, end: u64) -> u64 {
    let (mut pos, mut bytes, mut fetches) = (0u64, 0u64, 0);
    while pos < end {
        fetches += 1;
        assert!(fetches < 1000, "no progress at {pos} of {end}");
        let req = FetchRequest {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 4 << 20,
            topics: vec![(
                topic.to_string(),
                vec![FetchPartition {
                    partition,
                    offset: pos,
                    max_bytes: 4 << 20,
                }],
            )],
        };
        for (_, parts) in c.fetch(&req).await.unwrap().topics {
            for p in parts {
                for chunk in p.frames {
                    for item in FrameIter::new(chunk) {
                        let (h, frame) = item.unwrap();
                        assert_eq!(h.base_offset, pos, "frames follow on");
                        pos = h.last_offset() + 1;
                        bytes += frame.len() as u64;
                    }
                }
            }
        }
    }
    bytes
}

#[test]
fn the_shard_evicts_its_oldest_batch_not_a_busy_partitions_recent_ones() {
    // One shard, an 8 MiB cache.
    let mut b = BrokerProc::start_with_shards(1, &["--set", "shard_cache_bytes_max=8388608"]);
    let (ends, read) = block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("w", 3, &[]).await.unwrap();
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                acks: Acks::All,
                batch_bytes: 1 << 20,
                linger_ms: 5,
                ..Default::default()
            },
        );
        let value = vec![b'v'; VALUE_BYTES];
        // 1 MiB to partition 0, 1 MiB to partition 2, then 6 MiB to
        // partition 1: 8 MiB and the batches' framing, just over the
        // budget. The old rule's equal share was a third of it.
        for (part, mib) in [(0u32, 1u64), (2, 1), (1, 6)] {
            for i in 0..mib * RECORDS_PER_MIB {
                p.send_to("w", part, None, Some(&value), &[], 0, i)
                    .await
                    .unwrap();
            }
            p.flush().await.unwrap();
        }
        let mut ends = Vec::new();
        let mut read = Vec::new();
        for part in 0..3 {
            let end = c.list_offset("w", part, -1).await.unwrap();
            read.push(read_all(&c, "w", part, end).await);
            ends.push(end);
        }
        (ends, read)
    });
    assert_eq!(
        ends,
        [RECORDS_PER_MIB, 6 * RECORDS_PER_MIB, RECORDS_PER_MIB]
    );
    let values = |mib: u64| mib * RECORDS_PER_MIB * VALUE_BYTES as u64;
    assert!(
        read[0] >= values(1) && read[1] >= values(6) && read[2] >= values(1),
        "read back everything: {read:?}"
    );
    b.stop();
    let log = b.plain_log();
    let line = "shutting down: closing partitions";
    // In MiB, rounded down.
    let from_disk = sum_field(&log, line, "read_from_disk_mib");
    let from_cache = sum_field(&log, line, "read_from_cache_mib");
    eprintln!("served from disk {from_disk} MiB, from the cache {from_cache} MiB");
    // Partition 0's MiB, the oldest on the shard, went; partition 1's
    // 6 MiB and partition 2's stayed. (The old rule kept a third of the
    // budget of partition 1: 3.3 MiB from disk, 4.7 from the cache.)
    assert!(
        from_disk <= 1,
        "only partition 0's batches come from disk: {from_disk} MiB\n{log}"
    );
    assert!(
        from_cache >= 6,
        "partitions 1 and 2 are read from the cache: {from_cache} MiB\n{log}"
    );
}
