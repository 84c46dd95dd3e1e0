//! `--protocol kafka` (librdkafka) against the embedded broker's Kafka
//! listener: a run passes its checks and reports what the client did, and
//! the delivery checks still catch a consumer that loses messages.
//!
//! Short runs (≈1-2 s measured at 2000 msg/s), like tests/loadgen.rs.

mod common;

use common::{
    assert_a_lossy_consumer_fails_the_run, assert_counts_match, env_for, run_binary, small,
};
use loadgen::embedded::EmbeddedBroker;
use loadgen::runner;
use loadgen::transport::Protocol;
use loadgen::workload::WorkloadSpec;
use shardlog::protocol::messages::Acks;

#[test]
fn the_embedded_broker_listens_for_kafka_when_asked() {
    let native = EmbeddedBroker::start(None, None, Protocol::Native).unwrap();
    assert_eq!(native.kafka_addr(), None);
    assert_eq!(native.addr(), native.native_addr());
    native.shutdown();
    let kafka = EmbeddedBroker::start(None, None, Protocol::Kafka).unwrap();
    let addr = kafka.kafka_addr().expect("a Kafka listener");
    assert_eq!(kafka.addr(), addr);
    assert_ne!(addr, kafka.native_addr());
    assert_eq!(kafka.info().addr, addr);
    kafka.shutdown();
}

/// The binary, end to end: embedded broker with its Kafka listener, an
/// idempotent (acks=all) lz4 producer with keys, a report that says so.
#[test]
fn a_kafka_run_passes_its_checks_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_binary(
        &[
            "run",
            "--quiet",
            "--protocol",
            "kafka",
            "--acks",
            "all",
            "--compression",
            "lz4",
            "--keys",
            "random",
            "--partitions",
            "2",
            "--message-size",
            "256",
            "--rate",
            "2000",
            "--warmup",
            "300ms",
            // Spans at least one librdkafka statistics report (1 s), which
            // carries the batch and compression figures.
            "--duration",
            "2s",
        ],
        dir.path(),
        0,
    );
    // The version probe spoke ApiVersions and Metadata to the listener.
    assert!(stdout.contains("target kafka: Kafka API: "), "{stdout}");
    assert!(stdout.contains("-> PASS"), "{stdout}");
    assert!(stdout.contains("enable.idempotence=true"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], true);
    let target = &json["targets"][0];
    assert_eq!(target["protocol"], "kafka");
    assert_eq!(target["embedded"], true);
    let version = &target["version"];
    assert!(
        version["api_versions"]["Produce"][1].as_i64().unwrap() >= 3,
        "{version}"
    );
    assert_eq!(version["brokers"].as_array().unwrap().len(), 1, "{version}");
    let p = &json["runs"][0];
    let checks = &p["checks"];
    assert_eq!(checks["lost"], 0);
    assert_eq!(checks["duplicated"], 0);
    assert_eq!(checks["reordered"], 0);
    assert_eq!(checks["misrouted"], 0);
    // 2.3 s at 2000 msg/s, all delivered; 2 s of it measured.
    assert!(checks["delivered"].as_u64().unwrap() >= 4000, "{checks}");
    assert_eq!(p["window_sent"], 4000);
    assert_eq!(p["publish"]["count"], 4000);
    assert_eq!(p["e2e"]["count"], 4000);
    let client = &p["client"];
    assert!(
        client["library"]
            .as_str()
            .unwrap()
            .starts_with("librdkafka "),
        "{client}"
    );
    let cfg = &client["producer_config"];
    assert_eq!(cfg["acks"], "all");
    assert_eq!(cfg["enable.idempotence"], "true");
    assert_eq!(cfg["compression.type"], "lz4");
    assert_eq!(cfg["batch.size"], "65536");
    assert_eq!(cfg["linger.ms"], "5");
    assert_eq!(client["consumer_config"]["enable.auto.commit"], "false");
    // Batches and compression come from librdkafka's statistics.
    let comp = &p["compression"];
    assert!(comp["batches"].as_u64().unwrap() > 0, "{comp}");
    assert!(comp["ratio"].as_f64().unwrap() > 1.3, "{comp}");
    assert!(dir.path().join("index.html").exists());
}

#[test]
fn a_kafka_consumer_that_skips_messages_fails_the_run() {
    assert_a_lossy_consumer_fails_the_run(Protocol::Kafka, "t-kafka-loss");
}

/// acks=1: not idempotent, so no retries; two consumers split the
/// partitions; every histogram holds exactly the measured messages.
#[test]
fn kafka_acks_1_counts_match_with_two_consumers() {
    let broker = EmbeddedBroker::start(None, None, Protocol::Kafka).expect("embedded broker");
    let rt = loadgen::build_runtime(Some(2), loadgen::priority::PRODUCER_NICE_DEFAULT).unwrap();
    let spec = WorkloadSpec {
        acks: Acks::Leader,
        consumers: 2,
        ..small("t-kafka-acks1")
    };
    let r = rt
        .block_on(runner::run(
            "acks1",
            &spec,
            &env_for(&broker, Protocol::Kafka),
        ))
        .unwrap();
    assert!(r.passed(), "{:?} {:?}", r.failures(), r.errors);
    assert_counts_match(&r);
    assert!(
        r.notes.iter().any(|n| n.contains("retries=0")),
        "{:?}",
        r.notes
    );
    let client = r.client.as_ref().expect("client info");
    assert_eq!(client.producer_config["message.send.max.retries"], "0");
    assert_eq!(client.producer_config["enable.idempotence"], "false");
    drop(rt);
    broker.shutdown();
}
