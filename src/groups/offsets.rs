//! Committed offsets: an in-memory table per coordinator shard, backed by
//! the `__consumer_offsets` partitions that shard owns.
//!
//! A commit is one batch appended to the group's offsets partition (one
//! record per committed partition, key = group id, value = a small JSON
//! document) and waited on until durable; only then is the table updated,
//! so OffsetFetch never shows an offset a crash could take back. Each entry
//! remembers the log offset that wrote it, so concurrent commits settle in
//! log order whatever order their fsync waits finish in.
//!
//! After a start, the table of an offsets partition is rebuilt by reading
//! the partition from its start, the first time any of its groups needs it;
//! requests for its groups wait for that.
//!
//! The log is never compacted: replay time grows with the number of commits
//! since the partition's retention last deleted a segment.

use super::{Committed, GroupError, OffsetMap, Unavailable, OFFSETS_TOPIC};
use crate::format::frame;
use crate::format::{read_records, BatchBuilder, Compression, ProducerIds};
use crate::protocol::messages::Acks;
use crate::router::ops::{OpError, ProducePart};
use crate::shard::Shard;
use crate::storage::now_ms;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use tracing::{error, info, warn};

/// How long a commit may wait for its fsync.
const COMMIT_TIMEOUT_MS: u32 = 30_000;
/// Bytes per read while replaying.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// Decompressed size bound for one replayed batch.
const REPLAY_BATCH_BYTES_MAX: usize = 64 << 20;
/// Committed partitions per group remembered; more are refused.
pub const PARTITIONS_PER_GROUP_MAX: usize = 100_000;

/// The value of one record in `__consumer_offsets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitRecord {
    /// Format version of this document.
    pub v: u32,
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
    /// OffsetDelete: this (group, topic, partition)'s committed offset is
    /// gone from here on (`offset` is then -1). Absent in older records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    committed: Committed,
    /// Offset in the offsets log of the record that wrote this entry.
    log_offset: u64,
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct CommitItem {
    pub topic: String,
    pub partition: i32,
    pub committed: Committed,
}

/// (topic, partition) -> entry, for one group.
type GroupOffsets = HashMap<(String, i32), Entry>;

#[derive(Default)]
pub struct OffsetStore {
    /// group -> its offsets.
    table: RefCell<HashMap<String, GroupOffsets>>,
    loaded: RefCell<HashSet<u32>>,
    load_lock: futures::lock::Mutex<()>,
}

impl OffsetStore {
    fn apply(
        &self,
        group: &str,
        topic: String,
        partition: i32,
        committed: Committed,
        log_offset: u64,
    ) {
        let mut t = self.table.borrow_mut();
        let g = t.entry(group.to_string()).or_default();
        let key = (topic, partition);
        if g.get(&key).is_some_and(|e| e.log_offset > log_offset) {
            return; // a later commit already landed
        }
        g.insert(
            key,
            Entry {
                committed,
                log_offset,
            },
        );
    }

    /// Make sure the table holds everything offsets partition `partition` stores.
    pub async fn ensure_loaded(&self, shard: &Rc<Shard>, partition: u32) -> Result<(), GroupError> {
        if self.loaded.borrow().contains(&partition) {
            return Ok(());
        }
        let _guard = self.load_lock.lock().await;
        if self.loaded.borrow().contains(&partition) {
            return Ok(());
        }
        let n = self.replay(shard, partition).await?;
        if n > 0 {
            info!(partition, records = n, "kafka: committed offsets replayed");
        }
        self.loaded.borrow_mut().insert(partition);
        Ok(())
    }

    async fn replay(&self, shard: &Rc<Shard>, partition: u32) -> Result<usize, GroupError> {
        let log = shard
            .partition(OFFSETS_TOPIC, partition)
            .map_err(op_error)?;
        let end = log.log_end_offset();
        let mut at = log.log_start_offset();
        let mut records = 0;
        while at < end {
            let r = log
                .read(at, REPLAY_READ_BYTES)
                .await
                .map_err(GroupError::Replay)?;
            if r.frames.is_empty() {
                break;
            }
            for f in &r.frames {
                let (h, recs) = match read_records(f, REPLAY_BATCH_BYTES_MAX) {
                    Ok(x) => x,
                    Err(e) => {
                        // Storage validated the frame; only its records do not
                        // decode. Losing the commits of one batch beats
                        // refusing every group of the partition forever.
                        let h = frame::parse_header(f).map_err(|e| {
                            GroupError::CoordinatorUnavailable(Unavailable::UnreadableBatch {
                                partition,
                                cause: e,
                            })
                        })?;
                        error!(
                            partition,
                            base_offset = h.base_offset,
                            "kafka: skipping an undecodable batch of committed offsets: {e}"
                        );
                        at = at.max(h.last_offset() + 1);
                        continue;
                    }
                };
                for rec in recs {
                    if rec.offset < at {
                        continue;
                    }
                    let Some(value) = rec.value else {
                        // A tombstone keyed by a group id: the group was
                        // deleted (DeleteGroups); its earlier commits go.
                        if let Some(group) =
                            rec.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
                        {
                            self.forget(group, rec.offset);
                        }
                        continue;
                    };
                    match serde_json::from_slice::<CommitRecord>(&value) {
                        Ok(c) if c.deleted => {
                            records += 1;
                            self.forget_one(&c.group, c.topic, c.partition, rec.offset);
                        }
                        Ok(c) => {
                            records += 1;
                            self.apply(
                                &c.group,
                                c.topic,
                                c.partition,
                                Committed {
                                    offset: c.offset,
                                    leader_epoch: c.leader_epoch,
                                    metadata: c.metadata,
                                },
                                rec.offset,
                            );
                        }
                        Err(e) => {
                            warn!(
                                partition,
                                offset = rec.offset,
                                "kafka: skipping an unreadable offset commit record: {e}"
                            )
                        }
                    }
                }
                at = at.max(h.last_offset() + 1);
            }
        }
        Ok(records)
    }

    /// Append a commit durably, then apply it.
    pub async fn commit(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
        items: Vec<CommitItem>,
    ) -> Result<(), GroupError> {
        if items.is_empty() {
            return Ok(());
        }
        let known = self.table.borrow().get(group).map(|g| g.len()).unwrap_or(0);
        if known + items.len() > PARTITIONS_PER_GROUP_MAX {
            return Err(GroupError::GroupFull);
        }
        let now = now_ms();
        let mut b = BatchBuilder::new();
        for it in &items {
            let rec = CommitRecord {
                v: 1,
                group: group.to_string(),
                topic: it.topic.clone(),
                partition: it.partition,
                offset: it.committed.offset,
                leader_epoch: it.committed.leader_epoch,
                metadata: it.committed.metadata.clone(),
                commit_ms: now,
                deleted: false,
            };
            let value = serde_json::to_vec(&rec).expect("a commit record serialises");
            b.push(now, Some(group.as_bytes()), Some(&value), &[]);
        }
        let outcome = append(shard, partition, b).await?;
        for (i, it) in items.into_iter().enumerate() {
            self.apply(
                group,
                it.topic,
                it.partition,
                it.committed,
                outcome.base_offset + i as u64,
            );
        }
        Ok(())
    }

    /// Whether any committed offset of `group` is known.
    pub fn has_group(&self, group: &str) -> bool {
        self.table
            .borrow()
            .get(group)
            .is_some_and(|g| !g.is_empty())
    }

    /// Drop one committed offset of `group` if written before `log_offset`.
    fn forget_one(&self, group: &str, topic: String, partition: i32, log_offset: u64) {
        let mut t = self.table.borrow_mut();
        if let Some(g) = t.get_mut(group) {
            let key = (topic, partition);
            if g.get(&key).is_some_and(|e| e.log_offset < log_offset) {
                g.remove(&key);
            }
            if g.is_empty() {
                t.remove(group);
            }
        }
    }

    /// OffsetDelete: remove these committed offsets of `group`, durably
    /// (one record per partition marked `deleted`, which replay honours).
    /// Partitions with no committed offset need no record.
    pub async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
        parts: &[(String, i32)],
    ) -> Result<(), GroupError> {
        let present: Vec<&(String, i32)> = {
            let t = self.table.borrow();
            let g = t.get(group);
            parts
                .iter()
                .filter(|k| g.is_some_and(|g| g.contains_key(*k)))
                .collect()
        };
        if present.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut b = BatchBuilder::new();
        for (topic, p) in &present {
            let rec = CommitRecord {
                v: 1,
                group: group.to_string(),
                topic: topic.clone(),
                partition: *p,
                offset: -1,
                leader_epoch: -1,
                metadata: None,
                commit_ms: now,
                deleted: true,
            };
            let value = serde_json::to_vec(&rec).expect("a commit record serialises");
            b.push(now, Some(group.as_bytes()), Some(&value), &[]);
        }
        let outcome = append(shard, partition, b).await?;
        for (i, (topic, p)) in present.into_iter().enumerate() {
            self.forget_one(group, topic.clone(), *p, outcome.base_offset + i as u64);
        }
        Ok(())
    }

    /// Drop `group`'s commits written before `log_offset`.
    fn forget(&self, group: &str, log_offset: u64) {
        let mut t = self.table.borrow_mut();
        if let Some(g) = t.get_mut(group) {
            g.retain(|_, e| e.log_offset > log_offset);
            if g.is_empty() {
                t.remove(group);
            }
        }
    }

    /// Delete every committed offset of `group`, durably: a tombstone (key
    /// = group id, no value) in its offsets partition, which replay honours.
    pub async fn delete_group(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
    ) -> Result<(), GroupError> {
        if !self.has_group(group) {
            return Ok(());
        }
        let mut b = BatchBuilder::new();
        b.push(now_ms(), Some(group.as_bytes()), None, &[]);
        let outcome = append(shard, partition, b).await?;
        self.forget(group, outcome.base_offset);
        Ok(())
    }

    /// Committed offsets of a group: every one, or those of `wanted`.
    pub fn fetch(&self, group: &str, wanted: Option<&[(String, Vec<i32>)]>) -> OffsetMap {
        let t = self.table.borrow();
        let g = t.get(group);
        let mut out = OffsetMap::new();
        match wanted {
            None => {
                for ((topic, p), e) in g.into_iter().flatten() {
                    out.entry(topic.clone())
                        .or_default()
                        .insert(*p, e.committed.clone());
                }
            }
            Some(w) => {
                for (topic, parts) in w {
                    for p in parts {
                        if let Some(e) = g.and_then(|g| g.get(&(topic.clone(), *p))) {
                            out.entry(topic.clone())
                                .or_default()
                                .insert(*p, e.committed.clone());
                        }
                    }
                }
            }
        }
        out
    }
}

/// Append one batch to an offsets partition and wait until it is durable.
async fn append(
    shard: &Rc<Shard>,
    partition: u32,
    mut b: BatchBuilder,
) -> Result<crate::storage::AppendOutcome, GroupError> {
    let frame = b.finish(Compression::None, ProducerIds::NONE);
    let part = ProducePart {
        topic: OFFSETS_TOPIC.to_string(),
        partition,
        frames: vec![BytesMut::from(&frame[..])],
    };
    shard
        .produce(vec![part], Acks::All, COMMIT_TIMEOUT_MS)
        .await
        .into_iter()
        .next()
        .map(|r| r.result)
        .unwrap_or(Err(OpError::ShuttingDown))
        .map_err(op_error)
}

fn op_error(e: OpError) -> GroupError {
    match e {
        OpError::Storage(s) => GroupError::Storage(s),
        OpError::Append(a) => GroupError::Append(a),
        OpError::Read(r) => GroupError::Replay(r),
        OpError::Timeout(_) => GroupError::Timeout,
        // The offsets partition moved to another broker: so did the group.
        OpError::NotLeader { .. } => GroupError::NotCoordinator,
        other => GroupError::CoordinatorUnavailable(Unavailable::Offsets(other)),
    }
}
