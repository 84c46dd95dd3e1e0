//! `--cluster N` and `--replication-factor`: loadgen starts real
//! `shardlog serve` processes, runs against them, and leaves neither a
//! broker nor its data behind; the embedded single broker refuses a
//! factor above 1 at once.
//!
//! The brokers are the `shardlog` binary next to loadgen's (target/debug),
//! built here first: `cargo test -p loadgen` builds shardlog's library,
//! not its binary.

mod common;

use common::{build_shardlog, read_json, Loadgen};
use std::time::Duration;

/// The brokers' pids from loadgen's "started a local cluster" line.
fn broker_pids(stdout: &str) -> Vec<u32> {
    let line = stdout
        .lines()
        .find(|l| l.contains("started a local cluster"))
        .unwrap_or_else(|| panic!("no cluster line in\n{stdout}"));
    line.split(" pid ")
        .skip(1)
        .map(|s| {
            let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().unwrap()
        })
        .collect()
}

/// None of `pids` is a shardlog process any more (a pid reused since by
/// another program does not count).
fn assert_brokers_gone(pids: &[u32], what: &dyn std::fmt::Display) {
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains("loadgen-cluster-"),
            "broker {pid} still runs: {cmdline}\n{what}"
        );
    }
}

/// A 3 s run at a low rate on 3 brokers with RF=3 over `protocol`: the
/// delivery checks pass, the report records the factor, and neither a
/// broker nor its data is left afterwards.
fn run_on_a_local_3_node_cluster_with_replication_factor_3(protocol: &str) {
    build_shardlog();
    let report = tempfile::tempdir().unwrap();
    let report_dir = report.path().to_str().unwrap().to_string();
    let lg = Loadgen::spawn(&[
        "run",
        "--protocol",
        protocol,
        "--cluster",
        "3",
        "--replication-factor",
        "3",
        "--partitions",
        "2",
        "--message-size",
        "256",
        "--rate",
        "1000",
        "--consumers",
        "1",
        "--duration",
        "3s",
        "--quiet",
        "--report-dir",
        &report_dir,
    ]);
    let done = lg.wait(Duration::from_secs(180));
    assert_eq!(done.code, Some(0), "{done}");
    let pids = broker_pids(&done.stdout);
    assert_eq!(pids.len(), 3, "{done}");
    assert!(done.stdout.contains("PASS"), "{done}");
    assert!(
        done.stdout
            .contains("topic loadgen (2 partitions, replication factor 3)"),
        "{done}"
    );
    assert!(done.stdout.contains("3 brokers stopped"), "{done}");
    let json = read_json(&report.path().join("report.json"));
    let run = &json["runs"][0];
    assert_eq!(run["replication_factor"], 3, "{run}");
    assert_eq!(run["spec"]["replication_factor"], 3, "{run}");
    assert_eq!(run["checks"]["lost"], 0, "{run}");
    assert!(run["checks"]["delivered"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(json["targets"][0]["cluster_brokers"], 3);
    let html = std::fs::read_to_string(report.path().join("index.html")).unwrap();
    assert!(html.contains("replication factor 3"));
    assert_brokers_gone(&pids, &done);
    // The cluster's data directory was under loadgen's TMPDIR.
    done.assert_no_data_dir_left();
}

#[test]
fn a_native_run_on_a_local_3_node_cluster_with_replication_factor_3() {
    run_on_a_local_3_node_cluster_with_replication_factor_3("native");
}

/// Over Kafka the factor in the report is read back from Metadata's
/// replica lists, and the consumer and producer follow each partition's
/// leader from broker 1's Kafka listener.
#[test]
fn a_kafka_run_on_a_local_3_node_cluster_with_replication_factor_3() {
    run_on_a_local_3_node_cluster_with_replication_factor_3("kafka");
}

/// A second Ctrl-C exits without unwinding: the brokers must still be
/// killed and their data removed.
#[test]
fn a_second_sigint_still_stops_the_cluster_and_removes_its_data() {
    build_shardlog();
    let lg = Loadgen::spawn(&[
        "run",
        "--cluster",
        "3",
        "--partitions",
        "1",
        "--message-size",
        "256",
        "--rate",
        "500",
        "--duration",
        "60s",
        "--quiet",
    ]);
    lg.wait_started(Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1000));
    lg.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    lg.signal(libc::SIGINT);
    let done = lg.wait(Duration::from_secs(30));
    assert!(matches!(done.code, Some(130)), "{done}");
    assert_brokers_gone(&broker_pids(&done.stdout), &done);
    done.assert_no_data_dir_left();
}

/// The embedded broker is a single node: a factor above 1 is refused
/// before anything starts (exit 3, no hang), with the way out.
#[test]
fn the_embedded_broker_refuses_a_replication_factor_above_1() {
    let lg = Loadgen::spawn(&["run", "--replication-factor", "3", "--duration", "1s"]);
    let done = lg.wait(Duration::from_secs(20));
    assert_eq!(done.code, Some(3), "{done}");
    assert!(
        done.stderr
            .contains("the embedded broker is a single node: add --cluster 3"),
        "{done}"
    );
    assert!(
        !done.stdout.contains("started an embedded broker"),
        "{done}"
    );
    done.assert_no_data_dir_left();
}
