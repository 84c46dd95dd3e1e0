//! The Kafka wire-protocol listener: real Kafka clients (librdkafka, the
//! Java client, kafka-python, kafkajs) against the same storage the native
//! protocol uses.
//!
//! Map of the module:
//! - [`listener`]: the [`crate::server::conn::Protocol`] impl: framing,
//!   request header, version checks, dispatch, response order;
//! - [`api_versions`]: which APIs and versions are advertised and accepted;
//! - one file per API (`metadata.rs`, `produce.rs`, `fetch.rs`, ...): decode
//!   nothing themselves (the `kafka-protocol` crate does), they translate a
//!   request into shard operations and the result back into a response;
//! - [`batch`]: Kafka RecordBatch v2 <-> our frame, byte for byte, no recompression;
//! - [`errors`]: every mapping to a Kafka error code lives there and only there;
//! - [`crate::groups`]: the group coordinator (membership, rebalances, committed offsets), shared with the native protocol.
//!
//! Decoding uses a vendored `kafka-protocol` with one safety patch (see
//! `vendor/kafka-protocol/VENDORED.md`): a hostile array count can no longer
//! make the process allocate hundreds of gigabytes and abort.

pub mod acls;
pub mod alter_configs;
pub mod api_versions;
pub mod authorized_ops;
pub mod batch;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod coordinator_probe;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_user_scram_credentials;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod listener;
pub mod message_set;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod refusal;
pub mod sync_group;

pub use listener::Kafka;

/// Serve one accepted Kafka connection on this shard, as its own task
/// (the broker hands this to the acceptor: `server::acceptor::ServeKafka`).
pub fn serve_connection(
    shard: std::rc::Rc<crate::shard::Shard>,
    stream: glommio::net::TcpStream,
    peer: String,
) {
    // A connection is a control task (`shard::queues`).
    let queues = shard.queues;
    queues
        .spawn_control(crate::server::conn::run(
            shard,
            stream,
            std::rc::Rc::new(Kafka::new()),
            peer,
        ))
        .detach();
}

use crate::shard::Shard;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

/// What every handler gets: the shard serving the connection, the request's
/// API version and the client's id.
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub version: i16,
    pub client_id: String,
    pub correlation_id: i32,
    /// A produce's place in its connection's produce order (see
    /// `listener.rs`); taken by the produce handler.
    pub produce_turn: std::cell::Cell<Option<crate::event::turns::Turn>>,
}

/// The single broker's node id in every Kafka answer (in a cluster, each
/// broker answers with its `--node-id`: see [`node_id`]).
pub const NODE_ID: i32 = 0;

/// This broker's node id in Kafka answers.
pub fn node_id(shard: &Shard) -> i32 {
    shard.node_id().map_or(NODE_ID, |n| n as i32)
}

/// `host:port` as Kafka answers carry it; None if it does not parse.
pub fn host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port as i32))
}
/// Leader epoch of every partition: one replica, never re-elected. Stamped
/// into every stored batch by the log.
pub const LEADER_EPOCH: i32 = 0;
/// Cluster id reported in Metadata.
pub const CLUSTER_ID: &str = "shardlog";

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Kafka topic id of a topic: our stored 128-bit hex id as a UUID.
pub fn topic_uuid(hex: &str) -> uuid::Uuid {
    u128::from_str_radix(hex, 16)
        .map(uuid::Uuid::from_u128)
        .unwrap_or(uuid::Uuid::nil())
}

/// Serve one partition of a request with `f` on the shard that owns it: a
/// negative index is UNKNOWN_TOPIC_OR_PARTITION, a shard that cannot
/// answer (stopping) KAFKA_STORAGE_ERROR.
pub async fn on_owner<T, F, Fut>(ctx: &Ctx, topic: String, partition: i32, f: F) -> Result<T, i16>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>, String, u32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, i16>> + 'static,
{
    if partition < 0 {
        return Err(errors::unknown_topic());
    }
    let partition = partition as u32;
    let owner = ctx.shard.serving_shard(&topic, partition);
    ctx.shard
        .call_on(owner, move |s| f(s, topic, partition))
        .await
        .unwrap_or(Err(errors::kafka_storage_error()))
}

/// The host and port Kafka clients should connect to.
pub async fn advertised_addr(shard: &Rc<Shard>) -> (String, i32) {
    listener::KafkaShard::get(shard).advertised(shard).await
}
