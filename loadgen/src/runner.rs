//! Runs one workload: wires actors, sampler and CPU meter together, waits
//! for the producers and the drain, then turns recordings into a
//! [`RunResult`]. No figures are computed anywhere else.
//!
//! Timeline (ns since the epoch, which starts once every connection is up):
//!
//! ```text
//! 0 ── warm-up ──> window.start ── measured ──> window.end ── backlog (grace) ── drain ──> done
//! ```
//!
//! Consumers are positioned at the partitions' ends before the epoch, so
//! they see exactly the run's messages.

use crate::consumer::{self, ConsumerCtx, Drain};
use crate::cpu::{BrokerCpuSource, CpuReport, CpuSnapshot};
use crate::knee::{Sustain, SustainRule};
use crate::producer::{self, FirstError, ProducerCtx, Timebase};
use crate::result::{CatchUp, CompressionStats, RunResult, SpectrumPoint, Throughput};
use crate::stats::{Bucket, Clock, LatencySummary, Recorder, Window};
use crate::timeseries::{self, SamplerCtx};
use crate::transport::{
    self, Admin, ConsumerBackend, ProducerBackend, ProducerSettings, Target, TopicInfo,
    TransportError,
};
use crate::units::mib_per_s;
use crate::workload::{SpecError, WorkloadSpec};
use shardlog::protocol::messages::Acks;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    // The cause is in the message, not chained as a source: `{:#}` would
    // print it twice.
    #[error("broker at {addr}: {error}")]
    Broker { addr: String, error: TransportError },
    #[error("loadgen needs a multi-threaded tokio runtime (producers drive the client from their own threads)")]
    Runtime,
    #[error("a {0} thread panicked")]
    Panicked(&'static str),
    #[error("cannot start the consumers' threads: {0}")]
    ConsumerThreads(std::io::Error),
}

/// A runtime owned by an async function: dropped without blocking (a
/// `Runtime` may not be dropped inside an async context), on every path out.
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
            .clone()
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How a run reaches the broker and reports progress.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The target's name in reports ("native", "kafka", or `--target NAME=`).
    pub target_name: String,
    pub target: Target,
    /// When an open-loop run counts as sustained.
    pub rule: SustainRule,
    pub cpu_source: BrokerCpuSource,
    /// Print a progress line per second with this prefix (None: quiet).
    pub progress: Option<String>,
    /// Set (by Ctrl-C) to end the run early: producers stop, consumers
    /// drain, and the figures cover the part of the window that ran.
    pub interrupt: Arc<AtomicBool>,
    /// Nice levels the producers' threads run below the process (see
    /// [`crate::priority`]; 0: the same priority as the broker and consumers).
    pub producer_nice: i32,
}

/// Consumer `c` of `n` reads partitions `p` with `p % n == c`.
pub fn assign_partitions(partitions: u32, consumers: u32) -> Vec<Vec<u32>> {
    let n = consumers.min(partitions).max(1);
    (0..n)
        .map(|c| (0..partitions).filter(|p| p % n == c).collect())
        .collect()
}

fn run_id() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ (t >> 32) ^ (std::process::id() as u64).rotate_left(17)) as u32
}

/// Run one workload to completion. Call from a multi-threaded tokio runtime.
pub async fn run(label: &str, spec: &WorkloadSpec, env: &RunEnv) -> Result<RunResult, RunError> {
    spec.validate()?;
    let rt = tokio::runtime::Handle::current();
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(RunError::Runtime);
    }
    let broker_err = |error: TransportError| RunError::Broker {
        addr: env.target.addr.clone(),
        error,
    };
    let mut notes = Vec::new();
    let admin = Admin::connect(&env.target).await.map_err(broker_err)?;
    let topic_info = admin
        .ensure_topic(&spec.topic, spec.partitions, spec.replication_factor)
        .await
        .map_err(broker_err)?;
    let partitions = topic_info.partitions;
    if partitions != spec.partitions {
        notes.push(format!(
            "topic '{}' already existed with {partitions} partitions (asked for {}); used {partitions}",
            spec.topic, spec.partitions
        ));
    }
    let replication_factor = topic_info.replication_factor;
    if let Some(note) = replication_note(spec, &topic_info) {
        notes.push(note);
    }
    let spec_arc = Arc::new(spec.clone());
    let run_id = run_id();
    // Consumers' stop flag (set once everything is over); producers stop
    // on the interrupt flag.
    let stop = Arc::new(AtomicBool::new(false));
    let drain = Drain::new();
    let record_bytes = spec.record_payload_bytes() as u64;

    // Consumers first, positioned at the current ends.
    let assignment = if spec.consumers == 0 {
        Vec::new()
    } else {
        assign_partitions(partitions, spec.consumers)
    };
    if spec.consumers > partitions {
        notes.push(format!(
            "{} consumers for {partitions} partitions: {} consumers would be idle and were not started",
            spec.consumers,
            spec.consumers - partitions
        ));
    }
    // Consumers run on threads of their own, connections included (a
    // client's reader task lives where the client connected), so that
    // lowering the producers' threads does not lower them (see priority.rs).
    let consumer_threads = BackgroundRuntime(Some(
        crate::build_consumer_runtime(assignment.len()).map_err(RunError::ConsumerThreads)?,
    ));
    let consumer_rt = consumer_threads.handle();
    let mut consumer_backends = Vec::new();
    for parts in &assignment {
        let target = env.target.clone();
        let topic = spec.topic.clone();
        let parts = parts.clone();
        let opened = consumer_rt
            .spawn(async move { ConsumerBackend::open(&target, &topic, parts, 100).await })
            .await
            .map_err(|_| RunError::Panicked("consumer"))?;
        consumer_backends.push(opened.map_err(broker_err)?);
    }

    // Producers' connections, before the clock starts.
    let timebase: Arc<OnceLock<Timebase>> = Arc::new(OnceLock::new());
    let settings = ProducerSettings {
        batch_bytes: spec.batch_bytes,
        linger_ms: spec.linger_ms,
        compression: spec.compression,
        acks: spec.acks,
        max_inflight: spec.max_inflight,
        buffer_bytes: spec.producer_buffer_bytes(),
    };
    let mut recorders = Vec::new();
    let mut producer_parts = Vec::new();
    for _ in 0..spec.producers {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        let first_error: FirstError = Arc::new(Mutex::new(None));
        let sink = producer::ack_sink(
            rec.clone(),
            timebase.clone(),
            record_bytes,
            first_error.clone(),
        );
        let backend = ProducerBackend::open(&env.target, &spec.topic, &settings, sink)
            .await
            .map_err(broker_err)?;
        if producer_parts.is_empty() {
            notes.extend(backend.notes().iter().cloned());
        }
        recorders.push(rec.clone());
        producer_parts.push((rec, backend, first_error));
    }
    let consumer_recs: Vec<_> = assignment
        .iter()
        .map(|_| Arc::new(Mutex::new(Recorder::default())))
        .collect();
    recorders.extend(consumer_recs.iter().cloned());

    // The epoch.
    let clock = Clock::start();
    let warmup_ns = spec.warmup().as_nanos() as u64;
    let window = Window {
        start_ns: warmup_ns,
        end_ns: warmup_ns + spec.duration().as_nanos() as u64,
    };
    let _ = timebase.set(Timebase { clock, window });

    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(timeseries::run(SamplerCtx {
        recorders: recorders.clone(),
        clock,
        window,
        cpu_source: env.cpu_source,
        stop: sampler_stop.clone(),
        progress: env.progress.clone(),
    }));
    let cpu_source = env.cpu_source;
    let cpu_meter = tokio::spawn(async move {
        let at = |ns: u64| tokio::time::Instant::from_std(clock.epoch + Duration::from_nanos(ns));
        tokio::time::sleep_until(at(window.start_ns)).await;
        let a = CpuSnapshot::take(cpu_source);
        tokio::time::sleep_until(at(window.end_ns)).await;
        let b = CpuSnapshot::take(cpu_source);
        b.since(&a)
    });

    let exit_when_caught_up = spec.acks != Acks::None;
    let spawn_consumers = |backends: Vec<ConsumerBackend>| -> Vec<_> {
        assignment
            .iter()
            .zip(backends)
            .zip(consumer_recs.iter())
            .enumerate()
            .map(|(i, ((parts, backend), rec))| {
                consumer_rt.spawn(consumer::run(ConsumerCtx {
                    id: i as u32,
                    partitions: parts.clone(),
                    run_id,
                    clock,
                    window,
                    record_bytes,
                    backend,
                    rec: rec.clone(),
                    drain: drain.clone(),
                    stop: stop.clone(),
                    exit_when_caught_up,
                    drop_every: spec.fault_drop_every,
                }))
            })
            .collect()
    };
    // A catch-up run's consumers wait, connected and positioned at the
    // ends the topic had before the producers started, until the
    // producers are done.
    let (mut consumer_tasks, mut waiting_consumers) = if spec.catch_up {
        (Vec::new(), Some(consumer_backends))
    } else {
        (spawn_consumers(consumer_backends), None)
    };

    // Each producer thread's nice value (see `priority`), also in the report's notes.
    let producer_nice =
        crate::priority::producer_thread_nice(env.producer_nice, spec.producers as usize);
    // A late producer may keep sending its backlog for this long after the window.
    let grace = (spec.duration() / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let mut producer_waits = Vec::new();
    let mut first_errors = Vec::new();
    for (id, (rec, backend, first_error)) in producer_parts.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ctx = ProducerCtx {
            id: id as u32,
            spec: spec_arc.clone(),
            partitions,
            run_id,
            clock,
            window,
            backend,
            rec,
            rt: rt.clone(),
            stop: env.interrupt.clone(),
            grace,
        };
        std::thread::Builder::new()
            .name(format!("lg-producer-{id}"))
            .spawn(move || {
                crate::priority::lower_current_thread(producer_nice);
                let _ = tx.send(producer::run(ctx));
            })
            .expect("spawning a producer thread");
        producer_waits.push(rx);
        first_errors.push(first_error);
    }
    // Finished clients stay connected until the CPU window is over: a
    // client library's threads that exited inside it would be counted as
    // the broker's CPU (see cpu.rs).
    let mut retired_producers = Vec::new();
    let mut outcomes = Vec::new();
    for rx in producer_waits {
        let (outcome, backend) = rx.await.map_err(|_| RunError::Panicked("producer"))?;
        outcomes.push(outcome);
        retired_producers.push(backend);
    }
    let interrupted_at =
        (env.interrupt.load(Ordering::Relaxed)).then(|| clock.now_ns().min(window.end_ns));

    // Tell consumers what to expect, then wait for the drain.
    let mut sent: HashMap<(u32, u32), u64> = HashMap::new();
    for o in &outcomes {
        for (p, n) in o.sent_per_partition.iter().enumerate() {
            if *n > 0 {
                sent.insert((p as u32, o.id), *n);
            }
        }
    }
    drain.finish(
        sent.clone(),
        clock.now_ns() + Duration::from_millis(spec.drain_timeout_ms).as_nanos() as u64,
    );
    let catch_up_start = waiting_consumers.take().map(|backends| {
        let start = (
            clock.now_ns(),
            CpuSnapshot::take(cpu_source),
            crate::cpu::disk_read_bytes(cpu_source),
        );
        consumer_tasks = spawn_consumers(backends);
        start
    });
    let mut retired_consumers = Vec::new();
    let mut consumer_outcomes = Vec::new();
    for t in consumer_tasks {
        let (outcome, backend) = t.await.map_err(|_| RunError::Panicked("consumer"))?;
        consumer_outcomes.push(outcome);
        retired_consumers.push(backend);
    }
    let catch_up = catch_up_start.map(|(start_ns, cpu_before, disk_before)| {
        let used = CpuSnapshot::take(cpu_source).since(&cpu_before);
        let disk_after = crate::cpu::disk_read_bytes(cpu_source);
        let msgs: u64 = consumer_outcomes
            .iter()
            .map(|c| {
                c.partitions
                    .iter()
                    .map(|p| c.checker.delivered_on(*p))
                    .sum::<u64>()
            })
            .sum();
        let bytes = msgs * record_bytes;
        let end_ns = consumer_outcomes
            .iter()
            .filter_map(|c| c.last_receipt_ns)
            .max()
            .unwrap_or(start_ns);
        let secs = (end_ns.saturating_sub(start_ns) as f64 / 1e9).max(1e-3);
        let cpu_wall = clock.now_ns().saturating_sub(start_ns) as f64 / 1e9;
        CatchUp {
            read: Throughput {
                msgs,
                bytes,
                msgs_per_s: msgs as f64 / secs,
                mib_per_s: mib_per_s(bytes, secs),
            },
            secs,
            cpu: CpuReport::new(cpu_source, &used, cpu_wall, bytes),
            disk_read_bytes: match (disk_before, disk_after) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        }
    });
    stop.store(true, Ordering::Relaxed);
    sampler_stop.store(true, Ordering::Relaxed);
    let timeseries = sampler.await.map_err(|_| RunError::Panicked("sampler"))?;
    // The meter finished at window end unless the run ended early.
    let cpu_used = if clock.now_ns() >= window.end_ns {
        cpu_meter
            .await
            .map_err(|_| RunError::Panicked("cpu meter"))?
    } else {
        cpu_meter.abort();
        CpuSnapshot::default()
    };
    if catch_up.is_some() {
        notes.push(
            "catch-up: the consumers started once the producers had finished, so the window's consumed rate is 0 and end-to-end latency is each message's wait in the backlog; the catch-up read line has the consumers' figures"
                .into(),
        );
    }
    // Closing a client may block (librdkafka joins its threads).
    let _ = tokio::task::spawn_blocking(move || drop((retired_producers, retired_consumers))).await;

    // Merge every actor's measured bucket: histograms bucket by bucket.
    let mut total = Bucket::default();
    let (mut window_sent, mut window_acked, mut window_received) = (0, 0, 0);
    for r in &recorders {
        let r = r.lock().unwrap();
        total.add(&r.measured);
        window_sent += r.window_sent;
        window_acked += r.window_acked;
        window_received += r.window_received;
    }

    let mut checks = crate::checks::CheckReport::default();
    let mut errors = Vec::new();
    let mut consumer_errors = 0;
    for c in &consumer_outcomes {
        checks.add(
            &c.checker
                .finish(&sent, &c.partitions, c.ended == "deadline"),
        );
        consumer_errors += c.poll_errors;
        if let Some(e) = &c.first_error {
            errors.push(format!("consumer {}: {e}", c.id));
        }
        if c.ended == "deadline" {
            notes.push(format!(
                "consumer {} stopped at the drain deadline ({} ms) before receiving everything",
                c.id, spec.drain_timeout_ms
            ));
        }
    }
    if assignment.is_empty() {
        notes.push("no consumers: end-to-end latency and delivery checks were not measured".into());
    }
    let send_errors: u64 = outcomes.iter().map(|o| o.send_errors).sum();
    for o in &outcomes {
        if let Some(e) = &o.first_error {
            errors.push(format!("producer {}: {e}", o.id));
        }
    }
    for (i, fe) in first_errors.iter().enumerate() {
        if let Some(e) = fe.lock().unwrap().as_ref() {
            errors.push(format!("producer {i} ack: {e}"));
        }
    }
    let unsent: u64 = outcomes.iter().map(|o| o.unsent).sum();

    let secs = match interrupted_at {
        Some(t) => {
            notes.push(format!(
                "INTERRUPTED: stopped after {:.1} s of the {:.1} s window; figures cover that part",
                t.saturating_sub(window.start_ns) as f64 / 1e9,
                window.secs()
            ));
            (t.saturating_sub(window.start_ns) as f64 / 1e9).max(1e-3)
        }
        None => window.secs(),
    };
    let tput = |msgs: u64, bytes: u64| Throughput {
        msgs,
        bytes,
        msgs_per_s: msgs as f64 / secs,
        mib_per_s: mib_per_s(bytes, secs),
    };
    let c = &total.counts;
    let produced = tput(c.acked, c.acked_bytes);
    let consumed = tput(c.received, c.received_bytes);
    let compression = CompressionStats {
        batches: c.batches,
        avg_batch_bytes: if c.batches > 0 {
            c.batch_uncompressed_bytes as f64 / c.batches as f64
        } else {
            0.0
        },
        avg_records_per_batch: if c.batches > 0 {
            c.acked as f64 / c.batches as f64
        } else {
            0.0
        },
        uncompressed_bytes: c.batch_uncompressed_bytes,
        compressed_bytes: c.batch_compressed_bytes,
        ratio: if c.batch_compressed_bytes > 0 {
            c.batch_uncompressed_bytes as f64 / c.batch_compressed_bytes as f64
        } else {
            1.0
        },
    };
    let cpu = CpuReport::new(
        env.cpu_source,
        &cpu_used,
        secs,
        produced.bytes + consumed.bytes,
    );
    let achieved_fraction = (spec.rate > 0).then(|| produced.msgs_per_s / spec.rate as f64);

    if spec.closed_loop() {
        notes.push("closed loop (--rate 0): each message's intended send time is its actual send time, so latencies are NOT corrected for coordinated omission and publish delay is 0 by construction".into());
        if env.producer_nice > 0 {
            let each = producer_nice;
            let lowered = if each > env.producer_nice {
                format!(" (--producer-nice {}, lowered to {each} for {} producer threads so that together they weigh no more than {})", env.producer_nice, spec.producers, crate::priority::PRODUCER_THREADS_WEIGHED)
            } else {
                " (--producer-nice)".to_string()
            };
            notes.push(format!("loadgen's producer threads ran {each} nice levels below the consumers and the broker{lowered}, so that closed-loop producers do not starve them on a shared machine"));
        }
    }
    if spec.acks == Acks::None {
        notes.push("acks=0: the broker sends no response, so publish latency is the time until the request was written to the socket".into());
    }
    if cfg!(debug_assertions) {
        notes.push("loadgen was built without optimisations (debug); figures are not representative — use --release".into());
    }
    // A producer's batches are sealed, compressed and sent by one client
    // task, so near one busy core per producer the client is the limit.
    let loadgen_bound =
        cpu.loadgen_cores >= 0.9 * spec.producers.min(cpu.online_cpus as u32) as f64;
    if loadgen_bound {
        notes.push(format!(
            "LOADGEN-BOUND: loadgen used {:.2} cores ({} producer(s), {} CPUs); the client's batching and compression, not the broker, may set these latencies",
            cpu.loadgen_cores, spec.producers, cpu.online_cpus
        ));
    } else if cpu.loadgen_cores > 0.5 * cpu.online_cpus as f64 {
        notes.push(format!(
            "loadgen used {:.2} cores on a {}-core machine: it competes with the broker, so throughput figures are a lower bound",
            cpu.loadgen_cores, cpu.online_cpus
        ));
    }

    // Only a topic this run created is deleted: never a user's data.
    if spec.delete_topic_after && topic_info.created {
        if let Err(e) = admin.delete_topic(&spec.topic).await {
            notes.push(format!("could not delete topic '{}': {e}", spec.topic));
        }
    }

    let mut result = RunResult {
        label: label.to_string(),
        client: transport::client_info(&env.target, &settings),
        series: label.to_string(),
        target: env.target_name.clone(),
        point: None,
        level: None,
        repeat: false,
        sustain: Sustain::default(),
        spec: spec.clone(),
        partitions,
        replication_factor,
        closed_loop: spec.closed_loop(),
        measured_s: secs,
        target_rate: spec.rate,
        achieved_fraction,
        saturated: false,
        loadgen_bound,
        produced,
        consumed,
        window_sent,
        window_acked,
        window_received,
        publish: LatencySummary::of(&total.lat.publish),
        publish_delay: LatencySummary::of(&total.lat.publish_delay),
        e2e: LatencySummary::of(&total.lat.e2e),
        compression,
        cpu,
        checks,
        ack_errors: c.ack_errors,
        send_errors,
        consumer_errors,
        unsent,
        catch_up,
        errors,
        notes,
        timeseries,
        e2e_spectrum: SpectrumPoint::of(&total.lat.e2e),
        histograms: total.lat,
    };
    // The verdict needs the finished figures; a run that did not hold its
    // schedule says so in its notes, in every table and in every chart.
    result.sustain = env.rule.judge(&result);
    result.saturated = !result.sustain.sustained;
    if result.saturated {
        result.notes.push(format!(
            "NOT SUSTAINED at {}/s: {}; latency here includes queueing in the producer{}",
            spec.rate,
            result.sustain.reasons.join("; "),
            if unsent > 0 {
                " (and the percentiles understate it: unsent messages have no latency)"
            } else {
                ""
            }
        ));
    }
    Ok(result)
}

/// What a report must say about the topic's replication factor: an
/// existing topic whose factor differs from the one asked for, or one
/// that could not be checked.
fn replication_note(spec: &WorkloadSpec, t: &TopicInfo) -> Option<String> {
    let asked = spec.replication_factor?;
    match t.replication_factor {
        _ if t.created => None,
        Some(rf) if rf != asked => Some(format!(
            "topic '{}' already existed with replication factor {rf} (asked for {asked}); used {rf}",
            spec.topic
        )),
        Some(_) => None,
        None => Some(format!(
            "topic '{}' already existed; its replication factor (asked for {asked}) is unknown: the native Metadata does not carry it (--protocol kafka shows it)",
            spec.topic
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_topic_with_another_factor_is_noted() {
        let spec = WorkloadSpec {
            replication_factor: Some(3),
            ..WorkloadSpec::default()
        };
        let found = |created, rf| TopicInfo {
            partitions: 4,
            created,
            replication_factor: rf,
        };
        assert_eq!(replication_note(&spec, &found(true, Some(3))), None);
        assert_eq!(replication_note(&spec, &found(false, Some(3))), None);
        let n = replication_note(&spec, &found(false, Some(1))).unwrap();
        assert!(n.contains("replication factor 1 (asked for 3)"), "{n}");
        let n = replication_note(&spec, &found(false, None)).unwrap();
        assert!(n.contains("unknown"), "{n}");
        // Nothing asked for: the broker's default, nothing to compare.
        let spec = WorkloadSpec::default();
        assert_eq!(replication_note(&spec, &found(false, Some(1))), None);
    }

    #[test]
    fn partitions_are_spread_over_consumers() {
        assert_eq!(assign_partitions(4, 2), vec![vec![0, 2], vec![1, 3]]);
        assert_eq!(assign_partitions(2, 5), vec![vec![0], vec![1]]);
        assert_eq!(assign_partitions(3, 1), vec![vec![0, 1, 2]]);
    }
}
