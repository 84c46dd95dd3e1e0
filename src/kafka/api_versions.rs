//! ApiVersions, and the table of what this broker advertises and accepts.
//!
//! Rules behind the table (DESIGN.md §5 and the kafka-protocol note):
//! - Advertise each API's *request* decode range (`XRequest::VERSIONS`),
//!   never `ApiKey::valid_versions()`, which includes response-only
//!   versions the decoder rejects (OffsetCommit 10, OffsetFetch 10,
//!   InitProducerId 6).
//! - Produce stops at 12: v13 names topics by id only (not served yet);
//!   Fetch goes to 18, naming topics by id from v13 (see `fetch.rs`).
//! - Every minimum is at most Kafka 3.9's (before Kafka 4.0 dropped old
//!   versions): Produce 0-2 and Fetch 0-3 carry message sets (magic 0/1,
//!   see `message_set.rs`); the vendored crate was extended to decode the
//!   versions Kafka 4 dropped (vendor/kafka-protocol/VENDORED.md).
//!   librdkafka before 2.11.1 disables every codec unless Produce v0 is
//!   advertised, Sarama's default config speaks Produce v0 and Fetch v0.
//! - kafkajs ignores the advertised minimum and only speaks non-flexible
//!   versions: every minimum here is at or below kafkajs's maximum.

use super::{fetch, Ctx};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, VersionRange};
use tracing::debug;

const fn range(min: i16, max: i16) -> VersionRange {
    VersionRange { min, max }
}

/// The request versions the handlers accept, per API; None: not served.
pub fn accepted(k: ApiKey) -> Option<VersionRange> {
    Some(match k {
        ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
        ApiKey::Metadata => MetadataRequest::VERSIONS,
        ApiKey::Produce => ProduceRequest::VERSIONS.intersect(&range(0, 12)),
        ApiKey::Fetch => FetchRequest::VERSIONS
            .intersect(&range(*fetch::VERSIONS.start(), *fetch::VERSIONS.end())),
        ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
        ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
        ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
        ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
        ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
        ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS,
        ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
        ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::VERSIONS,
        ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::VERSIONS,
        ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
        ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
        ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
        ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
        ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
        ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
        ApiKey::DescribeAcls => DescribeAclsRequest::VERSIONS,
        ApiKey::CreateAcls => CreateAclsRequest::VERSIONS,
        ApiKey::DeleteAcls => DeleteAclsRequest::VERSIONS,
        ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::VERSIONS,
        ApiKey::DescribeProducers => DescribeProducersRequest::VERSIONS,
        ApiKey::ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::VERSIONS,
        ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::VERSIONS,
        _ => return None,
    })
}

/// What ApiVersions advertises: exactly what is accepted. (Before
/// ConsumerGroupHeartbeat was served it was advertised anyway and refused:
/// librdkafka with `group.protocol=consumer` never sends it to a broker
/// that does not list it and retries silently forever.)
pub fn advertised(k: ApiKey) -> Option<VersionRange> {
    accepted(k)
}

fn table() -> Vec<ApiVersion> {
    ApiKey::iter()
        .filter_map(|k| {
            advertised(k).map(|r| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(r.min)
                    .with_max_version(r.max)
            })
        })
        .collect()
}

pub fn handle(ctx: &Ctx, req: ApiVersionsRequest) -> ApiVersionsResponse {
    if ctx.version >= 3 {
        debug!(
            client_id = %ctx.client_id,
            software = %req.client_software_name,
            software_version = %req.client_software_version,
            "kafka client identified itself"
        );
    }
    ApiVersionsResponse::default()
        .with_error_code(super::errors::NONE)
        .with_api_keys(table())
        .with_throttle_time_ms(0)
}

/// The answer to an ApiVersions request newer than we know: a v0 body with
/// UNSUPPORTED_VERSION and our ApiVersions range, so the client retries
/// with a version we speak.
pub fn too_new() -> ApiVersionsResponse {
    let r = ApiVersionsRequest::VERSIONS;
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(vec![ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(r.min)
            .with_max_version(r.max)])
}

/// Every API served and the request versions accepted, in key order
/// (`Name min–max, ...`): the README's list is this text, checked by a test
/// so it cannot drift from the code.
pub fn served_list() -> String {
    ApiKey::iter()
        .filter_map(|k| accepted(k).map(|r| format!("{k:?} {}–{}", r.min, r.max)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_what_is_served() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let (_, rest) = readme
            .split_once("<!-- served-kafka-apis -->\n")
            .expect("README has a <!-- served-kafka-apis --> marker");
        let (listed, _) = rest
            .split_once("\n<!-- /served-kafka-apis -->")
            .expect("README closes the served-kafka-apis block");
        let want = served_list();
        assert_eq!(
            listed.split_whitespace().collect::<Vec<_>>(),
            want.split_whitespace().collect::<Vec<_>>(),
            "README's served-kafka-apis block must read (any line breaks):\n{want}"
        );
    }

    #[test]
    fn table_respects_the_negotiation_traps() {
        let produce = advertised(ApiKey::Produce).unwrap();
        assert_eq!(produce.min, 0, "librdkafka < 2.11.1 drops codecs otherwise");
        assert_eq!(accepted(ApiKey::Produce).unwrap().min, 0);
        assert_eq!(advertised(ApiKey::Produce).unwrap().max, 12);
        assert_eq!(advertised(ApiKey::Fetch).unwrap().max, 18);
        assert_eq!(advertised(ApiKey::OffsetCommit).unwrap().max, 9);
        assert_eq!(advertised(ApiKey::OffsetFetch).unwrap().max, 9);
        assert_eq!(advertised(ApiKey::InitProducerId).unwrap().max, 5);
        // Kafka 3.9's minima: nothing it served is refused here.
        for k in [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::Metadata,
            ApiKey::OffsetCommit,
            ApiKey::OffsetFetch,
            ApiKey::FindCoordinator,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::Heartbeat,
            ApiKey::LeaveGroup,
            ApiKey::ListGroups,
            ApiKey::DescribeGroups,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::DeleteRecords,
            ApiKey::InitProducerId,
            ApiKey::OffsetForLeaderEpoch,
            ApiKey::DescribeAcls,
            ApiKey::CreateAcls,
            ApiKey::DeleteAcls,
            ApiKey::DescribeConfigs,
            ApiKey::AlterConfigs,
            ApiKey::CreatePartitions,
            ApiKey::DeleteGroups,
            ApiKey::IncrementalAlterConfigs,
            ApiKey::OffsetDelete,
            ApiKey::DescribeUserScramCredentials,
        ] {
            assert_eq!(accepted(k).unwrap().min, 0, "{k:?}");
        }
        // kafkajs 2.2's maxima (it ignores our minima).
        for (k, kafkajs_max) in [
            (ApiKey::Produce, 7),
            (ApiKey::Fetch, 11),
            (ApiKey::ListOffsets, 3),
            (ApiKey::Metadata, 6),
            (ApiKey::OffsetCommit, 5),
            (ApiKey::OffsetFetch, 4),
            (ApiKey::FindCoordinator, 2),
            (ApiKey::JoinGroup, 5),
            (ApiKey::SyncGroup, 3),
            (ApiKey::Heartbeat, 3),
            (ApiKey::LeaveGroup, 3),
            (ApiKey::CreateTopics, 3),
            (ApiKey::DeleteTopics, 3),
            (ApiKey::InitProducerId, 1),
            (ApiKey::DescribeConfigs, 2),
        ] {
            let r = advertised(k).unwrap();
            assert!(r.min <= kafkajs_max, "{k:?}: min {} > {kafkajs_max}", r.min);
        }
    }
}
