//! OffsetForLeaderEpoch (v2-4): where a leader epoch ends, so a client
//! (librdkafka after a leader change, a follower in Kafka) can tell
//! whether its position is still on the leader's log.
//!
//! A replicated partition answers from its Raft group's epoch history on
//! the leader (`LogIndex::epoch_end`: the largest epoch at or below the
//! asked one, ending where the next epoch starts or at the log end), and
//! checks the request's current leader epoch against the group's term
//! (FENCED_LEADER_EPOCH when older, UNKNOWN_LEADER_EPOCH when newer); a
//! follower answers NOT_LEADER_OR_FOLLOWER. A single-replica partition has
//! had one epoch, ending at the high watermark.

use super::{errors, Ctx};
use crate::router::ops::{OffsetQuery, OffsetsPart};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::collections::HashMap;

pub async fn handle(ctx: &Ctx, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let parts = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.partition >= 0)
                .map(|p| OffsetsPart {
                    topic: t.topic.to_string(),
                    partition: p.partition as u32,
                    query: OffsetQuery::EpochEnd(p.leader_epoch),
                })
        })
        .collect();
    let mut results = HashMap::new();
    for r in ctx.shard.offsets(parts).await {
        results.insert((r.topic, r.partition as i32), r.result);
    }
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let topic = t.topic.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let e = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let fenced = ctx
                        .shard
                        .replication()
                        .and_then(|r| r.leader(&topic, p.partition as u32))
                        .and_then(|(_, term)| {
                            errors::leader_epoch_mismatch(p.current_leader_epoch, term)
                        });
                    if let Some(code) = fenced {
                        return e.with_error_code(code);
                    }
                    match results.get(&(topic.clone(), p.partition)) {
                        Some(Ok(o)) if p.leader_epoch >= 0 && o.offset != u64::MAX => e
                            .with_error_code(errors::NONE)
                            .with_leader_epoch(o.leader_epoch)
                            .with_end_offset(o.offset as i64),
                        Some(Ok(_)) => e.with_error_code(errors::NONE),
                        Some(Err(err)) => e.with_error_code(errors::op(err)),
                        None => e.with_error_code(errors::unknown_topic()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
