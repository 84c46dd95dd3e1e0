//! The outcome of one run: every figure the reports show, plus the merged
//! histograms they are computed from.

use crate::checks::CheckReport;
use crate::cpu::CpuReport;
use crate::knee::Sustain;
use crate::stats::{LatencySet, LatencySummary};
use crate::timeseries::Sample;
use crate::transport::ClientInfo;
use crate::workload::WorkloadSpec;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Throughput {
    pub msgs: u64,
    pub bytes: u64,
    pub msgs_per_s: f64,
    pub mib_per_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CompressionStats {
    pub batches: u64,
    /// Record bytes per batch before compression (what `batch_bytes` caps).
    pub avg_batch_bytes: f64,
    pub avg_records_per_batch: f64,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    /// uncompressed / compressed; 1.0 without compression.
    pub ratio: f64,
}

/// A catch-up read (`--catch-up`): the consumers started once the
/// producers had finished and read everything they had acknowledged.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CatchUp {
    /// Messages and payload bytes the consumers delivered.
    pub read: Throughput,
    /// From the consumers' start to the last message any of them received.
    pub secs: f64,
    /// CPU from the consumers' start until the last of them stopped, per
    /// GB read (`gb_moved` is the bytes read).
    pub cpu: CpuReport,
    /// Bytes the broker process read from storage meanwhile
    /// (`/proc/PID/io` read_bytes; embedded: loadgen's own process), when
    /// the broker runs on this host. With direct I/O every disk read
    /// counts; reads served from the broker's cache do not.
    pub disk_read_bytes: Option<u64>,
}

impl CatchUp {
    /// Disk bytes read per payload byte delivered.
    pub fn disk_read_ratio(&self) -> Option<f64> {
        let d = self.disk_read_bytes?;
        (self.read.bytes > 0).then(|| d as f64 / self.read.bytes as f64)
    }
}

/// One point of a latency distribution: `percentile` in [0, 100), value in µs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SpectrumPoint {
    pub percentile: f64,
    pub us: u64,
}

impl SpectrumPoint {
    pub fn of(h: &crate::stats::Hist) -> Vec<SpectrumPoint> {
        if h.is_empty() {
            return Vec::new();
        }
        h.iter_quantiles(5)
            .filter(|v| v.quantile_iterated_to() < 1.0)
            .map(|v| SpectrumPoint {
                percentile: v.quantile_iterated_to() * 100.0,
                us: v.value_iterated_to().max(1),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Short name: "64k lz4 acks=1".
    pub label: String,
    /// The label without the batch size: points of one series differ only
    /// in batch size and share a line in the charts ("lz4 acks=1").
    pub series: String,
    /// The broker and protocol measured ("native", "kafka", or a
    /// `--target` name).
    pub target: String,
    /// In a sweep: the index of the point this run measured (into the
    /// report's `points`), and the fraction of that point's knee it ran at
    /// (None for a fixed-rate point).
    pub point: Option<usize>,
    pub level: Option<f64>,
    /// A second run of the same level, measured for the run-to-run spread.
    pub repeat: bool,
    /// Whether the target rate was held (see `knee::SustainRule`).
    pub sustain: Sustain,
    pub spec: WorkloadSpec,
    /// The client library and its settings, when it is not loadgen's
    /// native client (`--protocol kafka`: librdkafka and its configuration).
    pub client: Option<ClientInfo>,
    /// Partitions the topic really has (may differ from the spec if it existed).
    pub partitions: u32,
    /// Replicas per partition of the topic, when known (Kafka Metadata, or
    /// the factor this run created it with; `spec.replication_factor` is
    /// what was asked for).
    pub replication_factor: Option<u16>,
    /// True when `rate` was 0: intended time = actual send time, so latency
    /// is not corrected for coordinated omission and publish delay is 0.
    pub closed_loop: bool,
    pub measured_s: f64,
    /// Target rate in msg/s (0 = unlimited) and the fraction achieved.
    pub target_rate: u64,
    pub achieved_fraction: Option<f64>,
    /// The target rate was not sustained (`!sustain.sustained`): the
    /// producer fell behind, gave up on messages, or consumers lagged.
    pub saturated: bool,
    /// Loadgen used about a core or more: its client (one sender task per
    /// producer) may be the bottleneck, and latency may include queueing
    /// in the client rather than the broker.
    pub loadgen_bound: bool,
    /// Acknowledged and consumed within the measured window (by event time).
    pub produced: Throughput,
    pub consumed: Throughput,
    /// Messages scheduled in the window: sent / acknowledged / received.
    /// These equal the histogram counts below.
    pub window_sent: u64,
    pub window_acked: u64,
    pub window_received: u64,
    pub publish: LatencySummary,
    pub publish_delay: LatencySummary,
    pub e2e: LatencySummary,
    pub compression: CompressionStats,
    pub cpu: CpuReport,
    pub checks: CheckReport,
    pub ack_errors: u64,
    pub send_errors: u64,
    pub consumer_errors: u64,
    /// Scheduled messages the producers gave up on (far behind schedule).
    pub unsent: u64,
    /// `--catch-up`: the consumers' read of the backlog after the producers
    /// finished (they did not run during the window).
    pub catch_up: Option<CatchUp>,
    pub errors: Vec<String>,
    /// Caveats a reader must know (closed loop, acks=0, saturation...).
    pub notes: Vec<String>,
    pub timeseries: Vec<Sample>,
    /// The end-to-end latency distribution, percentile by percentile
    /// (HdrHistogram's percentile spectrum, 5 ticks per half-distance): a
    /// few dozen pairs, kept after the histograms are released.
    pub e2e_spectrum: Vec<SpectrumPoint>,
    /// The merged histograms. A sweep writes them to `.hgrm` files after
    /// each run and then releases them (`LatencySet::release`), so its
    /// memory does not grow with the number of runs.
    #[serde(skip)]
    pub histograms: LatencySet,
}

impl RunResult {
    /// "NAME (P partitions, replication factor N)", for headers: the
    /// factor found, else the one asked for, else the broker's default.
    pub fn topic_label(&self) -> String {
        let rf = match (self.replication_factor, self.spec.replication_factor) {
            (Some(rf), _) => format!("replication factor {rf}"),
            (None, Some(rf)) => format!("replication factor {rf} asked"),
            (None, None) => "broker's default replication factor".into(),
        };
        format!("{} ({} partitions, {rf})", self.spec.topic, self.partitions)
    }

    /// Passed = no loss, duplication, reordering, misrouting, or errors.
    pub fn passed(&self) -> bool {
        self.checks.passed()
            && self.ack_errors == 0
            && self.send_errors == 0
            && self.consumer_errors == 0
    }

    /// Why the run failed, in one line per reason.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let c = &self.checks;
        if c.lost > 0 {
            f.push(format!("{} messages lost", c.lost));
        }
        if c.unread > 0 {
            f.push(format!(
                "{} messages not read before the drain deadline (the consumers fell behind; see --drain-timeout)",
                c.unread
            ));
        }
        if c.duplicated > 0 {
            f.push(format!("{} messages duplicated", c.duplicated));
        }
        if c.reordered > 0 {
            f.push(format!("{} messages reordered", c.reordered));
        }
        if c.misrouted > 0 {
            f.push(format!(
                "{} messages found in the wrong partition",
                c.misrouted
            ));
        }
        if self.ack_errors > 0 {
            f.push(format!(
                "{} messages failed to be acknowledged",
                self.ack_errors
            ));
        }
        if self.send_errors > 0 {
            f.push(format!("{} producer send errors", self.send_errors));
        }
        if self.consumer_errors > 0 {
            f.push(format!("{} consumer fetch errors", self.consumer_errors));
        }
        f
    }
}

/// One run of the knee search (the closed-loop probe or an open-loop
/// step): figures only, no histograms.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// 0 for the closed-loop probe.
    pub target_rate: u64,
    pub produced_msgs_per_s: f64,
    pub produced_mib_per_s: f64,
    pub consumed_msgs_per_s: f64,
    pub publish_delay_p99_us: u64,
    pub publish_p99_us: u64,
    pub e2e_p99_us: u64,
    pub unsent: u64,
    pub sustain: Sustain,
    pub passed: bool,
    pub failures: Vec<String>,
}

impl Step {
    pub fn of(r: &RunResult) -> Step {
        Step {
            target_rate: r.target_rate,
            produced_msgs_per_s: r.produced.msgs_per_s,
            produced_mib_per_s: r.produced.mib_per_s,
            consumed_msgs_per_s: r.consumed.msgs_per_s,
            publish_delay_p99_us: r.publish_delay.p99_us,
            publish_p99_us: r.publish.p99_us,
            e2e_p99_us: r.e2e.p99_us,
            unsent: r.unsent,
            sustain: r.sustain.clone(),
            passed: r.passed(),
            failures: r.failures(),
        }
    }
}

/// The maximum sustainable rate found for a point.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Knee {
    pub msgs_per_s: f64,
    /// Uncompressed payload (key + value) at that rate.
    pub mib_per_s: f64,
    /// The lowest rate tried that was not sustained (the knee lies in
    /// [msgs_per_s, this)); None if every rate tried held.
    pub next_failed_msgs_per_s: Option<f64>,
}

/// Relative run-to-run differences between the two runs of the repeated
/// level: |a - b| / mean(a, b), per figure.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Spread {
    pub msgs_per_s: f64,
    pub publish_p50: f64,
    pub publish_p99: f64,
    pub publish_p99_9: f64,
    pub e2e_p50: f64,
    pub e2e_p99: f64,
    pub e2e_p99_9: f64,
}

/// |a - b| / mean(a, b); 0 when both are 0.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    let m = (a + b) / 2.0;
    if m > 0.0 {
        (a - b).abs() / m
    } else {
        0.0
    }
}

impl Spread {
    pub fn between(a: &RunResult, b: &RunResult) -> Spread {
        let d = |x: u64, y: u64| rel_diff(x as f64, y as f64);
        Spread {
            msgs_per_s: rel_diff(a.produced.msgs_per_s, b.produced.msgs_per_s),
            publish_p50: d(a.publish.p50_us, b.publish.p50_us),
            publish_p99: d(a.publish.p99_us, b.publish.p99_us),
            publish_p99_9: d(a.publish.p99_9_us, b.publish.p99_9_us),
            e2e_p50: d(a.e2e.p50_us, b.e2e.p50_us),
            e2e_p99: d(a.e2e.p99_us, b.e2e.p99_us),
            e2e_p99_9: d(a.e2e.p99_9_us, b.e2e.p99_9_us),
        }
    }
}

/// One point of a sweep on one target: its knee (when searched), and the
/// runs that measured its latency (indices into the report's `runs`).
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub index: usize,
    /// "64k lz4 acks=1" (prefixed with the target when there are several).
    pub label: String,
    /// The non-batch settings: one chart panel per series.
    pub series: String,
    pub target: String,
    pub batch_bytes: u64,
    pub compression: String,
    pub acks: String,
    pub linger_ms: u64,
    /// "knee" (probe, search, levels) or "fixed" (one run at `--rate`).
    pub mode: &'static str,
    pub probe: Option<Step>,
    pub steps: Vec<Step>,
    pub knee: Option<Knee>,
    /// The level runs, ascending by rate (the repeat last).
    pub runs: Vec<usize>,
    /// Broker CPU seconds per GB moved at the highest level that held.
    pub broker_cpu_s_per_gb: Option<f64>,
    pub spread: Option<Spread>,
    /// Every run of the point (probe and steps included) passed its
    /// delivery checks.
    pub passed: bool,
    /// Every level run held its rate.
    pub sustained: bool,
    /// What a reader must know: failed checks, levels not sustained, no knee.
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_differences() {
        assert_eq!(rel_diff(0.0, 0.0), 0.0);
        assert!((rel_diff(90.0, 110.0) - 0.2).abs() < 1e-12);
        assert_eq!(rel_diff(5.0, 5.0), 0.0);
    }
}
