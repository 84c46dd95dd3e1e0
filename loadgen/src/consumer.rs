//! The consumer actor: reads its partitions, checks sequence numbers, and
//! records end-to-end latency (intended send time -> receipt).
//!
//! Receipt time is taken once per fetch, when the fetched records are
//! handed over: that is when an application would see them. Records are
//! decoded into a reusable buffer first and recorded under one lock per
//! fetch, so the sampler is never blocked behind a long-poll.
//!
//! **When to stop.** Consumers run until the runner publishes what the
//! producers sent ([`Drain::finish`]), then until (a) they delivered all of
//! it, (b) fetches that started after that publication kept coming back
//! empty with every partition at its high watermark for [`QUIET_NS`] (3 s) —
//! nothing more can come; not used with acks=0, where "sent" does not
//! imply "appended" — or (c) the drain deadline passed. Anything missing
//! is then reported as lost.
//!
//! Why (b) waits: with acks=1 an acknowledged record becomes visible only
//! once the broker's group commit has synced it (the high watermark is the
//! durable offset). After a burst the broker may hold seconds of appended
//! but unsynced data; a single empty fetch at the watermark then says
//! "not synced yet", not "lost". The watermark moves at every group commit
//! (milliseconds apart while data is pending), so seconds of empty fetches
//! with no movement mean nothing is pending (3 s: stalls of 1–2 s were
//! seen on a shared 2-core VM).

use crate::checks::SeqChecker;
use crate::payload::Header;
use crate::stats::{ns_to_us, record_in_runs, Clock, Recorder, Window};
use crate::transport::ConsumerBackend;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// `(partition, producer) -> messages sent`.
pub type SentCounts = HashMap<(u32, u32), u64>;

/// What the runner tells consumers once the producers are done.
#[derive(Default)]
pub struct Drain {
    /// `(partition, producer) -> messages sent`, plus the drain deadline (ns).
    expected: OnceLock<(SentCounts, u64)>,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain::default())
    }
    pub fn finish(&self, sent: SentCounts, deadline_ns: u64) {
        let _ = self.expected.set((sent, deadline_ns));
    }
    fn get(&self) -> Option<&(SentCounts, u64)> {
        self.expected.get()
    }
}

pub struct ConsumerCtx {
    pub id: u32,
    pub partitions: Vec<u32>,
    pub run_id: u32,
    pub clock: Clock,
    pub window: Window,
    pub record_bytes: u64,
    pub backend: ConsumerBackend,
    pub rec: Arc<Mutex<Recorder>>,
    pub drain: Arc<Drain>,
    pub stop: Arc<AtomicBool>,
    /// "Caught up and nothing new" may end the drain (not with acks=0).
    pub exit_when_caught_up: bool,
    /// Fault injection (tests): drop every Nth message before checking.
    pub drop_every: u64,
}

pub struct ConsumerOutcome {
    pub id: u32,
    pub partitions: Vec<u32>,
    pub checker: SeqChecker,
    pub poll_errors: u64,
    pub first_error: Option<String>,
    /// Why it stopped: "complete", "caught-up", "deadline", "stopped", "error".
    pub ended: &'static str,
    /// When it last received a message of this run (ns since the epoch).
    pub last_receipt_ns: Option<u64>,
}

/// How long fetches must stay empty at the high watermark before a
/// consumer concludes nothing more will come.
pub const QUIET_NS: u64 = 3_000_000_000;

struct Seen {
    partition: u32,
    header: Header,
}

/// Resolves once the drain deadline has passed ("deadline") or the run
/// was stopped ("stopped"), checked every 100 ms.
async fn past_deadline(drain: &Drain, stop: &AtomicBool, clock: Clock) -> &'static str {
    loop {
        if stop.load(Ordering::Relaxed) {
            return "stopped";
        }
        if drain.get().is_some_and(|(_, d)| clock.now_ns() >= *d) {
            return "deadline";
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Run the consumer until the drain ends. The backend is handed back still
/// connected: the runner drops it after the CPU window (see `producer::run`).
pub async fn run(mut ctx: ConsumerCtx) -> (ConsumerOutcome, ConsumerBackend) {
    let mut checker = SeqChecker::new();
    let mut seen: Vec<Seen> = Vec::with_capacity(4096);
    let mut foreign = 0u64;
    let mut dropped_counter = 0u64;
    let mut poll_errors = 0u64;
    let mut consecutive_errors = 0u32;
    let mut first_error = None;
    // Since when every fetch came back empty at the high watermark.
    let mut quiet_since: Option<u64> = None;
    let mut last_receipt_ns = None;
    let expected_mine = |d: &HashMap<(u32, u32), u64>, parts: &[u32]| -> u64 {
        d.iter()
            .filter(|((p, _), _)| parts.contains(p))
            .map(|(_, n)| *n)
            .sum()
    };
    let ended = loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break "stopped";
        }
        let drain_known_before = ctx.drain.get().is_some();
        seen.clear();
        let run_id = ctx.run_id;
        let poll = ctx
            .backend
            .poll(|partition, value| match Header::read(value) {
                Some(h) if h.run_id == run_id => seen.push(Seen {
                    partition,
                    header: h,
                }),
                _ => foreign += 1,
            });
        // A poll whose answer never comes (a broker that stalled, a
        // connection nobody reads) must not outlive the drain deadline or
        // the stop flag: a benchmark that hangs reports nothing.
        let res = tokio::select! {
            r = poll => r,
            why = past_deadline(&ctx.drain, &ctx.stop, ctx.clock) => break why,
        };
        let now = ctx.clock.now_ns();
        match res {
            Err(e) => {
                poll_errors += 1;
                consecutive_errors += 1;
                if first_error.is_none() {
                    first_error = Some(e.to_string());
                }
                if consecutive_errors >= 5 {
                    break "error";
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            Ok(_) => consecutive_errors = 0,
        }
        if !seen.is_empty() {
            last_receipt_ns = Some(now);
        }
        if !seen.is_empty() || foreign > 0 {
            let mut r = ctx.rec.lock().unwrap();
            let r = &mut *r;
            r.interval.counts.foreign += foreign;
            r.measured.counts.foreign += foreign;
            foreign = 0;
            let in_window = ctx.window.contains(now);
            // Equal latencies in a row (a closed-loop producer stamps a
            // run of records with one time) go in as one count.
            let mut received = 0u64;
            let samples = seen.iter().filter_map(|s| {
                if ctx.drop_every > 0 {
                    dropped_counter += 1;
                    if dropped_counter.is_multiple_of(ctx.drop_every) {
                        return None;
                    }
                }
                let h = &s.header;
                // Duplicates and misrouted messages are counted by the
                // checker; they are not a second delivery.
                checker
                    .observe(s.partition, h.partition, h.producer_id, h.seq)
                    .then(|| {
                        (
                            ns_to_us(now.saturating_sub(h.intended_ns)),
                            ctx.window.contains(h.intended_ns),
                        )
                    })
            });
            record_in_runs(samples, |us, measured, n| {
                received += n;
                r.interval.lat.e2e.saturating_record_n(us, n);
                if measured {
                    r.measured.lat.e2e.saturating_record_n(us, n);
                    r.window_received += n;
                }
            });
            r.interval.counts.received += received;
            r.interval.counts.received_bytes += received * ctx.record_bytes;
            if in_window {
                r.measured.counts.received += received;
                r.measured.counts.received_bytes += received * ctx.record_bytes;
            }
        }
        if let Some((expected, deadline_ns)) = ctx.drain.get() {
            let mine = expected_mine(expected, &ctx.partitions);
            let delivered: u64 = ctx
                .partitions
                .iter()
                .map(|p| checker.delivered_on(*p))
                .sum();
            if delivered >= mine {
                break "complete";
            }
            if ctx.exit_when_caught_up
                && drain_known_before
                && seen.is_empty()
                && ctx.backend.caught_up()
            {
                let since = *quiet_since.get_or_insert(now);
                if now.saturating_sub(since) >= QUIET_NS {
                    break "caught-up";
                }
            } else {
                quiet_since = None;
            }
            if now >= *deadline_ns {
                break "deadline";
            }
        }
    };
    let outcome = ConsumerOutcome {
        id: ctx.id,
        partitions: std::mem::take(&mut ctx.partitions),
        checker,
        poll_errors,
        first_error,
        ended,
        last_receipt_ns,
    };
    (outcome, ctx.backend)
}
