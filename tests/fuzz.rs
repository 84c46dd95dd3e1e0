//! Fuzzing the decoders that face untrusted bytes, with proptest strategies
//! run against a time budget.
//!
//! Targets:
//! - `native_frames`: the native protocol decoders, exactly as the broker
//!   runs them on a connection (frame length, header, every request body,
//!   and the batch frames inside a produce);
//! - `batch_frames`: batch header validation, CRC, and the client-side
//!   record decoding with decompression (bombs included);
//! - `record_walker`: the ingress record validation
//!   (`format::validate`) on honest, lying and damaged records sections,
//!   whole, in pieces and compressed, checked against the client decoder;
//! - `recovery_scanner`: the segment recovery scanner on arbitrary and
//!   damaged segment images, with its invariants;
//! - `kafka_requests`: the Kafka listener's decode path (fixed header peek,
//!   version check, request header, body through the vendored kafka-protocol
//!   decoders, and Kafka record batches into our frames).
//!
//! Inputs are both random bytes and valid encodings with random damage
//! (bit flips, truncation, insertions, splices), which reach much deeper
//! than random bytes alone.
//!
//! Budget: `SHARDLOG_FUZZ_SECS` seconds per target (default 2). The long run:
//! `SHARDLOG_FUZZ_SECS=60 cargo test --release --test fuzz -- --nocapture --test-threads 1`

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shardlog::format::frame::{self, split_frames};
use shardlog::format::{read_records, BatchBuilder, Compression, ProducerIds};
use shardlog::protocol::codec::Reader;
use shardlog::protocol::frame::{frame_total_len, ApiKey, FrameHeader};
use shardlog::protocol::messages::*;
use shardlog::storage::recovery::{scan_bytes, ScanEnd};
use std::time::{Duration, Instant};

use kafka_protocol::messages as km;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn budget() -> Duration {
    let secs: f64 = std::env::var("SHARDLOG_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Run `test` on values of `strategy` until the time budget is spent.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    let mut round = 0u32;
    while Instant::now() < deadline {
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            ..Config::default()
        });
        // A fresh seed per round, printed on failure by proptest's shrinking output.
        let _ = round;
        round += 1;
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        cases += 512;
    }
    eprintln!("fuzz {name}: {cases} cases in {:?}, no failure", budget());
}

/// Damage applied to a valid encoding.
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Damage::Flip(i, b)),
            any::<usize>().prop_map(Damage::Truncate),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(i, v)| Damage::Insert(i, v)),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(i, v)| Damage::Overwrite(i, v)),
        ],
        0..4,
    )
}

fn apply(mut b: Vec<u8>, ds: &[Damage]) -> Vec<u8> {
    for d in ds {
        if b.is_empty() {
            break;
        }
        match d {
            Damage::Flip(i, x) => {
                let n = b.len();
                b[i % n] ^= x;
            }
            Damage::Truncate(i) => {
                let n = b.len();
                b.truncate(i % n);
            }
            Damage::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Damage::Overwrite(i, v) => {
                let at = i % b.len();
                for (k, x) in v.iter().enumerate() {
                    if at + k < b.len() {
                        b[at + k] = *x;
                    }
                }
            }
        }
    }
    b
}

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(shardlog::format::codec::ALL.to_vec())
}

/// A valid batch frame.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(
            (
                prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                -1000i64..1000,
            ),
            1..8,
        ),
        codec(),
        any::<u64>(),
    )
        .prop_map(|(recs, codec, base)| {
            let mut b = BatchBuilder::new();
            for (k, v, ts) in &recs {
                b.push(
                    1_700_000_000_000 + ts,
                    k.as_deref(),
                    v.as_deref(),
                    &[("h", Some(b"v"))],
                );
            }
            let f = b.finish(codec, ProducerIds::NONE);
            let mut m = f.to_vec();
            frame::stamp(&mut m, base % (1 << 40), 0);
            m
        })
}

/// A valid native request frame of any API.
fn valid_request() -> impl Strategy<Value = Vec<u8>> {
    let topic = "[a-z]{1,8}";
    prop_oneof![
        (
            topic,
            prop::collection::vec(valid_frame(), 1..3),
            any::<u32>()
        )
            .prop_map(|(t, frames, p)| {
                let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
                encode(ApiKey::Produce, |b| {
                    encode_produce(b, Acks::All, 1000, &[(&t, vec![(p % 4, &frames[..])])])
                })
            }),
        (topic, any::<u64>(), any::<u32>()).prop_map(|(t, o, m)| encode(ApiKey::Fetch, |b| {
            FetchRequest {
                max_wait_ms: 10,
                min_bytes: 1,
                max_bytes: m,
                topics: vec![(
                    t.clone(),
                    vec![FetchPartition {
                        partition: 0,
                        offset: o,
                        max_bytes: m,
                    }],
                )],
            }
            .encode(b)
        })),
        (topic, any::<i64>()).prop_map(|(t, ts)| encode(ApiKey::ListOffsets, |b| {
            ListOffsetsRequest {
                topics: vec![(t.clone(), vec![(0, ts)])],
            }
            .encode(b)
        })),
        prop::collection::vec(topic, 0..3).prop_map(|ts| encode(ApiKey::Metadata, |b| {
            MetadataRequest { topics: ts.clone() }.encode(b)
        })),
        (topic, any::<u32>(), any::<u16>()).prop_map(|(t, p, rf)| encode(
            ApiKey::CreateTopic,
            |b| {
                CreateTopicRequest {
                    name: t.clone(),
                    partitions: p,
                    config: vec![("retention_ms".into(), "1000".into())],
                    replication_factor: rf,
                }
                .encode(b)
            }
        )),
        topic.prop_map(|g| encode(ApiKey::FindCoordinator, |b| {
            FindCoordinatorRequest { group: g.clone() }.encode(b)
        })),
        (topic, any::<u32>()).prop_map(|(t, p)| encode(ApiKey::CreatePartitions, |b| {
            TopicRequest {
                name: t.clone(),
                partitions: p,
            }
            .encode(b)
        })),
    ]
}

fn encode(api: ApiKey, body: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    let start = FrameHeader {
        api_key: api as u16,
        api_version: 0,
        request_id: 1,
    }
    .begin(&mut b);
    body(&mut b);
    shardlog::protocol::frame::finish_frame(&mut b, start);
    b.to_vec()
}

/// The broker's decode path for one connection buffer: frame, header, body,
/// and (for produce) the batch frames of every partition.
fn decode_like_the_broker(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let len = match frame_total_len(&buf, 1 << 20) {
            Ok(Some(n)) if n <= buf.len() => n,
            Ok(_) | Err(_) => return,
        };
        let mut frame = buf.split_to(len);
        let _ = frame.split_to(4);
        let mut r = Reader::new(frame);
        let Ok(h) = FrameHeader::decode(&mut r) else {
            return;
        };
        match ApiKey::from_u16(h.api_key) {
            Ok(ApiKey::Produce) => {
                if let Ok(req) = ProduceRequest::decode(&mut r) {
                    for (_, parts) in req.topics {
                        for p in parts {
                            if let Ok(frames) = split_frames(p.records) {
                                for (h, f) in frames {
                                    assert_eq!(h.frame_len(), f.len());
                                    frame::validate(&f).expect("split_frames validated it");
                                }
                            }
                        }
                    }
                }
            }
            Ok(ApiKey::Fetch) => drop(FetchRequest::decode(&mut r)),
            Ok(ApiKey::ListOffsets) => drop(ListOffsetsRequest::decode(&mut r)),
            Ok(ApiKey::Metadata) => drop(MetadataRequest::decode(&mut r)),
            Ok(ApiKey::CreateTopic) => drop(CreateTopicRequest::decode(&mut r)),
            Ok(ApiKey::DeleteTopic) | Ok(ApiKey::CreatePartitions) => {
                drop(TopicRequest::decode(&mut r))
            }
            Ok(ApiKey::OffsetCommit) => drop(OffsetCommitRequest::decode(&mut r)),
            Ok(ApiKey::OffsetFetch) => drop(OffsetFetchRequest::decode(&mut r)),
            Ok(ApiKey::FindCoordinator) => drop(FindCoordinatorRequest::decode(&mut r)),
            Err(_) => {}
        }
    }
}

#[test]
fn native_frames() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (prop::collection::vec(valid_request(), 1..4), damage())
            .prop_map(|(reqs, d)| apply(reqs.concat(), &d)),
    ];
    fuzz("native_frames", input, |bytes| {
        decode_like_the_broker(&bytes);
        Ok(())
    });
}

#[test]
fn batch_frames() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (valid_frame(), damage()).prop_map(|(f, d)| apply(f, &d)),
    ];
    fuzz("batch_frames", input, |bytes| {
        let b = Bytes::from(bytes);
        if let Ok(h) = frame::parse_header(&b) {
            if frame::verify_crc(&h, &b).is_ok() {
                // A frame that validates decodes (or fails cleanly) within the limit.
                let _ = read_records(&b.slice(..h.frame_len()), 1 << 20);
            }
        }
        let _ = split_frames(BytesMut::from(&b[..]));
        Ok(())
    });
}

#[test]
fn valid_frames_survive_and_any_damage_is_caught() {
    fuzz(
        "frame_damage",
        (valid_frame(), any::<usize>(), 1u8..=255),
        |(f, at, x)| {
            let h = frame::validate(&f).expect("valid frame validates");
            let (hdr, recs) =
                read_records(&Bytes::from(f.clone()), 1 << 20).expect("valid frame decodes");
            prop_assert_eq!(recs.len() as i32, hdr.record_count);
            let mut bad = f.clone();
            let i = at % bad.len();
            bad[i] ^= x;
            // The stamped fields (base offset, leader epoch) are outside the
            // Kafka CRC but inside the SLB2 header CRC: damage anywhere is
            // caught. The one way out: bytes 32..36 turned into the legacy
            // SLB1 magic (a frame without header check), ~2^-24 per case.
            let r = frame::validate(&bad);
            let legacy = bad[32..36] == *b"SLB1";
            prop_assert!(
                r.is_err() || legacy,
                "damage at byte {} (of a {}-byte payload) went unnoticed",
                i,
                h.payload_len
            );
            Ok(())
        },
    );
}

/// A records section of 1..12 records (offset deltas 0, 1, ...), with
/// random keys, values and headers.
fn records_section() -> impl Strategy<Value = (Vec<u8>, i32)> {
    prop::collection::vec(
        (
            prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            -1000i64..1000,
            0usize..3,
        ),
        1..12,
    )
    .prop_map(|recs| {
        let mut b = BytesMut::new();
        for (i, (k, v, ts, nh)) in recs.iter().enumerate() {
            let headers: Vec<(&str, Option<&[u8]>)> = (0..*nh)
                .map(|j| ("hk", (j % 2 == 0).then_some(&b"hv"[..])))
                .collect();
            shardlog::format::record::encode(
                &mut b,
                *ts,
                i as i32,
                k.as_deref(),
                v.as_deref(),
                &headers,
            );
        }
        (b.to_vec(), recs.len() as i32)
    })
}

#[test]
fn record_walker() {
    use shardlog::format::header::BatchHeader;
    use shardlog::format::validate::{check_records, Checked, RecordLimits, RecordWalker};
    let limits = RecordLimits {
        max_records_bytes: 1 << 20,
        check_compressed: true,
        keys_required: false,
    };
    let header = |count: i32, last: i32, codec: Compression| BatchHeader {
        base_offset: 0,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        header_crc: 0,
        payload_len: 0,
        crc: 0,
        partition_leader_epoch: -1,
        last_offset_delta: last,
        base_sequence: -1,
        record_count: count,
        producer_epoch: -1,
        attributes: codec.id() as i16,
    };
    fuzz(
        "record_walker",
        (records_section(), damage(), codec(), -2i32..3, 1usize..100),
        |((valid, n), d, codec, count_lie, piece)| {
            // Undamaged and honest: accepted, in every codec.
            let ok = check_records(&header(n, n - 1, codec), &codec.compress(&valid), &limits);
            prop_assert_eq!(
                ok,
                Ok(Checked::Walked {
                    records: n as u32,
                    records_bytes: valid.len() as u64
                })
            );
            // A lying count is always refused.
            if count_lie != 0 && n + count_lie > 0 {
                let lie = n + count_lie;
                let r = check_records(&header(lie, lie - 1, Compression::None), &valid, &limits);
                prop_assert!(r.is_err(), "count {} for {} records accepted", lie, n);
            }
            // Damaged: whatever the walker accepts, the client decoder reads
            // as exactly that many records with offset deltas 0, 1, ...
            let bad = apply(valid.clone(), &d);
            let r = check_records(&header(n, n - 1, Compression::None), &bad, &limits);
            if r.is_ok() {
                match shardlog::format::record::decode_all(&Bytes::from(bad.clone())) {
                    Ok(recs) => {
                        prop_assert_eq!(recs.len() as i32, n);
                        for (i, rec) in recs.iter().enumerate() {
                            prop_assert_eq!(rec.offset_delta, i as i32);
                        }
                    }
                    Err(e) => prop_assert!(false, "walker accepted, decoder refused: {}", e),
                }
            }
            // Fed in pieces (compressed output arrives that way): the same answer.
            let mut w = RecordWalker::new(n, n - 1);
            let mut fed = Ok(());
            for c in bad.chunks(piece) {
                fed = w.feed(c);
                if fed.is_err() {
                    break;
                }
            }
            let pieces = fed.and_then(|_| w.finish());
            prop_assert_eq!(pieces, r.clone());
            // Compressed, the damaged section gets the same answer.
            let z = check_records(&header(n, n - 1, codec), &codec.compress(&bad), &limits);
            prop_assert_eq!(z, r);
            Ok(())
        },
    );
}

/// A segment image: valid frames with consecutive offsets, then damage.
fn segment_image() -> impl Strategy<Value = (Vec<u8>, u64, Vec<Damage>, usize)> {
    (
        prop::collection::vec(valid_frame(), 0..6),
        0u64..1000,
        damage(),
        any::<usize>(),
    )
        .prop_map(|(frames, base, d, t)| {
            let mut img = Vec::new();
            let mut next = base;
            for mut f in frames {
                let h = frame::parse_header(&f).unwrap();
                frame::stamp(&mut f, next, 0);
                next += h.last_offset_delta as u64 + 1;
                img.extend_from_slice(&f);
            }
            (img, base, d, t)
        })
}

#[test]
fn recovery_scanner() {
    fuzz(
        "recovery_scanner",
        segment_image(),
        |(valid, base, d, t)| {
            let img = apply(valid.clone(), &d);
            let trusted = if img.is_empty() {
                0
            } else {
                (t % (img.len() + 1)) as u64
            };
            let (scan, end) = scan_bytes(&img, base, trusted, 4096);
            prop_assert!(scan.valid_len as usize <= img.len());
            match &end {
                ScanEnd::Clean => prop_assert_eq!(scan.valid_len as usize, img.len()),
                ScanEnd::Cut { at, .. } => prop_assert!(*at >= trusted && *at == scan.valid_len),
                ScanEnd::Corrupt { at, .. } => prop_assert!(*at < trusted),
            }
            // The kept prefix scans clean on its own, to the same next offset.
            let (again, end2) = scan_bytes(&img[..scan.valid_len as usize], base, 0, 4096);
            prop_assert_eq!(end2, ScanEnd::Clean);
            prop_assert_eq!(again.next_offset, scan.next_offset);
            // With nothing trusted, nothing is ever called corrupt.
            let (_, end3) = scan_bytes(&img, base, 0, 4096);
            let corrupt = matches!(end3, ScanEnd::Corrupt { .. });
            prop_assert!(!corrupt, "nothing trusted, yet corrupt: {:?}", end3);
            // An undamaged image scans clean in full.
            let (s4, e4) = scan_bytes(&valid, base, valid.len() as u64, 4096);
            prop_assert_eq!(e4, ScanEnd::Clean);
            prop_assert_eq!(s4.valid_len as usize, valid.len());
            Ok(())
        },
    );
}

// ------------------------------------------------------------ Kafka

fn ks(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn kafka_encoded<R: Encodable>(key: km::ApiKey, v: i16, req: &R) -> Vec<u8> {
    let h = km::RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(1)
        .with_client_id(Some(ks("fuzz")));
    let mut body = BytesMut::new();
    h.encode(&mut body, key.request_header_version(v)).unwrap();
    req.encode(&mut body, v).unwrap();
    body.to_vec()
}

/// A valid Kafka request of one of the APIs clients use most.
fn valid_kafka_request() -> impl Strategy<Value = Vec<u8>> {
    let produce = (valid_frame(), prop::sample::select(vec![3i16, 7, 9, 12])).prop_map(|(f, v)| {
        let records = shardlog::kafka::batch::frames_to_kafka(&[Bytes::from(f)]).unwrap();
        let req = km::ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![km::produce_request::TopicProduceData::default()
                .with_name(km::TopicName(ks("t")))
                .with_partition_data(vec![
                    km::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ])]);
        kafka_encoded(km::ApiKey::Produce, v, &req)
    });
    let fetch = prop::sample::select(vec![4i16, 11, 12]).prop_map(|v| {
        let req = km::FetchRequest::default()
            .with_max_wait_ms(10)
            .with_max_bytes(1 << 20)
            .with_topics(vec![km::fetch_request::FetchTopic::default()
                .with_topic(km::TopicName(ks("t")))
                .with_partitions(vec![
                    km::fetch_request::FetchPartition::default().with_partition_max_bytes(1 << 20)
                ])]);
        kafka_encoded(km::ApiKey::Fetch, v, &req)
    });
    let metadata = prop::sample::select(vec![1i16, 4, 9, 13]).prop_map(|v| {
        let topics = vec![km::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(km::TopicName(ks("t"))))];
        kafka_encoded(
            km::ApiKey::Metadata,
            v,
            &km::MetadataRequest::default().with_topics(Some(topics)),
        )
    });
    let join = prop::sample::select(vec![1i16, 5, 7]).prop_map(|v| {
        let req = km::JoinGroupRequest::default()
            .with_group_id(km::GroupId(ks("g")))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(6000)
            .with_protocol_type(ks("consumer"))
            .with_protocols(vec![
                km::join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(ks("range"))
                    .with_metadata(Bytes::from_static(b"meta")),
            ]);
        kafka_encoded(km::ApiKey::JoinGroup, v, &req)
    });
    let commit = prop::sample::select(vec![2i16, 8, 9]).prop_map(|v| {
        let req = km::OffsetCommitRequest::default()
            .with_group_id(km::GroupId(ks("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                km::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(km::TopicName(ks("t")))
                    .with_partitions(vec![
                        km::offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(7),
                    ]),
            ]);
        kafka_encoded(km::ApiKey::OffsetCommit, v, &req)
    });
    let versions = prop::sample::select(vec![0i16, 3, 4]).prop_map(|v| {
        kafka_encoded(
            km::ApiKey::ApiVersions,
            v,
            &km::ApiVersionsRequest::default(),
        )
    });
    prop_oneof![produce, fetch, metadata, join, commit, versions]
}

/// The listener's decode path for one request frame body (after the size).
/// Returns whether the request decoded (and, for produce, converted).
fn decode_like_the_kafka_listener(frame: &[u8]) -> bool {
    if frame.len() < 8 {
        return false;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(key) = km::ApiKey::try_from(key) else {
        return false;
    };
    let Some(range) = shardlog::kafka::api_versions::accepted(key) else {
        return false;
    };
    if version < range.min || version > range.max {
        return false;
    }
    let mut body = Bytes::copy_from_slice(frame);
    let Ok(_header) = km::RequestHeader::decode(&mut body, key.request_header_version(version))
    else {
        return false;
    };
    let Ok(req) = km::RequestKind::decode(key, &mut body, version) else {
        return false;
    };
    if let km::RequestKind::Produce(p) = req {
        for t in p.topic_data {
            for part in t.partition_data {
                if let Some(records) = part.records {
                    let limits = shardlog::config::TopicConfig::default().record_limits();
                    match shardlog::kafka::batch::kafka_to_frames(&records, &limits) {
                        Ok(frames) => {
                            for f in frames {
                                // Whatever the conversion produced is a valid frame.
                                frame::validate(&f).expect("converted Kafka batch validates");
                            }
                        }
                        Err(_) => return false,
                    }
                }
            }
        }
    }
    true
}

#[test]
fn kafka_requests() {
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (valid_kafka_request(), damage()).prop_map(|(r, d)| {
            // Keep the api key and version bytes intact half of the time, so
            // the damage reaches the decoders rather than the version check.
            let keep: Vec<u8> = r[..4].to_vec();
            let mut m = apply(r, &d);
            if m.len() >= 4 && d.len() % 2 == 0 {
                m[..4].copy_from_slice(&keep);
            }
            m
        }),
    ];
    fuzz("kafka_requests", input, |bytes| {
        decode_like_the_kafka_listener(&bytes);
        Ok(())
    });
    // The generators make real requests: undamaged, every one decodes.
    fuzz("kafka_seeds", valid_kafka_request(), |bytes| {
        prop_assert!(
            decode_like_the_kafka_listener(&bytes),
            "a valid request did not decode"
        );
        Ok(())
    });
}
