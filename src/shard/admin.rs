//! The controller: topic metadata changes, run on shard 0 only, one at a
//! time. Each change is persisted before it is broadcast, and the caller
//! gets its answer only after every shard has applied it (so a produce
//! right after "topic created" finds its partitions open).

use super::ops::{AdminError, AdminOk, AdminOp, AdminResult};
use super::Shard;
use crate::config::TopicConfig;
use crate::metadata::{self, TopicMeta, TopicTable};
use crate::router::{reply_channel, ShardMsg};
use std::rc::Rc;
use std::sync::Arc;
use tracing::info;

/// Producer ids are reserved in blocks so that handing one out rarely costs an fsync.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Partition count bound, so a typo cannot create a million directories.
pub const PARTITIONS_MAX: u32 = 10_000;

thread_local! {
    static ADMIN_LOCK: Rc<futures::lock::Mutex<()>> = Rc::new(futures::lock::Mutex::new(()));
}

pub async fn execute(shard: &Rc<Shard>, op: AdminOp) -> AdminResult {
    assert_eq!(shard.id, 0, "admin operations run on the controller");
    if shard.shutting_down.get() {
        return Err(AdminError::ShuttingDown);
    }
    let lock = ADMIN_LOCK.with(|l| l.clone());
    let _guard = lock.lock().await;
    let cur = shard.topics();
    let mut next: TopicTable = (*cur).clone();
    match op {
        AdminOp::CreateTopic {
            name,
            partitions,
            config,
        } => {
            metadata::validate_name(&name).map_err(|e| AdminError::InvalidName(e.to_string()))?;
            if next.topics.contains_key(&name) {
                return Err(AdminError::TopicExists(name));
            }
            if partitions == 0 || partitions > PARTITIONS_MAX {
                return Err(AdminError::InvalidPartitions(format!(
                    "{partitions} (must be 1..={PARTITIONS_MAX})"
                )));
            }
            let tcfg = shard
                .config
                .topic_defaults
                .clone()
                .with_overrides(&config)
                .map_err(|e| AdminError::InvalidConfig(e.to_string()))?;
            info!(topic = %name, partitions, "creating topic");
            next.topics.insert(
                name.clone(),
                TopicMeta {
                    id: metadata::new_topic_id(&name),
                    name,
                    partitions,
                    config: tcfg,
                    created_ms: crate::storage::now_ms(),
                },
            );
        }
        AdminOp::DeleteTopic { name } => {
            if next.topics.remove(&name).is_none() {
                return Err(AdminError::UnknownTopic(name));
            }
            info!(topic = %name, "deleting topic");
        }
        AdminOp::CreatePartitions { name, total } => {
            let Some(t) = next.topics.get_mut(&name) else {
                return Err(AdminError::UnknownTopic(name));
            };
            if total < t.partitions {
                return Err(AdminError::InvalidPartitions(format!(
                    "topic '{name}' has {} partitions; the count can grow but never shrink",
                    t.partitions
                )));
            }
            if total > PARTITIONS_MAX {
                return Err(AdminError::InvalidPartitions(format!(
                    "{total} (must be <= {PARTITIONS_MAX})"
                )));
            }
            if total == t.partitions {
                return Ok(AdminOk::Done);
            }
            info!(topic = %name, from = t.partitions, to = total, "adding partitions");
            t.partitions = total;
        }
        AdminOp::AllocateProducerId => {
            let pid = shard.next_producer_id.get();
            if pid >= next.producer_id_block_end {
                next.producer_id_block_end = pid + PRODUCER_ID_BLOCK;
                next.version += 1;
                next.persist(&shard.config.data_dir)
                    .map_err(|e| AdminError::Storage(e.to_string()))?;
                broadcast(shard, Arc::new(next)).await;
            }
            shard.next_producer_id.set(pid + 1);
            return Ok(AdminOk::ProducerId(pid));
        }
    }
    next.version += 1;
    next.persist(&shard.config.data_dir)
        .map_err(|e| AdminError::Storage(e.to_string()))?;
    broadcast(shard, Arc::new(next)).await;
    Ok(AdminOk::Done)
}

/// Send the new table to every shard and wait until all have applied it.
async fn broadcast(shard: &Rc<Shard>, table: Arc<TopicTable>) {
    let mut waits = Vec::new();
    for s in 0..shard.shards() {
        if s == shard.id {
            continue;
        }
        let (tx, rx) = reply_channel();
        if shard
            .router
            .send(
                s,
                ShardMsg::ApplyTopics {
                    topics: table.clone(),
                    reply: tx,
                },
            )
            .is_ok()
        {
            waits.push(rx);
        }
    }
    shard.apply_topics(table).await;
    for rx in waits {
        let _ = rx.recv_async().await;
    }
}

/// Topic config as stored, for describe.
pub fn describe_config(c: &TopicConfig) -> Vec<(String, String)> {
    c.entries()
}
