//! Report rendering: turns finished [`RunResult`]s and [`PointResult`]s
//! into files. Nothing here measures or computes figures; it only formats
//! them ([`compare`] divides two reports' figures).
//!
//! A report directory holds:
//! - `report.json` — every figure plus settings, machine and versions;
//! - `NN-<label>.{publish,publish_delay,e2e}.hgrm` — full distributions,
//!   one set per latency run (written as each run ends, see [`Writer`]);
//! - `*.svg` — charts; `index.html` — tables, charts and details, self-contained.

pub mod compare;
pub mod hgrm;
pub mod html;
pub mod json;
pub mod plots;
pub mod table;

use crate::embedded::BrokerInfo;
use crate::knee::KneeSettings;
use crate::machine::{MachineInfo, Versions};
use crate::result::{PointResult, RunResult};
use crate::transport::version::BrokerVersion;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
}

/// Where a sweep's points came from.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixInfo {
    pub batch_bytes: Vec<u64>,
    pub compression: Vec<String>,
    pub acks: Vec<String>,
    pub linger_ms: Vec<u64>,
}

/// One broker and protocol the report measured.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub name: String,
    pub protocol: String,
    #[serde(flatten)]
    pub broker: BrokerInfo,
    /// What the broker said about itself (Metadata / ApiVersions).
    pub version: Option<BrokerVersion>,
    pub version_error: Option<String>,
}

/// Everything about the report that is not a point's result.
#[derive(Debug, Clone, Serialize)]
pub struct ReportMeta {
    /// "run" or "sweep".
    pub kind: &'static str,
    pub title: String,
    pub description: Option<String>,
    pub created_unix_ms: i64,
    pub wall_s: f64,
    /// argv, verbatim.
    pub command: Vec<String>,
    pub profile: Option<String>,
    /// The profile file's text, so the report reproduces without it.
    pub profile_text: Option<String>,
    pub machine: MachineInfo,
    pub versions: Versions,
    pub targets: Vec<TargetInfo>,
    pub matrix: Option<MatrixInfo>,
    /// "knee" or "fixed" for sweeps.
    pub mode: Option<&'static str>,
    pub knee: Option<KneeSettings>,
}

/// The files of a written report.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: PathBuf,
    pub index_html: PathBuf,
    pub report_json: PathBuf,
    pub hgrm: Vec<PathBuf>,
    pub charts: Vec<PathBuf>,
}

/// "64k lz4 acks=1" -> "64k-lz4-acks-1".
pub fn slug(label: &str) -> String {
    let mut s = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_string()
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, contents).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Remove the files an earlier report left in `dir`, so stale histograms
/// never sit next to new ones. Only touches a directory that holds a
/// report.json, and only loadgen's own file types.
fn clear_previous(dir: &Path) {
    if !dir.join("report.json").exists() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let ours = p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "hgrm" | "svg"))
                || p.file_name()
                    .is_some_and(|n| n == "report.json" || n == "index.html");
            if ours {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Histogram file names for run `i`.
fn hgrm_names(i: usize, p: &RunResult) -> [(String, String); 3] {
    let base = format!("{:02}-{}", i + 1, slug(&p.label));
    [
        ("publish_hgrm".into(), format!("{base}.publish.hgrm")),
        (
            "publish_delay_hgrm".into(),
            format!("{base}.publish_delay.hgrm"),
        ),
        ("e2e_hgrm".into(), format!("{base}.e2e.hgrm")),
    ]
}

/// A report directory being filled. Lifecycle: [`create`](Writer::create)
/// before the first run (clears an earlier report's files), then
/// [`histograms`](Writer::histograms) once per latency run in order, as it
/// ends, then [`finish`](Writer::finish). Owned by the command's thread.
pub struct Writer {
    dir: PathBuf,
    files: Vec<BTreeMap<String, String>>,
    hgrm: Vec<PathBuf>,
}

impl Writer {
    pub fn create(dir: &Path) -> Result<Writer, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        clear_previous(dir);
        Ok(Writer {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            hgrm: Vec::new(),
        })
    }

    /// Write run `i`'s three histograms (runs come in order, each once).
    pub fn histograms(&mut self, i: usize, p: &RunResult) -> Result<(), ReportError> {
        assert_eq!(i, self.files.len(), "runs are written in order, once");
        assert!(
            !p.histograms.released(),
            "histograms written before release"
        );
        let hists = [
            &p.histograms.publish,
            &p.histograms.publish_delay,
            &p.histograms.e2e,
        ];
        let mut map = BTreeMap::new();
        for ((key, name), h) in hgrm_names(i, p).into_iter().zip(hists) {
            let path = self.dir.join(&name);
            write_file(&path, hgrm::render(h).as_bytes())?;
            self.hgrm.push(path);
            map.insert(key, name);
        }
        self.files.push(map);
        Ok(())
    }

    /// Charts, report.json and index.html; histograms of runs not written
    /// yet are written first.
    pub fn finish(
        mut self,
        meta: &ReportMeta,
        points: &[PointResult],
        runs: &[RunResult],
    ) -> Result<Written, ReportError> {
        for (i, r) in runs.iter().enumerate().skip(self.files.len()) {
            self.histograms(i, r)?;
        }
        let dir = self.dir;
        let files = self.files;
        let charts = plots::render_all(points, runs)?;
        let mut chart_paths = Vec::new();
        for c in &charts {
            let path = dir.join(&c.file);
            write_file(&path, c.svg.as_bytes())?;
            chart_paths.push(path);
        }
        let report_json = dir.join("report.json");
        write_file(
            &report_json,
            json::render(meta, points, runs, &files)?.as_bytes(),
        )?;
        let index_html = dir.join("index.html");
        write_file(
            &index_html,
            html::render(meta, points, runs, &files, &charts).as_bytes(),
        )?;
        Ok(Written {
            dir,
            index_html,
            report_json,
            hgrm: self.hgrm,
            charts: chart_paths,
        })
    }
}

/// Write a whole report of finished runs (no sweep points) into `dir`.
pub fn write(dir: &Path, meta: &ReportMeta, runs: &[RunResult]) -> Result<Written, ReportError> {
    Writer::create(dir)?.finish(meta, &[], runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("64k lz4 acks=1"), "64k-lz4-acks-1");
        assert_eq!(slug("  1m  zstd acks=all "), "1m-zstd-acks-all");
    }
}
