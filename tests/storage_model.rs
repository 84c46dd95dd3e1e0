//! Model-checked storage: random sequences of append (as leader, and with
//! leader-assigned offsets as a follower), leader epoch changes, timed
//! flushes on a manual clock, sync, roll, suffix truncation, crash,
//! recover, read and retention against a simple model, on the simulated
//! disk. Reads check offsets, first values and the leader epoch of every
//! batch, also after every reopen and crash.
//!
//! Every seed is independent and replays exactly:
//! `SHARDLOG_SEED=1234 cargo test --test storage_model -- --nocapture`.
//! `SHARDLOG_SEEDS=N` sets how many seeds run (default 300).

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog::clock::{Clock, ManualClock};
use shardlog::config::TopicConfig;
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{AppendError, CacheBudget, Log, LogConfig, StorageError, WriteBudget};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

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
            ..Default::default()
        },
        write_chunk_bytes: [4096, 8192, 16384][rng.gen_range(0..3)],
        write_behind: rng.gen_range(1..4),
        // Time stands still unless the test advances the manual clock, so
        // timed flushes happen exactly when an operation says so.
        flush_interval_ms: rng.gen_range(1..500),
        sync_min_interval: Duration::ZERO,
        checkpoint_interval_ms: rng.gen_range(0..3),
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
    last_offset: u64,
    leader_epoch: i32,
    durable: bool,
}

impl Appended {
    fn key(&self) -> (u64, i32, &[u8]) {
        (self.base_offset, self.leader_epoch, &self.first_value[..])
    }
}

/// Every visible batch from `from` on: (base offset, leader epoch, first value).
async fn read_all(log: &Log<SimDisk>, from: u64) -> Vec<(u64, i32, Bytes)> {
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
            out.push((
                h.base_offset,
                h.partition_leader_epoch,
                recs[0].value.clone().unwrap(),
            ));
        }
    }
}

/// Compare what the log serves from `from` on with the model's batches below `end`.
async fn check_reads(log: &Log<SimDisk>, model: &[Appended], from: u64, end: u64, what: &str) {
    let got = read_all(log, from).await;
    let want: Vec<_> = model
        .iter()
        .filter(|m| m.base_offset >= from && m.base_offset < end)
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: batch count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1, &g.2[..]), w.key(), "{what}");
    }
}

thread_local! {
    /// The clock of the seed running on this thread.
    static CLOCK: std::cell::RefCell<Option<Rc<ManualClock>>> = const { std::cell::RefCell::new(None) };
}

fn clock() -> Rc<ManualClock> {
    CLOCK.with(|c| c.borrow().clone().expect("a seed is running"))
}

/// Open the partition log under test on the seed's manual clock (no write
/// budget: the model drives the flusher itself).
async fn open_log(
    disk: &SimDisk,
    dir: impl Into<std::path::PathBuf>,
    cfg: &LogConfig,
    budget: &Rc<CacheBudget>,
) -> Result<Rc<Log<SimDisk>>, StorageError> {
    let clock: Rc<dyn Clock> = clock();
    Log::open_with_clock(
        disk.clone(),
        dir.into(),
        cfg.clone(),
        budget.clone(),
        WriteBudget::unlimited(),
        clock,
    )
    .await
}

/// Let the flusher run until `done` holds (or it has had plenty of turns).
async fn settle(log: &Log<SimDisk>, done: impl Fn(&Log<SimDisk>) -> bool) {
    for _ in 0..1000 {
        if done(log) {
            return;
        }
        glommio::executor().yield_task_queue_now().await;
    }
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
    CLOCK.with(|c| *c.borrow_mut() = Some(ManualClock::new()));
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
    // A fault was injected since the disk was last healed: it may strike
    // any later write or sync.
    let mut fault_armed = false;
    let mut leader_epoch = 0i32;
    // A suffix truncation failed: the partition is offline until reopened.
    let mut truncation_failed = false;
    // Highest offset a reader could see: it must survive every crash.
    let mut seen_hw = 0u64;
    let verbose = std::env::var_os("SHARDLOG_VERBOSE").is_some();
    for _step in 0..rng.gen_range(20..80) {
        let op = rng.gen_range(0..100);
        if verbose {
            eprintln!(
                "op {op}: log [{}, {}) durable {} segments {}",
                log.log_start_offset(),
                log.next_offset(),
                log.durable_offset(),
                log.segment_count()
            );
        }
        match op {
            0..=44 => {
                tag += 1;
                let (f, first) = batch(&mut rng, tag);
                match log.append(vec![f], leader_epoch) {
                    Ok(o) => {
                        model.push(Appended {
                            first_value: first,
                            base_offset: o.base_offset,
                            last_offset: o.last_offset,
                            leader_epoch,
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
                    Err(AppendError::Unavailable(
                        StorageError::NoSpace { .. } | StorageError::Failed { .. },
                    )) => faulted = true,
                    Err(e) => panic!("seed {seed}: append failed: {e}"),
                }
            }
            45..=49 => {
                // A follower's append: offsets and epoch come from the leader.
                tag += 1;
                let (mut f, first) = batch(&mut rng, tag);
                let base = log.next_offset();
                shardlog::format::frame::stamp(&mut f, base, leader_epoch);
                match log.append_at(vec![f]) {
                    Ok(o) => {
                        assert_eq!(o.base_offset, base, "seed {seed}: append_at keeps offsets");
                        model.push(Appended {
                            first_value: first,
                            base_offset: o.base_offset,
                            last_offset: o.last_offset,
                            leader_epoch,
                            durable: false,
                        });
                    }
                    Err(AppendError::Unavailable(
                        StorageError::NoSpace { .. } | StorageError::Failed { .. },
                    )) => faulted = true,
                    Err(e) => panic!("seed {seed}: append_at failed: {e}"),
                }
            }
            50..=51 => {
                // A new leader: later batches carry its epoch.
                leader_epoch += rng.gen_range(1..3);
                STATS.with(|s| s.borrow_mut().epochs += 1);
            }
            52..=55 => {
                // Time passes beyond the flush interval: the flusher syncs
                // what is dirty on its own, with no waiter asking.
                clock().advance(Duration::from_millis(cfg.flush_interval_ms + 1));
                settle(&log, |l| l.durable_offset() == l.next_offset()).await;
                // A faulted log's offsets promise nothing (a failed
                // truncation may have cut the files under them).
                if log.durable_offset() == log.next_offset() && !faulted {
                    for m in model.iter_mut() {
                        m.durable = true;
                    }
                    STATS.with(|s| s.borrow_mut().timed_flushes += 1);
                } else {
                    assert!(
                        faulted || fault_armed,
                        "seed {seed}: the flush interval passed without a sync (durable {}, next {})",
                        log.durable_offset(),
                        log.next_offset()
                    );
                }
            }
            56..=59 => {
                // A follower's tail diverged: cut it at an offset, often a batch boundary.
                let (start, next) = (log.log_start_offset(), log.next_offset());
                if next == start {
                    continue;
                }
                let live: Vec<u64> = model
                    .iter()
                    .filter(|m| m.base_offset >= start)
                    .map(|m| m.base_offset)
                    .collect();
                let offset = if !live.is_empty() && rng.gen_bool(0.6) {
                    live[rng.gen_range(0..live.len())]
                } else {
                    rng.gen_range(start..=next)
                };
                let want_end = model
                    .iter()
                    .find(|m| m.last_offset >= offset)
                    .map(|m| m.base_offset)
                    .unwrap_or(next);
                match log.truncate_suffix(offset).await {
                    Ok(end) => {
                        STATS.with(|s| s.borrow_mut().truncations += 1);
                        assert_eq!(end, want_end, "seed {seed}: truncation end");
                        assert_eq!(log.next_offset(), end, "seed {seed}");
                        model.retain(|m| m.last_offset < offset);
                        if offset < next {
                            // A real cut leaves everything before it durable.
                            assert_eq!(
                                log.durable_offset(),
                                end,
                                "seed {seed}: truncation is durable"
                            );
                            for m in model.iter_mut() {
                                m.durable = true;
                            }
                        }
                        seen_hw = seen_hw.min(end);
                        log_start = log.log_start_offset();
                        check_reads(
                            &log,
                            &model,
                            log_start,
                            log.durable_offset(),
                            &format!("seed {seed}: after truncation"),
                        )
                        .await;
                    }
                    Err(StorageError::NoSpace { .. })
                    | Err(StorageError::Failed { .. })
                    | Err(StorageError::Io { .. }) => {
                        // Refused before touching the files (the partition
                        // had failed already), or cut part way: then the
                        // partition is offline (reads refused) until
                        // reopened. Either way the batches past the cut may
                        // or may not be there after a reopen.
                        faulted = true;
                        truncation_failed = log.offline_cause().is_some();
                        if truncation_failed {
                            STATS.with(|s| s.borrow_mut().failed_truncations += 1);
                            assert!(
                                log.read(start, 1000, log.durable_offset()).await.is_err(),
                                "seed {seed}: reads are refused after a failed truncation"
                            );
                        }
                        seen_hw = seen_hw.min(want_end);
                        for m in model.iter_mut().filter(|m| m.last_offset >= offset) {
                            m.durable = false;
                        }
                    }
                    Err(e) => panic!("seed {seed}: truncate_suffix failed: {e}"),
                }
            }
            60..=64 => {
                // Inject a fault; the partition must fail safe.
                STATS.with(|s| s.borrow_mut().faults += 1);
                fault_armed = true;
                match rng.gen_range(0..4) {
                    0 => disk.fail_write_in(rng.gen_range(0..3)),
                    1 => disk.fail_sync_in(rng.gen_range(0..3)),
                    2 => disk.short_writes(rng.gen_range(10..60)),
                    _ => disk.set_capacity(Some(disk.used_bytes() + rng.gen_range(0..20_000))),
                }
            }
            65..=72 if truncation_failed => {}
            65..=72 => {
                // Read back everything visible (durable) and compare with the model.
                let hw = log.durable_offset();
                seen_hw = seen_hw.max(hw);
                check_reads(&log, &model, log_start, hw, &format!("seed {seed}")).await;
            }
            73..=76 => {
                // Retention by size: keep about half.
                let deleted = log.apply_retention(i64::MAX / 2).await.unwrap();
                STATS.with(|s| s.borrow_mut().deleted += deleted as u64);
                log_start = log.log_start_offset();
            }
            77..=86 => {
                // Crash: only synced data (plus torn leftovers) survives.
                drop(flusher);
                drop(log);
                disk.heal();
                disk.crash();
                faulted = false;
                fault_armed = false;
                truncation_failed = false;
                STATS.with(|s| s.borrow_mut().crashes += 1);
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
                check_reads(
                    &log,
                    &model,
                    log_start,
                    u64::MAX,
                    &format!("seed {seed}: after crash"),
                )
                .await;
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
                fault_armed = false;
                truncation_failed = false;
                check_reads(
                    &log,
                    &model,
                    log_start,
                    u64::MAX,
                    &format!("seed {seed}: after a fault"),
                )
                .await;
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
                    fault_armed = false;
                    truncation_failed = false;
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
                check_reads(
                    &log,
                    &model,
                    log_start,
                    u64::MAX,
                    &format!("seed {seed}: after reopen"),
                )
                .await;
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
    check_reads(
        &log,
        &model,
        start,
        u64::MAX,
        &format!("seed {seed}: final"),
    )
    .await;
    STATS.with(|s| {
        let mut s = s.borrow_mut();
        s.batches += model.len() as u64;
        s.segments += log.segment_count() as u64;
    });
}

/// What the random mix exercised, over all seeds.
#[derive(Default, Debug)]
struct Stats {
    crashes: u64,
    batches: u64,
    deleted: u64,
    segments: u64,
    faults: u64,
    epochs: u64,
    timed_flushes: u64,
    truncations: u64,
    failed_truncations: u64,
}

thread_local! {
    static STATS: std::cell::RefCell<Stats> = std::cell::RefCell::new(Stats::default());
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
        STATS.with(|s| {
            let s = s.borrow();
            println!(
                "{n} seeds: {} crashes, {} injected faults, {} batches kept, {} segments deleted by retention, {} segments at the end, {} leader epoch changes, {} timed flushes, {} suffix truncations ({} failed part way)",
                s.crashes, s.faults, s.batches, s.deleted, s.segments, s.epochs, s.timed_flushes, s.truncations, s.failed_truncations
            );
            assert!(
                s.crashes > n && s.deleted > 0 && s.segments > n && s.faults > n
                    && s.epochs > 0 && s.timed_flushes > n && s.truncations > n,
                "the random mix must exercise crashes, faults, retention, rolls, epochs, timed flushes and truncations: {s:?}"
            );
        });
    });
}

/// Segment age and time-based retention read the wall time from the log's
/// clock, so a manual clock decides them exactly: a segment rolls once it
/// is `segment_ms` old (not a millisecond before), and a sealed segment
/// goes once its newest record is more than `retention_ms` older than now.
#[test]
fn segment_age_and_time_retention_follow_the_manual_clock() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        CLOCK.with(|c| *c.borrow_mut() = Some(ManualClock::new()));
        let c = clock();
        let mut rng = StdRng::seed_from_u64(7);
        let disk = SimDisk::new(7);
        let mut cfg = cfg(&mut rng);
        cfg.topic.segment_bytes = 1 << 30;
        cfg.topic.retention_bytes = -1;
        cfg.topic.segment_ms = 10_000;
        cfg.topic.retention_ms = 60_000;
        cfg.flush_interval_ms = 100;
        let budget = CacheBudget::new(1 << 20);
        let log = open_log(&disk, "/sim/age", &cfg, &budget).await.unwrap();
        let _flusher = glommio::spawn_local(log.clone().run_flusher());
        // A record stamped with the clock's wall time now.
        let append_now = |log: &Log<SimDisk>| {
            let mut b = BatchBuilder::new();
            b.push(c.wall_ms(), None, Some(b"v"), &[]);
            let f = b.finish(Compression::None, ProducerIds::NONE);
            log.append(vec![BytesMut::from(&f[..])], 0)
                .unwrap()
                .base_offset
        };
        append_now(&log);
        append_now(&log);
        c.advance(Duration::from_millis(9_999));
        append_now(&log);
        assert_eq!(log.segment_count(), 1, "not segment_ms old yet: no roll");
        c.advance(Duration::from_millis(1));
        let second = append_now(&log);
        assert_eq!(second, 3);
        assert_eq!(log.segment_count(), 2, "segment_ms old: rolled");
        c.advance(Duration::from_millis(cfg.flush_interval_ms));
        settle(&log, |l| l.durable_offset() == l.next_offset()).await;
        assert_eq!(log.durable_offset(), 4, "the flush interval passed: synced");
        // The first segment's newest record is at 9,999 ms; now is 10,100.
        c.advance(Duration::from_millis(69_999 - 10_100));
        assert_eq!(log.apply_retention(c.wall_ms()).await.unwrap(), 0);
        assert_eq!(log.segment_count(), 2, "exactly retention_ms old: kept");
        c.advance(Duration::from_millis(1));
        assert_eq!(log.apply_retention(c.wall_ms()).await.unwrap(), 1);
        assert_eq!(log.log_start_offset(), second, "the first segment went");
        let got = read_all(&log, second).await;
        assert_eq!(got.len(), 1, "the second segment's batch is still served");
    });
}

/// A sync asked for (here by an acks=all waiter) starts no sooner than
/// `sync_min_interval` after the last one started, on the log's clock: the
/// first at once, the next only once the interval has passed.
#[test]
fn asked_syncs_are_spaced_by_sync_min_interval() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        CLOCK.with(|c| *c.borrow_mut() = Some(ManualClock::new()));
        let c = clock();
        let mut rng = StdRng::seed_from_u64(11);
        let disk = SimDisk::new(11);
        let mut cfg = cfg(&mut rng);
        cfg.flush_interval_ms = 1_000_000;
        cfg.sync_min_interval = Duration::from_millis(5);
        let budget = CacheBudget::new(1 << 20);
        let log = open_log(&disk, "/sim/spaced", &cfg, &budget).await.unwrap();
        let _flusher = glommio::spawn_local(log.clone().run_flusher());
        let append = |log: &Log<SimDisk>| {
            let mut b = BatchBuilder::new();
            b.push(c.wall_ms(), None, Some(b"v"), &[]);
            let f = b.finish(Compression::None, ProducerIds::NONE);
            log.append(vec![BytesMut::from(&f[..])], 0)
                .unwrap()
                .last_offset
        };
        let wait = |log: &Rc<Log<SimDisk>>, last: u64| {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_durable(last).await.unwrap() })
        };
        let first = append(&log);
        let w1 = wait(&log, first);
        settle(&log, |l| l.durable_offset() == l.next_offset()).await;
        assert_eq!(
            log.durable_offset(),
            first + 1,
            "the first asked sync runs at once"
        );
        w1.await;
        let second = append(&log);
        let w2 = wait(&log, second);
        c.advance(Duration::from_micros(4_999));
        settle(&log, |l| l.durable_offset() == l.next_offset()).await;
        assert_eq!(
            log.durable_offset(),
            first + 1,
            "asked again within sync_min_interval: not synced yet"
        );
        c.advance(Duration::from_micros(1));
        settle(&log, |l| l.durable_offset() == l.next_offset()).await;
        assert_eq!(
            log.durable_offset(),
            second + 1,
            "the interval passed: synced"
        );
        w2.await;
    });
}
