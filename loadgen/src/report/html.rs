//! index.html: one self-contained page (inline SVG and CSS, no scripts, no
//! server) with the verdict, the table, the charts and per-point details.

use super::plots::Chart;
use super::table::fmt_ms;
use super::ReportMeta;
use crate::result::{PointResult, RunResult};
use crate::stats::LatencySummary;
use crate::units::{format_count, format_duration, format_size};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Drop any XML prolog: inline SVG starts at `<svg`.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map(|i| &svg[i..]).unwrap_or(svg)
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1320px}
.warn{background:#fff8e1;border:1px solid #f0d58a;padding:8px 12px;border-radius:6px;margin-top:8px}
.caption{color:#444;font-size:13px;max-width:1100px;margin:4px 0 18px}
td.wrap{white-space:normal;max-width:420px}
svg{max-width:100%;height:auto}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.pass{background:#e6f4ea;border:1px solid #9ad0a8;padding:8px 12px;border-radius:6px}
.fail{background:#fdecea;border:1px solid #f1a9a0;padding:8px 12px;border-radius:6px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:2px 5px;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
th{background:#f5f5f5} td.l,th.l{text-align:left}
tr.sat td{background:#fff8e1} tr.bad td{background:#fdecea}
.kv td{text-align:left} .muted{color:#666;font-size:13px}
details{margin:6px 0} summary{cursor:pointer;font-weight:600}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
.chart{margin:12px 0}
"#;

fn summary_row(name: &str, s: &LatencySummary) -> String {
    format!(
        "<tr><td class=l>{name}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        s.count,
        s.mean_us / 1000.0,
        fmt_ms(s.p50_us),
        fmt_ms(s.p75_us),
        fmt_ms(s.p95_us),
        fmt_ms(s.p99_us),
        fmt_ms(s.p99_9_us),
        fmt_ms(s.p99_99_us),
        fmt_ms(s.max_us),
        fmt_ms(s.min_us),
    )
}

fn settings_table(p: &RunResult) -> String {
    let s = &p.spec;
    let rows: Vec<(&str, String)> = vec![
        ("topic", p.topic_label()),
        (
            "message size",
            format!(
                "{} B value ({} B header) + {} B key",
                s.message_size,
                crate::payload::HEADER_LEN,
                s.record_payload_bytes() - s.message_size
            ),
        ),
        ("payload", s.payload.label()),
        ("keys", format!("{:?}", s.keys).to_lowercase()),
        (
            "batch bytes / linger",
            format!("{} / {} ms", format_size(s.batch_bytes as u64), s.linger_ms),
        ),
        (
            "compression / acks",
            format!("{} / {}", s.compression, s.acks),
        ),
        (
            "producers / consumers",
            format!("{} / {}", s.producers, s.consumers),
        ),
        (
            "rate",
            if s.rate == 0 {
                "unlimited (closed loop)".into()
            } else {
                format!("{}/s open loop", format_count(s.rate as f64))
            },
        ),
        (
            "warm-up / measured",
            format!(
                "{} / {}",
                format_duration(Duration::from_millis(s.warmup_ms)),
                format_duration(Duration::from_millis(s.duration_ms))
            ),
        ),
        (
            "in-flight / buffer",
            format!(
                "{} requests / {}",
                s.max_inflight,
                format_size(s.producer_buffer_bytes() as u64)
            ),
        ),
    ];
    let mut o = String::from("<table class=kv>");
    for (k, v) in rows {
        let _ = write!(o, "<tr><th class=l>{k}</th><td>{}</td></tr>", esc(&v));
    }
    o.push_str("</table>");
    o
}

fn point_details(i: usize, p: &RunResult, files: &BTreeMap<String, String>) -> String {
    let mut o = String::new();
    let verdict = status(p);
    let _ = write!(
        o,
        "<details><summary>{}. {} — {}</summary>",
        i + 1,
        esc(&p.label),
        verdict
    );
    o.push_str(&settings_table(p));
    o.push_str("<p><b>Latency</b> (ms; counts are messages scheduled in the measured window)</p><table><tr><th class=l>kind</th><th>count</th><th>mean</th><th>p50</th><th>p75</th><th>p95</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>min</th></tr>");
    o.push_str(&summary_row("publish", &p.publish));
    o.push_str(&summary_row("publish delay", &p.publish_delay));
    o.push_str(&summary_row("end-to-end", &p.e2e));
    o.push_str("</table>");
    let c = &p.checks;
    let _ = write!(
        o,
        "<p><b>Delivery checks</b>: delivered {}, lost {}, unread {}, duplicated {}, reordered {}, misrouted {}; ack errors {}, send errors {}, fetch errors {}, unsent {}</p>",
        c.delivered, c.lost, c.unread, c.duplicated, c.reordered, c.misrouted, p.ack_errors, p.send_errors, p.consumer_errors, p.unsent
    );
    let cm = &p.compression;
    let _ = write!(
        o,
        "<p><b>Batches</b>: {} acknowledged in the window, avg {:.0} B / {:.1} records each; compression {:.2}x ({} → {} bytes)</p>",
        cm.batches, cm.avg_batch_bytes, cm.avg_records_per_batch, cm.ratio, cm.uncompressed_bytes, cm.compressed_bytes
    );
    let cpu = &p.cpu;
    let _ = write!(
        o,
        "<p><b>CPU</b> over {:.1} s: broker {} ({}), loadgen {:.2} s ({:.2} cores){}. <span class=muted>{}</span></p>",
        cpu.wall_s,
        cpu.broker_cpu_s
            .map(|b| format!("{b:.2} s"))
            .unwrap_or_else(|| "not measured".into()),
        cpu.broker_cores
            .map(|c| format!("{c:.2} cores"))
            .unwrap_or_else(|| "-".into()),
        cpu.loadgen_cpu_s,
        cpu.loadgen_cores,
        cpu.shard_threads_cpu_s
            .map(|s| format!("; shard threads alone {s:.2} s"))
            .unwrap_or_default(),
        esc(&cpu.broker_source)
    );
    if !p.notes.is_empty() || !p.errors.is_empty() {
        o.push_str("<ul>");
        for n in p.errors.iter().chain(p.notes.iter()) {
            let _ = write!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul>");
    }
    o.push_str("<p>Histograms: ");
    for (k, f) in files {
        let _ = write!(o, "<a href=\"{}\">{}</a> ", esc(f), esc(k));
    }
    o.push_str("</p><p><b>Per second</b></p><div class=scroll><table><tr><th>t (s)</th><th class=l>phase</th><th>sent/s</th><th>acked/s</th><th>MiB/s</th><th>consumed/s</th><th>publish p50</th><th>publish p99</th><th>e2e p50</th><th>e2e p99</th><th>e2e max</th><th>delay p99</th><th>broker cores</th><th>loadgen cores</th></tr>");
    for s in &p.timeseries {
        let _ = write!(
            o,
            "<tr><td>{:.1}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            s.t_s,
            s.phase,
            format_count(s.sent_per_s),
            format_count(s.acked_per_s),
            s.acked_mib_per_s,
            format_count(s.consumed_per_s),
            fmt_ms(s.publish_p50_us),
            fmt_ms(s.publish_p99_us),
            fmt_ms(s.e2e_p50_us),
            fmt_ms(s.e2e_p99_us),
            fmt_ms(s.e2e_max_us),
            fmt_ms(s.publish_delay_p99_us),
            s.broker_cores.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
            s.loadgen_cores
        );
    }
    o.push_str("</table></div></details>");
    o
}

fn status(r: &RunResult) -> &'static str {
    match (r.passed(), r.sustain.sustained) {
        (false, _) => "FAIL",
        (true, false) => "NOT SUSTAINED",
        (true, true) => "held",
    }
}

fn row_class(passed: bool, sustained: bool) -> &'static str {
    if !passed {
        " class=bad"
    } else if !sustained {
        " class=sat"
    } else {
        ""
    }
}

fn header(meta: &ReportMeta, n_points: usize, n_runs: usize) -> String {
    let mut o = String::new();
    let m = &meta.machine;
    let _ = write!(
        o,
        "<p class=muted>{n_points} points, {n_runs} latency runs in {:.0} s · {} · {} cores · kernel {} · {} MiB · THP {} · governor {} · loadgen {} ({})</p>",
        meta.wall_s,
        esc(&m.cpu_model),
        m.online_cpus,
        esc(&m.kernel),
        m.memory_total_mib.unwrap_or(0),
        esc(m.transparent_hugepages.as_deref().unwrap_or("?")),
        esc(m.cpu_governor.as_deref().unwrap_or("n/a")),
        meta.versions.loadgen,
        meta.versions.build,
    );
    o.push_str("<div class=scroll><table><tr><th class=l>target</th><th class=l>protocol</th><th class=l>broker</th><th class=l>data dir on</th><th class=l>version (from the broker's answers)</th></tr>");
    for t in &meta.targets {
        let b = &t.broker;
        let _ = write!(
            o,
            "<tr><td class=l>{}</td><td class=l>{}</td><td class=l>{}{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
            esc(&t.name),
            esc(&t.protocol),
            if b.embedded { "embedded, " } else { "" },
            esc(&b.addr),
            esc(b.data_dir_fs.as_deref().unwrap_or("?")),
            esc(&match (&t.version, &t.version_error) {
                (Some(v), _) => v.summary.clone(),
                (None, Some(e)) => format!("unknown: {e}"),
                (None, None) => "-".into(),
            })
        );
    }
    o.push_str("</table></div>");
    let _ = write!(
        o,
        "<p class=muted>command: <code>{}</code>{}</p>",
        esc(&meta.command.join(" ")),
        meta.profile
            .as_ref()
            .map(|p| format!(" · profile <code>{}</code>", esc(p)))
            .unwrap_or_default()
    );
    o
}

fn knee_table(points: &[PointResult], runs: &[RunResult]) -> String {
    let mut o = String::from("<h2>Max sustainable throughput</h2><p class=muted>Per point: the closed-loop probe (an upper bound; its latency is queueing in loadgen and is not reported), then the highest open-loop rate that held: acknowledged and consumed within the tolerance of the target, with bounded publish delay. The knee lies between it and the next rate tried, which did not hold. Broker CPU is at the highest load level that held. Yellow: a level did not hold its rate; red: a delivery check failed.</p>");
    o.push_str("<div class=scroll><table><tr><th class=l>point</th><th>probe msg/s</th><th>max sustainable msg/s</th><th>MiB/s</th><th>next tried (failed)</th><th>comp. ratio</th><th>broker CPU s/GB</th><th class=l>status</th></tr>");
    for p in points {
        let ratio = p
            .runs
            .iter()
            .filter_map(|&i| runs.get(i))
            .map(|r| r.compression.ratio)
            .next_back()
            .unwrap_or(1.0);
        let c = super::table::knee_cells(p);
        let _ = write!(
            o,
            "<tr{}><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ratio:.2}</td><td>{}</td><td class='l wrap'>{}</td></tr>",
            row_class(p.passed, p.sustained),
            esc(&p.label),
            c.probe,
            c.sustained,
            c.mib_per_s,
            c.next_failed,
            c.cpu_s_per_gb,
            esc(&c.status)
        );
    }
    o.push_str("</table></div>");
    o
}

fn runs_table(runs: &[RunResult]) -> String {
    let mut o = String::from("<h2>Latency at each load level</h2><p class=muted>Latency in ms from each message's <i>intended</i> send time (open loop: corrected for coordinated omission). Throughput counts uncompressed payload. <b>level</b> is the fraction of the point's max sustainable rate. Yellow rows did not hold their rate (their latency includes queueing in the producer); red rows failed a delivery check. The numbers match the timeline chart.</p>");
    o.push_str("<div class=scroll><table><tr><th rowspan=2>#</th><th class=l rowspan=2>point</th><th rowspan=2>level</th><th colspan=3>rate (msg/s, MiB/s)</th><th colspan=3>publish latency (ms)</th><th colspan=3>end-to-end latency (ms)</th><th rowspan=2>delay p99</th><th rowspan=2>broker CPU s/GB</th><th class=l rowspan=2>status</th></tr><tr><th>target</th><th>achieved</th><th>MiB/s</th><th>p50</th><th>p99</th><th>p99.9</th><th>p50</th><th>p99</th><th>p99.9</th></tr>");
    for (i, r) in runs.iter().enumerate() {
        let point = match r.label.rsplit_once(' ') {
            Some((a, b)) if r.level.is_some() && b.ends_with('%') => a.to_string(),
            _ => r.label.clone(),
        };
        let level = match r.level {
            Some(l) => format!(
                "{:.0}%{}",
                l * 100.0,
                if r.repeat { " (again)" } else { "" }
            ),
            None => "fixed".into(),
        };
        let cells: String = super::table::level_cells(r)
            .iter()
            .map(|c| format!("<td>{c}</td>"))
            .collect();
        let _ = write!(
            o,
            "<tr{}><td>{}</td><td class=l>{}</td><td>{level}</td>{cells}<td>{}</td><td>{}</td><td class=l>{}{}</td></tr>",
            row_class(r.passed(), r.sustain.sustained),
            i + 1,
            esc(point.trim_end_matches(" again")),
            fmt_ms(r.publish_delay.p99_us),
            r.cpu
                .broker_cpu_s_per_gb
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            status(r),
            if r.loadgen_bound { " *" } else { "" }
        );
    }
    o.push_str("</table></div><p class=muted>* = loadgen used about a core per producer: the client (batching, compression) may set that row's latency. Every percentile up to p99.99 and the maximum are in each run's details and in report.json.</p>");
    o
}

fn search_details(points: &[PointResult]) -> String {
    let mut o = String::from("<details><summary>Knee search: every rate tried</summary><div class=scroll><table><tr><th class=l>point</th><th class=l>run</th><th>target msg/s</th><th>acked msg/s</th><th>consumed msg/s</th><th>delay p99 (ms)</th><th class=l>verdict</th></tr>");
    for p in points {
        for (i, s) in p.probe.iter().chain(p.steps.iter()).enumerate() {
            let verdict = if !s.passed {
                format!("FAILED: {}", s.failures.join("; "))
            } else if s.target_rate == 0 {
                "closed loop (upper bound)".into()
            } else if s.sustain.sustained {
                "held".into()
            } else {
                format!("not sustained: {}", s.sustain.reasons.join("; "))
            };
            let _ = write!(
                o,
                "<tr><td class=l>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class='l wrap'>{}</td></tr>",
                esc(&p.label),
                if i == 0 { "probe".to_string() } else { format!("step {i}") },
                if s.target_rate == 0 { "max".into() } else { format_count(s.target_rate as f64) },
                format_count(s.produced_msgs_per_s),
                format_count(s.consumed_msgs_per_s),
                fmt_ms(s.publish_delay_p99_us),
                esc(&verdict)
            );
        }
    }
    o.push_str("</table></div></details>");
    o
}

pub fn render(
    meta: &ReportMeta,
    points: &[PointResult],
    runs: &[RunResult],
    files: &[BTreeMap<String, String>],
    charts: &[Chart],
) -> String {
    let passed = runs.iter().all(RunResult::passed) && points.iter().all(|p| p.passed);
    let sustained = runs.iter().all(|r| r.sustain.sustained) && points.iter().all(|p| p.sustained);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{}</title><style>{CSS}</style></head><body>",
        esc(&meta.title)
    );
    let _ = write!(o, "<h1>{}</h1>", esc(&meta.title));
    if let Some(d) = &meta.description {
        let _ = write!(o, "<p>{}</p>", esc(d));
    }
    o.push_str(&header(meta, points.len(), runs.len()));
    if passed {
        o.push_str("<p class=pass>All delivery checks passed: no message lost, duplicated, reordered or misrouted, and no errors.</p>");
    } else {
        o.push_str("<div class=fail><b>FAILED</b><ul>");
        for p in runs.iter().filter(|p| !p.passed()) {
            let _ = write!(
                o,
                "<li>{}: {}</li>",
                esc(&p.label),
                esc(&p.failures().join("; "))
            );
        }
        for p in points.iter().filter(|p| !p.passed) {
            let _ = write!(
                o,
                "<li>{}: {}</li>",
                esc(&p.label),
                esc(&p.problems.join("; "))
            );
        }
        o.push_str("</ul></div>");
    }
    if !sustained {
        o.push_str("<div class=warn><b>Not every rate held.</b> These runs' latencies include queueing in the producer and are marked in every table and chart:<ul>");
        for r in runs.iter().filter(|r| !r.sustain.sustained) {
            let _ = write!(
                o,
                "<li>{}: {}</li>",
                esc(&r.label),
                esc(&r.sustain.reasons.join("; "))
            );
        }
        for p in points
            .iter()
            .filter(|p| p.knee.is_none() && p.mode == "knee")
        {
            let _ = write!(o, "<li>{}: no rate held</li>", esc(&p.label));
        }
        o.push_str("</ul></div>");
    }
    if !points.is_empty() {
        o.push_str(&knee_table(points, runs));
        if points.iter().any(|p| p.probe.is_some()) {
            o.push_str(&search_details(points));
        }
    }
    o.push_str(&runs_table(runs));

    o.push_str("<h2>Charts</h2>");
    for c in charts {
        let _ = write!(
            o,
            "<div class=chart><p><b>{}</b> <span class=muted>(<a href=\"{}\">{}</a>)</span></p>{}<p class=caption>{}</p></div>",
            esc(&c.title),
            esc(&c.file),
            esc(&c.file),
            inline_svg(&c.svg),
            esc(&c.caption)
        );
    }

    o.push_str("<h2>Runs</h2>");
    for (i, p) in runs.iter().enumerate() {
        let empty = BTreeMap::new();
        o.push_str(&point_details(i, p, files.get(i).unwrap_or(&empty)));
    }
    o.push_str("<h2>Reading this report</h2><ul class=muted>");
    o.push_str("<li><b>max sustainable</b>: the highest open-loop rate at which the producer kept to its schedule and the consumers kept up (the knee). Loads above it only queue: latency grows without bound.</li>");
    o.push_str("<li><b>publish latency</b>: intended send time → broker acknowledgement. <b>publish delay</b>: actual − intended send time; when it grows, the producer (or its buffer) is the bottleneck.</li>");
    o.push_str("<li><b>end-to-end</b>: intended send time → the consumer's fetch returning the message.</li>");
    o.push_str("<li>The <code>.hgrm</code> files are HdrHistogram percentile distributions (values in ms); drop them on the HdrHistogram plotter to compare runs.</li>");
    o.push_str("<li>report.json holds every figure shown here, the per-second series, the machine and each target's version; <code>loadgen compare A/report.json B/report.json</code> divides two reports point by point.</li></ul>");
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(inline_svg("<?xml version=\"1.0\"?>\n<svg a>"), "<svg a>");
    }
}
