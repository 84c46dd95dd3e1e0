//! A sweep: the same workload at every point of a settings matrix
//! (batch size × codec × acks × linger), one after another against the
//! same broker, each point on a fresh topic that is deleted afterwards
//! (so no point reads or pays for another's data).
//!
//! The default matrix is sized to finish in under three minutes on a
//! 2-core machine: 5 batch sizes × 3 codecs × (1 s warm-up + 5 s measured
//! + drain and topic setup ≈ 6.5 s) ≈ 100 s.

use crate::profile::MatrixOverrides;
use crate::report::MatrixInfo;
use crate::result::RunResult;
use crate::runner::{self, RunEnv, RunError};
use crate::units::format_size;
use crate::workload::WorkloadSpec;
use shardlog::format::Compression;
use shardlog::protocol::messages::Acks;

pub const DEFAULT_BATCH_BYTES: [u64; 5] = [1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
pub const DEFAULT_CODECS: [Compression; 3] =
    [Compression::None, Compression::Lz4, Compression::Zstd];

/// The base workload of a sweep when nothing overrides it: the run
/// defaults with a short window per point.
pub fn default_base() -> WorkloadSpec {
    WorkloadSpec {
        topic: "loadgen-sweep".into(),
        warmup_ms: 1000,
        duration_ms: 5000,
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

/// Rough wall time of a sweep, for the banner.
pub fn estimate_secs(points: &[Point]) -> f64 {
    points
        .iter()
        .map(|p| (p.spec.warmup_ms + p.spec.duration_ms) as f64 / 1000.0 + 1.0)
        .sum()
}

/// Run every point in order. A point that cannot run at all (broker gone)
/// stops the sweep; a point that fails its checks does not.
pub async fn run(points: &[Point], env: &RunEnv) -> Result<Vec<RunResult>, RunError> {
    let n = points.len();
    let mut results = Vec::with_capacity(n);
    for (i, p) in points.iter().enumerate() {
        let point_env = RunEnv {
            progress: env
                .progress
                .as_ref()
                .map(|_| format!("[{}/{n} {}] ", i + 1, p.label)),
            ..env.clone()
        };
        let mut r = runner::run(&p.label, &p.spec, &point_env).await?;
        r.series = p.series.clone();
        if env.progress.is_some() {
            eprintln!(
                "[{}/{n} {}] done: {} msg/s, publish p99 {}, e2e p99 {}, {}",
                i + 1,
                p.label,
                crate::units::format_count(r.produced.msgs_per_s),
                crate::units::format_us(r.publish.p99_us),
                crate::units::format_us(r.e2e.p99_us),
                if r.passed() {
                    "checks ok".to_string()
                } else {
                    format!("FAILED: {}", r.failures().join("; "))
                }
            );
        }
        results.push(r);
        if env.interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "loadgen: interrupted; skipping the remaining {} points",
                n - i - 1
            );
            break;
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{AcksValue, Size};

    #[test]
    fn default_matrix_is_15_points_and_fits_three_minutes() {
        let base = default_base();
        let m = Matrix::resolve(&base, &[]);
        let pts = points(&base, &m);
        assert_eq!(pts.len(), 15);
        assert_eq!(pts[0].label, "1k none acks=1");
        assert_eq!(pts[14].label, "1m zstd acks=1");
        assert!(estimate_secs(&pts) < 120.0);
        // Every point gets its own topic.
        let mut topics: Vec<_> = pts.iter().map(|p| p.spec.topic.clone()).collect();
        topics.dedup();
        assert_eq!(topics.len(), 15);
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
        assert_eq!(points(&base, &m).len(), 6);
    }
}
