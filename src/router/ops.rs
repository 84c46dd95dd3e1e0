//! Protocol-neutral operations a shard serves, and their results. Both the
//! native and the Kafka listeners translate their requests into these, and
//! map the results (and [`OpError`]) back to their own error codes.
//!
//! Moved here from `shard::ops`: these are the payloads of [`super::ShardMsg`],
//! and the router sits below the shard, so they belong to the router.

use crate::partition::FetchOutcome;
use crate::storage::{AppendError, AppendOutcome, ReadError, StorageError};
use bytes::BytesMut;
use std::collections::BTreeMap;

/// Why a partition is offline (refusing everything until the broker restarts).
#[derive(Debug, Clone, thiserror::Error)]
pub enum OfflineCause {
    /// Recovery refused it, its storage failed, or a read found corruption.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The partition directory is not this partition's (its identity file
    /// names another topic), or could not be claimed: the message says why
    /// and what to do.
    #[error(transparent)]
    NotClaimed(std::sync::Arc<crate::metadata::MetadataError>),
}

/// Why an operation on a partition failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpError {
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("topic '{topic}' has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("partition {topic}-{partition} is offline: {cause}")]
    Offline {
        topic: String,
        partition: u32,
        cause: OfflineCause,
    },
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Waiting for durability failed (the partition failed or the disk is full).
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("timed out after {0} ms waiting for the batch to become durable")]
    Timeout(u32),
    /// In a cluster: another broker leads this partition (the client
    /// refreshes its metadata and goes there).
    #[error("partition {topic}-{partition} is led by broker {leader}, not this one")]
    NotLeader {
        topic: String,
        partition: u32,
        leader: u32,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
}

#[derive(Debug)]
pub struct ProducePart {
    pub topic: String,
    pub partition: u32,
    /// Validated frames (header and CRC checked at ingress).
    pub frames: Vec<BytesMut>,
}

#[derive(Debug, Clone)]
pub struct ProducePartResult {
    pub topic: String,
    pub partition: u32,
    pub result: Result<AppendOutcome, OpError>,
}

#[derive(Debug, Clone)]
pub struct FetchPart {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct FetchPartResult {
    pub topic: String,
    pub partition: u32,
    pub result: Result<FetchOutcome, OpError>,
}

/// What to look up for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// First offset whose batch has max timestamp >= this (ms).
    Timestamp(i64),
    /// Base offset of the first batch holding the largest timestamp.
    MaxTimestamp,
    /// Kafka's OffsetForLeaderEpoch: where the largest epoch at or below
    /// this one ends (`offset`), and that epoch (`leader_epoch`).
    EpochEnd(i32),
}

#[derive(Debug, Clone)]
pub struct OffsetsPart {
    pub topic: String,
    pub partition: u32,
    pub query: OffsetQuery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Answer to the query (for Timestamp and MaxTimestamp with no match:
    /// the high watermark).
    pub offset: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// The partition's leader epoch (for EpochEnd: the epoch answered;
    /// -1 when the asked epoch is below every epoch in the log).
    pub leader_epoch: i32,
}

#[derive(Debug, Clone)]
pub struct OffsetsPartResult {
    pub topic: String,
    pub partition: u32,
    pub result: Result<PartitionOffsets, OpError>,
}

/// Changes to topic metadata, executed by the controller (shard 0).
#[derive(Debug, Clone)]
pub enum AdminOp {
    CreateTopic {
        name: String,
        partitions: u32,
        config: BTreeMap<String, String>,
        /// Replicas per partition; None: the broker's
        /// `default_replication_factor`.
        replication_factor: Option<u16>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: u32,
    },
    /// Allocate a fresh idempotent producer id.
    AllocateProducerId,
    /// In a cluster: move a replicated partition's replicas to `replicas`
    /// (the controller records the target; the partition's Raft leader
    /// carries it out).
    Reassign {
        name: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// In a cluster, from a partition's Raft leader: its group's voters
    /// are now exactly `replicas`.
    CompleteReassignment {
        name: String,
        partition: u32,
        leader: u32,
        replicas: Vec<u32>,
    },
    /// Change a topic's config (applied live by every shard).
    AlterTopicConfig {
        name: String,
        changes: Vec<crate::metadata::alter::ConfigChange>,
        /// Names not among the changes go back to their defaults (AlterConfigs).
        replace_all: bool,
        /// Check the changes only; store nothing.
        validate_only: bool,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The topic name (not a message): not a name a topic may have.
    #[error("invalid topic name '{0}': use 1-200 characters from [a-zA-Z0-9._-], not '.' or '..'")]
    InvalidName(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(PartitionCountError),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(ReplicationFactorError),
    #[error("invalid reassignment: {0}")]
    InvalidReassignment(ReassignmentError),
    #[error("invalid topic config: {0}")]
    InvalidConfig(crate::metadata::alter::AlterError),
    #[error("metadata could not be stored: {0}")]
    Storage(std::sync::Arc<crate::metadata::MetadataError>),
    /// A directory left under a new partition's name could not be moved
    /// out of its way (see `shard::admin`).
    #[error(
        "cannot move the leftover directory {dir} out of the way of the new partition: {cause}"
    )]
    LeftoverInTheWay {
        dir: std::path::PathBuf,
        cause: std::sync::Arc<crate::metadata::MetadataError>,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// In a cluster: no controller leader took the change in time (an
    /// election is under way, or a majority of voters is down). Retriable.
    #[error("the cluster controller is not available: {0}")]
    ControllerUnavailable(ControllerUnavailable),
    /// In a cluster: no live broker to place new partitions on.
    #[error("no live broker to place partitions on")]
    NoLiveBroker,
    /// In a cluster: the controller's state belongs to another cluster
    /// than the one that made this broker's topic table.
    #[error(
        "the controller's state is of cluster {theirs:016x}, but this broker's topics came from \
         cluster {ours:016x}: not installed (it would delete every topic it does not know). If the \
         controller voters lost their state, restore their controller/ directories; if this \
         broker really joins a new cluster, move its data directory's contents away first"
    )]
    OtherCluster { ours: u64, theirs: u64 },
}

/// Why a partition count was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionCountError {
    /// A new topic's count, outside `1..=max`.
    #[error("{count} (must be 1..={max})")]
    OutOfRange { count: u32, max: u32 },
    /// A grown topic's count, above `max`.
    #[error("{count} (must be <= {max})")]
    AboveMax { count: u32, max: u32 },
    #[error("topic '{topic}' has {partitions} partitions; the count can grow but never shrink")]
    Shrinks { topic: String, partitions: u32 },
    /// The cluster controller refused it (outside `1..=max`, or a shrink).
    #[error("invalid partition count (1..={max}, and partitions never shrink)")]
    RefusedByController { max: u32 },
}

/// Why a replication factor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationFactorError {
    #[error(
        "replication factor {0} is not possible on a single broker (use 1, or start a cluster)"
    )]
    SingleBroker(u16),
    #[error("0, or more replicas than live brokers")]
    AboveLiveBrokers,
}

/// Why a partition reassignment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignmentError {
    #[error("a single broker holds one replica of everything: reassignment needs a cluster")]
    NeedsCluster,
    #[error("only a replicated partition (replication factor 2 or more) can be reassigned, to 2 or more distinct live brokers")]
    NotReplicated,
    #[error("no such reassignment in progress")]
    NoneInProgress,
    #[error("no such broker")]
    UnknownBroker,
}

/// Why the cluster controller could not take an admin change (the client
/// retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerUnavailable {
    #[error("no controller leader committed the change in time (an election may be under way, or a majority of the controller voters is down); retry")]
    NotCommitted,
    #[error("a newer request of the same origin was applied already")]
    StaleRequest,
    /// An answer that does not fit the request (logged where it is seen).
    #[error("unexpected answer from the controller")]
    UnexpectedAnswer,
}

pub type AdminResult = Result<AdminOk, AdminError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOk {
    Done,
    ProducerId(i64),
}

/// The most one partition of a fetch reads (a batch larger than this still
/// goes, alone), for a fetch whose answer may hold `max_total` bytes across
/// `partitions` partitions. Partitions are read in parallel (on their
/// shards), so without a share each could read `max_total` and a fetch of
/// many partitions would hold many times its answer; the floor keeps a
/// fetch of many partitions from shrinking to nothing.
pub fn partition_read_cap(max_total: usize, partitions: usize) -> usize {
    const FLOOR: usize = 256 << 10;
    (max_total / partitions.max(1)).max(FLOOR).min(max_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed admin refusals say what the formatted strings they
    /// replaced said (clients see this text as the error message).
    #[test]
    fn admin_refusals_read_as_before() {
        let cases = [
            (
                AdminError::InvalidPartitions(PartitionCountError::OutOfRange {
                    count: 0,
                    max: 10_000,
                }),
                "invalid partition count: 0 (must be 1..=10000)",
            ),
            (
                AdminError::InvalidPartitions(PartitionCountError::Shrinks {
                    topic: "t".into(),
                    partitions: 4,
                }),
                "invalid partition count: topic 't' has 4 partitions; the count can grow but never shrink",
            ),
            (
                AdminError::InvalidReplicationFactor(ReplicationFactorError::SingleBroker(3)),
                "invalid replication factor: replication factor 3 is not possible on a single broker (use 1, or start a cluster)",
            ),
            (
                AdminError::InvalidReassignment(ReassignmentError::NeedsCluster),
                "invalid reassignment: a single broker holds one replica of everything: reassignment needs a cluster",
            ),
            (
                AdminError::InvalidName("a/b".into()),
                "invalid topic name 'a/b': use 1-200 characters from [a-zA-Z0-9._-], not '.' or '..'",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
