//! OffsetCommit (v2-9): validated against the group's generation, appended
//! durably to the group's `__consumer_offsets` partition, then acknowledged.
//! A group-level failure (rebalance, unknown member, storage) is reported
//! on every partition, as Kafka does.

use super::{errors, Ctx};
use crate::groups::{self, offsets::CommitItem, Committed};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

pub async fn handle(ctx: &Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.to_string();
    let items: Vec<CommitItem> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| CommitItem {
                topic: t.name.to_string(),
                partition: p.partition_index,
                committed: Committed {
                    offset: p.committed_offset,
                    leader_epoch: if ctx.version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                },
            })
        })
        .collect();
    let gid = group_id.clone();
    let member_id = req.member_id.to_string();
    let generation = req.generation_id_or_member_epoch;
    let result = groups::with_coordinator(&ctx.shard, &group_id, move |s, c, p| async move {
        c.commit(&s, p, &gid, &member_id, generation, items).await
    })
    .await;
    let code = match &result {
        Ok(()) => errors::NONE,
        Err(e) => errors::group(e),
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
