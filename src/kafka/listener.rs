//! The Kafka listener's [`Protocol`] impl: framing, request header, version
//! checks, dispatch to the per-API handlers, and response order.
//!
//! Framing: `[size i32 BE][request header][body]`. The first 8 bytes of every
//! header version are `api_key i16, api_version i16, correlation_id i32`; we
//! peek at them and check the version *before* decoding anything, so an
//! unsupported version never reaches the decoder:
//! - ApiVersions newer than we know: a v0 answer with UNSUPPORTED_VERSION;
//! - an API we do not serve, or a version of one we do not accept, whose
//!   response the crate can encode with a top-level error code: that
//!   response, with UNSUPPORTED_VERSION (see [`super::refusal`]), so the
//!   client reports an error instead of reconnecting forever;
//! - anything else (an API key nobody knows, a version the crate cannot
//!   encode, a body that does not decode): close the connection, as Apache
//!   Kafka does.
//!
//! Refusals are logged once per cause (API and version) per shard per
//! minute, whatever the number of connections.
//!
//! Response order: Kafka clients match responses to requests by position
//! (the Java client and kafka-python fail on an out-of-order correlation id),
//! while the connection skeleton ([`crate::server::conn`]) writes responses
//! in completion order. Requests still run concurrently (pipelined produce
//! keeps its throughput); each one takes a ticket when it starts and hands
//! its response back only when every earlier ticket has been answered.
//! Tickets are taken when the connection hands the frame to
//! [`Kafka::handle`], in frame order (not at the task's first poll: produce
//! and fetch tasks run in the shard's bulk queue, the others in the control
//! queue, see `shard::queues`).
//!
//! Produce order: a connection's produces must be appended in frame order,
//! but converting a large one yields the core (see `produce::handle`), so a
//! produce also takes a place in this connection's produce line when it is
//! handed over, and issues its appends only when its turn comes.
//!
//! Lifecycle: one [`Kafka`] per connection, on the shard that serves it.

use super::api_versions::{self, accepted};
use super::errors::KafkaError;
use super::*;
use crate::config::BrokerConfig;
use crate::event::turns::{Turn, Turns};
use crate::server::conn::{Handled, Protocol};
use crate::shard::{PerShard, Shard};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Bytes every request has before its body: the fixed part of the header.
const HEADER_PEEK_LEN: usize = 8;

/// One per connection.
#[derive(Default)]
pub struct Kafka {
    /// Responses leave in request order.
    responses: Turns,
    /// Produces issue their appends in request order.
    produces: Turns,
    /// (api key, version) pairs this connection has used; each is logged once.
    seen: RefCell<HashSet<(i16, i16)>>,
    /// Whether this connection's client asked for a fetch session (logged once).
    asked_fetch_session: Cell<bool>,
}

impl Kafka {
    pub fn new() -> Self {
        Self::default()
    }

    async fn serve(
        &self,
        shard: Rc<Shard>,
        frame: BytesMut,
        produce_turn: Option<Turn>,
    ) -> Handled {
        self.note_fetch_session(&frame);
        let mut body: Bytes = frame.freeze();
        body.advance(4);
        let cause = (
            body.get(..2)
                .map_or(-1, |b| i16::from_be_bytes([b[0], b[1]])),
            body.get(2..4)
                .map_or(-1, |b| i16::from_be_bytes([b[0], b[1]])),
        );
        match self.serve_request(shard.clone(), body, produce_turn).await {
            Ok(h) => h,
            Err(e) => {
                if KafkaShard::get(&shard).first_in_a_while(cause) {
                    warn!("kafka: closing the connection: {e} (logged once a minute per API and version)");
                }
                Handled::Close(None)
            }
        }
    }

    async fn serve_request(
        &self,
        shard: Rc<Shard>,
        mut body: Bytes,
        produce_turn: Option<Turn>,
    ) -> Result<Handled, KafkaError> {
        if body.len() < HEADER_PEEK_LEN {
            return Err(KafkaError::ShortRequest(body.len()));
        }
        let mut peek = &body[..HEADER_PEEK_LEN];
        let (api, version, correlation_id) = (peek.get_i16(), peek.get_i16(), peek.get_i32());
        let key = ApiKey::try_from(api).map_err(|_| KafkaError::UnknownApi(api))?;
        let Some(range) = accepted(key) else {
            return self.refuse(shard, key, version, correlation_id, None);
        };
        if version < range.min || version > range.max {
            if key == ApiKey::ApiVersions && version > range.max {
                debug!(
                    version,
                    "kafka: ApiVersions newer than ours, answering v0 with error 35"
                );
                let ctx = Ctx {
                    shard,
                    version: 0,
                    client_id: String::new(),
                    correlation_id,
                    produce_turn: Cell::new(None),
                };
                return Ok(Handled::Respond(encode(
                    &ctx,
                    "ApiVersions",
                    &api_versions::too_new(),
                )?));
            }
            return self.refuse(shard, key, version, correlation_id, Some(range));
        }
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))
            .map_err(|e| KafkaError::Decode {
                api: "RequestHeader",
                version,
                detail: e.to_string(),
            })?;
        let client_id = header.client_id.as_deref().unwrap_or("").to_string();
        // The header's strings are slices of the frame: held across the
        // handler's await, they would keep a 50 MiB produce frame alive
        // after its records were converted (`produce::handle`).
        drop(header);
        if self.seen.borrow_mut().insert((api, version)) {
            debug!(client_id = %client_id, api = key_name(key), version, "kafka client uses");
        }
        if shard.shutting_down.get() {
            return Ok(Handled::Close(None));
        }
        let ctx = Ctx {
            shard,
            version,
            client_id,
            correlation_id,
            produce_turn: Cell::new(produce_turn),
        };
        dispatch(&ctx, key, body).await
    }
}

impl Kafka {
    /// Fetch sessions (KIP-227) are not served: every answer carries
    /// session id 0, which tells a client that asked for one (session
    /// epoch 0, kafka-python and the Java client do) to keep sending full
    /// fetches. Which clients ask is measured from this line (debug, once
    /// per connection; see docs/kafka.md, "Fetch sessions").
    fn note_fetch_session(&self, frame: &[u8]) {
        const FETCH: i16 = 1;
        if self.asked_fetch_session.get()
            || frame.len() < 8
            || i16::from_be_bytes([frame[4], frame[5]]) != FETCH
        {
            return;
        }
        let Some(peek) = peek_fetch(frame) else {
            return;
        };
        let Some((session_id, session_epoch)) = peek.session else {
            return;
        };
        // (0, -1): a full fetch outside any session, librdkafka's only kind.
        if (session_id, session_epoch) != (0, -1) {
            self.asked_fetch_session.set(true);
            debug!(
                client_id = %String::from_utf8_lossy(peek.client_id),
                session_id,
                session_epoch,
                "kafka client asks for a fetch session (not served: answered with session id 0, so it sends full fetches)"
            );
        }
    }

    /// A request we do not serve (`range` None) or at a version we do not
    /// accept: an error response if the API's response can carry one,
    /// else the error that closes the connection.
    fn refuse(
        &self,
        shard: Rc<Shard>,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        range: Option<kafka_protocol::protocol::VersionRange>,
    ) -> Result<Handled, KafkaError> {
        let err = match range {
            Some(range) => KafkaError::UnsupportedVersion {
                api: key_name(key),
                version,
                range: range.to_string(),
            },
            None => KafkaError::UnknownApi(key as i16),
        };
        let ks = KafkaShard::get(&shard);
        let ctx = Ctx {
            shard,
            version,
            client_id: String::new(),
            correlation_id,
            produce_turn: Cell::new(None),
        };
        let Some(resp) = super::refusal::respond(&ctx, key) else {
            return Err(err);
        };
        if ks.first_in_a_while((key as i16, version)) {
            warn!(
                api = key_name(key),
                version,
                "kafka: {err}: answered with UNSUPPORTED_VERSION (logged once a minute per API and version)"
            );
        }
        Ok(Handled::Respond(resp))
    }
}

impl Protocol for Kafka {
    fn frame_len(&self, buf: &[u8], max: usize) -> Result<Option<usize>, Option<BytesMut>> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len < HEADER_PEEK_LEN as i32 || len as usize > max {
            debug!(len, max, "kafka: refusing a request frame length");
            return Err(None);
        }
        Ok(Some(4 + len as usize))
    }

    /// A Fetch is charged for its answer too: its `max_bytes`, capped by the
    /// broker's `fetch_max_bytes` (or that cap, if the field cannot be read).
    fn request_cost(&self, frame: &[u8], config: &BrokerConfig) -> usize {
        const FETCH: i16 = 1;
        if frame.len() < 8 || i16::from_be_bytes([frame[4], frame[5]]) != FETCH {
            return frame.len();
        }
        let answer = peek_fetch(frame)
            .map(|p| p.max_bytes.max(1) as usize)
            .unwrap_or(usize::MAX)
            .min(config.fetch_max_bytes);
        frame.len() + answer
    }

    fn is_bulk(&self, frame: &[u8]) -> bool {
        const PRODUCE: i16 = 0;
        const FETCH: i16 = 1;
        frame.len() >= 6 && matches!(i16::from_be_bytes([frame[4], frame[5]]), PRODUCE | FETCH)
    }

    /// Takes the request's turns now, when the connection hands the frame
    /// over (frame order), not at the task's first poll: produce and fetch
    /// run in the bulk queue, the rest in the control queue, so first polls
    /// no longer follow frame order.
    fn handle(
        self: Rc<Self>,
        shard: Rc<Shard>,
        frame: BytesMut,
    ) -> impl std::future::Future<Output = Handled> + 'static {
        const PRODUCE: i16 = 0;
        let response_turn = self.responses.take();
        let is_produce = frame.len() >= 6 && i16::from_be_bytes([frame[4], frame[5]]) == PRODUCE;
        let produce_turn = is_produce.then(|| self.produces.take());
        async move {
            let out = self.serve(shard, frame, produce_turn).await;
            response_turn.wait().await;
            out
        }
    }
}

/// Fields of a Fetch request frame (length prefix included), read without
/// decoding the request: after the request header (client id, and tagged
/// fields from v12) come `replica_id` (before v15), `max_wait_ms`,
/// `min_bytes`, `max_bytes` (v3+), `isolation_level` (v4+), then
/// `session_id` and `session_epoch` (v7+).
#[derive(Debug, PartialEq)]
struct FetchPeek<'a> {
    client_id: &'a [u8],
    max_bytes: i32,
    /// (`session_id`, `session_epoch`), v7+: KIP-227 fetch sessions.
    session: Option<(i32, i32)>,
}

/// None if the frame is too short or older than v3.
fn peek_fetch(frame: &[u8]) -> Option<FetchPeek<'_>> {
    let version = i16::from_be_bytes([*frame.get(6)?, *frame.get(7)?]);
    if version < 3 {
        return None;
    }
    let be_i16 = |at: usize| Some(i16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let be_i32 = |at: usize| Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?));
    let client_id_len = be_i16(12)?.max(0) as usize;
    let client_id = frame.get(14..14 + client_id_len)?;
    let mut pos = 14 + client_id_len;
    let uvarint = |pos: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let b = *frame.get(*pos)?;
            *pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    if version >= 12 {
        for _ in 0..uvarint(&mut pos)? {
            uvarint(&mut pos)?;
            let size = uvarint(&mut pos)? as usize;
            pos = pos.checked_add(size)?;
        }
    }
    if version < 15 {
        pos += 4; // replica_id
    }
    pos += 8; // max_wait_ms, min_bytes
    let max_bytes = be_i32(pos)?;
    pos += 4 + 1; // max_bytes, isolation_level
    let session = if version >= 7 {
        Some((be_i32(pos)?, be_i32(pos + 4)?))
    } else {
        None
    };
    Some(FetchPeek {
        client_id,
        max_bytes,
        session,
    })
}

fn key_name(k: ApiKey) -> &'static str {
    match k {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::DescribeProducers => "DescribeProducers",
        _ => "other",
    }
}

fn decode<T: Decodable>(body: &mut Bytes, ctx: &Ctx, api: &'static str) -> Result<T, KafkaError> {
    T::decode(body, ctx.version).map_err(|e| KafkaError::Decode {
        api,
        version: ctx.version,
        detail: format!("{e:#}"),
    })
}

/// `[size][response header][body]` for the request's version.
pub fn encode<R: Encodable + HeaderVersion>(
    ctx: &Ctx,
    api: &'static str,
    r: &R,
) -> Result<BytesMut, KafkaError> {
    let err = |e: anyhow::Error| KafkaError::Encode {
        api,
        version: ctx.version,
        detail: format!("{e:#}"),
    };
    let header = ResponseHeader::default().with_correlation_id(ctx.correlation_id);
    let hv = R::header_version(ctx.version);
    let size = header.compute_size(hv).map_err(err)? + r.compute_size(ctx.version).map_err(err)?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, hv).map_err(err)?;
    r.encode(&mut out, ctx.version).map_err(err)?;
    assert_eq!(out.len(), 4 + size, "compute_size agrees with encode");
    Ok(out)
}

async fn dispatch(ctx: &Ctx, key: ApiKey, mut body: Bytes) -> Result<Handled, KafkaError> {
    macro_rules! serve {
        ($name:literal, $req:ty, $handler:path) => {{
            let req: $req = decode(&mut body, ctx, $name)?;
            let resp = $handler(ctx, req).await;
            Handled::Respond(encode(ctx, $name, &resp)?)
        }};
    }
    Ok(match key {
        ApiKey::ApiVersions => {
            let req: ApiVersionsRequest = decode(&mut body, ctx, "ApiVersions")?;
            Handled::Respond(encode(ctx, "ApiVersions", &api_versions::handle(ctx, req))?)
        }
        ApiKey::Produce => {
            let req: ProduceRequest = decode(&mut body, ctx, "Produce")?;
            // The request's records are slices of the frame: let it go as
            // soon as they are converted (see `produce::handle`).
            drop(body);
            match produce::handle(ctx, req).await {
                Some(resp) => Handled::Respond(encode(ctx, "Produce", &resp)?),
                None => Handled::NoResponse,
            }
        }
        ApiKey::Metadata => serve!("Metadata", MetadataRequest, metadata::handle),
        ApiKey::Fetch => {
            let req: FetchRequest = decode(&mut body, ctx, "Fetch")?;
            let answer = fetch::handle(ctx, req).await;
            Handled::RespondParts(fetch::encode_parts(
                ctx.version,
                ctx.correlation_id,
                &answer,
            ))
        }
        ApiKey::ListOffsets => serve!("ListOffsets", ListOffsetsRequest, list_offsets::handle),
        ApiKey::FindCoordinator => {
            let req: FindCoordinatorRequest = decode(&mut body, ctx, "FindCoordinator")?;
            let (resp, cut_off) = find_coordinator::handle(ctx, req).await;
            let answer = encode(ctx, "FindCoordinator", &resp)?;
            if cut_off {
                Handled::Close(Some(answer))
            } else {
                Handled::Respond(answer)
            }
        }
        ApiKey::JoinGroup => serve!("JoinGroup", JoinGroupRequest, join_group::handle),
        ApiKey::SyncGroup => serve!("SyncGroup", SyncGroupRequest, sync_group::handle),
        ApiKey::Heartbeat => serve!("Heartbeat", HeartbeatRequest, heartbeat::handle),
        ApiKey::LeaveGroup => serve!("LeaveGroup", LeaveGroupRequest, leave_group::handle),
        ApiKey::OffsetCommit => serve!("OffsetCommit", OffsetCommitRequest, offset_commit::handle),
        ApiKey::OffsetFetch => serve!("OffsetFetch", OffsetFetchRequest, offset_fetch::handle),
        ApiKey::InitProducerId => {
            serve!(
                "InitProducerId",
                InitProducerIdRequest,
                init_producer_id::handle
            )
        }
        ApiKey::CreateTopics => serve!("CreateTopics", CreateTopicsRequest, create_topics::handle),
        ApiKey::DeleteTopics => serve!("DeleteTopics", DeleteTopicsRequest, delete_topics::handle),
        ApiKey::DescribeConfigs => {
            serve!(
                "DescribeConfigs",
                DescribeConfigsRequest,
                describe_configs::handle
            )
        }
        ApiKey::OffsetForLeaderEpoch => serve!(
            "OffsetForLeaderEpoch",
            OffsetForLeaderEpochRequest,
            offset_for_leader_epoch::handle
        ),
        ApiKey::CreatePartitions => serve!(
            "CreatePartitions",
            CreatePartitionsRequest,
            create_partitions::handle
        ),
        ApiKey::AlterPartitionReassignments => serve!(
            "AlterPartitionReassignments",
            AlterPartitionReassignmentsRequest,
            partition_reassignments::alter
        ),
        ApiKey::ListPartitionReassignments => serve!(
            "ListPartitionReassignments",
            ListPartitionReassignmentsRequest,
            partition_reassignments::list
        ),
        ApiKey::ListGroups => serve!("ListGroups", ListGroupsRequest, list_groups::handle),
        ApiKey::DescribeGroups => {
            serve!(
                "DescribeGroups",
                DescribeGroupsRequest,
                describe_groups::handle
            )
        }
        ApiKey::DeleteRecords => {
            serve!(
                "DeleteRecords",
                DeleteRecordsRequest,
                delete_records::handle
            )
        }
        ApiKey::DeleteGroups => serve!("DeleteGroups", DeleteGroupsRequest, delete_groups::handle),
        ApiKey::AlterConfigs => serve!("AlterConfigs", AlterConfigsRequest, alter_configs::handle),
        ApiKey::IncrementalAlterConfigs => serve!(
            "IncrementalAlterConfigs",
            IncrementalAlterConfigsRequest,
            alter_configs::handle_incremental
        ),
        ApiKey::OffsetDelete => serve!("OffsetDelete", OffsetDeleteRequest, offset_delete::handle),
        ApiKey::DescribeAcls => serve!("DescribeAcls", DescribeAclsRequest, acls::describe),
        ApiKey::CreateAcls => serve!("CreateAcls", CreateAclsRequest, acls::create),
        ApiKey::DeleteAcls => serve!("DeleteAcls", DeleteAclsRequest, acls::delete),
        ApiKey::ConsumerGroupHeartbeat => serve!(
            "ConsumerGroupHeartbeat",
            ConsumerGroupHeartbeatRequest,
            consumer_group_heartbeat::handle
        ),
        ApiKey::ConsumerGroupDescribe => serve!(
            "ConsumerGroupDescribe",
            ConsumerGroupDescribeRequest,
            consumer_group_describe::handle
        ),
        ApiKey::DescribeUserScramCredentials => serve!(
            "DescribeUserScramCredentials",
            DescribeUserScramCredentialsRequest,
            describe_user_scram_credentials::handle
        ),
        ApiKey::DescribeProducers => serve!(
            "DescribeProducers",
            DescribeProducersRequest,
            describe_producers::handle
        ),
        _ => return Err(KafkaError::UnknownApi(key as i16)),
    })
}

thread_local! {
    /// This shard's Kafka listener state (a typed per-shard slot, see [`PerShard`]).
    static KAFKA_SHARD: PerShard<KafkaShard> = const { PerShard::new() };
}

/// Per-shard state of the Kafka listener, kept alive by the shard.
#[derive(Default)]
pub struct KafkaShard {
    advertised: RefCell<Option<(String, i32)>>,
    /// When each refusal cause (API key, version) was last logged.
    refusals_logged: RefCell<HashMap<(i16, i16), Instant>>,
}

/// A refusal cause is logged at most once per this interval per shard.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Causes remembered; a client spraying keys cannot grow the map further.
const REFUSAL_CAUSES_MAX: usize = 1024;

impl KafkaShard {
    /// Whether a refusal for `cause` should be logged now: the first time,
    /// then once per [`REFUSAL_LOG_INTERVAL`], so a client that reconnects
    /// ten times a second costs one line a minute, not six hundred.
    pub fn first_in_a_while(&self, cause: (i16, i16)) -> bool {
        let now = Instant::now();
        let mut m = self.refusals_logged.borrow_mut();
        if m.len() >= REFUSAL_CAUSES_MAX && !m.contains_key(&cause) {
            m.retain(|_, t| now.duration_since(*t) < REFUSAL_LOG_INTERVAL);
            if m.len() >= REFUSAL_CAUSES_MAX {
                return false;
            }
        }
        match m.get(&cause) {
            Some(t) if now.duration_since(*t) < REFUSAL_LOG_INTERVAL => false,
            _ => {
                m.insert(cause, now);
                true
            }
        }
    }

    pub fn get(shard: &Rc<Shard>) -> Rc<KafkaShard> {
        KAFKA_SHARD.with(|slot| slot.get_or_insert_with(shard, KafkaShard::default).0)
    }

    /// Host and port for Metadata and FindCoordinator answers:
    /// `advertised_kafka_addr` if set, else the address shard 0 bound.
    pub async fn advertised(&self, shard: &Rc<Shard>) -> (String, i32) {
        if let Some(a) = self.advertised.borrow().clone() {
            return a;
        }
        let a = match &shard.config.advertised_kafka_addr {
            Some(s) => split_host_port(s),
            None => {
                let bound: Option<SocketAddr> = shard
                    .call_on(0, |s: Rc<Shard>| async move { *s.kafka_addr.borrow() })
                    .await
                    .flatten();
                match bound {
                    Some(a) if a.ip().is_unspecified() => {
                        warn!(%a, "kafka listener bound to a wildcard address: advertising 127.0.0.1; set advertised_kafka_addr for remote clients");
                        ("127.0.0.1".to_string(), a.port() as i32)
                    }
                    Some(a) => (a.ip().to_string(), a.port() as i32),
                    None => split_host_port(&shard.config.kafka_listen),
                }
            }
        };
        *self.advertised.borrow_mut() = Some(a.clone());
        a
    }
}

fn split_host_port(s: &str) -> (String, i32) {
    match s.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(9092),
        ),
        None => (s.to_string(), 9092),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths() {
        let k = Kafka::new();
        assert_eq!(k.frame_len(&[0, 0], 100), Ok(None));
        assert_eq!(k.frame_len(&[0, 0, 0, 10, 1, 2], 100), Ok(Some(14)));
        let mut f = vec![0, 0, 0, 8];
        f.extend_from_slice(&[0; 8]);
        assert_eq!(k.frame_len(&f, 100), Ok(Some(12)));
        assert!(k.frame_len(&[0xff, 0xff, 0xff, 0xff], 100).is_err());
        assert!(k.frame_len(&[0, 0, 1, 0], 100).is_err());
        assert!(k.frame_len(&[0, 0, 0, 3], 100).is_err());
    }

    #[test]
    fn fetch_fields_are_read_from_the_frame() {
        use kafka_protocol::messages::{FetchRequest, RequestHeader};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        for version in [3i16, 4, 6, 7, 11, 12, 14, 15, 18] {
            let header = RequestHeader::default()
                .with_request_api_key(1)
                .with_request_api_version(version)
                .with_correlation_id(7)
                .with_client_id(Some(StrBytes::from_static_str("some-client")));
            let req = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(123_456)
                .with_isolation_level(1)
                .with_session_id(if version >= 7 { 99 } else { 0 })
                .with_session_epoch(if version >= 7 { 3 } else { -1 });
            let mut b = BytesMut::new();
            b.extend_from_slice(&[0; 4]);
            header
                .encode(&mut b, ApiKey::Fetch.request_header_version(version))
                .unwrap();
            req.encode(&mut b, version).unwrap();
            let len = (b.len() - 4) as i32;
            b[..4].copy_from_slice(&len.to_be_bytes());
            let want = FetchPeek {
                client_id: b"some-client",
                max_bytes: 123_456,
                session: (version >= 7).then_some((99, 3)),
            };
            assert_eq!(peek_fetch(&b), Some(want), "v{version}");
            // Cut anywhere: no panic, and either no answer (the fields
            // read are not all there) or the same answer.
            for cut in 0..b.len() {
                let got = peek_fetch(&b[..cut]);
                assert!(
                    got.is_none() || got == peek_fetch(&b),
                    "v{version} cut {cut}"
                );
            }
        }
        // Fetch v0-2 have no max_bytes.
        let mut old = vec![0u8, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 7, 0, 0];
        old.extend_from_slice(&[0; 16]);
        assert_eq!(peek_fetch(&old), None);
        assert_eq!(peek_fetch(&[0, 0, 0, 4, 0, 1, 0]), None);
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("h:1"), ("h".into(), 1));
        assert_eq!(split_host_port("[::1]:9"), ("::1".into(), 9));
    }
}
