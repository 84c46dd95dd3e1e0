//! The native protocol listener: decode a frame, run it on the shard
//! (fanning out to other shards as needed), encode the answer.

use super::conn::{Handled, Protocol};
use crate::config::BrokerConfig;
use crate::format::frame::split_frames;
use crate::format::validate::check_records;
use crate::format::HEADER_LEN;
use crate::groups::{self, offsets::CommitItem, Committed, GroupError, MemberRef};
use crate::metadata::INTERNAL_PREFIX;
use crate::protocol::codec::Reader;
use crate::protocol::frame::{finish_frame, frame_total_len, ApiKey, FrameHeader, ResponseHeader};
use crate::protocol::gather::Gather;
use crate::protocol::messages::*;
use crate::protocol::{DecodeError, ErrorCode};
use crate::router::ops::*;
use crate::router::Location;
use crate::shard::Shard;
use crate::storage::{AppendError, ReadError, SequenceError, StorageError};
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::rc::Rc;

pub struct Native;

/// A storage error's native code. It lives here, not in `protocol`, so the
/// wire-protocol module does not depend on storage (layering: see
/// docs/architecture.md).
pub fn storage_error_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::Io { .. } | StorageError::Failed { .. } | StorageError::Corrupt { .. } => {
            ErrorCode::StorageFailed
        }
        StorageError::NoSpace { .. } => ErrorCode::NoSpace,
        StorageError::Closed => ErrorCode::ShuttingDown,
    }
}

pub fn append_error_code(e: &AppendError) -> ErrorCode {
    match e {
        AppendError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        AppendError::Sequence(SequenceError::OutOfOrderSequence { .. }) => {
            ErrorCode::OutOfOrderSequence
        }
        AppendError::Sequence(SequenceError::InvalidProducerEpoch { .. }) => {
            ErrorCode::InvalidProducerEpoch
        }
        AppendError::Unavailable(s) => storage_error_code(s),
    }
}

pub fn read_error_code(e: &ReadError) -> ErrorCode {
    match e {
        ReadError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        ReadError::Unavailable(s) => storage_error_code(s),
    }
}

pub fn op_error_code(e: &OpError) -> ErrorCode {
    match e {
        OpError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        OpError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        OpError::Offline { .. } => ErrorCode::StorageFailed,
        OpError::Storage(s) => storage_error_code(s),
        OpError::Append(a) => append_error_code(a),
        OpError::Read(r) => read_error_code(r),
        OpError::Timeout(_) => ErrorCode::Timeout,
        OpError::ShuttingDown => ErrorCode::ShuttingDown,
        OpError::NotLeader { .. } => ErrorCode::NotLeader,
    }
}

pub fn admin_error_code(e: &AdminError) -> ErrorCode {
    match e {
        AdminError::TopicExists(_) => ErrorCode::TopicExists,
        AdminError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        AdminError::InvalidName(_) => ErrorCode::InvalidRequest,
        AdminError::InvalidPartitions(_)
        | AdminError::InvalidReplicationFactor(_)
        | AdminError::InvalidReassignment(_) => ErrorCode::InvalidPartitions,
        AdminError::InvalidConfig(_) => ErrorCode::InvalidConfig,
        AdminError::Storage(_) | AdminError::LeftoverInTheWay { .. } => ErrorCode::StorageFailed,
        AdminError::ShuttingDown => ErrorCode::ShuttingDown,
        AdminError::ControllerUnavailable(_) | AdminError::NoLiveBroker => ErrorCode::Timeout,
        AdminError::OtherCluster { .. } => ErrorCode::StorageFailed,
    }
}

fn response(
    api_key: u16,
    request_id: u32,
    error: ErrorCode,
    message: String,
    body: impl FnOnce(&mut BytesMut),
) -> BytesMut {
    let mut b = BytesMut::with_capacity(256);
    let start = ResponseHeader {
        api_key,
        error,
        request_id,
        message,
    }
    .begin(&mut b);
    if error == ErrorCode::None {
        body(&mut b);
    }
    finish_frame(&mut b, start);
    b
}

fn decode_error_code(e: &DecodeError) -> ErrorCode {
    match e {
        DecodeError::UnknownApi(_) | DecodeError::UnsupportedVersion { .. } => {
            ErrorCode::UnsupportedVersion
        }
        _ => ErrorCode::Corrupt,
    }
}

impl Protocol for Native {
    fn frame_len(&self, buf: &[u8], max: usize) -> Result<Option<usize>, Option<BytesMut>> {
        frame_total_len(buf, max).map_err(|e| {
            // Answer with the request id if the header is readable, then close.
            if buf.len() >= 12 {
                let api = u16::from_le_bytes([buf[4], buf[5]]);
                let id = u32::from_le_bytes(buf[8..12].try_into().unwrap());
                let code = match e {
                    DecodeError::TooMany { .. } => ErrorCode::RequestTooLarge,
                    _ => ErrorCode::Corrupt,
                };
                Some(response(
                    api,
                    id,
                    code,
                    format!("{e}; closing the connection"),
                    |_| {},
                ))
            } else {
                None
            }
        })
    }

    fn request_cost(&self, frame: &[u8], config: &BrokerConfig) -> usize {
        // A fetch may answer with up to its max_bytes (u32 at byte 20: after
        // the 12-byte frame header, max_wait_ms and min_bytes).
        let fetch =
            frame.len() >= 24 && u16::from_le_bytes([frame[4], frame[5]]) == ApiKey::Fetch as u16;
        if fetch {
            let max_bytes = u32::from_le_bytes(frame[20..24].try_into().unwrap()) as usize;
            frame.len() + max_bytes.min(config.fetch_max_bytes)
        } else {
            frame.len()
        }
    }

    fn is_bulk(&self, frame: &[u8]) -> bool {
        frame.len() >= 6
            && matches!(
                u16::from_le_bytes([frame[4], frame[5]]),
                k if k == ApiKey::Produce as u16 || k == ApiKey::Fetch as u16
            )
    }

    async fn handle(self: Rc<Self>, shard: Rc<Shard>, mut frame: BytesMut) -> Handled {
        bytes::Buf::advance(&mut frame, crate::protocol::frame::LEN_PREFIX);
        let mut r = Reader::new(frame);
        let h = match FrameHeader::decode(&mut r) {
            Ok(h) => h,
            Err(_) => return Handled::Close(None),
        };
        match serve(&shard, h, r).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Handled::NoResponse,
            Err(e) => Handled::Respond(response(
                h.api_key,
                h.request_id,
                decode_error_code(&e),
                e.to_string(),
                |_| {},
            )),
        }
    }
}

async fn serve(
    shard: &Rc<Shard>,
    h: FrameHeader,
    mut r: Reader,
) -> Result<Option<Handled>, DecodeError> {
    let api = ApiKey::from_u16(h.api_key)?;
    // Every API is at version 0; Metadata also answers version 1.
    if h.api_version > api.version_max() {
        return Err(DecodeError::UnsupportedVersion {
            api,
            version: h.api_version,
        });
    }
    let key = h.api_key;
    let id = h.request_id;
    let ok = |body: &dyn Fn(&mut BytesMut)| response(key, id, ErrorCode::None, String::new(), body);
    if shard.shutting_down.get() {
        return Ok(Some(Handled::Respond(response(
            key,
            id,
            ErrorCode::ShuttingDown,
            "the broker is shutting down".into(),
            |_| {},
        ))));
    }
    match api {
        ApiKey::Produce => {
            let req = ProduceRequest::decode(&mut r)?;
            r.finish()?;
            let acks = req.acks;
            let timeout_ms = req.timeout_ms.clamp(1, 300_000);
            let (parts, mut rejected) = validate_produce(req, &shard.topics());
            let results = shard.produce(parts, acks, timeout_ms).await;
            if acks == Acks::None {
                return Ok(None);
            }
            let mut by_topic: BTreeMap<String, Vec<ProducePartitionResponse>> = BTreeMap::new();
            for (t, p) in rejected.drain(..) {
                by_topic.entry(t).or_default().push(p);
            }
            for res in results {
                let entry = by_topic.entry(res.topic).or_default();
                entry.push(match res.result {
                    Ok(o) => ProducePartitionResponse {
                        result: PartitionResult::ok(res.partition),
                        base_offset: o.base_offset,
                        log_start_offset: o.log_start_offset,
                    },
                    Err(e) => ProducePartitionResponse {
                        result: PartitionResult::err(
                            res.partition,
                            op_error_code(&e),
                            e.to_string(),
                        ),
                        base_offset: 0,
                        log_start_offset: 0,
                    },
                });
            }
            let resp = ProduceResponse {
                topics: by_topic.into_iter().collect(),
            };
            Ok(Some(Handled::Respond(ok(&|b| resp.encode(b)))))
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(&mut r)?;
            r.finish()?;
            let max_total = (req.max_bytes.max(1) as usize).min(shard.config.fetch_max_bytes);
            let n = req.topics.iter().map(|(_, ps)| ps.len()).sum();
            let cap = partition_read_cap(max_total, n) as u32;
            let parts: Vec<FetchPart> = req
                .topics
                .iter()
                .flat_map(|(t, ps)| {
                    ps.iter().map(move |p| FetchPart {
                        topic: t.clone(),
                        partition: p.partition,
                        offset: p.offset,
                        max_bytes: p.max_bytes.min(cap).max(1),
                    })
                })
                .collect();
            let max_wait = req.max_wait_ms.min(60_000);
            let results = shard.fetch(parts, max_wait, req.min_bytes, max_total).await;
            // In request order and within `max_total` (see `Shard::fetch`).
            let mut by_topic: BTreeMap<String, Vec<FetchPartitionResponse>> = BTreeMap::new();
            for res in results {
                by_topic
                    .entry(res.topic)
                    .or_default()
                    .push(match res.result {
                        Ok(o) => FetchPartitionResponse {
                            result: PartitionResult::ok(res.partition),
                            high_watermark: o.high_watermark,
                            log_start_offset: o.log_start_offset,
                            frames: o.frames,
                        },
                        Err(e) => {
                            let (hw, ls) = match &e {
                                OpError::Read(crate::storage::ReadError::OffsetOutOfRange {
                                    log_start,
                                    high_watermark,
                                    ..
                                }) => (*high_watermark, *log_start),
                                _ => (0, 0),
                            };
                            FetchPartitionResponse {
                                result: PartitionResult::err(
                                    res.partition,
                                    op_error_code(&e),
                                    e.to_string(),
                                ),
                                high_watermark: hw,
                                log_start_offset: ls,
                                frames: Vec::new(),
                            }
                        }
                    });
            }
            let resp = FetchResponse {
                topics: by_topic.into_iter().collect(),
            };
            // The batches are referenced, not copied, into the answer.
            let mut g = Gather::with_capacity(256);
            let start = ResponseHeader {
                api_key: key,
                error: ErrorCode::None,
                request_id: id,
                message: String::new(),
            }
            .begin(g.buf());
            assert_eq!(start, 0);
            resp.encode_gather(&mut g);
            Ok(Some(Handled::RespondParts(g.finish(|head, total| {
                let len = (total - crate::protocol::frame::LEN_PREFIX) as u32;
                head[..crate::protocol::frame::LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
            }))))
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::decode(&mut r)?;
            r.finish()?;
            let parts = req
                .topics
                .iter()
                .flat_map(|(t, ps)| {
                    ps.iter().map(move |(p, ts)| OffsetsPart {
                        topic: t.clone(),
                        partition: *p,
                        query: match *ts {
                            EARLIEST => OffsetQuery::Earliest,
                            LATEST => OffsetQuery::Latest,
                            ts => OffsetQuery::Timestamp(ts),
                        },
                    })
                })
                .collect();
            let results = shard.offsets(parts).await;
            let mut by_topic: BTreeMap<String, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for res in results {
                by_topic
                    .entry(res.topic)
                    .or_default()
                    .push(match res.result {
                        Ok(o) => ListOffsetsPartition {
                            result: PartitionResult::ok(res.partition),
                            offset: o.offset,
                        },
                        Err(e) => ListOffsetsPartition {
                            result: PartitionResult::err(
                                res.partition,
                                op_error_code(&e),
                                e.to_string(),
                            ),
                            offset: 0,
                        },
                    });
            }
            let resp = ListOffsetsResponse {
                topics: by_topic.into_iter().collect(),
            };
            Ok(Some(Handled::Respond(ok(&|b| resp.encode(b)))))
        }
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(&mut r)?;
            r.finish()?;
            let resp = metadata(shard, req).await;
            Ok(Some(Handled::Respond(ok(&|b| {
                resp.encode(b, h.api_version)
            }))))
        }
        ApiKey::CreateTopic => {
            let req = CreateTopicRequest::decode(&mut r)?;
            r.finish()?;
            let op = AdminOp::CreateTopic {
                name: req.name,
                partitions: req.partitions,
                config: req.config.into_iter().collect(),
                replication_factor: (req.replication_factor != 0).then_some(req.replication_factor),
            };
            Ok(Some(Handled::Respond(
                admin_response(shard, key, id, op).await,
            )))
        }
        ApiKey::DeleteTopic => {
            let req = TopicRequest::decode(&mut r)?;
            r.finish()?;
            if req.name.starts_with(INTERNAL_PREFIX) {
                return Ok(Some(Handled::Respond(response(
                    key,
                    id,
                    ErrorCode::InvalidRequest,
                    format!("'{}' is an internal topic", req.name),
                    |_| {},
                ))));
            }
            Ok(Some(Handled::Respond(
                admin_response(shard, key, id, AdminOp::DeleteTopic { name: req.name }).await,
            )))
        }
        ApiKey::CreatePartitions => {
            let req = TopicRequest::decode(&mut r)?;
            r.finish()?;
            let op = AdminOp::CreatePartitions {
                name: req.name,
                total: req.partitions,
            };
            Ok(Some(Handled::Respond(
                admin_response(shard, key, id, op).await,
            )))
        }
        ApiKey::OffsetCommit => {
            let req = OffsetCommitRequest::decode(&mut r)?;
            r.finish()?;
            let resp = offset_commit(shard, req).await;
            Ok(Some(Handled::Respond(ok(&|b| resp.encode(b)))))
        }
        ApiKey::OffsetFetch => {
            let req = OffsetFetchRequest::decode(&mut r)?;
            r.finish()?;
            let resp = offset_fetch(shard, req).await;
            Ok(Some(Handled::Respond(ok(&|b| resp.encode(b)))))
        }
        ApiKey::FindCoordinator => {
            let req = FindCoordinatorRequest::decode(&mut r)?;
            r.finish()?;
            Ok(Some(Handled::Respond(
                match find_coordinator(shard, &req.group).await {
                    Ok(node) => ok(&|b| FindCoordinatorResponse { node }.encode(b)),
                    Err(e) => response(key, id, group_error_code(&e), e.to_string(), |_| {}),
                },
            )))
        }
    }
}

/// The node leading `group`'s partition of the offsets topic (0 on a
/// single node: this broker). Creates the offsets topic on first use, as
/// the Kafka listener's FindCoordinator does.
async fn find_coordinator(shard: &Rc<Shard>, group: &str) -> Result<u32, GroupError> {
    if group.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    let n = groups::offsets_partitions(shard).await?;
    let partition = groups::partition_of(group, n);
    let topics = shard.topics();
    let meta = topics
        .get(groups::OFFSETS_TOPIC)
        .ok_or(GroupError::NotCoordinator)?;
    Ok(leader_node(shard, meta, partition))
}

/// The node id a native client is told leads `partition`: this broker's id
/// (0 on a single node) when it is here, else the leading broker's.
fn leader_node(shard: &Shard, meta: &crate::metadata::TopicMeta, partition: u32) -> u32 {
    // A replicated partition: its Raft group's leader as this broker's
    // replica last saw it (the controller's placement if unknown).
    if let Some(a) = meta
        .assignment
        .get(partition as usize)
        .filter(|a| a.replicated())
    {
        return shard
            .replication()
            .and_then(|r| r.leader(&meta.name, partition))
            .and_then(|(l, _)| l)
            .unwrap_or(a.node);
    }
    match shard.locate(meta, partition) {
        Location::Here(_) => shard.node_id().unwrap_or(0),
        Location::Elsewhere { node } => node,
    }
}

fn group_error_code(e: &GroupError) -> ErrorCode {
    match e {
        GroupError::InvalidGroupId => ErrorCode::InvalidRequest,
        GroupError::Storage(s) => storage_error_code(s),
        GroupError::Append(a) => append_error_code(a),
        GroupError::Replay(r) => read_error_code(r),
        GroupError::Timeout => ErrorCode::Timeout,
        GroupError::CoordinatorLoading | GroupError::CoordinatorUnavailable(_) => ErrorCode::Busy,
        // In a cluster: the group's offsets partition is led by another
        // broker; the client asks FindCoordinator again and goes there.
        GroupError::NotCoordinator => ErrorCode::NotLeader,
        // Membership errors: native commits are standalone, so these mean a
        // Kafka consumer group with live members owns this group id.
        _ => ErrorCode::InvalidRequest,
    }
}

/// Store a group's progress through the group coordinator (the same store
/// Kafka consumer groups use, so either protocol sees the other's commits).
async fn offset_commit(shard: &Rc<Shard>, req: OffsetCommitRequest) -> OffsetsResponse {
    let items: Vec<CommitItem> = req
        .topics
        .iter()
        .flat_map(|(t, ps)| {
            ps.iter().map(move |(p, o)| CommitItem {
                topic: t.clone(),
                partition: *p as i32,
                committed: Committed {
                    offset: *o as i64,
                    leader_epoch: -1,
                    metadata: None,
                },
            })
        })
        .collect();
    let group = req.group.clone();
    let result = groups::with_coordinator(shard, &req.group, move |s, c, partition| async move {
        c.commit(&s, partition, &group, MemberRef::dynamic(""), -1, items)
            .await
    })
    .await;
    let per_partition = |r: &Result<(), GroupError>, p: u32| match r {
        Ok(()) => PartitionResult::ok(p),
        Err(e) => PartitionResult::err(p, group_error_code(e), e.to_string()),
    };
    OffsetsResponse {
        topics: req
            .topics
            .iter()
            .map(|(t, ps)| {
                (
                    t.clone(),
                    ps.iter()
                        .map(|(p, o)| (per_partition(&result, *p), *o as i64))
                        .collect(),
                )
            })
            .collect(),
    }
}

async fn offset_fetch(shard: &Rc<Shard>, req: OffsetFetchRequest) -> OffsetsResponse {
    let wanted: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|p| *p as i32).collect()))
        .collect();
    let group = req.group.clone();
    let result = groups::with_coordinator(shard, &req.group, move |_, c, _| async move {
        Ok(c.fetch_offsets(&group, Some(wanted)))
    })
    .await;
    OffsetsResponse {
        topics: req
            .topics
            .iter()
            .map(|(t, ps)| {
                let parts = ps
                    .iter()
                    .map(|p| match &result {
                        Ok(map) => {
                            let off = map
                                .get(t)
                                .and_then(|m| m.get(&(*p as i32)))
                                .map(|c| c.offset)
                                .unwrap_or(-1);
                            (PartitionResult::ok(*p), off)
                        }
                        Err(e) => (
                            PartitionResult::err(*p, group_error_code(e), e.to_string()),
                            -1,
                        ),
                    })
                    .collect();
                (t.clone(), parts)
            })
            .collect(),
    }
}

async fn admin_response(shard: &Rc<Shard>, key: u16, id: u32, op: AdminOp) -> BytesMut {
    match shard.admin(op).await {
        Ok(_) => response(key, id, ErrorCode::None, String::new(), |_| {}),
        Err(e) => response(key, id, admin_error_code(&e), e.to_string(), |_| {}),
    }
}

/// Split each partition's records into validated frames (header, CRC, and
/// the records walked, decompressing as the topic says: see
/// [`crate::format::validate`]); partitions whose frames fail validation
/// are rejected on their own with `Corrupt` and nothing of them is stored
/// (the others go on). Runs on the connection's shard, before routing.
fn validate_produce(
    req: ProduceRequest,
    topics: &crate::metadata::SharedTopics,
) -> (Vec<ProducePart>, Vec<(String, ProducePartitionResponse)>) {
    let mut parts = Vec::new();
    let mut rejected = Vec::new();
    for (topic, ps) in req.topics {
        let internal = topic.starts_with(INTERNAL_PREFIX);
        // An unknown topic is refused by the shard; its batches are checked
        // with the defaults meanwhile.
        let limits = topics
            .get(&topic)
            .map(|m| m.config.record_limits())
            .unwrap_or_else(|| crate::config::TopicConfig::default().record_limits());
        for p in ps {
            let reject = |code: ErrorCode, msg: String| ProducePartitionResponse {
                result: PartitionResult::err(p.partition, code, msg),
                base_offset: 0,
                log_start_offset: 0,
            };
            if internal {
                rejected.push((
                    topic.clone(),
                    reject(
                        ErrorCode::InvalidRequest,
                        format!("'{topic}' is an internal topic; clients cannot write to it"),
                    ),
                ));
                continue;
            }
            if p.records.is_empty() {
                rejected.push((
                    topic.clone(),
                    reject(ErrorCode::InvalidRequest, "no record batches".into()),
                ));
                continue;
            }
            let checked = split_frames(p.records).map_err(|e| format!("invalid batch: {e}"));
            let checked = checked.and_then(|frames| {
                for (i, (h, f)) in frames.iter().enumerate() {
                    check_records(h, &f[HEADER_LEN..], &limits).map_err(|e| {
                        format!("invalid records in batch {i} of the partition: {e}")
                    })?;
                }
                Ok(frames)
            });
            match checked {
                Ok(frames) => parts.push(ProducePart {
                    topic: topic.clone(),
                    partition: p.partition,
                    frames: frames.into_iter().map(|(_, f)| f).collect(),
                }),
                Err(msg) => rejected.push((topic.clone(), reject(ErrorCode::Corrupt, msg))),
            }
        }
    }
    (parts, rejected)
}

/// Metadata for the requested (or all non-internal) topics, with each
/// partition's offsets gathered from its owner.
pub async fn metadata(shard: &Rc<Shard>, req: MetadataRequest) -> MetadataResponse {
    let topics = shard.topics();
    let names: Vec<String> = if req.topics.is_empty() {
        topics
            .topics
            .keys()
            .filter(|n| !n.starts_with(INTERNAL_PREFIX))
            .cloned()
            .collect()
    } else {
        req.topics
    };
    let mut queries = Vec::new();
    for n in &names {
        if let Some(m) = topics.get(n) {
            for p in 0..m.partitions {
                queries.push(OffsetsPart {
                    topic: n.clone(),
                    partition: p,
                    query: OffsetQuery::Latest,
                });
            }
        }
    }
    let offsets = shard.offsets(queries).await;
    let mut by_key: BTreeMap<(String, u32), (u64, u64)> = BTreeMap::new();
    for o in offsets {
        if let Ok(po) = o.result {
            by_key.insert(
                (o.topic, o.partition),
                (po.log_start_offset, po.high_watermark),
            );
        }
    }
    let out = names
        .into_iter()
        .map(|n| match topics.get(&n) {
            Some(m) => TopicMetadata {
                name: n.clone(),
                error: ErrorCode::None,
                message: String::new(),
                partitions: m.partitions,
                config: m.config.entries(),
                partition_info: (0..m.partitions)
                    .map(|p| {
                        let (ls, hw) = by_key.get(&(n.clone(), p)).copied().unwrap_or((0, 0));
                        let leader = leader_node(shard, m, p);
                        let replicated = m.assignment.get(p as usize).filter(|a| a.replicated());
                        PartitionInfo {
                            shard: match shard.locate(m, p) {
                                // On the leader's broker, the shard of its replica.
                                _ if replicated.is_some() => replicated
                                    .and_then(|a| a.replica_shard(leader))
                                    .map_or(0, |s| s as u32),
                                Location::Here(s) => s as u32,
                                // The shard on the leading broker, as the controller placed it.
                                Location::Elsewhere { .. } => {
                                    m.assignment.get(p as usize).map_or(0, |a| a.shard as u32)
                                }
                            },
                            leader,
                            log_start_offset: ls,
                            high_watermark: hw,
                        }
                    })
                    .collect(),
            },
            None => TopicMetadata {
                message: format!("unknown topic '{n}'"),
                name: n,
                error: ErrorCode::UnknownTopic,
                partitions: 0,
                config: vec![],
                partition_info: vec![],
            },
        })
        .collect();
    MetadataResponse {
        shards: shard.shards() as u32,
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        topics: out,
        this_node: shard.node_id().unwrap_or(0),
        brokers: topics
            .brokers
            .values()
            .map(|b| BrokerInfo {
                id: b.id,
                native_addr: b.native_addr.clone(),
                live: b.live,
            })
            .collect(),
    }
}
