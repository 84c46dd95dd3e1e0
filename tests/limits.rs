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
    produce_frame_to(topic, 0, value_bytes, id, Acks::Leader)
}

fn produce_frame_to(
    topic: &str,
    partition: u32,
    value_bytes: usize,
    id: u32,
    acks: Acks,
) -> BytesMut {
    let mut bb = BatchBuilder::new();
    let v = vec![b'x'; 1024];
    // Today's time: records from 1970 are past retention, and the next
    // retention check rolls and deletes them (fetches at offset 0 were
    // then answered OFFSET_OUT_OF_RANGE, 57 bytes each, in 3 of 6 debug
    // runs of the write-stall test).
    let now = shardlog::client::producer::now_ms();
    for _ in 0..value_bytes / 1024 {
        bb.push(now, None, Some(&v), &[]);
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
        acks,
        5000,
        &[(topic, vec![(partition, std::slice::from_ref(&f))])],
    );
    finish_frame(&mut b, start);
    b
}

/// Sixteen 256 KiB batches to partition 0 of `topic` (acks=1), every
/// answer read; then wait (bounded) until a fetch from offset 0 sees them.
/// Why wait: the high watermark is the durable offset, so acks=1 data is
/// visible after the flusher's next sync, up to `flush_interval_ms` (1 s)
/// later. A fixed 1 s sleep here let the write-stall test's fetches come
/// back empty in 3 of 6 debug runs, and its connection never stalled.
fn write_4_mib(b: &BrokerProc, topic: &str) {
    let mut s = TcpStream::connect(&b.native).unwrap();
    for id in 0..16u32 {
        s.write_all(&produce_frame(topic, 256 << 10, id)).unwrap();
    }
    for _ in 0..16 {
        read_answer(&mut s);
    }
    for _ in 0..200 {
        let mut c = TcpStream::connect(&b.native).unwrap();
        c.write_all(&fetch_frame(topic, 1 << 20, 0)).unwrap();
        if read_answer(&mut c).len() >= 512 << 10 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the 4 MiB written to {topic} did not become visible in 10 s");
}

/// One native answer frame (its length prefix, u32 little-endian, read
/// first); the bytes after the prefix.
fn read_answer(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    body
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
    write_4_mib(&b, "bp");
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

/// A fetch of many partitions answers within its `max_bytes` (plus at most
/// one chunk, as Kafka's first batch), however many partitions hold a
/// batch larger than their share. Before, every partition returned its
/// first batch: 1,000 partitions of 1 MiB batches answered a 32 MiB fetch
/// with 0.5–0.8 GB, which the client refused (its limit is 512 MiB) and the
/// broker kept charged against its memory budget, stalling producers.
#[test]
fn a_fetch_of_many_partitions_answers_within_its_max_bytes() {
    let b = BrokerProc::start(&[]);
    let parts = 64u32;
    ok(b.cli(
        &[
            "topic",
            "create",
            "wide",
            "--partitions",
            &parts.to_string(),
        ],
        None,
    ));
    // One 256 KiB batch per partition: 16 MiB in all, acks=all so that
    // every batch is on disk and readable once acknowledged (acks=1 data
    // is read from disk only after the flusher wrote it, up to
    // flush_interval_ms later: a fixed sleep raced with it).
    let mut s = TcpStream::connect(&b.native).unwrap();
    for p in 0..parts {
        s.write_all(&produce_frame_to("wide", p, 256 << 10, p, Acks::All))
            .unwrap();
    }
    for _ in 0..parts {
        read_answer(&mut s);
    }
    let max_bytes = 2u32 << 20;
    let req = fetch_frame_of(
        "wide",
        (0..parts)
            .map(|p| FetchPartition {
                partition: p,
                offset: 0,
                max_bytes: 1 << 20,
            })
            .collect(),
        max_bytes,
        1000,
    );
    s.write_all(&req).unwrap();
    let len = read_answer(&mut s).len();
    let one_batch = (256 << 10) + 4096;
    eprintln!("fetch of {parts} partitions, max_bytes {max_bytes}: answer of {len} bytes");
    assert!(
        len <= max_bytes as usize + one_batch,
        "a {max_bytes}-byte fetch answered with {len} bytes"
    );
    assert!(
        len >= (max_bytes as usize) / 2,
        "the answer holds data up to its budget ({len} bytes)"
    );
}

/// A client that asks for answers and never reads them is disconnected
/// after `write_stall_timeout_ms`, and its answers (charged to the shard's
/// in-flight budget, which every connection of the shard shares) are
/// freed. Without it, a few such clients spend the budget and the shard
/// stops reading every socket it serves, for good.
#[test]
fn a_client_that_never_reads_its_answers_is_disconnected_after_the_write_stall_timeout() {
    let b = BrokerProc::start(&["--set", "write_stall_timeout_ms=1000"]);
    ok(b.cli(&["topic", "create", "stall", "--partitions", "1"], None));
    write_4_mib(&b, "stall");
    // A small receive buffer, so the broker's writes stall quickly.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 << 10).unwrap();
    let addr: std::net::SocketAddr = b.native.parse().unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    let fetches = 16u32;
    for id in 0..fetches {
        s.write_all(&fetch_frame("stall", 1 << 20, id)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(3000));
    // Read what the kernel holds: the broker closed the connection, so the
    // stream ends before all the answers came.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    let ended = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    eprintln!("read {got} bytes of {fetches} answers of 1 MiB before the stream ended: {ended}");
    assert!(ended, "the broker kept the stalled connection open");
    assert!(
        got < (fetches as usize) << 20,
        "every answer arrived ({got} bytes)"
    );
    assert!(
        b.stderr().contains("write_stall_timeout_ms"),
        "the close is logged with the knob's name"
    );
    // Others are served.
    ok(b.cli(&["topic", "list"], None));
}

fn fetch_frame(topic: &str, max_bytes: u32, id: u32) -> BytesMut {
    let one = FetchPartition {
        partition: 0,
        offset: 0,
        max_bytes,
    };
    fetch_frame_of(topic, vec![one], max_bytes, id)
}

/// A native Fetch (no wait) of `parts` of `topic`, answering at most
/// `max_bytes` in all.
fn fetch_frame_of(topic: &str, parts: Vec<FetchPartition>, max_bytes: u32, id: u32) -> BytesMut {
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
        topics: vec![(topic.to_string(), parts)],
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
