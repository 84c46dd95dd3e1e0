//! Topic metadata changes, run on shard 0 only, one at a time. Each change
//! is persisted before it is broadcast, and the caller gets its answer
//! only after every shard has applied it (so a produce right after "topic
//! created" finds its partitions open).
//!
//! On a single node shard 0 decides changes itself ([`execute`]). In a
//! cluster the controller's Raft group decides them: [`execute`] hands
//! each one to the [`ControllerLink`] the cluster layer plugged in, and
//! the tables derived from the controller's state come back through
//! [`install`], which persists and broadcasts them the same way.

use super::Shard;
use crate::config::TopicConfig;
use crate::metadata::alter::{self, ConfigChange};
use crate::metadata::{self, identity, reserve, startup, DeletedTopic, TopicMeta, TopicTable};
use crate::router::ops::{
    AdminError, AdminOk, AdminOp, AdminResult, PartitionCountError, ReassignmentError,
    ReplicationFactorError,
};
use crate::router::{reply_channel, ShardMsg};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Producer ids are reserved in blocks so that handing one out rarely costs an fsync.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Partition count bound, so a typo cannot create a million directories.
pub const PARTITIONS_MAX: u32 = 10_000;

thread_local! {
    static ADMIN_LOCK: Rc<futures::lock::Mutex<()>> = Rc::new(futures::lock::Mutex::new(()));
}

/// The cluster's controller as shard 0 sees it (plugged in by the cluster
/// layer, which sits above the shard; see [`Shard::link_controller`]).
pub trait ControllerLink {
    /// Apply `op` through the controller; answers once it is committed and
    /// (as far as this broker is concerned) in this broker's table.
    fn submit(&self, op: AdminOp) -> Pin<Box<dyn Future<Output = AdminResult>>>;
}

pub async fn execute(shard: &Rc<Shard>, op: AdminOp) -> AdminResult {
    assert_eq!(shard.id, 0, "admin operations run on shard 0");
    if shard.shutting_down.get() {
        return Err(AdminError::ShuttingDown);
    }
    let link = shard.controller_link.borrow().clone();
    if let Some(link) = link {
        return link.submit(op).await;
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
            replication_factor,
        } => {
            // One broker holds one replica of everything.
            if replication_factor.is_some_and(|rf| rf != 1) {
                return Err(AdminError::InvalidReplicationFactor(
                    ReplicationFactorError::SingleBroker(replication_factor.unwrap_or(0)),
                ));
            }
            let meta = new_topic(shard, &next, name, partitions, config)?;
            move_aside_leftovers(shard, &meta.name, 0..meta.partitions)?;
            info!(topic = %meta.name, partitions = meta.partitions, "creating topic");
            next.topics.insert(meta.name.clone(), meta);
        }
        AdminOp::DeleteTopic { name } => {
            let Some(meta) = next.topics.remove(&name) else {
                return Err(AdminError::UnknownTopic(name));
            };
            info!(topic = %name, "deleting topic");
            // Persisted with the topic gone and listed as being deleted,
            // then the shards remove its directories, then the entry goes:
            // a crash in between is finished at the next start.
            next.deleting.push(DeletedTopic {
                name,
                id: meta.id,
                partitions: meta.partitions,
            });
            next.version += 1;
            persist(shard, &next)?;
            broadcast(shard, Arc::new(next)).await;
            finish_delete(shard, &meta.name).await;
            refill_reserve(shard);
            return Ok(AdminOk::Done);
        }
        AdminOp::CreatePartitions { name, total } => {
            let from = check_partition_growth(&next, &name, total)?;
            if total == from {
                return Ok(AdminOk::Done);
            }
            move_aside_leftovers(shard, &name, from..total)?;
            info!(topic = %name, from, to = total, "adding partitions");
            next.topics
                .get_mut(&name)
                .expect("checked above")
                .partitions = total;
        }
        AdminOp::AlterTopicConfig {
            name,
            changes,
            replace_all,
            validate_only,
        } => {
            let (t, altered) = altered_topic(shard, &next, &name, &changes, replace_all)?;
            if validate_only || altered == *t {
                return Ok(AdminOk::Done);
            }
            info!(topic = %name, ?changes, "altering topic config");
            next.topics.insert(name, altered);
        }
        AdminOp::Reassign { .. } | AdminOp::CompleteReassignment { .. } => {
            return Err(AdminError::InvalidReassignment(
                ReassignmentError::NeedsCluster,
            ));
        }
        AdminOp::AllocateProducerId => {
            let pid = shard.next_producer_id.get();
            if pid >= next.producer_id_block_end {
                next.producer_id_block_end = pid + PRODUCER_ID_BLOCK;
                next.version += 1;
                persist(shard, &next)?;
                broadcast(shard, Arc::new(next)).await;
            }
            shard.next_producer_id.set(pid + 1);
            return Ok(AdminOk::ProducerId(pid));
        }
    }
    next.version += 1;
    persist(shard, &next)?;
    broadcast(shard, Arc::new(next)).await;
    refill_reserve(shard);
    Ok(AdminOk::Done)
}

/// A new topic's metadata, checked as every broker checks it: its name,
/// partition count and config (our names applied, Kafka's other names
/// stored, anything else refused), and that `table` does not have it.
pub fn new_topic(
    shard: &Shard,
    table: &TopicTable,
    name: String,
    partitions: u32,
    config: std::collections::BTreeMap<String, String>,
) -> Result<TopicMeta, AdminError> {
    if metadata::validate_name(&name).is_err() {
        return Err(AdminError::InvalidName(name));
    }
    if table.topics.contains_key(&name) {
        return Err(AdminError::TopicExists(name));
    }
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err(AdminError::InvalidPartitions(
            PartitionCountError::OutOfRange {
                count: partitions,
                max: PARTITIONS_MAX,
            },
        ));
    }
    let defaults = &shard.config.topic_defaults;
    let fresh = TopicMeta {
        id: metadata::new_topic_id(&name),
        name,
        partitions,
        config: defaults.clone(),
        created_ms: shard.clock.wall_ms(),
        stored_config: Default::default(),
        assignment: Vec::new(),
    };
    let changes: Vec<ConfigChange> = config
        .into_iter()
        .map(|(k, v)| ConfigChange::Set(k, v))
        .collect();
    alter::altered(&fresh, defaults, &changes, false).map_err(AdminError::InvalidConfig)
}

/// The partition count of `name` today, if it may grow to `total`.
pub fn check_partition_growth(
    table: &TopicTable,
    name: &str,
    total: u32,
) -> Result<u32, AdminError> {
    let Some(t) = table.topics.get(name) else {
        return Err(AdminError::UnknownTopic(name.to_string()));
    };
    if total < t.partitions {
        return Err(AdminError::InvalidPartitions(
            PartitionCountError::Shrinks {
                topic: name.to_string(),
                partitions: t.partitions,
            },
        ));
    }
    if total > PARTITIONS_MAX {
        return Err(AdminError::InvalidPartitions(
            PartitionCountError::AboveMax {
                count: total,
                max: PARTITIONS_MAX,
            },
        ));
    }
    Ok(t.partitions)
}

/// Topic `name` as it is in `table`, and as `changes` would make it.
pub fn altered_topic<'t>(
    shard: &Shard,
    table: &'t TopicTable,
    name: &str,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<(&'t TopicMeta, TopicMeta), AdminError> {
    let Some(t) = table.topics.get(name) else {
        return Err(AdminError::UnknownTopic(name.to_string()));
    };
    let altered = alter::altered(t, &shard.config.topic_defaults, changes, replace_all)
        .map_err(AdminError::InvalidConfig)?;
    Ok((t, altered))
}

/// Cluster mode: serve the table `derive` makes from the current one (the
/// cluster layer derives it from the controller's state). Topics that are
/// gone, or came back under a new id, are deleted here as on a single node
/// (listed as being deleted, persisted, directories removed); directories
/// in the way of partitions new to this broker are moved aside first. A
/// table from an older controller index than the one served is ignored.
pub async fn install(
    shard: &Rc<Shard>,
    derive: impl FnOnce(&TopicTable) -> TopicTable,
) -> Result<(), AdminError> {
    assert_eq!(shard.id, 0, "the topic table changes on shard 0");
    if shard.shutting_down.get() {
        return Err(AdminError::ShuttingDown);
    }
    let lock = ADMIN_LOCK.with(|l| l.clone());
    let _guard = lock.lock().await;
    let cur = shard.topics();
    let mut next = derive(&cur);
    if cur.cluster_id != 0 && next.cluster_id != cur.cluster_id {
        return Err(AdminError::OtherCluster {
            ours: cur.cluster_id,
            theirs: next.cluster_id,
        });
    }
    if next.controller_index < cur.controller_index {
        return Ok(());
    }
    let gone: Vec<DeletedTopic> = cur
        .topics
        .values()
        .filter(|m| next.topics.get(&m.name).is_none_or(|n| n.id != m.id))
        .map(|m| DeletedTopic {
            name: m.name.clone(),
            id: m.id.clone(),
            partitions: m.partitions,
        })
        .collect();
    if !gone.is_empty() {
        // First a table without them, served and their directories
        // removed: a topic deleted and created again under its name (both
        // in one install) must not keep the old partitions open, nor have
        // their directories moved aside while they are.
        let mut without: TopicTable = (*cur).clone();
        without.version = cur.version + 1;
        for g in &gone {
            info!(topic = %g.name, "topic deleted by the controller");
            without.topics.remove(&g.name);
        }
        without.deleting.extend(gone.iter().cloned());
        persist(shard, &without)?;
        broadcast(shard, Arc::new(without)).await;
        for g in &gone {
            finish_delete(shard, &g.name).await;
        }
    }
    let cur = shard.topics();
    next.version = cur.version + 1;
    next.deleting = cur.deleting.clone();
    let me = shard.node_id();
    for m in next.topics.values() {
        let fresh = |p: u32| {
            cur.topics
                .get(&m.name)
                .is_none_or(|c| c.id != m.id || p >= c.partitions)
        };
        let mine: Vec<u32> = (0..m.partitions)
            .filter(|p| fresh(*p) && m.assignment.get(*p as usize).map(|a| a.node) == me)
            .collect();
        for p in mine {
            move_aside_leftovers(shard, &m.name, p..p + 1)?;
        }
    }
    persist(shard, &next)?;
    broadcast(shard, Arc::new(next)).await;
    Ok(())
}

/// Store the table (on a full disk, through the space reserve: see
/// [`crate::metadata::reserve`]).
fn persist(shard: &Rc<Shard>, table: &TopicTable) -> Result<(), AdminError> {
    table
        .persist(&shard.config.data_dir)
        .map_err(|e| AdminError::Storage(Arc::new(e)))
}

/// Partitions about to be created must start empty: a directory already
/// there under their name (a deleted or forgotten topic's, whatever its
/// identity) is moved aside into `stale/`, never adopted. Done before the
/// table names the new partitions, so a crash leaves either the old
/// directory in place and no new topic, or the directory aside.
fn move_aside_leftovers(
    shard: &Rc<Shard>,
    topic: &str,
    partitions: std::ops::Range<u32>,
) -> Result<(), AdminError> {
    let data_dir = &shard.config.data_dir;
    for p in partitions {
        let dir = metadata::partition_dir(data_dir, topic, p);
        if !dir.exists() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("partition directory names are ASCII")
            .to_string();
        let found = identity::read(&dir).ok().flatten();
        let to = identity::move_aside(data_dir, &name, shard.clock.wall_ms()).map_err(|e| {
            AdminError::LeftoverInTheWay {
                dir: dir.clone(),
                cause: Arc::new(e),
            }
        })?;
        warn!(
            "a directory {} was already there (identity: {}); it is not adopted: moved aside to {}",
            dir.display(),
            found.map_or("none".to_string(), |i| i.to_string()),
            to.display()
        );
    }
    Ok(())
}

/// After the shards removed a deleted topic's directories: drop its
/// `deleting` entry (if nothing is left of it). Failure here is harmless:
/// the next start finishes the delete.
async fn finish_delete(shard: &Rc<Shard>, name: &str) {
    let cur = shard.topics();
    let data_dir = &shard.config.data_dir;
    let mut next: TopicTable = (*cur).clone();
    // Directories the shards could not remove stay listed, for the next start.
    next.deleting
        .retain(|d| d.name != name || !startup::remove_deleted_dirs(data_dir, d));
    if next.deleting.len() == cur.deleting.len() {
        return;
    }
    next.version += 1;
    match next.persist(data_dir) {
        Ok(()) => broadcast(shard, Arc::new(next)).await,
        Err(e) => {
            warn!(topic = %name, "topic deleted, but its deleting entry stays until the next start: {e}")
        }
    }
}

/// Keep the metadata space reserve filled while there is room (after a
/// delete that freed space, or on a quiet disk): the next metadata write
/// on a full disk needs it.
pub fn refill_reserve(shard: &Rc<Shard>) {
    match reserve::refill(&shard.config.data_dir) {
        Ok(true) => info!("metadata space reserve made again"),
        Ok(false) => {}
        Err(e) if e.is_no_space() => debug!("no room for the metadata space reserve yet"),
        Err(e) => warn!("cannot make the metadata space reserve: {e}"),
    }
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
