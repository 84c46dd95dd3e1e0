//! Fetch (v0-18): long poll across shards (max_wait_ms / min_bytes), then
//! every stored frame rebuilt as the Kafka batch it is, byte for byte.
//!
//! - Topics: by name up to v12, by topic id from v13 (the id Metadata
//!   gives, [`super::topic_uuid`]); an id this broker does not know gets
//!   `UNKNOWN_TOPIC_ID` for each partition asked, as Kafka answers.
//! - Sizes: `partition_max_bytes` bounds each partition, `max_bytes` the
//!   whole answer, except that the first batch always goes (a batch larger
//!   than the limits must not stall a consumer), as in Kafka. The broker's
//!   `fetch_max_bytes` caps `max_bytes`, and each partition reads at most
//!   [`partition_read_cap`] so that a fetch of many partitions does not read
//!   `max_bytes` from each (the request's cost was charged to the shard's
//!   memory budget on that basis; see `Kafka::request_cost`).
//! - No transactions: last_stable_offset = high watermark and no aborted
//!   transactions, so read_committed consumers (librdkafka's default) read
//!   everything.
//! - No fetch sessions: session_id 0 tells clients to send full requests.
//! - v0-3 answer with message sets: magic 0 for v0-1, magic 1 for v2-3,
//!   uncompressed, headers dropped (see [`super::message_set`]).
//!
//! Encoding: the response is written here rather than by `kafka-protocol`,
//! so each batch is copied once, straight from the stored frame into the
//! response buffer (header rewritten, payload copied); the crate would need
//! the records assembled in a buffer of their own first, then copy them
//! again. A unit test checks that this encoder writes exactly the bytes the
//! crate writes, at every version served.

use super::batch::{kafka_header, KAFKA_HEADER_LEN};
use super::{errors, message_set, Ctx};
use crate::format::HEADER_LEN;
use crate::format::{frame, BatchHeader};
use crate::partition::FetchOutcome;
use crate::protocol::gather::Gather;
use crate::router::ops::{partition_read_cap, FetchPart, OpError};
use crate::storage::ReadError;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{FetchRequest, TopicName};
use std::collections::HashMap;
use tracing::error;

/// Longest long poll served; clients ask for 500 ms (librdkafka, Java) to 5 s (kafkajs).
const MAX_WAIT_MS_MAX: i32 = 30_000;

/// One partition of the answer.
#[derive(Debug, Clone)]
pub struct PartitionAnswer {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Stored frames (validated), with their parsed headers.
    pub frames: Vec<(BatchHeader, Bytes)>,
    /// Fetch v0-3: the frames converted to a message set, written instead.
    pub message_set: Option<Bytes>,
}

impl PartitionAnswer {
    fn new(index: i32) -> Self {
        PartitionAnswer {
            index,
            error_code: errors::NONE,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            frames: Vec::new(),
            message_set: None,
        }
    }

    /// Bytes of the records field once rebuilt as Kafka batches.
    fn records_len(&self) -> usize {
        if let Some(m) = &self.message_set {
            return m.len();
        }
        self.frames
            .iter()
            .map(|(h, _)| KAFKA_HEADER_LEN + h.payload_len as usize)
            .sum()
    }
}

#[derive(Debug, Clone)]
pub struct TopicAnswer {
    /// Written up to v12.
    pub topic: TopicName,
    /// Written from v13 (echoes the request's id).
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<PartitionAnswer>,
}

/// Fetch versions served; v13 on names topics by id; v0-3 answer with
/// message sets (magic 0/1) converted from the stored batches.
pub const VERSIONS: std::ops::RangeInclusive<i16> = 0..=18;

/// Versions whose records are message sets, not batches.
fn wants_message_set(version: i16) -> bool {
    version <= 3
}

/// Versions that name topics by id instead of by name.
fn by_topic_id(version: i16) -> bool {
    version >= 13
}

/// The topic a request's entry names: by name up to v12, by id from v13.
/// `Err` holds the error code when the topic is unknown, and the key its
/// partitions are filed under (not a valid topic name, so it cannot
/// collide with one).
fn resolve(
    ctx: &Ctx,
    topics: &crate::metadata::SharedTopics,
    t: &kafka_protocol::messages::fetch_request::FetchTopic,
) -> Result<String, (String, i16)> {
    if !by_topic_id(ctx.version) {
        return Ok(t.topic.to_string());
    }
    super::metadata::by_id(topics, t.topic_id)
        .map(|m| m.name.clone())
        .ok_or_else(|| {
            (
                format!("<unknown topic id {}>", t.topic_id),
                errors::unknown_topic_id(),
            )
        })
}

pub async fn handle(ctx: &Ctx, req: FetchRequest) -> Vec<TopicAnswer> {
    let topics = ctx.shard.topics();
    let max_total = (req.max_bytes.max(1) as usize).min(ctx.shard.config.fetch_max_bytes) as u32;
    let n = req.topics.iter().map(|t| t.partitions.len()).sum();
    let cap = partition_read_cap(max_total as usize, n) as u32;
    let mut parts = Vec::new();
    let mut refused: HashMap<(String, i32), i16> = HashMap::new();
    // Each request topic's name (or its refusal key and code), once.
    let names: Vec<(String, i16)> = req
        .topics
        .iter()
        .map(|t| match resolve(ctx, &topics, t) {
            Ok(name) => (name, errors::unknown_topic()),
            Err(refusal) => refusal,
        })
        .collect();
    for (t, (topic, unknown)) in req.topics.iter().zip(&names) {
        for p in &t.partitions {
            let known = topics
                .get(topic)
                .is_some_and(|m| p.partition >= 0 && (p.partition as u32) < m.partitions);
            // A replicated partition whose leader epoch the client names
            // (v9+) must be the epoch this broker knows: an older one means
            // the client's metadata is stale (FENCED_LEADER_EPOCH).
            let epoch_refusal = || {
                let term = ctx
                    .shard
                    .replication()?
                    .leader(topic, p.partition as u32)?
                    .1;
                errors::leader_epoch_mismatch(p.current_leader_epoch, term)
            };
            if !known {
                refused.insert((topic.clone(), p.partition), *unknown);
            } else if let Some(code) = epoch_refusal() {
                refused.insert((topic.clone(), p.partition), code);
            } else if p.fetch_offset < 0 {
                let e = ReadError::OffsetOutOfRange {
                    requested: 0,
                    log_start: 0,
                    high_watermark: 0,
                };
                refused.insert((topic.clone(), p.partition), errors::read(&e));
            } else {
                parts.push(FetchPart {
                    topic: topic.clone(),
                    partition: p.partition as u32,
                    offset: p.fetch_offset as u64,
                    max_bytes: (p.partition_max_bytes.max(1) as u32).min(cap),
                });
            }
        }
    }
    let mut results: HashMap<(String, i32), Result<FetchOutcome, OpError>> = HashMap::new();
    if !parts.is_empty() {
        let wait = req.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u32;
        let min_bytes = req.min_bytes.max(0) as u32;
        for r in ctx
            .shard
            .fetch(parts, wait, min_bytes, max_total as usize)
            .await
        {
            results.insert((r.topic, r.partition as i32), r.result);
        }
    }
    // Assemble in request order. The shard kept the frames within
    // `max_total`; a down-converted message set is measured again in
    // converted bytes (it can be larger than the stored batches).
    let mut budget = max_total as usize;
    let mut first_batch_sent = false;
    let mut out = Vec::with_capacity(req.topics.len());
    for (t, (topic, _)) in req.topics.iter().zip(&names) {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let key = (topic.clone(), p.partition);
            let mut d = PartitionAnswer::new(p.partition);
            if let Some(code) = refused.get(&key) {
                d.error_code = *code;
            } else {
                match results.remove(&key) {
                    Some(Ok(o)) if wants_message_set(ctx.version) => {
                        d.high_watermark = o.high_watermark as i64;
                        d.last_stable_offset = o.last_stable_offset as i64;
                        d.log_start_offset = o.log_start_offset as i64;
                        let magic = message_set::fetch_magic(ctx.version);
                        match down_convert(&o.frames, magic, &mut budget, &mut first_batch_sent) {
                            Ok(m) => d.message_set = Some(m),
                            Err(e) => {
                                error!(topic = %topic, partition = p.partition, "kafka fetch: a stored frame does not convert: {e}");
                                d.error_code = errors::kafka_storage_error();
                                d.message_set = Some(Bytes::new());
                            }
                        }
                    }
                    Some(Ok(o)) => {
                        d.high_watermark = o.high_watermark as i64;
                        d.last_stable_offset = o.last_stable_offset as i64;
                        d.log_start_offset = o.log_start_offset as i64;
                        // Already within `max_total` (see `Shard::fetch`).
                        for f in o.frames {
                            match frame::parse_header(&f) {
                                Ok(h) if f.len() >= h.frame_len() => {
                                    d.frames.push((h, f));
                                }
                                bad => {
                                    error!(topic = %topic, partition = p.partition, "kafka fetch: a stored frame does not parse: {bad:?}");
                                    d.error_code = errors::kafka_storage_error();
                                    d.frames.clear();
                                    break;
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        d.error_code = errors::op(&e);
                        if let OpError::Read(ReadError::OffsetOutOfRange {
                            log_start,
                            high_watermark,
                            ..
                        }) = &e
                        {
                            d.high_watermark = *high_watermark as i64;
                            d.last_stable_offset = *high_watermark as i64;
                            d.log_start_offset = *log_start as i64;
                        }
                    }
                    // Listed twice in the request: answered the first time.
                    None => continue,
                }
            }
            partitions.push(d);
        }
        out.push(TopicAnswer {
            topic: t.topic.clone(),
            topic_id: t.topic_id,
            partitions,
        });
    }
    out
}

/// Why a stored frame could not be served as a message set.
#[derive(Debug, thiserror::Error)]
enum DownConvertError {
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error(transparent)]
    Convert(#[from] super::batch::BatchError),
}

/// Frames as one message set of `magic`, within the response's byte
/// budget measured in converted bytes (a converted batch can be larger than
/// the stored one: decompressed, with per-message overhead). As with
/// batches, the response's first batch always goes whole; a batch that
/// would overrun the budget after that is dropped with all that follow.
fn down_convert(
    frames: &[Bytes],
    magic: i8,
    budget: &mut usize,
    first_batch_sent: &mut bool,
) -> Result<Bytes, DownConvertError> {
    let mut out = BytesMut::new();
    for f in frames {
        let h = frame::parse_header(f)?;
        if f.len() < h.frame_len() {
            return Err(frame::FrameError::Truncated {
                need: h.frame_len(),
                have: f.len(),
            }
            .into());
        }
        let at = out.len();
        message_set::append_frame(&h, &f.slice(..h.frame_len()), magic, &mut out)?;
        let added = out.len() - at;
        if *first_batch_sent && added > *budget {
            out.truncate(at);
            break;
        }
        *budget = budget.saturating_sub(added);
        *first_batch_sent = true;
    }
    Ok(out.freeze())
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// [`encode_parts`] in one buffer.
pub fn encode(version: i16, correlation_id: i32, topics: &[TopicAnswer]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in encode_parts(version, correlation_id, topics) {
        out.extend_from_slice(&p);
    }
    out
}

/// `[size][response header][FetchResponse]` at a version of [`VERSIONS`],
/// as parts written in order: each batch's Kafka header is written here
/// (it differs from the stored one); its payload is referenced from the
/// stored frame, not copied (small ones are: see `protocol::gather`).
pub fn encode_parts(version: i16, correlation_id: i32, topics: &[TopicAnswer]) -> Vec<Bytes> {
    assert!(
        VERSIONS.contains(&version),
        "Fetch v{version} is not served"
    );
    let flexible = version >= 12;
    let n_parts: usize = topics.iter().map(|t| t.partitions.len()).sum();
    let mut g = Gather::with_capacity(64 + topics.len() * 64 + n_parts * 128);
    let array_len = |out: &mut BytesMut, n: usize| {
        if flexible {
            put_uvarint(out, n as u64 + 1);
        } else {
            out.put_i32(n as i32);
        }
    };
    {
        let out = g.buf();
        out.put_i32(0); // size, patched at the end
        out.put_i32(correlation_id);
        if flexible {
            put_uvarint(out, 0); // response header v1: no tagged fields
        }
        if version >= 1 {
            out.put_i32(0); // throttle_time_ms
        }
        if version >= 7 {
            out.put_i16(errors::NONE);
            out.put_i32(0); // session_id: no fetch sessions
        }
        array_len(out, topics.len());
    }
    for t in topics {
        let out = g.buf();
        if by_topic_id(version) {
            out.put_slice(t.topic_id.as_bytes());
        } else {
            let name = t.topic.0.as_bytes();
            if flexible {
                put_uvarint(out, name.len() as u64 + 1);
            } else {
                out.put_i16(name.len() as i16);
            }
            out.put_slice(name);
        }
        array_len(out, t.partitions.len());
        for p in &t.partitions {
            let out = g.buf();
            out.put_i32(p.index);
            out.put_i16(p.error_code);
            out.put_i64(p.high_watermark);
            if version >= 4 {
                out.put_i64(p.last_stable_offset);
            }
            if version >= 5 {
                out.put_i64(p.log_start_offset);
            }
            if version >= 4 {
                array_len(out, 0); // aborted_transactions: none
            }
            if version >= 11 {
                out.put_i32(-1); // preferred_read_replica
            }
            let len = p.records_len();
            if flexible {
                put_uvarint(out, len as u64 + 1);
            } else {
                out.put_i32(len as i32);
            }
            let at = g.len();
            if let Some(m) = &p.message_set {
                assert!(wants_message_set(version), "message sets only up to v3");
                g.shared(m.clone());
            } else {
                for (h, f) in &p.frames {
                    kafka_header(h, g.buf());
                    g.shared(f.slice(HEADER_LEN..h.frame_len()));
                }
            }
            assert_eq!(g.len() - at, len, "records length as announced");
            if flexible {
                put_uvarint(g.buf(), 0);
            }
        }
        if flexible {
            put_uvarint(g.buf(), 0);
        }
    }
    if flexible {
        put_uvarint(g.buf(), 0);
    }
    g.finish(|head, total| {
        let size = (total - 4) as i32;
        head[..4].copy_from_slice(&size.to_be_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchBuilder, Compression, ProducerIds};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{BrokerId, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

    fn frame(base: u64, n: i64) -> (BatchHeader, Bytes) {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(1000 + i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
        }
        let f = b.finish(Compression::None, ProducerIds::NONE);
        let mut m = BytesMut::from(&f[..]);
        frame::stamp(&mut m, base, 0);
        let f = m.freeze();
        (frame::parse_header(&f).unwrap(), f)
    }

    /// What the crate writes for the same answer.
    fn via_crate(version: i16, corr: i32, topics: &[TopicAnswer]) -> BytesMut {
        let responses = topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let frames: Vec<Bytes> = p.frames.iter().map(|(_, f)| f.clone()).collect();
                        let mut d = PartitionData::default()
                            .with_partition_index(p.index)
                            .with_error_code(p.error_code)
                            .with_high_watermark(p.high_watermark)
                            .with_last_stable_offset(p.last_stable_offset)
                            .with_aborted_transactions(Some(vec![]))
                            .with_preferred_read_replica(BrokerId(-1))
                            .with_records(Some(p.message_set.clone().unwrap_or_else(|| {
                                super::super::batch::frames_to_kafka(&frames).unwrap()
                            })));
                        if version >= 5 {
                            d = d.with_log_start_offset(p.log_start_offset);
                        }
                        d
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(parts)
            })
            .collect();
        let r = FetchResponse::default()
            .with_throttle_time_ms(0)
            .with_responses(responses);
        let h = ResponseHeader::default().with_correlation_id(corr);
        let hv = FetchResponse::header_version(version);
        let mut body = BytesMut::new();
        h.encode(&mut body, hv).unwrap();
        r.encode(&mut body, version).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn writes_exactly_what_the_crate_writes() {
        let mut with_data = PartitionAnswer::new(3);
        with_data.high_watermark = 30;
        with_data.last_stable_offset = 30;
        with_data.log_start_offset = 0;
        with_data.frames = vec![frame(10, 5), frame(15, 200)];
        let mut empty = PartitionAnswer::new(0);
        empty.high_watermark = 0;
        empty.last_stable_offset = 0;
        empty.log_start_offset = 0;
        let mut failed = PartitionAnswer::new(9);
        failed.error_code = 3;
        let topics = vec![
            TopicAnswer {
                topic: TopicName(StrBytes::from_static_str("orders")),
                topic_id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                partitions: vec![with_data, empty],
            },
            TopicAnswer {
                topic: TopicName(StrBytes::from_static_str("x")),
                topic_id: uuid::Uuid::from_u128(7),
                partitions: vec![failed],
            },
        ];
        for v in VERSIONS {
            let mut topics = topics.clone();
            if wants_message_set(v) {
                let p = &mut topics[0].partitions[0];
                let frames: Vec<Bytes> = p.frames.iter().map(|(_, f)| f.clone()).collect();
                let (mut budget, mut first) = (usize::MAX, false);
                let m = down_convert(
                    &frames,
                    message_set::fetch_magic(v),
                    &mut budget,
                    &mut first,
                );
                p.message_set = Some(m.unwrap());
            }
            assert_eq!(
                encode(v, 77, &topics),
                via_crate(v, 77, &topics),
                "Fetch v{v}"
            );
            assert_eq!(encode(v, 5, &[]), via_crate(v, 5, &[]), "empty Fetch v{v}");
        }
    }

    #[test]
    fn down_conversion_keeps_to_the_budget_but_sends_the_first_batch() {
        let frames: Vec<Bytes> = vec![frame(10, 5).1, frame(15, 5).1, frame(20, 5).1];
        let mut unbounded = usize::MAX;
        let one = down_convert(&frames[..1], 1, &mut unbounded, &mut false)
            .unwrap()
            .len();
        // A budget smaller than one converted batch: the first still goes.
        let (mut budget, mut first) = (1, false);
        let m = down_convert(&frames, 1, &mut budget, &mut first).unwrap();
        assert_eq!(m.len(), one);
        // Room for two batches: two go, and the offsets are absolute.
        let (mut budget, mut first) = (2 * one + one / 2, false);
        let m = down_convert(&frames, 1, &mut budget, &mut first).unwrap();
        assert_eq!(m.len(), 2 * one);
        let set =
            kafka_protocol::records::legacy::decode_message_set(&m, |_, _| unreachable!()).unwrap();
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (10..20).collect::<Vec<i64>>());
        assert_eq!(set.version, 1);
        assert_eq!(set.records[0].timestamp, 1000);
    }
}
