//! Bad input over the native protocol: each case gets an error response or
//! a clean close; the broker and the other connections keep working.

use crate::common::{ok, BrokerProc};
use bytes::{BufMut, Bytes, BytesMut};
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use shardlog::protocol::codec::Reader;
use shardlog::protocol::frame::{finish_frame, ApiKey, FrameHeader, ResponseHeader};
use shardlog::protocol::messages::{encode_produce, Acks, ProduceResponse};
use shardlog::protocol::ErrorCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub(crate) fn connect(b: &BrokerProc) -> TcpStream {
    let s = TcpStream::connect(&b.native).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub(crate) fn request(api: ApiKey, id: u32, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    let start = FrameHeader {
        api_key: api as u16,
        api_version: 0,
        request_id: id,
    }
    .begin(&mut b);
    body(&mut b);
    finish_frame(&mut b, start);
    b
}

/// Read one response frame; None if the broker closed the connection.
pub(crate) fn read_response(s: &mut TcpStream) -> Option<(ResponseHeader, Reader)> {
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    let mut r = Reader::new(BytesMut::from(&body[..]));
    let h = ResponseHeader::decode(&mut r).unwrap();
    Some((h, r))
}

fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

pub(crate) fn batch(value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(1, None, Some(value), &[]);
    b.finish(Compression::None, ProducerIds::NONE)
}

pub(crate) fn produce(topic: &str, parts: Vec<(u32, Vec<Bytes>)>) -> BytesMut {
    request(ApiKey::Produce, 7, |b| {
        let parts: Vec<(u32, &[Bytes])> = parts.iter().map(|(p, f)| (*p, f.as_slice())).collect();
        encode_produce(b, Acks::Leader, 5000, &[(topic, parts)]);
    })
}

/// The broker still serves a fresh client.
pub(crate) fn still_works(b: &BrokerProc) {
    ok(b.cli(&["topic", "list"], None));
}

#[test]
fn a_malformed_frame_gets_an_error_and_the_connection_stays_usable() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "t", "--partitions", "2"], None));
    let mut s = connect(&b);
    // A produce body that is garbage.
    s.write_all(&request(ApiKey::Produce, 1, |b| b.put_slice(&[0xff; 37])))
        .unwrap();
    let (h, _) = read_response(&mut s).expect("an error response");
    assert_eq!(
        (h.request_id, h.error),
        (1, ErrorCode::Corrupt),
        "{}",
        h.message
    );
    // An unknown API.
    let mut f = request(ApiKey::Metadata, 2, |b| b.put_u32_le(0));
    f[4] = 99;
    s.write_all(&f).unwrap();
    let (h, _) = read_response(&mut s).unwrap();
    assert_eq!((h.request_id, h.error), (2, ErrorCode::UnsupportedVersion));
    // The same connection still works.
    s.write_all(&produce("t", vec![(0, vec![batch(b"ok")])]))
        .unwrap();
    let (h, mut r) = read_response(&mut s).unwrap();
    assert_eq!(h.error, ErrorCode::None);
    let resp = ProduceResponse::decode(&mut r).unwrap();
    assert_eq!(resp.topics[0].1[0].result.error, ErrorCode::None);
    still_works(&b);
}

#[test]
fn a_frame_over_max_request_bytes_is_refused_and_the_connection_closed() {
    let b = BrokerProc::start(&["--set", "max_request_bytes=65536"]);
    let mut s = connect(&b);
    let mut f = BytesMut::new();
    f.put_u32_le(10 << 20);
    f.put_u16_le(ApiKey::Produce as u16);
    f.put_u16_le(0);
    f.put_u32_le(41);
    s.write_all(&f).unwrap();
    let (h, _) = read_response(&mut s).expect("an error response before closing");
    assert_eq!((h.request_id, h.error), (41, ErrorCode::RequestTooLarge));
    assert!(h.message.contains("65536"), "{}", h.message);
    assert!(closed(&mut s));
    still_works(&b);
}

#[test]
fn unknown_topics_and_partitions_get_clear_errors() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "known", "--partitions", "2"], None));
    let mut s = connect(&b);
    s.write_all(&produce("nope", vec![(0, vec![batch(b"x")])]))
        .unwrap();
    let (_, mut r) = read_response(&mut s).unwrap();
    let p = &ProduceResponse::decode(&mut r).unwrap().topics[0].1[0];
    assert_eq!(p.result.error, ErrorCode::UnknownTopic);
    assert!(p.result.message.contains("nope"));
    s.write_all(&produce("known", vec![(5, vec![batch(b"x")])]))
        .unwrap();
    let (_, mut r) = read_response(&mut s).unwrap();
    let p = &ProduceResponse::decode(&mut r).unwrap().topics[0].1[0];
    assert_eq!(p.result.error, ErrorCode::UnknownPartition);
    assert!(
        p.result.message.contains("2 partitions"),
        "{}",
        p.result.message
    );
    let out = b.cli(&["consume", "nope", "--from-beginning"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown topic 'nope'"));
}

#[test]
fn a_crc_mismatch_is_refused_for_its_partition_only() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "crc", "--partitions", "2"], None));
    let good = batch(b"good");
    let mut bad = batch(b"bad!").to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut s = connect(&b);
    s.write_all(&produce(
        "crc",
        vec![(0, vec![Bytes::from(bad)]), (1, vec![good])],
    ))
    .unwrap();
    let (_, mut r) = read_response(&mut s).unwrap();
    let resp = ProduceResponse::decode(&mut r).unwrap();
    let by_part: std::collections::BTreeMap<u32, _> = resp.topics[0]
        .1
        .iter()
        .map(|p| (p.result.partition, p.result.clone()))
        .collect();
    assert_eq!(by_part[&0].error, ErrorCode::Corrupt);
    assert!(
        by_part[&0].message.contains("CRC mismatch"),
        "{}",
        by_part[&0].message
    );
    assert_eq!(by_part[&1].error, ErrorCode::None);
    assert_eq!(
        ok(b.cli(
            &["consume", "crc", "--from-beginning", "--partition", "0"],
            None
        )),
        ""
    );
    assert_eq!(
        ok(b.cli(
            &["consume", "crc", "--from-beginning", "--partition", "1"],
            None
        )),
        "good\n"
    );
}

#[test]
fn half_a_frame_then_gone_and_slow_loris_are_dropped() {
    let b = BrokerProc::start(&["--set", "partial_frame_timeout_ms=500"]);
    ok(b.cli(&["topic", "create", "h", "--partitions", "1"], None));
    // Half a frame, then the client vanishes.
    for _ in 0..20 {
        let mut s = connect(&b);
        let f = produce("h", vec![(0, vec![batch(&[7u8; 500])])]);
        s.write_all(&f[..f.len() / 2]).unwrap();
        drop(s);
    }
    // Half a frame, then silence: the broker closes it after the partial-frame timeout.
    let mut s = connect(&b);
    let f = produce("h", vec![(0, vec![batch(b"slow")])]);
    s.write_all(&f[..10]).unwrap();
    let t = Instant::now();
    assert!(closed(&mut s), "the broker closes a stalled partial frame");
    assert!(t.elapsed() < Duration::from_secs(8));
    // Nothing half-sent was appended, and the broker serves everyone else.
    ok(b.cli(&["produce", "h"], Some(b"whole\n")));
    assert_eq!(
        ok(b.cli(&["consume", "h", "--from-beginning"], None)),
        "whole\n"
    );
}
