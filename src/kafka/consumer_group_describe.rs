//! ConsumerGroupDescribe (v0-1, KIP-848): a consumer-protocol group's
//! state, epochs, assignor and members (epoch, subscription, current and
//! target assignment), from its coordinator shard. A classic group or an
//! unknown id is GROUP_ID_NOT_FOUND with a message, as Kafka answers (admin
//! clients then try DescribeGroups). The client host is not tracked.

use super::consumer_group_heartbeat::ids_of;
use super::{authorized_ops, errors, str_bytes, topic_name, Ctx};
use crate::groups::assignor::TopicPartitions;
use crate::groups::consumer_group::ConsumerGroupView;
use crate::groups::{self, GroupError};
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions as RespTopic,
};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};
use std::collections::HashMap;

/// Kafka's member type for a member of the consumer protocol (v1+).
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub async fn handle(ctx: &Ctx, req: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let mut out = Vec::with_capacity(req.group_ids.len());
    for g in &req.group_ids {
        let id = g.to_string();
        let gid = id.clone();
        let result = groups::with_coordinator(&ctx.shard, &id, move |s, c, _| async move {
            let view = c.consumer_describe(&gid);
            let classic = c.is_classic(&gid);
            Ok::<_, GroupError>((view, classic, ids_of(&s.topics())))
        })
        .await;
        let d = DescribedGroup::default().with_group_id(g.clone());
        out.push(match result {
            Err(e) => d
                .with_error_code(errors::group(&e))
                .with_error_message(Some(str_bytes(&e.to_string())))
                .with_group_state(str_bytes("Dead")),
            Ok((None, classic, _)) => {
                let why = if classic {
                    format!("Group {id} is not a consumer group.")
                } else {
                    format!("Group {id} not found.")
                };
                d.with_error_code(errors::group(&GroupError::GroupIdNotFound))
                    .with_error_message(Some(str_bytes(&why)))
                    .with_group_state(str_bytes("Dead"))
            }
            Ok((Some(v), _, ids)) => described(d, v, &ids, req.include_authorized_operations),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(out)
}

fn described(
    d: DescribedGroup,
    v: ConsumerGroupView,
    ids: &HashMap<String, uuid::Uuid>,
    include_ops: bool,
) -> DescribedGroup {
    let assignment = |a: TopicPartitions| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .filter_map(|(t, ps)| {
                    Some(
                        RespTopic::default()
                            .with_topic_id(*ids.get(&t)?)
                            .with_topic_name(topic_name(&t))
                            .with_partitions(ps.into_iter().collect()),
                    )
                })
                .collect(),
        )
    };
    let members = v
        .members
        .into_iter()
        .map(|(m, target)| {
            Member::default()
                .with_member_id(str_bytes(&m.id))
                .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                .with_rack_id(m.rack_id.as_deref().map(str_bytes))
                .with_member_epoch(m.epoch)
                .with_client_id(str_bytes(&m.client_id))
                .with_client_host(str_bytes(""))
                .with_subscribed_topic_names(m.subscribed.iter().map(|t| topic_name(t)).collect())
                .with_assignment(assignment(m.assigned))
                .with_target_assignment(assignment(target))
                .with_member_type(MEMBER_TYPE_CONSUMER)
        })
        .collect();
    d.with_error_code(errors::NONE)
        .with_group_state(str_bytes(v.state))
        .with_group_epoch(v.group_epoch)
        .with_assignment_epoch(v.assignment_epoch)
        .with_assignor_name(str_bytes(v.assignor))
        .with_members(members)
        .with_authorized_operations(authorized_ops::if_asked(include_ops, authorized_ops::GROUP))
}
