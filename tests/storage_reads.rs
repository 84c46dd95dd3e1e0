//! Reads below the batch cache: from the segment files, in whole batches,
//! each byte read from disk once by a consumer reading in order.

use bytes::BytesMut;
use shardlog::config::TopicConfig;
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::storage::read_stats;
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{CacheBudget, Log, LogConfig, WriteBudget};
use std::path::PathBuf;

/// A batch of one record with a `len`-byte value.
fn frame(i: u64, len: usize) -> BytesMut {
    let mut b = BatchBuilder::new();
    let value = format!("value-{i}-{}", "x".repeat(len));
    b.push(i as i64, None, Some(value.as_bytes()), &[]);
    BytesMut::from(&b.finish(Compression::None, ProducerIds::NONE)[..])
}

/// A consumer reading in order with a `max_bytes` that ends inside a batch
/// is served from disk (no cache) in whole batches, and the disk reads
/// fetch each byte once: none is read, thrown away as part of a cut
/// batch, and read again by the next fetch.
#[test]
fn an_in_order_reader_below_the_cache_reads_each_byte_from_disk_once() {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async {
            let disk = SimDisk::new(7);
            let cfg = LogConfig {
                topic: TopicConfig {
                    segment_bytes: 4 << 20,
                    ..Default::default()
                },
                write_chunk_bytes: 64 << 10,
                write_behind: 2,
                flush_interval_ms: 1_000_000,
                checkpoint_interval_ms: 0,
                cache_keep_bytes: 0,
                preallocate_bytes: 1 << 20,
            };
            // No cache: every read below the end goes to disk.
            let log = Log::open(
                disk.clone(),
                PathBuf::from("/sim/p-0"),
                cfg,
                CacheBudget::new(0),
                WriteBudget::unlimited(),
            )
            .await
            .unwrap();
            let _flusher = glommio::spawn_local(log.clone().run_flusher());
            // Batches of ~5 KB: above the 4 KiB index interval, so each
            // starts an index entry, and 3.x of them fit in one read.
            let mut last = 0;
            for i in 0..200 {
                last = log.append(vec![frame(i, 5_000)], 0).unwrap().last_offset;
            }
            log.wait_durable(last).await.unwrap();

            let before = read_stats::counts();
            let (mut offset, mut batches) = (0u64, 0u64);
            while offset <= last {
                let r = log
                    .read(offset, 16_000, log.durable_offset())
                    .await
                    .unwrap();
                assert!(!r.frames.is_empty(), "nothing read at offset {offset}");
                for f in &r.frames {
                    let (h, _) = shardlog::format::read_records(f, 1 << 20).unwrap();
                    assert_eq!(h.base_offset, offset, "batches in order, none skipped");
                    offset = h.last_offset() + 1;
                    batches += 1;
                }
            }
            let after = read_stats::counts();
            assert_eq!(batches, 200);
            let served = after.disk_bytes - before.disk_bytes;
            let fetched = after.disk_read_bytes - before.disk_read_bytes;
            assert_eq!(after.cache_bytes, before.cache_bytes, "no cache here");
            assert!(served > 200 * 5_000, "every batch came from disk");
            // Each read ends on a batch boundary, so what the disk reads
            // fetched is exactly what was served (before, a 16,000-byte
            // read held 3 whole batches and the head of a 4th: 1.25x).
            assert_eq!(
                fetched, served,
                "disk reads fetched {fetched} bytes to serve {served}"
            );
        });
}
