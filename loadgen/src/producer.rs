//! The producer actor: sends messages on schedule and records what
//! happened to them. No analytics here beyond recording into histograms.
//!
//! **Schedule (open loop).** With `rate > 0`, producer `k` of `P` owns the
//! slots `phase_k + i * P / rate`; message `i` is *intended* at its slot.
//! A producer that falls behind never skips a slot: it sends late, and the
//! lateness shows up in publish delay and in every latency measured from
//! the intended time (coordinated omission corrected). With `rate = 0`
//! (closed loop) the intended time is the actual send time.
//!
//! **Why a dedicated thread.** tokio's timer has 1 ms resolution, which
//! would add up to 1 ms of loadgen-made delay to every message. Each
//! producer instead runs on its own OS thread, sleeps with `nanosleep`
//! (timer slack lowered to 1 µs), and drives the async client with
//! `Handle::block_on` for each burst of due messages; the client's I/O
//! still runs on the tokio workers.
//!
//! **Latency without allocation.** Each record's token is its intended
//! send time (ns since the run epoch); the per-batch ack callback turns
//! tokens into publish latencies.

use crate::payload::{Filler, Header};
use crate::stats::{ns_to_us, record_in_runs, Clock, Recorder, Window};
use crate::transport::{AckEvent, AckSink, ProducerBackend};
use crate::workload::{KeyMode, WorkloadSpec, KEY_LEN};
use shardlog::client::partitioner::partition_for_key;
use shardlog::format::record;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Everything a producer needs; built by the runner.
pub struct ProducerCtx {
    pub id: u32,
    pub spec: Arc<WorkloadSpec>,
    pub partitions: u32,
    pub run_id: u32,
    pub clock: Clock,
    pub window: Window,
    pub backend: ProducerBackend,
    pub rec: Arc<Mutex<Recorder>>,
    pub rt: tokio::runtime::Handle,
    pub stop: Arc<AtomicBool>,
    /// How long past the window's end a late producer may keep sending
    /// its backlog before it gives up.
    pub grace: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ProducerOutcome {
    pub id: u32,
    /// Sequence numbers used per partition = messages handed to the client.
    pub sent_per_partition: Vec<u64>,
    pub send_errors: u64,
    pub first_error: Option<String>,
    /// Scheduled messages never sent because the producer was still behind
    /// when the grace period ended.
    pub unsent: u64,
}

/// The run's clock and window. Producers connect before the clock starts
/// (so connection setup does not count against the first slots); their ack
/// sinks read the time base once it is set.
#[derive(Debug, Clone, Copy)]
pub struct Timebase {
    pub clock: Clock,
    pub window: Window,
}

/// First error seen by an ack sink, for the report.
pub type FirstError = Arc<Mutex<Option<String>>>;

/// The ack callback: turns tokens into publish latencies. Runs on the
/// client's runtime threads, once per batch.
pub fn ack_sink(
    rec: Arc<Mutex<Recorder>>,
    timebase: Arc<OnceLock<Timebase>>,
    record_bytes: u64,
    first_error: FirstError,
) -> AckSink {
    Arc::new(move |ev: &AckEvent| {
        // Set before the first send, so always present here.
        let Some(&Timebase { clock, window }) = timebase.get() else {
            return;
        };
        let now = clock.now_ns();
        let n = ev.tokens.len() as u64;
        if let Some(e) = &ev.error {
            let mut r = rec.lock().unwrap();
            r.interval.counts.ack_errors += n;
            r.measured.counts.ack_errors += n;
            drop(r);
            let mut fe = first_error.lock().unwrap();
            if fe.is_none() {
                *fe = Some(format!("partition {}: {e}", ev.partition));
            }
            return;
        }
        let mut r = rec.lock().unwrap();
        let r = &mut *r;
        r.last_ack_ns = r.last_ack_ns.max(now);
        r.interval.counts.acked += n;
        r.interval.counts.acked_bytes += n * record_bytes;
        r.interval.counts.batches += ev.batches;
        let (u, c) = (
            ev.uncompressed_bytes.unwrap_or(0) as u64,
            ev.compressed_bytes.unwrap_or(0) as u64,
        );
        r.interval.counts.batch_uncompressed_bytes += u;
        r.interval.counts.batch_compressed_bytes += c;
        if window.contains(now) {
            r.measured.counts.acked += n;
            r.measured.counts.acked_bytes += n * record_bytes;
            r.measured.counts.batches += ev.batches;
            r.measured.counts.batch_uncompressed_bytes += u;
            r.measured.counts.batch_compressed_bytes += c;
        }
        // A batch's tokens are its records' intended send times, in order
        // and often less than a microsecond apart: equal latencies in a
        // row go in as one count (one histogram update per record was 11%
        // of the client thread that runs this, with 100 B records).
        record_in_runs(
            ev.tokens
                .iter()
                .map(|&t| (ns_to_us(now.saturating_sub(t)), window.contains(t))),
            |us, in_window, n| {
                r.interval.lat.publish.saturating_record_n(us, n);
                if in_window {
                    r.measured.lat.publish.saturating_record_n(us, n);
                    r.window_acked += n;
                }
            },
        );
    })
}

fn lower_timer_slack() {
    // Sleep precision on Linux is bounded by the thread's timer slack
    // (50 µs by default); 1 µs makes short pacing sleeps accurate.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// How the producer's client closes a batch, which the sticky partitioner
/// must follow to leave a partition with the record that ends its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// shardlog's client: a batch is sealed once its encoded records reach
    /// `batch_bytes` (`client::producer`), so the record that gets there
    /// is the batch's last.
    Native,
    /// librdkafka: when it builds a request, it takes a partition's queued
    /// records while the request's length so far plus the next record's
    /// worst-case size (key, value and [`LIBRDKAFKA_RECORD_MAX_OVERHEAD`])
    /// stays within `batch.size` (`rd_kafka_msgset_writer_write_msgq`).
    Librdkafka,
}

/// librdkafka's worst-case bytes of a v2 record beyond its key and value
/// (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`: the length, offset delta, key
/// and value lengths and header count as 5-byte varints, the timestamp
/// delta as a 10-byte one, and the attributes byte).
const LIBRDKAFKA_RECORD_MAX_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

/// What librdkafka's request holds before a partition's first record
/// (request header, client id, topic, partition, the 61-byte batch
/// header), rounded up: counted high, the partitioner leaves a partition a
/// record early, and its batch goes out when its linger expires.
const LIBRDKAFKA_BATCH_START: usize = 512;

impl Framing {
    /// The bytes a batch counts before its first record.
    fn batch_start(self) -> usize {
        match self {
            Framing::Native => 0,
            Framing::Librdkafka => LIBRDKAFKA_BATCH_START,
        }
    }

    /// The bytes the client counts for an unkeyed record of `value`'s
    /// length that is its batch's `index`th.
    fn record_bytes(self, index: i32, value: &[u8]) -> usize {
        match self {
            Framing::Native => {
                // Timestamp delta 0: see `Placement::next`.
                let body = record::body_len(0, index, None, Some(value), &[]);
                body + record::varlong_len(body as i64)
            }
            Framing::Librdkafka => value.len() + LIBRDKAFKA_RECORD_MAX_OVERHEAD,
        }
    }
}

/// Where the next record goes and with which key.
struct Placement {
    mode: KeyMode,
    partitions: u32,
    framing: Framing,
    /// Sticky partition for unkeyed records, and the records and bytes (as
    /// `framing` counts them) sent to it in this visit.
    sticky: u32,
    sticky_records: i32,
    sticky_bytes: usize,
    batch_bytes: usize,
    /// A record's value (loadgen's records have a fixed size; only its
    /// length matters here).
    value: Vec<u8>,
    next_key: u64,
    key: [u8; KEY_LEN],
}

impl Placement {
    fn new(spec: &WorkloadSpec, framing: Framing, partitions: u32, first: u32) -> Placement {
        Placement {
            mode: spec.keys,
            partitions,
            framing,
            sticky: first,
            sticky_records: 0,
            sticky_bytes: framing.batch_start(),
            batch_bytes: spec.batch_bytes,
            value: vec![0u8; spec.message_size],
            next_key: 0,
            key: [0; KEY_LEN],
        }
    }

    /// The key of the record last placed (none for unkeyed records).
    fn key(&self) -> Option<&[u8]> {
        (self.mode != KeyMode::None).then_some(&self.key[..])
    }

    /// Returns the partition; the key (if any) is left in `self.key`.
    ///
    /// Unkeyed: Kafka's sticky partitioner (KIP-480, KIP-794), staying on a
    /// partition until its batch is full, counted as the client counts it
    /// ([`Framing`]), not as payload. Why: counting payload (1,024 of a
    /// 1 KB record's ~1,034 encoded bytes), the native client sealed each
    /// 1 MiB batch about ten records before the partitioner moved on, and
    /// those records made a batch of their own. With 4 partitions the
    /// partitioner came back within milliseconds and filled it; with 1,000
    /// it was sent alone when its linger expired, so every full batch came
    /// with a ~10 KB one (twice the batches; 0.74x of 4 partitions' rate).
    /// The native count assumes timestamp deltas under 64 ms (one byte),
    /// true unless a batch lingers longer; past that it comes short by a
    /// byte a record, and a batch's last few records make one of their own.
    fn next(&mut self, filler: &mut Filler) -> u32 {
        match self.mode {
            KeyMode::None => {
                let mut size = self.framing.record_bytes(self.sticky_records, &self.value);
                let fits = match self.framing {
                    Framing::Native => self.sticky_bytes < self.batch_bytes,
                    Framing::Librdkafka => {
                        self.sticky_records == 0 || self.sticky_bytes + size <= self.batch_bytes
                    }
                };
                if !fits {
                    self.sticky = (self.sticky + 1) % self.partitions;
                    self.sticky_records = 0;
                    self.sticky_bytes = self.framing.batch_start();
                    size = self.framing.record_bytes(0, &self.value);
                }
                self.sticky_bytes += size;
                self.sticky_records += 1;
                self.sticky
            }
            KeyMode::Random => {
                self.key = filler.next_u64().to_be_bytes();
                partition_for_key(&self.key, self.partitions)
            }
            KeyMode::Sequential => {
                self.key = self.next_key.to_be_bytes();
                self.next_key += 1;
                partition_for_key(&self.key, self.partitions)
            }
        }
    }
}

/// Most messages sent per `block_on` round, so the stop flag stays responsive.
const BURST_MAX: u32 = 512;

/// Most messages a [`SendTally`] holds before it goes into the recorder:
/// few enough that a send waiting for buffer room leaves the per-second
/// counts at most this many messages behind. Also the most messages sent
/// under one hold of the client's lock ([`crate::transport::SendBurst`]).
const TALLY_MAX: usize = 64;

/// What a producer sent since it last took the recorder's lock. Why: the
/// lock and two histogram updates per message were a fifth of a producer
/// thread's CPU with 100 B messages; one lock per [`TALLY_MAX`] messages
/// records the same counts and delays.
#[derive(Default)]
struct SendTally {
    sent: u64,
    sent_bytes: u64,
    measured_sent: u64,
    measured_sent_bytes: u64,
    /// Publish delay (µs) of each message, and whether its intended time
    /// falls in the measured window.
    delays: Vec<(u64, bool)>,
}

impl SendTally {
    fn sent(&mut self, ctx: &ProducerCtx, actual: u64, intended: u64, bytes: u64) {
        self.sent += 1;
        self.sent_bytes += bytes;
        if ctx.window.contains(actual) {
            self.measured_sent += 1;
            self.measured_sent_bytes += bytes;
        }
        let delay = ns_to_us(actual.saturating_sub(intended));
        self.delays.push((delay, ctx.window.contains(intended)));
    }

    /// Into the recorder, then empty. Equal delays in a row (all of them in
    /// a closed loop, where the delay is 0) go in as one count.
    fn flush(&mut self, rec: &Mutex<Recorder>) {
        if self.sent == 0 {
            return;
        }
        let mut guard = rec.lock().unwrap();
        let r = &mut *guard;
        r.interval.counts.sent += self.sent;
        r.interval.counts.sent_bytes += self.sent_bytes;
        r.measured.counts.sent += self.measured_sent;
        r.measured.counts.sent_bytes += self.measured_sent_bytes;
        record_in_runs(self.delays.iter().copied(), |delay, in_window, n| {
            r.interval.lat.publish_delay.saturating_record_n(delay, n);
            if in_window {
                r.measured.lat.publish_delay.saturating_record_n(delay, n);
                r.window_sent += n;
            }
        });
        drop(guard);
        *self = SendTally {
            delays: std::mem::take(&mut self.delays),
            ..SendTally::default()
        };
        self.delays.clear();
    }
}

/// Run the producer to completion on the calling thread. The backend is
/// handed back, closed but still connected: the runner drops it only after
/// the CPU window, so a client library's threads never exit inside it.
pub fn run(ctx: ProducerCtx) -> (ProducerOutcome, ProducerBackend) {
    crate::cpu::register_current_thread();
    lower_timer_slack();
    let out = run_inner(&ctx);
    crate::cpu::unregister_current_thread();
    (out, ctx.backend)
}

fn run_inner(ctx: &ProducerCtx) -> ProducerOutcome {
    let spec = &*ctx.spec;
    let n_parts = ctx.partitions.max(1);
    let mut out = ProducerOutcome {
        id: ctx.id,
        sent_per_partition: vec![0; n_parts as usize],
        ..Default::default()
    };
    let open = spec.rate > 0;
    let interval_ns = if open {
        1e9 * spec.producers as f64 / spec.rate as f64
    } else {
        0.0
    };
    // Spread producers' slots evenly instead of firing them together.
    let phase_ns = interval_ns * ctx.id as f64 / spec.producers as f64;
    let slot = |i: u64| (phase_ns + interval_ns * i as f64) as u64;
    let send_end = ctx.window.end_ns;
    let hard_end = send_end + ctx.grace.as_nanos() as u64;
    let at = |ns: u64| tokio::time::Instant::from_std(ctx.clock.epoch + Duration::from_nanos(ns));
    let record_bytes = spec.record_payload_bytes();
    let mut filler = Filler::new(
        spec.payload,
        0x9e37_79b9_7f4a_7c15 ^ ((ctx.run_id as u64) << 32 | ctx.id as u64),
    );
    let framing = match ctx.backend {
        ProducerBackend::Native(_) => Framing::Native,
        ProducerBackend::Kafka(_) => Framing::Librdkafka,
    };
    let mut place = Placement::new(spec, framing, n_parts, ctx.id % n_parts);
    place.next_key = (ctx.id as u64) << 40;
    let mut buf = vec![0u8; spec.message_size];
    // Fresh filler per message only when a codec will see it: random bytes
    // are there to keep compression honest, and making them per message
    // cost loadgen 23% of its CPU per GB with 1 KB messages and producers
    // alone (README, "Against the disk"). Without compression the body
    // changes nothing: the broker stores it as sent and the consumer reads
    // only the header.
    let refill = spec.compression != shardlog::format::Compression::None;
    filler.fill(&mut buf[crate::payload::HEADER_LEN..]);
    let mut i: u64 = 0;

    'outer: loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = ctx.clock.now_ns();
        let next = if open { slot(i) } else { now };
        if next >= send_end {
            break;
        }
        if now >= hard_end {
            // Still behind after the grace period: give up on the rest.
            out.unsent = if open {
                ((send_end as f64 - phase_ns) / interval_ns).ceil() as u64 - i
            } else {
                0
            };
            break;
        }
        if next > now {
            // Wake at the end of the pacing period holding `next`: all
            // messages due in one period go out together (see `pacing_us`).
            // When messages are further apart than a period, waking for each
            // costs no more than the budget allows: wake exactly.
            let q = if interval_ns >= (spec.pacing_us * 1000) as f64 {
                0
            } else {
                spec.pacing_us * 1000
            };
            let wake = if q > 0 { next.div_ceil(q) * q } else { next };
            std::thread::sleep(Duration::from_nanos(wake - now));
            continue;
        }
        let ts_ms = shardlog::client::producer::now_ms();
        let mut tally = SendTally::default();
        let burst = async {
            let mut n = 0;
            'burst: while n < BURST_MAX {
                // Up to TALLY_MAX records under one hold of the client's
                // lock (see `SendBurst`), then the tally goes into the
                // recorder with the lock released.
                let mut run = ctx.backend.burst().await.map_err(|e| e.to_string())?;
                let mut no_room = None;
                // Closed loop: one clock read per run of up to TALLY_MAX
                // records, which is both their intended and their actual
                // send time (publish delay is exactly 0). The run is queued
                // within a few µs, so its later records' times are early by
                // at most that; a read per record was a tenth of this
                // thread with 100 B messages, and equal times let the ack
                // sink and the consumers record a run as one count.
                // Open loop: the slot is the intended time, and the clock
                // is read per record.
                let run_now = (!open).then(|| ctx.clock.now_ns());
                for _ in 0..TALLY_MAX.min((BURST_MAX - n) as usize) {
                    let now = run_now.unwrap_or_else(|| ctx.clock.now_ns());
                    let intended = if open { slot(i) } else { now };
                    if intended >= send_end || intended > now {
                        break 'burst;
                    }
                    let p = place.next(&mut filler);
                    let seq = out.sent_per_partition[p as usize];
                    if refill {
                        filler.fill(&mut buf[crate::payload::HEADER_LEN..]);
                    }
                    let key = place.key();
                    // Open loop: the payload is built, so the message is
                    // being sent now; its lateness is publish delay.
                    let actual = if open { ctx.clock.now_ns() } else { now };
                    Header {
                        run_id: ctx.run_id,
                        producer_id: ctx.id,
                        partition: p,
                        seq,
                        intended_ns: intended,
                    }
                    .write(&mut buf);
                    n += 1;
                    if !run
                        .try_send(p, key, &buf, ts_ms, intended)
                        .map_err(|e| e.to_string())?
                    {
                        no_room = Some((p, intended, actual));
                        break;
                    }
                    tally.sent(ctx, actual, intended, record_bytes as u64);
                    out.sent_per_partition[p as usize] += 1;
                    i += 1;
                }
                drop(run);
                tally.flush(&ctx.rec);
                if let Some((p, intended, actual)) = no_room {
                    // The client's buffer is full: this send waits for room
                    // (the message in `buf` is the one just built). It is
                    // counted as sent only once the client took it: a wait
                    // cut off by the grace period leaves it unsent.
                    let key = place.key();
                    ctx.backend
                        .send(p, key, &buf, ts_ms, intended)
                        .await
                        .map_err(|e| e.to_string())?;
                    tally.sent(ctx, actual, intended, record_bytes as u64);
                    out.sent_per_partition[p as usize] += 1;
                    i += 1;
                }
            }
            Ok::<(), String>(())
        };
        // A send blocks while the client's buffer is full; a broker that
        // stopped taking data must not hold it past the grace period.
        let r = ctx
            .rt
            .block_on(async { tokio::time::timeout_at(at(hard_end), burst).await });
        tally.flush(&ctx.rec);
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                out.send_errors += 1;
                out.first_error = Some(e);
                break 'outer;
            }
            Err(_) => {
                out.unsent = if open {
                    ((send_end as f64 - phase_ns) / interval_ns).ceil() as u64 - i
                } else {
                    0
                };
                // Waiting for room while acks still arrive is a producer
                // that is behind a slower broker, like the check at the
                // top of the loop (its unsent messages mark the run as not
                // sustained). Only a broker that acknowledged nothing
                // during the whole grace period is a failure. Why the whole
                // period: with a 250 ms silence as the test, a debug broker
                // on a loaded CI machine that paused its acks for longer
                // (while still taking data) failed a run that was only
                // behind (seen in a clean-clone CI run at d56ede0).
                let last_ack = ctx.rec.lock().unwrap().last_ack_ns;
                if last_ack + ctx.grace.as_nanos() as u64 >= ctx.clock.now_ns() {
                    break 'outer;
                }
                out.send_errors += 1;
                out.first_error = Some(format!(
                    "a send waited until the end of the grace period ({} s after the window): the broker took no more data",
                    ctx.grace.as_secs_f64()
                ));
                break 'outer;
            }
        }
    }
    // Closing waits for every ack; bounded like the sends, plus CLOSE_WAIT.
    let close_by = ctx.clock.now_ns().max(hard_end) + CLOSE_WAIT.as_nanos() as u64;
    match ctx
        .rt
        .block_on(async { tokio::time::timeout_at(at(close_by), ctx.backend.close()).await })
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            out.send_errors += 1;
            out.first_error.get_or_insert(e.to_string());
        }
        Err(_) => {
            out.send_errors += 1;
            out.first_error.get_or_insert(format!(
                "closing the producer waited {} s for acks that never came",
                CLOSE_WAIT.as_secs()
            ));
        }
    }
    out
}

/// Longest a producer waits for its last acks after it stopped sending.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadKind;
    use shardlog::format::builder::BatchBuilder;

    /// The partitions `place` visits in turn, with the records placed on
    /// each: the first three whole visits.
    fn visits(mut place: Placement) -> Vec<(u32, usize)> {
        let mut filler = Filler::new(PayloadKind::Random, 1);
        let mut visits: Vec<(u32, usize)> = Vec::new();
        while visits.len() < 4 {
            let p = place.next(&mut filler);
            match visits.last_mut() {
                Some((q, n)) if *q == p => *n += 1,
                _ => visits.push((p, 1)),
            }
        }
        visits.pop(); // the visit under way when the loop stopped
        visits
    }

    /// Place `visits` partitions' worth of unkeyed records and replay each
    /// visit into a batch as the native client builds it (sealed once its
    /// records reach `batch_bytes`): a visit must never overflow into a
    /// second batch (the tiny batches the payload count made), and must
    /// fill its batch to within a few records.
    fn check_sticky(message_size: usize, batch_bytes: usize) {
        let value = vec![7u8; message_size];
        let spec = WorkloadSpec {
            message_size,
            batch_bytes,
            ..WorkloadSpec::default()
        };
        for (p, n) in visits(Placement::new(&spec, Framing::Native, 1000, 0)) {
            let mut b = BatchBuilder::new();
            for i in 0..n {
                assert!(
                    b.size_bytes() < batch_bytes,
                    "{message_size} B records, {batch_bytes} B batches: partition {p}'s batch \
                     was full after {i} of the {n} records placed there"
                );
                b.push(1_700_000_000_000 + i as i64 % 7, None, Some(&value), &[]);
            }
            let short = batch_bytes.saturating_sub(b.size_bytes());
            assert!(
                short < 2 * (message_size + 16),
                "{message_size} B records, {batch_bytes} B batches: partition {p}'s batch \
                 is {short} bytes short of full"
            );
        }
    }

    #[test]
    fn the_sticky_partitioner_moves_on_exactly_when_the_batch_fills() {
        for message_size in [10, 100, 1024, 10_000] {
            for batch_bytes in [16 << 10, 1 << 20] {
                check_sticky(message_size, batch_bytes);
            }
        }
    }

    /// librdkafka's batches: replay each visit as its request writer takes
    /// records (the request's bytes so far, from a start of `start` bytes,
    /// plus the next record's worst case within `batch.size`, counting
    /// what it actually wrote): every visit must go in one batch, and the
    /// batch must not be short of full by more than the partitioner's
    /// margins.
    #[test]
    fn with_librdkafka_a_partition_s_visit_is_one_batch() {
        for message_size in [10, 100, 1024, 10_000] {
            for batch_bytes in [16 << 10, 1 << 20] {
                let value = vec![7u8; message_size];
                let spec = WorkloadSpec {
                    message_size,
                    batch_bytes,
                    ..WorkloadSpec::default()
                };
                let worst = message_size + LIBRDKAFKA_RECORD_MAX_OVERHEAD;
                for start in [61 + 40, LIBRDKAFKA_BATCH_START] {
                    for (p, n) in visits(Placement::new(&spec, Framing::Librdkafka, 1000, 0)) {
                        let (mut len, mut taken) = (start, 0);
                        while taken < n && (taken == 0 || len + worst <= batch_bytes) {
                            len += Framing::Native.record_bytes(taken as i32, &value);
                            taken += 1;
                        }
                        assert_eq!(
                            taken, n,
                            "{message_size} B records, {batch_bytes} B batches, start {start}: \
                             librdkafka took {taken} of partition {p}'s {n} records"
                        );
                        let fit = (batch_bytes - LIBRDKAFKA_BATCH_START) / worst;
                        assert!(
                            n >= fit,
                            "{message_size} B records, {batch_bytes} B batches: partition {p} \
                             got {n} records, {fit} fit"
                        );
                    }
                }
            }
        }
    }
}
