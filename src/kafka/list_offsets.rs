//! ListOffsets (v0-10): earliest (-2), latest (-1), max timestamp (-3) and
//! by timestamp. v0 answers in its old form: a list holding the one offset
//! found (`old_style_offsets`), empty when `max_num_offsets` is 0.
//!
//! By timestamp, the log's time index finds the first batch whose max
//! timestamp reaches the target; this handler then reads that batch and
//! picks the exact record, so the answer is Kafka's: the first offset whose
//! timestamp is >= the target, with that record's timestamp, or -1 when no
//! record is that recent. Max timestamp (-3): the log finds the first batch
//! holding the partition's largest timestamp, and this handler the first
//! record in it with that timestamp (Kafka's answer since KIP-734: that
//! record's offset and timestamp, whatever order timestamps came in).

use super::{errors, Ctx, LEADER_EPOCH};
use crate::format::read_records;
use crate::router::ops::{FetchPart, OffsetQuery, OffsetsPart};
use crate::shard::Shard;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_TIERED: i64 = -5;
const LATEST_TIERED: i64 = -6;

/// Bytes read to find the exact record in a batch found by timestamp.
const TIMESTAMP_READ_BYTES: u32 = 1 << 20;

fn query_of(ts: i64) -> Option<OffsetQuery> {
    Some(match ts {
        LATEST | LATEST_TIERED => OffsetQuery::Latest,
        MAX_TIMESTAMP => OffsetQuery::MaxTimestamp,
        EARLIEST | EARLIEST_LOCAL | EARLIEST_TIERED => OffsetQuery::Earliest,
        ts if ts >= 0 => OffsetQuery::Timestamp(ts),
        _ => return None,
    })
}

pub async fn handle(ctx: &Ctx, req: ListOffsetsRequest) -> ListOffsetsResponse {
    // One shard call per distinct query, so a partition asked twice (say
    // earliest and latest) gets both answers.
    let mut by_query: BTreeMap<i64, Vec<OffsetsPart>> = BTreeMap::new();
    // A replicated partition answers with its Raft term as leader epoch,
    // and refuses a client naming another (v4+): an older one means the
    // client's metadata is stale (FENCED_LEADER_EPOCH), a newer one that
    // this broker's is (UNKNOWN_LEADER_EPOCH), as Fetch does.
    let term_of = |topic: &str, p: i32| {
        Some(
            ctx.shard
                .replication()?
                .leader(topic, u32::try_from(p).ok()?)?
                .1,
        )
    };
    let mut fenced: HashMap<(String, i32), i16> = HashMap::new();
    for t in &req.topics {
        for p in &t.partitions {
            if p.partition_index < 0 {
                continue;
            }
            let refusal = term_of(t.name.as_str(), p.partition_index)
                .and_then(|term| errors::leader_epoch_mismatch(p.current_leader_epoch, term));
            if let Some(code) = refusal {
                fenced.insert((t.name.to_string(), p.partition_index), code);
                continue;
            }
            if let Some(query) = query_of(p.timestamp) {
                by_query
                    .entry(query_key(p.timestamp))
                    .or_default()
                    .push(OffsetsPart {
                        topic: t.name.to_string(),
                        partition: p.partition_index as u32,
                        query,
                    });
            }
        }
    }
    let answers = futures::future::join_all(
        by_query
            .into_iter()
            .map(|(k, parts)| async move { (k, ctx.shard.offsets(parts).await) }),
    )
    .await;
    let mut results = HashMap::new();
    for (k, rs) in answers {
        for r in rs {
            results.insert((k, r.topic, r.partition as i32), r.result);
        }
    }
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.name.to_string();
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let key = (query_key(p.timestamp), topic.clone(), p.partition_index);
            if let Some(code) = fenced.get(&(topic.clone(), p.partition_index)) {
                partitions.push(r.with_error_code(*code));
                continue;
            }
            match results.get(&key) {
                None if p.partition_index < 0 => r = r.with_error_code(errors::unknown_topic()),
                None => r = r.with_error_code(errors::invalid_request()),
                Some(Err(e)) => r = r.with_error_code(errors::op(e)),
                Some(Ok(o)) => {
                    r = r.with_error_code(errors::NONE);
                    match p.timestamp {
                        ts if ts >= 0 || ts == MAX_TIMESTAMP => {
                            if o.offset < o.high_watermark {
                                let target = (ts >= 0).then_some(ts);
                                let (offset, ts) = exact(
                                    &ctx.shard,
                                    &topic,
                                    p.partition_index as u32,
                                    o.offset,
                                    target,
                                )
                                .await;
                                r = r.with_offset(offset).with_timestamp(ts);
                            }
                        }
                        _ => r = r.with_offset(o.offset as i64),
                    }
                    if ctx.version >= 4 {
                        let epoch = term_of(&topic, p.partition_index)
                            .and_then(|t| i32::try_from(t).ok())
                            .unwrap_or(LEADER_EPOCH);
                        r = r.with_leader_epoch(epoch);
                    }
                }
            }
            if ctx.version == 0 {
                r = old_style(r, p.max_num_offsets);
            }
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Queries that share an answer share a key: every "latest" flavour is -1,
/// every "earliest" flavour -2, a timestamp is itself.
fn query_key(ts: i64) -> i64 {
    match query_of(ts) {
        Some(OffsetQuery::Latest) => LATEST,
        Some(OffsetQuery::Earliest) => EARLIEST,
        _ => ts,
    }
}

/// The v0 form of an answer: the offset found as a list of at most
/// `max_num_offsets` (one here: Kafka v0 listed segment base offsets too,
/// which no client we know of reads past the first), and no single
/// offset or timestamp (v1+ fields, which v0 cannot carry).
fn old_style(
    r: ListOffsetsPartitionResponse,
    max_num_offsets: i32,
) -> ListOffsetsPartitionResponse {
    let offsets = if r.error_code == errors::NONE && r.offset >= 0 && max_num_offsets > 0 {
        vec![r.offset]
    } else {
        Vec::new()
    };
    r.with_old_style_offsets(offsets)
        .with_offset(-1)
        .with_timestamp(-1)
}

/// The first record at or after `from` with timestamp >= `target`, or with
/// no target the first record of the batch at `from` holding that batch's
/// largest timestamp: (offset, timestamp). Falls back to the batch's base
/// offset when the batch cannot be read back.
async fn exact(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    from: u64,
    target: Option<i64>,
) -> (i64, i64) {
    let part = FetchPart {
        topic: topic.to_string(),
        partition,
        offset: from,
        max_bytes: TIMESTAMP_READ_BYTES,
    };
    let fallback = (from as i64, -1);
    let Some(r) = shard
        .fetch(vec![part], 0, 0, TIMESTAMP_READ_BYTES as usize)
        .await
        .into_iter()
        .next()
    else {
        return fallback;
    };
    let Ok(o) = r.result else {
        return fallback;
    };
    for f in &o.frames {
        let limit = shard.config.max_request_bytes.max(64 << 20);
        let Ok((_, recs)) = read_records(f, limit) else {
            return fallback;
        };
        let target = match target {
            Some(t) => t,
            None => match recs.iter().map(|r| r.timestamp_ms).max() {
                Some(max) => max,
                None => return fallback,
            },
        };
        if let Some(rec) = recs
            .iter()
            .find(|rec| rec.offset >= from && rec.timestamp_ms >= target)
        {
            return (rec.offset as i64, rec.timestamp_ms);
        }
    }
    fallback
}
