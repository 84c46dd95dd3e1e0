//! Fetch (v4-12): long poll across shards (max_wait_ms / min_bytes), then
//! every stored frame rebuilt as the Kafka batch it is, byte for byte.
//!
//! - Sizes: `partition_max_bytes` bounds each partition, `max_bytes` the
//!   whole answer, except that the first batch always goes (a batch larger
//!   than the limits must not stall a consumer), as in Kafka.
//! - No transactions: last_stable_offset = high watermark and no aborted
//!   transactions, so read_committed consumers (librdkafka's default) read
//!   everything.
//! - No fetch sessions: session_id 0 tells clients to send full requests.

use super::batch::frames_to_kafka;
use super::{errors, Ctx};
use crate::shard::ops::{FetchPart, OpError};
use crate::storage::{FetchOutcome, StorageError};
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use std::collections::HashMap;
use tracing::error;

/// Longest long poll served; clients ask for 500 ms (librdkafka, Java) to 5 s (kafkajs).
const MAX_WAIT_MS_MAX: i32 = 30_000;

pub async fn handle(ctx: &Ctx, req: FetchRequest) -> FetchResponse {
    let topics = ctx.shard.topics();
    let max_total = req.max_bytes.max(1) as u32;
    let mut parts = Vec::new();
    let mut refused: HashMap<(String, i32), i16> = HashMap::new();
    for t in &req.topics {
        let topic = t.topic.to_string();
        for p in &t.partitions {
            let known = topics
                .get(&topic)
                .is_some_and(|m| p.partition >= 0 && (p.partition as u32) < m.partitions);
            if !known {
                refused.insert((topic.clone(), p.partition), errors::unknown_topic());
            } else if p.fetch_offset < 0 {
                let e = StorageError::OffsetOutOfRange {
                    requested: 0,
                    log_start: 0,
                    high_watermark: 0,
                };
                refused.insert((topic.clone(), p.partition), errors::storage(&e));
            } else {
                parts.push(FetchPart {
                    topic: topic.clone(),
                    partition: p.partition as u32,
                    offset: p.fetch_offset as u64,
                    max_bytes: (p.partition_max_bytes.max(1) as u32).min(max_total),
                });
            }
        }
    }
    let mut results: HashMap<(String, i32), Result<FetchOutcome, OpError>> = HashMap::new();
    if !parts.is_empty() {
        let wait = req.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u32;
        let min_bytes = req.min_bytes.max(0) as u32;
        for r in ctx.shard.fetch(parts, wait, min_bytes).await {
            results.insert((r.topic, r.partition as i32), r.result);
        }
    }
    // Assemble in request order, within the response's byte budget.
    let mut budget = max_total as usize;
    let mut first_batch_sent = false;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.topic.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let key = (topic.clone(), p.partition);
            let mut d = PartitionData::default()
                .with_partition_index(p.partition)
                .with_aborted_transactions(Some(vec![]))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(Bytes::new()));
            if let Some(code) = refused.get(&key) {
                d = d.with_error_code(*code).with_high_watermark(-1);
                d = d.with_last_stable_offset(-1);
            } else {
                match results.remove(&key) {
                    Some(Ok(o)) => {
                        let mut frames = Vec::new();
                        for f in o.frames {
                            if first_batch_sent && f.len() > budget {
                                break;
                            }
                            budget = budget.saturating_sub(f.len());
                            first_batch_sent = true;
                            frames.push(f);
                        }
                        d = d
                            .with_error_code(errors::NONE)
                            .with_high_watermark(o.high_watermark as i64)
                            .with_last_stable_offset(o.high_watermark as i64)
                            .with_log_start_offset(o.log_start_offset as i64);
                        match frames_to_kafka(&frames) {
                            Ok(records) => d = d.with_records(Some(records)),
                            Err(e) => {
                                error!(topic = %topic, partition = p.partition, "kafka fetch: a stored frame does not parse: {e}");
                                d = d.with_error_code(errors::kafka_storage_error());
                            }
                        }
                    }
                    Some(Err(e)) => {
                        d = d.with_error_code(errors::op(&e));
                        if let OpError::Storage(StorageError::OffsetOutOfRange {
                            log_start,
                            high_watermark,
                            ..
                        }) = &e
                        {
                            d = d
                                .with_high_watermark(*high_watermark as i64)
                                .with_last_stable_offset(*high_watermark as i64)
                                .with_log_start_offset(*log_start as i64);
                        }
                    }
                    // Listed twice in the request: answered the first time.
                    None => continue,
                }
            }
            partitions.push(d);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses)
}
