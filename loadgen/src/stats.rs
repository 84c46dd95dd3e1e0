//! Latency histograms and counters, recorded by actors and merged by the
//! analytics side.
//!
//! Every actor owns a [`Recorder`] behind its own mutex: the actor (or its
//! ack callback) is the only writer, and the once-a-second sampler the only
//! other user, so the lock is uncontended on the hot path. Histograms from
//! different actors are merged bucket by bucket ([`LatencySet::add`]);
//! percentiles are only ever read from merged histograms, never averaged.
//!
//! Units: latency values are recorded in microseconds (1 µs .. 1 h at 3
//! significant digits); loopback latencies start around 20 µs, so µs keeps
//! the histograms small without losing anything a user can act on.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Instant;

pub type Hist = Histogram<u64>;

/// Highest trackable latency: one hour, in µs. Larger values saturate.
pub const HIST_MAX_US: u64 = 3_600_000_000;
pub const HIST_SIGFIG: u8 = 3;

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("static histogram bounds")
}

/// The run's monotonic time base. Everything is ns since `epoch`.
///
/// Read with the TSC through `quanta` (calibrated against the monotonic
/// clock once per process; `quanta` falls back to the monotonic clock where
/// the TSC is not usable). Why: closed-loop producers read the time once per
/// message, and `Instant::now` (the vDSO's `clock_gettime`) was 17-21% of a
/// producer thread with 100 B messages. Every latency loadgen reports is a
/// difference of two readings of this clock; `epoch` maps them back to
/// `std` instants only for deadlines and sleeps, where the calibration's
/// drift (parts per million) does not matter.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub epoch: Instant,
    base: quanta::Instant,
}

/// The process's TSC clock, calibrated on first use.
fn tsc() -> &'static quanta::Clock {
    static TSC: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    TSC.get_or_init(quanta::Clock::new)
}

impl Clock {
    pub fn start() -> Clock {
        let tsc = tsc();
        Clock {
            base: tsc.now(),
            epoch: Instant::now(),
        }
    }
    #[inline]
    pub fn now_ns(&self) -> u64 {
        tsc().now().duration_since(self.base).as_nanos() as u64
    }
}

/// The measured window, in ns since the epoch: warm-up is `[0, start)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    #[inline]
    pub fn contains(&self, t_ns: u64) -> bool {
        t_ns >= self.start_ns && t_ns < self.end_ns
    }
    pub fn secs(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }
}

#[inline]
pub fn ns_to_us(ns: u64) -> u64 {
    ns / 1000
}

/// The three latency kinds loadgen reports.
#[derive(Clone)]
pub struct LatencySet {
    /// Intended send time -> broker acknowledgement.
    pub publish: Hist,
    /// Actual send time - intended send time: how far the producer fell
    /// behind its schedule (the coordinated-omission signal).
    pub publish_delay: Hist,
    /// Intended send time -> consumer receipt.
    pub e2e: Hist,
}

impl Default for LatencySet {
    fn default() -> Self {
        LatencySet {
            publish: new_hist(),
            publish_delay: new_hist(),
            e2e: new_hist(),
        }
    }
}

impl std::fmt::Debug for LatencySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySet")
            .field("publish", &self.publish.len())
            .field("publish_delay", &self.publish_delay.len())
            .field("e2e", &self.e2e.len())
            .finish()
    }
}

impl LatencySet {
    pub fn add(&mut self, other: &LatencySet) {
        // Same bounds everywhere, so adding cannot fail.
        self.publish.add(&other.publish).expect("same bounds");
        self.publish_delay
            .add(&other.publish_delay)
            .expect("same bounds");
        self.e2e.add(&other.e2e).expect("same bounds");
    }
    pub fn reset(&mut self) {
        self.publish.reset();
        self.publish_delay.reset();
        self.e2e.reset();
    }

    /// Give the histograms' memory back (about 180 KiB each at these
    /// bounds) once they are written out: what is left is three empty
    /// one-bucket histograms. A sweep calls this after each run so that its
    /// memory does not grow with the number of runs.
    pub fn release(&mut self) {
        let tiny = || Histogram::new_with_bounds(1, 2, 1).expect("static histogram bounds");
        self.publish = tiny();
        self.publish_delay = tiny();
        self.e2e = tiny();
    }

    /// Whether [`release`](Self::release) was called.
    pub fn released(&self) -> bool {
        self.e2e.high() < HIST_MAX_US
    }
}

/// Counts and byte totals. "bytes" are message payload bytes (key + value),
/// uncompressed, so throughput figures compare across codecs.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counters {
    pub sent: u64,
    pub sent_bytes: u64,
    pub acked: u64,
    pub acked_bytes: u64,
    pub ack_errors: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Batches acknowledged, and their record bytes before and after compression.
    pub batches: u64,
    pub batch_uncompressed_bytes: u64,
    pub batch_compressed_bytes: u64,
    /// Messages that were not ours (other runs, other tools) on a shared topic.
    pub foreign: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.sent_bytes += o.sent_bytes;
        self.acked += o.acked;
        self.acked_bytes += o.acked_bytes;
        self.ack_errors += o.ack_errors;
        self.received += o.received;
        self.received_bytes += o.received_bytes;
        self.batches += o.batches;
        self.batch_uncompressed_bytes += o.batch_uncompressed_bytes;
        self.batch_compressed_bytes += o.batch_compressed_bytes;
        self.foreign += o.foreign;
    }
}

/// Feed `samples` (latency in µs, whether it counts in the measured
/// window) to `record` as runs of equal samples: `record(us, in_window, n)`
/// once per run. Why: records arrive in batches whose latencies are often
/// equal in a row (a closed-loop producer stamps a run of records with one
/// time; acks cover a whole batch), and one histogram update per record
/// was a tenth of a loadgen thread with 100 B records.
#[inline]
pub fn record_in_runs(
    samples: impl IntoIterator<Item = (u64, bool)>,
    mut record: impl FnMut(u64, bool, u64),
) {
    let mut run: Option<(u64, bool, u64)> = None;
    for (us, w) in samples {
        match &mut run {
            Some((u, rw, n)) if *u == us && *rw == w => *n += 1,
            _ => {
                if let Some((u, rw, n)) = run.replace((us, w, 1)) {
                    record(u, rw, n);
                }
            }
        }
    }
    if let Some((u, rw, n)) = run {
        record(u, rw, n);
    }
}

/// Histograms plus counters over some span of time.
#[derive(Clone, Default)]
pub struct Bucket {
    pub lat: LatencySet,
    pub counts: Counters,
}

impl Bucket {
    pub fn add(&mut self, o: &Bucket) {
        self.lat.add(&o.lat);
        self.counts.add(&o.counts);
    }
    pub fn reset(&mut self) {
        self.lat.reset();
        self.counts = Counters::default();
    }
}

/// One actor's recordings.
///
/// - `interval`: everything since the sampler last looked (the per-second
///   time series, warm-up included);
/// - `measured`: only the measured window. Latency samples count when the
///   message's *intended* send time falls in the window, so each histogram's
///   count equals the messages scheduled in the window; throughput counters
///   count events (acks, receipts) whose *own* time falls in the window.
#[derive(Default)]
pub struct Recorder {
    pub interval: Bucket,
    pub measured: Bucket,
    /// Messages scheduled in the window: sent / acked / received. These
    /// equal the matching histogram counts, which tests check.
    pub window_sent: u64,
    pub window_acked: u64,
    pub window_received: u64,
    /// Run-clock time of the latest successful ack: tells a producer cut
    /// off while waiting for buffer room whether the broker was still
    /// taking data.
    pub last_ack_ns: u64,
}

/// Percentile summary of one histogram, in µs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub stddev_us: f64,
    pub p50_us: u64,
    pub p75_us: u64,
    pub p90_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Hist) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let q = |p: f64| h.value_at_quantile(p);
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            stddev_us: h.stdev(),
            p50_us: q(0.50),
            p75_us: q(0.75),
            p90_us: q(0.90),
            p95_us: q(0.95),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs end where the latency or the window flag changes; every sample
    /// is counted once, in order.
    #[test]
    fn samples_go_in_as_runs_of_equal_values() {
        let samples = [
            (5, true),
            (5, true),
            (5, false),
            (7, false),
            (7, false),
            (7, false),
            (5, true),
        ];
        let mut runs = Vec::new();
        record_in_runs(samples, |us, w, n| runs.push((us, w, n)));
        assert_eq!(
            runs,
            [(5, true, 2), (5, false, 1), (7, false, 3), (5, true, 1)]
        );
        record_in_runs([], |_, _, _| panic!("no samples, no runs"));
    }

    /// The run's clock keeps time with `std`'s monotonic clock: every rate
    /// loadgen reports divides by its durations, so a TSC calibrated wrong
    /// would inflate them. Over 0.1 s, 0.3 s and 1 s sleeps it agrees
    /// within 0.5% (plus 50 µs for the two readings not being simultaneous).
    #[test]
    fn the_run_clock_keeps_time_with_the_monotonic_clock() {
        let clock = Clock::start();
        for ms in [100u64, 300, 1000] {
            let (t0, s0) = (clock.now_ns(), Instant::now());
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let (t1, s1) = (clock.now_ns(), Instant::now());
            let ours = (t1 - t0) as f64;
            let std_ns = (s1 - s0).as_nanos() as f64;
            assert!(
                (ours - std_ns).abs() <= std_ns * 0.005 + 50_000.0,
                "over a {ms} ms sleep the run clock counted {ours} ns, the monotonic clock {std_ns} ns"
            );
        }
        // And it starts at the epoch.
        let since_epoch = clock.epoch.elapsed().as_nanos() as f64;
        let now = clock.now_ns() as f64;
        assert!((since_epoch - now).abs() <= since_epoch * 0.005 + 50_000.0);
    }

    #[test]
    fn merged_percentiles_come_from_merged_buckets() {
        // Two actors: one fast, one slow. Averaging their p99s would say
        // ~5 ms; the merged distribution's p99 is the slow one's.
        let mut a = LatencySet::default();
        let mut b = LatencySet::default();
        for _ in 0..980 {
            a.publish.record(100).unwrap();
        }
        for _ in 0..20 {
            b.publish.record(10_000).unwrap();
        }
        let mut m = LatencySet::default();
        m.add(&a);
        m.add(&b);
        let s = LatencySummary::of(&m.publish);
        assert_eq!(s.count, 1000);
        assert!(s.p50_us >= 100 && s.p50_us < 101);
        assert!(s.p99_us >= 10_000 && s.p99_us < 10_010);
    }

    #[test]
    fn out_of_range_values_saturate() {
        let mut h = new_hist();
        h.saturating_record(HIST_MAX_US * 10);
        h.saturating_record(0);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn window() {
        let w = Window {
            start_ns: 10,
            end_ns: 20,
        };
        assert!(!w.contains(9));
        assert!(w.contains(10));
        assert!(w.contains(19));
        assert!(!w.contains(20));
    }
}
