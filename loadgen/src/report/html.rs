//! index.html: one self-contained page (inline SVG and CSS, no scripts, no
//! server) with the verdict, the table, the charts and per-point details.

use super::plots::Chart;
use super::table::fmt_ms;
use super::ReportMeta;
use crate::result::RunResult;
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

fn lat_cells(s: &LatencySummary) -> String {
    [
        s.p50_us,
        s.p90_us,
        s.p99_us,
        s.p99_9_us,
        s.p99_99_us,
        s.max_us,
    ]
    .iter()
    .map(|v| format!("<td>{}</td>", fmt_ms(*v)))
    .collect()
}

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
        (
            "topic",
            format!("{} ({} partitions)", s.topic, p.partitions),
        ),
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
                format_size(s.buffer_bytes as u64)
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
    let verdict = if p.passed() { "ok" } else { "FAILED" };
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
        "<p><b>Delivery checks</b>: delivered {}, lost {}, duplicated {}, reordered {}, misrouted {}; ack errors {}, send errors {}, fetch errors {}, unsent {}</p>",
        c.delivered, c.lost, c.duplicated, c.reordered, c.misrouted, p.ack_errors, p.send_errors, p.consumer_errors, p.unsent
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

pub fn render(
    meta: &ReportMeta,
    points: &[RunResult],
    files: &[BTreeMap<String, String>],
    charts: &[Chart],
) -> String {
    let passed = points.iter().all(RunResult::passed);
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
    let m = &meta.machine;
    let _ = write!(
        o,
        "<p class=muted>{} points in {:.0} s · {} · {} cores · kernel {} · {} MiB · THP {} · governor {} · loadgen {} ({}) · broker {} {} ({} shards, data on {}) · protocol {}</p><p class=muted>command: <code>{}</code>{}</p>",
        points.len(),
        meta.wall_s,
        esc(&m.cpu_model),
        m.online_cpus,
        esc(&m.kernel),
        m.memory_total_mib.unwrap_or(0),
        esc(m.transparent_hugepages.as_deref().unwrap_or("?")),
        esc(m.cpu_governor.as_deref().unwrap_or("n/a")),
        meta.versions.loadgen,
        meta.versions.build,
        if meta.broker.embedded { "embedded at" } else { "at" },
        esc(&meta.broker.addr),
        meta.broker
            .shards
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into()),
        esc(meta.broker.data_dir_fs.as_deref().unwrap_or("?")),
        esc(&meta.protocol),
        esc(&meta.command.join(" ")),
        meta.profile
            .as_ref()
            .map(|p| format!(" · profile <code>{}</code>", esc(p)))
            .unwrap_or_default()
    );
    if passed {
        o.push_str("<p class=pass>All delivery checks passed: no message lost, duplicated, reordered or misrouted, and no errors.</p>");
    } else {
        o.push_str("<div class=fail><b>FAILED</b><ul>");
        for p in points.iter().filter(|p| !p.passed()) {
            let _ = write!(
                o,
                "<li>{}: {}</li>",
                esc(&p.label),
                esc(&p.failures().join("; "))
            );
        }
        o.push_str("</ul></div>");
    }

    o.push_str("<h2>Results</h2><p class=muted>Latency in ms, measured from each message's <i>intended</i> send time (open loop: corrected for coordinated omission). Throughput counts uncompressed payload. Rows in yellow did not sustain the target rate. * = loadgen used about a core per producer, so the client may set that row's latency.</p>");
    o.push_str("<div class=scroll><table><tr><th class=l rowspan=2>point</th><th colspan=2>produced</th><th colspan=2>consumed</th><th colspan=6>publish latency (ms)</th><th colspan=6>end-to-end latency (ms)</th><th rowspan=2>delay p99</th><th rowspan=2>comp. ratio</th><th rowspan=2>broker CPU s/GB</th><th rowspan=2>loadgen cores</th><th rowspan=2>checks</th></tr><tr><th>msg/s</th><th>MiB/s</th><th>msg/s</th><th>MiB/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>");
    for p in points {
        let class = if !p.passed() {
            " class=bad"
        } else if p.saturated {
            " class=sat"
        } else {
            ""
        };
        let _ = write!(
            o,
            "<tr{class}><td class=l>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.1}</td>{}{}<td>{}</td><td>{:.2}</td><td>{}</td><td>{:.2}{}</td><td>{}</td></tr>",
            esc(&p.label),
            format_count(p.produced.msgs_per_s),
            p.produced.mib_per_s,
            format_count(p.consumed.msgs_per_s),
            p.consumed.mib_per_s,
            lat_cells(&p.publish),
            lat_cells(&p.e2e),
            fmt_ms(p.publish_delay.p99_us),
            p.compression.ratio,
            p.cpu
                .broker_cpu_s_per_gb
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            p.cpu.loadgen_cores,
            if p.loadgen_bound { " *" } else { "" },
            if p.passed() { "ok" } else { "FAIL" }
        );
    }
    o.push_str("</table></div>");

    o.push_str("<h2>Charts</h2>");
    for c in charts {
        let _ = write!(
            o,
            "<div class=chart><p><b>{}</b> <span class=muted>(<a href=\"{}\">{}</a>)</span></p>{}</div>",
            esc(&c.title),
            esc(&c.file),
            esc(&c.file),
            inline_svg(&c.svg)
        );
    }

    o.push_str("<h2>Points</h2>");
    for (i, (p, f)) in points.iter().zip(files).enumerate() {
        o.push_str(&point_details(i, p, f));
    }
    o.push_str("<h2>Reading this report</h2><ul class=muted>");
    o.push_str("<li><b>publish latency</b>: intended send time → broker acknowledgement. <b>publish delay</b>: actual − intended send time; when it grows, the producer (or its buffer) is the bottleneck.</li>");
    o.push_str("<li><b>end-to-end</b>: intended send time → the consumer's fetch returning the message.</li>");
    o.push_str("<li>The <code>.hgrm</code> files are HdrHistogram percentile distributions (values in ms); drop them on the HdrHistogram plotter to compare runs.</li>");
    o.push_str(
        "<li>report.json holds every figure shown here and the per-second series.</li></ul>",
    );
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
