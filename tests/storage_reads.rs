//! Reads below the batch cache: from the segment files, in whole batches,
//! each byte read from disk once by a consumer reading in order. And what
//! keeps a tail consumer above it: the visible end follows the appends.

use bytes::BytesMut;
use shardlog::config::TopicConfig;
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::storage::io_stats;
use shardlog::storage::log::sync_trigger_bytes;
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{CacheBudget, Log, LogConfig, WriteBudget};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// A batch of one record with a `len`-byte value.
fn frame(i: u64, len: usize) -> BytesMut {
    let mut b = BatchBuilder::new();
    let value = format!("value-{i}-{}", "x".repeat(len));
    b.push(i as i64, None, Some(value.as_bytes()), &[]);
    BytesMut::from(&b.finish(Compression::None, ProducerIds::NONE)[..])
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        topic: TopicConfig {
            segment_bytes,
            ..Default::default()
        },
        write_chunk_bytes: 64 << 10,
        write_behind: 2,
        flush_interval_ms: 1_000_000,
        sync_min_interval: std::time::Duration::ZERO,
        checkpoint_interval_ms: 0,
        preallocate_bytes: 1 << 20,
    }
}

/// A log on a fresh sim disk with a cache of `cache` bytes (its share:
/// the only partition), and its flusher running.
async fn open_log(
    seed: u64,
    cfg: LogConfig,
    cache: usize,
) -> (Rc<Log<SimDisk>>, glommio::Task<()>) {
    let log = Log::open(
        SimDisk::new(seed),
        PathBuf::from("/sim/p-0"),
        cfg,
        CacheBudget::new(cache),
        WriteBudget::unlimited(),
    )
    .await
    .unwrap();
    let flusher = glommio::spawn_local(log.clone().run_flusher());
    (log, flusher)
}

/// A consumer reading in order with a `max_bytes` that ends inside a batch
/// is served from disk (no cache) in whole batches, and the disk reads
/// fetch each byte once: none is read, thrown away as part of a cut
/// batch, and read again by the next fetch.
#[test]
fn an_in_order_reader_below_the_cache_reads_each_byte_from_disk_once() {
    // 3.x batches fit in 16,000 bytes: before, a read held 3 whole batches
    // and the head of a 4th (1.25x).
    read_in_order_from_disk(16_000);
}

/// The same with a `max_bytes` smaller than one batch, as each partition
/// of a fetch over many partitions gets: each read holds its one batch,
/// whole. Before, a read of READ_MIN_BYTES (64 KiB) held ~13 batches to
/// serve one.
#[test]
fn a_reader_asking_for_less_than_a_batch_reads_that_batch_from_disk_once() {
    read_in_order_from_disk(1_000);
}

/// Append 200 batches of ~5 KB (each above the 4 KiB index interval, so
/// each starts an index entry), read them back in order `max_bytes` at a
/// time with no cache, and check that the disk reads fetched exactly the
/// bytes served.
fn read_in_order_from_disk(max_bytes: usize) {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move {
            // No cache: every read below the end goes to disk.
            let (log, _flusher) = open_log(7, config(4 << 20), 0).await;
            let mut last = 0;
            for i in 0..200 {
                last = log.append(vec![frame(i, 5_000)], 0).unwrap().last_offset;
            }
            log.wait_durable(last).await.unwrap();

            let before = io_stats::counts();
            let (mut offset, mut batches) = (0u64, 0u64);
            while offset <= last {
                let r = log
                    .read(offset, max_bytes, log.durable_offset())
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
            let after = io_stats::counts();
            assert_eq!(batches, 200);
            let served = after.disk_bytes - before.disk_bytes;
            let fetched = after.disk_read_bytes - before.disk_read_bytes;
            assert_eq!(after.cache_bytes, before.cache_bytes, "no cache here");
            assert!(served > 200 * 5_000, "every batch came from disk");
            // Each read ends on a batch boundary, so what the disk reads
            // fetched is exactly what was served.
            assert_eq!(
                fetched, served,
                "max_bytes {max_bytes}: disk reads fetched {fetched} bytes to serve {served}"
            );
        });
}

/// With acks=1 and a consumer that has a backlog (so it does not long-poll
/// at the end, which asks for a sync itself), the visible end (the durable
/// offset) still follows the appends closely: the flusher syncs every
/// quarter of the partition's cache share, not only at the flush interval
/// (here: never). So what becomes visible is still in the cache, and a
/// consumer at the visible end reads memory, not disk. (Nor a segment
/// roll, which syncs too: the segment here holds the whole run.) Before, nothing
/// became visible until the interval, and at 350 MiB/s a second's data
/// surfaced at once, mostly evicted already (issue 14).
#[test]
fn the_visible_end_follows_the_appends_within_the_cache_without_a_waiting_reader() {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async {
            // One partition on the shard: its share is the whole cache.
            let cache = 24 << 20;
            let trigger = sync_trigger_bytes(cache);
            // One segment: a roll makes everything before it durable.
            let (log, _flusher) = open_log(11, config(1 << 30), cache).await;
            let batch = 64 << 10;
            let batches = 4 * cache / batch;
            let (mut appended, mut max_lag) = (0usize, 0usize);
            for i in 0..batches as u64 {
                log.append(vec![frame(i, batch)], 0).unwrap();
                appended += 1;
                if i % 4 == 3 {
                    // Let the flusher run, as a busy shard would.
                    glommio::timer::sleep(Duration::from_micros(200)).await;
                }
                let lag = appended - log.durable_offset() as usize;
                max_lag = max_lag.max(lag);
            }
            // The lag is the trigger plus what is appended while one sync
            // is under way (a few batches here).
            let bound = trigger / batch + 16;
            assert!(
                max_lag <= bound,
                "the visible end fell {max_lag} batches behind the appends (bound {bound}; \
                 {batches} appended, durable {})",
                log.durable_offset()
            );
            // A consumer at the visible end reads from the cache.
            let at = log.durable_offset() - 1;
            let before = io_stats::counts();
            let r = log.read(at, 1 << 20, log.durable_offset()).await.unwrap();
            let after = io_stats::counts();
            assert!(!r.frames.is_empty());
            assert_eq!(after.disk_bytes, before.disk_bytes, "read from disk");
            assert!(after.cache_bytes > before.cache_bytes);
        });
}
