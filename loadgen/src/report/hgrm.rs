//! HdrHistogram's percentile-distribution text format (`.hgrm`), as written
//! by Java's `AbstractHistogram.outputPercentileDistribution` and read by
//! HistogramLogProcessor's consumers and the hdrhistogram.github.io plotter:
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.143 0.000000000000          1           1.00
//!        ...
//!       12.351 1.000000000000      10000
//! #[Mean    =        0.253, StdDeviation   =        0.085]
//! #[Max     =       12.351, Total count    =        10000]
//! #[Buckets =           20, SubBuckets     =         2048]
//! ```
//!
//! Values are written in milliseconds (recorded in µs, scaled by 1000),
//! with as many decimals as the histogram has significant digits; the last
//! row (percentile 1.0) has no fourth column, exactly as Java prints it.

use crate::stats::Hist;
use std::fmt::Write;

/// Recorded unit (µs) per output unit (ms).
pub const US_PER_MS: f64 = 1000.0;
/// Java's default resolution of the percentile iteration.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HgrmError {
    #[error("line {line}: {detail}")]
    Line { line: usize, detail: String },
    #[error("missing footer line '{0}'")]
    MissingFooter(&'static str),
    #[error("no percentile rows")]
    Empty,
}

/// Render `h` (values in µs) as `.hgrm` text with values in ms.
pub fn render(h: &Hist) -> String {
    let digits = h.sigfig() as usize;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total: u64 = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / US_PER_MS;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
            }
        }
    }
    let mean = if h.is_empty() { 0.0 } else { h.mean() } / US_PER_MS;
    let stdev = if h.is_empty() { 0.0 } else { h.stdev() } / US_PER_MS;
    let max = h.max() as f64 / US_PER_MS;
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.digits$}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// Sub-buckets per bucket for a histogram with unit resolution at the low
/// end: the power of two covering 2 * 10^sigfig (as Java computes it).
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(sigfig as u32);
    largest.next_power_of_two()
}

/// One row of a parsed file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub value: f64,
    pub percentile: f64,
    pub total_count: u64,
}

/// A parsed `.hgrm` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub rows: Vec<Row>,
    pub mean: f64,
    pub stddev: f64,
    pub max: f64,
    pub total_count: u64,
    pub buckets: u64,
    pub sub_buckets: u64,
}

impl Parsed {
    /// The smallest value at or above percentile `p` (0..1), like a reader would look it up.
    pub fn value_at(&self, p: f64) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.percentile >= p)
            .map(|r| r.value)
    }
}

/// Parse `.hgrm` text, checking that rows are well-formed and monotonic.
pub fn parse(text: &str) -> Result<Parsed, HgrmError> {
    let mut rows = Vec::new();
    let (mut mean, mut stddev, mut max, mut total, mut buckets, mut subs) =
        (None, None, None, None, None, None);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let bad = |d: &str| HgrmError::Line {
            line: n,
            detail: d.to_string(),
        };
        let t = line.trim();
        if t.is_empty() || t.starts_with("Value") {
            continue;
        }
        if let Some(inner) = t.strip_prefix("#[").and_then(|s| s.strip_suffix(']')) {
            for part in inner.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| bad("footer without '='"))?;
                let v = v.trim();
                let f = || v.parse::<f64>().map_err(|_| bad("footer value"));
                let u = || v.parse::<u64>().map_err(|_| bad("footer count"));
                match k.trim() {
                    "Mean" => mean = Some(f()?),
                    "StdDeviation" => stddev = Some(f()?),
                    "Max" => max = Some(f()?),
                    "Total count" => total = Some(u()?),
                    "Buckets" => buckets = Some(u()?),
                    "SubBuckets" => subs = Some(u()?),
                    _ => return Err(bad("unknown footer field")),
                }
            }
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = t.split_whitespace().collect();
        if cols.len() != 3 && cols.len() != 4 {
            return Err(bad("expected 3 or 4 columns"));
        }
        let value: f64 = cols[0].parse().map_err(|_| bad("value"))?;
        let percentile: f64 = cols[1].parse().map_err(|_| bad("percentile"))?;
        let total_count: u64 = cols[2].parse().map_err(|_| bad("total count"))?;
        if !(0.0..=1.0).contains(&percentile) {
            return Err(bad("percentile outside 0..1"));
        }
        if let Some(prev) = rows.last() {
            let prev: &Row = prev;
            if percentile < prev.percentile || total_count < prev.total_count || value < prev.value
            {
                return Err(bad("rows are not monotonic"));
            }
        }
        if cols.len() == 4 {
            let inv: f64 = cols[3].parse().map_err(|_| bad("1/(1-Percentile)"))?;
            let expect = 1.0 / (1.0 - percentile);
            if (inv - expect).abs() > 0.01 + expect * 1e-6 {
                return Err(bad("1/(1-Percentile) does not match the percentile"));
            }
        }
        rows.push(Row {
            value,
            percentile,
            total_count,
        });
    }
    let parsed = Parsed {
        mean: mean.ok_or(HgrmError::MissingFooter("Mean"))?,
        stddev: stddev.ok_or(HgrmError::MissingFooter("StdDeviation"))?,
        max: max.ok_or(HgrmError::MissingFooter("Max"))?,
        total_count: total.ok_or(HgrmError::MissingFooter("Total count"))?,
        buckets: buckets.ok_or(HgrmError::MissingFooter("Buckets"))?,
        sub_buckets: subs.ok_or(HgrmError::MissingFooter("SubBuckets"))?,
        rows,
    };
    if parsed.total_count > 0 && parsed.rows.is_empty() {
        return Err(HgrmError::Empty);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;

    #[test]
    fn renders_java_layout_and_parses_back() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap(); // 10 µs .. 100 ms
        }
        let text = render(&h);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let first = lines.next().unwrap();
        assert_eq!(
            first,
            "       0.010 0.000000000000          1           1.00"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.total_count, 10_000);
        assert_eq!(p.sub_buckets, 2048);
        let last = p.rows.last().unwrap();
        assert_eq!(last.percentile, 1.0);
        assert_eq!(last.total_count, 10_000);
        // The last row has 3 columns, like Java's.
        let last_line = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert_eq!(last_line.split_whitespace().count(), 3);
        // p50 ≈ 50 ms, max ≈ 100 ms (3 significant digits).
        let p50 = p.value_at(0.5).unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((p.max - 100.0).abs() < 0.1, "{}", p.max);
        assert!((p.mean - 50.005).abs() < 0.1, "{}", p.mean);
    }

    #[test]
    fn empty_histogram_is_valid() {
        let p = parse(&render(&new_hist())).unwrap();
        assert_eq!(p.total_count, 0);
        assert!(p.rows.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("not a histogram").is_err());
        let mut h = new_hist();
        h.record(5).unwrap();
        let text = render(&h).replace("#[Buckets", "#[Nope");
        assert!(parse(&text).is_err());
        let swapped = "1.0 0.5 10 2.00\n0.5 0.6 11 2.50\n";
        assert!(matches!(parse(swapped), Err(HgrmError::Line { .. })));
    }
}
