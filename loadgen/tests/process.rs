//! The `loadgen` binary as a process: its memory stays within the
//! documented budget, and the embedded broker's data directory is gone
//! after every kind of exit (end of run, SIGINT, SIGTERM, a second signal).
//!
//! Each test owns its TMPDIR (see `common::Loadgen`), which is where the
//! embedded broker keeps its data; an empty TMPDIR afterwards means the
//! directory was removed.

mod common;

use common::{read_json, Loadgen};
use loadgen::embedded::EmbeddedBroker;
use loadgen::workload::WorkloadSpec;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Regression (issue 9.5): the command, a closed-loop run without
/// consumers at 1 MiB batches with the default acks=1 (the broker answers
/// before its data is written, so its unwritten-bytes budget is what holds
/// it). The peak RSS (exact, from wait4) is printed as a measurement and
/// must stay within loadgen's budget plus the embedded broker's. With a
/// report directory: drawing the report of a run without consumers (no
/// end-to-end latency) once allocated without end.
#[test]
fn a_closed_loop_run_without_consumers_stays_within_its_memory_budget() {
    let shards = 2;
    let report = tempfile::tempdir().unwrap();
    let report_dir = report.path().to_str().unwrap().to_string();
    let lg = Loadgen::spawn(&[
        "run",
        "--report-dir",
        &report_dir,
        "--quiet",
        "--rate",
        "0",
        "--consumers",
        "0",
        "--batch-bytes",
        "1m",
        "--producers",
        "2",
        "--warmup",
        "500ms",
        "--duration",
        "3s",
        "--shards",
        &shards.to_string(),
    ]);
    let done = lg.wait(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    let spec = WorkloadSpec {
        rate: 0,
        consumers: 0,
        producers: 2,
        batch_bytes: 1 << 20,
        ..WorkloadSpec::default()
    };
    let budget = spec.memory_budget() + EmbeddedBroker::memory_budget(shards);
    let peak = done.peak_rss_kib << 10;
    println!(
        "measurement: peak RSS {} MiB (budget {} MiB: loadgen {} + embedded broker {})",
        peak >> 20,
        budget >> 20,
        spec.memory_budget() >> 20,
        EmbeddedBroker::memory_budget(shards) >> 20
    );
    assert!(done.stdout.contains("started an embedded broker"), "{done}");
    for f in ["index.html", "report.json", "timeline.svg"] {
        assert!(
            report.path().join(f).is_file(),
            "no {f} in the report\n{done}"
        );
    }
    assert!(
        peak <= budget,
        "peak RSS {peak} B over the budget {budget} B\n{done}"
    );
    done.assert_no_data_dir_left();
}

/// The nice value of each thread of `pid` whose name starts with `prefix`.
fn thread_nices(pid: u32, prefix: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name start at field 3 (state);
        // nice is field 19.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            if let Some(n) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) {
                out.push(n);
            }
        }
    }
    out
}

/// With more than 2 producers each producer thread runs below
/// `--producer-nice` (default 10), so that together they weigh no more than
/// 2 at that level: 8 threads at nice 17 (weight 23 each, 184 together,
/// against 2 x 110). Read from /proc while the run goes; the report says so.
#[test]
fn many_producer_threads_are_lowered_so_that_together_they_weigh_as_two() {
    // SAFETY: getpriority has no memory preconditions.
    let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let lg = Loadgen::spawn(&[
        "run",
        "--quiet",
        "--rate",
        "0",
        "--producers",
        "8",
        "--partitions",
        "2",
        "--warmup",
        "200ms",
        "--duration",
        "2s",
    ]);
    lg.wait_started(TIMEOUT);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut nices = thread_nices(lg.pid(), "lg-producer-");
    while nices.len() < 8 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        nices = thread_nices(lg.pid(), "lg-producer-");
    }
    let done = lg.wait(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    assert_eq!(
        nices,
        vec![(base + 17).min(19); 8],
        "producer threads' nice values\n{done}"
    );
    assert!(
        done.stdout.contains("lowered to 17 for 8 producer threads"),
        "{done}"
    );
    done.assert_no_data_dir_left();
}

/// A run long enough to be interrupted: 30 s measured at a low rate.
fn long_run() -> Loadgen {
    Loadgen::spawn(&[
        "run",
        "--quiet",
        "--partitions",
        "2",
        "--message-size",
        "256",
        "--rate",
        "2000",
        "--warmup",
        "200ms",
        "--duration",
        "30s",
    ])
}

fn assert_first_signal_finishes_the_run_early(sig: i32, code: i32) {
    let lg = long_run();
    lg.wait_started(TIMEOUT);
    std::thread::sleep(Duration::from_millis(1500));
    lg.signal(sig);
    let done = lg.wait(TIMEOUT);
    assert_eq!(done.code, Some(code), "{done}");
    // The report is still printed, and says the run was cut short.
    assert!(done.stdout.contains("INTERRUPTED"), "{done}");
    assert!(done.stdout.contains("embedded broker stopped"), "{done}");
    done.assert_no_data_dir_left();
}

#[test]
fn sigint_ends_the_run_early_reports_and_removes_the_data_dir() {
    assert_first_signal_finishes_the_run_early(libc::SIGINT, 130);
}

#[test]
fn sigterm_ends_the_run_early_reports_and_removes_the_data_dir() {
    assert_first_signal_finishes_the_run_early(libc::SIGTERM, 143);
}

/// The second signal exits without unwinding; the data directory must go
/// anyway. The first signal has to leave the run busy for a while: with
/// acks=0 and a consumer that drops messages, the drain can only end at
/// its deadline (20 s), so the second signal lands during the drain.
#[test]
fn a_second_sigint_aborts_at_once_and_still_removes_the_data_dir() {
    let lg = Loadgen::spawn(&[
        "run",
        "--quiet",
        "--partitions",
        "2",
        "--message-size",
        "256",
        "--rate",
        "2000",
        "--acks",
        "0",
        "--fault-drop-every",
        "7",
        "--warmup",
        "200ms",
        "--duration",
        "30s",
        "--drain-timeout",
        "20s",
    ]);
    lg.wait_started(TIMEOUT);
    // Long enough for the run to have sent messages on a loaded machine
    // (connections and topic first): with nothing sent the drain has
    // nothing to wait for and ends before the second signal.
    std::thread::sleep(Duration::from_millis(3000));
    lg.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    lg.signal(libc::SIGINT);
    let done = lg.wait(Duration::from_secs(10));
    assert_eq!(done.code, Some(130), "{done}");
    assert!(done.stderr.contains("aborted"), "{done}");
    assert!(!done.stdout.contains("embedded broker stopped"), "{done}");
    done.assert_no_data_dir_left();
}

/// A short knee sweep with the flags that keep it to ~20 s.
fn short_sweep_args() -> Vec<&'static str> {
    vec![
        "sweep",
        "--quiet",
        "--partitions",
        "2",
        "--message-size",
        "256",
        "--batch-bytes",
        "16k,64k",
        "--compression",
        "none",
        "--levels",
        "20,80",
        "--search-steps",
        "2",
        "--probe-duration",
        "400ms",
        "--step-duration",
        "400ms",
        "--warmup",
        "200ms",
        "--duration",
        "500ms",
    ]
}

/// Issue 15: two targets (shardlog native and shardlog's Kafka listener,
/// both on the embedded broker) in one report: each point measured on
/// both, interleaved, both on the same charts, each target's version from
/// its own answers; `loadgen compare` reads two reports and flags a
/// difference beyond the measured spread. The peak RSS of the sweep is
/// printed and held to the budget.
#[test]
fn a_two_target_sweep_shares_its_charts_and_compare_reads_it() {
    let report = tempfile::tempdir().unwrap();
    let dir = report.path().join("a");
    let dir_s = dir.to_str().unwrap().to_string();
    let mut args = short_sweep_args();
    args.extend([
        "--target",
        "native=embedded",
        "--target",
        "kafka=embedded,kafka",
        "--report-dir",
        &dir_s,
    ]);
    let done = Loadgen::spawn(&args).wait(TIMEOUT);
    // Exit 0: every delivery check passed (a level that did not hold its
    // rate is marked, not a failure).
    assert_eq!(done.code, Some(0), "{done}");
    done.assert_no_data_dir_left();
    let spec = WorkloadSpec {
        partitions: 2,
        ..WorkloadSpec::default()
    };
    let budget = spec.memory_budget() + EmbeddedBroker::memory_budget(2);
    let peak = done.peak_rss_kib << 10;
    println!(
        "measurement: two-target sweep peak RSS {} MiB (budget {} MiB)",
        peak >> 20,
        budget >> 20
    );
    assert!(peak <= budget, "peak RSS {peak} over {budget}\n{done}");

    let json = read_json(&dir.join("report.json"));
    assert_eq!(json["schema"], "loadgen-report/2");
    assert_eq!(json["mode"], "knee");
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets[0]["version"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("shardlog "));
    assert!(targets[1]["version"]["api_versions"]["Fetch"][1]
        .as_i64()
        .is_some_and(|v| v >= 4));
    assert!(json["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "kafka=embedded,kafka"));
    assert!(json["machine"]["cpu_model"].is_string());
    // Two batch sizes on two targets, point-major and interleaved: the
    // second point starts with the other target.
    let points = json["points"].as_array().unwrap();
    let order: Vec<(&str, u64)> = points
        .iter()
        .map(|p| {
            (
                p["target"].as_str().unwrap(),
                p["batch_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("native", 16384),
            ("kafka", 16384),
            ("kafka", 65536),
            ("native", 65536)
        ]
    );
    for p in points {
        // A closed-loop probe (its figure may be anything on a loaded
        // machine), two search steps, and the levels (20, 80 and the 50%
        // repeat) as runs of the report.
        assert_eq!(p["probe"]["target_rate"], 0, "{p}");
        assert!(p["probe"]["produced_msgs_per_s"].is_number(), "{p}");
        assert_eq!(p["steps"].as_array().unwrap().len(), 2);
        assert_eq!(p["runs"].as_array().unwrap().len(), 3, "{p}");
        if let Some(k) = p["knee"]["msgs_per_s"].as_f64() {
            // The knee is one of the rates tried, and it held.
            assert!(
                p["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["target_rate"].as_f64() == Some(k)
                        && s["sustain"]["sustained"] == true)
            );
        }
    }
    // Both targets' curves are on the same latency-throughput chart.
    let svg = std::fs::read_to_string(dir.join("tradeoff-e2e.svg")).unwrap();
    for want in ["16k native", "16k kafka", "64k native", "64k kafka"] {
        assert!(svg.contains(want), "{want} not in the chart's legend");
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("Max sustainable throughput"));
    assert!(html.contains("Kafka API: "));
    assert!(done.stdout.contains("sustained/s"), "{done}");

    // compare: a report against itself is all ones, nothing flagged; a
    // copy whose knees doubled is flagged.
    let lg = env!("CARGO_BIN_EXE_loadgen");
    let run = |a: &std::path::Path, b: &std::path::Path| {
        let out = std::process::Command::new(lg)
            .args(["compare", a.to_str().unwrap(), b.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let same = run(&dir, &dir.join("report.json"));
    assert!(
        same.contains("4 points in common; 0 figures flagged"),
        "{same}"
    );
    assert!(same.contains("1.00"), "{same}");
    let mut doubled = json.clone();
    for p in doubled["points"].as_array_mut().unwrap() {
        if let Some(k) = p["knee"]["msgs_per_s"].as_f64() {
            p["knee"]["msgs_per_s"] = serde_json::json!(k * 2.0);
        }
    }
    let b = report.path().join("b.json");
    std::fs::write(&b, serde_json::to_string(&doubled).unwrap()).unwrap();
    let diff = run(&dir, &b);
    if points.iter().any(|p| p["knee"]["msgs_per_s"].is_number()) {
        assert!(diff.contains("2.00!"), "{diff}");
    }
}

/// A rate the broker cannot hold is marked as such in every output: the
/// stdout table, report.json, the HTML table's row class, and the chart
/// (a red cross, not a point on a curve). Delivery checks still pass, so
/// the exit status is 0.
#[test]
fn an_unsustained_rate_is_marked_everywhere() {
    let report = tempfile::tempdir().unwrap();
    let dir = report.path().to_str().unwrap().to_string();
    let done = Loadgen::spawn(&[
        "sweep",
        "--quiet",
        "--fixed-rate",
        "--rate",
        "5000000",
        "--partitions",
        "2",
        "--message-size",
        "256",
        "--batch-bytes",
        "16k",
        "--compression",
        "none",
        "--warmup",
        "200ms",
        "--duration",
        "500ms",
        "--report-dir",
        &dir,
    ])
    .wait(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    done.assert_no_data_dir_left();
    assert!(done.stdout.contains("NOT SUSTAINED"), "{done}");
    let json = read_json(&report.path().join("report.json"));
    assert_eq!(json["mode"], "fixed");
    assert_eq!(json["sustained"], false);
    let run = &json["runs"][0];
    assert_eq!(run["sustain"]["sustained"], false);
    assert!(!run["sustain"]["reasons"].as_array().unwrap().is_empty());
    assert_eq!(json["points"][0]["sustained"], false);
    let html = std::fs::read_to_string(report.path().join("index.html")).unwrap();
    assert!(html.contains("<tr class=sat>"), "no marked row");
    assert!(html.contains("Not every rate held"));
    let svg = std::fs::read_to_string(report.path().join("tradeoff-e2e.svg")).unwrap();
    assert!(svg.contains("not sustained / failed"));
}

/// `--catch-up`: the consumers start only once the producers have
/// finished, so nothing is consumed inside the measured window, and then
/// they read the whole backlog: every acknowledged message, counted in the
/// catch-up figures, with the delivery checks passing.
#[test]
fn a_catch_up_run_reads_the_whole_backlog_after_the_producers_finish() {
    let report = tempfile::tempdir().unwrap();
    let lg = Loadgen::spawn(&[
        "run",
        "--quiet",
        "--rate",
        "20000",
        "--partitions",
        "4",
        "--consumers",
        "2",
        "--warmup",
        "200ms",
        "--duration",
        "2s",
        "--catch-up",
        "--report-dir",
        report.path().to_str().unwrap(),
    ]);
    let done = lg.wait(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stdout.contains("catch-up read  "), "{done}");
    let json = read_json(&report.path().join("report.json"));
    let run = &json["runs"][0];
    assert_eq!(run["spec"]["catch_up"], true);
    assert_eq!(
        run["consumed"]["msgs"], 0,
        "consumers ran during the window\n{done}"
    );
    let read = run["catch_up"]["read"]["msgs"].as_u64().unwrap();
    // 20,000 msg/s for 2.2 s: about 44,000 messages acknowledged.
    assert!(read > 30_000, "catch-up read {read}\n{done}");
    assert_eq!(run["checks"]["delivered"].as_u64(), Some(read), "{done}");
    assert_eq!(run["checks"]["lost"], 0, "{done}");
    assert!(run["catch_up"]["secs"].as_f64().unwrap() > 0.0);
    assert!(
        run["catch_up"]["disk_read_bytes"].is_u64(),
        "the embedded broker's disk reads are measured\n{done}"
    );
    done.assert_no_data_dir_left();
}

#[test]
fn catch_up_without_consumers_is_a_usage_error() {
    let done = Loadgen::spawn(&["run", "--quiet", "--catch-up", "--consumers", "0"]).wait(TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("--catch-up"), "{done}");
}
