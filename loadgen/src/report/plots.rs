//! Charts, rendered to SVG with plotters (no fonts or image codecs needed;
//! the browser draws the text), so index.html can inline them.
//!
//! Batch size is plotted on a log2 axis (labels 1k, 4k, 16k…), latency on
//! a log axis (tails span decades). Each series is one combination of the
//! non-batch settings ("lz4 acks=1").

use crate::report::hgrm::US_PER_MS;
use crate::result::RunResult;
use crate::units::format_size;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;

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
    /// File name, e.g. "latency-e2e.svg".
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// Points grouped by series, each sorted by batch size.
fn series(points: &[RunResult]) -> BTreeMap<String, Vec<&RunResult>> {
    let mut m: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for p in points {
        m.entry(p.series.clone()).or_default().push(p);
    }
    for v in m.values_mut() {
        v.sort_by_key(|p| p.spec.batch_bytes);
    }
    m
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

fn log2_range(points: &[RunResult]) -> (f64, f64) {
    let xs: Vec<f64> = points
        .iter()
        .map(|p| (p.spec.batch_bytes.max(1) as f64).log2())
        .collect();
    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
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

/// Lines of `y(point)` against batch size, one per series, on `area`.
#[allow(clippy::too_many_arguments)]
fn batch_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart_name: &str,
    caption: &str,
    y_desc: &str,
    points: &[RunResult],
    y: &dyn Fn(&RunResult) -> f64,
    log_y: bool,
    legend: Option<SeriesLabelPosition>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let e = perr::<DrawingAreaErrorKind<DB::ErrorType>>(chart_name);
    let (x0, x1) = log2_range(points);
    let ys: Vec<f64> = points.iter().map(y).filter(|v| v.is_finite()).collect();
    let ymax = ys.iter().cloned().fold(0.0, f64::max);
    let groups = series(points);
    let mut b = ChartBuilder::on(area);
    b.caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("batch bytes")
                .y_desc(y_desc)
                .x_label_formatter(&batch_label)
                .y_label_formatter(&ms_label)
                .y_labels(8)
                .light_line_style(if log_y {
                    WHITE
                } else {
                    RGBColor(242, 242, 242)
                })
                .draw()
                .map_err(&e)?;
            for (i, (name, pts)) in groups.iter().enumerate() {
                let c = color(i);
                let data: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|p| ((p.spec.batch_bytes.max(1) as f64).log2(), y(p)))
                    .filter(|(_, v)| v.is_finite() && (!log_y || *v > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(data.clone(), c.stroke_width(2)))
                    .map_err(&e)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(
                        data.iter()
                            .map(|&(x, v)| Circle::new((x, v), 3, c.filled())),
                    )
                    .map_err(&e)?;
            }
            if let Some(pos) = legend {
                chart
                    .configure_series_labels()
                    .position(pos)
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(200, 200, 200))
                    .label_font(("sans-serif", 12))
                    .draw()
                    .map_err(&e)?;
            }
        }};
    }
    if log_y {
        let (lo, hi) = log_axis(ys.iter().copied());
        draw!(b
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale().base(2.0))
            .map_err(&e)?);
    } else {
        let hi = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
        draw!(b.build_cartesian_2d(x0..x1, 0.0..hi).map_err(&e)?);
    }
    Ok(())
}

/// Latency percentiles vs batch size: three panels (p50, p99, p99.9).
fn latency_chart(points: &[RunResult], kind: &str) -> Result<Chart, PlotError> {
    let name = format!("latency-{kind}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1260, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(perr(&name))?;
        let panels = root.split_evenly((1, 3));
        let pick = |p: &RunResult| match kind {
            "publish" => p.publish,
            _ => p.e2e,
        };
        type Pick = fn(&crate::stats::LatencySummary) -> u64;
        let defs: [(&str, Pick); 3] = [
            ("p50", |s| s.p50_us),
            ("p99", |s| s.p99_us),
            ("p99.9", |s| s.p99_9_us),
        ];
        for (i, (area, (pname, f))) in panels.iter().zip(defs.iter()).enumerate() {
            let y = |p: &RunResult| f(&pick(p)) as f64 / US_PER_MS;
            batch_lines(
                area,
                &name,
                &format!("{kind} latency {pname}"),
                "ms (log)",
                points,
                &y,
                true,
                (i == 0).then_some(SeriesLabelPosition::LowerRight),
            )?;
        }
        root.present().map_err(perr(&name))?;
    }
    let what = if kind == "publish" {
        "Publish latency (intended send → ack)"
    } else {
        "End-to-end latency (intended send → consumer receipt)"
    };
    Ok(Chart {
        file: format!("{name}.svg"),
        title: format!("{what} vs batch size"),
        svg,
    })
}

fn single_chart(
    points: &[RunResult],
    name: &str,
    title: &str,
    y_desc: &str,
    y: &dyn Fn(&RunResult) -> f64,
    legend: SeriesLabelPosition,
) -> Result<Chart, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (620, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(perr(name))?;
        batch_lines(&root, name, title, y_desc, points, y, false, Some(legend))?;
        root.present().map_err(perr(name))?;
    }
    Ok(Chart {
        file: format!("{name}.svg"),
        title: title.to_string(),
        svg,
    })
}

/// The full percentile spectrum of end-to-end latency, one panel per
/// series and one line per batch size (HdrHistogram's classic view).
fn spectrum_chart(points: &[RunResult]) -> Result<Chart, PlotError> {
    let name = "percentiles-e2e";
    let groups = series(points);
    let n = groups.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420 * n as u32, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(perr(name))?;
        let panels = root.split_evenly((1, n));
        let e = perr::<DrawingAreaErrorKind<std::io::Error>>(name);
        let _ = &e;
        // One y range for all panels so they compare at a glance.
        let all: Vec<f64> = points
            .iter()
            .filter(|p| !p.histograms.e2e.is_empty())
            .flat_map(|p| [p.histograms.e2e.min() as f64, p.histograms.e2e.max() as f64])
            .map(|v| v / US_PER_MS)
            .collect();
        let (lo, hi) = log_axis(all);
        for (area, (sname, pts)) in panels.iter().zip(groups.iter()) {
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("e2e latency by percentile: {sname}"),
                    ("sans-serif", 15),
                )
                .margin(8)
                .margin_right(28)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..5.0, (lo..hi).log_scale().base(2.0))
                .map_err(|x| PlotError {
                    chart: name.into(),
                    detail: x.to_string(),
                })?;
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
                .map_err(|x| PlotError {
                    chart: name.into(),
                    detail: x.to_string(),
                })?;
            for (i, p) in pts.iter().enumerate() {
                let h = &p.histograms.e2e;
                if h.is_empty() {
                    continue;
                }
                let c = color(i);
                let data: Vec<(f64, f64)> = h
                    .iter_quantiles(5)
                    .filter(|v| v.quantile_iterated_to() < 1.0)
                    .map(|v| {
                        (
                            (-(1.0 - v.quantile_iterated_to()).log10()).min(5.0),
                            (v.value_iterated_to().max(1) as f64) / US_PER_MS,
                        )
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(data, c.stroke_width(2)))
                    .map_err(|x| PlotError {
                        chart: name.into(),
                        detail: x.to_string(),
                    })?
                    .label(format_size(p.spec.batch_bytes as u64))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(|x| PlotError {
                    chart: name.into(),
                    detail: x.to_string(),
                })?;
        }
        root.present().map_err(perr(name))?;
    }
    Ok(Chart {
        file: format!("{name}.svg"),
        title: "End-to-end latency percentile spectrum (per codec, one line per batch size)".into(),
        svg,
    })
}

/// Per-second acked rate and e2e p99 over the whole sweep, points back to
/// back: shows warm-up, stalls and drains that summary figures hide.
fn timeline_chart(points: &[RunResult]) -> Result<Chart, PlotError> {
    let name = "timeline";
    let mut svg = String::new();
    let mut offset = 0.0;
    // Per point: (acked/s, e2e p99) series.
    type Series = Vec<(f64, f64)>;
    let mut lines: Vec<(Series, Series)> = Vec::new();
    let mut starts = Vec::new();
    for p in points {
        starts.push(offset);
        let rate: Vec<(f64, f64)> = p
            .timeseries
            .iter()
            .map(|s| (offset + s.t_s, s.acked_per_s))
            .collect();
        let p99: Vec<(f64, f64)> = p
            .timeseries
            .iter()
            .filter(|s| s.e2e_p99_us > 0)
            .map(|s| (offset + s.t_s, s.e2e_p99_us as f64 / US_PER_MS))
            .collect();
        offset += p.timeseries.last().map(|s| s.t_s).unwrap_or(0.0);
        lines.push((rate, p99));
    }
    let tmax = offset.max(1.0);
    let rmax = lines
        .iter()
        .flat_map(|(r, _)| r.iter().map(|v| v.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let (lmin, lmax) = log_axis(lines.iter().flat_map(|(_, l)| l.iter().map(|v| v.1)));
    let err = |x: &dyn std::fmt::Display| PlotError {
        chart: name.into(),
        detail: x.to_string(),
    };
    {
        let root = SVGBackend::with_string(&mut svg, (1260, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| err(&x))?;
        let (top, bottom) = root.split_vertically(240);
        let mut c1 = ChartBuilder::on(&top)
            .caption(
                "acked msg/s per second (points back to back)",
                ("sans-serif", 15),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..rmax)
            .map_err(|x| err(&x))?;
        c1.configure_mesh()
            .x_desc("s")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|x| err(&x))?;
        let mut c2 = ChartBuilder::on(&bottom)
            .caption("end-to-end p99 per second (ms, log)", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, (lmin..lmax).log_scale().base(2.0))
            .map_err(|x| err(&x))?;
        c2.configure_mesh()
            .x_desc("s")
            .y_label_formatter(&ms_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|x| err(&x))?;
        // Number each point's segment (the table's row order).
        c1.draw_series(starts.iter().enumerate().map(|(i, &t)| {
            Text::new(
                format!("{}", i + 1),
                (t + 0.3, rmax * 0.97),
                ("sans-serif", 11).into_font().color(&color(i)),
            )
        }))
        .map_err(|x| err(&x))?;
        for (i, (rate, p99)) in lines.into_iter().enumerate() {
            let c = color(i);
            c1.draw_series(LineSeries::new(rate, c.stroke_width(2)))
                .map_err(|x| err(&x))?;
            c2.draw_series(LineSeries::new(p99, c.stroke_width(2)))
                .map_err(|x| err(&x))?;
        }
        root.present().map_err(|x| err(&x))?;
    }
    Ok(Chart {
        file: format!("{name}.svg"),
        title: "Timeline".into(),
        svg,
    })
}

/// Every chart for a set of points.
pub fn render_all(points: &[RunResult]) -> Result<Vec<Chart>, PlotError> {
    if points.is_empty() {
        return Ok(Vec::new());
    }
    let mut charts = vec![
        latency_chart(points, "e2e")?,
        latency_chart(points, "publish")?,
        single_chart(
            points,
            "throughput",
            "Produced throughput vs batch size",
            "MiB/s (uncompressed payload)",
            &|p| p.produced.mib_per_s,
            SeriesLabelPosition::LowerRight,
        )?,
        single_chart(
            points,
            "compression",
            "Achieved compression ratio vs batch size",
            "uncompressed / compressed",
            &|p| p.compression.ratio,
            SeriesLabelPosition::LowerRight,
        )?,
        single_chart(
            points,
            "broker-cpu",
            "Broker CPU seconds per GB moved (in + out)",
            "CPU s / GB",
            &|p| p.cpu.broker_cpu_s_per_gb.unwrap_or(f64::NAN),
            SeriesLabelPosition::UpperRight,
        )?,
    ];
    // Without consumers there is no end-to-end latency to draw.
    if points.iter().any(|p| !p.histograms.e2e.is_empty()) {
        charts.push(spectrum_chart(points)?);
    }
    charts.push(timeline_chart(points)?);
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
