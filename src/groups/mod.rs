//! The group coordinator: consumer-group membership, rebalances, and
//! committed offsets.
//!
//! Placement: committed offsets and group memberships live in the internal
//! topic `__consumer_offsets` (hidden from listings: `__` prefix), in
//! Kafka's record format ([`records`], docs/consumer-offsets.md). Group G
//! belongs to partition `abs(javaHash(G)) % partitions` of that topic (Kafka's
//! rule; the first encoding used `fnv1a(G)`, see [`legacy`]), and G's coordinator
//! runs on the shard that owns that partition. So a group's membership state
//! and its offset log sit on one core: a commit is a local append to a
//! normal [`crate::storage::Log`] (group-committed fsync, same durability
//! as acks=all), with no cross-shard hop. Connections on other shards
//! forward group requests with [`crate::shard::Shard::call_on`]. In a
//! cluster the offsets topic is replicated (`offsets_topic_replication_factor`):
//! a commit is a proposal to the partition's Raft group, answered once
//! committed, and only the broker leading the partition coordinates its
//! groups ([`leadership`]).
//!
//! Durability: committed offsets are durable before OffsetCommit answers; a
//! classic group's membership (generation, protocol, leader, members,
//! assignments) is durable before the leader's SyncGroup completes a
//! rebalance, and is stored again when the group empties; a
//! consumer-protocol group's changes (epochs, members, targets, what each
//! member owns) are durable before the heartbeat that made them is
//! answered. All are replayed from the offsets partition the first time
//! its coordinator needs them after a start, so members carry on with
//! their generation or epoch across a broker restart. Offsets expire
//! ([`expiry`]) as Kafka's `offsets.retention.minutes` says.
//!
//! Map: [`state`] is the per-group state machine of the classic protocol
//! (no I/O), [`consumer_group`] that of KIP-848's consumer protocol (no
//! I/O) with its server-side [`assignor`]s, [`records`] the Kafka record
//! codec (no I/O), [`offsets`] the store over the offsets log,
//! [`consumer_store`] how a consumer-protocol group maps to records,
//! [`expiry`] offset expiry, [`legacy`] the reader of the first encoding,
//! [`coordinator`] the per-shard coordinator that ties them to time and
//! storage (its consumer-protocol side in [`consumer_coordinator`]).

pub mod assignor;
pub mod consumer_coordinator;
pub mod consumer_group;
#[cfg(test)]
mod consumer_group_tests;
pub mod consumer_store;
pub mod coordinator;
pub mod expiry;
pub mod leadership;
pub mod legacy;
pub mod offsets;
pub mod records;
pub mod state;
pub mod subscription;

pub use coordinator::Coordinator;
pub use state::MemberRef;

use crate::metadata::INTERNAL_PREFIX;
use crate::router::ops::{AdminError, AdminOp, OpError};
use crate::router::Location;
use crate::shard::Shard;
use crate::storage::{AppendError, ReadError, StorageError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of the offsets topic when it is created. Fixed afterwards:
/// a group's partition must not move.
pub const OFFSETS_PARTITIONS: u32 = 8;

const _: () = assert!(OFFSETS_TOPIC.len() > INTERNAL_PREFIX.len());

/// Why a group operation failed; mapped to Kafka codes in [`super::errors`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    #[error("invalid group id (empty, or longer than 32767 bytes)")]
    InvalidGroupId,
    #[error("unknown member id: rejoin the group")]
    UnknownMember,
    #[error("stale generation: rejoin the group")]
    IllegalGeneration,
    #[error("another member now holds this group.instance.id")]
    FencedInstance,
    #[error("the group is rebalancing: rejoin")]
    RebalanceInProgress,
    #[error("the member's protocol type or protocols do not match the group's")]
    InconsistentProtocol,
    #[error("session timeout out of range")]
    InvalidSessionTimeout,
    #[error("the group has reached its member limit")]
    GroupFull,
    #[error("committed offsets are still loading")]
    CoordinatorLoading,
    #[error("coordinator not available: {0}")]
    CoordinatorUnavailable(Unavailable),
    #[error("this shard does not coordinate the group")]
    NotCoordinator,
    #[error("offsets could not be stored: {0}")]
    Storage(StorageError),
    #[error("offsets could not be stored: {0}")]
    Append(AppendError),
    #[error("committed offsets could not be read back: {0}")]
    Replay(ReadError),
    #[error("timed out storing offsets")]
    Timeout,
    #[error("the group has members: it can be deleted only once empty")]
    NonEmptyGroup,
    #[error("no such group")]
    GroupIdNotFound,
    #[error("the group's members subscribe to this topic")]
    SubscribedToTopic,
    #[error("the member epoch is fenced: give up every partition and rejoin with epoch 0")]
    FencedMemberEpoch,
    #[error("stale member epoch: retry with the epoch of the latest heartbeat")]
    StaleMemberEpoch,
    #[error("unknown server_assignor: this broker serves \"uniform\" (default) and \"range\"")]
    UnsupportedAssignor,
    #[error("another member of the group still holds this group.instance.id")]
    UnreleasedInstanceId,
    #[error("regular expression subscriptions (SubscribedTopicRegex) are not supported by shardlog: subscribe to topic names")]
    RegexUnsupported,
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

/// Why a group's coordinator cannot serve right now (Kafka's
/// `COORDINATOR_NOT_AVAILABLE`: clients retry).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("this shard already coordinates {0} groups, its limit")]
    TooManyGroups(usize),
    #[error("the offsets topic could not be created: {0}")]
    OffsetsTopic(AdminError),
    #[error("the offsets topic vanished")]
    OffsetsTopicGone,
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("{OFFSETS_TOPIC}-{partition}: unreadable batch: {cause}")]
    UnreadableBatch {
        partition: u32,
        cause: crate::format::FrameError,
    },
    #[error(transparent)]
    Offsets(OpError),
}

/// Errors compare by what they say (StorageError has no PartialEq).
impl PartialEq for GroupError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// A JoinGroup, protocol-neutral.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's preference order.
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: (member id, instance id, metadata) of every member.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader need not assign: the group's assignment stands (a static
    /// leader restarted into a stable group; JoinGroup v9+).
    pub skip_assignment: bool,
}

#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub assignment: Bytes,
    pub protocol_type: String,
    pub protocol_name: String,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// topic -> partition -> committed offset.
pub type OffsetMap = BTreeMap<String, BTreeMap<i32, Committed>>;

/// Partitions of the offsets topic, creating it on first use.
pub async fn offsets_partitions(shard: &Rc<Shard>) -> Result<u32, GroupError> {
    if let Some(m) = shard.topics().get(OFFSETS_TOPIC) {
        return Ok(m.partitions);
    }
    let op = AdminOp::CreateTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: OFFSETS_PARTITIONS,
        config: BTreeMap::new(),
        replication_factor: Some(offsets_replication_factor(shard)),
    };
    match shard.admin(op).await {
        Ok(_) | Err(AdminError::TopicExists(_)) => {}
        Err(e) => {
            return Err(GroupError::CoordinatorUnavailable(
                Unavailable::OffsetsTopic(e),
            ))
        }
    }
    shard
        .topics()
        .get(OFFSETS_TOPIC)
        .map(|m| m.partitions)
        .ok_or(GroupError::CoordinatorUnavailable(
            Unavailable::OffsetsTopicGone,
        ))
}

/// Replicas per offsets partition for a new offsets topic: in a cluster
/// `offsets_topic_replication_factor`, but no more than the brokers live
/// now (the controller refuses more; Kafka refuses to create the topic
/// instead, which leaves a young cluster without groups); one on a
/// single broker. Committed offsets survive the loss of a broker only
/// with a factor of 3 or more (docs/replication.md).
fn offsets_replication_factor(shard: &Shard) -> u16 {
    if shard.node_id().is_none() {
        return 1;
    }
    let wanted = shard.config.offsets_topic_replication_factor;
    let live = shard.topics().brokers.values().filter(|b| b.live).count();
    let live = u16::try_from(live).unwrap_or(u16::MAX).max(1);
    if wanted > live {
        tracing::warn!(
            wanted,
            live,
            "kafka: creating {OFFSETS_TOPIC} with {live} replicas per partition, fewer than \
             offsets_topic_replication_factor: only {live} brokers are live"
        );
    }
    wanted.min(live)
}

/// The offsets partition a group belongs to (Kafka's rule).
pub fn partition_of(group: &str, partitions: u32) -> u32 {
    records::kafka_partition_of(group, partitions)
}

/// Run `f` with the coordinator of `group`, on the shard that owns it.
pub async fn with_coordinator<T, F, Fut>(
    shard: &Rc<Shard>,
    group: &str,
    f: F,
) -> Result<T, GroupError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>, Rc<Coordinator>, u32) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, GroupError>> + 'static,
{
    // A group id must fit the records' int16 length prefix.
    if group.is_empty() || group.len() > records::STRING_LEN_MAX {
        return Err(GroupError::InvalidGroupId);
    }
    let n = offsets_partitions(shard).await?;
    let partition = partition_of(group, n);
    // In a cluster the group lives with its offsets partition: on another
    // broker, this one is not its coordinator (the client asks
    // FindCoordinator again).
    let target = match shard
        .topics()
        .get(OFFSETS_TOPIC)
        .map(|m| shard.locate(m, partition))
    {
        Some(Location::Here(s)) => s,
        Some(Location::Elsewhere { .. }) => return Err(GroupError::NotCoordinator),
        None => {
            return Err(GroupError::CoordinatorUnavailable(
                Unavailable::OffsetsTopicGone,
            ))
        }
    };
    shard
        .call_on(target, move |s: Rc<Shard>| async move {
            let c = Coordinator::get(&s);
            c.load(&s, partition).await?;
            f(s, c, partition).await
        })
        .await
        .unwrap_or_else(|| {
            Err(GroupError::CoordinatorUnavailable(
                Unavailable::ShuttingDown,
            ))
        })
}
