//! Model-checked storage: random sequences of append, sync, roll, crash,
//! recover, read and retention against a simple model, on the simulated disk.
//!
//! Every seed is independent and replays exactly:
//! `SHARDLOG_SEED=1234 cargo test --test storage_model -- --nocapture`.
//! `SHARDLOG_SEEDS=N` sets how many seeds run (default 300).

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog::config::TopicConfig;
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{CacheBudget, Log, LogConfig, StorageError, WriteBudget};
use std::path::PathBuf;
use std::rc::Rc;

fn cfg(rng: &mut StdRng) -> LogConfig {
    LogConfig {
        topic: TopicConfig {
            segment_bytes: rng.gen_range(8_000..40_000),
            segment_ms: u64::MAX / 4,
            retention_ms: -1,
            retention_bytes: if rng.gen_bool(0.5) {
                -1
            } else {
                rng.gen_range(20_000..60_000)
            },
            index_interval_bytes: rng.gen_range(100..3000),
            max_batch_bytes: 1 << 20,
            validate_compressed: true,
        },
        write_chunk_bytes: [4096, 8192, 16384][rng.gen_range(0..3)],
        write_behind: rng.gen_range(1..4),
        flush_interval_ms: 1_000_000,
        checkpoint_interval_ms: rng.gen_range(0..3),
        cache_keep_bytes: rng.gen_range(0..20_000),
        preallocate_bytes: [0, 8192, 65536][rng.gen_range(0..3)],
    }
}

fn batch(rng: &mut StdRng, tag: u64) -> (BytesMut, Vec<u8>) {
    let mut b = BatchBuilder::new();
    let n = rng.gen_range(1..6);
    let mut first = Vec::new();
    for i in 0..n {
        let len = rng.gen_range(0..1500);
        let mut v = format!("{tag}:{i}:").into_bytes();
        v.extend((0..len).map(|j| (j as u64 ^ tag) as u8));
        if i == 0 {
            first = v.clone();
        }
        b.push(tag as i64, None, Some(&v), &[]);
    }
    let f = b.finish(Compression::None, ProducerIds::NONE);
    (BytesMut::from(&f[..]), first)
}

/// What the model knows about batch k (in append order).
struct Appended {
    first_value: Vec<u8>,
    base_offset: u64,
    durable: bool,
}

async fn read_all(log: &Log<SimDisk>, from: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let r = log
            .read(off, 50_000, log.durable_offset())
            .await
            .expect("read");
        if r.frames.is_empty() {
            return out;
        }
        for f in r.frames {
            let (h, recs) =
                shardlog::format::read_records(&f, 1 << 20).expect("stored frame reads back");
            assert!(h.last_offset() >= off);
            off = h.last_offset() + 1;
            out.push((h.base_offset, recs[0].value.clone().unwrap()));
        }
    }
}

/// Open the partition log under test (no write budget: the model drives
/// the flusher itself).
async fn open_log(
    disk: &SimDisk,
    dir: impl Into<std::path::PathBuf>,
    cfg: &LogConfig,
    budget: &Rc<CacheBudget>,
) -> Result<Rc<Log<SimDisk>>, StorageError> {
    Log::open(
        disk.clone(),
        dir.into(),
        cfg.clone(),
        budget.clone(),
        WriteBudget::unlimited(),
    )
    .await
}

/// Heal the disk, crash it, reopen: every durable batch must be there.
async fn reopen_after_fault(
    disk: &SimDisk,
    dir: &std::path::Path,
    cfg: &LogConfig,
    budget: &Rc<CacheBudget>,
    model: &mut Vec<Appended>,
    seed: u64,
) -> (Rc<Log<SimDisk>>, glommio::Task<()>) {
    disk.heal();
    disk.crash();
    let log = open_log(disk, dir.to_path_buf(), cfg, budget)
        .await
        .expect("reopen after a fault");
    let flusher = glommio::spawn_local(log.clone().run_flusher());
    let next = log.next_offset();
    let durable_end = model
        .iter()
        .filter(|m| m.durable)
        .map(|m| m.base_offset)
        .max();
    if let Some(d) = durable_end {
        assert!(
            next > d,
            "seed {seed}: durable batch at {d} lost after a fault"
        );
    }
    model.retain(|m| m.base_offset < next);
    for m in model.iter_mut() {
        m.durable = true;
    }
    (log, flusher)
}

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::new(seed);
    let dir = PathBuf::from("/sim/t-0");
    let cfg = cfg(&mut rng);
    let budget = CacheBudget::new(rng.gen_range(0..200_000));
    let mut model: Vec<Appended> = Vec::new();
    let mut log = open_log(&disk, dir.clone(), &cfg, &budget).await.unwrap();
    let mut flusher = glommio::spawn_local(log.clone().run_flusher());
    let mut tag = 0u64;
    let mut log_start = 0u64;
    let mut faulted = false;
    // Highest offset a reader could see: it must survive every crash.
    let mut seen_hw = 0u64;
    for _step in 0..rng.gen_range(20..80) {
        match rng.gen_range(0..100) {
            0..=54 => {
                tag += 1;
                let (f, first) = batch(&mut rng, tag);
                match log.append(vec![f], 0) {
                    Ok(o) => {
                        model.push(Appended {
                            first_value: first,
                            base_offset: o.base_offset,
                            durable: false,
                        });
                        if rng.gen_bool(0.3) {
                            match log.wait_durable(o.last_offset).await {
                                Ok(()) => {
                                    for m in model.iter_mut() {
                                        m.durable = true;
                                    }
                                }
                                Err(StorageError::NoSpace { .. })
                                | Err(StorageError::Failed { .. })
                                | Err(StorageError::Io { .. }) => {
                                    faulted = true;
                                }
                                Err(e) => panic!("seed {seed}: unexpected wait error: {e}"),
                            }
                        }
                    }
                    Err(StorageError::NoSpace { .. }) | Err(StorageError::Failed { .. }) => {
                        faulted = true
                    }
                    Err(e) => panic!("seed {seed}: append failed: {e}"),
                }
            }
            55..=59 => {
                // Inject a fault; the partition must fail safe.
                STATS.with(|s| s.borrow_mut().4 += 1);
                match rng.gen_range(0..4) {
                    0 => disk.fail_write_in(rng.gen_range(0..3)),
                    1 => disk.fail_sync_in(rng.gen_range(0..3)),
                    2 => disk.short_writes(rng.gen_range(10..60)),
                    _ => disk.set_capacity(Some(disk.used_bytes() + rng.gen_range(0..20_000))),
                }
            }
            60..=69 => {
                // Read back everything visible (durable) and compare with the model.
                let hw = log.durable_offset();
                seen_hw = seen_hw.max(hw);
                let got = read_all(&log, log_start).await;
                let want: Vec<_> = model
                    .iter()
                    .filter(|m| m.base_offset >= log_start && m.base_offset < hw)
                    .collect();
                assert_eq!(got.len(), want.len(), "seed {seed}: batch count");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g.0, w.base_offset, "seed {seed}");
                    assert_eq!(&g.1[..], &w.first_value[..], "seed {seed}");
                }
            }
            70..=74 => {
                // Retention by size: keep about half.
                let deleted = log.apply_retention(i64::MAX / 2).await.unwrap();
                STATS.with(|s| s.borrow_mut().2 += deleted as u64);
                log_start = log.log_start_offset();
            }
            75..=84 => {
                // Crash: only synced data (plus torn leftovers) survives.
                drop(flusher);
                drop(log);
                disk.heal();
                disk.crash();
                faulted = false;
                STATS.with(|s| s.borrow_mut().0 += 1);
                log = match open_log(&disk, dir.clone(), &cfg, &budget).await {
                    Ok(l) => l,
                    Err(StorageError::Corrupt { .. }) => {
                        panic!("seed {seed}: a crash must never look like corruption")
                    }
                    Err(e) => panic!("seed {seed}: reopen failed: {e}"),
                };
                flusher = glommio::spawn_local(log.clone().run_flusher());
                let next = log.next_offset();
                assert!(
                    next >= seen_hw,
                    "seed {seed}: a reader saw offsets up to {seen_hw}, the crash kept {next}"
                );
                // Every durable batch survived; nothing beyond the appended ones appeared.
                let durable_end = model
                    .iter()
                    .filter(|m| m.durable)
                    .map(|m| m.base_offset)
                    .max();
                if let Some(d) = durable_end {
                    assert!(
                        next > d,
                        "seed {seed}: durable batch at {d} lost (next {next})"
                    );
                }
                model.retain(|m| m.base_offset < next);
                log_start = log.log_start_offset();
                let got = read_all(&log, log_start).await;
                let want: Vec<_> = model
                    .iter()
                    .filter(|m| m.base_offset >= log_start)
                    .collect();
                assert_eq!(got.len(), want.len(), "seed {seed}: after crash");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(
                        (g.0, &g.1[..]),
                        (w.base_offset, &w.first_value[..]),
                        "seed {seed}"
                    );
                }
                for m in model.iter_mut() {
                    m.durable = true; // recovered data is on disk now
                }
            }
            _ if faulted => {
                // A faulted partition is only reopened after the cause is gone.
                drop(flusher);
                drop(log);
                (log, flusher) =
                    reopen_after_fault(&disk, &dir, &cfg, &budget, &mut model, seed).await;
                log_start = log.log_start_offset();
                faulted = false;
            }
            _ => {
                // Clean close and reopen: the appender resumes at the exact end.
                if log.close().await.is_err() {
                    // An injected fault was still armed and hit the closing sync.
                    drop(flusher);
                    drop(log);
                    (log, flusher) =
                        reopen_after_fault(&disk, &dir, &cfg, &budget, &mut model, seed).await;
                    log_start = log.log_start_offset();
                    faulted = false;
                    continue;
                }
                drop(flusher);
                let next = log.next_offset();
                drop(log);
                log = open_log(&disk, dir.clone(), &cfg, &budget).await.unwrap();
                assert_eq!(log.next_offset(), next, "seed {seed}: clean reopen");
                flusher = glommio::spawn_local(log.clone().run_flusher());
                for m in model.iter_mut() {
                    m.durable = true;
                }
            }
        }
    }
    // Final: heal, close, reopen, everything appended is there.
    disk.heal();
    if faulted || log.close().await.is_err() {
        drop(flusher);
        drop(log);
        disk.crash();
        let log = open_log(&disk, dir.clone(), &cfg, &budget).await.unwrap();
        let durable_end = model
            .iter()
            .filter(|m| m.durable)
            .map(|m| m.base_offset)
            .max();
        if let Some(d) = durable_end {
            assert!(
                log.next_offset() > d,
                "seed {seed}: durable batch lost at the end"
            );
        }
        return;
    }
    drop(flusher);
    drop(log);
    let log = open_log(&disk, dir.clone(), &cfg, &budget).await.unwrap();
    let start = log.log_start_offset();
    let got = read_all(&log, start).await;
    let want: Vec<_> = model.iter().filter(|m| m.base_offset >= start).collect();
    assert_eq!(got.len(), want.len(), "seed {seed}: final");
    STATS.with(|s| {
        let mut s = s.borrow_mut();
        s.1 += model.len() as u64;
        s.3 += log.segment_count() as u64;
    });
}

thread_local! {
    /// (crashes, batches, segments deleted by retention, segments at the end, faults injected)
    static STATS: std::cell::RefCell<(u64, u64, u64, u64, u64)> = const { std::cell::RefCell::new((0, 0, 0, 0, 0)) };
}

#[test]
fn random_operation_sequences_against_a_model() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        if let Ok(s) = std::env::var("SHARDLOG_SEED") {
            run_seed(s.parse().unwrap()).await;
            return;
        }
        let n: u64 = std::env::var("SHARDLOG_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
        for seed in 0..n {
            if std::env::var_os("SHARDLOG_VERBOSE").is_some() {
                eprintln!("seed {seed}");
            }
            run_seed(seed).await;
        }
        let (crashes, batches, deleted, segments, faults) = STATS.with(|s| *s.borrow());
        println!("{n} seeds: {crashes} crashes, {faults} injected faults, {batches} batches kept, {deleted} segments deleted by retention, {segments} segments at the end");
        assert!(crashes > n && deleted > 0 && segments > n && faults > n, "the random mix must exercise crashes, faults, retention and rolls");
    });
}
