//! Metadata: the brokers, and every requested topic with its partitions.
//! On a single node: this one broker (node 0), leading every partition at
//! leader epoch 0. In a cluster: every live broker with its advertised
//! Kafka address, and each partition's leader as the controller placed it
//! (a partition whose broker is not live has no leader:
//! LEADER_NOT_AVAILABLE, which clients retry). Unknown topics are created
//! when `auto_create_topics` is on and the client allows it (producers do;
//! consumers usually send `allow_auto_topic_creation = false`).
//! Internal topics (`__` prefix) are listed only when asked for by name.

use super::{
    authorized_ops, errors, host_port, node_id, str_bytes, topic_name, topic_uuid, Ctx, CLUSTER_ID,
    LEADER_EPOCH,
};
use crate::metadata::{validate_name, SharedTopics, TopicMeta, INTERNAL_PREFIX};
use crate::router::ops::{AdminError, AdminOp};
use crate::shard::Shard;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use std::collections::BTreeMap;
use std::rc::Rc;
use tracing::{debug, info};

/// What the client asked for, one entry per requested topic.
enum Wanted {
    Name(String),
    Id(uuid::Uuid),
}

pub async fn handle(ctx: &Ctx, req: MetadataRequest) -> MetadataResponse {
    let shard = &ctx.shard;
    let all = match &req.topics {
        None => true,
        // v0: an empty list means every topic.
        Some(t) => t.is_empty() && ctx.version == 0,
    };
    let wanted: Vec<Wanted> = req
        .topics
        .iter()
        .flatten()
        .map(|t| match &t.name {
            Some(n) => Wanted::Name(n.to_string()),
            None => Wanted::Id(t.topic_id),
        })
        .collect();
    let mut topics = shard.topics();
    let may_create = shard.config.auto_create_topics && req.allow_auto_topic_creation;
    let mut created_errors: BTreeMap<String, AdminError> = BTreeMap::new();
    if may_create {
        for w in &wanted {
            if let Wanted::Name(n) = w {
                if topics.get(n).is_none() && !n.starts_with(INTERNAL_PREFIX) {
                    if let Err(e) = auto_create(shard, n).await {
                        created_errors.insert(n.clone(), e);
                    }
                }
            }
        }
        topics = shard.topics();
    }
    let mut out = Vec::new();
    if all {
        for m in topics.topics.values() {
            if !m.name.starts_with(INTERNAL_PREFIX) {
                out.push(topic_entry(ctx, &topics, m));
            }
        }
    }
    for w in wanted {
        out.push(match w {
            Wanted::Name(n) => match topics.get(&n) {
                Some(m) => topic_entry(ctx, &topics, m),
                None => {
                    let code = match created_errors.get(&n) {
                        Some(e) => errors::admin(e),
                        None if validate_name(&n).is_err() => errors::invalid_topic(),
                        None => errors::unknown_topic(),
                    };
                    MetadataResponseTopic::default()
                        .with_error_code(code)
                        .with_name(Some(topic_name(&n)))
                }
            },
            Wanted::Id(id) => match by_id(&topics, id) {
                Some(m) => topic_entry(ctx, &topics, m),
                None => MetadataResponseTopic::default()
                    .with_error_code(errors::unknown_topic())
                    .with_topic_id(id),
            },
        });
    }
    // KIP-430 (v8+): no authorizer, so every operation (see authorized_ops).
    if req.include_topic_authorized_operations {
        for t in out.iter_mut().filter(|t| t.error_code == errors::NONE) {
            t.topic_authorized_operations = authorized_ops::TOPIC;
        }
    }
    MetadataResponse::default()
        .with_cluster_authorized_operations(authorized_ops::if_asked(
            req.include_cluster_authorized_operations,
            authorized_ops::CLUSTER,
        ))
        .with_brokers(brokers(shard, &topics).await)
        .with_cluster_id(Some(str_bytes(CLUSTER_ID)))
        // Any broker takes admin requests (it forwards them to the
        // cluster's controller), so each names itself.
        .with_controller_id(BrokerId(node_id(shard)))
        .with_topics(out)
}

/// This broker alone, or every live broker of the cluster.
pub(super) async fn brokers(
    shard: &Rc<Shard>,
    topics: &SharedTopics,
) -> Vec<MetadataResponseBroker> {
    let broker = |id: i32, host: &str, port: i32| {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(str_bytes(host))
            .with_port(port)
            .with_rack(None)
    };
    let me = node_id(shard);
    let mut out: Vec<MetadataResponseBroker> = topics
        .brokers
        .values()
        .filter(|b| b.live && b.id as i32 != me)
        .filter_map(|b| host_port(&b.kafka_addr).map(|(h, p)| broker(b.id as i32, &h, p)))
        .collect();
    // This broker answers with the address its listener advertises (the
    // one the client reached it by may differ from the registered one
    // only if the operator changed it since).
    let (host, port) = super::advertised_addr(shard).await;
    out.push(broker(me, &host, port));
    out.sort_by_key(|b| b.node_id.0);
    out
}

/// The topic whose Kafka topic id is `id` (Metadata v10+, Fetch v13+).
pub(super) fn by_id(topics: &SharedTopics, id: uuid::Uuid) -> Option<&TopicMeta> {
    topics.topics.values().find(|m| topic_uuid(&m.id) == id)
}

fn topic_entry(ctx: &Ctx, topics: &SharedTopics, m: &TopicMeta) -> MetadataResponseTopic {
    let me = node_id(&ctx.shard);
    let partitions = (0..m.partitions)
        .map(|p| {
            let (mut leader, mut epoch, replica_ids) = match m.assignment.get(p as usize) {
                Some(a) => (a.node as i32, a.leader_epoch as i32, a.all_replicas()),
                None => (me, LEADER_EPOCH, vec![me as u32]),
            };
            // A replicated partition's leader is its Raft group's, as this
            // broker's replica last saw it; its epoch is the group's term.
            let raft = m
                .assignment
                .get(p as usize)
                .filter(|a| a.replicated())
                .and_then(|_| ctx.shard.replication()?.leader(&m.name, p));
            if let Some((l, term)) = raft {
                leader = l.map_or(-1, |l| l as i32);
                epoch = term as i32;
            } else if m.assignment.get(p as usize).is_some_and(|a| a.replicated()) {
                // No replica here, so no view of the group's term: -1
                // ("unknown") keeps clients from naming a stale epoch in
                // Fetch, which the leader would fence.
                epoch = -1;
            }
            let live = leader >= 0
                && (leader == me || topics.brokers.get(&(leader as u32)).is_some_and(|b| b.live));
            let replicas = replica_ids.iter().map(|r| BrokerId(*r as i32)).collect();
            // In-sync: on the leader's broker, the followers that hold
            // what the leader held 10 s ago and are heard from
            // (`PartitionGroup::in_sync`); elsewhere (no view of the
            // followers' progress) every live replica; a single replica,
            // the leader alone.
            let led_here = raft.and_then(|_| ctx.shard.replication()?.in_sync(&m.name, p));
            let isr: Vec<BrokerId> = if let Some(ids) = led_here {
                ids.into_iter().map(|r| BrokerId(r as i32)).collect()
            } else if raft.is_some() {
                replica_ids
                    .iter()
                    .filter(|r| **r as i32 == me || topics.brokers.get(r).is_some_and(|b| b.live))
                    .map(|r| BrokerId(*r as i32))
                    .collect()
            } else {
                vec![BrokerId(leader)]
            };
            let mut e = MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_replica_nodes(replicas);
            e = if live {
                e.with_error_code(errors::NONE)
                    .with_leader_id(BrokerId(leader))
                    .with_isr_nodes(isr)
            } else {
                e.with_error_code(errors::leader_not_available())
                    .with_leader_id(BrokerId(-1))
                    .with_isr_nodes(vec![])
            };
            if ctx.version >= 7 {
                e = e.with_leader_epoch(epoch);
            }
            e
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(errors::NONE)
        .with_name(Some(topic_name(&m.name)))
        .with_topic_id(topic_uuid(&m.id))
        .with_is_internal(m.name.starts_with(INTERNAL_PREFIX))
        .with_partitions(partitions)
}

/// Create a topic with the broker's default partition count; a concurrent
/// creation of the same topic counts as success.
pub async fn auto_create(shard: &Rc<Shard>, name: &str) -> Result<(), AdminError> {
    validate_name(name).map_err(|_| AdminError::InvalidName(name.to_string()))?;
    let op = AdminOp::CreateTopic {
        name: name.to_string(),
        partitions: shard.config.default_partitions,
        config: BTreeMap::new(),
        replication_factor: None,
    };
    match shard.admin(op).await {
        Ok(_) => {
            info!(
                topic = name,
                partitions = shard.config.default_partitions,
                "kafka: auto-created topic"
            );
            Ok(())
        }
        Err(AdminError::TopicExists(_)) => Ok(()),
        Err(e) => {
            debug!(topic = name, "kafka: auto-create failed: {e}");
            Err(e)
        }
    }
}
