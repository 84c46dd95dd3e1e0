//! Charts, rendered to SVG with plotters (no fonts or image codecs needed;
//! the browser draws the text), so index.html can inline them.
//!
//! The sweep's charts answer its question, what a setting buys in
//! throughput and costs in latency:
//! - **tradeoff** (`tradeoff-e2e.svg`, `tradeoff-publish.svg`): latency
//!   p50 / p99 / p99.9 against achieved throughput, one panel per series
//!   (codec, acks), one curve per batch size and target through its load
//!   levels, each curve's knee marked on the x axis;
//! - **knee** (`knee.svg`): max sustainable throughput against batch size,
//!   one line per series and target;
//! - **broker CPU** per GB against batch size;
//! - **spectrum**: the whole end-to-end distribution at one level;
//! - **timeline**: every latency run's per-second rate and p99, back to
//!   back, with seconds far below the target rate marked as stalls.
//!
//! A run that did not hold its rate or failed its checks is drawn as a red
//! cross and never joined to a curve. Batch size is on a log2 axis (1k,
//! 4k, 16k…), latency and throughput on log axes (they span decades).

use crate::report::hgrm::US_PER_MS;
use crate::result::{PointResult, RunResult};
use crate::stats::LatencySummary;
use crate::units::format_size;
use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart '{chart}': {detail}")]
pub struct PlotError {
    pub chart: String,
    pub detail: String,
}

fn perr<E: std::fmt::Display>(chart: &str) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        chart: chart.to_string(),
        detail: e.to_string(),
    }
}

/// One rendered chart.
pub struct Chart {
    /// File name, e.g. "tradeoff-e2e.svg".
    pub file: String,
    pub title: String,
    /// What to read from it, for the page under the chart.
    pub caption: String,
    pub svg: String,
}

fn color(i: usize) -> RGBColor {
    // Distinct, print-friendly colours (Tableau 10).
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

fn log2_range(batches: impl IntoIterator<Item = u64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for b in batches {
        let x = (b.max(1) as f64).log2();
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return (9.5, 10.5);
    }
    (lo.floor() - 0.5, hi.ceil() + 0.5)
}

/// A log axis over `values` (ms): finite, positive, at least a decade,
/// with headroom. Values that are zero, negative or not finite are left
/// out; with none left, 1 µs to 1 ms. Why it matters: plotters walks a log
/// axis's key points from `lo` to `hi`, so an infinite bound (the min of
/// no values) never ends and allocates until the kernel kills loadgen.
fn log_axis(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut min, mut max) = (f64::INFINITY, 0.0f64);
    for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
        min = min.min(v);
        max = max.max(v);
    }
    if !min.is_finite() {
        return (1e-3, 1.0);
    }
    let lo = (min / 1.5).max(1e-3);
    let hi = (max * 1.5).max(lo * 10.0);
    assert!(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < hi);
    (lo, hi)
}

fn batch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 && *x >= 0.0 {
        format_size(2f64.powf(x.round()) as u64)
    } else {
        String::new()
    }
}

/// Axis labels in ms; log axes use base 2 (…0.25, 0.5, 1, 2, 4…), so
/// keep up to three decimals below 1 and drop trailing zeros.
fn ms_label(v: &f64) -> String {
    if *v >= 1.0 {
        if (v - v.round()).abs() < 1e-9 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Axis labels for throughput (MiB/s): 0.5, 1, 10, 250…
fn num_label(v: &f64) -> String {
    if *v >= 10.0 {
        format!("{v:.0}")
    } else if *v >= 1.0 {
        let s = format!("{v:.1}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        ms_label(v)
    }
}

type E = DrawingAreaErrorKind<std::io::Error>;

/// The legend box every chart uses, upper left.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    font: u32,
) -> Result<(), E> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", font))
        .draw()
}

/// Distinct values in first-seen order.
fn unique<T: PartialEq>(it: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v = Vec::new();
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

/// A run drawn on a curve: it held its rate and passed its checks.
fn good(r: &RunResult) -> bool {
    r.passed() && r.sustain.sustained
}

/// A point's level runs (repeats left out), by rate.
fn level_runs<'a>(p: &PointResult, runs: &'a [RunResult]) -> Vec<&'a RunResult> {
    let mut v: Vec<&RunResult> = p
        .runs
        .iter()
        .filter_map(|&i| runs.get(i))
        .filter(|r| !r.repeat)
        .collect();
    v.sort_by_key(|r| r.target_rate);
    v
}

fn latency_of<'a>(r: &'a RunResult, kind: &str) -> &'a LatencySummary {
    match kind {
        "publish" => &r.publish,
        _ => &r.e2e,
    }
}

/// How the curves of a chart are told apart: colour by batch size, line
/// and marker by target (solid and filled for the first, dashed and
/// hollow for the others).
struct Styles {
    batches: Vec<u64>,
    targets: Vec<String>,
}

impl Styles {
    fn new(points: &[PointResult]) -> Styles {
        let mut batches = unique(points.iter().map(|p| p.batch_bytes));
        batches.sort_unstable();
        Styles {
            batches,
            targets: unique(points.iter().map(|p| p.target.clone())),
        }
    }
    fn color(&self, p: &PointResult) -> RGBColor {
        color(
            self.batches
                .iter()
                .position(|b| *b == p.batch_bytes)
                .unwrap_or(0),
        )
    }
    fn target(&self, p: &PointResult) -> usize {
        self.targets
            .iter()
            .position(|t| *t == p.target)
            .unwrap_or(0)
    }
    fn name(&self, p: &PointResult, with_batch: bool) -> String {
        let mut s = if with_batch {
            format_size(p.batch_bytes)
        } else {
            p.series.clone()
        };
        if self.targets.len() > 1 {
            s.push(' ');
            s.push_str(&p.target);
        }
        s
    }
}

/// Latency p50 / p99 / p99.9 against throughput: rows are percentiles,
/// columns are series.
fn tradeoff_chart(
    points: &[PointResult],
    runs: &[RunResult],
    kind: &str,
) -> Result<Chart, PlotError> {
    let name = format!("tradeoff-{kind}");
    let e = perr::<E>(&name);
    let st = Styles::new(points);
    let series = unique(points.iter().map(|p| p.series.clone()));
    type Pick = fn(&LatencySummary) -> u64;
    let pcts: [(&str, Pick); 3] = [
        ("p50", |s| s.p50_us),
        ("p99", |s| s.p99_us),
        ("p99.9", |s| s.p99_9_us),
    ];
    let all_levels: Vec<&RunResult> = points.iter().flat_map(|p| level_runs(p, runs)).collect();
    let (x0, x1) = log_axis(
        all_levels
            .iter()
            .map(|r| r.produced.mib_per_s)
            .chain(points.iter().filter_map(|p| p.knee.map(|k| k.mib_per_s))),
    );
    let (y0, y1) = log_axis(all_levels.iter().flat_map(|r| {
        let s = latency_of(r, kind);
        pcts.iter().map(move |(_, f)| f(s) as f64 / US_PER_MS)
    }));
    let cols = series.len().max(1);
    let w = (430 * cols as u32).clamp(640, 1290);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, 3 * 300)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let panels = root.split_evenly((3, cols));
        for (row, (pname, f)) in pcts.iter().enumerate() {
            for (col, sname) in series.iter().enumerate() {
                let area = &panels[row * cols + col];
                let mut chart = ChartBuilder::on(area)
                    .caption(format!("{kind} {pname}: {sname}"), ("sans-serif", 14))
                    .margin(6)
                    .margin_right(14)
                    .x_label_area_size(34)
                    .y_label_area_size(52)
                    .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale().base(2.0))
                    .map_err(&e)?;
                chart
                    .configure_mesh()
                    .x_desc("achieved MiB/s (log)")
                    .y_desc(format!("{pname} ms (log)"))
                    .x_label_formatter(&num_label)
                    .y_label_formatter(&ms_label)
                    .light_line_style(WHITE)
                    .draw()
                    .map_err(&e)?;
                let mut any_bad = false;
                for p in points.iter().filter(|p| &p.series == sname) {
                    let c = st.color(p);
                    let ti = st.target(p);
                    let lv = level_runs(p, runs);
                    let at = |r: &RunResult| {
                        (
                            r.produced.mib_per_s,
                            f(latency_of(r, kind)) as f64 / US_PER_MS,
                        )
                    };
                    let ok = |(x, y): &(f64, f64)| *x > 0.0 && *y > 0.0;
                    let data: Vec<(f64, f64)> = lv
                        .iter()
                        .filter(|r| good(r))
                        .map(|r| at(r))
                        .filter(ok)
                        .collect();
                    let style = c.stroke_width(2);
                    let anno = if ti == 0 {
                        chart.draw_series(LineSeries::new(data.clone(), style))
                    } else {
                        chart.draw_series(DashedLineSeries::new(data.clone(), 6, 4, style))
                    }
                    .map_err(&e)?;
                    if row == 0 {
                        anno.label(st.name(p, true)).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                        });
                    }
                    if ti == 0 {
                        chart
                            .draw_series(data.iter().map(|&pt| Circle::new(pt, 3, c.filled())))
                            .map_err(&e)?;
                    } else {
                        chart
                            .draw_series(
                                data.iter().map(|&pt| Circle::new(pt, 4, c.stroke_width(2))),
                            )
                            .map_err(&e)?;
                    }
                    // A run without a figure (nothing acknowledged, no
                    // latency measured) still gets its cross, on the edge.
                    let bad: Vec<(f64, f64)> = lv
                        .iter()
                        .filter(|r| !good(r))
                        .map(|r| {
                            let (x, y) = at(r);
                            (
                                if x > 0.0 { x } else { x0 * 1.1 },
                                if y > 0.0 { y } else { y0 * 1.3 },
                            )
                        })
                        .collect();
                    any_bad |= !bad.is_empty();
                    chart
                        .draw_series(bad.iter().map(|&pt| Cross::new(pt, 5, RED.stroke_width(2))))
                        .map_err(&e)?;
                    if let Some(k) = p.knee.filter(|k| k.mib_per_s > 0.0) {
                        chart
                            .draw_series(std::iter::once(TriangleMarker::new(
                                (k.mib_per_s, y0 * 1.12),
                                6,
                                c.filled(),
                            )))
                            .map_err(&e)?;
                    }
                }
                if row == 0 {
                    if any_bad {
                        chart
                            .draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())
                            .map_err(&e)?
                            .label("not sustained / failed")
                            .legend(|(x, y)| Cross::new((x + 9, y), 4, RED.stroke_width(2)));
                    }
                    chart
                        .draw_series(std::iter::empty::<TriangleMarker<(f64, f64), i32>>())
                        .map_err(&e)?
                        .label("knee (max sustainable)")
                        .legend(|(x, y)| TriangleMarker::new((x + 9, y), 5, BLACK.filled()));
                    legend(&mut chart, 11).map_err(&e)?;
                }
            }
        }
        root.present().map_err(&e)?;
    }
    let what = if kind == "publish" {
        "Publish latency (intended send → ack)"
    } else {
        "End-to-end latency (intended send → consumer receipt)"
    };
    let dashed = if st.targets.len() > 1 {
        format!(
            " Solid lines and filled dots: {}; dashed lines and hollow dots: {}.",
            st.targets[0],
            st.targets[1..].join(", ")
        )
    } else {
        String::new()
    };
    Ok(Chart {
        file: format!("{name}.svg"),
        title: format!("{what} against throughput, per batch size"),
        caption: format!(
            "Latency in ms (log) against achieved throughput in MiB/s of uncompressed payload (log), \
             at each load level (fractions of the point's max sustainable rate). One panel per codec/acks \
             setting and percentile, one curve per batch size (colour).{dashed} A triangle on the bottom edge \
             marks the curve's knee: its max sustainable throughput. Read: further right is more throughput, \
             higher is more latency; where a curve turns upward, the last throughput costs latency. \
             A red cross is a run that did not hold its rate or failed a delivery check; it is never \
             joined to a curve."
        ),
        svg,
    })
}

/// A per-point figure against batch size: one line per series and target.
fn per_batch_chart(
    points: &[PointResult],
    name: &str,
    title: &str,
    y_desc: &str,
    y: &dyn Fn(&PointResult) -> Option<f64>,
    caption: String,
) -> Result<Chart, PlotError> {
    let e = perr::<E>(name);
    let (x0, x1) = log2_range(points.iter().map(|p| p.batch_bytes));
    let ymax = points
        .iter()
        .filter_map(y)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let hi = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
    let st = Styles::new(points);
    let lines = unique(points.iter().map(|p| (p.series.clone(), p.target.clone())));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .margin_right(16)
            .x_label_area_size(36)
            .y_label_area_size(62)
            .build_cartesian_2d(x0..x1, 0.0..hi)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("batch bytes (log2)")
            .y_desc(y_desc)
            .x_label_formatter(&batch_label)
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(&e)?;
        let mut any_missing = false;
        for (li, (series, target)) in lines.iter().enumerate() {
            let c = color(li);
            let mut pts: Vec<&PointResult> = points
                .iter()
                .filter(|p| &p.series == series && &p.target == target)
                .collect();
            pts.sort_by_key(|p| p.batch_bytes);
            let x = |p: &PointResult| (p.batch_bytes.max(1) as f64).log2();
            let data: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| y(p).filter(|v| v.is_finite()).map(|v| (x(p), v)))
                .collect();
            let style = c.stroke_width(2);
            let first = pts.first().map(|p| st.target(p) == 0).unwrap_or(true);
            let anno = if first {
                chart.draw_series(LineSeries::new(data.clone(), style))
            } else {
                chart.draw_series(DashedLineSeries::new(data.clone(), 6, 4, style))
            }
            .map_err(&e)?;
            let label = match pts.first() {
                Some(p) => st.name(p, false),
                None => series.clone(),
            };
            anno.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
            });
            chart
                .draw_series(data.iter().map(|&pt| Circle::new(pt, 3, c.filled())))
                .map_err(&e)?;
            // A point with no figure (no knee found, CPU not measured) is
            // a red cross on the axis, not a gap nobody notices.
            let missing: Vec<(f64, f64)> = pts
                .iter()
                .filter(|p| y(p).is_none_or(|v| !v.is_finite()))
                .map(|p| (x(p), 0.0))
                .collect();
            any_missing |= !missing.is_empty();
            chart
                .draw_series(
                    missing
                        .iter()
                        .map(|&pt| Cross::new(pt, 6, RED.stroke_width(2))),
                )
                .map_err(&e)?;
        }
        if any_missing {
            chart
                .draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())
                .map_err(&e)?
                .label("no figure")
                .legend(|(x, y)| Cross::new((x + 9, y), 4, RED.stroke_width(2)));
        }
        legend(&mut chart, 12).map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(Chart {
        file: format!("{name}.svg"),
        title: title.to_string(),
        caption,
        svg,
    })
}

/// The level closest to 80% of the knee of each point (every run of a
/// fixed-rate sweep): the runs the spectrum chart draws.
fn spectrum_runs<'a>(points: &[PointResult], runs: &'a [RunResult]) -> Vec<&'a RunResult> {
    if points.is_empty() {
        return runs.iter().collect();
    }
    points
        .iter()
        .filter_map(|p| {
            level_runs(p, runs).into_iter().min_by(|a, b| {
                let d = |r: &RunResult| (r.level.unwrap_or(0.8) - 0.8).abs();
                d(a).total_cmp(&d(b))
            })
        })
        .collect()
}

/// The full percentile spectrum of end-to-end latency, one panel per
/// series and one line per batch size (HdrHistogram's classic view).
fn spectrum_chart(points: &[PointResult], runs: &[RunResult]) -> Result<Chart, PlotError> {
    let name = "percentiles-e2e";
    let e = perr::<E>(name);
    let chosen = spectrum_runs(points, runs);
    let groups = unique(chosen.iter().map(|r| r.series.clone()));
    let n = groups.len().max(1);
    let (lo, hi) = log_axis(
        chosen
            .iter()
            .flat_map(|r| r.e2e_spectrum.iter().map(|s| s.us as f64 / US_PER_MS)),
    );
    let mut batches = unique(chosen.iter().map(|r| r.spec.batch_bytes));
    batches.sort_unstable();
    let targets = unique(chosen.iter().map(|r| r.target.clone()));
    let mut svg = String::new();
    {
        let w = (430 * n as u32).clamp(640, 1290);
        let root = SVGBackend::with_string(&mut svg, (w, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let panels = root.split_evenly((1, n));
        for (area, sname) in panels.iter().zip(groups.iter()) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("e2e by percentile: {sname}"), ("sans-serif", 14))
                .margin(8)
                .margin_right(20)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..5.0, (lo..hi).log_scale().base(2.0))
                .map_err(&e)?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("ms (log)")
                .x_labels(6)
                .x_label_formatter(&|x: &f64| match x.round() as i64 {
                    0 => "0%".into(),
                    1 => "90%".into(),
                    2 => "99%".into(),
                    3 => "99.9%".into(),
                    4 => "99.99%".into(),
                    5 => "99.999%".into(),
                    _ => String::new(),
                })
                .y_label_formatter(&ms_label)
                .light_line_style(WHITE)
                .draw()
                .map_err(&e)?;
            for r in chosen.iter().filter(|r| &r.series == sname) {
                if r.e2e_spectrum.is_empty() {
                    continue;
                }
                let bi = batches
                    .iter()
                    .position(|b| *b == r.spec.batch_bytes)
                    .unwrap_or(0);
                let c = if good(r) { color(bi) } else { RED };
                let data: Vec<(f64, f64)> = r
                    .e2e_spectrum
                    .iter()
                    .map(|s| {
                        (
                            (-(1.0 - s.percentile / 100.0).log10()).min(5.0),
                            s.us as f64 / US_PER_MS,
                        )
                    })
                    .collect();
                let first = targets.first() == Some(&r.target);
                let anno = if first {
                    chart.draw_series(LineSeries::new(data, c.stroke_width(2)))
                } else {
                    chart.draw_series(DashedLineSeries::new(data, 6, 4, c.stroke_width(2)))
                }
                .map_err(&e)?;
                let mut label = format_size(r.spec.batch_bytes as u64);
                if targets.len() > 1 {
                    label = format!("{label} {}", r.target);
                }
                if !good(r) {
                    label.push_str(" (NOT SUSTAINED/FAILED)");
                }
                anno.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            }
            legend(&mut chart, 11).map_err(&e)?;
        }
        root.present().map_err(&e)?;
    }
    let at = if points.is_empty() {
        "of each run".to_string()
    } else {
        "at the load level nearest 80% of each point's knee".to_string()
    };
    Ok(Chart {
        file: format!("{name}.svg"),
        title: format!("End-to-end latency by percentile, {at}"),
        caption: "The whole distribution in ms (log) against the percentile (90%, 99%, 99.9%… on a log \
                  scale of 1 − percentile). A line that rises steeply at the right has a tail far above \
                  its median; a line in red did not hold its rate or failed a check."
            .into(),
        svg,
    })
}

/// Per-second acked rate and e2e p99 of every latency run, back to back:
/// shows warm-up, stalls and drains that summary figures hide.
fn timeline_chart(runs: &[RunResult]) -> Result<Chart, PlotError> {
    let name = "timeline";
    let e = perr::<E>(name);
    let mut offset = 0.0;
    type Series = Vec<(f64, f64)>;
    // Per run: acked/s, e2e p99, and stalled seconds.
    let mut lines: Vec<(Series, Series, Series)> = Vec::new();
    let mut starts = Vec::new();
    for r in runs {
        starts.push(offset);
        let rate: Series = r
            .timeseries
            .iter()
            .map(|s| (offset + s.t_s, s.acked_per_s))
            .collect();
        let p99: Series = r
            .timeseries
            .iter()
            .filter(|s| s.e2e_p99_us > 0)
            .map(|s| (offset + s.t_s, s.e2e_p99_us as f64 / US_PER_MS))
            .collect();
        // A measured second acknowledging less than half the target rate.
        let stalls: Series = r
            .timeseries
            .iter()
            .filter(|s| {
                s.phase == "measure"
                    && r.target_rate > 0
                    && s.acked_per_s < 0.5 * r.target_rate as f64
            })
            .map(|s| (offset + s.t_s, s.acked_per_s))
            .collect();
        offset += r.timeseries.last().map(|s| s.t_s).unwrap_or(0.0);
        lines.push((rate, p99, stalls));
    }
    let tmax = offset.max(1.0);
    let rmax = lines
        .iter()
        .flat_map(|(r, _, _)| r.iter().map(|v| v.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let (lmin, lmax) = log_axis(lines.iter().flat_map(|(_, l, _)| l.iter().map(|v| v.1)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1260, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let (top, bottom) = root.split_vertically(240);
        let mut c1 = ChartBuilder::on(&top)
            .caption(
                "acknowledged msg/s, per second (runs back to back)",
                ("sans-serif", 15),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..rmax)
            .map_err(&e)?;
        c1.configure_mesh()
            .x_desc("s")
            .y_desc("msg/s")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(&e)?;
        let mut c2 = ChartBuilder::on(&bottom)
            .caption("end-to-end p99 per second (ms, log)", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, (lmin..lmax).log_scale().base(2.0))
            .map_err(&e)?;
        c2.configure_mesh()
            .x_desc("s")
            .y_desc("ms")
            .y_label_formatter(&ms_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(&e)?;
        // Number each run's segment (its row in the latency table).
        c1.draw_series(starts.iter().enumerate().map(|(i, &t)| {
            Text::new(
                format!("{}", i + 1),
                (t + 0.2, rmax * 0.97),
                ("sans-serif", 10).into_font().color(&color(i)),
            )
        }))
        .map_err(&e)?;
        for (i, (rate, p99, stalls)) in lines.into_iter().enumerate() {
            let c = color(i);
            c1.draw_series(LineSeries::new(rate, c.stroke_width(2)))
                .map_err(&e)?;
            c1.draw_series(
                stalls
                    .iter()
                    .map(|&pt| Cross::new(pt, 5, RED.stroke_width(2))),
            )
            .map_err(&e)?;
            c2.draw_series(LineSeries::new(p99, c.stroke_width(2)))
                .map_err(&e)?;
        }
        root.present().map_err(&e)?;
    }
    Ok(Chart {
        file: format!("{name}.svg"),
        title: "Per-second time series of every latency run".into(),
        caption: "Each latency run's acknowledged messages per second (top) and end-to-end p99 per \
                  second in ms (bottom, log), runs back to back in the order of the latency table \
                  (numbers at the top). Each run starts with its warm-up and ends with its drain. A red \
                  cross marks a measured second that acknowledged less than half the target rate: a \
                  stall."
            .into(),
        svg,
    })
}

/// Every chart for a report: the sweep's charts when there are points,
/// the spectrum and the timeline always.
pub fn render_all(points: &[PointResult], runs: &[RunResult]) -> Result<Vec<Chart>, PlotError> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let mut charts = Vec::new();
    if !points.is_empty() {
        charts.push(tradeoff_chart(points, runs, "e2e")?);
        charts.push(tradeoff_chart(points, runs, "publish")?);
        if points.iter().any(|p| p.mode == "knee") {
            charts.push(per_batch_chart(
                points,
                "knee",
                "Max sustainable throughput vs batch size",
                "MiB/s (uncompressed payload)",
                &|p| p.knee.map(|k| k.mib_per_s),
                "The highest open-loop rate each setting held (acknowledged and consumed within 2% of \
                 the target, publish delay bounded), in MiB/s of uncompressed payload, against the \
                 producer's batch size (log2). One line per codec/acks setting (dashed: the second \
                 target). Read: how much throughput a bigger batch or a codec buys. A red cross on \
                 the axis: no rate held."
                    .into(),
            )?);
        }
        charts.push(per_batch_chart(
            points,
            "broker-cpu",
            "Broker CPU seconds per GB moved vs batch size",
            "CPU s / GB (in + out)",
            &|p| p.broker_cpu_s_per_gb,
            "Broker CPU seconds per GB produced plus consumed, at the highest load level that held. \
             Lower is cheaper; small batches pay per request. A red cross: not measured (a remote \
             broker without pid=) or no level held."
                .into(),
        )?);
    }
    // Without consumers there is no end-to-end latency to draw.
    if spectrum_runs(points, runs)
        .iter()
        .any(|r| !r.e2e_spectrum.is_empty())
    {
        charts.push(spectrum_chart(points, runs)?);
    }
    charts.push(timeline_chart(runs)?);
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(ms_label(&0.125), "0.125");
        assert_eq!(ms_label(&0.25), "0.25");
        assert_eq!(ms_label(&0.5), "0.5");
        assert_eq!(ms_label(&4.0), "4");
        assert_eq!(ms_label(&1.5), "1.5");
        assert_eq!(batch_label(&10.0), "1k");
        assert_eq!(batch_label(&20.0), "1m");
        assert_eq!(batch_label(&10.5), "");
    }

    #[test]
    fn log_axes_are_finite_whatever_the_data() {
        // No data at all (a run without consumers has no e2e latency).
        assert_eq!(log_axis([]), (1e-3, 1.0));
        assert_eq!(log_axis([0.0, f64::INFINITY, f64::NAN, -1.0]), (1e-3, 1.0));
        let (lo, hi) = log_axis([2.0, 200.0]);
        assert!((lo - 2.0 / 1.5).abs() < 1e-9 && (hi - 300.0).abs() < 1e-9);
        // One value: still a decade wide.
        let (lo, hi) = log_axis([5.0]);
        assert!(lo < 5.0 && hi >= lo * 10.0);
    }
}
