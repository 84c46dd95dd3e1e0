//! The human tables: one row per run (latency in ms), and for a sweep one
//! row per point (its knee) plus one per load level.

use crate::result::{PointResult, RunResult};
use crate::stats::LatencySummary;
use crate::units::format_count;
use std::fmt::Write;

/// Milliseconds from µs, 4-5 significant characters: 0.087, 1.234, 12.35, 123.5, 1234.
pub fn fmt_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn lat_cols(s: &LatencySummary) -> [String; 6] {
    [
        fmt_ms(s.p50_us),
        fmt_ms(s.p90_us),
        fmt_ms(s.p99_us),
        fmt_ms(s.p99_9_us),
        fmt_ms(s.p99_99_us),
        fmt_ms(s.max_us),
    ]
}

/// Render the wide table (every percentile). Marks: `!` target rate not
/// sustained, `FAIL` a failed delivery check or errors.
pub fn render(points: &[RunResult]) -> String {
    let lw = label_width(points.iter().map(|p| p.label.as_str()));
    let mut out = String::new();
    let pad = " ".repeat(lw);
    let _ = writeln!(
        out,
        "{pad}  {:>9} {:>7}  {:<47}  {:<47}  {:>5} {:>6} {:>5}  checks",
        "produced",
        "",
        "publish latency (ms), intended send -> ack",
        "end-to-end latency (ms), intended send -> receipt",
        "comp",
        "broker",
        "lg",
    );
    let lat_hdr = format!(
        "{:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    let _ = writeln!(
        out,
        "{:<lw$}  {:>9} {:>7}  {lat_hdr}  {lat_hdr}  {:>5} {:>6} {:>5}",
        "point", "msg/s", "MiB/s", "ratio", "cpu/GB", "cores"
    );
    for p in points {
        let pl = lat_cols(&p.publish);
        let el = lat_cols(&p.e2e);
        let status = if !p.passed() {
            "FAIL".to_string()
        } else if p.checks.delivered == 0 && p.spec.consumers > 0 {
            "none".into()
        } else {
            "ok".into()
        };
        let sat = if p.saturated {
            "!"
        } else if p.loadgen_bound {
            "*"
        } else {
            " "
        };
        let cpu = p
            .cpu
            .broker_cpu_s_per_gb
            .map(|v| format!("{v:.1}s"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<lw$}  {:>8}{sat} {:>7.1}  {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  {:>5.2} {:>6} {:>5.2}  {status}",
            p.label,
            format_count(p.produced.msgs_per_s),
            p.produced.mib_per_s,
            pl[0], pl[1], pl[2], pl[3], pl[4], pl[5],
            el[0], el[1], el[2], el[3], el[4], el[5],
            p.compression.ratio,
            cpu,
            p.cpu.loadgen_cores,
        );
    }
    if points.iter().any(|p| p.saturated) {
        let _ = writeln!(
            out,
            "! = target rate NOT SUSTAINED: latency there is queueing in the producer, not the broker"
        );
    }
    if points.iter().any(|p| p.loadgen_bound && !p.saturated) {
        let _ = writeln!(
            out,
            "* = loadgen used about a core per producer: the client (batching, compression) may set that latency, not the broker"
        );
    }
    let _ = writeln!(
        out,
        "comp ratio = record bytes / batch frame bytes (framing included); broker cpu/GB = broker CPU s per GB in+out; lg cores = loadgen's own CPU"
    );
    out
}

/// Width of the label column: the longest label, at least 5.
fn label_width<'a>(labels: impl Iterator<Item = &'a str>) -> usize {
    labels.map(|l| l.chars().count()).max().unwrap_or(5).max(5)
}

/// A level run's rate and latency cells, as both the text and the HTML
/// tables show them: target rate, achieved msg/s and MiB/s, publish and
/// end-to-end p50 / p99 / p99.9 (ms).
pub fn level_cells(r: &RunResult) -> [String; 9] {
    [
        if r.target_rate == 0 {
            "max".into()
        } else {
            format_count(r.target_rate as f64)
        },
        format_count(r.produced.msgs_per_s),
        format!("{:.1}", r.produced.mib_per_s),
        fmt_ms(r.publish.p50_us),
        fmt_ms(r.publish.p99_us),
        fmt_ms(r.publish.p99_9_us),
        fmt_ms(r.e2e.p50_us),
        fmt_ms(r.e2e.p99_us),
        fmt_ms(r.e2e.p99_9_us),
    ]
}

/// The cells of a point's knee row, formatted once for the text and the
/// HTML reports.
pub(crate) struct KneeCells {
    /// Closed-loop probe msg/s.
    pub probe: String,
    /// Max sustainable msg/s; "none" when a knee search found no rate that
    /// held, "-" when the point did not search.
    pub sustained: String,
    pub mib_per_s: String,
    /// The lowest rate tried that did not hold.
    pub next_failed: String,
    pub cpu_s_per_gb: String,
    /// "ok", or the point's problems.
    pub status: String,
}

pub(crate) fn knee_cells(p: &PointResult) -> KneeCells {
    let dash = || "-".to_string();
    KneeCells {
        probe: p
            .probe
            .as_ref()
            .map(|s| format_count(s.produced_msgs_per_s))
            .unwrap_or_else(dash),
        sustained: p
            .knee
            .map(|k| format_count(k.msgs_per_s))
            .unwrap_or_else(|| {
                if p.mode == "knee" {
                    "none".into()
                } else {
                    dash()
                }
            }),
        mib_per_s: p
            .knee
            .map(|k| format!("{:.1}", k.mib_per_s))
            .unwrap_or_else(dash),
        next_failed: p
            .knee
            .and_then(|k| k.next_failed_msgs_per_s)
            .map(format_count)
            .unwrap_or_else(dash),
        cpu_s_per_gb: p
            .broker_cpu_s_per_gb
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(dash),
        status: if p.problems.is_empty() {
            "ok".to_string()
        } else {
            p.problems.join("; ")
        },
    }
}

/// A sweep's points: probe, knee, CPU, verdict.
pub fn render_knees(points: &[PointResult]) -> String {
    let lw = label_width(points.iter().map(|p| p.label.as_str()));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<lw$}  {:>10}  {:>14} {:>8}  {:>12}  {:>8}  status",
        "point", "probe/s", "sustained/s", "MiB/s", "next failed", "cpu s/GB"
    );
    for p in points {
        let c = knee_cells(p);
        let _ = writeln!(
            out,
            "{:<lw$}  {:>10}  {:>14} {:>8}  {:>12}  {:>8}  {}",
            p.label,
            c.probe,
            // Loud in a terminal: a knee search that found no rate.
            if c.sustained == "none" {
                "NONE"
            } else {
                &c.sustained
            },
            c.mib_per_s,
            c.next_failed,
            c.cpu_s_per_gb,
            c.status
        );
    }
    let _ = writeln!(
        out,
        "sustained/s = max sustainable rate (open loop, held within tolerance); next failed = the lowest rate tried that did not hold; cpu = broker CPU s per GB in+out at the highest level that held"
    );
    out
}

/// A sweep's latency runs, compactly: rate, p50/p99/p99.9, verdict.
pub fn render_levels(runs: &[RunResult]) -> String {
    let lw = label_width(runs.iter().map(|p| p.label.as_str()));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<lw$}  {:>9} {:>9} {:>7}  {:>7} {:>7} {:>7}  {:>7} {:>7} {:>7}  status",
        "run", "target/s", "acked/s", "MiB/s", "pub p50", "p99", "p99.9", "e2e p50", "p99", "p99.9"
    );
    for r in runs {
        let c = level_cells(r);
        let _ = writeln!(
            out,
            "{:<lw$}  {:>9} {:>9} {:>7}  {:>7} {:>7} {:>7}  {:>7} {:>7} {:>7}  {}",
            r.label,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            c[7],
            c[8],
            match (r.passed(), r.sustain.sustained) {
                (false, _) => format!("FAIL: {}", r.failures().join("; ")),
                (true, false) => format!("NOT SUSTAINED: {}", r.sustain.reasons.join("; ")),
                (true, true) => "held".into(),
            }
        );
    }
    let _ = writeln!(
        out,
        "latency in ms from the intended send time (coordinated omission corrected); NOT SUSTAINED rows include queueing in the producer"
    );
    out
}

fn summary_line(name: &str, s: &LatencySummary) -> String {
    format!(
        "{name:<14} {:>9} {:>8.3} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        s.count,
        s.mean_us / 1000.0,
        fmt_ms(s.p50_us),
        fmt_ms(s.p75_us),
        fmt_ms(s.p95_us),
        fmt_ms(s.p99_us),
        fmt_ms(s.p99_9_us),
        fmt_ms(s.p99_99_us),
        fmt_ms(s.max_us),
    )
}

/// The detailed block `loadgen run` prints for its one point.
pub fn render_summary(p: &RunResult) -> String {
    let s = &p.spec;
    let mut out = String::new();
    let rate = if s.rate == 0 {
        "unlimited rate (closed loop)".to_string()
    } else {
        format!("{} msg/s open loop", format_count(s.rate as f64))
    };
    let _ = writeln!(
        out,
        "{}: topic {}, {} B messages, {} producer(s), {} consumer(s), {rate}, {:.1} s measured",
        p.label,
        p.topic_label(),
        s.message_size,
        s.producers,
        s.consumers,
        p.measured_s
    );
    let _ = writeln!(
        out,
        "throughput     produced {} msg/s ({:.1} MiB/s), consumed {} msg/s ({:.1} MiB/s){}",
        format_count(p.produced.msgs_per_s),
        p.produced.mib_per_s,
        format_count(p.consumed.msgs_per_s),
        p.consumed.mib_per_s,
        p.achieved_fraction
            .map(|f| format!(", {:.1}% of target", f * 100.0))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "latency (ms)   {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "count", "mean", "p50", "p75", "p95", "p99", "p99.9", "p99.99", "max"
    );
    let _ = writeln!(out, "{}", summary_line("publish", &p.publish));
    let _ = writeln!(out, "{}", summary_line("publish delay", &p.publish_delay));
    let _ = writeln!(out, "{}", summary_line("end-to-end", &p.e2e));
    let c = &p.compression;
    let _ = writeln!(
        out,
        "batches        {} acknowledged, avg {:.0} B / {:.1} records, compression {:.2}x",
        c.batches, c.avg_batch_bytes, c.avg_records_per_batch, c.ratio
    );
    let cpu = &p.cpu;
    let _ = writeln!(
        out,
        "cpu            broker {}, loadgen {:.2} cores ({:.2} CPU s/GB)",
        match (cpu.broker_cores, cpu.broker_cpu_s_per_gb) {
            (Some(c), Some(g)) => format!("{c:.2} cores ({g:.2} CPU s/GB moved)"),
            (Some(c), None) => format!("{c:.2} cores"),
            _ => "not measured".into(),
        },
        cpu.loadgen_cores,
        cpu.loadgen_cpu_s_per_gb.unwrap_or(0.0)
    );
    if let Some(cu) = &p.catch_up {
        let _ = writeln!(
            out,
            "catch-up read  {} msgs ({:.1} MiB) in {:.1} s: {} msg/s ({:.1} MiB/s){}; cpu broker {}, loadgen {:.2} CPU s/GB read",
            cu.read.msgs,
            cu.read.bytes as f64 / (1 << 20) as f64,
            cu.secs,
            format_count(cu.read.msgs_per_s),
            cu.read.mib_per_s,
            match (cu.disk_read_bytes, cu.disk_read_ratio()) {
                (Some(d), Some(r)) => format!(
                    ", broker read {:.1} MiB from disk ({r:.2}x the data)",
                    d as f64 / (1 << 20) as f64
                ),
                _ => String::new(),
            },
            cu.cpu
                .broker_cpu_s_per_gb
                .map(|g| format!("{g:.2}"))
                .unwrap_or_else(|| "not measured".into()),
            cu.cpu.loadgen_cpu_s_per_gb.unwrap_or(0.0)
        );
    }
    let k = &p.checks;
    let _ = writeln!(
        out,
        "checks         delivered {}, lost {}, {}duplicated {}, reordered {}, misrouted {} -> {}",
        k.delivered,
        k.lost,
        if k.unread > 0 {
            format!("unread {}, ", k.unread)
        } else {
            String::new()
        },
        k.duplicated,
        k.reordered,
        k.misrouted,
        if p.passed() { "PASS" } else { "FAIL" }
    );
    for e in &p.errors {
        let _ = writeln!(out, "error          {e}");
    }
    for n in &p.notes {
        let _ = writeln!(out, "note           {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_format() {
        assert_eq!(fmt_ms(87), "0.087");
        assert_eq!(fmt_ms(1234), "1.234");
        assert_eq!(fmt_ms(12_345), "12.35");
        assert_eq!(fmt_ms(123_456), "123.5");
        assert_eq!(fmt_ms(1_234_567), "1235");
    }
}
