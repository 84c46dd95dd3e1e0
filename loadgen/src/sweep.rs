//! A sweep: the same workload at every point of a settings matrix
//! (batch size × codec × acks × linger), on one or several targets, each
//! run on a fresh topic that is deleted afterwards (so no run reads or
//! pays for another's data).
//!
//! Each point is measured by [`Mode::Knee`] (default): a closed-loop
//! probe, a search for the highest open-loop rate that holds (see
//! [`crate::knee`]), then latency at fractions of that rate; or by
//! [`Mode::Fixed`]: one run at the workload's rate.
//!
//! The default matrix is sized for about three minutes of measurement on
//! a 2-core machine: 4 batch sizes × 2 codecs, each point a 1.5 s probe,
//! 4 search steps of 1.5 s and 5 level runs (10, 50, 80, 95% and 50%
//! again) of 2 s, plus about half a second of setup and drain per run:
//! 8 × (17.5 + 5) = 180 s by [`estimate_secs`]; the measured figure is in
//! the README.

use crate::knee::{KneeSettings, Search};
use crate::profile::MatrixOverrides;
use crate::report::{MatrixInfo, ReportError, Writer};
use crate::result::{Knee, PointResult, RunResult, Spread, Step};
use crate::runner::{self, RunEnv, RunError};
use crate::units::{format_count, format_size};
use crate::workload::WorkloadSpec;
use shardlog::format::Compression;
use shardlog::protocol::messages::Acks;
use std::sync::atomic::Ordering;

pub const DEFAULT_BATCH_BYTES: [u64; 4] = [1 << 10, 16 << 10, 64 << 10, 1 << 20];
pub const DEFAULT_CODECS: [Compression; 2] = [Compression::None, Compression::Zstd];

/// The base workload of a sweep when nothing overrides it: the run
/// defaults with a short window per level run (the rate is the knee's
/// business; `--fixed-rate` uses `rate`).
pub fn default_base() -> WorkloadSpec {
    WorkloadSpec {
        topic: "loadgen-sweep".into(),
        warmup_ms: 500,
        duration_ms: 1500,
        drain_timeout_ms: 5000,
        delete_topic_after: true,
        ..WorkloadSpec::default()
    }
}

/// The axes; every combination is one point.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub batch_bytes: Vec<u64>,
    pub compression: Vec<Compression>,
    pub acks: Vec<Acks>,
    pub linger_ms: Vec<u64>,
}

impl Matrix {
    /// Defaults for missing axes: the standard batch sizes and codecs, and
    /// the base workload's acks and linger.
    pub fn resolve(base: &WorkloadSpec, layers: &[&MatrixOverrides]) -> Matrix {
        let mut m = Matrix {
            batch_bytes: DEFAULT_BATCH_BYTES.to_vec(),
            compression: DEFAULT_CODECS.to_vec(),
            acks: vec![base.acks],
            linger_ms: vec![base.linger_ms],
        };
        for l in layers {
            if let Some(v) = &l.batch_bytes {
                m.batch_bytes = v.iter().map(|s| s.0).collect();
            }
            if let Some(v) = &l.compression {
                m.compression = v.clone();
            }
            if let Some(v) = &l.acks {
                m.acks = v.iter().map(|a| a.0).collect();
            }
            if let Some(v) = &l.linger_ms {
                m.linger_ms = v.clone();
            }
        }
        m
    }

    pub fn len(&self) -> usize {
        self.batch_bytes.len() * self.compression.len() * self.acks.len() * self.linger_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn info(&self) -> MatrixInfo {
        MatrixInfo {
            batch_bytes: self.batch_bytes.clone(),
            compression: self.compression.iter().map(|c| c.to_string()).collect(),
            acks: self.acks.iter().map(|a| a.to_string()).collect(),
            linger_ms: self.linger_ms.clone(),
        }
    }
}

/// One point to run.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub series: String,
    pub spec: WorkloadSpec,
}

/// Name of a point's series: its non-batch settings. Linger is named only
/// when it varies, to keep labels short.
fn series_name(c: Compression, acks: Acks, linger: u64, show_linger: bool) -> String {
    let mut s = format!("{c} acks={acks}");
    if show_linger {
        s.push_str(&format!(" linger={linger}ms"));
    }
    s
}

/// Expand the matrix. Order: acks, linger, codec, then batch size
/// ascending, so the table reads as one block per series.
pub fn points(base: &WorkloadSpec, m: &Matrix) -> Vec<Point> {
    let show_linger = m.linger_ms.len() > 1;
    let mut out = Vec::new();
    for &acks in &m.acks {
        for &linger in &m.linger_ms {
            for &codec in &m.compression {
                let mut batches = m.batch_bytes.clone();
                batches.sort_unstable();
                batches.dedup();
                for b in batches {
                    let i = out.len() + 1;
                    let series = series_name(codec, acks, linger, show_linger);
                    let spec = WorkloadSpec {
                        topic: format!("{}-{i}", base.topic),
                        batch_bytes: b as usize,
                        compression: codec,
                        acks,
                        linger_ms: linger,
                        ..base.clone()
                    };
                    out.push(Point {
                        label: format!("{} {series}", format_size(b)),
                        series,
                        spec,
                    });
                }
            }
        }
    }
    out
}

/// How each point is measured.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Find the knee, then measure latency at fractions of it.
    Knee(KneeSettings),
    /// One run per point at the workload's `rate` (the pre-knee sweep).
    Fixed,
}

/// Rough wall time of a sweep, for the banner: the workload time plus
/// about half a second per run for connections, topics and the drain.
pub fn estimate_secs(points: &[Point], mode: &Mode, targets: usize) -> f64 {
    const SETUP_S: f64 = 0.5;
    let per: f64 = points
        .iter()
        .map(|p| match mode {
            Mode::Fixed => (p.spec.warmup_ms + p.spec.duration_ms) as f64 / 1e3 + SETUP_S,
            Mode::Knee(k) => {
                k.secs_per_point(p.spec.warmup_ms, p.spec.duration_ms)
                    + (k.runs_per_point() + 1) as f64 * SETUP_S
            }
        })
        .sum();
    per * targets.max(1) as f64
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What a sweep measured: one [`PointResult`] per point and target, and
/// every latency run they refer to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub points: Vec<PointResult>,
    pub runs: Vec<RunResult>,
    pub interrupted: bool,
    /// Why the sweep stopped early (the broker went away or refused a
    /// topic, e.g. a full disk): what ran before is still reported.
    pub error: Option<String>,
}

/// One target of a sweep: its name is `env.target_name`.
pub type TargetEnv = RunEnv;

/// Run every point against every target. Point-major: each point is
/// measured on every target before the next point, and the targets' order
/// rotates from point to point, so slow drifts of the machine (another
/// process, the page cache, thermal state) hit each target equally.
///
/// A point that cannot run at all (broker gone, disk full) stops the
/// sweep with `Outcome::error` set, keeping what was measured; a point that
/// fails its checks or holds no rate does not stop it. With a `writer`, each
/// run's histograms are written as soon as it ends and then released, so
/// memory does not grow with the number of runs.
pub async fn run(
    points: &[Point],
    targets: &[TargetEnv],
    mode: &Mode,
    mut writer: Option<&mut Writer>,
) -> Result<Outcome, SweepError> {
    assert!(!targets.is_empty(), "a sweep needs a target");
    let multi = targets.len() > 1;
    let total = points.len() * targets.len();
    let mut out = Outcome::default();
    'points: for (i, p) in points.iter().enumerate() {
        let n = targets.len();
        for k in 0..n {
            let env = &targets[(k + i) % n];
            let label = if multi {
                format!("{}: {}", env.target_name, p.label)
            } else {
                p.label.clone()
            };
            let mut ctx = PointCtx {
                index: out.points.len(),
                total,
                label,
                topic: format!("{}-{}", p.spec.topic, env.target_name),
                env,
                runs: &mut out.runs,
                writer: writer.as_deref_mut(),
                run_no: 0,
            };
            let r = match mode {
                Mode::Fixed => ctx.fixed(p).await,
                Mode::Knee(k) => ctx.knee(p, k).await,
            };
            let r = match r {
                Ok(r) => r,
                // A broker that cannot run a workload at all stops the
                // sweep, but the points measured so far are kept.
                Err(SweepError::Run(e)) => {
                    out.error = Some(format!("{} (at point {label_now})", e, label_now = p.label));
                    break 'points;
                }
                Err(e) => return Err(e),
            };
            if env.progress.is_some() {
                eprintln!("[{}/{total} {}] {}", r.index + 1, r.label, point_line(&r));
            }
            out.points.push(r);
            if env.interrupt.load(Ordering::Relaxed) {
                out.interrupted = true;
                eprintln!(
                    "loadgen: interrupted; skipping the remaining {} points",
                    total - out.points.len()
                );
                break 'points;
            }
        }
    }
    Ok(out)
}

fn point_line(r: &PointResult) -> String {
    let knee = match &r.knee {
        Some(k) => format!(
            "max sustainable {} msg/s ({:.1} MiB/s)",
            format_count(k.msgs_per_s),
            k.mib_per_s
        ),
        None if r.mode == "knee" => "NO sustainable rate found".into(),
        None => "fixed rate".into(),
    };
    let verdict = if r.problems.is_empty() {
        "checks ok".to_string()
    } else {
        r.problems.join("; ")
    };
    format!("{knee}; {verdict}")
}

/// One point on one target, while it runs.
struct PointCtx<'a> {
    index: usize,
    total: usize,
    label: String,
    topic: String,
    env: &'a RunEnv,
    runs: &'a mut Vec<RunResult>,
    writer: Option<&'a mut Writer>,
    run_no: usize,
}

impl PointCtx<'_> {
    /// One workload on a topic of its own (deleted afterwards).
    async fn one(&mut self, what: &str, spec: &WorkloadSpec) -> Result<RunResult, SweepError> {
        self.run_no += 1;
        let spec = WorkloadSpec {
            topic: format!("{}-{}", self.topic, self.run_no),
            ..spec.clone()
        };
        let env = RunEnv {
            progress: self
                .env
                .progress
                .as_ref()
                .map(|_| format!("[{}/{} {} {what}] ", self.index + 1, self.total, self.label)),
            ..self.env.clone()
        };
        let label = format!("{} {what}", self.label);
        let r = runner::run(&label, &spec, &env).await?;
        if env.progress.is_some() {
            eprintln!(
                "[{}/{} {} {what}] {} msg/s of {}: {}",
                self.index + 1,
                self.total,
                self.label,
                format_count(r.produced.msgs_per_s),
                if spec.rate == 0 {
                    "max (closed loop)".to_string()
                } else {
                    format_count(spec.rate as f64)
                },
                match (r.passed(), r.sustain.sustained) {
                    (false, _) => format!("FAILED: {}", r.failures().join("; ")),
                    (true, true) => "held".into(),
                    (true, false) => format!("not sustained: {}", r.sustain.reasons.join("; ")),
                }
            );
        }
        Ok(r)
    }

    /// Keep a latency run: write its histograms out, release them, and
    /// return its index in the report's runs.
    fn keep(
        &mut self,
        mut r: RunResult,
        series: &str,
        level: Option<f64>,
    ) -> Result<usize, SweepError> {
        r.series = series.to_string();
        r.point = Some(self.index);
        r.level = level;
        let i = self.runs.len();
        if let Some(w) = self.writer.as_deref_mut() {
            w.histograms(i, &r)?;
            r.histograms.release();
        }
        self.runs.push(r);
        Ok(i)
    }

    fn result(&self, p: &Point, mode: &'static str) -> PointResult {
        PointResult {
            index: self.index,
            label: self.label.clone(),
            series: p.series.clone(),
            target: self.env.target_name.clone(),
            batch_bytes: p.spec.batch_bytes as u64,
            compression: p.spec.compression.to_string(),
            acks: p.spec.acks.to_string(),
            linger_ms: p.spec.linger_ms,
            mode,
            probe: None,
            steps: Vec::new(),
            knee: None,
            runs: Vec::new(),
            broker_cpu_s_per_gb: None,
            spread: None,
            passed: true,
            sustained: true,
            problems: Vec::new(),
        }
    }

    /// Verdicts of the point from its runs (levels) and steps.
    fn conclude(&self, mut pr: PointResult) -> PointResult {
        let mut top_cpu = None;
        for &i in &pr.runs {
            let r = &self.runs[i];
            let at = r
                .level
                .map(|l| format!("{:.0}%", l * 100.0))
                .unwrap_or_else(|| format!("{}/s", r.target_rate));
            if !r.passed() {
                pr.passed = false;
                pr.problems
                    .push(format!("FAILED at {at}: {}", r.failures().join("; ")));
            }
            if !r.sustain.sustained {
                pr.sustained = false;
                pr.problems.push(format!(
                    "not sustained at {at}: {}",
                    r.sustain.reasons.join("; ")
                ));
            } else if !r.repeat && r.passed() {
                top_cpu = r.cpu.broker_cpu_s_per_gb.or(top_cpu);
            }
        }
        for s in pr.probe.iter().chain(pr.steps.iter()) {
            if !s.passed {
                pr.passed = false;
                pr.problems.push(format!(
                    "FAILED while searching at {}/s: {}",
                    s.target_rate,
                    s.failures.join("; ")
                ));
            }
        }
        pr.broker_cpu_s_per_gb = top_cpu;
        pr
    }

    async fn fixed(&mut self, p: &Point) -> Result<PointResult, SweepError> {
        let r = self.one("", &p.spec).await?;
        let mut pr = self.result(p, "fixed");
        pr.runs.push(self.keep(r, &p.series, None)?);
        Ok(self.conclude(pr))
    }

    async fn knee(&mut self, p: &Point, k: &KneeSettings) -> Result<PointResult, SweepError> {
        let mut pr = self.result(p, "knee");
        let interrupted = || self.env.interrupt.load(Ordering::Relaxed);
        // Probe and search runs only need their rates judged; their
        // consumers get a long drain so a backlog is counted, not lost.
        let search_spec = |rate: u64, warmup_ms: u64, duration_ms: u64| WorkloadSpec {
            rate,
            warmup_ms,
            duration_ms,
            drain_timeout_ms: p.spec.drain_timeout_ms.max(10_000),
            ..p.spec.clone()
        };
        let mut probe = self
            .one("probe", &search_spec(0, k.probe_warmup_ms, k.probe_ms))
            .await?;
        if probe.produced.msgs_per_s <= 0.0 && !interrupted() {
            // Nothing acknowledged in the whole window: a stall, not a
            // rate. Searching down from zero would find nothing; probe again.
            pr.problems
                .push("the first probe acknowledged nothing; probed again".into());
            probe = self
                .one(
                    "probe again",
                    &search_spec(0, k.probe_warmup_ms, k.probe_ms),
                )
                .await?;
        }
        pr.probe = Some(Step::of(&probe));
        let record_bytes = p.spec.record_payload_bytes() as f64;
        let mut search = Search::new(probe.produced.msgs_per_s);
        drop(probe);
        for s in 0..k.search_steps {
            if interrupted() {
                break;
            }
            let rate = search.next_rate();
            let r = self
                .one(
                    &format!("step {}", s + 1),
                    &search_spec(rate, k.step_warmup_ms, k.step_ms),
                )
                .await?;
            search.record(rate, r.sustain.sustained && r.passed());
            pr.steps.push(Step::of(&r));
        }
        pr.knee = search.knee().map(|m| Knee {
            msgs_per_s: m,
            mib_per_s: m * record_bytes / (1u64 << 20) as f64,
            next_failed_msgs_per_s: search.unsustained_min,
        });
        // Without a knee the levels are fractions of the lowest rate tried,
        // and the point says so.
        let reference = match (search.knee(), search.unsustained_min) {
            (Some(knee), _) => knee,
            (None, Some(lo)) => {
                pr.problems.push(format!(
                    "no rate held; the lowest tried was {}/s, and the levels are fractions of it",
                    lo
                ));
                pr.sustained = false;
                lo
            }
            (None, None) => 0.0,
        };
        let mut levels: Vec<(f64, bool)> = k.levels.iter().map(|&f| (f, false)).collect();
        if let Some(f) = k.repeat_level {
            levels.push((f, true));
        }
        let mut first_of: Vec<(f64, usize)> = Vec::new();
        for (f, repeat) in levels {
            if interrupted() || reference <= 0.0 {
                break;
            }
            let rate = (reference * f).round().max(1.0) as u64;
            let what = format!("{:.0}%{}", f * 100.0, if repeat { " again" } else { "" });
            let spec = WorkloadSpec {
                rate,
                ..p.spec.clone()
            };
            let mut r = self.one(&what, &spec).await?;
            r.repeat = repeat;
            let i = self.keep(r, &p.series, Some(f))?;
            pr.runs.push(i);
            match first_of.iter().find(|(g, _)| (g - f).abs() < 1e-9) {
                Some(&(_, j)) if repeat => {
                    pr.spread = Some(Spread::between(&self.runs[j], &self.runs[i]))
                }
                _ => first_of.push((f, i)),
            }
        }
        Ok(self.conclude(pr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{AcksValue, Size};

    #[test]
    fn default_matrix_is_8_points_and_fits_about_three_minutes() {
        let base = default_base();
        let m = Matrix::resolve(&base, &[]);
        let pts = points(&base, &m);
        assert_eq!(pts.len(), 8);
        assert_eq!(pts[0].label, "1k none acks=1");
        assert_eq!(pts[7].label, "1m zstd acks=1");
        let mode = Mode::Knee(KneeSettings::default());
        let est = estimate_secs(&pts, &mode, 1);
        assert!((150.0..=210.0).contains(&est), "{est}");
        assert_eq!(estimate_secs(&pts, &mode, 2), 2.0 * est);
        // Every point gets its own topic.
        let mut topics: Vec<_> = pts.iter().map(|p| p.spec.topic.clone()).collect();
        topics.dedup();
        assert_eq!(topics.len(), 8);
    }

    #[test]
    fn later_layers_win() {
        let base = default_base();
        let profile = MatrixOverrides {
            batch_bytes: Some(vec![Size(1024), Size(2048)]),
            acks: Some(vec![AcksValue(Acks::Leader), AcksValue(Acks::All)]),
            ..Default::default()
        };
        let cli = MatrixOverrides {
            batch_bytes: Some(vec![Size(4096)]),
            ..Default::default()
        };
        let m = Matrix::resolve(&base, &[&profile, &cli]);
        assert_eq!(m.batch_bytes, vec![4096]);
        assert_eq!(m.acks, vec![Acks::Leader, Acks::All]);
        assert_eq!(points(&base, &m).len(), 4); // 1 batch size x 2 codecs x 2 acks
    }
}
