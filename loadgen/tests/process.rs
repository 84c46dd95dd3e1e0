//! The `loadgen` binary as a process: its memory stays within the
//! documented budget, and the embedded broker's data directory is gone
//! after every kind of exit (end of run, SIGINT, SIGTERM, a second signal).
//!
//! Each test owns its TMPDIR (see `common::Loadgen`), which is where the
//! embedded broker keeps its data; an empty TMPDIR afterwards means the
//! directory was removed.

mod common;

use common::Loadgen;
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
    std::thread::sleep(Duration::from_millis(1000));
    lg.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    lg.signal(libc::SIGINT);
    let done = lg.wait(Duration::from_secs(10));
    assert_eq!(done.code, Some(130), "{done}");
    assert!(done.stderr.contains("aborted"), "{done}");
    assert!(!done.stdout.contains("embedded broker stopped"), "{done}");
    done.assert_no_data_dir_left();
}
