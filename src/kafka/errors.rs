//! Every mapping from a shardlog error to a Kafka error code lives here, and
//! only here. Handlers call these functions; none of them spells a code.
//!
//! Retriable codes (the client retries on its own) are used for conditions
//! that pass: shutdown, timeouts, a coordinator still loading. Fatal codes
//! for what retrying cannot fix: a corrupt batch, an unsupported format.

use super::batch::BatchError;
use crate::format::validate::RecordsError;
use crate::groups::GroupError;
use crate::router::ops::{AdminError, OpError};
use crate::storage::{AppendError, ReadError, SequenceError, StorageError};
use kafka_protocol::error::ResponseError;

/// Kafka's "no error".
pub const NONE: i16 = 0;

/// Failures of the listener itself (not of one partition): the connection is
/// closed, as Apache Kafka does for requests it cannot parse.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("request of {0} bytes is shorter than a request header")]
    ShortRequest(usize),
    #[error("unknown or unsupported API key {0}")]
    UnknownApi(i16),
    #[error("{api} v{version} is not supported (accepted: {range})")]
    UnsupportedVersion {
        api: &'static str,
        version: i16,
        range: String,
    },
    #[error("cannot decode {api} v{version}: {detail}")]
    Decode {
        api: &'static str,
        version: i16,
        detail: String,
    },
    #[error("cannot encode the {api} v{version} response: {detail}")]
    Encode {
        api: &'static str,
        version: i16,
        detail: String,
    },
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn storage(e: &StorageError) -> i16 {
    code(match e {
        StorageError::Io { .. }
        | StorageError::NoSpace { .. }
        | StorageError::Failed { .. }
        | StorageError::Corrupt { .. } => ResponseError::KafkaStorageError,
        // The partition is closing (shutdown or deletion): retriable.
        StorageError::Closed => ResponseError::NotLeaderOrFollower,
    })
}

pub fn append(e: &AppendError) -> i16 {
    match e {
        AppendError::BatchTooLarge { .. } => code(ResponseError::MessageTooLarge),
        AppendError::Sequence(SequenceError::OutOfOrderSequence { .. }) => {
            code(ResponseError::OutOfOrderSequenceNumber)
        }
        AppendError::Sequence(SequenceError::InvalidProducerEpoch { .. }) => {
            code(ResponseError::InvalidProducerEpoch)
        }
        AppendError::Unavailable(s) => storage(s),
    }
}

pub fn read(e: &ReadError) -> i16 {
    match e {
        ReadError::OffsetOutOfRange { .. } => code(ResponseError::OffsetOutOfRange),
        ReadError::Unavailable(s) => storage(s),
    }
}

pub fn op(e: &OpError) -> i16 {
    match e {
        OpError::UnknownTopic(_) | OpError::UnknownPartition { .. } => {
            code(ResponseError::UnknownTopicOrPartition)
        }
        OpError::Offline { .. } => code(ResponseError::KafkaStorageError),
        OpError::Storage(s) => storage(s),
        OpError::Append(a) => append(a),
        OpError::Read(r) => read(r),
        OpError::Timeout(_) => code(ResponseError::RequestTimedOut),
        OpError::ShuttingDown | OpError::NotLeader { .. } => {
            code(ResponseError::NotLeaderOrFollower)
        }
    }
}

pub fn admin(e: &AdminError) -> i16 {
    code(match e {
        AdminError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        AdminError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        AdminError::InvalidName(_) => ResponseError::InvalidTopicException,
        AdminError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        AdminError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        AdminError::InvalidReassignment(_) => ResponseError::InvalidReplicaAssignment,
        AdminError::InvalidConfig(_) => ResponseError::InvalidConfig,
        AdminError::Storage(_) | AdminError::LeftoverInTheWay { .. } => {
            ResponseError::KafkaStorageError
        }
        // Retriable: the client asks again (and reaches a restarted broker).
        AdminError::ShuttingDown | AdminError::ControllerUnavailable(_) => {
            ResponseError::NotController
        }
        AdminError::NoLiveBroker => ResponseError::InvalidReplicationFactor,
        AdminError::OtherCluster { .. } => ResponseError::InconsistentClusterId,
    })
}

pub fn batch(e: &BatchError) -> i16 {
    code(match e {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::Transactional | BatchError::Control => ResponseError::InvalidRecord,
        BatchError::Empty => ResponseError::InvalidRecord,
        // Kafka: "Compacted topic cannot accept message without key".
        BatchError::Records {
            source: RecordsError::MissingKey { .. },
            ..
        } => ResponseError::InvalidRecord,
        // A batch whose records lie about their count, offsets or lengths,
        // or whose compressed payload does not decompress: CORRUPT_MESSAGE,
        // as Kafka's broker answers for the same cases.
        BatchError::Truncated { .. }
        | BatchError::MessageSet(_)
        | BatchError::BadLength(_)
        | BatchError::Frame(_)
        | BatchError::Records { .. } => ResponseError::CorruptMessage,
    })
}

pub fn group(e: &GroupError) -> i16 {
    code(match e {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::UnknownMember => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::FencedInstance => ResponseError::FencedInstanceId,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::GroupFull => ResponseError::GroupMaxSizeReached,
        GroupError::CoordinatorLoading => ResponseError::CoordinatorLoadInProgress,
        GroupError::CoordinatorUnavailable(_) => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::Storage(s) => return storage(s),
        GroupError::Append(a) => return append(a),
        GroupError::Replay(r) => return read(r),
        GroupError::Timeout => ResponseError::RequestTimedOut,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::SubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        // INVALID_REQUEST: clients report it (librdkafka: fatal, with the
        // message), where INVALID_REGULAR_EXPRESSION would say the regex
        // is wrong.
        GroupError::RegexUnsupported | GroupError::InvalidRequest(_) => {
            ResponseError::InvalidRequest
        }
    })
}

pub fn kafka_storage_error() -> i16 {
    code(ResponseError::KafkaStorageError)
}

pub fn unknown_server_error() -> i16 {
    code(ResponseError::UnknownServerError)
}

pub fn unknown_topic() -> i16 {
    code(ResponseError::UnknownTopicOrPartition)
}

/// A topic named by an id this broker does not know (Fetch v13+).
pub fn unknown_topic_id() -> i16 {
    code(ResponseError::UnknownTopicId)
}

pub fn invalid_topic() -> i16 {
    code(ResponseError::InvalidTopicException)
}

pub fn invalid_request() -> i16 {
    code(ResponseError::InvalidRequest)
}

pub fn invalid_required_acks() -> i16 {
    code(ResponseError::InvalidRequiredAcks)
}

pub fn invalid_replication_factor() -> i16 {
    code(ResponseError::InvalidReplicationFactor)
}

pub fn invalid_replica_assignment() -> i16 {
    code(ResponseError::InvalidReplicaAssignment)
}

pub fn no_reassignment_in_progress() -> i16 {
    code(ResponseError::NoReassignmentInProgress)
}

pub fn invalid_partitions() -> i16 {
    code(ResponseError::InvalidPartitions)
}

pub fn unsupported_version() -> i16 {
    code(ResponseError::UnsupportedVersion)
}

/// A transactional id was given: shardlog has no transactions.
pub fn transactions_unsupported() -> i16 {
    code(ResponseError::TransactionalIdAuthorizationFailed)
}

/// A topic name starting with `__` is shardlog's own (consumer offsets).
pub fn internal_topic() -> i16 {
    code(ResponseError::TopicDeletionDisabled)
}

pub fn record_list_too_large() -> i16 {
    code(ResponseError::RecordListTooLarge)
}

/// A partition whose broker is not live (clients retry their metadata).
pub fn leader_not_available() -> i16 {
    code(ResponseError::LeaderNotAvailable)
}

pub fn coordinator_not_available() -> i16 {
    code(ResponseError::CoordinatorNotAvailable)
}

pub fn unsupported_resource() -> i16 {
    code(ResponseError::InvalidRequest)
}

pub fn offset_out_of_range() -> i16 {
    code(ResponseError::OffsetOutOfRange)
}

pub fn invalid_config() -> i16 {
    code(ResponseError::InvalidConfig)
}

pub fn offset_metadata_too_large() -> i16 {
    code(ResponseError::OffsetMetadataTooLarge)
}

/// ACL requests on a broker without an authorizer (Kafka's answer too).
pub fn security_disabled() -> i16 {
    code(ResponseError::SecurityDisabled)
}

/// DescribeUserScramCredentials naming a user with no credentials.
pub fn resource_not_found() -> i16 {
    code(ResponseError::ResourceNotFound)
}

/// The same resource named twice in one request.
pub fn duplicate_resource() -> i16 {
    code(ResponseError::DuplicateResource)
}

/// A keyless record produced to a compacted topic.
/// POLICY_VIOLATION (44): the request is valid but the broker will not
/// carry it out on this resource.
pub fn not_leader_or_follower() -> i16 {
    code(ResponseError::NotLeaderOrFollower)
}

pub fn request_timed_out() -> i16 {
    code(ResponseError::RequestTimedOut)
}

pub fn policy_violation() -> i16 {
    code(ResponseError::PolicyViolation)
}

pub fn invalid_record() -> i16 {
    code(ResponseError::InvalidRecord)
}

pub fn unknown_producer_epoch_bump() -> i16 {
    code(ResponseError::InvalidProducerEpoch)
}

/// A request's current leader epoch is older than the partition's: the
/// client's metadata is stale (it refreshes and retries).
pub fn fenced_leader_epoch() -> i16 {
    code(ResponseError::FencedLeaderEpoch)
}

/// A request's current leader epoch is newer than this broker knows.
pub fn unknown_leader_epoch() -> i16 {
    code(ResponseError::UnknownLeaderEpoch)
}

/// Kafka's leader-epoch check for a replicated partition: a request that
/// names a current leader epoch (-1: none) other than the term this broker
/// knows is fenced (older) or told to wait (newer). None: it may proceed.
pub fn leader_epoch_mismatch(current_leader_epoch: i32, term: u64) -> Option<i16> {
    if current_leader_epoch < 0 {
        return None;
    }
    match (current_leader_epoch as u64).cmp(&term) {
        std::cmp::Ordering::Less => Some(fenced_leader_epoch()),
        std::cmp::Ordering::Greater => Some(unknown_leader_epoch()),
        std::cmp::Ordering::Equal => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        let ooo = AppendError::Sequence(SequenceError::OutOfOrderSequence {
            producer_id: 1,
            expected: 2,
            got: 5,
        });
        assert_eq!(append(&ooo), 45);
        let epoch = AppendError::Sequence(SequenceError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1,
        });
        assert_eq!(append(&epoch), 47);
        assert_eq!(op(&OpError::UnknownTopic("t".into())), 3);
        assert_eq!(admin(&AdminError::TopicExists("t".into())), 36);
        assert_eq!(group(&GroupError::RebalanceInProgress), 27);
        assert_eq!(batch(&BatchError::UnsupportedMagic(1)), 43);
        assert_eq!(unsupported_version(), 35);
    }
}
