//! Committed offsets in shardlog's first `__consumer_offsets` encoding,
//! read so a data directory written before the Kafka format keeps its
//! offsets (docs/consumer-offsets.md, "Migration").
//!
//! The old encoding: key = the group id (UTF-8), value = a JSON
//! [`LegacyRecord`], or no value (DeleteGroups' tombstone: every earlier
//! commit of the group goes). A group lived in partition
//! `fnv1a(group) % partitions`; it now belongs to Kafka's partition
//! (`abs(javaHash(group)) % partitions`), which may be another one, owned by
//! another shard. So each shard scans the offsets partitions it owns once,
//! keeps the old records' final state per group, and hands each group's
//! offsets to the coordinator of its new partition when that partition
//! loads ([`LegacyIndex::take`]); the coordinator applies them before its
//! own partition's Kafka-format records, which are all newer. The offsets
//! are rewritten in Kafka's format at the group's next commit.
//!
//! Lifecycle: one index per coordinator (per shard), built on the first
//! `take`; entries leave it as they are taken, so it ends empty.

use super::offsets::{scan, ScanRecord};
use super::records;
use super::{Committed, GroupError, OFFSETS_TOPIC};
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use tracing::{info, warn};

/// The value of one record in the old encoding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyRecord {
    /// Format version of this document (always 1).
    pub v: u32,
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
    /// OffsetDelete: this committed offset is gone (`offset` is then -1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One group's offsets from old records: (topic, partition) -> offset.
pub type LegacyOffsets = BTreeMap<(String, i32), Committed>;

/// Whether a record is in the old encoding: its key is not a Kafka key (a
/// Kafka key starts with a version 0..=8 and decodes exactly; a group id
/// would need to start with a NUL byte to pass for one).
pub fn is_legacy(key: Option<&bytes::Bytes>) -> bool {
    match key {
        None => false,
        Some(k) => records::decode_key(k).is_err(),
    }
}

#[derive(Default)]
pub struct LegacyIndex {
    /// None until built; then Kafka partition -> group -> its old offsets.
    by_partition: RefCell<Option<HashMap<u32, HashMap<String, LegacyOffsets>>>>,
    build_lock: futures::lock::Mutex<()>,
}

impl LegacyIndex {
    /// The old-encoding offsets of the groups that belong to offsets
    /// partition `partition` (of `partitions`), from the offsets partitions
    /// this shard owns; each group is handed out once.
    pub async fn take(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        partitions: u32,
    ) -> Result<Vec<(String, LegacyOffsets)>, GroupError> {
        if self.by_partition.borrow().is_none() {
            let _guard = self.build_lock.lock().await;
            if self.by_partition.borrow().is_none() {
                let built = build(shard, partitions).await?;
                *self.by_partition.borrow_mut() = Some(built);
            }
        }
        let mut all = self.by_partition.borrow_mut();
        let groups = all
            .as_mut()
            .expect("built above")
            .remove(&partition)
            .unwrap_or_default();
        Ok(groups.into_iter().collect())
    }
}

/// Read every offsets partition this shard owns and keep the final state of
/// its old-encoding records, grouped by the groups' Kafka partitions.
async fn build(
    shard: &Rc<Shard>,
    partitions: u32,
) -> Result<HashMap<u32, HashMap<String, LegacyOffsets>>, GroupError> {
    let mut groups: HashMap<String, LegacyOffsets> = HashMap::new();
    let mut records_read = 0usize;
    // A replicated offsets partition is a cluster's, made after the first
    // encoding was gone (and readable only where it leads).
    let unreplicated = |q: &u32| !super::leadership::replicated(shard, *q);
    for q in (0..partitions).filter(|q| shard.owns_partition(OFFSETS_TOPIC, *q) && unreplicated(q))
    {
        scan(shard, q, |r: ScanRecord| {
            if !is_legacy(r.key.as_ref()) {
                return;
            }
            let key = r.key.as_ref().expect("legacy records have keys");
            match r.value {
                None => {
                    // DeleteGroups' tombstone: the group's earlier commits go.
                    if let Ok(group) = std::str::from_utf8(key) {
                        groups.remove(group);
                    }
                }
                Some(v) => match serde_json::from_slice::<LegacyRecord>(&v) {
                    Ok(c) => {
                        records_read += 1;
                        let g = groups.entry(c.group).or_default();
                        if c.deleted {
                            g.remove(&(c.topic, c.partition));
                        } else {
                            g.insert(
                                (c.topic, c.partition),
                                Committed {
                                    offset: c.offset,
                                    leader_epoch: c.leader_epoch,
                                    metadata: c.metadata,
                                },
                            );
                        }
                    }
                    Err(e) => warn!(
                        partition = q,
                        offset = r.offset,
                        "kafka: skipping an unreadable old-encoding offset commit record: {e}"
                    ),
                },
            }
        })
        .await?;
    }
    if records_read > 0 {
        info!(
            records = records_read,
            groups = groups.len(),
            "kafka: committed offsets in the old encoding found; they are rewritten in Kafka's format at each group's next commit"
        );
    }
    let mut out: HashMap<u32, HashMap<String, LegacyOffsets>> = HashMap::new();
    for (group, offsets) in groups {
        if offsets.is_empty() {
            continue;
        }
        let p = records::kafka_partition_of(&group, partitions);
        out.entry(p).or_default().insert(group, offsets);
    }
    Ok(out)
}
