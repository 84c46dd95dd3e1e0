//! Injected storage faults, through the same seam production uses: failed
//! writes and syncs, short writes, a full disk.

use bytes::BytesMut;
use shardlog::config::TopicConfig;
use shardlog::format::{read_records, BatchBuilder, Compression, ProducerIds};
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{
    AppendError, CacheBudget, Log, LogConfig, ReadError, StorageError, WriteBudget,
};
use std::path::PathBuf;
use std::rc::Rc;

fn cfg() -> LogConfig {
    LogConfig {
        topic: TopicConfig {
            segment_bytes: 32 * 1024,
            ..Default::default()
        },
        write_chunk_bytes: 8192,
        write_behind: 2,
        flush_interval_ms: 1_000_000,
        sync_min_interval: std::time::Duration::ZERO,
        checkpoint_interval_ms: 0,
        preallocate_bytes: 16384,
    }
}

fn frame(i: u64) -> BytesMut {
    let mut b = BatchBuilder::new();
    b.push(
        i as i64,
        None,
        Some(format!("value-{i}-{}", "x".repeat((i % 700) as usize)).as_bytes()),
        &[],
    );
    BytesMut::from(&b.finish(Compression::None, ProducerIds::NONE)[..])
}

fn run(f: impl AsyncFnOnce() + 'static) {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move { f().await });
}

async fn open(disk: &SimDisk) -> (Rc<Log<SimDisk>>, glommio::Task<()>) {
    let log = Log::open(
        disk.clone(),
        PathBuf::from("/sim/p-0"),
        cfg(),
        CacheBudget::new(0),
        WriteBudget::unlimited(),
    )
    .await
    .unwrap();
    let fl = glommio::spawn_local(log.clone().run_flusher());
    (log, fl)
}

async fn values(log: &Log<SimDisk>) -> Vec<String> {
    let mut out = Vec::new();
    let mut off = log.log_start_offset();
    loop {
        let r = log.read(off, 1 << 16, log.durable_offset()).await.unwrap();
        if r.frames.is_empty() {
            return out;
        }
        for f in r.frames {
            let (h, recs) = read_records(&f, 1 << 20).unwrap();
            off = h.last_offset() + 1;
            out.extend(
                recs.into_iter()
                    .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
            );
        }
    }
}

/// After a failed write the partition refuses writes until it is reopened,
/// and nothing acknowledged before is lost.
#[test]
fn a_failed_write_stops_the_partition_until_reopened() {
    run(async || {
        let disk = SimDisk::new(1);
        let (log, fl) = open(&disk).await;
        for i in 0..50 {
            let o = log.append(vec![frame(i)], 0).unwrap();
            log.wait_durable(o.last_offset).await.unwrap();
        }
        disk.fail_write_in(0);
        let o = log.append(vec![frame(50)], 0).unwrap();
        let err = log.wait_durable(o.last_offset).await.unwrap_err();
        assert!(
            matches!(err, StorageError::Failed { .. } | StorageError::Io { .. }),
            "{err}"
        );
        let refused = log.append(vec![frame(51)], 0).unwrap_err();
        assert!(
            matches!(
                refused,
                AppendError::Unavailable(StorageError::Failed { .. })
            ),
            "{refused}"
        );
        assert!(refused.to_string().contains("refuses writes"), "{refused}");
        // Reads of what is there keep working.
        assert!(values(&log).await.len() >= 50);
        drop(fl);
        drop(log);
        disk.heal();
        disk.crash();
        let (log, _fl) = open(&disk).await;
        let v = values(&log).await;
        assert!(v.len() >= 50, "acknowledged batches survive: {}", v.len());
        for (i, s) in v.iter().take(50).enumerate() {
            assert!(s.starts_with(&format!("value-{i}-")));
        }
        let o = log.append(vec![frame(99)], 0).unwrap();
        log.wait_durable(o.last_offset).await.unwrap();
    });
}

#[test]
fn a_failed_sync_fails_its_waiters_and_stops_the_partition() {
    run(async || {
        let disk = SimDisk::new(2);
        let (log, _fl) = open(&disk).await;
        let o = log.append(vec![frame(0)], 0).unwrap();
        log.wait_durable(o.last_offset).await.unwrap();
        disk.fail_sync_in(0);
        let a = log.append(vec![frame(1)], 0).unwrap();
        let b = log.append(vec![frame(2)], 0).unwrap();
        let (ra, rb) = futures::join!(
            log.wait_durable(a.last_offset),
            log.wait_durable(b.last_offset)
        );
        assert!(
            ra.is_err() && rb.is_err(),
            "every waiter of the failed group commit hears of it"
        );
        assert!(matches!(
            log.append(vec![frame(3)], 0),
            Err(AppendError::Unavailable(StorageError::Failed { .. }))
        ));
    });
}

#[test]
fn short_writes_are_continued_and_nothing_is_lost() {
    run(async || {
        let disk = SimDisk::new(3);
        disk.short_writes(60);
        let (log, fl) = open(&disk).await;
        let mut last = 0;
        for i in 0..400 {
            last = log.append(vec![frame(i)], 0).unwrap().last_offset;
        }
        log.wait_durable(last).await.unwrap();
        assert!(disk.write_count() > 10);
        drop(fl);
        drop(log);
        disk.heal();
        disk.crash();
        let (log, _fl) = open(&disk).await;
        let v = values(&log).await;
        assert_eq!(v.len(), 400);
        assert!(v[399].starts_with("value-399-"));
    });
}

#[test]
fn a_full_disk_refuses_produce_keeps_reads_and_resumes_when_space_frees() {
    run(async || {
        let disk = SimDisk::new(4);
        let (log, fl) = open(&disk).await;
        let mut last = 0;
        for i in 0..40 {
            last = log.append(vec![frame(i)], 0).unwrap().last_offset;
        }
        log.wait_durable(last).await.unwrap();
        // Room for a little more, then full.
        disk.set_capacity(Some(disk.used_bytes() + 8192));
        let mut refused = None;
        let mut appended = 40;
        for i in 40..400 {
            match log.append(vec![frame(i)], 0) {
                Ok(o) => {
                    appended += 1;
                    if let Err(e) = log.wait_durable(o.last_offset).await {
                        assert!(matches!(e, StorageError::NoSpace { .. }), "{e}");
                    }
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("the full disk refuses produce");
        assert!(
            matches!(e, AppendError::Unavailable(StorageError::NoSpace { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("no space"), "{e}");
        // Reads keep working: everything durable is readable (batches still
        // waiting for room are not visible until they are durable).
        let visible = values(&log).await.len();
        assert!(
            (40..=appended).contains(&visible),
            "{visible} of {appended}"
        );
        // Space frees: the queued batches land, writes resume without a restart.
        disk.set_capacity(None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let o = loop {
            match log.append(vec![frame(1000)], 0) {
                Ok(o) => break o,
                Err(AppendError::Unavailable(StorageError::NoSpace { .. }))
                    if std::time::Instant::now() < deadline =>
                {
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("writes did not resume: {e}"),
            }
        };
        log.wait_durable(o.last_offset).await.unwrap();
        drop(fl);
        drop(log);
        disk.crash();
        let (log, _fl) = open(&disk).await;
        let v = values(&log).await;
        assert_eq!(v.len(), appended + 1, "nothing lost, nothing corrupt");
        assert!(v.last().unwrap().starts_with("value-1000-"));
    });
}

/// DeleteRecords: the new log start is durable when the call returns (a
/// power cut keeps it), the sealed segments wholly below it are deleted,
/// and reads below it are out of range. On a full disk the call fails and
/// the start does not move.
#[test]
fn delete_records_moves_the_start_durably_and_frees_whole_segments() {
    run(async || {
        let disk = SimDisk::new(7);
        let (log, fl) = open(&disk).await;
        // Frames are stamped in 1970: only DeleteRecords may delete here.
        log.set_topic_config(TopicConfig {
            retention_ms: -1,
            ..log.topic_config()
        });
        for i in 0..600 {
            let o = log.append(vec![frame(i)], 0).unwrap();
            log.wait_durable(o.last_offset).await.unwrap();
        }
        let before = log.segment_count();
        assert!(before > 3, "{before} segments");
        assert_eq!(log.delete_records_before(450).await.unwrap(), 450);
        assert!(
            log.segment_count() < before,
            "whole segments below 450 deleted"
        );
        assert!(matches!(
            log.read(10, 1 << 16, log.durable_offset()).await,
            Err(ReadError::OffsetOutOfRange { log_start: 450, .. })
        ));
        // Not moved backwards.
        assert_eq!(log.delete_records_before(300).await.unwrap(), 450);
        let v = values(&log).await;
        assert_eq!(v.len(), 150);
        assert!(v[0].starts_with("value-450-"), "{}", v[0]);
        // A full disk: refused, nothing moves.
        disk.set_capacity(Some(disk.used_bytes()));
        assert!(log.delete_records_before(460).await.is_err());
        assert_eq!(log.log_start_offset(), 450);
        disk.set_capacity(None);
        drop(fl);
        drop(log);
        disk.crash();
        let (log, _fl) = open(&disk).await;
        assert_eq!(
            log.log_start_offset(),
            450,
            "the start survives a power cut"
        );
        let v = values(&log).await;
        assert_eq!(v.len(), 150);
        assert!(v[0].starts_with("value-450-"), "{}", v[0]);
        // A suffix truncation recovers from disk: the floor is read back.
        assert_eq!(log.truncate_suffix(500).await.unwrap(), 500);
        assert_eq!(
            log.log_start_offset(),
            450,
            "the start survives a truncation"
        );
        assert_eq!(values(&log).await.len(), 50);
    });
}
