//! The Kafka listener on the wire: every API at every version it accepts,
//! negotiation traps, idempotence and refusals, and hostile input. Requests
//! are encoded and responses decoded with the `kafka-protocol` crate in the
//! client role, over a plain blocking socket.

mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::kafka::{delete_records, encode_batch, list_offset, s, tn, Conn};
use common::BrokerProc;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::{
    legacy, Record, RecordBatchDecoder, TimestampType, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn versions(conn: &mut Conn) -> Vec<(ApiKey, i16, i16)> {
    let r: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    r.api_keys
        .iter()
        .map(|k| {
            (
                ApiKey::try_from(k.api_key).unwrap(),
                k.min_version,
                k.max_version,
            )
        })
        .collect()
}

fn range_of(all: &[(ApiKey, i16, i16)], key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, min, max) = *all.iter().find(|(k, _, _)| *k == key).unwrap();
    // Produce is advertised from 0 but served from 3 (the crate's floor).
    let min = if key == ApiKey::Produce { 3 } else { min };
    min..=max
}

fn batch(n: i64, pid: i64, epoch: i16, seq: i32) -> Bytes {
    batch_of(n, pid, epoch, seq, |i| Bytes::from(format!("v{i}")))
}

/// `n` records with values from `value`, from producer `pid` (or none: -1).
fn batch_of(n: i64, pid: i64, epoch: i16, seq: i32, value: impl Fn(i64) -> Bytes) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            delete_horizon: false,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: if seq < 0 {
                NO_SEQUENCE.wrapping_add(i as i32)
            } else {
                seq + i as i32
            },
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(value(i)),
            headers: Default::default(),
        })
        .collect();
    encode_batch(&records)
}

fn produce_req(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])])
}

fn produce_one(
    c: &mut Conn,
    v: i16,
    req: &ProduceRequest,
) -> produce_response::PartitionProduceResponse {
    let r: ProduceResponse = c.call(ApiKey::Produce, v, req);
    r.responses[0].partition_responses[0].clone()
}

/// A JoinGroup for a new member of `group` (consumer protocol, range).
fn join_request(group: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(""))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(Bytes::from_static(b"sub"))])
}

fn create_topic(c: &mut Conn, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(tn(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 4, &req);
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

#[test]
fn every_api_answers_at_every_advertised_version() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let all = versions(&mut c);
    for v in range_of(&all, ApiKey::ApiVersions) {
        let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, v, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0);
    }
    // CreateTopics at every version (each creates its own topic).
    for v in range_of(&all, ApiKey::CreateTopics) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(tn(&format!("ct{v}")))
                .with_num_partitions(2)
                .with_replication_factor(1)]);
        let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, v, &req);
        assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}");
    }
    create_topic(&mut c, "wire", 3);
    // Metadata: all topics, named topics, and auto-creation.
    for v in range_of(&all, ApiKey::Metadata) {
        let name = format!("auto{v}");
        let topics = vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(tn("wire"))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(tn(&name))),
        ];
        let r: MetadataResponse = c.call(
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(Some(topics)),
        );
        assert_eq!(r.brokers.len(), 1, "Metadata v{v}");
        assert_eq!(r.topics.len(), 2);
        assert_eq!(r.topics[0].partitions.len(), 3, "Metadata v{v}");
        assert_eq!(r.topics[1].error_code, 0, "Metadata v{v} auto-creates");
        assert!(r.topics[0].partitions.iter().all(|p| p.leader_id.0 == 0));
    }
    let all_topics: MetadataResponse = c.call(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(None),
    );
    assert!(all_topics
        .topics
        .iter()
        .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "wire")));
    // Produce at every version, then Fetch at every version sees it all.
    let mut produced = 0i64;
    for v in range_of(&all, ApiKey::Produce) {
        let p = produce_one(
            &mut c,
            v,
            &produce_req(
                "wire",
                1,
                batch(2, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1),
                -1,
            ),
        );
        assert_eq!((p.error_code, p.base_offset), (0, produced), "Produce v{v}");
        produced += 2;
    }
    // Fetch v13+ names topics by the id Metadata gives (both are set here;
    // each version encodes the one it has).
    let wire_id = {
        let r: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(tn("wire"))),
            ])),
        );
        r.topics[0].topic_id
    };
    assert!(!wire_id.is_nil(), "Metadata v12 gives a topic id");
    let fetch_req = |id: uuid::Uuid| {
        FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(tn("wire"))
                .with_topic_id(id)
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(1)
                    .with_fetch_offset(3)
                    .with_partition_max_bytes(1 << 20)])])
    };
    assert!(
        range_of(&all, ApiKey::Fetch).contains(&13),
        "Fetch by topic id is advertised"
    );
    for v in range_of(&all, ApiKey::Fetch) {
        let r: FetchResponse = c.call(ApiKey::Fetch, v, &fetch_req(wire_id));
        if v >= 13 {
            assert_eq!(
                r.responses[0].topic_id, wire_id,
                "Fetch v{v} echoes the topic id"
            );
            // An id the broker does not know: UNKNOWN_TOPIC_ID, nothing else.
            let other = uuid::Uuid::from_u128(0xdead_beef);
            let u: FetchResponse = c.call(ApiKey::Fetch, v, &fetch_req(other));
            assert_eq!(u.responses[0].topic_id, other);
            assert_eq!(
                u.responses[0].partitions[0].error_code, 100,
                "Fetch v{v}: UNKNOWN_TOPIC_ID"
            );
        }
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "Fetch v{v}");
        // v0-3 have no last stable offset (decoded as -1).
        let lso = if v >= 4 { produced } else { -1 };
        assert_eq!((p.high_watermark, p.last_stable_offset), (produced, lso));
        let mut records = p.records.clone().unwrap();
        let sets = if v >= 4 {
            RecordBatchDecoder::decode_all(&mut records).unwrap()
        } else {
            // Message sets: magic 0 for v0-1, magic 1 for v2-3.
            let set = legacy::decode_message_set(&records, |_, _| unreachable!()).unwrap();
            assert_eq!(set.version, if v <= 1 { 0 } else { 1 }, "Fetch v{v}");
            vec![set]
        };
        let offsets: Vec<i64> = sets
            .iter()
            .flat_map(|s| s.records.iter().map(|r| r.offset))
            .collect();
        assert_eq!(offsets.first(), Some(&2), "whole batch containing offset 3");
        assert_eq!(offsets.last(), Some(&(produced - 1)));
    }
    for v in range_of(&all, ApiKey::ListOffsets) {
        let parts = [-2i64, -1, 1_700_000_000_001, 1_900_000_000_000]
            .iter()
            .map(|ts| {
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_timestamp(*ts)
            })
            .collect();
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(tn("wire"))
                .with_partitions(parts)]);
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &req);
        let got: Vec<(i16, i64)> = r.topics[0]
            .partitions
            .iter()
            .map(|p| {
                if v == 0 {
                    // v0: a list of at most max_num_offsets (1) offsets.
                    assert!(p.old_style_offsets.len() <= 1);
                    (p.error_code, *p.old_style_offsets.first().unwrap_or(&-1))
                } else {
                    (p.error_code, p.offset)
                }
            })
            .collect();
        assert_eq!(
            got,
            vec![(0, 0), (0, produced), (0, 1), (0, -1)],
            "ListOffsets v{v}"
        );
    }
    for v in range_of(&all, ApiKey::OffsetForLeaderEpoch) {
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(tn("wire"))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(1)
                            .with_current_leader_epoch(0)
                            .with_leader_epoch(0),
                    ]),
            ]);
        let r: OffsetForLeaderEpochResponse = c.call(ApiKey::OffsetForLeaderEpoch, v, &req);
        let p = &r.topics[0].partitions[0];
        // v0 has no leader epoch in the answer (decoded as -1).
        let epoch = if v >= 1 { 0 } else { -1 };
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            (0, epoch, produced)
        );
    }
    for v in range_of(&all, ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("wire"))
                .with_configuration_keys(None),
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("0"))
                .with_configuration_keys(None),
        ]);
        let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, v, &req);
        assert_eq!(r.results[0].error_code, 0);
        assert!(r.results[0]
            .configs
            .iter()
            .any(|e| e.name.as_str() == "retention.ms"));
        assert_eq!(r.results[1].error_code, 0);
    }
    for v in range_of(&all, ApiKey::CreatePartitions) {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(tn(&format!("ct{}", 2)))
                    .with_count(3 + v as i32),
            ]);
        let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, v, &req);
        assert_eq!(r.results[0].error_code, 0, "CreatePartitions v{v}");
    }
    for v in range_of(&all, ApiKey::InitProducerId) {
        let r: InitProducerIdResponse = c.call(
            ApiKey::InitProducerId,
            v,
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        );
        assert_eq!(r.error_code, 0);
        assert!(r.producer_id.0 >= 0);
    }
    // Groups: one group per version, a single member through the whole protocol.
    for v in range_of(&all, ApiKey::FindCoordinator) {
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])
        } else {
            FindCoordinatorRequest::default().with_key(s("g"))
        };
        let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, v, &req);
        if v >= 4 {
            assert_eq!(
                (r.coordinators[0].error_code, r.coordinators[0].node_id.0),
                (0, 0)
            );
        } else {
            assert_eq!((r.error_code, r.node_id.0), (0, 0));
        }
    }
    for v in range_of(&all, ApiKey::JoinGroup) {
        let group = GroupId(s(&format!("group-v{v}")));
        let join = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"subscription"))]);
        let j: JoinGroupResponse = c.call(ApiKey::JoinGroup, v, &join);
        assert_eq!(j.error_code, 0, "JoinGroup v{v}");
        assert_eq!(j.leader, j.member_id);
        assert_eq!(j.members.len(), 1);
        let sv = v.min(*range_of(&all, ApiKey::SyncGroup).end());
        let sync = SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(j.generation_id)
            .with_member_id(j.member_id.clone())
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(j.member_id.clone())
                    .with_assignment(Bytes::from_static(b"mine")),
            ]);
        let sr: SyncGroupResponse = c.call(ApiKey::SyncGroup, sv, &sync);
        assert_eq!(
            (sr.error_code, &sr.assignment[..]),
            (0, &b"mine"[..]),
            "SyncGroup v{sv}"
        );
        let hv = v.min(*range_of(&all, ApiKey::Heartbeat).end());
        let hb = HeartbeatRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(j.generation_id)
            .with_member_id(j.member_id.clone());
        let h: HeartbeatResponse = c.call(ApiKey::Heartbeat, hv, &hb);
        assert_eq!(h.error_code, 0, "Heartbeat v{hv}");
        // v0 commits without a generation: see `old_offset_commit_and_fetch`.
        let cv = v.clamp(1, *range_of(&all, ApiKey::OffsetCommit).end());
        let commit = OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(j.generation_id)
            .with_member_id(j.member_id.clone())
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(tn("wire"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(4 + v as i64)
                            .with_committed_metadata(Some(s("meta"))),
                    ]),
            ]);
        let cr: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, cv, &commit);
        assert_eq!(
            cr.topics[0].partitions[0].error_code, 0,
            "OffsetCommit v{cv}"
        );
        let lv = v.min(*range_of(&all, ApiKey::LeaveGroup).end());
        let leave = if lv >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group.clone())
                .with_members(vec![leave_group_request::MemberIdentity::default()
                    .with_member_id(j.member_id.clone())])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group.clone())
                .with_member_id(j.member_id.clone())
        };
        let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, lv, &leave);
        assert_eq!(lr.error_code, 0, "LeaveGroup v{lv}");
        let h: HeartbeatResponse = c.call(ApiKey::Heartbeat, hv, &hb);
        assert_eq!(h.error_code, 25, "after leaving, the member is unknown");
    }
    // A member that stays, for ListGroups and DescribeGroups.
    let join = join_request("described");
    let j: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(j.error_code, 0);
    for v in range_of(&all, ApiKey::DescribeGroups) {
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(s("described")), GroupId(s("nobody"))]);
        let r: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, v, &req);
        let g = &r.groups[0];
        assert_eq!(g.error_code, 0, "DescribeGroups v{v}");
        assert_eq!(g.group_state.as_str(), "CompletingRebalance");
        assert_eq!((g.protocol_data.as_str(), g.members.len()), ("range", 1));
        assert_eq!(&g.members[0].member_metadata[..], b"sub");
        assert_eq!(r.groups[1].group_state.as_str(), "Dead");
    }
    for v in range_of(&all, ApiKey::ListGroups) {
        let r: ListGroupsResponse = c.call(ApiKey::ListGroups, v, &ListGroupsRequest::default());
        assert_eq!(r.error_code, 0, "ListGroups v{v}");
        let names: Vec<&str> = r.groups.iter().map(|g| g.group_id.0.as_str()).collect();
        assert!(
            names.contains(&"described") && names.contains(&"group-v3"),
            "ListGroups v{v}: {names:?}"
        );
    }
    for v in range_of(&all, ApiKey::OffsetFetch) {
        let want = |g: &str| (g.to_string(), vec![1, 2]);
        let (group, _) = want("group-v7");
        let r: OffsetFetchResponse = if v >= 8 {
            let req = OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(tn("wire"))
                            .with_partition_indexes(vec![1, 2]),
                    ])),
            ]);
            c.call(ApiKey::OffsetFetch, v, &req)
        } else {
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(tn("wire"))
                        .with_partition_indexes(vec![1, 2]),
                ]));
            c.call(ApiKey::OffsetFetch, v, &req)
        };
        let got: Vec<(i32, i64)> = if v >= 8 {
            r.groups[0].topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset))
                .collect()
        } else {
            r.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset))
                .collect()
        };
        assert_eq!(got, vec![(1, 11), (2, -1)], "OffsetFetch v{v}");
    }
    for v in range_of(&all, ApiKey::DeleteTopics) {
        let name = format!("ct{}", v + 1);
        let req = if v >= 6 {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(tn(&name)))
                ])
        } else {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topic_names(vec![tn(&name)])
        };
        let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, v, &req);
        assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{v}");
    }
    // The internal offsets topic is hidden and cannot be deleted.
    let all_topics: MetadataResponse = c.call(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(None),
    );
    assert!(all_topics
        .topics
        .iter()
        .all(|t| !t.name.as_ref().unwrap().0.starts_with("__")));
    let r: DeleteTopicsResponse = c.call(
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default().with_topic_names(vec![tn("__consumer_offsets")]),
    );
    assert_ne!(r.responses[0].error_code, 0);
}

#[test]
fn negotiation_traps() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let all = versions(&mut c);
    let (_, pmin, pmax) = *all.iter().find(|(k, _, _)| *k == ApiKey::Produce).unwrap();
    assert_eq!(
        (pmin, pmax),
        (0, 12),
        "Produce advertised from 0 (librdkafka codec trap)"
    );
    let (_, _, fmax) = *all.iter().find(|(k, _, _)| *k == ApiKey::Fetch).unwrap();
    assert_eq!(fmax, 18, "Fetch served up to 18 (topics by id from 13)");
    for k in [
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::InitProducerId,
    ] {
        let (_, _, max) = *all.iter().find(|(x, _, _)| *x == k).unwrap();
        assert!(max <= 9, "{k:?} advertises only decodable versions");
    }
    // A newer ApiVersions than we know: v0 answer, error 35, our range.
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(42);
    raw.put_i32(7);
    raw.put_i16(-1);
    c.send_raw(&raw);
    let mut f = c.read_frame().unwrap();
    assert_eq!(f.get_i32(), 7);
    let r = ApiVersionsResponse::decode(&mut f, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert_eq!(r.api_keys[0].api_key, ApiKey::ApiVersions as i16);
    // acks=0: no response at all; the next request's answer comes first.
    create_topic(&mut c, "quiet", 1);
    c.send(
        ApiKey::Produce,
        9,
        &produce_req("quiet", 0, batch(1, -1, -1, -1), 0),
    );
    let corr = c.send(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    let _: ApiVersionsResponse = c.recv(ApiKey::ApiVersions, 0, corr);
    // Pipelined requests are answered in order even when the first one waits.
    let slow = FetchRequest::default()
        .with_max_wait_ms(300)
        .with_min_bytes(1 << 20)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(tn("quiet"))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let c1 = c.send(ApiKey::Fetch, 11, &slow);
    let c2 = c.send(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(None),
    );
    let c3 = c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let f: FetchResponse = c.recv(ApiKey::Fetch, 11, c1);
    assert_eq!(
        f.responses[0].partitions[0].high_watermark, 1,
        "the acks=0 batch landed"
    );
    let _: MetadataResponse = c.recv(ApiKey::Metadata, 9, c2);
    let _: ApiVersionsResponse = c.recv(ApiKey::ApiVersions, 3, c3);
}

#[test]
fn idempotent_producer_dedupes_and_detects_gaps() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "idem", 1);
    let init: InitProducerIdResponse =
        c.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default());
    let pid = init.producer_id.0;
    assert!(pid >= 0, "{init:?}");
    assert_eq!(init.producer_epoch, 0);
    let first = produce_one(&mut c, 9, &produce_req("idem", 0, batch(3, pid, 0, 0), -1));
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    let second = produce_one(&mut c, 9, &produce_req("idem", 0, batch(2, pid, 0, 3), -1));
    assert_eq!((second.error_code, second.base_offset), (0, 3));
    // A retry of the first batch: acknowledged with its original offset, not appended.
    let retry = produce_one(&mut c, 9, &produce_req("idem", 0, batch(3, pid, 0, 0), -1));
    assert_eq!((retry.error_code, retry.base_offset), (0, 0));
    // A gap in the sequence.
    let gap = produce_one(&mut c, 9, &produce_req("idem", 0, batch(1, pid, 0, 9), -1));
    assert_eq!(gap.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    // Epoch bump (KIP-360): same id, epoch 1, sequences restart; epoch 0 is fenced.
    let bump: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(0),
    );
    assert_eq!(
        (bump.error_code, bump.producer_id.0, bump.producer_epoch),
        (0, pid, 1)
    );
    let fresh = produce_one(&mut c, 9, &produce_req("idem", 0, batch(1, pid, 1, 0), -1));
    assert_eq!((fresh.error_code, fresh.base_offset), (0, 5));
    let stale = produce_one(&mut c, 9, &produce_req("idem", 0, batch(1, pid, 0, 5), -1));
    assert_eq!(stale.error_code, 47, "INVALID_PRODUCER_EPOCH");
    let lo: ListOffsetsResponse = c.call(
        ApiKey::ListOffsets,
        5,
        &ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(tn("idem"))
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)]),
        ]),
    );
    assert_eq!(
        lo.topics[0].partitions[0].offset, 6,
        "no duplicate was appended"
    );
}

fn describe_producers(
    c: &mut Conn,
    topics: &[(&str, &[i32])],
) -> Vec<describe_producers_response::TopicResponse> {
    let req = DescribeProducersRequest::default().with_topics(
        topics
            .iter()
            .map(|(t, ps)| {
                describe_producers_request::TopicRequest::default()
                    .with_name(tn(t))
                    .with_partition_indexes(ps.to_vec())
            })
            .collect(),
    );
    let r: DescribeProducersResponse = c.call(ApiKey::DescribeProducers, 0, &req);
    r.topics
}

/// DescribeProducers answers from the partition's idempotent-producer
/// table, and the last timestamp survives a restart (the checkpoint keeps it).
#[test]
fn describe_producers_reports_the_idempotent_producer_table() {
    let mut b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "dp", 2);
    let init: InitProducerIdResponse =
        c.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default());
    let pid = init.producer_id.0;
    for (n, seq) in [(3, 0), (2, 3)] {
        let r = produce_one(&mut c, 9, &produce_req("dp", 0, batch(n, pid, 0, seq), -1));
        assert_eq!(r.error_code, 0);
    }
    // Not idempotent: not in the table.
    let r = produce_one(&mut c, 9, &produce_req("dp", 1, batch(2, -1, -1, -1), -1));
    assert_eq!(r.error_code, 0);
    let check = |c: &mut Conn| {
        let topics = describe_producers(c, &[("dp", &[0, 1, 2]), ("nope", &[0])]);
        let dp = &topics[0].partitions;
        assert_eq!(dp[0].error_code, 0);
        let p = &dp[0].active_producers;
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (
                p[0].producer_id.0,
                p[0].producer_epoch,
                p[0].last_sequence,
                p[0].last_timestamp,
                p[0].coordinator_epoch,
                p[0].current_txn_start_offset
            ),
            (pid, 0, 4, 1_700_000_000_001, -1, -1)
        );
        assert_eq!((dp[1].error_code, dp[1].active_producers.len()), (0, 0));
        assert_eq!(dp[2].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(topics[1].partitions[0].error_code, 3);
    };
    check(&mut c);
    b.stop();
    b.restart();
    check(&mut Conn::new(b.kafka.as_ref().unwrap()));
}

/// Produces pipelined on one connection are appended in the order they
/// were sent, even when a large one (converted while yielding the core)
/// is followed by small ones that would be ready first. An idempotent
/// producer detects any reordering: a batch appended ahead of its
/// predecessor gets OUT_OF_ORDER_SEQUENCE_NUMBER.
#[test]
fn pipelined_produces_are_appended_in_the_order_sent() {
    const PARTITIONS: i32 = 4;
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "pipelined", PARTITIONS);
    let init: InitProducerIdResponse =
        c.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default());
    let pid = init.producer_id.0;
    let big_value = Bytes::from(vec![b'b'; 1000]);
    let mut next_seq = [0i32; PARTITIONS as usize];
    let mut sent = Vec::new();
    for round in 0..12 {
        // Even rounds: ~1.5 MiB for every partition (6 MiB in all, over the
        // size appended at once); odd rounds: one record for partition 0.
        let (partitions, n): (Vec<i32>, i64) = if round % 2 == 0 {
            ((0..PARTITIONS).collect(), 1500)
        } else {
            (vec![0], 1)
        };
        let data = partitions
            .iter()
            .map(|&p| {
                let seq = next_seq[p as usize];
                next_seq[p as usize] += n as i32;
                let v = big_value.clone();
                let value = move |i: i64| {
                    if n == 1 {
                        Bytes::from(format!("round {round} record {i}"))
                    } else {
                        v.clone()
                    }
                };
                produce_request::PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(batch_of(n, pid, 0, seq, value)))
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(tn("pipelined"))
                .with_partition_data(data)]);
        sent.push((c.send(ApiKey::Produce, 9, &req), n));
    }
    // Partition 0 receives every round: its offsets follow the send order.
    let mut expected_offset = 0i64;
    for (corr, n) in sent {
        let r: ProduceResponse = c.recv(ApiKey::Produce, 9, corr);
        for p in &r.responses[0].partition_responses {
            assert_eq!(
                p.error_code, 0,
                "request {corr}, partition {}: {p:?}",
                p.index
            );
            if p.index == 0 {
                assert_eq!(
                    p.base_offset, expected_offset,
                    "request {corr} appended out of order"
                );
            }
        }
        expected_offset += n;
    }
}

#[test]
fn refusals_are_clear_and_hostile_input_only_closes_its_connection() {
    let b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    let mut c = Conn::new(&addr);
    create_topic(&mut c, "strict", 1);
    // Magic v1 message set.
    let mut v1 = batch(1, -1, -1, -1).to_vec();
    v1[16] = 1;
    let p = produce_one(&mut c, 9, &produce_req("strict", 0, Bytes::from(v1), 1));
    assert_eq!(p.error_code, 43, "UNSUPPORTED_FOR_MESSAGE_FORMAT");
    assert!(p.error_message.unwrap().contains("RecordBatch v2"));
    // Transactional batch and transactional produce.
    let mut txn = batch(1, -1, -1, -1).to_vec();
    txn[22] |= 0x10;
    let p = produce_one(&mut c, 9, &produce_req("strict", 0, Bytes::from(txn), 1));
    assert_eq!(p.error_code, 87, "INVALID_RECORD");
    let req = produce_req("strict", 0, batch(1, -1, -1, -1), 1)
        .with_transactional_id(Some(TransactionalId(s("t"))));
    assert_ne!(produce_one(&mut c, 9, &req).error_code, 0);
    // Internal topics are not writable by clients.
    let internal = produce_req("__consumer_offsets", 0, batch(1, -1, -1, -1), 1);
    assert_eq!(
        produce_one(&mut c, 9, &internal).error_code,
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    // A corrupted CRC.
    let mut bad = batch(2, -1, -1, -1).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        produce_one(&mut c, 9, &produce_req("strict", 0, Bytes::from(bad), 1)).error_code,
        2
    );
    let mut i =
        InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s("t"))));
    i.transaction_timeout_ms = 1000;
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &i);
    assert_ne!(r.error_code, 0);
    // Hostile inputs: each closes its own connection, nothing else.
    let hostile: Vec<Vec<u8>> = vec![
        // Metadata v1 whose topic array claims 2^31-1 entries (the crate would
        // try to allocate ~154 GB without the vendored patch).
        {
            let mut r = BytesMut::new();
            r.put_i16(3);
            r.put_i16(1);
            r.put_i32(1);
            r.put_i16(-1);
            r.put_i32(0x7fff_ffff);
            r.to_vec()
        },
        // Metadata v9 (flexible): a compact array of 2^32-2 entries.
        {
            let mut r = BytesMut::new();
            r.put_i16(3);
            r.put_i16(9);
            r.put_i32(1);
            r.put_i16(-1);
            r.put_u8(0);
            r.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            r.to_vec()
        },
        // Produce v2 (not decodable), an unknown API key, a truncated header.
        {
            let mut r = BytesMut::new();
            r.put_i16(0);
            r.put_i16(2);
            r.put_i32(1);
            r.to_vec()
        },
        {
            let mut r = BytesMut::new();
            r.put_i16(999);
            r.put_i16(0);
            r.put_i32(1);
            r.to_vec()
        },
        vec![0, 18, 0],
    ];
    for h in hostile {
        let mut x = Conn::new(&addr);
        x.send_raw(&h);
        assert!(x.closed(), "hostile request {h:02x?} closes the connection");
    }
    let mut x = Conn::new(&addr);
    x.s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(x.closed(), "a negative frame length closes the connection");
    // The broker is still serving.
    let mut again = Conn::new(&addr);
    let all = versions(&mut again);
    assert!(!all.is_empty());
    let p = produce_one(
        &mut c,
        9,
        &produce_req("strict", 0, batch(1, -1, -1, -1), 1),
    );
    assert_eq!((p.error_code, p.base_offset), (0, 0));
}

/// Deterministic xorshift, so a failing case replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn encoded<R: Encodable>(key: ApiKey, v: i16, req: &R) -> Vec<u8> {
    let h = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(1)
        .with_client_id(Some(s("fuzz")));
    let mut body = BytesMut::new();
    h.encode(&mut body, key.request_header_version(v)).unwrap();
    req.encode(&mut body, v).unwrap();
    body.to_vec()
}

#[test]
fn mutated_requests_never_take_the_broker_down() {
    let b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    let mut c = Conn::new(&addr);
    create_topic(&mut c, "fz", 2);
    let group = GroupId(s("fz-group"));
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for v in [3i16, 8, 9, 12] {
        seeds.push(encoded(
            ApiKey::Produce,
            v,
            &produce_req("fz", 1, batch(3, -1, -1, -1), 1),
        ));
    }
    for v in [4i16, 11, 12] {
        let req = FetchRequest::default()
            .with_max_wait_ms(10)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(tn("fz"))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(1)
                    .with_partition_max_bytes(1 << 20)])]);
        seeds.push(encoded(ApiKey::Fetch, v, &req));
    }
    for v in [1i16, 9, 13] {
        let topics =
            vec![metadata_request::MetadataRequestTopic::default().with_name(Some(tn("fz")))];
        seeds.push(encoded(
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(Some(topics)),
        ));
    }
    for v in [1i16, 5] {
        let join = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(2000)
            .with_rebalance_timeout_ms(2000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))]);
        seeds.push(encoded(ApiKey::JoinGroup, v, &join));
    }
    for v in [2i16, 8] {
        let commit = OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(tn("fz"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1),
                    ]),
            ]);
        seeds.push(encoded(ApiKey::OffsetCommit, v, &commit));
    }
    seeds.push(encoded(
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(tn("fz"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_timestamp(5)
                ]),
        ]),
    ));
    seeds.push(encoded(
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(tn("fz-new"))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]),
    ));
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let cases = 600;
    let mut open: Vec<TcpStream> = Vec::new();
    for i in 0..cases {
        let mut f = seeds[rng.below(seeds.len())].clone();
        match rng.below(5) {
            // Flip a few bytes (never the api key/version: those are checked before decoding).
            0 | 1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = 4 + rng.below(f.len() - 4);
                    f[at] ^= 1 << rng.below(8);
                }
            }
            // Overwrite four bytes with a huge count.
            2 => {
                let at = 8 + rng.below(f.len().saturating_sub(12));
                f[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, (rng.next() & 0xff) as u8]);
            }
            // Truncate.
            3 => f.truncate(8 + rng.below(f.len() - 8)),
            // A run of 0xff (compact lengths and varints at their largest).
            _ => {
                let at = 8 + rng.below(f.len() - 8);
                let n = (1 + rng.below(6)).min(f.len() - at);
                f[at..at + n].fill(0xff);
            }
        }
        let mut sock = TcpStream::connect(&addr).unwrap();
        let mut framed = (f.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&f);
        let _ = sock.write_all(&framed);
        open.push(sock);
        if open.len() == 50 || i == cases - 1 {
            std::thread::sleep(Duration::from_millis(100));
            open.clear();
        }
    }
    // Still alive and still correct.
    let mut again = Conn::new(&addr);
    assert!(
        !versions(&mut again).is_empty(),
        "broker alive after {cases} mutated requests"
    );
    let p = produce_one(
        &mut again,
        9,
        &produce_req("fz", 0, batch(1, -1, -1, -1), -1),
    );
    assert_eq!(p.error_code, 0);
    assert!(
        !b.stderr().contains("panicked"),
        "no shard panicked:\n{}",
        b.stderr()
    );
}

/// Create a topic with configs (CreateTopics v4).
fn create_topic_with(c: &mut Conn, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(tn(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 4, &req);
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

/// A Fetch of partition 0 of `topic` from `offset` (1 MiB, 10 ms wait).
fn fetch_partition0(topic: &str, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(10)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(tn(topic))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// Fetch v11 of one partition: (error code, log start, high watermark, bytes of records).
fn fetch_at(c: &mut Conn, topic: &str, offset: i64) -> (i16, i64, i64, usize) {
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch_partition0(topic, offset));
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.log_start_offset,
        p.high_watermark,
        p.records.as_ref().map_or(0, |b| b.len()),
    )
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let mut b = BrokerProc::start(&["--set", "retention_check_interval_ms=100"]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let all = versions(&mut c);
    // Small segments, so whole segments fall below the new start; no
    // retention, so only DeleteRecords removes anything.
    create_topic_with(
        &mut c,
        "dr",
        1,
        &[("segment.bytes", "4096"), ("retention.ms", "-1")],
    );
    for i in 0..10 {
        let big = |_| Bytes::from(vec![b'x'; 200]);
        let p = produce_one(
            &mut c,
            9,
            &produce_req("dr", 0, batch_of(10, -1, -1, -1, big), -1),
        );
        assert_eq!((p.error_code, p.base_offset), (0, i * 10));
    }
    let dr_versions = range_of(&all, ApiKey::DeleteRecords);
    assert_eq!(dr_versions, 0..=2);
    for (v, offset) in dr_versions.zip([5, 25, 40]) {
        assert_eq!(
            delete_records(&mut c, v, "dr", 0, offset),
            (0, offset),
            "DeleteRecords v{v}"
        );
    }
    // Below the start: nothing changes; past the end, unknown topic or partition: refused.
    assert_eq!(delete_records(&mut c, 2, "dr", 0, 3), (0, 40));
    assert_eq!(
        delete_records(&mut c, 2, "dr", 0, 101).0,
        1,
        "OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(
        delete_records(&mut c, 2, "dr", 3, 1).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        delete_records(&mut c, 2, "nope", 0, 1).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let check = |c: &mut Conn, start: i64| {
        assert_eq!(
            fetch_at(c, "dr", 10).0,
            1,
            "a fetch below the start: OFFSET_OUT_OF_RANGE"
        );
        let (err, log_start, hw, bytes) = fetch_at(c, "dr", start);
        assert_eq!((err, log_start, hw), (0, start, 100));
        assert!(bytes > 0);
        assert_eq!(list_offset(c, "dr", -2), (0, start), "ListOffsets earliest");
        assert_eq!(list_offset(c, "dr", -1), (0, 100), "ListOffsets latest");
    };
    check(&mut c, 40);
    // Survives a clean restart and a kill -9.
    b.stop();
    b.restart();
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    check(&mut c, 40);
    b.kill9();
    b.restart();
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    check(&mut c, 40);
    // -1: up to the high watermark; the partition is then empty but keeps its offsets.
    assert_eq!(delete_records(&mut c, 1, "dr", 0, -1), (0, 100));
    assert_eq!(list_offset(&mut c, "dr", -2), (0, 100));
    let p = produce_one(&mut c, 9, &produce_req("dr", 0, batch(1, -1, -1, -1), -1));
    assert_eq!(
        (p.error_code, p.base_offset, p.log_start_offset),
        (0, 100, 100)
    );
}

fn delete_group(c: &mut Conn, v: i16, group: &str) -> i16 {
    let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
    let r: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, v, &req);
    assert_eq!(r.results[0].group_id.0.as_str(), group);
    r.results[0].error_code
}

/// A commit for `group` without generation or member, of partition 0 of
/// each (topic, offset, v1 commit timestamp).
fn commit_of(group: &str, parts: &[(&str, i64, i64)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(
            parts
                .iter()
                .map(|(topic, offset, ts)| {
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(tn(topic))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(*offset)
                                .with_commit_timestamp(*ts)
                                .with_committed_metadata(Some(s("m"))),
                        ])
                })
                .collect(),
        )
}

/// A standalone commit (no member, generation -1) of `offset` for dg-0.
fn commit_standalone(c: &mut Conn, group: &str, offset: i64) {
    let r: OffsetCommitResponse = c.call(
        ApiKey::OffsetCommit,
        8,
        &commit_of(group, &[("dg", offset, -1)]),
    );
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
}

/// OffsetFetch at `v` of dg-0: (error, offset, metadata).
fn committed_at(c: &mut Conn, v: i16, group: &str) -> (i16, i64, Option<String>) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(tn("dg"))
                .with_partition_indexes(vec![0]),
        ]));
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, v, &req);
    let p = &r.topics[0].partitions[0];
    (
        p.error_code,
        p.committed_offset,
        p.metadata.as_ref().map(|m| m.to_string()),
    )
}

fn committed(c: &mut Conn, group: &str) -> i64 {
    committed_at(c, 7, group).1
}

/// Offset expiry (Kafka's `offsets.retention.minutes`), here 3 s checked
/// every 200 ms: a standalone commit is fetched back until 3 s after it
/// was made, then OffsetFetch answers -1; a commit made 2 s later is still
/// there when the first is gone. An empty consumer-protocol group whose
/// offsets expired is deleted with them. The expiry wrote tombstones:
/// after a restart with no expiry pass due (a 10-minute interval), the
/// offsets are still -1 and the group still gone, read back from the log.
#[test]
fn committed_offsets_expire_after_the_retention_and_stay_expired_after_a_restart() {
    let mut b = BrokerProc::start(&[
        "--set",
        "offsets_retention_minutes=0.05",
        "--set",
        "offsets_retention_check_interval_ms=200",
    ]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "dg", 1);
    // A consumer-protocol group: one member joins and leaves (the group
    // stays, Empty), then its offset is committed as an admin would.
    let hb = |epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("exp-cg")))
            .with_member_id(s("m-1"))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![tn("dg")]))
            .with_topic_partitions(Some(vec![]))
    };
    for epoch in [0, -1] {
        let r: ConsumerGroupHeartbeatResponse =
            c.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb(epoch));
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    }
    let cg_state = |c: &mut Conn| -> (i16, String) {
        let r: ConsumerGroupDescribeResponse = c.call(
            ApiKey::ConsumerGroupDescribe,
            1,
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("exp-cg"))]),
        );
        (r.groups[0].error_code, r.groups[0].group_state.to_string())
    };
    assert_eq!(cg_state(&mut c), (0, "Empty".to_string()));
    let first = std::time::Instant::now();
    commit_standalone(&mut c, "exp-early", 42);
    commit_standalone(&mut c, "exp-cg", 5);
    assert_eq!(committed(&mut c, "exp-early"), 42);
    std::thread::sleep(Duration::from_secs(2));
    commit_standalone(&mut c, "exp-late", 7);
    // Until 3 s after its commit, the first offset stays.
    let deadline = first + Duration::from_secs(20);
    while committed(&mut c, "exp-early") == 42 {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let expired_after = first.elapsed();
    assert!(
        expired_after >= Duration::from_secs(3),
        "expired {expired_after:?} after the commit, before the retention"
    );
    assert_eq!(committed(&mut c, "exp-early"), -1);
    // The consumer group's offset went at the same pass, and the empty
    // group with it (GROUP_ID_NOT_FOUND).
    let deleted = first + Duration::from_secs(5);
    while cg_state(&mut c).0 == 0 {
        assert!(std::time::Instant::now() < deleted, "the group stays");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cg_state(&mut c).0, 69);
    assert_eq!(committed(&mut c, "exp-cg"), -1);
    assert_eq!(
        committed(&mut c, "exp-late"),
        7,
        "committed 2 s later: not expired yet"
    );
    while committed(&mut c, "exp-late") == 7 {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Restart with no expiry pass before 10 minutes: what OffsetFetch
    // answers now comes from the log (the tombstones), not from a pass.
    let i = b
        .args
        .iter()
        .position(|a| a == "offsets_retention_check_interval_ms=200")
        .unwrap();
    b.args[i] = "offsets_retention_check_interval_ms=600000".into();
    assert_eq!(b.stop(), Some(0));
    b.restart();
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    assert_eq!(committed(&mut c, "exp-early"), -1);
    assert_eq!(committed(&mut c, "exp-late"), -1);
    assert_eq!(committed(&mut c, "exp-cg"), -1);
    assert_eq!(
        cg_state(&mut c).0,
        69,
        "the group's tombstones were replayed"
    );
    // Its old member, heartbeating on, is told to rejoin.
    let r: ConsumerGroupHeartbeatResponse = c.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb(1));
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID");
    let log = b.plain_log();
    assert!(log.contains("kafka: committed offsets expired"));
    assert!(log.contains("kafka: group deleted: empty, and its offsets expired"));
}

#[test]
fn old_offset_commit_and_fetch() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "dg", 1);
    // OffsetCommit v0 carries no generation or member: a commit for a
    // group without members, read back with OffsetFetch v0 and v1.
    let r: OffsetCommitResponse = c.call(
        ApiKey::OffsetCommit,
        0,
        &commit_of("old", &[("dg", 42, -1)]),
    );
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    for v in [0, 1] {
        assert_eq!(
            committed_at(&mut c, v, "old"),
            (0, 42, Some("m".into())),
            "OffsetFetch v{v}"
        );
    }
    // v1's commit_timestamp decodes and is ignored; an unknown topic is refused.
    let req = commit_of("old", &[("dg", 43, 1_700_000_000_000), ("nope", 1, 1)]);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 1, &req);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        r.topics[1].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(committed(&mut c, "old"), 43);
}

#[test]
fn delete_groups_empty_non_empty_and_unknown() {
    let mut b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let all = versions(&mut c);
    create_topic(&mut c, "dg", 1);
    for v in range_of(&all, ApiKey::DeleteGroups) {
        let g = format!("empty-v{v}");
        commit_standalone(&mut c, &g, 7);
        assert_eq!(committed(&mut c, &g), 7);
        assert_eq!(delete_group(&mut c, v, &g), 0, "DeleteGroups v{v}");
        assert_eq!(committed(&mut c, &g), -1, "its offsets are gone");
        assert_eq!(
            delete_group(&mut c, v, &g),
            69,
            "GROUP_ID_NOT_FOUND once deleted"
        );
        assert_eq!(
            delete_group(&mut c, v, "never-seen"),
            69,
            "GROUP_ID_NOT_FOUND"
        );
    }
    // A group with a member: NON_EMPTY_GROUP until the member leaves.
    let join = join_request("live");
    let j: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(j.error_code, 0);
    assert_eq!(delete_group(&mut c, 2, "live"), 68, "NON_EMPTY_GROUP");
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("live")))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(j.member_id.clone())
        ]);
    let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 3, &leave);
    assert_eq!(lr.error_code, 0);
    assert_eq!(delete_group(&mut c, 2, "live"), 0);
    let r: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert!(r.groups.iter().all(|g| g.group_id.0.as_str() != "live"));
    // The deletion survives a restart (a tombstone in the offsets log),
    // and a later commit of the same group does too.
    commit_standalone(&mut c, "durable", 3);
    commit_standalone(&mut c, "kept", 4);
    assert_eq!(delete_group(&mut c, 0, "durable"), 0);
    b.stop();
    b.restart();
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    assert_eq!(committed(&mut c, "durable"), -1);
    assert_eq!(committed(&mut c, "kept"), 4);
    commit_standalone(&mut c, "durable", 9);
    b.stop();
    b.restart();
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    assert_eq!(committed(&mut c, "durable"), 9);
}

/// DescribeConfigs v4 of a topic: name -> (value, config source).
fn topic_configs(c: &mut Conn, topic: &str) -> std::collections::BTreeMap<String, (String, i8)> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configuration_keys(None),
    ]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                (
                    e.value.as_deref().unwrap_or("").to_string(),
                    e.config_source,
                ),
            )
        })
        .collect()
}

fn alter(
    c: &mut Conn,
    v: i16,
    kind: i8,
    name: &str,
    configs: &[(&str, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let req = AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        alter_configs_request::AlterableConfig::default()
                            .with_name(s(k))
                            .with_value(v.map(s))
                    })
                    .collect(),
            )]);
    let r: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, v, &req);
    let x = &r.responses[0];
    assert_eq!((x.resource_type, x.resource_name.as_str()), (kind, name));
    (
        x.error_code,
        x.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn alter_incremental(
    c: &mut Conn,
    v: i16,
    kind: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(s(name))
                .with_configs(
                    ops.iter()
                        .map(|(k, op, v)| {
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(*op)
                                .with_value(v.map(s))
                        })
                        .collect(),
                ),
        ]);
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, v, &req);
    let x = &r.responses[0];
    (
        x.error_code,
        x.error_message.as_ref().map(|m| m.to_string()),
    )
}

#[test]
fn alter_configs_validated_durable_and_applied_live() {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let mut b = BrokerProc::start(&["--set", "retention_check_interval_ms=100"]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let all = versions(&mut c);
    create_topic_with(
        &mut c,
        "cfg",
        1,
        &[("retention.ms", "-1"), ("segment.bytes", "4096")],
    );
    // AlterConfigs replaces the whole set: what is not named goes back to its default.
    for v in range_of(&all, ApiKey::AlterConfigs) {
        let ms = format!("{}", 3_600_000 + v as i64);
        let set = [
            ("retention.ms", Some(ms.as_str())),
            ("min.insync.replicas", Some("1")),
        ];
        assert_eq!(
            alter(&mut c, v, TOPIC, "cfg", &set, false),
            (0, None),
            "AlterConfigs v{v}"
        );
        let got = topic_configs(&mut c, "cfg");
        assert_eq!(
            got["retention.ms"],
            (ms, 1),
            "AlterConfigs v{v}: set, source TOPIC"
        );
        assert_eq!(got["segment.bytes"].1, 5, "not named: back to the default");
        assert_eq!(got["min.insync.replicas"].0, "1");
    }
    // validate_only stores nothing; bad values and unknown names are INVALID_CONFIG.
    let only = [("retention.ms", Some("5"))];
    assert_eq!(alter(&mut c, 2, TOPIC, "cfg", &only, true).0, 0);
    assert_eq!(topic_configs(&mut c, "cfg")["retention.ms"].0, "3600002");
    let (code, msg) = alter(
        &mut c,
        2,
        TOPIC,
        "cfg",
        &[("retention.ms", Some("soon"))],
        false,
    );
    assert_eq!(code, 40, "INVALID_CONFIG: {msg:?}");
    assert_eq!(
        alter(
            &mut c,
            2,
            TOPIC,
            "cfg",
            &[("no.such.config", Some("1"))],
            false
        )
        .0,
        40
    );
    assert_eq!(
        alter(
            &mut c,
            2,
            TOPIC,
            "cfg",
            &[("segment.bytes", Some("1"))],
            false
        )
        .0,
        40
    );
    assert_eq!(alter(&mut c, 2, TOPIC, "nope", &only, false).0, 3);
    assert_eq!(topic_configs(&mut c, "cfg")["retention.ms"].0, "3600002");
    // Broker configs are static: a change is refused, the empty no-op accepted.
    let (code, msg) = alter(
        &mut c,
        2,
        BROKER,
        "0",
        &[("log.retention.ms", Some("1"))],
        false,
    );
    assert_eq!(code, 40);
    assert!(msg.unwrap().contains("no dynamic broker configs"));
    assert_eq!(alter(&mut c, 2, BROKER, "0", &[], false).0, 0);
    assert_eq!(
        alter(&mut c, 2, 8, "0", &[], false).0,
        42,
        "BROKER_LOGGER: INVALID_REQUEST"
    );
    // Incremental: SET, DELETE, APPEND and SUBTRACT, each kept.
    for v in range_of(&all, ApiKey::IncrementalAlterConfigs) {
        let bytes = format!("{}", 1_000_000 + v as i64);
        let ops = [
            ("retention.bytes", 0, Some(bytes.as_str())),
            ("retention.ms", 1, None),
            ("compression.type", 0, Some("zstd")),
            ("cleanup.policy", 2, Some("delete")),
            ("leader.replication.throttled.replicas", 2, Some("0:0")),
        ];
        assert_eq!(
            alter_incremental(&mut c, v, TOPIC, "cfg", &ops, false),
            (0, None),
            "v{v}"
        );
        let got = topic_configs(&mut c, "cfg");
        assert_eq!(
            got["retention.bytes"],
            (bytes, 1),
            "IncrementalAlterConfigs v{v}"
        );
        assert_eq!(got["retention.ms"].1, 5, "DELETE: back to the default");
        assert_eq!(got["compression.type"].0, "zstd", "stored Kafka name");
        assert_eq!(got["leader.replication.throttled.replicas"].0, "0:0");
    }
    // compact is accepted and stored (records then need keys; nothing is
    // compacted); a policy Kafka does not know is INVALID_CONFIG.
    let compact = [("cleanup.policy", 2, Some("compact"))];
    assert_eq!(
        alter_incremental(&mut c, 1, TOPIC, "cfg", &compact, false).0,
        0
    );
    assert_eq!(
        topic_configs(&mut c, "cfg")["cleanup.policy"].0,
        "delete,compact"
    );
    let shred = [("cleanup.policy", 0, Some("shred"))];
    assert_eq!(
        alter_incremental(&mut c, 1, TOPIC, "cfg", &shred, false).0,
        40
    );
    let back = [("cleanup.policy", 1, None)];
    assert_eq!(
        alter_incremental(&mut c, 1, TOPIC, "cfg", &back, false).0,
        0
    );
    let not_list = [("retention.ms", 2, Some("1"))];
    assert_eq!(
        alter_incremental(&mut c, 1, TOPIC, "cfg", &not_list, false).0,
        40
    );
    let bad_op = [("retention.ms", 9, Some("1"))];
    assert_eq!(
        alter_incremental(&mut c, 1, TOPIC, "cfg", &bad_op, false).0,
        42
    );
    let set_ms = [("retention.ms", 0, Some("86400000"))];
    assert_eq!(
        alter_incremental(&mut c, 1, TOPIC, "cfg", &set_ms, true).0,
        0
    );
    assert_eq!(
        topic_configs(&mut c, "cfg")["retention.ms"].1,
        5,
        "validate_only"
    );
    // Durable: the same after a restart.
    let before = topic_configs(&mut c, "cfg");
    b.stop();
    b.restart();
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    assert_eq!(topic_configs(&mut c, "cfg"), before);
    // Applied live: old records (2023 timestamps) in sealed segments, kept
    // while retention is off, go once retention.ms is set.
    alter_incremental(
        &mut c,
        1,
        TOPIC,
        "cfg",
        &[("retention.ms", 0, Some("-1"))],
        false,
    );
    for _ in 0..10 {
        let big = |_| Bytes::from(vec![b'x'; 200]);
        let p = produce_one(
            &mut c,
            9,
            &produce_req("cfg", 0, batch_of(10, -1, -1, -1, big), -1),
        );
        assert_eq!(p.error_code, 0);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        list_offset(&mut c, "cfg", -2),
        (0, 0),
        "retention off: all kept"
    );
    let (code, _) = alter_incremental(
        &mut c,
        1,
        TOPIC,
        "cfg",
        &[("retention.ms", 0, Some("60000"))],
        false,
    );
    assert_eq!(code, 0);
    let mut start = 0;
    for _ in 0..100 {
        start = list_offset(&mut c, "cfg", -2).1;
        if start > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(start > 0, "retention.ms applied without a restart");
}

#[test]
fn an_api_we_do_not_serve_gets_an_error_not_a_closed_connection() {
    let b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    // Served now (KIP-848), so advertised; DescribeCluster is neither.
    let all = versions(&mut Conn::new(&addr));
    assert_eq!(range_of(&all, ApiKey::ConsumerGroupHeartbeat), 0..=1);
    assert_eq!(range_of(&all, ApiKey::ConsumerGroupDescribe), 0..=1);
    assert!(all.iter().all(|(k, _, _)| *k != ApiKey::DescribeCluster));
    let req = DescribeClusterRequest::default();
    // Many connections (a client reconnecting): each gets an answer, the
    // broker logs the cause once.
    for v in 0..=1 {
        for _ in 0..5 {
            let mut c = Conn::new(&addr);
            let r: DescribeClusterResponse = c.call(ApiKey::DescribeCluster, v, &req);
            assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
            assert!(r.error_message.unwrap().contains("not served"));
            // The connection stays open and serves what we do serve.
            let _ = versions(&mut c);
        }
    }
    let lines = b
        .stderr()
        .lines()
        .filter(|l| l.contains("answered with UNSUPPORTED_VERSION"))
        .count();
    // Once per cause per shard (2 shards): never once per connection.
    assert!(
        (2..=4).contains(&lines),
        "one line per cause (API and version) and shard, got {lines}:\n{}",
        b.stderr()
    );
}

/// A message set of `values` at `magic`, plain or in one `codec` wrapper.
fn message_set(magic: i8, codec: shardlog::format::Compression, values: &[&str]) -> Bytes {
    use kafka_protocol::records::Compression as K;
    let recs: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            legacy::plain_record(
                i as i64,
                1_600_000_000_000 + i as i64,
                TimestampType::Creation,
                Some(Bytes::from(format!("k{i}"))),
                Some(Bytes::from(v.to_string())),
            )
        })
        .collect();
    let k = match codec {
        shardlog::format::Compression::None => K::None,
        shardlog::format::Compression::Gzip => K::Gzip,
        shardlog::format::Compression::Snappy => K::Snappy,
        shardlog::format::Compression::Lz4 => K::Lz4,
        shardlog::format::Compression::Zstd => K::Zstd,
    };
    let mut out = BytesMut::new();
    legacy::encode_message_set(&mut out, &recs, magic, k, |b, _| {
        Ok(Bytes::from(codec.compress(b)))
    })
    .unwrap();
    out.freeze()
}

/// Fetch of partition 0 at `v` from offset 0: (error, high watermark, records).
fn fetch_records(c: &mut Conn, v: i16, topic: &str) -> (i16, i64, Vec<Record>) {
    let r: FetchResponse = c.call(ApiKey::Fetch, v, &fetch_partition0(topic, 0));
    let p = &r.responses[0].partitions[0];
    let mut records = p.records.clone().unwrap_or_default();
    let recs = if records.is_empty() {
        Vec::new()
    } else if v >= 4 {
        RecordBatchDecoder::decode_all(&mut records)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .collect()
    } else {
        legacy::decode_message_set(&records, |_, _| unreachable!())
            .unwrap()
            .records
    };
    (p.error_code, p.high_watermark, recs)
}

#[test]
fn message_sets_in_on_old_produce_and_out_on_old_fetch() {
    use shardlog::format::Compression as C;
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "ms", 1);
    let mut want: Vec<String> = Vec::new();
    for (v, magic) in [(0i16, 0i8), (1, 0), (2, 1)] {
        for codec in [C::None, C::Gzip, C::Snappy, C::Lz4] {
            let values: Vec<String> = (0..3).map(|i| format!("v{v}-{codec:?}-{i}")).collect();
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let set = message_set(magic, codec, &refs);
            let p = produce_one(&mut c, v, &produce_req("ms", 0, set, -1));
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, want.len() as i64),
                "Produce v{v} magic {magic} {codec:?}"
            );
            want.extend(values);
        }
    }
    // Every Fetch version reads the same records, at their offsets.
    for v in [0i16, 1, 2, 3, 4, 11] {
        let (err, hw, recs) = fetch_records(&mut c, v, "ms");
        assert_eq!((err, hw), (0, want.len() as i64), "Fetch v{v}");
        let values: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(values, want, "Fetch v{v}");
        let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..want.len() as i64).collect::<Vec<_>>());
        // Magic 1 keeps the producer's timestamps; magic 0 had none and
        // was stamped at append (a recent time), which v0-1 cannot show.
        let t_magic1 = recs[24].timestamp;
        match v {
            0 | 1 => assert!(recs.iter().all(|r| r.timestamp == -1)),
            _ => {
                assert_eq!(t_magic1, 1_600_000_000_000, "Fetch v{v}");
                assert!(recs[0].timestamp > 1_700_000_000_000, "append time");
            }
        }
    }
    // Refused, with nothing stored: a bad CRC, a size that lies, nested
    // compression, and a magic 0 set on Produce v3.
    let good = message_set(1, C::None, &["x"]);
    let mut bad_crc = good.to_vec();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut lying = good.to_vec();
    lying[8..12].copy_from_slice(&(good.len() as i32).to_be_bytes());
    let inner = message_set(1, C::Gzip, &["nested"]);
    let mut nested = BytesMut::new();
    nested.put_i64(0);
    nested.put_i32(0);
    nested.put_u32(0);
    nested.put_i8(1); // magic
    nested.put_i8(1); // gzip
    nested.put_i64(0); // timestamp
    nested.put_i32(-1); // null key
    let z = C::Gzip.compress(&inner);
    nested.put_i32(z.len() as i32);
    nested.put_slice(&z);
    let size = (nested.len() - 12) as i32;
    nested[8..12].copy_from_slice(&size.to_be_bytes());
    let crc = kafka_protocol::records::IEEE.checksum(&nested[16..]);
    nested[12..16].copy_from_slice(&crc.to_be_bytes());
    for (what, v, bad) in [
        ("bad CRC", 1i16, Bytes::from(bad_crc)),
        ("lying size", 2, Bytes::from(lying)),
        ("nested compression", 2, nested.freeze()),
    ] {
        let p = produce_one(&mut c, v, &produce_req("ms", 0, bad, -1));
        assert_eq!(p.error_code, 2, "{what}: CORRUPT_MESSAGE");
    }
    let p = produce_one(&mut c, 3, &produce_req("ms", 0, good, -1));
    assert_eq!(
        p.error_code, 43,
        "magic 1 on Produce v3: UNSUPPORTED_FOR_MESSAGE_FORMAT"
    );
    let (_, hw, _) = fetch_records(&mut c, 4, "ms");
    assert_eq!(hw, want.len() as i64, "nothing refused was stored");
}

/// `Name min–max` entries of README's served-kafka-apis block, by name.
fn readme_served_list(readme: &str) -> BTreeMap<String, (i16, i16)> {
    let block = readme
        .split_once("<!-- served-kafka-apis -->\n")
        .and_then(|(_, rest)| rest.split_once("\n<!-- /served-kafka-apis -->"))
        .expect("README's served-kafka-apis block")
        .0;
    let words = block.split_whitespace().collect::<Vec<_>>().join(" ");
    words
        .split(", ")
        .map(|entry| {
            let (name, range) = entry
                .trim_end_matches(',')
                .split_once(' ')
                .unwrap_or_else(|| panic!("README entry '{entry}' is 'Name min–max'"));
            (name.to_string(), version_range(range))
        })
        .collect()
}

/// "0–12" or "0" (docs/kafka.md writes a single version alone).
fn version_range(s: &str) -> (i16, i16) {
    let num = |x: &str| {
        x.trim()
            .parse::<i16>()
            .unwrap_or_else(|_| panic!("version range '{s}'"))
    };
    match s.split_once('–') {
        Some((a, b)) => (num(a), num(b)),
        None => (num(s), num(s)),
    }
}

/// The rows of docs/kafka.md's "APIs and versions" table: api key → (name, range).
fn docs_api_table(docs: &str) -> BTreeMap<i16, (String, (i16, i16))> {
    let table = docs
        .split_once("\n## APIs and versions\n")
        .expect("docs/kafka.md has an 'APIs and versions' section")
        .1;
    let mut rows = BTreeMap::new();
    for line in table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (keys, names, range) = (cells[1], cells[2], version_range(cells[3]));
        let keys: Vec<&str> = keys.split(", ").collect();
        let names: Vec<&str> = names.split(", ").collect();
        assert_eq!(keys.len(), names.len(), "docs row: {line}");
        for (k, n) in keys.iter().zip(names) {
            let k: i16 = k.parse().unwrap_or_else(|_| panic!("docs row key: {line}"));
            rows.insert(k, (n.to_string(), range));
        }
    }
    assert!(!rows.is_empty(), "docs/kafka.md's API table has rows");
    rows
}

/// The README's list of served APIs and docs/kafka.md's API table say what
/// the listener's ApiVersions answer says, API by API and version by
/// version (the README's Kafka section must be measured from the code, not
/// written by hand). An API advertised but not served must be called so
/// in both: "Name is advertised (min–max) but not served" in the README,
/// "Name (key) min–max is *advertised*" in docs/kafka.md.
#[test]
fn readme_and_docs_list_exactly_what_api_versions_answers() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let answer = versions(&mut c);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/kafka.md")).unwrap();
    let listed = readme_served_list(&readme);
    let rows = docs_api_table(&docs);
    // Prose may wrap anywhere.
    let flat = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let (readme, docs) = (flat(&readme), flat(&docs));
    let mut wrong = Vec::new();
    for (key, min, max) in &answer {
        let name = format!("{key:?}");
        let code = *key as i16;
        match listed.get(&name) {
            Some(r) if *r == (*min, *max) => {}
            Some(r) => wrong.push(format!(
                "README lists {name} {}–{}, ApiVersions answers {min}–{max}",
                r.0, r.1
            )),
            None if readme.contains(&format!(
                "{name} is advertised ({min}–{max}) but not served"
            )) => {}
            None => wrong.push(format!(
                "README does not list {name} {min}–{max}, which ApiVersions answers"
            )),
        }
        match rows.get(&code) {
            Some((n, r)) if *n == name && *r == (*min, *max) => {}
            Some((n, r)) => wrong.push(format!(
                "docs/kafka.md has {code} {n} {}–{}, ApiVersions answers {name} {min}–{max}",
                r.0, r.1
            )),
            None if docs.contains(&format!("{name} ({code}) {min}–{max} is *advertised*")) => {}
            None => wrong.push(format!(
                "docs/kafka.md's table lacks {code} {name} {min}–{max}, which ApiVersions answers"
            )),
        }
    }
    let answered: Vec<String> = answer.iter().map(|(k, _, _)| format!("{k:?}")).collect();
    for name in listed.keys().filter(|n| !answered.contains(n)) {
        wrong.push(format!(
            "README lists {name}, which ApiVersions does not answer"
        ));
    }
    for (code, (name, _)) in &rows {
        if !answer.iter().any(|(k, _, _)| *k as i16 == *code) {
            wrong.push(format!(
                "docs/kafka.md lists {code} {name}, which ApiVersions does not answer"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A JoinGroup (v5) of `member` ("" for a new one) with these timeouts.
fn join_timed(group: &str, member: &str, session_ms: i32, rebalance_ms: i32) -> JoinGroupRequest {
    join_request(group)
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(rebalance_ms)
}

fn sync(c: &mut Conn, group: &str, member: &str, generation: i32, leader_assigns: bool) -> i16 {
    let assignments = if leader_assigns {
        vec![sync_group_request::SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(Bytes::from_static(b"a"))]
    } else {
        Vec::new()
    };
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_assignments(assignments);
    let r: SyncGroupResponse = c.call(ApiKey::SyncGroup, 3, &req);
    r.error_code
}

fn heartbeat(c: &mut Conn, group: &str, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation);
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &req);
    r.error_code
}

/// Kafka's pending-sync rule on the wire: in a generation of two, the
/// follower heartbeats but never sends its SyncGroup; once the rebalance
/// timeout (1.5 s here; sessions are 30 s, so only this rule can act) has
/// passed it is removed (UNKNOWN_MEMBER_ID on its heartbeat), the leader is
/// told to rejoin, and the next generation has the leader alone. On the
/// way, the commit rules for members being rebalanced (Kafka's order).
#[test]
fn a_member_that_never_syncs_is_removed_and_the_group_rebalances() {
    const REBALANCE_MS: i32 = 1500;
    let b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    let group = "never-syncs";
    let mut a = Conn::new(&addr);
    create_topic(&mut a, "dg", 1);
    let j: JoinGroupResponse = a.call(
        ApiKey::JoinGroup,
        5,
        &join_timed(group, "", 30_000, REBALANCE_MS),
    );
    assert_eq!((j.error_code, j.generation_id), (0, 1));
    let a_id = j.member_id.to_string();
    assert_eq!(sync(&mut a, group, &a_id, 1, true), 0);
    // B joins (its answer waits for A's rejoin, so on its own thread).
    let b_join = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut c = Conn::new(&addr);
            let j: JoinGroupResponse = c.call(
                ApiKey::JoinGroup,
                5,
                &join_timed(group, "", 30_000, REBALANCE_MS),
            );
            (c, j)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while heartbeat(&mut a, group, &a_id, 1) != 27 {
        assert!(
            std::time::Instant::now() < deadline,
            "B's join never began a rebalance"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let j: JoinGroupResponse = a.call(
        ApiKey::JoinGroup,
        5,
        &join_timed(group, &a_id, 30_000, REBALANCE_MS),
    );
    assert_eq!((j.error_code, j.generation_id, j.members.len()), (0, 2, 2));
    let (mut bc, jb) = b_join.join().unwrap();
    assert_eq!((jb.error_code, jb.generation_id), (0, 2));
    let formed = std::time::Instant::now();
    let b_id = jb.member_id.to_string();
    assert_eq!(sync(&mut a, group, &a_id, 2, true), 0, "the leader syncs");
    // B only heartbeats.
    let removed_after = loop {
        let code = heartbeat(&mut bc, group, &b_id, 2);
        if code == 25 {
            break formed.elapsed();
        }
        assert_eq!(code, 0, "B's heartbeat before its removal");
        assert!(
            formed.elapsed() < Duration::from_secs(10),
            "a member that never syncs must be removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        removed_after >= Duration::from_millis(REBALANCE_MS as u64 - 100),
        "removed after {removed_after:?}, before the rebalance timeout"
    );
    assert_eq!(heartbeat(&mut a, group, &a_id, 2), 27, "A must rejoin");
    // Commits of members being rebalanced (issue 17): the removed member's
    // is refused; A's with its current generation is accepted while the
    // group waits for rejoins, a stale generation's is not.
    assert_eq!(
        commit_as(&mut bc, 8, group, &b_id, 2),
        25,
        "UNKNOWN_MEMBER_ID"
    );
    assert_eq!(
        commit_as(&mut a, 8, group, &a_id, 1),
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(commit_as(&mut a, 8, group, &a_id, 2), 0);
    let j: JoinGroupResponse = a.call(
        ApiKey::JoinGroup,
        5,
        &join_timed(group, &a_id, 30_000, REBALANCE_MS),
    );
    assert_eq!((j.error_code, j.generation_id, j.members.len()), (0, 3, 1));
    // Generation 3 awaits its assignment: commits wait for it.
    assert_eq!(
        commit_as(&mut a, 8, group, &a_id, 3),
        27,
        "REBALANCE_IN_PROGRESS"
    );
    assert!(b
        .plain_log()
        .contains("no SyncGroup within the rebalance timeout"));
}

/// OffsetCommit (v`v`) of dg-0 at offset 1 by `member` with `generation`:
/// the partition's error code.
fn commit_as(c: &mut Conn, v: i16, group: &str, member: &str, generation: i32) -> i16 {
    let req = commit_of(group, &[("dg", 1, -1)])
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, v, &req);
    r.topics[0].partitions[0].error_code
}

/// The group and offset error codes clients act on, case by case (the
/// JoinGroup refusals as librdkafka reports them are in
/// `kafka_groups::join_refusals_reach_the_application`): a JoinGroup's
/// session timeout out of range, at each bound (INVALID_SESSION_TIMEOUT), a
/// JoinGroup with an empty protocol type or list, another protocol type, or
/// no protocol in common (INCONSISTENT_GROUP_PROTOCOL), a member's OffsetCommit for a
/// group the coordinator does not know (GROUP_ID_NOT_FOUND from v9,
/// ILLEGAL_GENERATION before) or that has offsets but no members
/// (UNKNOWN_MEMBER_ID), and ListOffsets for a topic or partition that does
/// not exist (UNKNOWN_TOPIC_OR_PARTITION).
#[test]
fn group_and_offset_errors_clients_act_on() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "dg", 1);
    let join = |c: &mut Conn, req: &JoinGroupRequest| -> JoinGroupResponse {
        c.call(ApiKey::JoinGroup, 5, req)
    };
    for session_ms in [0, 999, 1_800_001] {
        let r = join(&mut c, &join_timed("bad-session", "", session_ms, 10_000));
        assert_eq!(
            r.error_code, 26,
            "INVALID_SESSION_TIMEOUT for {session_ms} ms"
        );
    }
    assert_eq!(
        join(&mut c, &join_request("bad-proto").with_protocol_type(s(""))).error_code,
        23
    );
    assert_eq!(
        join(&mut c, &join_request("bad-proto").with_protocols(vec![])).error_code,
        23
    );
    let first = join(&mut c, &join_request("mixed"));
    assert_eq!(first.error_code, 0);
    let other_type = join_request("mixed").with_protocol_type(s("connect"));
    assert_eq!(
        join(&mut c, &other_type).error_code,
        23,
        "another protocol type"
    );
    let no_common = join_request("mixed").with_protocols(vec![
        join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s("roundrobin"))
            .with_metadata(Bytes::from_static(b"sub")),
    ]);
    assert_eq!(
        join(&mut c, &no_common).error_code,
        23,
        "no protocol in common"
    );
    let r: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("mixed"))]),
    );
    assert_eq!(
        r.groups[0].members.len(),
        1,
        "the refused joins added nobody"
    );

    // A member's commit for a group nobody knows, and for one with offsets only.
    assert_eq!(
        commit_as(&mut c, 9, "unknown-group", "m-1", 1),
        69,
        "GROUP_ID_NOT_FOUND"
    );
    assert_eq!(
        commit_as(&mut c, 8, "unknown-group", "m-1", 1),
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(committed(&mut c, "unknown-group"), -1, "nothing stored");
    commit_standalone(&mut c, "offsets-only", 7);
    assert_eq!(
        commit_as(&mut c, 8, "offsets-only", "m-1", 1),
        25,
        "UNKNOWN_MEMBER_ID"
    );
    assert_eq!(committed(&mut c, "offsets-only"), 7);

    // ListOffsets: a topic that does not exist, a partition that does not.
    assert_eq!(list_offset(&mut c, "no-such-topic", -1).0, 3);
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(tn("dg"))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(5)
                    .with_timestamp(-1),
            ])]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    assert_eq!(r.topics[0].partitions[0].error_code, 3);
}

/// IBM/sarama at its default Version (2.1.0) commits with OffsetCommit v6
/// (committed leader epoch 0: what its OffsetFetch v1 read gave it) and
/// reads commits back with OffsetFetch v1 (Debian's Sarama 1.22, run by
/// `tests/kafka_clients/sarama_group.go`, commits with v1). A commit made
/// in a live generation is what the group's next member reads.
#[test]
fn sarama_2_1_commit_path_holds_across_members() {
    let b = BrokerProc::start(&[]);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    create_topic(&mut c, "dg", 1);
    let member_of = |c: &mut Conn| -> (String, i32) {
        let join: JoinGroupResponse = c.call(ApiKey::JoinGroup, 3, &join_request("sg"));
        assert_eq!(join.error_code, 0);
        let member = join.member_id.to_string();
        assert_eq!(sync(c, "sg", &member, join.generation_id, true), 0);
        (member, join.generation_id)
    };
    let (member, generation) = member_of(&mut c);
    assert_eq!(committed_at(&mut c, 1, "sg").1, -1, "nothing committed yet");
    let mut req = commit_of("sg", &[("dg", 30, -1)])
        .with_member_id(s(&member))
        .with_generation_id_or_member_epoch(generation);
    req.topics[0].partitions[0].committed_leader_epoch = 0;
    req.topics[0].partitions[0].committed_metadata = Some(s(""));
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 6, &req);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("sg")))
        .with_member_id(s(&member));
    let r: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 1, &leave);
    assert_eq!(r.error_code, 0);
    let (next, _) = member_of(&mut c);
    assert_ne!(next, member);
    assert_eq!(committed_at(&mut c, 1, "sg").1, 30, "OffsetFetch v1");
    assert_eq!(committed_at(&mut c, 5, "sg").1, 30, "OffsetFetch v5");
}
