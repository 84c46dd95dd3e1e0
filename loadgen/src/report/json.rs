//! report.json: every figure of every point and run, with the settings,
//! machine, versions and the names of the files written beside it.
//!
//! Layout (stable keys; `schema` changes when they do):
//!
//! ```text
//! { schema, kind, passed, sustained, created_unix_ms, wall_s, command,
//!   profile, profile_text, machine{cpu_model, online_cpus, kernel,
//!   cpu_governor, ...}, versions{loadgen, shardlog, build},
//!   targets: [ { name, protocol, addr, embedded, shards, data_dir,
//!                data_dir_fs, broker_pid, version{summary, ...},
//!                version_error } ],
//!   matrix{...}, mode ("knee" | "fixed"), knee{levels, search_steps, ...},
//!   points: [ { index, label, series, target, batch_bytes, compression,
//!               acks, linger_ms, mode, probe{...}, steps[...],
//!               knee{msgs_per_s, mib_per_s, next_failed_msgs_per_s},
//!               runs[i...], broker_cpu_s_per_gb, spread{...}, passed,
//!               sustained, problems } ],
//!   runs: [ { label, series, target, point, level, repeat, sustain,
//!             spec{...}, client{...}, produced{...}, consumed{...},
//!             publish{p50_us...}, publish_delay{...}, e2e{...},
//!             compression{...}, cpu{...}, catch_up{read{...}, secs,
//!             cpu{...}, disk_read_bytes} (null unless --catch-up),
//!             checks{...}, notes, errors,
//!             timeseries[...], e2e_spectrum[...], passed, failures,
//!             files{publish_hgrm, e2e_hgrm, publish_delay_hgrm} } ] }
//! ```

use super::ReportMeta;
use crate::result::{PointResult, RunResult};
use serde::Serialize;
use std::collections::BTreeMap;

pub const SCHEMA: &str = "loadgen-report/2";

#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    passed: bool,
    sustained: bool,
    #[serde(flatten)]
    meta: &'a ReportMeta,
    points: &'a [PointResult],
    runs: Vec<Run<'a>>,
}

#[derive(Serialize)]
struct Run<'a> {
    #[serde(flatten)]
    result: &'a RunResult,
    passed: bool,
    failures: Vec<String>,
    files: Option<&'a BTreeMap<String, String>>,
}

/// Serialize the report; `files[i]` names run i's histogram files.
pub fn render(
    meta: &ReportMeta,
    points: &[PointResult],
    runs: &[RunResult],
    files: &[BTreeMap<String, String>],
) -> Result<String, serde_json::Error> {
    let report = Report {
        schema: SCHEMA,
        passed: runs.iter().all(RunResult::passed) && points.iter().all(|p| p.passed),
        sustained: runs.iter().all(|r| r.sustain.sustained) && points.iter().all(|p| p.sustained),
        meta,
        points,
        runs: runs
            .iter()
            .enumerate()
            .map(|(i, result)| Run {
                result,
                passed: result.passed(),
                failures: result.failures(),
                files: files.get(i),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report)
}
