//! `loadgen compare A/report.json B/report.json`: the ratios B / A of two
//! reports, point by point and level by level (throughput and each latency
//! percentile), flagging differences larger than the run-to-run spread.
//!
//! **Spread.** A knee sweep measures one level twice per point
//! (`KneeSettings::repeat_level`); each point's `spread` holds the relative
//! differences |a − b| / mean of those two runs. For each figure the
//! threshold is the largest spread seen in either report (at least 2%): a
//! difference beyond it is more than this machine's noise between two runs
//! of the same setting. Reports without repeats use `--threshold`.
//!
//! Points are matched by label (the matrix values, prefixed with the
//! target name when a report has several targets), level runs by their
//! fraction of the knee; a fixed-rate point's single run matches the
//! other's. The reports are read as JSON values (schema
//! `loadgen-report/2`), so a report from an older loadgen is refused with
//! its schema named rather than misread.

use crate::result::rel_diff;
use serde_json::Value;
use std::fmt::Write;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{which}: schema '{found}', expected '{expected}' (written by a different loadgen)")]
    Schema {
        which: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("{which}: no '{field}' in the report")]
    Missing {
        which: &'static str,
        field: &'static str,
    },
    #[error("the reports have no point in common (labels differ: A has {a:?}…, B has {b:?}…)")]
    NothingInCommon { a: String, b: String },
}

/// The figures compared, with their key in a run and in a spread.
const FIGURES: [(&str, &str, &str); 7] = [
    ("msg/s", "produced.msgs_per_s", "msgs_per_s"),
    ("pub p50", "publish.p50_us", "publish_p50"),
    ("pub p99", "publish.p99_us", "publish_p99"),
    ("pub p99.9", "publish.p99_9_us", "publish_p99_9"),
    ("e2e p50", "e2e.p50_us", "e2e_p50"),
    ("e2e p99", "e2e.p99_us", "e2e_p99"),
    ("e2e p99.9", "e2e.p99_9_us", "e2e_p99_9"),
];

/// The smallest threshold: differences under 2% are never flagged.
pub const MIN_THRESHOLD: f64 = 0.02;

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn num(v: &Value, path: &str) -> Option<f64> {
    get(v, path).and_then(Value::as_f64)
}

fn check(which: &'static str, r: &Value) -> Result<(), CompareError> {
    let found = r.get("schema").and_then(Value::as_str).unwrap_or("none");
    if found != super::json::SCHEMA {
        return Err(CompareError::Schema {
            which,
            found: found.into(),
            expected: super::json::SCHEMA,
        });
    }
    for field in ["points", "runs"] {
        if !r.get(field).is_some_and(Value::is_array) {
            return Err(CompareError::Missing { which, field });
        }
    }
    Ok(())
}

/// Largest spread per figure over a report's points; None without repeats.
fn spreads(r: &Value) -> Option<[f64; 7]> {
    let mut out = [0.0f64; 7];
    let mut any = false;
    for p in r["points"].as_array()? {
        let Some(s) = p.get("spread").filter(|s| s.is_object()) else {
            continue;
        };
        any = true;
        for (i, (_, _, key)) in FIGURES.iter().enumerate() {
            out[i] = out[i].max(num(s, key).unwrap_or(0.0));
        }
    }
    any.then_some(out)
}

/// A point's level runs as (level key, run), repeats left out.
fn levels<'a>(r: &'a Value, p: &Value) -> Vec<(String, &'a Value)> {
    let runs = r["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut v: Vec<(String, &Value)> = p["runs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| runs.get(i.as_u64()? as usize))
        .filter(|run| !run["repeat"].as_bool().unwrap_or(false))
        .map(|run| {
            let key = match run["level"].as_f64() {
                Some(l) => format!("{:.0}%", l * 100.0),
                None => "fixed".into(),
            };
            (key, run)
        })
        .collect();
    v.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(&b.0)));
    v
}

fn held(run: &Value) -> bool {
    run["passed"].as_bool().unwrap_or(false)
        && run["sustain"]["sustained"].as_bool().unwrap_or(false)
}

/// Compare two parsed reports; the text to print.
pub fn compare(a: &Value, b: &Value, default_threshold: f64) -> Result<String, CompareError> {
    check("A", a)?;
    check("B", b)?;
    let (sa, sb) = (spreads(a), spreads(b));
    let (threshold, basis) = match (sa, sb) {
        (None, None) => (
            [default_threshold.max(MIN_THRESHOLD); 7],
            format!(
                "neither report repeated a level, so differences beyond {:.0}% (--threshold) are flagged",
                default_threshold.max(MIN_THRESHOLD) * 100.0
            ),
        ),
        _ => {
            let mut t = [MIN_THRESHOLD; 7];
            for s in [sa, sb].into_iter().flatten() {
                for i in 0..7 {
                    t[i] = t[i].max(s[i]);
                }
            }
            (
                t,
                "flagged (!) where |B − A| / mean exceeds the largest run-to-run spread of that figure in either report's repeated level (at least 2%)".into(),
            )
        }
    };
    let label = |p: &Value| p["label"].as_str().unwrap_or("").to_string();
    let pa = a["points"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let pb = b["points"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut rows: Vec<[String; 9]> = Vec::new();
    let cell = |x: Option<f64>, y: Option<f64>, t: f64| match (x, y) {
        (Some(x), Some(y)) if x > 0.0 => {
            let flag = if rel_diff(x, y) > t { "!" } else { "" };
            format!("{:.2}{flag}", y / x)
        }
        _ => "-".into(),
    };
    let mut matched = 0;
    let mut flagged = 0;
    for p in pa {
        let Some(q) = pb.iter().find(|q| label(q) == label(p)) else {
            continue;
        };
        matched += 1;
        let ka = num(p, "knee.msgs_per_s");
        let kb = num(q, "knee.msgs_per_s");
        if ka.is_some() || kb.is_some() {
            let c = cell(ka, kb, threshold[0]);
            flagged += usize::from(c.ends_with('!'));
            let mut row: [String; 9] = Default::default();
            row[0] = label(p);
            row[1] = "knee".into();
            row[2] = c;
            for r in row.iter_mut().skip(3) {
                *r = "".into();
            }
            rows.push(row);
        }
        let lb = levels(b, q);
        for (key, ra) in levels(a, p) {
            let Some((_, rb)) = lb.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let mut row: [String; 9] = Default::default();
            row[0] = label(p);
            row[1] = match (held(ra), held(rb)) {
                (true, true) => key,
                (false, true) => format!("{key} (A not held)"),
                (true, false) => format!("{key} (B not held)"),
                (false, false) => format!("{key} (neither held)"),
            };
            for (i, (_, path, _)) in FIGURES.iter().enumerate() {
                let c = cell(num(ra, path), num(rb, path), threshold[i]);
                flagged += usize::from(c.ends_with('!'));
                row[2 + i] = c;
            }
            rows.push(row);
        }
    }
    if matched == 0 {
        return Err(CompareError::NothingInCommon {
            a: pa.first().map(label).unwrap_or_default(),
            b: pb.first().map(label).unwrap_or_default(),
        });
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "B / A, point by point ({matched} points in common; {flagged} figures flagged)"
    );
    let _ = writeln!(out, "{basis}");
    let _ = writeln!(
        out,
        "thresholds: {}",
        FIGURES
            .iter()
            .zip(threshold)
            .map(|((n, _, _), t)| format!("{n} {:.0}%", t * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let lw = rows.iter().map(|r| r[0].len()).max().unwrap_or(5).max(5);
    let kw = rows.iter().map(|r| r[1].len()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        out,
        "{:<lw$}  {:<kw$}  {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "point",
        "level",
        "msg/s",
        "pub p50",
        "pub p99",
        "pub p99.9",
        "e2e p50",
        "e2e p99",
        "e2e p99.9"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<lw$}  {:<kw$}  {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
        );
    }
    let _ = writeln!(
        out,
        "msg/s: > 1 means B moved more; latency: > 1 means B was slower. 'not held' levels include queueing in the producer."
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(knee: f64, p99: u64, spread: f64) -> Value {
        json!({
            "schema": super::super::json::SCHEMA,
            "points": [{"label": "64k none acks=1", "knee": {"msgs_per_s": knee}, "runs": [0, 1],
                        "spread": {"msgs_per_s": spread, "publish_p50": spread, "publish_p99": spread,
                                   "publish_p99_9": spread, "e2e_p50": spread, "e2e_p99": spread,
                                   "e2e_p99_9": spread}}],
            "runs": [
                {"level": 0.5, "repeat": false, "passed": true, "sustain": {"sustained": true},
                 "produced": {"msgs_per_s": knee / 2.0},
                 "publish": {"p50_us": 1000, "p99_us": p99, "p99_9_us": p99},
                 "e2e": {"p50_us": 1000, "p99_us": p99, "p99_9_us": p99}},
                {"level": 0.5, "repeat": true, "passed": true, "sustain": {"sustained": true},
                 "produced": {"msgs_per_s": knee / 2.0},
                 "publish": {"p50_us": 1000, "p99_us": p99, "p99_9_us": p99},
                 "e2e": {"p50_us": 1000, "p99_us": p99, "p99_9_us": p99}}
            ]
        })
    }

    #[test]
    fn ratios_and_flags_follow_the_spread() {
        let a = report(100_000.0, 4000, 0.05);
        let b = report(150_000.0, 4100, 0.05);
        let out = compare(&a, &b, 0.1).unwrap();
        // The knee moved 1.5x, beyond a 5% spread: flagged.
        assert!(out.contains("1.50!"), "{out}");
        // The percentiles moved 2.5%, within the 5% spread: not flagged.
        assert!(out.contains("1.02") || out.contains("1.03"), "{out}");
        assert!(!out.contains("1.02!") && !out.contains("1.03!"), "{out}");
        // With a 1% spread the 2% floor applies, and 2.5% is flagged.
        let (a, b) = (report(100_000.0, 4000, 0.01), report(100_000.0, 4100, 0.01));
        let out = compare(&a, &b, 0.1).unwrap();
        assert!(out.contains("1.02!") || out.contains("1.03!"), "{out}");
        assert!(out.contains("1 points in common"), "{out}");
    }

    #[test]
    fn refuses_other_schemas_and_disjoint_reports() {
        let a = report(1.0, 1, 0.0);
        let old = json!({"schema": "loadgen-report/1", "points": []});
        assert!(matches!(
            compare(&old, &a, 0.1),
            Err(CompareError::Schema { .. })
        ));
        let mut b = report(1.0, 1, 0.0);
        b["points"][0]["label"] = json!("1k zstd acks=1");
        assert!(matches!(
            compare(&a, &b, 0.1),
            Err(CompareError::NothingInCommon { .. })
        ));
    }
}
