//! OffsetDelete (v0-1), the admin client's DeleteConsumerGroupOffsets:
//! removes committed offsets of a group, durably, by Kafka's rules (see
//! `crate::groups::Coordinator::delete_offsets`): GROUP_ID_NOT_FOUND for a
//! group with neither members nor offsets, NON_EMPTY_GROUP for a group with
//! members that is not a consumer group, GROUP_SUBSCRIBED_TO_TOPIC for the
//! partitions of a topic its members subscribe to. A partition with no
//! committed offset succeeds (nothing to delete), as in Kafka; a topic or
//! partition that does not exist gets UNKNOWN_TOPIC_OR_PARTITION.

use super::{errors, Ctx};
use crate::groups;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

pub async fn handle(ctx: &Ctx, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.to_string();
    let topics = ctx.shard.topics();
    let mut asked: Vec<(String, i32)> = Vec::new();
    let mut unknown: Vec<bool> = Vec::new();
    for t in &req.topics {
        let meta = topics.get(t.name.as_str());
        for p in &t.partitions {
            let exists = meta.is_some_and(|m| {
                p.partition_index >= 0 && (p.partition_index as u32) < m.partitions
            });
            unknown.push(!exists);
            if exists {
                asked.push((t.name.to_string(), p.partition_index));
            }
        }
    }
    drop(topics);
    let gid = group_id.clone();
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |s, c, p| async move {
        c.delete_offsets(&s, p, &gid, asked).await
    })
    .await;
    let per_partition = match result {
        Err(e) => {
            return OffsetDeleteResponse::default().with_error_code(errors::group(&e));
        }
        Ok(r) => r,
    };
    let mut known = per_partition.into_iter();
    let mut unknown = unknown.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if unknown.next().expect("one per partition") {
                        errors::unknown_topic()
                    } else {
                        match known.next().expect("one per known partition") {
                            Ok(()) => errors::NONE,
                            Err(e) => errors::group(&e),
                        }
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default()
        .with_error_code(errors::NONE)
        .with_topics(topics)
}
