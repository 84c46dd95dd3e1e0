//! The per-shard group coordinator: the groups whose offsets partition this
//! shard owns, their committed offsets, and the clock that expires silent
//! members.
//!
//! Lifecycle: created on first use on a shard (kept alive by the shard, found
//! through a [`PerShard`] slot), with a ticker task that runs until the shard shuts down.
//! Lives on one core; every method is called on that core (through
//! [`super::with_coordinator`]). No `RefCell` borrow is held across an await.

use super::offsets::{CommitItem, OffsetStore};
use super::state::{Group, SyncStep};
use super::{GroupError, GroupView, JoinOutcome, JoinParams, OffsetMap, SyncOutcome};
use crate::clock::Clock;
use crate::shard::{PerShard, Shard};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::HashMap;
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
}

impl Coordinator {
    /// This shard's coordinator, created (with its ticker) on first use.
    pub fn get(shard: &Rc<Shard>) -> Rc<Coordinator> {
        let (c, made) = COORDINATOR.with(|slot| {
            slot.get_or_insert_with(shard, || Coordinator {
                groups: RefCell::default(),
                offsets: OffsetStore::default(),
                clock: shard.clock.clone(),
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
            groups.insert(group_id.to_string(), Group::new(group_id.to_string()));
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
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncOutcome, GroupError> {
        let step = self.with_group(group_id, false, |g| {
            g.sync(member_id, generation, assignments, self.clock.now())
        })?;
        match step {
            SyncStep::Now(o) => Ok(o),
            SyncStep::Wait(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.with_group(group_id, false, |g| {
            g.heartbeat(member_id, generation, self.clock.now())
        })
    }

    /// Remove members; one result per member id, in order.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<Result<(), GroupError>> {
        let now = self.clock.now();
        member_ids
            .iter()
            .map(|m| self.with_group(group_id, false, |g| g.leave(m, now)))
            .collect()
    }

    pub async fn commit(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        member_id: &str,
        generation: i32,
        items: Vec<CommitItem>,
    ) -> Result<(), GroupError> {
        self.offsets.ensure_loaded(shard, partition).await?;
        let check = {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                Some(g) => g.check_commit(member_id, generation),
                // No live group: only a standalone commit is valid (Kafka's rule).
                None if generation < 0 => Ok(()),
                None => Err(GroupError::IllegalGeneration),
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
