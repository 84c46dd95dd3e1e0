//! Helpers shared by loadgen's integration tests (each test file is its own
//! crate, so not every file uses every helper).
#![allow(dead_code)]

use loadgen::cpu::BrokerCpuSource;
use loadgen::embedded::EmbeddedBroker;
use loadgen::result::RunResult;
use loadgen::runner::RunEnv;
use loadgen::transport::{Protocol, Target};
use loadgen::workload::WorkloadSpec;

/// Run against the embedded broker `b` over `protocol`, quietly.
pub fn env_for(b: &EmbeddedBroker, protocol: Protocol) -> RunEnv {
    RunEnv {
        target: Target {
            protocol,
            addr: b.addr(),
        },
        cpu_source: BrokerCpuSource::Embedded,
        progress: None,
        interrupt: Default::default(),
    }
}

/// A short, low-rate workload: about 1 s measured at 2000 msg/s.
pub fn small(topic: &str) -> WorkloadSpec {
    WorkloadSpec {
        topic: topic.into(),
        partitions: 2,
        message_size: 256,
        rate: 2000,
        warmup_ms: 300,
        duration_ms: 1000,
        drain_timeout_ms: 5000,
        buffer_bytes: 4 << 20,
        ..WorkloadSpec::default()
    }
}

/// Every message scheduled in the measured window was sent, acknowledged
/// and received exactly once, and each histogram holds exactly those.
pub fn assert_counts_match(r: &RunResult) {
    assert!(r.window_sent > 0, "{}: nothing measured", r.label);
    assert_eq!(r.publish.count, r.window_sent, "{}", r.label);
    assert_eq!(r.publish.count, r.window_acked, "{}", r.label);
    assert_eq!(r.publish_delay.count, r.window_sent, "{}", r.label);
    assert_eq!(r.e2e.count, r.window_received, "{}", r.label);
    assert_eq!(r.e2e.count, r.window_sent, "{}", r.label);
    assert_eq!(r.histograms.e2e.len(), r.window_sent, "{}", r.label);
}

/// A consumer that drops every 50th message must fail the run, with the
/// losses counted and nothing else wrong, over `protocol`.
pub fn assert_a_lossy_consumer_fails_the_run(protocol: Protocol, topic: &str) {
    let broker = EmbeddedBroker::start(None, None, protocol).expect("embedded broker");
    let rt = loadgen::build_runtime(Some(2)).unwrap();
    let spec = WorkloadSpec {
        fault_drop_every: 50,
        ..small(topic)
    };
    let r = rt
        .block_on(loadgen::runner::run(
            "loss",
            &spec,
            &env_for(&broker, protocol),
        ))
        .unwrap();
    assert!(!r.passed());
    // Every 50th of the delivered messages was dropped: about 2%.
    let sent = r.checks.delivered + r.checks.lost;
    assert!(sent >= 2000, "{:?}", r.checks);
    assert!(r.checks.lost >= sent / 50 - 1, "{:?}", r.checks);
    assert!(r.failures().iter().any(|f| f.contains("lost")));
    assert_eq!(r.checks.duplicated, 0);
    assert_eq!(r.ack_errors, 0);
    // The consumer saw it was caught up and stopped, rather than waiting
    // out the drain deadline.
    assert!(
        !r.notes.iter().any(|n| n.contains("drain deadline")),
        "{:?}",
        r.notes
    );
    drop(rt);
    broker.shutdown();
}

/// Run the `loadgen` binary with `args` and `--report-dir report_dir`,
/// assert its exit code, and return what it printed on stdout.
pub fn run_binary(args: &[&str], report_dir: &std::path::Path, expect_code: i32) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--report-dir")
        .arg(report_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(expect_code),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
