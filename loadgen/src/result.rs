//! The outcome of one run: every figure the reports show, plus the merged
//! histograms they are computed from.

use crate::checks::CheckReport;
use crate::cpu::CpuReport;
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

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Short name: "64k lz4 acks=1".
    pub label: String,
    /// The label without the batch size: points of one series differ only
    /// in batch size and share a line in the charts ("lz4 acks=1").
    pub series: String,
    pub spec: WorkloadSpec,
    /// The client library and its settings, when it is not loadgen's
    /// native client (`--protocol kafka`: librdkafka and its configuration).
    pub client: Option<ClientInfo>,
    /// Partitions the topic really has (may differ from the spec if it existed).
    pub partitions: u32,
    /// True when `rate` was 0: intended time = actual send time, so latency
    /// is not corrected for coordinated omission and publish delay is 0.
    pub closed_loop: bool,
    pub measured_s: f64,
    /// Target rate in msg/s (0 = unlimited) and the fraction achieved.
    pub target_rate: u64,
    pub achieved_fraction: Option<f64>,
    /// The producer could not keep to the schedule (or gave up on some).
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
    pub errors: Vec<String>,
    /// Caveats a reader must know (closed loop, acks=0, saturation...).
    pub notes: Vec<String>,
    pub timeseries: Vec<Sample>,
    #[serde(skip)]
    pub histograms: LatencySet,
}

impl RunResult {
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
