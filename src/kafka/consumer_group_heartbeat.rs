//! ConsumerGroupHeartbeat (v0-1, KIP-848): a member of a consumer-protocol
//! group joins (epoch 0), heartbeats, acknowledges its assignment and
//! leaves (epoch -1, static -2) with this one request; the coordinator
//! ([`crate::groups::consumer_group`]) answers with the member's epoch and,
//! when it changed, its assignment. Topics travel as topic ids here and as
//! names in the coordinator: an id the topic table does not know is
//! dropped from the owned partitions (the topic was deleted).
//!
//! Member ids: v1 members choose theirs (KIP-1082, a UUID) and must send it
//! from the first request; a v0 member joining with none gets one.

use super::{errors, str_bytes, topic_uuid, Ctx};
use crate::groups::assignor::TopicPartitions;
use crate::groups::consumer_group::HeartbeatParams;
use crate::groups::{self, GroupError};
use crate::metadata::TopicTable;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as RespTopic,
};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use std::collections::HashMap;

pub async fn handle(
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    match serve(ctx, req).await {
        Ok(r) => r,
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(errors::group(&e))
            .with_error_message(Some(str_bytes(&e.to_string())))
            .with_member_epoch(-1)
            .with_heartbeat_interval_ms(0),
    }
}

async fn serve(
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
) -> Result<ConsumerGroupHeartbeatResponse, GroupError> {
    let group_id = req.group_id.to_string();
    if group_id.is_empty() {
        return Err(GroupError::InvalidRequest("GroupId can't be empty"));
    }
    let mut member_id = req.member_id.to_string();
    if member_id.is_empty() {
        if ctx.version >= 1 || req.member_epoch != 0 {
            return Err(GroupError::InvalidRequest("MemberId can't be empty"));
        }
        member_id = uuid::Uuid::from_u128(rand::random::<u128>()).to_string();
    }
    if req.member_epoch == 0 && req.rebalance_timeout_ms == -1 {
        return Err(GroupError::InvalidRequest(
            "RebalanceTimeoutMs must be provided in first request",
        ));
    }
    let owned_ids = req.topic_partitions.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic_id, t.partitions))
            .collect::<Vec<_>>()
    });
    let p = HeartbeatParams {
        member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed: req
            .subscribed_topic_names
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        assignor: req.server_assignor.map(|s| s.to_string()),
        owned: None,
    };
    let gid = group_id.clone();
    let (reply, ids) =
        groups::with_coordinator(&ctx.shard, &group_id, move |s, c, partition| async move {
            let mut p = p;
            let table = s.topics();
            let ids = ids_of(&table);
            p.owned = owned_ids.map(|ts| {
                let names: HashMap<&uuid::Uuid, &String> =
                    ids.iter().map(|(n, u)| (u, n)).collect();
                let mut out = TopicPartitions::new();
                for (id, parts) in ts {
                    if let Some(name) = names.get(&id) {
                        out.entry((*name).clone()).or_default().extend(parts);
                    }
                }
                out
            });
            let reply = c.consumer_heartbeat(&s, partition, &gid, p, &table).await?;
            Ok((reply, ids))
        })
        .await?;
    let assignment = reply.assignment.map(|a| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .filter_map(|(t, ps)| {
                    let id = ids.get(&t)?;
                    Some(
                        RespTopic::default()
                            .with_topic_id(*id)
                            .with_partitions(ps.into_iter().collect()),
                    )
                })
                .collect(),
        )
    });
    Ok(ConsumerGroupHeartbeatResponse::default()
        .with_error_code(errors::NONE)
        .with_member_id(Some(str_bytes(&reply.member_id)))
        .with_member_epoch(reply.member_epoch)
        .with_heartbeat_interval_ms(reply.heartbeat_interval_ms)
        .with_assignment(assignment))
}

/// Topic name -> Kafka topic id, for every topic of the table.
pub fn ids_of(table: &TopicTable) -> HashMap<String, uuid::Uuid> {
    table
        .topics
        .values()
        .map(|m| (m.name.clone(), topic_uuid(&m.id)))
        .collect()
}
