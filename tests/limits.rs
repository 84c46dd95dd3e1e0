//! Resource bounds: connections per shard, in-flight bytes (backpressure
//! instead of buffering), idle connections, cache memory.

mod common;

use bytes::{Bytes, BytesMut};
use common::{ok, BrokerProc};
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::protocol::frame::{finish_frame, ApiKey, FrameHeader};
use shardlog::protocol::messages::{encode_produce, Acks, FetchPartition, FetchRequest};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn produce_frame(topic: &str, value_bytes: usize, id: u32) -> BytesMut {
    let mut bb = BatchBuilder::new();
    let v = vec![b'x'; 1024];
    for _ in 0..value_bytes / 1024 {
        bb.push(1, None, Some(&v), &[]);
    }
    let f: Bytes = bb.finish(Compression::None, ProducerIds::NONE);
    let mut b = BytesMut::new();
    let start = FrameHeader {
        api_key: ApiKey::Produce as u16,
        api_version: 0,
        request_id: id,
    }
    .begin(&mut b);
    encode_produce(
        &mut b,
        Acks::Leader,
        5000,
        &[(topic, vec![(0, std::slice::from_ref(&f))])],
    );
    finish_frame(&mut b, start);
    b
}

fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn connections_over_the_per_shard_limit_are_refused() {
    let b = BrokerProc::start(&["--set", "max_connections_per_shard=3"]);
    // 2 shards x 3: six connections are served (handed out round-robin).
    let mut held: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(&b.native).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&b.native).unwrap();
    assert!(
        is_closed(&mut extra),
        "the seventh connection is closed at once"
    );
    assert!(
        b.stderr().contains("max_connections_per_shard"),
        "the refusal is logged with the knob's name"
    );
    // Freeing one makes room again.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(300));
    ok(b.cli(&["topic", "list"], None));
}

#[test]
fn a_client_that_does_not_read_responses_gets_backpressure_not_buffering() {
    let b = BrokerProc::start(&["--set", "max_inflight_bytes_per_connection=8388608"]);
    ok(b.cli(&["topic", "create", "bp", "--partitions", "1"], None));
    // 4 MiB of data, so every fetch from offset 0 answers with up to 1 MiB.
    let mut s = TcpStream::connect(&b.native).unwrap();
    for id in 0..16u32 {
        s.write_all(&produce_frame("bp", 256 << 10, id)).unwrap();
    }
    let mut acks = vec![0u8; 1];
    s.read_exact(&mut acks).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = rss_kib(b.pid());
    // Ask for 1 MiB answers over and over, never reading one.
    let mut s = TcpStream::connect(&b.native).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sent = 0u32;
    let mut blocked = false;
    for id in 0..400_000u32 {
        let req = fetch_frame("bp", 1 << 20, id);
        if s.write_all(&req).is_err() {
            blocked = true;
            break;
        }
        sent += 1;
    }
    assert!(
        blocked,
        "the broker kept reading {sent} fetches whose 1 MiB answers nobody collects"
    );
    let rss_after = rss_kib(b.pid());
    assert!(
        rss_after < rss_before + 256 * 1024,
        "broker memory grew by {} MiB while the client stalled ({sent} fetches read)",
        (rss_after - rss_before) / 1024
    );
    // Other clients are served meanwhile.
    ok(b.cli(&["topic", "list"], None));
    drop(s);
}

fn fetch_frame(topic: &str, max_bytes: u32, id: u32) -> BytesMut {
    let mut b = BytesMut::new();
    let start = FrameHeader {
        api_key: ApiKey::Fetch as u16,
        api_version: 0,
        request_id: id,
    }
    .begin(&mut b);
    FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes,
        topics: vec![(
            topic.to_string(),
            vec![FetchPartition {
                partition: 0,
                offset: 0,
                max_bytes,
            }],
        )],
    }
    .encode(&mut b);
    finish_frame(&mut b, start);
    b
}

#[test]
fn idle_connections_are_closed() {
    let b = BrokerProc::start(&["--set", "idle_timeout_ms=300"]);
    let mut s = TcpStream::connect(&b.native).unwrap();
    let t = Instant::now();
    assert!(is_closed(&mut s));
    assert!(t.elapsed() >= Duration::from_millis(250));
    let _ = s.write_all(b"late");
}
