//! The replication driver of one shard: every partition group whose
//! replica lives on the shard, ticked together, their messages batched per
//! peer broker.
//!
//! Sans-IO like raft-rs itself: the caller (the shard's replication task,
//! or the simulation) feeds it ticks, batches received from peers and
//! proposals, runs [`ReplicationDriver::process`], asks the partitions'
//! logs to sync what [`ReplicationDriver::durable_wanted`] lists, calls
//! [`ReplicationDriver::on_durable`] when they did, and sends the batches
//! [`ReplicationDriver::take_batches`] returns. So one tick costs one
//! message per peer broker for all groups (Redpanda's heartbeat manager
//! does the same), and the simulation drives exactly the code the broker
//! runs.
//!
//! A fault in one group (a storage error) is returned with its key and
//! never stops the others.
//!
//! Lifecycle and cores: one per shard, created when the shard starts in
//! cluster mode; groups are inserted when the shard opens a replica and
//! removed before the partition closes.

use super::group::{PartitionGroup, ProposeError, Proposed, ReplicaError};
use super::wire::Batch;
use crate::storage::file::Disk;
use bytes::Bytes;
use raft::eraftpb::Message;
use std::collections::{BTreeMap, BTreeSet};

/// A partition's group: which topic (by its 128-bit id) and partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub topic_id: u128,
    pub partition: u32,
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct DriverStats {
    /// Messages for a group this shard does not hold (deleted, moved, or
    /// not opened yet): dropped, Raft resends.
    pub unknown_group: u64,
    /// Messages a group refused (bad entries, unknown peer).
    pub refused: u64,
    pub batches_out: u64,
    pub messages_out: u64,
}

pub struct ReplicationDriver<D: Disk> {
    node: u32,
    groups: BTreeMap<GroupKey, PartitionGroup<D>>,
    /// Groups that may have work for `process`.
    touched: BTreeSet<GroupKey>,
    outbox: BTreeMap<u32, Vec<(GroupKey, Message)>>,
    stats: DriverStats,
}

impl<D: Disk> ReplicationDriver<D> {
    pub fn new(node: u32) -> Self {
        ReplicationDriver {
            node,
            groups: BTreeMap::new(),
            touched: BTreeSet::new(),
            outbox: BTreeMap::new(),
            stats: DriverStats::default(),
        }
    }

    pub fn insert(&mut self, key: GroupKey, group: PartitionGroup<D>) {
        assert_eq!(group.id(), self.node as u64, "a replica of this broker");
        let old = self.groups.insert(key, group);
        assert!(old.is_none(), "group {key:?} opened twice");
        self.touched.insert(key);
    }

    pub fn remove(&mut self, key: &GroupKey) -> Option<PartitionGroup<D>> {
        self.touched.remove(key);
        self.groups.remove(key)
    }

    pub fn group(&self, key: &GroupKey) -> Option<&PartitionGroup<D>> {
        self.groups.get(key)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&GroupKey, &PartitionGroup<D>)> {
        self.groups.iter()
    }

    /// Retention on every group (see [`PartitionGroup::compact`]); the
    /// groups whose storage failed are returned (the others go on).
    pub async fn compact(&mut self, now_ms: i64) -> Vec<(GroupKey, ReplicaError)> {
        let mut failed = Vec::new();
        for (k, g) in self.groups.iter_mut() {
            match g.compact(now_ms).await {
                Ok(true) => {
                    self.touched.insert(*k);
                }
                Ok(false) => {}
                Err(e) => failed.push((*k, e)),
            }
        }
        for (k, _) in &failed {
            self.groups.remove(k);
            self.touched.remove(k);
        }
        failed
    }

    /// Move group `key`'s membership a step towards `target` (see
    /// [`PartitionGroup::reconfigure`]); the group gets a ready cycle.
    pub fn reconfigure(&mut self, key: &GroupKey, target: &[u64]) -> Option<super::Reconfig> {
        let g = self.groups.get_mut(key)?;
        let r = g.reconfigure(target);
        if g.has_ready() {
            self.touched.insert(*key);
        }
        Some(r)
    }

    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// Batches to `peer` were lost (its queue was full, or the write
    /// failed): every group probes it again instead of waiting for
    /// acknowledgements that will not come.
    pub fn report_unreachable(&mut self, peer: u32) {
        for (k, g) in self.groups.iter_mut() {
            g.report_unreachable(peer as u64);
            self.touched.insert(*k);
        }
    }

    /// One tick for every group.
    pub fn tick(&mut self) {
        for (k, g) in self.groups.iter_mut() {
            g.tick();
            // Most ticks of an idle group change nothing (no heartbeat
            // due, no election): only those that did get a ready cycle.
            if g.has_ready() {
                self.touched.insert(*k);
            }
        }
    }

    /// Step every message of a batch from a peer into its group.
    pub fn receive(&mut self, batch: Batch) {
        for (key, m) in batch.items {
            if m.from != batch.from as u64 || m.to != self.node as u64 {
                self.stats.refused += 1;
                continue;
            }
            let Some(g) = self.groups.get_mut(&key) else {
                self.stats.unknown_group += 1;
                continue;
            };
            if g.step(m).is_err() {
                self.stats.refused += 1;
            }
            self.touched.insert(key);
        }
    }

    /// Propose one validated frame to a group this broker leads.
    pub fn propose(&mut self, key: &GroupKey, frame: Bytes) -> Result<Proposed, ProposeError> {
        let g = self
            .groups
            .get_mut(key)
            .ok_or(ProposeError::NotLeader { leader: None })?;
        let p = g.propose(frame)?;
        self.touched.insert(*key);
        Ok(p)
    }

    /// Run every touched group's ready cycle until it is quiet; messages
    /// go to the per-peer outbox. Returns the groups that failed.
    pub async fn process(&mut self) -> Vec<(GroupKey, ReplicaError)> {
        let mut failed = Vec::new();
        let touched = std::mem::take(&mut self.touched);
        for key in touched {
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            if let Err(e) = Self::process_group(g, key, &mut self.outbox).await {
                failed.push((key, e));
            }
        }
        failed
    }

    async fn process_group(
        g: &mut PartitionGroup<D>,
        key: GroupKey,
        outbox: &mut BTreeMap<u32, Vec<(GroupKey, Message)>>,
    ) -> Result<(), ReplicaError> {
        // Bounded: each round either sends something or stops.
        for _ in 0..16 {
            g.fetch_for_followers().await?;
            let mut msgs = g.ready().await?;
            msgs.extend(g.on_durable());
            let more = g.has_ready();
            for m in msgs {
                outbox.entry(m.to as u32).or_default().push((key, m));
            }
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// Groups holding messages until their log is durable past an offset:
    /// the caller asks each log to sync (one sync serves them all).
    pub fn durable_wanted(&self) -> Vec<(GroupKey, u64)> {
        self.groups
            .iter()
            .filter_map(|(k, g)| g.durable_wanted().map(|o| (*k, o)))
            .collect()
    }

    /// The logs became durable (some of them): release what waited.
    pub fn on_durable(&mut self) {
        for (k, g) in self.groups.iter_mut() {
            if g.durable_wanted().is_none() {
                continue;
            }
            let msgs = g.on_durable();
            if !msgs.is_empty() || g.has_ready() {
                self.touched.insert(*k);
            }
            for m in msgs {
                self.outbox.entry(m.to as u32).or_default().push((*k, m));
            }
        }
    }

    /// One batch per peer broker with everything queued for it.
    pub fn take_batches(&mut self) -> Vec<(u32, Batch)> {
        let out: Vec<(u32, Batch)> = std::mem::take(&mut self.outbox)
            .into_iter()
            .map(|(to, items)| {
                (
                    to,
                    Batch {
                        from: self.node,
                        items,
                    },
                )
            })
            .collect();
        self.stats.batches_out += out.len() as u64;
        self.stats.messages_out += out.iter().map(|(_, b)| b.items.len() as u64).sum::<u64>();
        out
    }
}
