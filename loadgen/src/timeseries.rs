//! The per-second time series, and the progress line printed from it.
//!
//! Once a second (aligned to the run epoch) the sampler takes every
//! actor's interval histograms and counters, merges them, and resets them.
//! Each [`Sample`] covers one second of events — acks and receipts by the
//! time they happened — so the series shows warm-up, steady state, stalls
//! and the drain after the producers stop.

use crate::cpu::{BrokerCpuSource, CpuSnapshot};
use crate::stats::{Bucket, Clock, Recorder, Window};
use crate::units::{format_count, format_us};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// End of the second, in s since the run epoch.
    pub t_s: f64,
    pub phase: &'static str,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub acked_mib_per_s: f64,
    pub consumed_per_s: f64,
    pub consumed_mib_per_s: f64,
    pub publish_p50_us: u64,
    pub publish_p99_us: u64,
    pub publish_max_us: u64,
    pub e2e_p50_us: u64,
    pub e2e_p99_us: u64,
    pub e2e_max_us: u64,
    pub publish_delay_p99_us: u64,
    pub ack_errors: u64,
    /// Average cores busy in this second.
    pub broker_cores: Option<f64>,
    pub loadgen_cores: f64,
}

impl Sample {
    fn of(b: &Bucket, t_s: f64, secs: f64, phase: &'static str, cpu: &CpuSnapshot) -> Sample {
        let per_s = |n: u64| n as f64 / secs;
        let mib = |n: u64| n as f64 / (1u64 << 20) as f64 / secs;
        let q = |h: &crate::stats::Hist, p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        Sample {
            t_s,
            phase,
            sent_per_s: per_s(b.counts.sent),
            acked_per_s: per_s(b.counts.acked),
            acked_mib_per_s: mib(b.counts.acked_bytes),
            consumed_per_s: per_s(b.counts.received),
            consumed_mib_per_s: mib(b.counts.received_bytes),
            publish_p50_us: q(&b.lat.publish, 0.5),
            publish_p99_us: q(&b.lat.publish, 0.99),
            publish_max_us: b.lat.publish.max(),
            e2e_p50_us: q(&b.lat.e2e, 0.5),
            e2e_p99_us: q(&b.lat.e2e, 0.99),
            e2e_max_us: b.lat.e2e.max(),
            publish_delay_p99_us: q(&b.lat.publish_delay, 0.99),
            ack_errors: b.counts.ack_errors,
            broker_cores: cpu.broker_ns.map(|ns| ns as f64 / 1e9 / secs),
            loadgen_cores: cpu.loadgen_ns as f64 / 1e9 / secs,
        }
    }

    /// One progress line.
    pub fn progress_line(&self, label: &str) -> String {
        let cpu = match self.broker_cores {
            Some(b) => format!("cpu broker {b:.2} loadgen {:.2} cores", self.loadgen_cores),
            None => format!("cpu loadgen {:.2} cores", self.loadgen_cores),
        };
        format!(
            "{label}[{:>4.0}s {:<7}] sent {:>9}/s  acked {:>9}/s {:>7.1} MiB/s  consumed {:>9}/s  publish p99 {:>8}  e2e p99 {:>8}  delay p99 {:>8}  {cpu}{}",
            self.t_s,
            self.phase,
            format_count(self.sent_per_s),
            format_count(self.acked_per_s),
            self.acked_mib_per_s,
            format_count(self.consumed_per_s),
            format_us(self.publish_p99_us),
            format_us(self.e2e_p99_us),
            format_us(self.publish_delay_p99_us),
            if self.ack_errors > 0 {
                format!("  ERRORS {}", self.ack_errors)
            } else {
                String::new()
            }
        )
    }
}

pub struct SamplerCtx {
    pub recorders: Vec<Arc<Mutex<Recorder>>>,
    pub clock: Clock,
    pub window: Window,
    pub cpu_source: BrokerCpuSource,
    pub stop: Arc<AtomicBool>,
    /// Print one progress line per second (to stderr) with this prefix.
    pub progress: Option<String>,
}

fn phase(window: &Window, t_ns: u64) -> &'static str {
    if t_ns <= window.start_ns {
        "warmup"
    } else if t_ns <= window.end_ns {
        "measure"
    } else {
        "drain"
    }
}

/// Sample every second until `stop`; returns the series, including a final
/// partial second.
pub async fn run(ctx: SamplerCtx) -> Vec<Sample> {
    let mut series = Vec::new();
    let mut agg = Bucket::default();
    let mut last_ns = 0u64;
    let mut last_cpu = CpuSnapshot::take(ctx.cpu_source);
    let mut k = 1u64;
    loop {
        let due = ctx.clock.epoch + Duration::from_secs(k);
        // Check the stop flag often so the run does not wait a full second.
        let mut stopped = false;
        while tokio::time::Instant::now() < tokio::time::Instant::from_std(due) {
            if ctx.stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            let left = due.saturating_duration_since(std::time::Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
        let now_ns = ctx.clock.now_ns();
        agg.reset();
        for r in &ctx.recorders {
            let mut r = r.lock().unwrap();
            agg.add(&r.interval);
            r.interval.reset();
        }
        let cpu = CpuSnapshot::take(ctx.cpu_source);
        let secs = (now_ns - last_ns) as f64 / 1e9;
        if secs > 0.05 {
            let s = Sample::of(
                &agg,
                now_ns as f64 / 1e9,
                secs,
                // The phase of the second's middle, not its end.
                phase(&ctx.window, (last_ns + now_ns) / 2),
                &cpu.since(&last_cpu),
            );
            if let Some(prefix) = &ctx.progress {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{}", s.progress_line(prefix));
            }
            series.push(s);
        }
        last_cpu = cpu;
        last_ns = now_ns;
        k += 1;
        if stopped || ctx.stop.load(Ordering::Relaxed) {
            return series;
        }
    }
}
