//! report.json: every figure of every point, with the settings, machine,
//! versions and the names of the files written beside it.
//!
//! Layout (stable keys; `schema` changes when they do):
//!
//! ```text
//! { schema, kind, passed, created_unix_ms, wall_s, command, profile,
//!   machine{...}, versions{...}, broker{...}, protocol, matrix{...},
//!   points: [ { label, series, spec{...}, client{library, producer_config,
//!               consumer_config} (null for the native client),
//!               produced{...}, consumed{...},
//!               publish{p50_us...}, publish_delay{...}, e2e{...},
//!               compression{...}, cpu{...}, checks{...}, notes, errors,
//!               timeseries[...], files{publish_hgrm, e2e_hgrm, publish_delay_hgrm} } ] }
//! ```

use super::ReportMeta;
use crate::result::RunResult;
use serde::Serialize;
use std::collections::BTreeMap;

pub const SCHEMA: &str = "loadgen-report/1";

#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    passed: bool,
    #[serde(flatten)]
    meta: &'a ReportMeta,
    points: Vec<Point<'a>>,
}

#[derive(Serialize)]
struct Point<'a> {
    #[serde(flatten)]
    result: &'a RunResult,
    passed: bool,
    failures: Vec<String>,
    files: &'a BTreeMap<String, String>,
}

/// Serialize the report; `files[i]` names point i's histogram files.
pub fn render(
    meta: &ReportMeta,
    points: &[RunResult],
    files: &[BTreeMap<String, String>],
) -> Result<String, serde_json::Error> {
    let report = Report {
        schema: SCHEMA,
        passed: points.iter().all(RunResult::passed),
        meta,
        points: points
            .iter()
            .zip(files)
            .map(|(result, files)| Point {
                result,
                passed: result.passed(),
                failures: result.failures(),
                files,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report)
}
