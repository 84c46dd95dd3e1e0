//! How a consumer-protocol (KIP-848) group is stored: the group as Kafka 4
//! stores it, one record per fact (key types 3 to 8, [`super::records`]),
//! written after every change and read back after a restart.
//!
//! The coordinator keeps, per group, the records the log holds for it now
//! (key -> value and where it sits): after a change, the group's records
//! are computed anew from its state and compared with those; only the
//! differences are written (a record whose value changed, a tombstone for
//! one that no longer exists), in one batch, durable before the heartbeat
//! that caused them is answered. So a heartbeat that changes nothing
//! writes nothing, and a restart restores what members were last told.
//!
//! Order in a batch (Kafka's, so its own replay, which refuses to delete a
//! group that still has members, reads ours): members' tombstones first,
//! then new values (member metadata, partition metadata, group epoch,
//! targets, assignment epoch, current assignments), then the group-level
//! tombstones, the group epoch's last.
//!
//! Topics are named by id in the records (as in Kafka): a topic deleted,
//! or deleted and created again, is not the topic the record named, and
//! its partitions are dropped at restore.
//!
//! Lifecycle: one per coordinator, on its core; a group's entry is filled
//! by replay or by its first write and removed with its last tombstone.

use super::assignor::{Assignor, TopicPartitions};
use super::consumer_group::{ConsumerGroup, Member, MemberState};
use super::records::{
    self, ConsumerKind, ConsumerValue, CurrentAssignmentValue, IdPartitions, MemberMetadataValue,
    RecordKey, TopicId, TopicMetadata,
};
use crate::metadata::TopicTable;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::warn;

/// A group's records in the log: key -> (its offset + 1, value).
pub type StoredRecords = BTreeMap<RecordKey, (u64, Bytes)>;

/// Which records a change can have touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The group's and every member's.
    All,
    /// One member's own records (the group's epochs and membership did not
    /// move).
    Member(&'a str),
}

/// Epoch a static member that left is stored with (Kafka's
/// `LEAVE_GROUP_STATIC_MEMBER_EPOCH`); its own epoch goes in the previous
/// epoch field.
const STATIC_LEFT_EPOCH: i32 = -2;

/// Topic name <-> Kafka topic id, from the topic table.
pub struct TopicIds {
    by_name: HashMap<String, TopicId>,
    by_id: HashMap<TopicId, String>,
}

impl TopicIds {
    pub fn of(table: &TopicTable) -> Self {
        Self::from_pairs(
            table
                .topics
                .values()
                .map(|m| (m.name.clone(), topic_id(&m.id))),
        )
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, TopicId)>) -> Self {
        let by_name: HashMap<String, TopicId> = pairs.into_iter().collect();
        let by_id = by_name.iter().map(|(n, id)| (*id, n.clone())).collect();
        TopicIds { by_name, by_id }
    }
}

/// The topic table's hex id as Kafka's 16-byte id (as Metadata answers it).
fn topic_id(hex: &str) -> TopicId {
    u128::from_str_radix(hex, 16).unwrap_or(0).to_be_bytes()
}

fn key(kind: ConsumerKind, group: &str, member: Option<&str>) -> RecordKey {
    RecordKey::Consumer {
        kind,
        group: group.to_string(),
        member: member.map(String::from),
    }
}

fn by_id(t: &TopicPartitions, ids: &TopicIds) -> Vec<IdPartitions> {
    t.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .filter_map(|(name, ps)| {
            Some(IdPartitions {
                topic_id: *ids.by_name.get(name)?,
                partitions: ps.iter().copied().collect(),
            })
        })
        .collect()
}

fn by_name(t: &[IdPartitions], ids: &TopicIds) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for tp in t {
        if let Some(name) = ids.by_id.get(&tp.topic_id) {
            out.entry(name.clone())
                .or_default()
                .extend(tp.partitions.iter().copied());
        }
    }
    out
}

fn state_code(s: MemberState) -> i8 {
    match s {
        MemberState::Stable => 0,
        MemberState::UnrevokedPartitions => 1,
        MemberState::UnreleasedPartitions => 2,
    }
}

/// A member's three records.
fn member_records(
    g: &ConsumerGroup,
    m: &super::consumer_group::Member,
    ids: &TopicIds,
    out: &mut BTreeMap<RecordKey, Bytes>,
) {
    let meta = ConsumerValue::MemberMetadata(MemberMetadataValue {
        instance_id: m.instance_id.clone(),
        rack_id: m.rack_id.clone(),
        client_id: m.client_id.clone(),
        // The listener does not hand the peer address to the coordinator.
        client_host: String::new(),
        subscribed_topic_names: m.subscribed.iter().cloned().collect(),
        subscribed_topic_regex: None,
        rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
        server_assignor: m.assignor.map(|a| a.name().to_string()),
    });
    let target = ConsumerValue::TargetAssignment(by_id(&g.target_of(&m.id), ids));
    let (epoch, previous) = if m.departed() {
        (STATIC_LEFT_EPOCH, m.epoch)
    } else {
        (m.epoch, m.previous_epoch)
    };
    let current = ConsumerValue::CurrentAssignment(CurrentAssignmentValue {
        member_epoch: epoch,
        previous_member_epoch: previous,
        state: state_code(m.state),
        assigned: by_id(&m.assigned, ids),
        pending_revocation: by_id(&m.revoking, ids),
    });
    for v in [meta, target, current] {
        out.insert(
            key(v.kind(), &g.id, Some(&m.id)),
            records::encode_consumer_value(&v),
        );
    }
}

/// The records that describe `g` now, within `scope`.
pub fn records_of(g: &ConsumerGroup, ids: &TopicIds, scope: Scope) -> BTreeMap<RecordKey, Bytes> {
    let mut out = BTreeMap::new();
    match scope {
        Scope::Member(id) => {
            if let Some(m) = g.member(id) {
                member_records(g, m, ids, &mut out);
            }
        }
        Scope::All => {
            let topics = g
                .topics_seen()
                .iter()
                .filter_map(|(name, n)| {
                    Some(TopicMetadata {
                        topic_id: *ids.by_name.get(name)?,
                        name: name.clone(),
                        partitions: (*n).min(i32::MAX as u32) as i32,
                    })
                })
                .collect();
            for v in [
                ConsumerValue::GroupEpoch(g.group_epoch),
                ConsumerValue::PartitionMetadata(topics),
                ConsumerValue::AssignmentEpoch(g.assignment_epoch),
            ] {
                out.insert(
                    key(v.kind(), &g.id, None),
                    records::encode_consumer_value(&v),
                );
            }
            for m in g.members() {
                member_records(g, m, ids, &mut out);
            }
        }
    }
    out
}

fn in_scope(k: &RecordKey, scope: Scope) -> bool {
    match (k, scope) {
        (_, Scope::All) => true,
        (RecordKey::Consumer { member, .. }, Scope::Member(id)) => member.as_deref() == Some(id),
        _ => false,
    }
}

/// Where a record goes in a batch (see the file comment).
fn batch_rank(k: &RecordKey, tombstone: bool) -> u8 {
    use ConsumerKind::*;
    let RecordKey::Consumer { kind, .. } = k else {
        return 0; // a classic group's tombstone goes first
    };
    match (tombstone, kind) {
        (true, CurrentMemberAssignment) => 1,
        (true, TargetAssignmentMember) => 2,
        (true, MemberMetadata) => 3,
        (false, MemberMetadata) => 4,
        (false, PartitionMetadata) => 5,
        (false, Metadata) => 6,
        (false, TargetAssignmentMember) => 7,
        (false, TargetAssignmentMetadata) => 8,
        (false, CurrentMemberAssignment) => 9,
        (true, TargetAssignmentMetadata) => 10,
        (true, PartitionMetadata) => 11,
        (true, Metadata) => 12,
    }
}

/// Sort records into the batch order of the file comment.
pub fn batch_order(recs: &mut [(RecordKey, Option<Bytes>)]) {
    recs.sort_by_key(|(k, v)| batch_rank(k, v.is_none()));
}

/// The log's image of every consumer group of one coordinator.
#[derive(Default)]
pub struct ConsumerStore {
    stored: RefCell<HashMap<String, StoredRecords>>,
    /// Groups whose last write failed: their next one compares everything.
    dirty: RefCell<HashSet<String>>,
}

impl ConsumerStore {
    /// Forget the groups `gone` names (their offsets partition was
    /// unloaded: the next replay tells their records afresh).
    pub fn forget(&self, gone: impl Fn(&str) -> bool) {
        self.stored.borrow_mut().retain(|g, _| !gone(g));
        self.dirty.borrow_mut().retain(|g| !gone(g));
    }

    /// Take a group's records as replay found them.
    pub fn restored(&self, group: &str, recs: StoredRecords) {
        self.stored.borrow_mut().insert(group.to_string(), recs);
    }

    /// The records to write so the log describes `g` (None: the group is
    /// gone, so each record it has gets a tombstone), within `scope`, in
    /// batch order.
    pub fn diff(
        &self,
        group: &str,
        g: Option<&ConsumerGroup>,
        ids: &TopicIds,
        scope: Scope,
    ) -> Vec<(RecordKey, Option<Bytes>)> {
        let scope = if self.dirty.borrow().contains(group) {
            Scope::All
        } else {
            scope
        };
        let current = g.map(|g| records_of(g, ids, scope)).unwrap_or_default();
        let stored = self.stored.borrow();
        let empty = StoredRecords::new();
        let old = stored.get(group).unwrap_or(&empty);
        let gone: Vec<RecordKey> = old
            .keys()
            .filter(|k| in_scope(k, scope) && !current.contains_key(k))
            .cloned()
            .collect();
        let mut out: Vec<(RecordKey, Option<Bytes>)> = current
            .into_iter()
            .filter(|(k, v)| old.get(k).map(|(_, o)| o) != Some(v))
            .map(|(k, v)| (k, Some(v)))
            .collect();
        out.extend(gone.into_iter().map(|k| (k, None)));
        batch_order(&mut out);
        out
    }

    /// `recs` are durable, the first at offset `base`.
    pub fn written(&self, group: &str, recs: &[(RecordKey, Option<Bytes>)], base: u64) {
        self.dirty.borrow_mut().remove(group);
        let mut stored = self.stored.borrow_mut();
        let g = stored.entry(group.to_string()).or_default();
        for (i, (k, v)) in recs.iter().enumerate() {
            if !matches!(k, RecordKey::Consumer { .. }) {
                continue;
            }
            let seq = base + i as u64 + 1;
            if g.get(k).is_some_and(|(s, _)| *s > seq) {
                continue; // a later write of this key already landed
            }
            match v {
                Some(v) => {
                    g.insert(k.clone(), (seq, v.clone()));
                }
                None => {
                    g.remove(k);
                }
            }
        }
        if g.is_empty() {
            stored.remove(group);
        }
    }

    /// The write of `group`'s changes failed: compare all of it next time.
    pub fn failed(&self, group: &str) {
        self.dirty.borrow_mut().insert(group.to_string());
    }
}

/// Rebuild a group from its stored records; None (logged) if they lack the
/// group's epoch record (a group Kafka would not know either).
pub fn restore(
    group: &str,
    recs: &StoredRecords,
    ids: &TopicIds,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    now: Instant,
) -> Option<ConsumerGroup> {
    let mut group_epoch = None;
    let mut assignment_epoch = 0;
    let mut topics_seen = BTreeMap::new();
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    let mut targets: BTreeMap<String, TopicPartitions> = BTreeMap::new();
    let mut currents: BTreeMap<String, CurrentAssignmentValue> = BTreeMap::new();
    for (k, (_, v)) in recs {
        let RecordKey::Consumer { kind, member, .. } = k else {
            continue;
        };
        // Replay decoded every kept value once already.
        let Ok(v) = records::decode_consumer_value(*kind, v) else {
            continue;
        };
        let member = member.clone().unwrap_or_default();
        match v {
            ConsumerValue::GroupEpoch(e) => group_epoch = Some(e),
            ConsumerValue::AssignmentEpoch(e) => assignment_epoch = e,
            ConsumerValue::PartitionMetadata(topics) => {
                for t in topics {
                    // Only if the topic is still the one the record named.
                    if ids.by_id.get(&t.topic_id) == Some(&t.name) && t.partitions >= 0 {
                        topics_seen.insert(t.name, t.partitions as u32);
                    }
                }
            }
            ConsumerValue::MemberMetadata(m) => {
                let assignor = m.server_assignor.as_deref().and_then(Assignor::from_name);
                let mut joined = Member::joining(
                    member.clone(),
                    m.instance_id,
                    m.rack_id,
                    m.client_id,
                    Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    assignor,
                    // (Restarted by ConsumerGroup::restore.)
                    now,
                );
                joined.subscribed = m.subscribed_topic_names.into_iter().collect();
                members.insert(member, joined);
            }
            ConsumerValue::TargetAssignment(t) => {
                targets.insert(member, by_name(&t, ids));
            }
            ConsumerValue::CurrentAssignment(c) => {
                currents.insert(member, c);
            }
        }
    }
    let Some(group_epoch) = group_epoch else {
        warn!(
            group,
            "kafka: consumer group records without its epoch record: not restored"
        );
        return None;
    };
    let members = members
        .into_values()
        .map(|mut m| {
            let target = targets.remove(&m.id).unwrap_or_default();
            if let Some(c) = currents.remove(&m.id) {
                let departed = c.member_epoch == STATIC_LEFT_EPOCH;
                m.set_departed(departed);
                (m.epoch, m.previous_epoch) = if departed {
                    (c.previous_member_epoch, -1)
                } else {
                    (c.member_epoch, c.previous_member_epoch)
                };
                m.state = match c.state {
                    1 => MemberState::UnrevokedPartitions,
                    2 => MemberState::UnreleasedPartitions,
                    _ => MemberState::Stable,
                };
                m.assigned = by_name(&c.assigned, ids);
                m.revoking = by_name(&c.pending_revocation, ids);
            }
            (m, target)
        })
        .collect();
    Some(ConsumerGroup::restore(
        group.to_string(),
        group_epoch,
        assignment_epoch,
        topics_seen,
        members,
        session_timeout,
        heartbeat_interval,
        now,
    ))
}

#[cfg(test)]
#[path = "consumer_store_tests.rs"]
mod tests;
