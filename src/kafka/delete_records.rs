//! DeleteRecords (v0-2): move partitions' log start forward, durably
//! ([`crate::storage::Log::delete_records_before`]; a replicated
//! partition's through its Raft group, see
//! [`crate::shard::replication::Replication::delete_records`]). Each partition is
//! served on the shard that owns it; the answer carries the new log start
//! (low watermark). An offset of -1 means the high watermark; one beyond it
//! is OFFSET_OUT_OF_RANGE, as in Kafka.

use super::{errors, on_owner, Ctx};
use crate::groups::OFFSETS_TOPIC;
use crate::metadata::reserve;
use crate::shard::replication::NotLeader;
use crate::shard::Shard;
use crate::storage::StorageError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use std::rc::Rc;

/// "Up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// One partition on its owning shard: the new low watermark or an error code.
async fn delete_one(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
    offset: i64,
    timeout_ms: i32,
) -> Result<u64, i16> {
    let p = s.partition(&topic, partition).map_err(|e| errors::op(&e))?;
    let hw = p.high_watermark();
    let target = match offset {
        HIGH_WATERMARK => hw,
        o if o < 0 || o as u64 > hw => return Err(errors::offset_out_of_range()),
        o => o as u64,
    };
    if p.is_replicated() {
        // Through the partition's Raft group, so that every replica (and
        // so any later leader) hides the same records; answered once the
        // leader applied it. Kafka instead waits for every follower's log
        // start; ours follow when they apply the entry.
        let r = s
            .replication()
            .expect("replicated partitions are a cluster's");
        let deleted = r.delete_records(&topic, partition, target);
        let timeout = s
            .clock
            .sleep(std::time::Duration::from_millis(timeout_ms.max(1) as u64));
        return match futures_lite::future::or(async { Some(deleted.await) }, async {
            timeout.await;
            None
        })
        .await
        {
            Some(Ok(())) => Ok(p.log_start_offset()),
            Some(Err(NotLeader)) => Err(errors::not_leader_or_follower()),
            None => Err(errors::request_timed_out()),
        };
    }
    match p.delete_records_before(target).await {
        // A full disk is exactly when records get deleted to make room:
        // the log start file needs one block, so give back the metadata
        // space reserve (refilled by the controller later) and try once more.
        Err(StorageError::NoSpace { .. })
            if matches!(reserve::release(&s.config.data_dir), Ok(true)) =>
        {
            p.delete_records_before(target).await
        }
        r => r,
    }
    .map_err(|e| errors::storage(&e))
}

pub async fn handle(ctx: &Ctx, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let timeout_ms = req.timeout_ms;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.to_string();
        let answers = futures::future::join_all(t.partitions.iter().map(|p| {
            let (name, index, offset) = (name.clone(), p.partition_index, p.offset);
            async move {
                // Committed offsets are replayed from the start of their
                // log: cutting it would silently lose groups' progress.
                if index >= 0 && name == OFFSETS_TOPIC {
                    return Err(errors::invalid_topic());
                }
                on_owner(ctx, name, index, move |s, name, partition| {
                    delete_one(s, name, partition, offset, timeout_ms)
                })
                .await
            }
        }))
        .await;
        let partitions = t
            .partitions
            .iter()
            .zip(answers)
            .map(|(p, r)| {
                let out =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                match r {
                    Ok(low) => out
                        .with_low_watermark(low as i64)
                        .with_error_code(errors::NONE),
                    Err(code) => out.with_low_watermark(-1).with_error_code(code),
                }
            })
            .collect();
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
