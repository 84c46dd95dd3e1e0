//! Memory under hostile load: the broker's peak RSS is measured (VmHWM)
//! against the bound the README states, with default budgets:
//!
//! - acks=1 and acks=all produce floods (8 Kafka connections sending
//!   ~53 MiB Produce requests back to back, no consumer);
//! - the acks=1 flood with ~6.8 MiB requests, and with an eighth of the
//!   batch cache (the issue's `shard_cache_bytes_max=64MiB`);
//! - a native closed-loop produce (the client library's producer, 2
//!   producers, 1 MiB batches, acks=1, no consumer);
//! - fetches asking for 2^31-1 bytes per partition on a topic of several
//!   hundred MB, alone and as a consumer asking for 1 GiB per fetch
//!   beside a producer;
//! - 24 connections each sending a nearly complete 64 MiB frame.
//!
//! During each load a fresh client connects every 50 ms and times its
//! Metadata round trip. Each test prints its figures (peak RSS, bound,
//! Metadata p50/p99). The flood
//! runs `SHARDLOG_FLOOD_SECS` seconds (default 4; the issue's case was 30).
//! By default the budgets are set small so a debug build fills them fast;
//! for the README's figures, run with the defaults on a release build:
//!
//! ```sh
//! cargo build --release
//! SHARDLOG_TEST_BIN=target/release/shardlog SHARDLOG_MEMORY_DEFAULTS=1 \
//!   SHARDLOG_FLOOD_SECS=30 cargo test --test memory_bounds -- --nocapture --test-threads 1
//! ```
//!
//! To find what delayed a slow probe, run one test with
//! `SHARDLOG_BROKER_ARGS='--set stall_report_ms=50'` (glommio's stall
//! detector) and `SHARDLOG_BROKER_LOG=/tmp/broker.log` (the broker's log
//! is copied there when the load ends); the slowest probe's time after the
//! load's start is printed.

mod common;

use bytes::Bytes;
use common::kafka::{framed, plain_batch, tn, Conn};
use common::BrokerProc;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const SHARDS: u64 = 2;

/// The memory settings a test runs with; the bound is the README's, as
/// `BrokerConfig::memory_bound` computes it.
struct Budgets {
    inflight: u64,
    unwritten: u64,
    cache: u64,
}

impl Budgets {
    /// The defaults with `SHARDLOG_MEMORY_DEFAULTS=1` (for figures from a
    /// release build); otherwise smaller budgets, so that a debug build
    /// fills and drains them within seconds.
    fn for_test() -> Budgets {
        if std::env::var("SHARDLOG_MEMORY_DEFAULTS").is_ok_and(|v| v == "1") {
            Budgets {
                inflight: 256 * MIB,
                unwritten: 128 * MIB,
                cache: 512 * MIB,
            }
        } else {
            Budgets {
                inflight: 128 * MIB,
                unwritten: 32 * MIB,
                cache: 64 * MIB,
            }
        }
    }

    fn args(&self) -> Vec<String> {
        [
            ("max_inflight_bytes_per_shard", self.inflight),
            ("max_unwritten_bytes_per_shard", self.unwritten),
            ("shard_cache_bytes_max", self.cache),
        ]
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
    }

    /// Starts the broker; `SHARDLOG_BROKER_ARGS` (whitespace-separated)
    /// adds arguments, e.g. `--set stall_report_ms=50` to find a slow probe.
    fn start(&self) -> BrokerProc {
        let mut args = self.args();
        if let Ok(extra) = std::env::var("SHARDLOG_BROKER_ARGS") {
            args.extend(extra.split_whitespace().map(String::from));
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        BrokerProc::start(&args)
    }

    fn bound(&self, connections: u64) -> u64 {
        shardlog::config::BrokerConfig {
            max_inflight_bytes_per_shard: self.inflight as usize,
            max_unwritten_bytes_per_shard: self.unwritten as usize,
            shard_cache_bytes_max: self.cache as usize,
            ..Default::default()
        }
        .memory_bound(SHARDS as usize, connections as usize)
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn peak_rss(b: &BrokerProc) -> u64 {
    status_kib(b.pid(), "VmHWM:") * 1024
}

fn create_topic(c: &mut Conn, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![creatable_topic(name, partitions)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 4, &req);
    assert_eq!(
        r.topics[0].error_code, 0,
        "create {name}: {:?}",
        r.topics[0]
    );
}

fn creatable_topic(name: &str, partitions: i32) -> create_topics_request::CreatableTopic {
    create_topics_request::CreatableTopic::default()
        .with_name(tn(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

/// One Kafka batch of `n` records of `value_len` bytes.
fn batch(n: usize, value_len: usize) -> Bytes {
    let value = Bytes::from(vec![b'v'; value_len]);
    plain_batch((0..n).map(|_| value.clone()))
}

/// A Produce v7 request with one ~`batch_bytes` batch per partition.
fn produce_request(topic: &str, partitions: i32, batch_bytes: usize, acks: i16) -> Vec<u8> {
    let b = batch(batch_bytes / 1024, 1000);
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        produce_request::PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(b.clone()))
                    })
                    .collect(),
            )]);
    framed(ApiKey::Produce, 7, 1, &req)
}

/// Time a fresh client's Metadata round trip: (connect, connect + round trip).
fn metadata_round_trip(addr: &str) -> (Duration, Duration) {
    let t = Instant::now();
    let mut c = Conn::new(addr);
    let connected = t.elapsed();
    let r: MetadataResponse = c.call(ApiKey::Metadata, 1, &MetadataRequest::default());
    assert!(!r.brokers.is_empty());
    (connected, t.elapsed())
}

/// A fresh client every 50 ms, timing its Metadata round trip (connect
/// included), for as long as a load runs.
struct MetadataProbe {
    stop: Arc<AtomicBool>,
    /// The broker's log, copied to `SHARDLOG_BROKER_LOG` when the load ends.
    log: std::path::PathBuf,
    thread: std::thread::JoinHandle<Vec<(Duration, Duration)>>,
}

impl MetadataProbe {
    fn start(b: &BrokerProc) -> MetadataProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, stop2) = (b.kafka.clone().unwrap(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                times.push(metadata_round_trip(&addr));
                std::thread::sleep(Duration::from_millis(50));
            }
            times
        });
        MetadataProbe {
            stop,
            log: b.stderr_path.clone(),
            thread,
        }
    }

    /// Stop, print the figures under `load`, and check that no fresh
    /// client waited 10 s (a broker that stops answering new clients under
    /// load fails here; the 100 ms p99 target is measured, not asserted).
    fn finish(self, load: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap();
        // The connect alone (the kernel's handshake, no broker code) tells
        // how long the probe itself waited for a core.
        let mut connects: Vec<Duration> = samples.iter().map(|s| s.0).collect();
        let mut times: Vec<Duration> = samples.iter().map(|s| s.1).collect();
        // When the slowest probe ran (at roughly 50 ms + its predecessors'
        // round trips each), to find it in a broker log.
        let slowest = (0..samples.len()).max_by_key(|&i| samples[i].1).unwrap();
        let slowest_at: Duration = samples[..slowest]
            .iter()
            .map(|s| s.1 + Duration::from_millis(50))
            .sum();
        connects.sort();
        times.sort();
        let max = *times.last().expect("at least one probe");
        println!(
            "fresh-client Metadata during {load}: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
             ({:.1} s after the load started; of which connect: p50 {:.1} ms, p99 {:.1} ms)",
            times.len(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(max),
            slowest_at.as_secs_f64(),
            ms(percentile(&connects, 0.5)),
            ms(percentile(&connects, 0.99)),
        );
        if let Ok(to) = std::env::var("SHARDLOG_BROKER_LOG") {
            std::fs::copy(&self.log, &to).unwrap();
            println!("broker log copied to {to}");
        }
        assert!(
            max < Duration::from_secs(10),
            "a fresh client waited {max:?}"
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Send `request` back to back on `conns` connections for `secs`, reading
/// responses as they come; returns (requests sent, responses read, error
/// codes seen other than 0).
fn flood(addr: &str, request: Arc<Vec<u8>>, conns: usize, secs: u64) -> (u64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let writers_done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let s = TcpStream::connect(addr).unwrap();
        sockets.push(s.try_clone().unwrap());
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = Conn {
            s: s.try_clone().unwrap(),
            corr: 0,
        };
        let (stop, sent, answered, errors) =
            (stop.clone(), sent.clone(), answered.clone(), errors.clone());
        let mine = Arc::new(AtomicU64::new(0));
        let mine2 = mine.clone();
        let request = request.clone();
        let mut w = s;
        let stop_w = stop.clone();
        let done = writers_done.clone();
        writers.push(std::thread::spawn(move || {
            while !stop_w.load(Ordering::Relaxed) {
                if w.write_all(&request).is_err() {
                    break;
                }
                mine.fetch_add(1, Ordering::SeqCst);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
        readers.push(std::thread::spawn(move || {
            let mut read = 0u64;
            loop {
                // Stop once every request this connection sent is answered.
                if done.load(Ordering::SeqCst) && read >= mine2.load(Ordering::SeqCst) {
                    break;
                }
                let Some(mut f) = reader.read_frame() else {
                    break;
                };
                ResponseHeader::decode(&mut f, 0).unwrap();
                let r = ProduceResponse::decode(&mut f, 7).unwrap();
                for p in &r.responses[0].partition_responses {
                    if p.error_code != 0 {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                read += 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in writers {
        t.join().unwrap();
    }
    writers_done.store(true, Ordering::SeqCst);
    // A reader may already be blocked reading after its last answer:
    // once every answer is in (bounded wait), close the sockets under it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < sent.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in &sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for t in readers {
        t.join().unwrap();
    }
    (
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    )
}

#[test]
fn acks1_produce_flood_stays_within_the_memory_bound_and_metadata_is_served() {
    produce_flood(Budgets::for_test(), 1, 6_800_000);
}

#[test]
fn acks_all_produce_flood_stays_within_the_memory_bound_and_metadata_is_served() {
    produce_flood(Budgets::for_test(), -1, 6_800_000);
}

/// The issue's variant with ~6.7 MiB requests: 8 times as many requests
/// (and frames, answers, appends) for the same bytes.
#[test]
fn acks1_flood_of_smaller_requests_stays_within_the_memory_bound() {
    produce_flood(Budgets::for_test(), 1, 850_000);
}

/// The issue's variant with a small batch cache (`shard_cache_bytes_max`
/// of 64 MiB at the defaults): the cache gives back
/// memory sooner, so the other budgets fill instead; the bound shrinks.
#[test]
fn acks1_flood_with_a_small_cache_stays_within_the_smaller_bound() {
    let mut budgets = Budgets::for_test();
    // 64 MiB at the defaults, as in the issue; 16 MiB at the test's.
    budgets.cache = (budgets.cache / 8).max(16 * MIB);
    produce_flood(budgets, 1, 6_800_000);
}

fn flood_secs() -> u64 {
    std::env::var("SHARDLOG_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// 8 connections sending Produce requests of 8 batches of ~`batch_bytes`
/// back to back with `acks`, no consumer; peak RSS against the bound,
/// Metadata timed.
fn produce_flood(budgets: Budgets, acks: i16, batch_bytes: usize) {
    let b = budgets.start();
    let kafka = b.kafka.clone().unwrap();
    let mut admin = Conn::new(&kafka);
    create_topic(&mut admin, "flood", 8);
    let idle = peak_rss(&b);
    // One batch per partition: 8 x 6.8 MB batches make a ~53 MiB request.
    let request = Arc::new(produce_request("flood", 8, batch_bytes, acks));
    let secs = flood_secs();
    let probe = MetadataProbe::start(&b);
    let started = Instant::now();
    let (sent, answered, errors) = flood(&kafka, request.clone(), 8, secs);
    let took = started.elapsed();
    let load = format!(
        "the acks={acks} flood of {:.1} MiB requests, cache {} MiB per shard",
        request.len() as f64 / MIB as f64,
        budgets.cache / MIB
    );
    probe.finish(&load);
    let peak = peak_rss(&b);
    let bound = budgets.bound(12);
    let mb = (answered * request.len() as u64) as f64 / MIB as f64;
    println!(
        "{load}: {sent} requests of {:.1} MiB sent, {answered} answered ({mb:.0} MiB in {:.1} s, {:.0} MiB/s); \
         peak RSS {} MiB (idle {} MiB), documented bound {} MiB",
        request.len() as f64 / MIB as f64,
        took.as_secs_f64(),
        mb / took.as_secs_f64(),
        peak / MIB,
        idle / MIB,
        bound / MIB
    );
    assert_eq!(answered, sent, "every produce answered");
    assert_eq!(errors, 0, "no produce refused");
    assert!(peak <= bound, "peak RSS {peak} over the bound {bound}");
}

/// The native client's producer at its maximum rate, as `loadgen run
/// --producers 2 --consumers 0 --batch-bytes 1MiB --rate 0 --acks 1` drives
/// it (the issue's case reached 3.6 GB): 2 producers on their own
/// connections, 1 KB records, 1 MiB batches, acks=1, no consumer.
#[test]
fn native_closed_loop_produce_stays_within_the_memory_bound() {
    use shardlog::client::{Client, Producer, ProducerConfig};
    use shardlog::protocol::messages::Acks;
    let budgets = Budgets::for_test();
    let b = budgets.start();
    let kafka = b.kafka.clone().unwrap();
    let mut admin = Conn::new(&kafka);
    create_topic(&mut admin, "native", 4);
    let secs = flood_secs();
    let probe = MetadataProbe::start(&b);
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (acked, failed) = rt.block_on(async {
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut producers = Vec::new();
        for _ in 0..2 {
            let client = Client::connect(&b.native).await.unwrap();
            let (acked, failed) = (acked.clone(), failed.clone());
            let cfg = ProducerConfig {
                acks: Acks::Leader,
                batch_bytes: 1 << 20,
                request_bytes_max: 4 << 20,
                on_batch_acked: Some(Arc::new(move |a| {
                    if a.error.is_some() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        acked.fetch_add(a.uncompressed_bytes as u64, Ordering::Relaxed);
                    }
                })),
                ..ProducerConfig::default()
            };
            producers.push(tokio::spawn(async move {
                let p = Producer::new(client, cfg);
                let value = vec![b'v'; 1000];
                let deadline = Instant::now() + Duration::from_secs(secs);
                let mut i = 0u32;
                while Instant::now() < deadline {
                    // A batch's worth per partition, then the next one.
                    for _ in 0..1000 {
                        p.send_to("native", i % 4, None, Some(&value), &[], 0, 0)
                            .await
                            .unwrap();
                    }
                    i += 1;
                }
                p.flush().await.unwrap();
            }));
        }
        for p in producers {
            p.await.unwrap();
        }
        (
            acked.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        )
    });
    let took = started.elapsed();
    probe.finish("the native closed-loop produce");
    let peak = peak_rss(&b);
    let bound = budgets.bound(4);
    println!(
        "native closed-loop produce: {:.0} MiB acknowledged in {:.1} s ({:.0} MiB/s); peak RSS {} MiB, documented bound {} MiB",
        acked as f64 / MIB as f64,
        took.as_secs_f64(),
        acked as f64 / MIB as f64 / took.as_secs_f64(),
        peak / MIB,
        bound / MIB
    );
    assert_eq!(failed, 0, "no batch refused");
    assert!(acked > 0, "the producers were acknowledged");
    assert!(peak <= bound, "peak RSS {peak} over the bound {bound}");
}

/// A broker with the test's budgets and topic `big` (4 partitions) filled
/// with ~430 MiB (4 MiB batches, acks=all); its Kafka address.
fn broker_with_a_big_topic(budgets: &Budgets) -> (BrokerProc, String) {
    let b = budgets.start();
    let kafka = b.kafka.clone().unwrap();
    fill_big_topic(&mut Conn::new(&kafka));
    (b, kafka)
}

/// Fill topic `big` (4 partitions) with ~430 MiB: 4 MiB batches, acks=all.
fn fill_big_topic(admin: &mut Conn) {
    create_topic(admin, "big", 4);
    let request = produce_request("big", 4, 4 << 20, -1);
    for _ in 0..27 {
        admin.s.write_all(&request).unwrap();
        let mut f = admin.read_frame().unwrap();
        ResponseHeader::decode(&mut f, 0).unwrap();
        let r = ProduceResponse::decode(&mut f, 7).unwrap();
        assert!(r.responses[0]
            .partition_responses
            .iter()
            .all(|p| p.error_code == 0));
    }
}

/// A Fetch v11 frame of topic `big` asking for `max_bytes` in all and
/// per partition, from `offsets[p]`.
fn big_fetch(max_bytes: i32, offsets: &[i64; 4]) -> Vec<u8> {
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(tn("big"))
            .with_partitions(
                (0..4)
                    .map(|p| {
                        fetch_request::FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offsets[p as usize])
                            .with_partition_max_bytes(max_bytes)
                    })
                    .collect(),
            )]);
    framed(ApiKey::Fetch, 11, 1, &fetch)
}

#[test]
fn huge_fetches_are_capped_by_the_broker() {
    let budgets = Budgets::for_test();
    let (b, kafka) = broker_with_a_big_topic(&budgets);
    let frame = Arc::new(big_fetch(i32::MAX, &[0; 4]));
    let largest = Arc::new(AtomicU64::new(0));
    let probe = MetadataProbe::start(&b);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (frame, largest, addr) = (frame.clone(), largest.clone(), kafka.clone());
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr);
                for _ in 0..10 {
                    c.s.write_all(&frame).unwrap();
                    let f = c.read_frame().expect("a fetch answer");
                    largest.fetch_max(f.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    probe.finish("huge fetches");
    let largest = largest.load(Ordering::Relaxed);
    let peak = peak_rss(&b);
    let bound = budgets.bound(3);
    println!(
        "fetch of 2^31-1 bytes x 4 partitions: largest answer {:.1} MiB (fetch_max_bytes 55 MiB); peak RSS {} MiB, bound {} MiB",
        largest as f64 / MIB as f64,
        peak / MIB,
        bound / MIB
    );
    // The cap, plus one batch that always goes.
    assert!(largest > 8 * MIB, "the fetch returned data");
    assert!(largest <= 55 * MIB + 5 * MIB, "answer of {largest} bytes");
    assert!(peak <= bound, "peak RSS {peak} over the bound {bound}");
}

/// The issue's confluent-kafka consumer with `fetch.max.bytes` of 1 GB
/// reading a large topic while a producer writes to it: a consumer that
/// asks for 1 GiB per fetch and per partition and advances through the
/// topic, beside an acks=1 flood of the same topic.
#[test]
fn a_consumer_asking_for_a_gibibyte_beside_a_producer_stays_within_the_bound() {
    let budgets = Budgets::for_test();
    let (b, kafka) = broker_with_a_big_topic(&budgets);
    let secs = flood_secs();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (addr, stop) = (kafka.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = Conn::new(&addr);
            let mut offsets = [0i64; 4];
            let (mut consumed, mut largest) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                c.s.write_all(&big_fetch(1 << 30, &offsets)).unwrap();
                let mut f = c.read_frame().expect("a fetch answer");
                largest = largest.max(f.len() as u64);
                ResponseHeader::decode(&mut f, 0).unwrap();
                let r = FetchResponse::decode(&mut f, 11).unwrap();
                for p in &r.responses[0].partitions {
                    // The test's batches carry timestamp 0, so retention
                    // deletes segments under the reader: it starts again
                    // from the log start, as auto.offset.reset=earliest.
                    if p.error_code == 1 {
                        offsets[p.partition_index as usize] = p.log_start_offset;
                        continue;
                    }
                    assert_eq!(p.error_code, 0, "fetch of partition {}", p.partition_index);
                    let records = p.records.clone().unwrap_or_default();
                    consumed += records.len() as u64;
                    offsets[p.partition_index as usize] =
                        next_offset(&records).unwrap_or(offsets[p.partition_index as usize]);
                }
            }
            (consumed, largest)
        })
    };
    let probe = MetadataProbe::start(&b);
    let request = Arc::new(produce_request("big", 4, 4 << 20, 1));
    let (sent, answered, errors) = flood(&kafka, request, 1, secs);
    stop.store(true, Ordering::Relaxed);
    let (consumed, largest) = consumer.join().unwrap();
    probe.finish("a 1 GiB-per-fetch consumer beside a producer");
    let peak = peak_rss(&b);
    let bound = budgets.bound(4);
    println!(
        "1 GiB-per-fetch consumer beside a producer: {} MiB consumed, largest answer {:.1} MiB, \
         {answered} of {sent} produce requests answered; peak RSS {} MiB, bound {} MiB",
        consumed / MIB,
        largest as f64 / MIB as f64,
        peak / MIB,
        bound / MIB
    );
    assert_eq!(errors, 0, "no produce refused");
    assert!(consumed > 16 * MIB, "the consumer advanced");
    assert!(largest <= 55 * MIB + 5 * MIB, "answer of {largest} bytes");
    assert!(peak <= bound, "peak RSS {peak} over the bound {bound}");
}

/// The offset after the last whole Kafka batch in `records`: a batch's
/// base offset is its bytes 0..8 and its last offset delta bytes 23..27
/// (docs/kafka.md); its length (bytes 8..12) counts from byte 12.
fn next_offset(records: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut next = None;
    while records.len() >= at + 27 {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        if records.len() < at + 12 + len {
            break;
        }
        let delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap());
        next = Some(base + delta as i64 + 1);
        at += 12 + len;
    }
    next
}

#[test]
fn nearly_complete_large_frames_are_charged_before_they_are_read() {
    let budgets = Budgets::for_test();
    let b = budgets.start();
    let kafka = b.kafka.clone().unwrap();
    let frame_len: usize = (64 << 20) - 1024;
    let body = vec![0u8; frame_len - 1];
    let sent_total = Arc::new(AtomicU64::new(0));
    let body = Arc::new(body);
    let mut held = Vec::new();
    let mut writers = Vec::new();
    let probe = MetadataProbe::start(&b);
    for _ in 0..24 {
        let s = TcpStream::connect(&kafka).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut w = s.try_clone().unwrap();
        held.push(s);
        let (body, sent_total) = (body.clone(), sent_total.clone());
        writers.push(std::thread::spawn(move || {
            let _ = w.write_all(&(frame_len as i32).to_be_bytes());
            // Write in pieces so a stalled socket stops us with a timeout
            // and we can count what went out.
            for piece in body.chunks(1 << 20) {
                if w.write_all(piece).is_err() {
                    return;
                }
                sent_total.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    probe.finish("24 nearly complete 64 MiB frames");
    let peak = peak_rss(&b);
    let bound = budgets.bound(24);
    println!(
        "24 connections x nearly complete 64 MiB frames: {} MiB sent by clients; peak RSS {} MiB, bound {} MiB",
        sent_total.load(Ordering::Relaxed) / MIB,
        peak / MIB,
        bound / MIB
    );
    assert!(peak <= bound, "peak RSS {peak} over the bound {bound}");
    // Readers that were not admitted hold nothing: far less than 24 frames.
    assert!(peak < 24 * 64 * MIB / 2);
    drop(held);
}
