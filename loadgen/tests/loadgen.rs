//! loadgen against a real embedded broker: reports are complete and
//! parse, histogram counts equal the messages measured, and the delivery
//! checks really fail a run that loses messages.
//!
//! Runs are short (≈1 s measured, low rates) so the suite stays well under
//! a minute on 2 cores even in a debug build.

mod common;

use common::{
    assert_a_lossy_consumer_fails_the_run, assert_counts_match, env_for, run_binary, small,
};
use loadgen::embedded::EmbeddedBroker;
use loadgen::machine::{MachineInfo, Versions};
use loadgen::report::{self, hgrm, ReportMeta};
use loadgen::runner;
use loadgen::sweep::{self, Matrix};
use loadgen::transport::Protocol;
use loadgen::workload::WorkloadSpec;
use shardlog::client::{Client, Producer, ProducerConfig};
use shardlog::format::Compression;
use std::time::{Duration, Instant};

#[test]
fn sweep_writes_a_complete_report_that_parses() {
    let broker = EmbeddedBroker::start(None, None, Protocol::Native).expect("embedded broker");
    let rt = loadgen::build_runtime(Some(2)).unwrap();
    let base = WorkloadSpec {
        delete_topic_after: true,
        ..small("t-sweep")
    };
    let matrix = Matrix {
        batch_bytes: vec![1024, 16 << 10],
        compression: vec![Compression::None, Compression::Lz4],
        acks: vec![base.acks],
        linger_ms: vec![base.linger_ms],
    };
    let points = sweep::points(&base, &matrix);
    assert_eq!(points.len(), 4);
    let results = rt
        .block_on(sweep::run(&points, &env_for(&broker, Protocol::Native)))
        .unwrap();
    for r in &results {
        assert!(r.passed(), "{}: {:?} {:?}", r.label, r.failures(), r.errors);
        assert_counts_match(r);
        // Both 1 s windows at 2000 msg/s.
        assert!(
            r.produced.msgs_per_s > 1500.0,
            "{}: {:?}",
            r.label,
            r.produced
        );
        assert!(!r.timeseries.is_empty());
    }
    let lz4 = results
        .iter()
        .find(|r| r.label == "16k lz4 acks=1")
        .unwrap();
    assert!(
        lz4.compression.ratio > 1.3,
        "lz4 ratio {}",
        lz4.compression.ratio
    );

    let dir = tempfile::tempdir().unwrap();
    let meta = ReportMeta {
        kind: "sweep",
        title: "test sweep".into(),
        description: None,
        created_unix_ms: 0,
        wall_s: 1.0,
        command: vec!["loadgen".into(), "sweep".into()],
        profile: None,
        machine: MachineInfo::collect(),
        versions: Versions::current(),
        broker: broker.info(),
        protocol: "native".into(),
        matrix: Some(matrix.info()),
    };
    let written = report::write(dir.path(), &meta, &results).unwrap();
    assert_eq!(written.hgrm.len(), 4 * 3);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "loadgen-report/1");
    assert_eq!(json["passed"], true);
    assert!(json["machine"]["cpu_model"].is_string());
    assert!(json["machine"]["kernel"].is_string());
    assert!(json["versions"]["loadgen"].is_string());
    let pts = json["points"].as_array().unwrap();
    assert_eq!(pts.len(), 4);
    for (p, r) in pts.iter().zip(&results) {
        assert_eq!(p["label"], r.label.as_str());
        assert_eq!(p["spec"]["batch_bytes"], r.spec.batch_bytes);
        assert!(p["timeseries"].as_array().is_some_and(|t| !t.is_empty()));
        assert_eq!(p["checks"]["lost"], 0);
        for (key, count) in [
            ("publish_hgrm", r.publish.count),
            ("publish_delay_hgrm", r.publish_delay.count),
            ("e2e_hgrm", r.e2e.count),
        ] {
            let name = p["files"][key].as_str().unwrap();
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let parsed = hgrm::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.total_count, count, "{name}");
            assert_eq!(parsed.rows.last().unwrap().total_count, count, "{name}");
        }
        // The json percentiles are the histogram's.
        assert_eq!(p["e2e"]["p99_us"], r.e2e.p99_us);
    }
    for c in &written.charts {
        let svg = std::fs::read_to_string(c).unwrap();
        assert!(svg.contains("<svg"), "{}", c.display());
    }
    let html = std::fs::read_to_string(&written.index_html).unwrap();
    assert!(html.contains("<table") && html.contains("<svg") && html.contains("16k lz4 acks=1"));
    drop(rt);
    broker.shutdown();
}

#[test]
fn a_consumer_that_skips_messages_fails_the_run() {
    assert_a_lossy_consumer_fails_the_run(Protocol::Native, "t-loss");
}

#[test]
fn closed_loop_counts_match_and_publish_delay_is_zero() {
    let broker = EmbeddedBroker::start(None, None, Protocol::Native).expect("embedded broker");
    let rt = loadgen::build_runtime(Some(2)).unwrap();
    let spec = WorkloadSpec {
        rate: 0,
        duration_ms: 600,
        warmup_ms: 200,
        buffer_bytes: 1 << 20,
        consumers: 2,
        ..small("t-closed")
    };
    let r = rt
        .block_on(runner::run(
            "closed",
            &spec,
            &env_for(&broker, Protocol::Native),
        ))
        .unwrap();
    assert!(r.passed(), "{:?} {:?}", r.failures(), r.errors);
    assert!(r.closed_loop);
    assert_counts_match(&r);
    assert_eq!(r.publish_delay.max_us, 0);
    assert!(r.notes.iter().any(|n| n.contains("closed loop")));
    drop(rt);
    broker.shutdown();
}

#[test]
fn the_binary_exits_nonzero_when_messages_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_binary(
        &[
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
            "1s",
            "--fault-drop-every",
            "7",
        ],
        dir.path(),
        1,
    );
    assert!(stdout.contains("started an embedded broker"), "{stdout}");
    assert!(
        stdout.contains("FAILED") && stdout.contains("lost"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], false);
    assert!(json["points"][0]["checks"]["lost"].as_u64().unwrap() > 0);
}

/// Regression (found by the batch-size sweep): with linger > 0 the client's
/// idle sender waited without a deadline, so a new batch was only sent once
/// some batch filled up; at 1 MiB batches latency was ~100 ms, not linger.
#[test]
fn a_lone_record_is_sent_after_linger_not_when_a_batch_fills() {
    let broker = EmbeddedBroker::start(None, None, Protocol::Native).expect("embedded broker");
    let rt = loadgen::build_runtime(Some(2)).unwrap();
    rt.block_on(async {
        let client = Client::connect(&broker.addr()).await.unwrap();
        client.create_topic("t-linger", 1, &[]).await.unwrap();
        let producer = Producer::new(
            client,
            ProducerConfig {
                batch_bytes: 1 << 20,
                linger_ms: 20,
                ..ProducerConfig::default()
            },
        );
        let t0 = Instant::now();
        let delivery = producer
            .send_to("t-linger", 0, None, Some(b"x"), &[], 0, 0)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(3), delivery.wait())
            .await
            .expect("a lone record was not sent within 3 s (linger is 20 ms)")
            .unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
    });
    drop(rt);
    broker.shutdown();
}
