//! Request and response bodies. Each has `encode` and `decode`; decoding
//! checks every length against the bytes present before allocating.
//! Record batches are carried as opaque frames (see crate::format) and are
//! split out of the request buffer without copying.

use super::codec::{get_topics, put_str, put_topics, Reader, TopicList};
use super::frame::ApiKey;
use super::gather::Gather;
use super::{DecodeError, ErrorCode};
use bytes::{BufMut, Bytes, BytesMut};

/// Producer acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Acks {
    /// No response at all.
    None,
    /// After the batch is appended (in memory, readable).
    Leader,
    /// After an fdatasync covers the batch.
    All,
}

impl Acks {
    pub fn to_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
    pub fn from_i8(v: i8) -> Result<Acks, DecodeError> {
        match v {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(DecodeError::Invalid {
                what: "acks",
                detail: format!("{other} (expected 0, 1 or -1)"),
            }),
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0" | "none" => Ok(Acks::None),
            "1" | "leader" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("invalid acks '{other}' (expected 0, 1 or all)")),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

// ---------------------------------------------------------------- Produce

#[derive(Debug)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub timeout_ms: u32,
    pub topics: TopicList<ProducePartition>,
}

#[derive(Debug)]
pub struct ProducePartition {
    pub partition: u32,
    /// Back-to-back batch frames, not yet validated.
    pub records: BytesMut,
}

impl ProduceRequest {
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let acks = Acks::from_i8(r.i8("acks")?)?;
        let timeout_ms = r.u32("timeout")?;
        let topics = get_topics(r, 8, |r| {
            Ok(ProducePartition {
                partition: r.u32("partition")?,
                records: r.blob("records")?,
            })
        })?;
        Ok(ProduceRequest {
            acks,
            timeout_ms,
            topics,
        })
    }
}

/// A topic and, per partition, the batch frames to produce to it.
pub type ProduceTopicFrames<'a> = (&'a str, Vec<(u32, &'a [Bytes])>);

/// Encode a produce body from frames the client holds (one copy, into `b`).
pub fn encode_produce(
    b: &mut BytesMut,
    acks: Acks,
    timeout_ms: u32,
    topics: &[ProduceTopicFrames<'_>],
) {
    encode_produce_with(b, acks, timeout_ms, topics, |b, f| b.put_slice(f));
}

/// Frames at least this large are written from their own buffers by
/// [`encode_produce_deferred`]; smaller ones are copied, as an I/O vector
/// entry per kilobyte would cost more than the copy.
pub const DEFER_FRAME_MIN_BYTES: usize = 8 << 10;

/// Encode a produce body with holes for its large frames: everything else
/// goes into `b`, and each frame of at least [`DEFER_FRAME_MIN_BYTES`] is
/// recorded in `payload` with the position in `b` where it belongs, to be
/// written from its own buffer (a vectored write) instead of copied. See
/// `Connection::send_parts`.
pub fn encode_produce_deferred(
    b: &mut BytesMut,
    payload: &mut Vec<(usize, Bytes)>,
    acks: Acks,
    timeout_ms: u32,
    topics: &[ProduceTopicFrames<'_>],
) {
    encode_produce_with(b, acks, timeout_ms, topics, |b, f| {
        if f.len() >= DEFER_FRAME_MIN_BYTES {
            payload.push((b.len(), f.clone()))
        } else {
            b.put_slice(f)
        }
    });
}

fn encode_produce_with(
    b: &mut BytesMut,
    acks: Acks,
    timeout_ms: u32,
    topics: &[ProduceTopicFrames<'_>],
    mut frame: impl FnMut(&mut BytesMut, &Bytes),
) {
    b.put_i8(acks.to_i8());
    b.put_u32_le(timeout_ms);
    b.put_u32_le(topics.len() as u32);
    for (name, parts) in topics {
        put_str(b, name);
        b.put_u32_le(parts.len() as u32);
        for (p, frames) in parts {
            b.put_u32_le(*p);
            let len: usize = frames.iter().map(|f| f.len()).sum();
            b.put_u32_le(len as u32);
            for f in frames.iter() {
                frame(b, f);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
}

impl PartitionResult {
    pub fn ok(partition: u32) -> Self {
        PartitionResult {
            partition,
            error: ErrorCode::None,
            message: String::new(),
        }
    }
    pub fn err(partition: u32, error: ErrorCode, message: impl Into<String>) -> Self {
        PartitionResult {
            partition,
            error,
            message: message.into(),
        }
    }
    fn encode(&self, b: &mut BytesMut) {
        b.put_u32_le(self.partition);
        b.put_u16_le(self.error as u16);
        put_str(b, &self.message);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(PartitionResult {
            partition: r.u32("partition")?,
            error: ErrorCode::from_u16(r.u16("error")?),
            message: r.string("message")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    pub result: PartitionResult,
    pub base_offset: u64,
    pub log_start_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceResponse {
    pub topics: TopicList<ProducePartitionResponse>,
}

impl ProduceResponse {
    pub fn encode(&self, b: &mut BytesMut) {
        put_topics(b, &self.topics, |b, p| {
            p.result.encode(b);
            b.put_u64_le(p.base_offset);
            b.put_u64_le(p.log_start_offset);
        });
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let topics = get_topics(r, 24, |r| {
            Ok(ProducePartitionResponse {
                result: PartitionResult::decode(r)?,
                base_offset: r.u64("base offset")?,
                log_start_offset: r.u64("log start offset")?,
            })
        })?;
        Ok(ProduceResponse { topics })
    }
}

// ---------------------------------------------------------------- Fetch

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub topics: TopicList<FetchPartition>,
}

impl FetchRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_u32_le(self.max_wait_ms);
        b.put_u32_le(self.min_bytes);
        b.put_u32_le(self.max_bytes);
        put_topics(b, &self.topics, |b, p| {
            b.put_u32_le(p.partition);
            b.put_u64_le(p.offset);
            b.put_u32_le(p.max_bytes);
        });
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let max_wait_ms = r.u32("max wait")?;
        let min_bytes = r.u32("min bytes")?;
        let max_bytes = r.u32("max bytes")?;
        let topics = get_topics(r, 16, |r| {
            Ok(FetchPartition {
                partition: r.u32("partition")?,
                offset: r.u64("offset")?,
                max_bytes: r.u32("partition max bytes")?,
            })
        })?;
        Ok(FetchRequest {
            max_wait_ms,
            min_bytes,
            max_bytes,
            topics,
        })
    }
}

#[derive(Debug, Clone)]
pub struct FetchPartitionResponse {
    pub result: PartitionResult,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Whole frames, in offset order.
    pub frames: Vec<Bytes>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchResponse {
    pub topics: TopicList<FetchPartitionResponse>,
}

impl FetchResponse {
    /// Encode the response into one buffer; returns the bytes of records
    /// in it.
    pub fn encode(&self, b: &mut BytesMut) -> usize {
        let mut g = Gather::with_capacity(0);
        let records = self.encode_gather(&mut g);
        for part in g.finish(|_, _| {}) {
            b.extend_from_slice(&part);
        }
        records
    }

    /// Encode the response into `g`, referencing large frames instead of
    /// copying them (the same bytes as [`FetchResponse::encode`]); returns
    /// the bytes of records in it.
    pub fn encode_gather(&self, g: &mut Gather) -> usize {
        let mut records = 0;
        g.buf().put_u32_le(self.topics.len() as u32);
        for (name, parts) in &self.topics {
            put_str(g.buf(), name);
            g.buf().put_u32_le(parts.len() as u32);
            for p in parts {
                p.result.encode(g.buf());
                g.buf().put_u64_le(p.high_watermark);
                g.buf().put_u64_le(p.log_start_offset);
                let len: usize = p.frames.iter().map(|f| f.len()).sum();
                g.buf().put_u32_le(len as u32);
                for f in &p.frames {
                    g.shared(f.clone());
                }
                records += len;
            }
        }
        records
    }

    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let topics = get_topics(r, 28, |r| {
            Ok(FetchPartitionResponse {
                result: PartitionResult::decode(r)?,
                high_watermark: r.u64("high watermark")?,
                log_start_offset: r.u64("log start offset")?,
                frames: vec![r.blob("records")?.freeze()],
            })
        })?;
        Ok(FetchResponse { topics })
    }
}

// ---------------------------------------------------------------- ListOffsets

/// Special timestamps of ListOffsets, as in Kafka.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topics: TopicList<(u32, i64)>,
}

impl ListOffsetsRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        put_topics(b, &self.topics, |b, (p, ts)| {
            b.put_u32_le(*p);
            b.put_i64_le(*ts);
        });
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let topics = get_topics(r, 12, |r| Ok((r.u32("partition")?, r.i64("timestamp")?)))?;
        Ok(ListOffsetsRequest { topics })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    pub result: PartitionResult,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsResponse {
    pub topics: TopicList<ListOffsetsPartition>,
}

impl ListOffsetsResponse {
    pub fn encode(&self, b: &mut BytesMut) {
        put_topics(b, &self.topics, |b, p| {
            p.result.encode(b);
            b.put_u64_le(p.offset);
        });
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let topics = get_topics(r, 16, |r| {
            Ok(ListOffsetsPartition {
                result: PartitionResult::decode(r)?,
                offset: r.u64("offset")?,
            })
        })?;
        Ok(ListOffsetsResponse { topics })
    }
}

// ---------------------------------------------------------------- Metadata

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    /// Empty: every topic.
    pub topics: Vec<String>,
}

impl MetadataRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_u32_le(self.topics.len() as u32);
        for t in &self.topics {
            put_str(b, t);
        }
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let n = r.count("topics", 2)?;
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            topics.push(r.string("topic")?);
        }
        Ok(MetadataRequest { topics })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub error: ErrorCode,
    pub message: String,
    pub partitions: u32,
    pub config: Vec<(String, String)>,
    /// Per partition: owning shard, leader, log start offset, high watermark.
    pub partition_info: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub shard: u32,
    /// Node id of the broker leading the partition (version 1; 0 on a
    /// single node, and in a version 0 answer: "the broker that answered").
    pub leader: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

/// A broker of the cluster as a native client reaches it (Metadata v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: u32,
    /// `host:port` of its native listener.
    pub native_addr: String,
    pub live: bool,
}

/// The Metadata versions this release speaks: 0 (single node, no leaders)
/// and 1 (adds each partition's leader and the cluster's brokers).
pub const METADATA_VERSION_MAX: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataResponse {
    pub shards: u32,
    pub broker_version: String,
    pub topics: Vec<TopicMetadata>,
    /// Node id of the broker that answered (version 1; 0 on a single node).
    pub this_node: u32,
    /// Every registered broker (version 1; empty on a single node).
    pub brokers: Vec<BrokerInfo>,
}

/// Smallest encoding of one partition's info, per version: shard,
/// (leader,) log start, high watermark.
fn partition_info_bytes(version: u16) -> usize {
    if version >= 1 {
        24
    } else {
        20
    }
}

/// Smallest encoding of a broker entry: id, an empty address, live.
const BROKER_INFO_MIN_BYTES: usize = 4 + 2 + 1;

impl MetadataResponse {
    /// Encode as `version` (0 or 1; see docs/wire_protocol.md). Version 0
    /// drops the leaders and the broker list, byte-identical to the
    /// answers of releases before version 1.
    pub fn encode(&self, b: &mut BytesMut, version: u16) {
        assert!(
            version <= METADATA_VERSION_MAX,
            "metadata version {version}"
        );
        b.put_u32_le(self.shards);
        put_str(b, &self.broker_version);
        b.put_u32_le(self.topics.len() as u32);
        for t in &self.topics {
            put_str(b, &t.name);
            b.put_u16_le(t.error as u16);
            put_str(b, &t.message);
            b.put_u32_le(t.partitions);
            b.put_u32_le(t.config.len() as u32);
            for (k, v) in &t.config {
                put_str(b, k);
                put_str(b, v);
            }
            b.put_u32_le(t.partition_info.len() as u32);
            for p in &t.partition_info {
                b.put_u32_le(p.shard);
                if version >= 1 {
                    b.put_u32_le(p.leader);
                }
                b.put_u64_le(p.log_start_offset);
                b.put_u64_le(p.high_watermark);
            }
        }
        if version >= 1 {
            b.put_u32_le(self.this_node);
            b.put_u32_le(self.brokers.len() as u32);
            for br in &self.brokers {
                b.put_u32_le(br.id);
                put_str(b, &br.native_addr);
                b.put_u8(br.live as u8);
            }
        }
    }

    pub fn decode(r: &mut Reader, version: u16) -> Result<Self, DecodeError> {
        if version > METADATA_VERSION_MAX {
            return Err(DecodeError::UnsupportedVersion {
                api: ApiKey::Metadata,
                version,
            });
        }
        let shards = r.u32("shards")?;
        let broker_version = r.string("version")?;
        let n = r.count("topics", 12)?;
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string("topic")?;
            let error = ErrorCode::from_u16(r.u16("error")?);
            let message = r.string("message")?;
            let partitions = r.u32("partitions")?;
            let nc = r.count("configs", 4)?;
            let mut config = Vec::with_capacity(nc);
            for _ in 0..nc {
                config.push((r.string("config key")?, r.string("config value")?));
            }
            let np = r.count("partition info", partition_info_bytes(version))?;
            let mut partition_info = Vec::with_capacity(np);
            for _ in 0..np {
                let shard = r.u32("shard")?;
                let leader = if version >= 1 { r.u32("leader")? } else { 0 };
                partition_info.push(PartitionInfo {
                    shard,
                    leader,
                    log_start_offset: r.u64("log start")?,
                    high_watermark: r.u64("high watermark")?,
                });
            }
            topics.push(TopicMetadata {
                name,
                error,
                message,
                partitions,
                config,
                partition_info,
            });
        }
        let (this_node, brokers) = if version >= 1 {
            let this_node = r.u32("this node")?;
            let nb = r.count("brokers", BROKER_INFO_MIN_BYTES)?;
            let mut brokers = Vec::with_capacity(nb);
            for _ in 0..nb {
                let id = r.u32("broker id")?;
                let native_addr = r.string("broker address")?;
                let live = match r.u8("broker live")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(DecodeError::Invalid {
                            what: "broker live",
                            detail: format!("{v} (expected 0 or 1)"),
                        })
                    }
                };
                brokers.push(BrokerInfo {
                    id,
                    native_addr,
                    live,
                });
            }
            (this_node, brokers)
        } else {
            (0, Vec::new())
        };
        Ok(MetadataResponse {
            shards,
            broker_version,
            topics,
            this_node,
            brokers,
        })
    }
}

// ---------------------------------------------------------------- FindCoordinator

/// Which broker coordinates a consumer group: the one leading the group's
/// partition of the offsets topic. Native offset commits and fetches go there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    pub group: String,
}

impl FindCoordinatorRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        put_str(b, &self.group);
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FindCoordinatorRequest {
            group: r.string("group")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// Node id of the coordinator (0 on a single node: the broker that answered).
    pub node: u32,
}

impl FindCoordinatorResponse {
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_u32_le(self.node);
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FindCoordinatorResponse {
            node: r.u32("coordinator node")?,
        })
    }
}

// ---------------------------------------------------------------- Admin

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    pub config: Vec<(String, String)>,
    /// Replicas per partition; 0: the broker's default. A trailing field:
    /// a request without it means 0.
    pub replication_factor: u16,
}

impl CreateTopicRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        put_str(b, &self.name);
        b.put_u32_le(self.partitions);
        b.put_u32_le(self.config.len() as u32);
        for (k, v) in &self.config {
            put_str(b, k);
            put_str(b, v);
        }
        b.put_u16_le(self.replication_factor);
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.string("topic")?;
        let partitions = r.u32("partitions")?;
        let n = r.count("configs", 4)?;
        let mut config = Vec::with_capacity(n);
        for _ in 0..n {
            config.push((r.string("config key")?, r.string("config value")?));
        }
        let replication_factor = if r.remaining() >= 2 {
            r.u16("replication factor")?
        } else {
            0
        };
        Ok(CreateTopicRequest {
            name,
            partitions,
            config,
            replication_factor,
        })
    }
}

/// DeleteTopic and CreatePartitions bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRequest {
    pub name: String,
    /// CreatePartitions: the new total; DeleteTopic: 0.
    pub partitions: u32,
}

impl TopicRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        put_str(b, &self.name);
        b.put_u32_le(self.partitions);
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(TopicRequest {
            name: r.string("topic")?,
            partitions: r.u32("partitions")?,
        })
    }
}

// ---------------------------------------------------------------- Offsets of consumer groups

/// OffsetCommit: store a group's progress (a standalone commit: no membership).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group: String,
    /// topic -> (partition, next offset to consume)
    pub topics: TopicList<(u32, u64)>,
}

impl OffsetCommitRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        put_str(b, &self.group);
        put_topics(b, &self.topics, |b, (p, o)| {
            b.put_u32_le(*p);
            b.put_u64_le(*o);
        });
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let group = r.string("group")?;
        let topics = get_topics(r, 12, |r| Ok((r.u32("partition")?, r.u64("offset")?)))?;
        Ok(OffsetCommitRequest { group, topics })
    }
}

/// OffsetFetch: read a group's committed progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    pub group: String,
    pub topics: TopicList<u32>,
}

impl OffsetFetchRequest {
    pub fn encode(&self, b: &mut BytesMut) {
        put_str(b, &self.group);
        put_topics(b, &self.topics, |b, p| b.put_u32_le(*p));
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let group = r.string("group")?;
        let topics = get_topics(r, 4, |r| r.u32("partition"))?;
        Ok(OffsetFetchRequest { group, topics })
    }
}

/// Per partition: a result and (OffsetFetch) the committed offset, -1 if none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetsResponse {
    pub topics: TopicList<(PartitionResult, i64)>,
}

impl OffsetsResponse {
    pub fn encode(&self, b: &mut BytesMut) {
        put_topics(b, &self.topics, |b, (r, o)| {
            r.encode(b);
            b.put_i64_le(*o);
        });
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let topics = get_topics(r, 16, |r| {
            Ok((PartitionResult::decode(r)?, r.i64("offset")?))
        })?;
        Ok(OffsetsResponse { topics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(
        encode: impl FnOnce(&mut BytesMut),
        decode: impl FnOnce(&mut Reader) -> Result<T, DecodeError>,
    ) -> T {
        let mut b = BytesMut::new();
        encode(&mut b);
        let mut r = Reader::new(b);
        let v = decode(&mut r).unwrap();
        r.finish().unwrap();
        v
    }

    fn sample_metadata() -> MetadataResponse {
        MetadataResponse {
            shards: 2,
            broker_version: "0.1.0".into(),
            topics: vec![
                TopicMetadata {
                    name: "orders".into(),
                    error: ErrorCode::None,
                    message: String::new(),
                    partitions: 2,
                    config: vec![("retention_ms".into(), "1000".into())],
                    partition_info: vec![
                        PartitionInfo {
                            shard: 1,
                            leader: 3,
                            log_start_offset: 5,
                            high_watermark: 9,
                        },
                        PartitionInfo {
                            shard: 0,
                            leader: 1,
                            log_start_offset: 0,
                            high_watermark: 0,
                        },
                    ],
                },
                TopicMetadata {
                    name: "gone".into(),
                    error: ErrorCode::UnknownTopic,
                    message: "unknown topic 'gone'".into(),
                    partitions: 0,
                    config: vec![],
                    partition_info: vec![],
                },
            ],
            this_node: 1,
            brokers: vec![
                BrokerInfo {
                    id: 1,
                    native_addr: "127.0.0.1:9400".into(),
                    live: true,
                },
                BrokerInfo {
                    id: 3,
                    native_addr: "10.0.0.3:9400".into(),
                    live: false,
                },
            ],
        }
    }

    #[test]
    fn metadata_v1_round_trips_and_v0_drops_leaders_and_brokers() {
        let m = sample_metadata();
        let v1 = round_trip(|b| m.encode(b, 1), |r| MetadataResponse::decode(r, 1));
        assert_eq!(v1, m);
        let v0 = round_trip(|b| m.encode(b, 0), |r| MetadataResponse::decode(r, 0));
        let mut expect = m.clone();
        expect.this_node = 0;
        expect.brokers.clear();
        for t in &mut expect.topics {
            for p in &mut t.partition_info {
                p.leader = 0;
            }
        }
        assert_eq!(v0, expect);
    }

    /// Version 0 is the layout of releases before version 1, byte for byte
    /// (spelled out here from docs/wire_protocol.md, not from the encoder).
    #[test]
    fn metadata_v0_bytes_are_the_old_layout() {
        let m = sample_metadata();
        let mut b = BytesMut::new();
        m.encode(&mut b, 0);
        let mut e: Vec<u8> = Vec::new();
        let s = |e: &mut Vec<u8>, x: &str| {
            e.extend((x.len() as u16).to_le_bytes());
            e.extend(x.as_bytes());
        };
        e.extend(2u32.to_le_bytes());
        s(&mut e, "0.1.0");
        e.extend(2u32.to_le_bytes());
        s(&mut e, "orders");
        e.extend(0u16.to_le_bytes());
        s(&mut e, "");
        e.extend(2u32.to_le_bytes());
        e.extend(1u32.to_le_bytes());
        s(&mut e, "retention_ms");
        s(&mut e, "1000");
        e.extend(2u32.to_le_bytes());
        for (shard, ls, hw) in [(1u32, 5u64, 9u64), (0, 0, 0)] {
            e.extend(shard.to_le_bytes());
            e.extend(ls.to_le_bytes());
            e.extend(hw.to_le_bytes());
        }
        s(&mut e, "gone");
        e.extend(3u16.to_le_bytes());
        s(&mut e, "unknown topic 'gone'");
        e.extend(0u32.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        assert_eq!(&b[..], &e[..]);
        // Version 1 appends the leaders (4 bytes a partition) and the broker list.
        let mut b1 = BytesMut::new();
        m.encode(&mut b1, 1);
        let brokers = 4 + 4 + (4 + 2 + 14 + 1) + (4 + 2 + 13 + 1);
        assert_eq!(b1.len(), e.len() + 2 * 4 + brokers);
    }

    #[test]
    fn metadata_truncated_or_garbage_is_refused_before_allocating() {
        let m = sample_metadata();
        for version in [0, 1] {
            let mut b = BytesMut::new();
            m.encode(&mut b, version);
            for cut in 0..b.len() {
                let mut r = Reader::new(BytesMut::from(&b[..cut]));
                assert!(
                    MetadataResponse::decode(&mut r, version).is_err(),
                    "v{version} cut at {cut} decoded"
                );
            }
        }
        // A broker count larger than the bytes left could hold.
        let mut b = BytesMut::new();
        MetadataResponse::default().encode(&mut b, 1);
        let n = b.len();
        b[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = MetadataResponse::decode(&mut Reader::new(b), 1).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooMany {
                    what: "brokers",
                    ..
                }
            ),
            "{err}"
        );
        // A partition count that needs 24 bytes an entry in version 1.
        let mut b = BytesMut::new();
        let mut one = sample_metadata();
        one.topics.truncate(1);
        one.brokers.clear();
        one.encode(&mut b, 1);
        // Cut the second partition's last 4 bytes and the trailer: 44 bytes
        // remain for a count of 2, which version 0 (20 a partition) would take.
        let keep = b.len() - 8 - 4;
        let err =
            MetadataResponse::decode(&mut Reader::new(BytesMut::from(&b[..keep])), 1).unwrap_err();
        assert!(matches!(err, DecodeError::TooMany { .. }), "{err}");
        // The live flag is a boolean.
        let mut b = BytesMut::new();
        let mut live = MetadataResponse::default();
        live.brokers.push(BrokerInfo {
            id: 2,
            native_addr: "a:1".into(),
            live: true,
        });
        live.encode(&mut b, 1);
        let n = b.len();
        b[n - 1] = 2;
        let err = MetadataResponse::decode(&mut Reader::new(b), 1).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        // An unknown version is refused, not guessed at.
        let err = MetadataResponse::decode(&mut Reader::new(BytesMut::new()), 2).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedVersion { .. }),
            "{err}"
        );
    }

    #[test]
    fn find_coordinator_round_trips() {
        let q = FindCoordinatorRequest {
            group: "billing".into(),
        };
        assert_eq!(
            round_trip(|b| q.encode(b), FindCoordinatorRequest::decode),
            q
        );
        let a = FindCoordinatorResponse { node: 3 };
        assert_eq!(
            round_trip(|b| a.encode(b), FindCoordinatorResponse::decode),
            a
        );
    }

    #[test]
    fn bodies_round_trip() {
        let fetch = FetchRequest {
            max_wait_ms: 5,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![
                (
                    "a".into(),
                    vec![FetchPartition {
                        partition: 3,
                        offset: 9,
                        max_bytes: 77,
                    }],
                ),
                ("b".into(), vec![]),
            ],
        };
        assert_eq!(round_trip(|b| fetch.encode(b), FetchRequest::decode), fetch);
        let lo = ListOffsetsRequest {
            topics: vec![("t".into(), vec![(0, EARLIEST), (1, 1234)])],
        };
        assert_eq!(round_trip(|b| lo.encode(b), ListOffsetsRequest::decode), lo);
        let oc = OffsetCommitRequest {
            group: "g".into(),
            topics: vec![("t".into(), vec![(2, 40)])],
        };
        assert_eq!(
            round_trip(|b| oc.encode(b), OffsetCommitRequest::decode),
            oc
        );
        let of = OffsetFetchRequest {
            group: "g".into(),
            topics: vec![("t".into(), vec![0, 1, 2])],
        };
        assert_eq!(round_trip(|b| of.encode(b), OffsetFetchRequest::decode), of);
        let pr = ProduceResponse {
            topics: vec![(
                "t".into(),
                vec![ProducePartitionResponse {
                    result: PartitionResult::err(1, ErrorCode::NoSpace, "full"),
                    base_offset: 5,
                    log_start_offset: 2,
                }],
            )],
        };
        assert_eq!(round_trip(|b| pr.encode(b), ProduceResponse::decode), pr);
        let fr = FetchResponse {
            topics: vec![(
                "t".into(),
                vec![FetchPartitionResponse {
                    result: PartitionResult::ok(0),
                    high_watermark: 10,
                    log_start_offset: 1,
                    frames: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
                }],
            )],
        };
        let back = round_trip(
            |b| {
                fr.encode(b);
            },
            FetchResponse::decode,
        );
        assert_eq!(&back.topics[0].1[0].frames[0][..], b"abcde");
        assert_eq!(back.topics[0].1[0].high_watermark, 10);
    }
}
