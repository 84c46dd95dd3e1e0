//! A consumer reading many partitions from disk through one fetch at a
//! time: the broker reads each byte from the segment files once. The
//! answer's `max_bytes` is much smaller than the sum of its partitions'
//! `max_bytes`, so a shard that read a full window of partitions and let
//! the answer be trimmed afterwards would read most bytes several times
//! (the next fetch asks for the trimmed ones again). The shard's read
//! counters, logged when it stops, say what the disk fetched.

use crate::block_on;
use crate::common::BrokerProc;
use shardlog::client::{Client, Producer, ProducerConfig};
use shardlog::format::frame::FrameIter;
use shardlog::protocol::messages::{Acks, FetchPartition, FetchRequest};

const PARTITIONS: u32 = 32;
const VALUE_BYTES: usize = 4 << 10;
/// 1 MiB per partition, in batches of about 64 KiB.
const RECORDS_PER_PARTITION: u64 = 256;

/// The sum of `key=N` over the broker's log lines that contain `line`.
pub(crate) fn sum_field(log: &str, line: &str, key: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(line))
        .map(|l| BrokerProc::log_field(l, key))
        .sum()
}

#[test]
fn a_fetch_of_many_partitions_from_disk_reads_each_byte_once() {
    let mut b = BrokerProc::start(&[]);
    let ends = block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("disk", PARTITIONS, &[]).await.unwrap();
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                acks: Acks::All,
                batch_bytes: 64 << 10,
                linger_ms: 5,
                ..Default::default()
            },
        );
        let value = vec![b'v'; VALUE_BYTES];
        for i in 0..RECORDS_PER_PARTITION {
            for part in 0..PARTITIONS {
                p.send_to("disk", part, None, Some(&value), &[], 0, i)
                    .await
                    .unwrap();
            }
        }
        p.flush().await.unwrap();
        let mut ends = Vec::new();
        for part in 0..PARTITIONS {
            ends.push(c.list_offset("disk", part, -1).await.unwrap());
        }
        ends
    });
    assert!(
        ends.iter().all(|&e| e == RECORDS_PER_PARTITION),
        "every partition holds what was sent: {ends:?}"
    );
    // A restart empties the batch cache: every read below goes to disk.
    b.stop();
    b.restart();

    let delivered = block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        let mut positions = vec![0u64; PARTITIONS as usize];
        let mut delivered = 0u64;
        let mut fetches = 0;
        while positions != ends {
            fetches += 1;
            assert!(fetches < 10_000, "no progress: at {positions:?}");
            let req = FetchRequest {
                max_wait_ms: 100,
                min_bytes: 1,
                // An eighth of what the partitions may return together.
                max_bytes: 1 << 20,
                topics: vec![(
                    "disk".to_string(),
                    (0..PARTITIONS)
                        .filter(|&p| positions[p as usize] < ends[p as usize])
                        .map(|p| FetchPartition {
                            partition: p,
                            offset: positions[p as usize],
                            max_bytes: 256 << 10,
                        })
                        .collect(),
                )],
            };
            let r = c.fetch(&req).await.unwrap();
            for (_, parts) in r.topics {
                for p in parts {
                    for chunk in p.frames {
                        for item in FrameIter::new(chunk) {
                            let (h, frame) = item.unwrap();
                            let pos = &mut positions[p.result.partition as usize];
                            assert_eq!(h.base_offset, *pos, "frames follow on");
                            *pos = h.last_offset() + 1;
                            delivered += frame.len() as u64;
                        }
                    }
                }
            }
        }
        delivered
    });
    assert!(
        delivered >= PARTITIONS as u64 * RECORDS_PER_PARTITION * VALUE_BYTES as u64,
        "read everything back: {delivered} bytes"
    );
    b.stop();
    let log = b.plain_log();
    let line = "shutting down: closing partitions";
    // The shard counters are in MiB, rounded down per shard.
    let from_disk = sum_field(&log, line, "read_from_disk_mib");
    let disk_read = sum_field(&log, line, "disk_read_mib");
    let delivered_mib = delivered >> 20;
    eprintln!(
        "delivered {delivered_mib} MiB; served from disk {from_disk} MiB; the disk fetched {disk_read} MiB"
    );
    assert!(
        from_disk + 2 >= delivered_mib,
        "served from disk after the restart: {from_disk} MiB of {delivered_mib}\n{log}"
    );
    assert!(
        disk_read <= delivered_mib + delivered_mib / 10 + 2,
        "the disk fetched {disk_read} MiB to serve {delivered_mib} MiB: bytes read again\n{log}"
    );
}
