//! AlterPartitionReassignments (v0-1) and ListPartitionReassignments (v0):
//! Kafka's admin API for moving replicas (KIP-455), on top of the
//! controller's reassignment (`AdminOp::Reassign`, docs/replication.md
//! "Membership changes"). Any broker answers: it forwards the change to
//! the controller, as `shardlog cluster reassign` does.
//!
//! - A replica list starts (or replaces) a partition's reassignment; the
//!   call returns once the controller recorded it, and the partition's
//!   Raft leader carries it out in the background (ListPartitionReassignments
//!   shows it until it is done).
//! - A null list cancels a reassignment in progress (the target becomes
//!   the current replicas: learners already added leave again), or is
//!   NO_REASSIGNMENT_IN_PROGRESS.
//! - `allow_replication_factor_change = false` (v1) refuses a list of
//!   another length with INVALID_REPLICATION_FACTOR, as Kafka does.
//!
//! Runs on the connection's shard; the topic table it reads is that
//! shard's copy.

use super::{errors, str_bytes, Ctx};
use crate::metadata::Assignment;
use crate::router::ops::AdminOp;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

pub async fn alter(
    ctx: &Ctx,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let failure = reassign_one(
                ctx,
                &name,
                p.partition_index,
                p.replicas,
                req.allow_replication_factor_change,
            )
            .await
            .err();
            let r =
                ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            partitions.push(match failure {
                None => r.with_error_code(errors::NONE),
                Some((code, msg)) => r
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&msg))),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_error_code(errors::NONE)
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

async fn reassign_one(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<BrokerId>>,
    allow_rf_change: bool,
) -> Result<(), (i16, String)> {
    let topics = ctx.shard.topics();
    let known = topics
        .get(topic)
        .is_some_and(|m| partition >= 0 && (partition as u32) < m.partitions);
    if !known {
        return Err((
            errors::unknown_topic(),
            format!("unknown partition {topic}-{partition}"),
        ));
    }
    // A single broker keeps no assignment: the controller path refuses
    // (one broker holds one replica of everything).
    let a: Assignment = topics
        .get(topic)
        .and_then(|m| m.assignment.get(partition as usize))
        .cloned()
        .unwrap_or(Assignment {
            node: 0,
            shard: 0,
            leader_epoch: 0,
            followers: Vec::new(),
            follower_shards: Vec::new(),
            origin: Vec::new(),
            target: Vec::new(),
            target_shards: Vec::new(),
        });
    let replicas: Vec<u32> = match replicas {
        Some(r) => r
            .iter()
            .map(|b| u32::try_from(b.0))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                (
                    errors::invalid_replica_assignment(),
                    "negative broker id".to_string(),
                )
            })?,
        // Cancel: back to the current replicas.
        None if a.target.is_empty() => {
            return Err((
                errors::no_reassignment_in_progress(),
                format!("no reassignment of {topic}-{partition} is in progress"),
            ))
        }
        None => a.replicas(),
    };
    if !allow_rf_change && replicas.len() != a.replicas().len() {
        return Err((
            errors::invalid_replication_factor(),
            format!(
                "{topic}-{partition} has {} replicas; {} asked with allowReplicationFactorChange=false",
                a.replicas().len(),
                replicas.len()
            ),
        ));
    }
    ctx.shard
        .admin(AdminOp::Reassign {
            name: topic.to_string(),
            partition: partition as u32,
            replicas,
        })
        .await
        .map(|_| ())
        .map_err(|e| (errors::admin(&e), e.to_string()))
}

pub async fn list(
    ctx: &Ctx,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let topics = ctx.shard.topics();
    // (topic, partitions asked: None = all).
    let asked: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.name.to_string(), Some(t.partition_indexes)))
            .collect(),
        None => topics.topics.keys().map(|n| (n.clone(), None)).collect(),
    };
    let mut out = Vec::new();
    for (name, parts) in asked {
        let Some(m) = topics.get(&name) else {
            continue;
        };
        let ongoing: Vec<OngoingPartitionReassignment> = m
            .assignment
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                !a.target.is_empty() && parts.as_ref().is_none_or(|p| p.contains(&(*i as i32)))
            })
            .map(|(i, a)| {
                let current = a.replicas();
                let ids = |v: Vec<u32>| v.into_iter().map(|n| BrokerId(n as i32)).collect();
                OngoingPartitionReassignment::default()
                    .with_partition_index(i as i32)
                    .with_replicas(ids(a.all_replicas()))
                    .with_adding_replicas(ids(a
                        .target
                        .iter()
                        .copied()
                        .filter(|n| !current.contains(n))
                        .collect()))
                    .with_removing_replicas(ids(current
                        .into_iter()
                        .filter(|n| !a.target.contains(n))
                        .collect()))
            })
            .collect();
        if !ongoing.is_empty() {
            out.push(
                OngoingTopicReassignment::default()
                    .with_name(super::topic_name(&m.name))
                    .with_partitions(ongoing),
            );
        }
    }
    ListPartitionReassignmentsResponse::default()
        .with_error_code(errors::NONE)
        .with_topics(out)
}
