//! DescribeProducers (v0, KIP-664): the idempotent producers a partition's
//! log remembers ([`crate::storage::producer_state`]), read on the shard
//! that owns the partition. Per producer: id, epoch, last sequence and the
//! max timestamp of its last batch (-1 if not known: an entry restored from
//! an old checkpoint). No transactions: coordinator epoch and current
//! transaction start offset are always -1. A partition this broker does not
//! lead gets NOT_LEADER_OR_FOLLOWER, an unknown one
//! UNKNOWN_TOPIC_OR_PARTITION.

use super::{errors, on_owner, Ctx};
use crate::shard::Shard;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use std::rc::Rc;

/// Kafka's "none" for the transactional fields.
const NO_TRANSACTION: i64 = -1;

/// One partition on its owning shard: its producers or an error code.
async fn describe_one(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
) -> Result<Vec<ProducerState>, i16> {
    let p = s.partition(&topic, partition).map_err(|e| errors::op(&e))?;
    Ok(p.producers()
        .into_iter()
        .map(|(pid, e)| {
            ProducerState::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(e.epoch as i32)
                .with_last_sequence(e.last_sequence())
                .with_last_timestamp(e.last_timestamp)
                .with_coordinator_epoch(NO_TRANSACTION as i32)
                .with_current_txn_start_offset(NO_TRANSACTION)
        })
        .collect())
}

pub async fn handle(ctx: &Ctx, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.to_string();
        let answers = futures::future::join_all(
            t.partition_indexes
                .iter()
                .map(|&index| on_owner(ctx, name.clone(), index, describe_one)),
        )
        .await;
        let partitions = t
            .partition_indexes
            .iter()
            .zip(answers)
            .map(|(&index, r)| {
                let out = PartitionResponse::default().with_partition_index(index);
                match r {
                    Ok(producers) => out
                        .with_error_code(errors::NONE)
                        .with_active_producers(producers),
                    Err(code) => out.with_error_code(code),
                }
            })
            .collect();
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
