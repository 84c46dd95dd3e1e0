//! OffsetCommit (v0-9), from consumers and from admin clients
//! (AlterConsumerGroupOffsets is an OffsetCommit with generation -1).
//!
//! As Kafka's broker does, per partition first: a topic or partition that
//! does not exist gets UNKNOWN_TOPIC_OR_PARTITION and metadata longer than
//! [`METADATA_BYTES_MAX`] OFFSET_METADATA_TOO_LARGE; those are not stored.
//! The rest is validated against the group (member, static instance,
//! generation, rebalance: `crate::groups::state::Group::check_commit`),
//! appended durably to the group's `__consumer_offsets` partition, then
//! acknowledged. A group-level failure is reported on each of those
//! partitions, as Kafka does.
//!
//! v0 carries no generation or member (the crate decodes them as -1 and
//! ""), so it commits as an admin client does: accepted while the group has
//! no members. v1's per-partition `commit_timestamp` is ignored (offsets
//! do not expire here).

use super::{errors, Ctx};
use crate::groups::{self, offsets::CommitItem, Committed, GroupError, MemberRef};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

/// Kafka's `offset.metadata.max.bytes` default.
pub const METADATA_BYTES_MAX: usize = 4096;

pub async fn handle(ctx: &Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.to_string();
    let topics = ctx.shard.topics();
    // Per partition: Some(code) decided here, None if it goes to the group.
    let mut early: Vec<Vec<Option<i16>>> = Vec::with_capacity(req.topics.len());
    let mut items: Vec<CommitItem> = Vec::new();
    for t in &req.topics {
        let meta = topics.get(t.name.as_str());
        let mut codes = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let exists = meta.is_some_and(|m| {
                p.partition_index >= 0 && (p.partition_index as u32) < m.partitions
            });
            let metadata_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
            if !exists {
                codes.push(Some(errors::unknown_topic()));
            } else if metadata_len > METADATA_BYTES_MAX {
                codes.push(Some(errors::offset_metadata_too_large()));
            } else {
                codes.push(None);
                items.push(CommitItem {
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
                });
            }
        }
        early.push(codes);
    }
    drop(topics);
    let group_code = if items.is_empty() {
        errors::NONE
    } else {
        let gid = group_id.clone();
        let member_id = req.member_id.to_string();
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        let generation = req.generation_id_or_member_epoch;
        let result = groups::with_coordinator(&ctx.shard, &group_id, move |s, c, p| async move {
            let member = MemberRef {
                member_id: &member_id,
                instance_id: instance.as_deref(),
            };
            c.commit(&s, p, &gid, member, generation, items).await
        })
        .await;
        match &result {
            Ok(()) => errors::NONE,
            // Kafka answers an unknown group with GROUP_ID_NOT_FOUND from
            // v9 only; older clients get ILLEGAL_GENERATION.
            Err(GroupError::GroupIdNotFound) if ctx.version < 9 => {
                errors::group(&GroupError::IllegalGeneration)
            }
            Err(e) => errors::group(e),
        }
    };
    let topics = req
        .topics
        .iter()
        .zip(early)
        .map(|(t, codes)| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code.unwrap_or(group_code))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
