//! OffsetForLeaderEpoch (v2-4). Every partition has had one leader epoch,
//! 0, since it was created, so the end offset of any epoch >= 0 is the log
//! end offset. librdkafka asks this to validate its position after a
//! metadata refresh; the answer never makes it truncate.

use super::{errors, Ctx, LEADER_EPOCH};
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
                    query: OffsetQuery::Latest,
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
                    match results.get(&(topic.clone(), p.partition)) {
                        Some(Ok(o)) if p.leader_epoch >= 0 => e
                            .with_error_code(errors::NONE)
                            .with_leader_epoch(LEADER_EPOCH)
                            .with_end_offset(o.high_watermark as i64),
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
