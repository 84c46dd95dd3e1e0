//! Batches that lie, and stored data that rots, through the real path: a
//! `shardlog serve` process, real sockets (native and Kafka), real files.
//!
//! - ingress: a batch whose header's record count disagrees with its
//!   records, and a compressed payload of garbage sealed with a valid CRC
//!   (every codec), over both protocols: refused with the protocol's
//!   corrupt-batch error, nothing of the partition stored, the broker and
//!   the connection go on;
//! - storage: one bit flipped in a batch's base offset while the broker is
//!   stopped, in a sealed segment (found on read) and in the active
//!   segment (found by the recovery scan): the partition goes offline with
//!   a log line naming the segment file and byte, the others keep serving.

use crate::bad_input::{batch, connect, produce, read_response, still_works};
use crate::common::kafka::{plain_batch, tn, Conn};
use crate::common::{ok, BrokerProc};
use bytes::Bytes;
use kafka_protocol::messages::{
    produce_request, ApiKey as KApiKey, ProduceRequest, ProduceResponse,
};
use shardlog::format::codec::ALL;
use shardlog::format::crc::batch_crc;
use shardlog::format::frame;
use shardlog::format::{BatchBuilder, Compression, ProducerIds, HEADER_LEN};
use shardlog::protocol::messages::ProduceResponse as NativeProduceResponse;
use shardlog::protocol::ErrorCode;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

/// Kafka's CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = 2;

/// (log start, high watermark) per partition, from `topic describe`
/// (which syncs what was appended first, so the high watermark is the log end).
fn log_ends(b: &BrokerProc, topic: &str) -> Vec<u64> {
    ok(b.cli(&["topic", "describe", topic], None))
        .lines()
        .skip_while(|l| !l.starts_with("partition\t"))
        .skip(1)
        .map(|l| l.split('\t').nth(3).unwrap().parse().unwrap())
        .collect()
}

fn consume(b: &BrokerProc, topic: &str, partition: u32) -> String {
    ok(b.cli(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--partition",
            &partition.to_string(),
        ],
        None,
    ))
}

/// A garbage payload that no codec accepts as its own format (and that is
/// not a valid records section either).
fn garbage(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

// ------------------------------------------------------------ Kafka

/// Produce v7 (what kcat and kafkajs send); the partition responses as
/// (partition, error code, base offset).
fn kproduce(c: &mut Conn, topic: &str, parts: Vec<(i32, Vec<u8>)>) -> Vec<(i32, i16, i64)> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(
                parts
                    .into_iter()
                    .map(|(p, r)| {
                        produce_request::PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(Bytes::from(r)))
                    })
                    .collect(),
            )]);
    let r: ProduceResponse = c.call(KApiKey::Produce, 7, &req);
    r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect()
}

/// An honest Kafka v2 batch (uncompressed) of these values.
fn kafka_batch(values: &[&str]) -> Vec<u8> {
    plain_batch(values.iter().map(|v| Bytes::from(v.to_string()))).to_vec()
}

/// Fix a Kafka batch's length and CRC after editing it: a client that
/// lies, but seals what it sends correctly.
fn reseal_kafka(b: &mut [u8]) {
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn kafka_batches_that_lie_or_hold_garbage_are_refused_and_nothing_is_stored() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "klie", "--partitions", "2"], None));
    let kafka = b.kafka.clone().expect("kafka listener");
    let mut c = Conn::new(&kafka);
    assert_eq!(
        kproduce(&mut c, "klie", vec![(0, kafka_batch(&["1", "2"]))]),
        vec![(0, 0, 0)]
    );

    // Header says 1 record (last offset delta 0), the payload carries 3.
    // Stored, the next batch's offsets would collide with records 2 and 3.
    let mut lie = kafka_batch(&["a", "b", "c"]);
    lie[23..27].copy_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    lie[57..61].copy_from_slice(&1i32.to_be_bytes()); // recordCount
    reseal_kafka(&mut lie);
    // In the same request, partition 1 gets an honest batch: it is stored.
    let r = kproduce(&mut c, "klie", vec![(0, lie), (1, kafka_batch(&["fine"]))]);
    assert_eq!(r, vec![(0, CORRUPT_MESSAGE, -1), (1, 0, 0)]);
    assert_eq!(log_ends(&b, "klie"), vec![2, 1]);

    // A compressed payload of garbage with a valid CRC, for every codec.
    for codec in ALL.into_iter().filter(|c| *c != Compression::None) {
        let mut g = kafka_batch(&["x", "y", "z"]);
        g.truncate(61);
        g.extend_from_slice(&garbage(300));
        g[22] = codec.id(); // attributes (i16 BE) low byte: the codec
        reseal_kafka(&mut g);
        let r = kproduce(&mut c, "klie", vec![(0, g)]);
        assert_eq!(r, vec![(0, CORRUPT_MESSAGE, -1)], "{codec}");
    }
    assert_eq!(log_ends(&b, "klie"), vec![2, 1], "nothing was stored");

    // The connection and the partition go on, offsets contiguous: every
    // consumer sees 1,2,3,4 once each (before, a lying batch made it 1,2,a,3,...).
    assert_eq!(
        kproduce(&mut c, "klie", vec![(0, kafka_batch(&["3", "4"]))]),
        vec![(0, 0, 2)]
    );
    assert_eq!(consume(&b, "klie", 0), "1\n2\n3\n4\n");
    assert_eq!(consume(&b, "klie", 1), "fine\n");
    still_works(&b);
}

// ------------------------------------------------------------ native

/// A native frame of these values whose header, once parsed, is edited by
/// `edit` and whose payload is replaced by `payload` (if given), then
/// sealed (Kafka CRC and header CRC) as an honest client would.
fn native_frame(
    values: &[&str],
    payload: Option<Vec<u8>>,
    edit: impl FnOnce(&mut shardlog::format::BatchHeader),
) -> Bytes {
    let mut bb = BatchBuilder::new();
    for v in values {
        bb.push(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    let f = bb.finish(Compression::None, ProducerIds::NONE);
    let mut h = frame::validate(&f).unwrap();
    let payload = payload.unwrap_or_else(|| f[HEADER_LEN..].to_vec());
    edit(&mut h);
    h.payload_len = payload.len() as u32;
    h.crc = batch_crc(&h, &payload);
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&payload);
    assert!(frame::validate(&out).is_ok(), "sealed: header and CRC pass");
    Bytes::from(out)
}

/// Produce over an open native connection; (partition, error, message) per partition.
fn native_produce(
    s: &mut TcpStream,
    topic: &str,
    parts: Vec<(u32, Vec<Bytes>)>,
) -> Vec<(u32, ErrorCode, String)> {
    s.write_all(&produce(topic, parts)).unwrap();
    let (h, mut r) = read_response(s).expect("a response");
    assert_eq!(h.error, ErrorCode::None, "{}", h.message);
    let mut out: Vec<_> = NativeProduceResponse::decode(&mut r).unwrap().topics[0]
        .1
        .iter()
        .map(|p| (p.result.partition, p.result.error, p.result.message.clone()))
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

#[test]
fn native_batches_that_lie_or_hold_garbage_are_refused_and_nothing_is_stored() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "nlie", "--partitions", "2"], None));
    let mut s = connect(&b);
    let r = native_produce(&mut s, "nlie", vec![(0, vec![batch(b"1")])]);
    assert_eq!(r[0].1, ErrorCode::None);

    // 3 records, the header says 1.
    let lie = native_frame(&["a", "b", "c"], None, |h| {
        h.record_count = 1;
        h.last_offset_delta = 0;
    });
    // A good batch first in the same partition: all or nothing, so it is
    // not stored either. Partition 1 in the same request is stored.
    let r = native_produce(
        &mut s,
        "nlie",
        vec![
            (0, vec![batch(b"not stored"), lie]),
            (1, vec![batch(b"fine")]),
        ],
    );
    assert_eq!((r[0].1, r[1].1), (ErrorCode::Corrupt, ErrorCode::None));
    assert!(
        r[0].2.contains("declares 1 records"),
        "the message says why: {}",
        r[0].2
    );
    assert_eq!(log_ends(&b, "nlie"), vec![1, 1]);

    // Garbage as the compressed payload, sealed with a valid CRC.
    for codec in ALL.into_iter().filter(|c| *c != Compression::None) {
        let g = native_frame(&["x", "y"], Some(garbage(300)), |h| {
            h.attributes = codec.id() as i16;
        });
        let r = native_produce(&mut s, "nlie", vec![(0, vec![g])]);
        assert_eq!(r[0].1, ErrorCode::Corrupt, "{codec}: {}", r[0].2);
        assert!(r[0].2.contains("decompress"), "{codec}: {}", r[0].2);
    }
    assert_eq!(log_ends(&b, "nlie"), vec![1, 1], "nothing was stored");

    // Control and transactional batches are the broker's to write (a
    // replicated partition stores Raft's entries as control batches).
    for (bit, why) in [(0x20, "control batch"), (0x10, "transactional")] {
        let f = native_frame(&["x"], None, |h| h.attributes = bit);
        let r = native_produce(&mut s, "nlie", vec![(0, vec![f])]);
        assert_eq!(r[0].1, ErrorCode::Corrupt, "{why}: {}", r[0].2);
        assert!(r[0].2.contains(why), "the message says why: {}", r[0].2);
    }
    assert_eq!(log_ends(&b, "nlie"), vec![1, 1], "nothing was stored");

    // The connection, the partition and the broker go on.
    let r = native_produce(&mut s, "nlie", vec![(0, vec![batch(b"2")])]);
    assert_eq!(r[0].1, ErrorCode::None);
    assert_eq!(consume(&b, "nlie", 0), "1\n2\n");
    assert_eq!(consume(&b, "nlie", 1), "fine\n");
    still_works(&b);
}

#[test]
fn a_topic_may_turn_compressed_validation_off() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(
        &[
            "topic",
            "create",
            "trusting",
            "--partitions",
            "1",
            "--config",
            "validate.compressed=false",
        ],
        None,
    ));
    let mut s = connect(&b);
    let g = native_frame(&["x"], Some(garbage(100)), |h| {
        h.attributes = Compression::Zstd.id() as i16;
    });
    // Stored as sent: the risk the README states.
    let r = native_produce(&mut s, "trusting", vec![(0, vec![g])]);
    assert_eq!(r[0].1, ErrorCode::None, "{}", r[0].2);
    // Uncompressed batches are still walked.
    let lie = native_frame(&["a", "b"], None, |h| {
        h.record_count = 1;
        h.last_offset_delta = 0;
    });
    let r = native_produce(&mut s, "trusting", vec![(0, vec![lie])]);
    assert_eq!(r[0].1, ErrorCode::Corrupt);
    assert!(ok(b.cli(&["topic", "describe", "trusting"], None)).contains("validate_compressed"));
}

// ------------------------------------------------------------ storage

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

/// Byte positions of the frames in a segment file.
fn frame_positions(seg: &Path) -> Vec<usize> {
    let data = std::fs::read(seg).unwrap();
    let mut pos = 0;
    let mut out = Vec::new();
    while let Ok(h) = frame::validate(&data[pos..]) {
        out.push(pos);
        pos += h.frame_len();
    }
    assert_eq!(pos, data.len(), "whole frames only");
    out
}

/// Flip one bit of the base offset of the frame at `pos` (byte 1, bit 2:
/// the offset moves by 1024).
fn flip_base_offset(seg: &Path, pos: usize) -> Vec<u8> {
    let mut data = std::fs::read(seg).unwrap();
    data[pos + 1] ^= 0x04;
    std::fs::write(seg, &data).unwrap();
    data
}

/// A topic of 2 partitions, with 64 KiB segments, 20,000 messages each.
fn filled(b: &BrokerProc, topic: &str) {
    ok(b.cli(
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "2",
            "--config",
            "segment_bytes=65536",
        ],
        None,
    ));
    for p in 0..2 {
        let input: String = (0..20_000).map(|i| format!("{topic}-{p}-{i}\n")).collect();
        ok(b.cli(
            &[
                "produce",
                topic,
                "--partition",
                &p.to_string(),
                "--batch-bytes",
                "4096",
            ],
            Some(input.as_bytes()),
        ));
    }
}

/// The broker's log, without ANSI colour codes (tracing colours field names).
fn plain_log(b: &BrokerProc) -> String {
    b.plain_log()
}

/// Partition 0 refuses produce and fetch (offline); partition 1 serves.
fn offline_but_others_serve(b: &BrokerProc, topic: &str) {
    let out = b.cli(
        &["consume", topic, "--partition", "0", "--from-beginning"],
        None,
    );
    assert!(!out.status.success(), "partition 0 must not serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");
    let out = b.cli(&["produce", topic, "--partition", "0"], Some(b"x\n"));
    assert!(!out.status.success(), "partition 0 refuses writes");
    ok(b.cli(
        &["produce", topic, "--partition", "1"],
        Some(b"still fine\n"),
    ));
    let out = consume(b, topic, 1);
    assert_eq!(out.lines().count(), 20_001);
    assert!(out.ends_with("still fine\n"));
}

#[test]
fn a_flipped_base_offset_in_a_sealed_segment_takes_the_partition_offline_on_read() {
    let mut b = BrokerProc::start(&[]);
    filled(&b, "rot");
    assert_eq!(b.stop(), Some(0));
    let segs = segments(&b.data_dir.join("rot-0"));
    assert!(segs.len() > 3, "several segments: {segs:?}");
    // The second segment is sealed (closed, trusted through its index at
    // start); flip a batch in its middle, past its first index entry.
    let seg = &segs[1];
    let positions = frame_positions(seg);
    let pos = positions[positions.len() / 2];
    let damaged = flip_base_offset(seg, pos);
    b.restart();
    // Recovery does not scan closed segments: the partition opens ...
    assert!(!b.stderr().contains("is corrupt"), "{}", b.stderr());
    // ... and the first read of the damaged batch refuses, loudly.
    offline_but_others_serve(&b, "rot");
    let log = plain_log(&b);
    let line = log
        .lines()
        .find(|l| l.contains("partition offline"))
        .unwrap_or_else(|| panic!("no offline line in the log:\n{log}"));
    assert!(
        line.contains(&seg.display().to_string()) && line.contains(&format!("position={pos}")),
        "the line names the segment and byte {pos}: {line}"
    );
    assert!(
        line.contains("header check failed") && line.contains(&format!("at byte {pos}")),
        "{line}"
    );
    // Nothing was modified on disk.
    assert_eq!(std::fs::read(seg).unwrap(), damaged);
}

#[test]
fn a_flipped_base_offset_in_the_active_segment_is_refused_by_recovery() {
    let mut b = BrokerProc::start(&[]);
    filled(&b, "scan");
    assert_eq!(b.stop(), Some(0));
    let seg = segments(&b.data_dir.join("scan-0")).pop().unwrap();
    let positions = frame_positions(&seg);
    assert!(positions.len() > 2);
    let pos = positions[positions.len() / 2];
    let damaged = flip_base_offset(&seg, pos);
    b.restart();
    let log = plain_log(&b);
    let line = log
        .lines()
        .find(|l| l.contains("corruption in durable data"))
        .unwrap_or_else(|| panic!("no corruption line in the log:\n{log}"));
    assert!(
        line.contains(&seg.display().to_string()) && line.contains(&format!("position={pos}")),
        "the line names the segment and byte {pos}: {line}"
    );
    // The header CRC finds it (before, only the offset-gap check did).
    assert!(line.contains("header check failed"), "{line}");
    offline_but_others_serve(&b, "scan");
    assert_eq!(std::fs::read(&seg).unwrap(), damaged);
}

/// Rewrite every frame of a segment file as a legacy SLB1 frame (the
/// "SLB1" magic where the header CRC is): what a broker from before the
/// header CRC wrote. Returns the number of frames.
fn downgrade_to_slb1(seg: &Path) -> usize {
    let mut data = std::fs::read(seg).unwrap();
    let positions = frame_positions(seg);
    for &p in &positions {
        data[p + 32..p + 36].copy_from_slice(b"SLB1");
    }
    std::fs::write(seg, &data).unwrap();
    positions.len()
}

#[test]
fn segments_written_before_the_header_crc_still_open_and_serve() {
    let mut b = BrokerProc::start(&[]);
    filled(&b, "old");
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.join("old-0");
    let segs = segments(&dir);
    let frames: usize = segs.iter().map(|s| downgrade_to_slb1(s)).sum();
    assert!(frames > 50 && segs.len() > 3, "{frames} frames in {segs:?}");
    b.restart();
    // Closed SLB1 segments read through their index, the last one scanned.
    let out = consume(&b, "old", 0);
    assert_eq!(out.lines().count(), 20_000);
    assert!(out.starts_with("old-0-0\n") && out.ends_with("old-0-19999\n"));
    for offset in [7u64, 12_345, 19_999] {
        let out = ok(b.cli(
            &[
                "consume",
                "old",
                "--partition",
                "0",
                "--offset",
                &offset.to_string(),
                "--max-messages",
                "1",
            ],
            None,
        ));
        assert_eq!(out, format!("old-0-{offset}\n"));
    }
    // New batches are sealed as SLB2 after the SLB1 ones, and the mixed
    // segment survives another restart's recovery scan.
    ok(b.cli(&["produce", "old", "--partition", "0"], Some(b"new\n")));
    assert_eq!(b.stop(), Some(0));
    let last = segments(&dir).pop().unwrap();
    let data = std::fs::read(&last).unwrap();
    let tail = *frame_positions(&last).last().unwrap();
    assert_ne!(&data[tail + 32..tail + 36], b"SLB1", "new frames are SLB2");
    b.restart();
    assert!(!b.stderr().contains("is corrupt"), "{}", b.stderr());
    let out = consume(&b, "old", 0);
    assert_eq!(out.lines().count(), 20_001);
    assert!(out.ends_with("old-0-19999\nnew\n"));
}
