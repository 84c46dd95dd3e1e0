//! Produce: each partition's Kafka batches become our frames (header
//! rewritten, records untouched, CRC checked once, records walked and
//! compressed ones decompressed once; see [`crate::format::validate`]) and are appended through
//! the same shard operation the native listener uses.
//!
//! - acks 0 / 1 / -1 map to [`Acks::None`] / [`Acks::Leader`] / [`Acks::All`];
//!   acks = 0 gets no response at all.
//! - Idempotence is the log's: a retried batch is acknowledged with its
//!   original offsets, a gap is OUT_OF_ORDER_SEQUENCE_NUMBER, a stale epoch
//!   INVALID_PRODUCER_EPOCH (see [`super::errors::append`]).
//! - v0-2 may carry message sets (magic 0/1): converted to one v2 frame
//!   per partition first ([`super::message_set`]); v3+ must carry v2.
//! - Transactional produce and writes to internal
//!   (`__`) topics are refused with a message saying why (`error_message`, v8+).
//!
//! Order: requests of one connection are appended in arrival order, which
//! pipelined idempotent producers rely on. A produce waits for its turn in
//! the connection's produce line (taken at its first poll, see
//! `listener.rs`) before converting, and lets the next one go as soon as
//! its appends are issued. Converting yields the core between partitions
//! when it has run long: a 50 MiB request no longer holds it for 100+ ms
//! while a fresh client waits for its Metadata.

use super::batch::kafka_to_frames;
use super::{errors, message_set, str_bytes, Ctx};
use crate::metadata::INTERNAL_PREFIX;
use crate::protocol::messages::Acks;
use crate::router::ops::ProducePart;
use crate::storage::AppendOutcome;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::HashMap;
use tracing::debug;

/// Whether a Produce v0-2 partition's records are a message set (magic 0
/// or 1, at the same place as a v2 batch's magic); Kafka let those
/// versions carry v2 batches too.
fn is_message_set(records: &[u8]) -> bool {
    records
        .get(kafka_protocol::records::legacy::MAGIC_OFFSET)
        .is_some_and(|&m| m <= 1)
}

enum Outcome {
    Appended(AppendOutcome),
    Failed(i16, String),
}

pub async fn handle(ctx: &Ctx, mut req: ProduceRequest) -> Option<ProduceResponse> {
    let turn = ctx.produce_turn.take();
    if let Some(t) = &turn {
        t.wait().await;
    }
    let acks = match req.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let refuse_all = if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        Some((
            errors::transactions_unsupported(),
            "shardlog has no transactions: unset transactional.id".to_string(),
        ))
    } else if acks.is_none() {
        Some((
            errors::invalid_required_acks(),
            format!("acks must be 0, 1 or -1, not {}", req.acks),
        ))
    } else {
        None
    };
    let mut outcomes: HashMap<(String, i32), Outcome> = HashMap::new();
    let mut parts = Vec::new();
    let topics = ctx.shard.topics();
    for t in &req.topic_data {
        let topic = t.name.to_string();
        for p in &t.partition_data {
            let key = (topic.clone(), p.index);
            if let Some((code, msg)) = &refuse_all {
                outcomes.insert(key, Outcome::Failed(*code, msg.clone()));
                continue;
            }
            if topic.starts_with(INTERNAL_PREFIX) {
                outcomes.insert(
                    key,
                    Outcome::Failed(
                        errors::invalid_topic(),
                        format!("'{topic}' is an internal topic: clients cannot write to it"),
                    ),
                );
                continue;
            }
            let meta = topics
                .get(&topic)
                .filter(|m| p.index >= 0 && (p.index as u32) < m.partitions);
            let Some(meta) = meta else {
                outcomes.insert(
                    key,
                    Outcome::Failed(
                        errors::unknown_topic(),
                        format!("unknown topic or partition {topic}-{}", p.index),
                    ),
                );
                continue;
            };
            glommio::yield_if_needed().await;
            let records = p.records.as_deref().unwrap_or(&[]);
            // Validated here, on the connection's shard, before routing:
            // nothing of a partition with a bad batch is stored.
            let limits = meta.config.record_limits();
            let converted = if ctx.version <= 2 && is_message_set(records) {
                message_set::to_frames(records, &limits, ctx.shard.clock.wall_ms())
            } else {
                kafka_to_frames(records, &limits)
            };
            match converted {
                Ok(frames) => parts.push(ProducePart {
                    topic: topic.clone(),
                    partition: p.index as u32,
                    frames,
                }),
                Err(e) => {
                    debug!(client_id = %ctx.client_id, topic = %topic, partition = p.index, "kafka produce refused: {e}");
                    outcomes.insert(key, Outcome::Failed(errors::batch(&e), e.to_string()));
                }
            }
        }
    }
    // The converted frames are copies: drop everything of the request that
    // is a slice of the request frame (records, topic names, tagged
    // fields) before waiting, so a produce waiting for the write budget
    // holds its data once, not twice (measured: peak RSS under a 54 MiB
    // acks=1 flood fell by the inflight budget's worth).
    req.transactional_id = None;
    req.unknown_tagged_fields.clear();
    for t in &mut req.topic_data {
        t.name = TopicName(StrBytes::from_string(t.name.to_string()));
        t.unknown_tagged_fields.clear();
        for p in &mut t.partition_data {
            p.records = None;
            p.unknown_tagged_fields.clear();
        }
    }
    let acks = acks.unwrap_or(Acks::Leader);
    if !parts.is_empty() {
        let timeout_ms = req.timeout_ms.clamp(1, 300_000) as u32;
        let issued = ctx.shard.produce(parts, acks, timeout_ms);
        drop(turn);
        for r in issued.await {
            let outcome = match r.result {
                Ok(o) => Outcome::Appended(o),
                Err(e) => {
                    debug!(topic = %r.topic, partition = r.partition, "kafka produce failed: {e}");
                    Outcome::Failed(errors::op(&e), e.to_string())
                }
            };
            outcomes.insert((r.topic, r.partition as i32), outcome);
        }
    }
    if acks == Acks::None && refuse_all.is_none() {
        return None;
    }
    let v = ctx.version;
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            let topic = t.name.to_string();
            let partition_responses = t
                .partition_data
                .iter()
                .map(|p| {
                    let mut r = PartitionProduceResponse::default().with_index(p.index);
                    match outcomes.get(&(topic.clone(), p.index)) {
                        Some(Outcome::Appended(o)) => {
                            r = r
                                .with_error_code(errors::NONE)
                                .with_base_offset(o.base_offset as i64)
                                .with_log_append_time_ms(-1);
                            if v >= 5 {
                                r = r.with_log_start_offset(o.log_start_offset as i64);
                            }
                        }
                        Some(Outcome::Failed(code, msg)) => {
                            r = r.with_error_code(*code).with_base_offset(-1);
                            if v >= 8 {
                                r = r.with_error_message(Some(str_bytes(msg)));
                            }
                        }
                        // Every requested partition gets an outcome above.
                        None => r = r.with_error_code(errors::unknown_server_error()),
                    }
                    r
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(partition_responses)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}
