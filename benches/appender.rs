//! Segment append throughput through the real storage stack:
//! `storage::Log` over `storage::dma::DmaDisk` (glommio DMA files: O_DIRECT,
//! io_uring) on the real disk, including the final fdatasync.
//!
//! Run: `cargo bench --bench appender`. Files go to a temporary directory
//! under `$SHARDLOG_BENCH_DIR` if set, else under the system temp dir
//! (`/tmp`). It must be a real disk, not tmpfs (tmpfs has no O_DIRECT);
//! check with `df /tmp`. Each measurement writes a few GiB; every sample's
//! log is deleted when the sample ends.
//!
//! - `append_stream/chunk/<size>`: one task appends 64 MiB of ~64 KiB frames
//!   (`Log::append`, one frame per call, then a 1 µs timer sleep that gives
//!   the reactor a turn, as a connection's socket read does between requests,
//!   so the flusher's writes overlap with the appends), then `wait_durable` on
//!   the last offset. Write chunk 128 KiB / 512 KiB / 1 MiB, write-behind 4.
//!   Throughput is frame bytes; the time covers the copy into aligned
//!   buffers, the DMA writes and the fdatasync (not making the frames).
//!   `SHARDLOG_BENCH_VERBOSE=1` prints each iteration's append-loop time.
//! - `group_commit/appenders/<n>`: acks=all. `n` concurrent tasks each
//!   append a 16 KiB frame and await `wait_durable` for it, in a loop, 64
//!   batches per iteration in total. Concurrent waiters share one fdatasync
//!   (group commit), so batches/s grows with `n`. After the group the bench
//!   prints how many batches each sync acknowledged and the mean ack latency.
//!
//! - `copy/<plain|non-temporal>/1MiB`: the copy of a frame into a write
//!   buffer alone, a plain `copy_from_slice` against
//!   `storage::stream_copy::copy_to_dma`, which the appender uses
//!   (`cargo bench --bench appender -- copy`).
//!
//! Each log: one segment of up to 1 GiB (no roll inside a sample), flush and
//! checkpoint intervals far away (only the explicit waits sync), a 1 MiB
//! shard cache budget (written batches are evicted, oldest first).
//!
//! The bench drives a glommio executor (the broker's io_memory and preempt
//! timer) on its own thread; criterion's thread
//! sends it commands and gets the measured time back (`iter_custom`). The
//! executor calls `storage::dma::probe_device` before any other DMA open (the
//! glommio 0.9 io-poll probe workaround, DESIGN.md §4).

mod common;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog::config::TopicConfig;
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::storage::dma::{probe_device, DmaDisk};
use shardlog::storage::{CacheBudget, Log, LogConfig, WriteBudget};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A frame of `records` records with 1000-byte values (~1 KiB each).
fn frame_of(records: usize) -> Bytes {
    let value = common::random_bytes(1000, 3);
    let mut b = BatchBuilder::new();
    for i in 0..records {
        let key = format!("key-{i:04}");
        b.push(1_714_566_896_000, Some(key.as_bytes()), Some(&value), &[]);
    }
    b.finish(Compression::None, ProducerIds::NONE)
}

fn log_config(write_chunk_bytes: usize, write_behind: usize) -> LogConfig {
    LogConfig {
        topic: TopicConfig {
            segment_bytes: 1 << 30,
            ..Default::default()
        },
        write_chunk_bytes,
        write_behind,
        flush_interval_ms: 1_000_000,
        sync_min_interval: std::time::Duration::ZERO,
        checkpoint_interval_ms: 1_000_000,
        // The broker's default; SHARDLOG_BENCH_PREALLOC=0 measures without reservation.
        preallocate_bytes: std::env::var("SHARDLOG_BENCH_PREALLOC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32 << 20),
    }
}

enum Job {
    Stream {
        chunk: usize,
        write_behind: usize,
        iters: u64,
    },
    GroupCommit {
        appenders: usize,
        iters: u64,
    },
}

struct Measured {
    elapsed: Duration,
    batches: u64,
    syncs: u64,
    ack_wait: Duration,
}

struct Ctx {
    disk: DmaDisk,
    root: PathBuf,
    stream_frame: Bytes,
    stream_bytes: usize,
    gc_frame: Bytes,
    gc_batches: usize,
    seq: Cell<u64>,
    verbose: bool,
}

impl Ctx {
    async fn fresh_log(&self, cfg: LogConfig) -> (Rc<Log<DmaDisk>>, PathBuf) {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let dir = self.root.join(format!("bench-{n}"));
        let log = Log::open(
            self.disk.clone(),
            dir.clone(),
            cfg,
            CacheBudget::new(1 << 20),
            WriteBudget::unlimited(),
        )
        .await
        .expect("open log");
        (log, dir)
    }

    async fn run(&self, job: Job) -> Measured {
        match job {
            Job::Stream {
                chunk,
                write_behind,
                iters,
            } => self.stream(chunk, write_behind, iters).await,
            Job::GroupCommit { appenders, iters } => self.group_commit(appenders, iters).await,
        }
    }

    async fn stream(&self, chunk: usize, write_behind: usize, iters: u64) -> Measured {
        let (log, dir) = self.fresh_log(log_config(chunk, write_behind)).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let n_frames = self.stream_bytes.div_ceil(self.stream_frame.len());
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            // The broker appends the very buffers it read from the network:
            // make them before the clock starts.
            let frames: Vec<BytesMut> = (0..n_frames)
                .map(|_| BytesMut::from(&self.stream_frame[..]))
                .collect();
            let start = Instant::now();
            let mut last = 0;
            for f in frames {
                last = log.append(vec![f], 0).expect("append").last_offset;
                // Give the reactor a turn, as a connection's socket read does
                // between two requests. (A bare yield_now would not: glommio
                // polls io_uring only once its task queues run dry or the
                // preempt timer fires.)
                glommio::timer::sleep(Duration::from_micros(1)).await;
            }
            let appended = start.elapsed();
            log.wait_durable(last).await.expect("durable");
            let took = start.elapsed();
            elapsed += took;
            if self.verbose {
                eprintln!(
                    "chunk {chunk} B: append loop {appended:?}, durable after {took:?} ({:.0} MiB/s)",
                    n_frames as f64 * self.stream_frame.len() as f64 / took.as_secs_f64() / (1 << 20) as f64
                );
            }
        }
        finish(log, flusher, &dir).await;
        Measured {
            elapsed,
            batches: iters * n_frames as u64,
            syncs: iters,
            ack_wait: Duration::ZERO,
        }
    }

    async fn group_commit(&self, appenders: usize, iters: u64) -> Measured {
        let (log, dir) = self.fresh_log(log_config(512 << 10, 4)).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let per_task = self.gc_batches.div_ceil(appenders);
        let synced_at: Rc<std::cell::RefCell<BTreeSet<u64>>> = Rc::default();
        let ack_wait = Rc::new(Cell::new(Duration::ZERO));
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let tasks: Vec<_> = (0..appenders)
                .map(|_| {
                    let (log, frame) = (log.clone(), self.gc_frame.clone());
                    let (synced_at, ack_wait) = (synced_at.clone(), ack_wait.clone());
                    glommio::spawn_local(async move {
                        for _ in 0..per_task {
                            let t = Instant::now();
                            let out = log.append(vec![BytesMut::from(&frame[..])], 0).unwrap();
                            log.wait_durable(out.last_offset).await.expect("durable");
                            ack_wait.set(ack_wait.get() + t.elapsed());
                            // Each fdatasync publishes a new durable offset:
                            // distinct values seen = syncs that acked someone.
                            synced_at.borrow_mut().insert(log.durable_offset());
                        }
                    })
                })
                .collect();
            futures::future::join_all(tasks).await;
            elapsed += start.elapsed();
        }
        finish(log, flusher, &dir).await;
        let syncs = synced_at.borrow().len() as u64;
        Measured {
            elapsed,
            batches: iters * (per_task * appenders) as u64,
            syncs,
            ack_wait: ack_wait.get(),
        }
    }
}

async fn finish(log: Rc<Log<DmaDisk>>, flusher: glommio::Task<()>, dir: &Path) {
    log.close().await.expect("close log");
    flusher.await;
    drop(log);
    std::fs::remove_dir_all(dir).expect("remove bench log");
}

/// The executor thread and the channel to it.
struct Bench {
    jobs: flume::Sender<(Job, flume::Sender<Measured>)>,
    handle: Option<glommio::ExecutorJoinHandle<()>>,
    _tmp: tempfile::TempDir,
    stream_bytes: usize,
    stream_frame_len: usize,
    gc_frame_len: usize,
    gc_batches: usize,
}

impl Bench {
    fn start() -> Bench {
        let base = std::env::var_os("SHARDLOG_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix("shardlog-bench-")
            .tempdir_in(&base)
            .expect("temp dir for the bench logs");
        let root = tmp.path().to_path_buf();
        let full = common::bench_mode();
        let stream_frame = frame_of(64);
        let gc_frame = frame_of(16);
        let stream_bytes = if full { 64 << 20 } else { 4 << 20 };
        let gc_batches = if full { 64 } else { 8 };
        let (stream_frame_len, gc_frame_len) = (stream_frame.len(), gc_frame.len());
        let (jobs, rx) = flume::unbounded::<(Job, flume::Sender<Measured>)>();
        // The broker's executor settings (src/broker.rs).
        let broker = shardlog::config::BrokerConfig::default();
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("bench-appender")
            .io_memory(broker.io_memory_bytes)
            .preempt_timer(Duration::from_millis(50))
            .spawn(move || async move {
                // Before any other DMA open on this executor: DESIGN.md §4.
                let alignment = probe_device(&root, broker.direct_io_alignment)
                    .await
                    .expect("probe the bench device");
                let ctx = Ctx {
                    disk: DmaDisk::new(alignment),
                    root,
                    stream_frame,
                    stream_bytes,
                    gc_frame,
                    gc_batches,
                    seq: Cell::new(0),
                    verbose: std::env::var_os("SHARDLOG_BENCH_VERBOSE").is_some(),
                };
                while let Ok((job, reply)) = rx.recv_async().await {
                    let m = ctx.run(job).await;
                    let _ = reply.send(m);
                }
                shardlog::storage::dma::assert_poll_ring_idle();
            })
            .expect("start the glommio executor");
        Bench {
            jobs,
            handle: Some(handle),
            _tmp: tmp,
            stream_bytes,
            stream_frame_len,
            gc_frame_len,
            gc_batches,
        }
    }

    fn run(&self, job: Job) -> Measured {
        let (tx, rx) = flume::bounded(1);
        self.jobs.send((job, tx)).expect("executor alive");
        rx.recv().expect("executor answered")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Closing the job channel ends the executor's loop.
        let (dead, _) = flume::unbounded();
        drop(std::mem::replace(&mut self.jobs, dead));
        if let Some(h) = self.handle.take() {
            h.join().expect("executor thread");
        }
    }
}

fn benches(c: &mut Criterion) {
    let bench = Bench::start();

    let mut g = c.benchmark_group("append_stream");
    let frames = bench.stream_bytes.div_ceil(bench.stream_frame_len);
    g.throughput(Throughput::Bytes((frames * bench.stream_frame_len) as u64));
    for (chunk, name) in [
        (128 << 10, "128KiB"),
        (512 << 10, "512KiB"),
        (1 << 20, "1MiB"),
    ] {
        g.bench_function(BenchmarkId::new("chunk", name), |b| {
            b.iter_custom(|iters| {
                bench
                    .run(Job::Stream {
                        chunk,
                        write_behind: 4,
                        iters,
                    })
                    .elapsed
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("group_commit");
    g.throughput(Throughput::Elements(bench.gc_batches as u64));
    for appenders in [1usize, 4, 16, 64] {
        let (batches, syncs, wait) = (Cell::new(0u64), Cell::new(0u64), Cell::new(Duration::ZERO));
        g.bench_function(BenchmarkId::new("appenders", appenders), |b| {
            b.iter_custom(|iters| {
                let m = bench.run(Job::GroupCommit { appenders, iters });
                batches.set(batches.get() + m.batches);
                syncs.set(syncs.get() + m.syncs);
                wait.set(wait.get() + m.ack_wait);
                m.elapsed
            })
        });
        if batches.get() > 0 {
            println!(
                "group_commit/appenders/{appenders}: {} batches of {} B acked by {} fdatasyncs \
                 ({:.1} batches per sync), mean ack latency {:.2} ms\n",
                batches.get(),
                bench.gc_frame_len,
                syncs.get(),
                batches.get() as f64 / syncs.get().max(1) as f64,
                wait.get().as_secs_f64() * 1e3 / batches.get() as f64
            );
        }
    }
    g.finish();
}

/// The appender's copy of a frame into its write buffer: a plain copy
/// against `storage::stream_copy::copy_to_dma` (non-temporal stores).
/// Frames of 1 MiB are taken in turn from 64 MiB of source and written at
/// an unaligned position (5 bytes into a block, as a frame after another
/// lands) into 16 MiB of destination buffers, walked in turn as the
/// appender's recycled chunks are. Throughput is frame bytes.
fn bench_copy(c: &mut Criterion) {
    let frame = 1 << 20;
    let src = common::random_bytes(64 << 20, 3);
    let mut dst = vec![0u8; (16 << 20) + 4096];
    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Bytes(frame as u64));
    type Copy = fn(&mut [u8], &[u8]);
    let impls: [(&str, Copy); 2] = [
        ("plain", |d, s| d.copy_from_slice(s)),
        ("non-temporal", shardlog::storage::stream_copy::copy_to_dma),
    ];
    for (name, f) in impls {
        let (mut s_at, mut d_at) = (0usize, 0usize);
        g.bench_function(BenchmarkId::new(name, "1MiB"), |b| {
            b.iter(|| {
                f(
                    &mut dst[d_at + 5..d_at + 5 + frame],
                    &src[s_at..s_at + frame],
                );
                s_at = (s_at + frame) % src.len();
                d_at = (d_at + frame) % (16 << 20);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = copy;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_copy
}

criterion_group! {
    name = appender;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(copy, appender);
