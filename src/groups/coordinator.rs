//! The per-shard group coordinator: the groups whose offsets partition this
//! shard owns, their committed offsets, and the clock that expires silent
//! members.
//!
//! Lifecycle: created on first use on a shard (kept alive by the shard, found
//! through a [`PerShard`] slot), with a ticker task that runs until the shard shuts down.
//! Lives on one core; every method is called on that core (through
//! [`super::with_coordinator`]). No `RefCell` borrow is held across an await.

use super::offsets::{CommitItem, OffsetStore};
use super::state::{Group, MemberRef, Phase, SyncStep};
use super::subscription::{self, CONSUMER_PROTOCOL_TYPE};
use super::{GroupError, GroupView, JoinOutcome, JoinParams, OffsetMap, SyncOutcome};
use crate::clock::Clock;
use crate::shard::{PerShard, Shard};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::info;

/// How often sessions and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(200);
thread_local! {
    /// This shard's coordinator: a typed per-shard slot (the shard owns the
    /// value but does not know its type; see [`PerShard`]).
    static COORDINATOR: PerShard<Coordinator> = const { PerShard::new() };
}

/// Groups one shard coordinates, so a client cannot exhaust memory with names.
pub const GROUPS_MAX: usize = 100_000;

pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    offsets: OffsetStore,
    /// The shard's clock: session and rebalance deadlines are measured on it.
    clock: Rc<dyn Clock>,
    /// `group_initial_rebalance_delay_ms`: how long a group that was Empty
    /// waits for more members before its first generation.
    initial_delay: Duration,
}

impl Coordinator {
    /// This shard's coordinator, created (with its ticker) on first use.
    pub fn get(shard: &Rc<Shard>) -> Rc<Coordinator> {
        let (c, made) = COORDINATOR.with(|slot| {
            slot.get_or_insert_with(shard, || Coordinator {
                groups: RefCell::default(),
                offsets: OffsetStore::default(),
                clock: shard.clock.clone(),
                initial_delay: Duration::from_millis(shard.config.group_initial_rebalance_delay_ms),
            })
        });
        if made {
            glommio::spawn_local(ticker(shard.clone(), Rc::downgrade(&c))).detach();
        }
        c
    }

    /// This shard's coordinator if it has one (never creates it).
    pub fn existing(shard: &Rc<Shard>) -> Option<Rc<Coordinator>> {
        COORDINATOR.with(|slot| slot.get(shard))
    }

    /// (group id, protocol type, state) of every group with members or history here.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        self.groups
            .borrow()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.phase.name(),
                )
            })
            .collect()
    }

    /// A group's state and members; an unknown group is "Dead", as in Kafka.
    pub fn describe(&self, group_id: &str) -> GroupView {
        match self.groups.borrow().get(group_id) {
            Some(g) => g.view(),
            None => GroupView {
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        }
    }

    fn with_group<T>(
        &self,
        group_id: &str,
        create: bool,
        f: impl FnOnce(&mut Group) -> Result<T, GroupError>,
    ) -> Result<T, GroupError> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !create {
                return Err(GroupError::UnknownMember);
            }
            if groups.len() >= GROUPS_MAX {
                return Err(GroupError::CoordinatorUnavailable(
                    super::Unavailable::TooManyGroups(GROUPS_MAX),
                ));
            }
            groups.insert(
                group_id.to_string(),
                Group::new(group_id.to_string(), self.initial_delay),
            );
        }
        f(groups.get_mut(group_id).expect("present"))
    }

    pub async fn join(&self, p: JoinParams) -> Result<JoinOutcome, GroupError> {
        let group_id = p.group_id.clone();
        let rx = self.with_group(&group_id, true, |g| g.join(p, self.clock.now()))?;
        let out = rx.await.unwrap_or(Err(GroupError::RebalanceInProgress))?;
        if out.leader == out.member_id {
            info!(group = %group_id, generation = out.generation, members = out.members.len(), protocol = %out.protocol_name, "kafka: group rebalanced");
        }
        Ok(out)
    }

    pub async fn sync(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncOutcome, GroupError> {
        let step = self.with_group(group_id, false, |g| {
            g.sync(member, generation, assignments, self.clock.now())
        })?;
        match step {
            SyncStep::Now(o) => Ok(o),
            SyncStep::Wait(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.with_group(group_id, false, |g| {
            g.heartbeat(member, generation, self.clock.now())
        })
    }

    /// Remove members, each named by (member id, instance id); one result
    /// per member, in order.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), GroupError>> {
        let now = self.clock.now();
        members
            .iter()
            .map(|(id, instance)| {
                let m = MemberRef {
                    member_id: id,
                    instance_id: instance.as_deref(),
                };
                self.with_group(group_id, false, |g| g.leave(m, now))
            })
            .collect()
    }

    pub async fn commit(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
        items: Vec<CommitItem>,
    ) -> Result<(), GroupError> {
        self.offsets.ensure_loaded(shard, partition).await?;
        let check = {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                Some(g) => g.check_commit(member, generation),
                // No live group: a standalone commit (generation -1) is
                // valid; a member's commit names a member nobody knows
                // when offsets exist (the group is Empty), else a group
                // nobody knows (Kafka's rules).
                None if generation < 0 => Ok(()),
                None if self.offsets.has_group(group_id) => Err(GroupError::UnknownMember),
                None => Err(GroupError::GroupIdNotFound),
            }
        };
        check?;
        self.offsets.commit(shard, partition, group_id, items).await
    }

    pub async fn fetch_offsets(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<OffsetMap, GroupError> {
        self.offsets.ensure_loaded(shard, partition).await?;
        Ok(self.offsets.fetch(group_id, wanted.as_deref()))
    }

    /// DeleteGroups: an empty group's state and committed offsets go.
    pub async fn delete_group(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
    ) -> Result<(), GroupError> {
        self.offsets.ensure_loaded(shard, partition).await?;
        {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                Some(g) if !g.members.is_empty() => return Err(GroupError::NonEmptyGroup),
                None if !self.offsets.has_group(group_id) => {
                    return Err(GroupError::GroupIdNotFound)
                }
                _ => {}
            }
        }
        self.offsets
            .delete_group(shard, partition, group_id)
            .await?;
        // A member may have joined while the tombstone was written: then
        // the group stays (its offsets are gone, as they would be in Kafka
        // had the join come just after the delete).
        let mut groups = self.groups.borrow_mut();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
        info!(group = %group_id, "kafka: group deleted");
        Ok(())
    }

    /// OffsetDelete (Kafka's rules): the group must exist; with members it
    /// must be a consumer group, and the offsets of a topic its members
    /// subscribe to stay (SubscribedToTopic for those partitions). One
    /// result per partition, in order.
    pub async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        parts: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.offsets.ensure_loaded(shard, partition).await?;
        let subscribed: BTreeSet<String> = {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                None if !self.offsets.has_group(group_id) => {
                    return Err(GroupError::GroupIdNotFound)
                }
                Some(g) if g.phase != Phase::Empty => {
                    if g.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
                        return Err(GroupError::NonEmptyGroup);
                    }
                    g.view()
                        .members
                        .iter()
                        .flat_map(|m| subscription::topics_of(&m.metadata))
                        .collect()
                }
                _ => BTreeSet::new(),
            }
        };
        let results: Vec<Result<(), GroupError>> = parts
            .iter()
            .map(|(t, _)| {
                if subscribed.contains(t) {
                    Err(GroupError::SubscribedToTopic)
                } else {
                    Ok(())
                }
            })
            .collect();
        let doomed: Vec<(String, i32)> = parts
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(k, _)| k)
            .collect();
        self.offsets
            .delete_offsets(shard, partition, group_id, &doomed)
            .await?;
        Ok(results)
    }

    fn tick(&self, now: Instant) {
        for (id, g) in self.groups.borrow_mut().iter_mut() {
            for m in g.tick(now) {
                info!(group = %id, member = %m, "kafka: group member session expired");
            }
        }
    }
}

async fn ticker(shard: Rc<Shard>, c: std::rc::Weak<Coordinator>) {
    while !shard.shutting_down.get() {
        shard.clock.sleep(TICK).await;
        let Some(c) = c.upgrade() else { return };
        c.tick(c.clock.now());
    }
}
