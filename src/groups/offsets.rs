//! The coordinator's log: committed offsets and group membership, kept in
//! memory per coordinator shard and backed by the `__consumer_offsets`
//! partitions that shard owns, in Kafka's record format ([`super::records`],
//! docs/consumer-offsets.md).
//!
//! A commit is one batch appended to the group's offsets partition (one
//! record per committed partition: key = (group, topic, partition), value =
//! offset, leader epoch, metadata, commit time) and waited on until durable;
//! only then is the table updated, so OffsetFetch never shows an offset a
//! crash could take back. Each entry remembers the position of the record
//! that wrote it, so concurrent commits settle in log order whatever order
//! their fsync waits finish in. A group's membership is one record (key =
//! group) written after each completed rebalance and when the group empties;
//! deletions are records with no value (tombstones), as in Kafka.
//!
//! After a start, the table of an offsets partition is rebuilt by reading
//! the partition from its start to its high watermark, the first time any
//! of its groups needs it; requests for its groups wait for that
//! ([`super::with_coordinator`]). A replicated partition is read again in
//! every Raft term its replica here leads ([`super::leadership`]), and
//! forgotten ([`OffsetStore::unload`]) when it stops leading.
//! Offsets in shardlog's first encoding are read too ([`super::legacy`]).
//!
//! Consumer-protocol groups are stored as Kafka 4 stores them, one record
//! per group-level fact and per member fact (key types 3 to 8); replay
//! hands each group's final records to the coordinator
//! ([`super::consumer_store`]). Offsets expire as Kafka's
//! `offsets.retention.minutes` says ([`super::expiry`]): the store keeps
//! each entry's commit time for that.
//!
//! The log is never compacted: replay time grows with the number of commits
//! since the partition's retention last deleted a segment.

use super::consumer_store::StoredRecords;
use super::legacy::{self, LegacyIndex};
use super::records::{self, GroupValue, OffsetValue, RecordKey};
use super::{Committed, GroupError, OffsetMap, Unavailable, OFFSETS_TOPIC};
use crate::clock::Clock;
use crate::format::frame;
use crate::format::{read_records, BatchBuilder, Compression, ProducerIds};
use crate::protocol::messages::Acks;
use crate::router::ops::{OpError, ProducePart};
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
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
/// Old-encoding offsets rewritten in Kafka's format along with one commit
/// (the rest go with the group's next commits), so a commit's batch stays
/// small.
const LEGACY_REWRITE_PER_COMMIT_MAX: usize = 1_000;

#[derive(Debug, Clone)]
struct Entry {
    committed: Committed,
    /// Where the record that wrote this entry sits: its offset in the
    /// offsets log + 1, or 0 for an offset read in the old encoding (older
    /// than every Kafka-format record).
    seq: u64,
    /// The record's commit timestamp (wall ms; for the old encoding, when
    /// this process read it): the base of its expiry.
    commit_ms: i64,
}

impl Entry {
    fn is_legacy(&self) -> bool {
        self.seq == 0
    }
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

/// One record of an offsets partition, as [`scan`] hands it out.
pub struct ScanRecord {
    pub offset: u64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// What loading an offsets partition found for the coordinator to restore.
#[derive(Default)]
pub struct Restored {
    /// Classic groups: group -> its last stored membership.
    pub classic: Vec<(String, GroupValue)>,
    /// Consumer-protocol groups: group -> its live records.
    pub consumer: Vec<(String, StoredRecords)>,
}

impl Restored {
    pub fn is_empty(&self) -> bool {
        self.classic.is_empty() && self.consumer.is_empty()
    }
}

/// Lifecycle: one per coordinator (so per shard, on that shard's core),
/// for the life of the process; an offsets partition's share is filled on
/// its first use and kept up to date by every write after that.
pub struct OffsetStore {
    /// group -> its offsets.
    table: RefCell<HashMap<String, GroupOffsets>>,
    /// Memberships replayed but not yet taken by the coordinator.
    restored: RefCell<HashMap<String, GroupValue>>,
    /// Consumer-group records replayed but not yet taken.
    restored_consumer: RefCell<HashMap<String, StoredRecords>>,
    loaded: RefCell<HashSet<u32>>,
    load_lock: futures::lock::Mutex<()>,
    /// Old-encoding offsets in the partitions this shard owns.
    pub(super) legacy: LegacyIndex,
    /// The coordinator's clock: commit timestamps are its wall time.
    clock: Rc<dyn Clock>,
}

impl OffsetStore {
    pub fn new(clock: Rc<dyn Clock>) -> Self {
        OffsetStore {
            table: RefCell::default(),
            restored: RefCell::default(),
            restored_consumer: RefCell::default(),
            loaded: RefCell::default(),
            load_lock: futures::lock::Mutex::new(()),
            legacy: LegacyIndex::default(),
            clock,
        }
    }

    fn apply(
        &self,
        group: &str,
        topic: String,
        partition: i32,
        committed: Committed,
        seq: u64,
        commit_ms: i64,
    ) {
        let mut t = self.table.borrow_mut();
        let g = t.entry(group.to_string()).or_default();
        let key = (topic, partition);
        if g.get(&key).is_some_and(|e| e.seq > seq) {
            return; // a later commit already landed
        }
        g.insert(
            key,
            Entry {
                committed,
                seq,
                commit_ms,
            },
        );
    }

    /// Make sure the table holds everything offsets partition `partition`
    /// (of `partitions`) stores. The first time, returns the groups found
    /// there, for the coordinator to restore; afterwards, nothing.
    pub async fn ensure_loaded(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        partitions: u32,
    ) -> Result<Restored, GroupError> {
        if self.loaded.borrow().contains(&partition) {
            return Ok(Restored::default());
        }
        let _guard = self.load_lock.lock().await;
        if self.loaded.borrow().contains(&partition) {
            return Ok(Restored::default());
        }
        let migrated = self.load_legacy(shard, partition, partitions).await?;
        let n = self.replay(shard, partition).await?;
        if n > 0 || migrated > 0 {
            info!(
                partition,
                records = n,
                old_encoding_offsets = migrated,
                "kafka: committed offsets and groups replayed"
            );
        }
        self.loaded.borrow_mut().insert(partition);
        Ok(Restored {
            classic: self.restored.borrow_mut().drain().collect(),
            consumer: self.restored_consumer.borrow_mut().drain().collect(),
        })
    }

    /// The offsets partitions loaded so far.
    pub fn loaded_partitions(&self) -> Vec<u32> {
        self.loaded.borrow().iter().copied().collect()
    }

    /// Forget offsets partition `partition` (of `partitions`): its groups'
    /// offsets go, and the next [`Self::ensure_loaded`] replays it.
    pub fn unload(&self, partition: u32, partitions: u32) {
        self.loaded.borrow_mut().remove(&partition);
        self.table
            .borrow_mut()
            .retain(|g, _| super::partition_of(g, partitions) != partition);
    }

    /// Apply the old-encoding offsets of this partition's groups, wherever
    /// (on whichever shard) they were stored. Returns how many.
    async fn load_legacy(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        partitions: u32,
    ) -> Result<usize, GroupError> {
        let per_shard = futures::future::join_all((0..shard.shards()).map(|s| {
            shard.call_on(s, move |sh: Rc<Shard>| async move {
                let c = super::Coordinator::get(&sh);
                c.offsets.legacy.take(&sh, partition, partitions).await
            })
        }))
        .await;
        let mut n = 0;
        // The old encoding's commit times are not kept: their expiry counts
        // from now, when this process first read them.
        let now_ms = self.clock.wall_ms();
        for got in per_shard {
            let got = got.ok_or(GroupError::CoordinatorUnavailable(
                Unavailable::ShuttingDown,
            ))??;
            for (group, offsets) in got {
                for ((topic, p), committed) in offsets {
                    n += 1;
                    self.apply(&group, topic, p, committed, 0, now_ms);
                }
            }
        }
        Ok(n)
    }

    async fn replay(&self, shard: &Rc<Shard>, partition: u32) -> Result<usize, GroupError> {
        let mut records = 0;
        scan(shard, partition, |r| {
            if legacy::is_legacy(r.key.as_ref()) {
                return; // read by the legacy index
            }
            let Some(key) = r.key else {
                warn!(
                    partition,
                    offset = r.offset,
                    "kafka: skipping a record without a key in {OFFSETS_TOPIC}"
                );
                return;
            };
            let seq = r.offset + 1;
            let key = records::decode_key(&key).expect("not legacy, so a Kafka key");
            let result = match (key, r.value) {
                (
                    RecordKey::Offset {
                        group,
                        topic,
                        partition: p,
                    },
                    Some(v),
                ) => records::decode_offset_value(&v).map(|v| {
                    let at = v.commit_timestamp_ms;
                    self.apply(&group, topic, p, committed_of(v), seq, at);
                }),
                (
                    RecordKey::Offset {
                        group,
                        topic,
                        partition: p,
                    },
                    None,
                ) => {
                    self.forget_one(&group, topic, p, seq);
                    Ok(())
                }
                (RecordKey::Group { group }, Some(v)) => records::decode_group_value(&v).map(|v| {
                    self.restored.borrow_mut().insert(group, v);
                }),
                (RecordKey::Group { group }, None) => {
                    self.restored.borrow_mut().remove(&group);
                    Ok(())
                }
                (
                    RecordKey::Consumer {
                        kind,
                        group,
                        member,
                    },
                    value,
                ) => {
                    // Decoded here only to refuse what the coordinator
                    // could not restore; kept as bytes.
                    let ok = value
                        .as_ref()
                        .map(|v| records::decode_consumer_value(kind, v).map(|_| ()))
                        .unwrap_or(Ok(()));
                    ok.map(|()| {
                        let key = RecordKey::Consumer {
                            kind,
                            group: group.clone(),
                            member,
                        };
                        let mut all = self.restored_consumer.borrow_mut();
                        let g = all.entry(group.clone()).or_default();
                        match value {
                            Some(v) => {
                                g.insert(key, (seq, v));
                            }
                            None => {
                                g.remove(&key);
                                if g.is_empty() {
                                    all.remove(&group);
                                }
                            }
                        }
                    })
                }
            };
            match result {
                Ok(()) => records += 1,
                Err(e) => warn!(
                    partition,
                    offset = r.offset,
                    "kafka: skipping an unreadable {OFFSETS_TOPIC} record: {e}"
                ),
            }
        })
        .await?;
        Ok(records)
    }

    /// Append a commit durably, then apply it. Offsets of the group still
    /// known only in the old encoding are rewritten in Kafka's format in
    /// the same batch.
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
        let mut all: Vec<CommitItem> = items
            .into_iter()
            .map(|mut it| {
                // Kafka stores a null metadata as "" and answers "" for it.
                it.committed.metadata = Some(it.committed.metadata.unwrap_or_default());
                it
            })
            .collect();
        all.extend(self.legacy_of(group, &all));
        let now = self.clock.wall_ms();
        self.write_offsets(shard, partition, group, all, now).await
    }

    /// Append offset commit records durably, each stamped `commit_ms`,
    /// then apply them.
    async fn write_offsets(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
        items: Vec<CommitItem>,
        commit_ms: i64,
    ) -> Result<(), GroupError> {
        let mut b = BatchBuilder::new();
        for it in &items {
            let key = records::encode_key(&RecordKey::Offset {
                group: group.to_string(),
                topic: it.topic.clone(),
                partition: it.partition,
            });
            let value = records::encode_offset_value(&OffsetValue {
                offset: it.committed.offset,
                leader_epoch: it.committed.leader_epoch,
                metadata: it.committed.metadata.clone().unwrap_or_default(),
                commit_timestamp_ms: commit_ms,
                expire_timestamp_ms: -1,
            });
            b.push(self.clock.wall_ms(), Some(&key), Some(&value), &[]);
        }
        let outcome = append(shard, partition, b).await?;
        for (i, it) in items.into_iter().enumerate() {
            self.apply(
                group,
                it.topic,
                it.partition,
                it.committed,
                outcome.base_offset + i as u64 + 1,
                commit_ms,
            );
        }
        Ok(())
    }

    /// The group's offsets still known only in the old encoding (up to a
    /// bound), other than those `items` commits anew.
    fn legacy_of(&self, group: &str, items: &[CommitItem]) -> Vec<CommitItem> {
        let t = self.table.borrow();
        let Some(g) = t.get(group) else {
            return Vec::new();
        };
        g.iter()
            .filter(|(_, e)| e.is_legacy())
            .filter(|((topic, p), _)| !items.iter().any(|i| &i.topic == topic && i.partition == *p))
            .take(LEGACY_REWRITE_PER_COMMIT_MAX)
            .map(|((topic, p), e)| CommitItem {
                topic: topic.clone(),
                partition: *p,
                committed: e.committed.clone(),
            })
            .collect()
    }

    /// Store a group's membership durably (key = group; `None`: a tombstone).
    pub async fn store_group(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
        value: Option<&GroupValue>,
    ) -> Result<(), GroupError> {
        let key = records::encode_key(&RecordKey::Group {
            group: group.to_string(),
        });
        let value = value.map(records::encode_group_value);
        let mut b = BatchBuilder::new();
        b.push(self.clock.wall_ms(), Some(&key), value.as_deref(), &[]);
        append(shard, partition, b).await?;
        Ok(())
    }

    /// Append records (key, value or None for a tombstone) in one batch
    /// and wait until they are durable. Returns the first one's offset:
    /// the i-th sits at that + i.
    pub async fn write_records(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        recs: &[(RecordKey, Option<Bytes>)],
    ) -> Result<u64, GroupError> {
        assert!(!recs.is_empty(), "an empty batch of group records");
        let now = self.clock.wall_ms();
        let mut b = BatchBuilder::new();
        for (k, v) in recs {
            b.push(now, Some(&records::encode_key(k)), v.as_deref(), &[]);
        }
        Ok(append(shard, partition, b).await?.base_offset)
    }

    /// Whether any committed offset of `group` is known.
    pub fn has_group(&self, group: &str) -> bool {
        self.table
            .borrow()
            .get(group)
            .is_some_and(|g| !g.is_empty())
    }

    /// Drop one committed offset of `group` if written before `seq`.
    fn forget_one(&self, group: &str, topic: String, partition: i32, seq: u64) {
        let mut t = self.table.borrow_mut();
        if let Some(g) = t.get_mut(group) {
            let key = (topic, partition);
            if g.get(&key).is_some_and(|e| e.seq < seq) {
                g.remove(&key);
            }
            if g.is_empty() {
                t.remove(group);
            }
        }
    }

    /// Remove these committed offsets of `group` durably: one tombstone per
    /// partition (OffsetDelete; DeleteGroups for all of them). Partitions
    /// with no committed offset need none.
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
        let base = self
            .write_tombstones(shard, partition, group, present.iter().copied())
            .await?;
        for (i, (topic, p)) in present.into_iter().enumerate() {
            self.forget_one(group, topic.clone(), *p, base + i as u64 + 1);
        }
        Ok(())
    }

    /// Append one offset tombstone per partition, durably; returns the
    /// first one's offset.
    async fn write_tombstones<'a>(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
        parts: impl Iterator<Item = &'a (String, i32)>,
    ) -> Result<u64, GroupError> {
        let now = self.clock.wall_ms();
        let mut b = BatchBuilder::new();
        for (topic, p) in parts {
            let key = records::encode_key(&RecordKey::Offset {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *p,
            });
            b.push(now, Some(&key), None, &[]);
        }
        Ok(append(shard, partition, b).await?.base_offset)
    }

    /// Expire these committed offsets of `group`: tombstones, as
    /// [`Self::delete_offsets`]; but an offset committed anew while they
    /// were written sits before its tombstone in the log, which would
    /// delete it, so it is written again after them (with its commit
    /// time): expiry never takes a commit it did not decide on.
    pub async fn expire(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group: &str,
        parts: &[(String, i32)],
    ) -> Result<(), GroupError> {
        // Each expiring offset with the position of the record decided on.
        let decided: Vec<((String, i32), u64)> = {
            let t = self.table.borrow();
            let Some(g) = t.get(group) else {
                return Ok(());
            };
            parts
                .iter()
                .filter_map(|k| Some((k.clone(), g.get(k)?.seq)))
                .collect()
        };
        if decided.is_empty() {
            return Ok(());
        }
        let base = self
            .write_tombstones(shard, partition, group, decided.iter().map(|(k, _)| k))
            .await?;
        let mut revived: Vec<(CommitItem, i64)> = Vec::new();
        for (i, ((topic, p), seq)) in decided.into_iter().enumerate() {
            let tomb_seq = base + i as u64 + 1;
            let now_there = self
                .table
                .borrow()
                .get(group)
                .and_then(|g| g.get(&(topic.clone(), p)).cloned());
            match now_there {
                // Committed anew before the tombstone: write it again.
                Some(e) if e.seq != seq && e.seq < tomb_seq => revived.push((
                    CommitItem {
                        topic,
                        partition: p,
                        committed: e.committed,
                    },
                    e.commit_ms,
                )),
                // Committed after the tombstone: it stands.
                Some(e) if e.seq != seq => {}
                _ => self.forget_one(group, topic, p, tomb_seq),
            }
        }
        for (it, commit_ms) in revived {
            let (topic, p) = (it.topic.clone(), it.partition);
            if let Err(e) = self
                .write_offsets(shard, partition, group, vec![it], commit_ms)
                .await
            {
                // The log deletes it now: so does memory.
                self.forget_one(group, topic, p, u64::MAX);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Every (topic, partition) of `group` with a committed offset, with
    /// its commit timestamp (wall ms).
    pub fn commit_times(&self, group: &str) -> Vec<((String, i32), i64)> {
        self.table
            .borrow()
            .get(group)
            .map(|g| g.iter().map(|(k, e)| (k.clone(), e.commit_ms)).collect())
            .unwrap_or_default()
    }

    /// Every group with a committed offset, in offsets partition
    /// `partition` of `partitions`.
    pub fn groups_in(&self, partition: u32, partitions: u32) -> Vec<String> {
        self.table
            .borrow()
            .keys()
            .filter(|g| super::partition_of(g, partitions) == partition)
            .cloned()
            .collect()
    }

    /// Every (topic, partition) of `group` with a committed offset.
    pub fn partitions_of(&self, group: &str) -> Vec<(String, i32)> {
        self.table
            .borrow()
            .get(group)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
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

fn committed_of(v: OffsetValue) -> Committed {
    Committed {
        offset: v.offset,
        leader_epoch: v.leader_epoch,
        metadata: Some(v.metadata),
    }
}

/// Read offsets partition `partition` from its start to its high
/// watermark, handing every record to `f` in log order. Only what is
/// committed: on a replicated partition's leader the log may hold
/// entries past it that a failover would replace. A batch whose records do not decode is
/// skipped with an error logged: losing the commits of one batch beats
/// refusing every group of the partition forever.
pub async fn scan(
    shard: &Rc<Shard>,
    partition: u32,
    mut f: impl FnMut(ScanRecord),
) -> Result<(), GroupError> {
    let log = shard
        .partition(OFFSETS_TOPIC, partition)
        .map_err(op_error)?;
    let end = log.high_watermark();
    let mut at = log.log_start_offset();
    while at < end {
        let r = log
            .read(at, REPLAY_READ_BYTES)
            .await
            .map_err(GroupError::Replay)?;
        if r.frames.is_empty() {
            break;
        }
        for fr in &r.frames {
            let (h, recs) = match read_records(fr, REPLAY_BATCH_BYTES_MAX) {
                Ok(x) => x,
                Err(e) => {
                    let h = frame::parse_header(fr).map_err(|e| {
                        GroupError::CoordinatorUnavailable(Unavailable::UnreadableBatch {
                            partition,
                            cause: e,
                        })
                    })?;
                    error!(
                        partition,
                        base_offset = h.base_offset,
                        "kafka: skipping an undecodable batch of {OFFSETS_TOPIC}: {e}"
                    );
                    at = at.max(h.last_offset() + 1);
                    continue;
                }
            };
            for rec in recs {
                if rec.offset < at {
                    continue;
                }
                f(ScanRecord {
                    offset: rec.offset,
                    key: rec.key,
                    value: rec.value,
                });
            }
            at = at.max(h.last_offset() + 1);
        }
    }
    Ok(())
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
