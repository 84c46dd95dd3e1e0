//! The per-shard group coordinator: the groups whose offsets partition this
//! shard owns, their committed offsets, and the clock that expires silent
//! members.
//!
//! Lifecycle: created on first use on a shard (kept alive by the shard, found
//! through a [`PerShard`] slot), with a ticker task that runs until the shard shuts down.
//! A group's state is restored from its offsets partition (the membership
//! stored after its last completed rebalance) before any request for a
//! group of that partition is served ([`Coordinator::load`]), so a broker
//! restart does not force a rebalance.
//! A replicated offsets partition is served only by its Raft leader's
//! broker, loaded afresh in each term it leads and dropped from memory
//! when it stops leading ([`super::leadership`]).
//! Lives on one core; every method is called on that core (through
//! [`super::with_coordinator`]). No `RefCell` borrow is held across an await.

use super::consumer_coordinator::ListedGroup;
use super::consumer_group::ConsumerGroup;
use super::consumer_store::{self, ConsumerStore, Scope, TopicIds};
use super::expiry::ExpirySchedule;
use super::leadership;
use super::offsets::{CommitItem, OffsetStore};
use super::state::{Group, MemberRef, Phase, SyncStep};
use super::subscription::{self, CONSUMER_PROTOCOL_TYPE};
use super::{partition_of, OFFSETS_TOPIC};
use super::{GroupError, GroupView, JoinOutcome, JoinParams, OffsetMap, SyncOutcome};
use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::shard::{PerShard, Shard};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

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
    pub(super) groups: RefCell<HashMap<String, Group>>,
    /// Consumer-protocol (KIP-848) groups, by id; a group id is in at most
    /// one of the two maps ([`super::consumer_coordinator`]).
    pub(super) consumer: RefCell<HashMap<String, ConsumerGroup>>,
    /// `group_consumer_session_timeout_ms` / `_heartbeat_interval_ms`.
    pub(super) consumer_session_timeout: Duration,
    pub(super) consumer_heartbeat_interval: Duration,
    pub(super) offsets: OffsetStore,
    /// What the log holds for each consumer-protocol group.
    pub(super) consumer_store: ConsumerStore,
    /// `offsets_retention_minutes`, in ms.
    pub(super) offsets_retention_ms: i64,
    /// When the next expiry pass is due (`offsets_retention_check_interval_ms`).
    expiry: ExpirySchedule,
    /// The shard's clock: session and rebalance deadlines, commit times
    /// and offset expiry are measured on it.
    pub(super) clock: Rc<dyn Clock>,
    /// `group_initial_rebalance_delay_ms`: how long a group that was Empty
    /// waits for more members before its first generation.
    initial_delay: Duration,
    /// Replicated offsets partition -> the Raft term this shard loaded it
    /// in (and leads it in, until the ticker sees otherwise).
    led: RefCell<HashMap<u32, u64>>,
    /// One (re)load of a replicated partition at a time.
    lead_lock: futures::lock::Mutex<()>,
}

impl Coordinator {
    /// A coordinator with no groups, configured by `config` and timed by
    /// `clock` (the shard's; a test's manual clock).
    fn new(config: &BrokerConfig, clock: Rc<dyn Clock>) -> Coordinator {
        Coordinator {
            groups: RefCell::default(),
            consumer: RefCell::default(),
            consumer_session_timeout: Duration::from_millis(
                config.group_consumer_session_timeout_ms,
            ),
            consumer_heartbeat_interval: Duration::from_millis(
                config.group_consumer_heartbeat_interval_ms,
            ),
            offsets: OffsetStore::new(clock.clone()),
            consumer_store: ConsumerStore::default(),
            offsets_retention_ms: config.offsets_retention_ms(),
            expiry: ExpirySchedule::new(
                Duration::from_millis(config.offsets_retention_check_interval_ms),
                clock.now(),
            ),
            clock,
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            led: RefCell::default(),
            lead_lock: futures::lock::Mutex::new(()),
        }
    }

    /// This shard's coordinator, created (with its ticker) on first use.
    pub fn get(shard: &Rc<Shard>) -> Rc<Coordinator> {
        let (c, made) = COORDINATOR.with(|slot| {
            slot.get_or_insert_with(shard, || {
                Coordinator::new(&shard.config, shard.clock.clone())
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

    /// Load offsets partition `partition` (committed offsets and stored
    /// groups) if this process has not yet, restoring its groups. Every
    /// group request passes here first ([`super::with_coordinator`]). A
    /// replicated partition: only where its Raft group leads (else
    /// NOT_COORDINATOR), once the term's first entry is applied (else
    /// COORDINATOR_LOAD_IN_PROGRESS), and afresh in every term it leads.
    pub async fn load(&self, shard: &Rc<Shard>, partition: u32) -> Result<(), GroupError> {
        let partitions = super::offsets_partitions(shard).await?;
        let Some(term) = leadership::serving_term(shard, partition).await? else {
            return self.restore(shard, partition, partitions).await;
        };
        if self.led.borrow().get(&partition) == Some(&term) {
            return Ok(());
        }
        let _guard = self.lead_lock.lock().await;
        if self.led.borrow().get(&partition) == Some(&term) {
            return Ok(());
        }
        // Whatever an earlier term left here may be stale: another leader
        // may have taken commits since.
        self.unload(partition, partitions);
        self.restore(shard, partition, partitions).await?;
        self.led.borrow_mut().insert(partition, term);
        info!(
            partition,
            term, "kafka: {OFFSETS_TOPIC} partition led here: its groups are loaded"
        );
        Ok(())
    }

    /// Drop every group of offsets partition `partition` from memory (its
    /// committed offsets, memberships and consumer-protocol groups): the
    /// next load reads them from the log. Members waiting in a rebalance
    /// are told to rejoin, and then find the new coordinator.
    fn unload(&self, partition: u32, partitions: u32) {
        let here = |g: &str| partition_of(g, partitions) == partition;
        self.groups.borrow_mut().retain(|id, _| !here(id));
        self.consumer.borrow_mut().retain(|id, _| !here(id));
        self.consumer_store.forget(here);
        self.offsets.unload(partition, partitions);
        self.led.borrow_mut().remove(&partition);
    }

    /// Drop the groups of the replicated offsets partitions this broker no
    /// longer leads in the term it loaded them in (the ticker's check).
    fn drop_unled(&self, shard: &Shard) {
        let lost: Vec<(u32, u64)> = self
            .led
            .borrow()
            .iter()
            .filter(|(p, t)| !leadership::still_leads(shard, **p, **t))
            .map(|(p, t)| (*p, *t))
            .collect();
        if lost.is_empty() {
            return;
        }
        let Some(partitions) = shard.topics().get(OFFSETS_TOPIC).map(|m| m.partitions) else {
            return;
        };
        for (p, term) in lost {
            self.unload(p, partitions);
            info!(
                partition = p,
                term, "kafka: {OFFSETS_TOPIC} partition no longer led here: its groups are dropped"
            );
        }
    }

    /// Read offsets partition `partition` into memory if not yet, and
    /// restore the groups found there.
    async fn restore(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        partitions: u32,
    ) -> Result<(), GroupError> {
        let restored = self
            .offsets
            .ensure_loaded(shard, partition, partitions)
            .await?;
        if restored.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let ids = TopicIds::of(&shard.topics());
        let mut consumer = self.consumer.borrow_mut();
        for (id, recs) in restored.consumer {
            self.consumer_store.restored(&id, recs.clone());
            let Some(g) = consumer_store::restore(
                &id,
                &recs,
                &ids,
                self.consumer_session_timeout,
                self.consumer_heartbeat_interval,
                now,
            ) else {
                continue;
            };
            info!(group = %id, group_epoch = g.group_epoch, members = g.member_count(), "kafka: consumer group restored");
            consumer.entry(id).or_insert(g);
        }
        let mut groups = self.groups.borrow_mut();
        for (id, v) in restored.classic {
            // One protocol per id: a conversion stores the other's
            // tombstones, so both survive only a crash mid-conversion; the
            // group with members wins, else the consumer group.
            if consumer
                .get(&id)
                .is_some_and(|g| !g.is_empty() || v.members.is_empty())
            {
                warn!(group = %id, "kafka: a classic and a consumer group share this id: keeping the consumer group");
                continue;
            }
            consumer.remove(&id);
            let (generation, members) = (v.generation, v.members.len());
            groups
                .entry(id.clone())
                .or_insert_with(|| Group::restore(id.clone(), v, self.initial_delay, now));
            info!(group = %id, generation, members, "kafka: group restored");
        }
        Ok(())
    }

    /// Load every offsets partition this shard owns, if the offsets topic
    /// exists (ListGroups after a restart). A partition that cannot load is
    /// logged and left out.
    pub async fn load_owned(&self, shard: &Rc<Shard>) {
        let Some(partitions) = shard.topics().get(OFFSETS_TOPIC).map(|m| m.partitions) else {
            return;
        };
        for p in (0..partitions).filter(|p| shard.owns_partition(OFFSETS_TOPIC, *p)) {
            match self.load(shard, p).await {
                // A replica another broker leads: its groups are listed there.
                Ok(()) | Err(GroupError::NotCoordinator) => {}
                Err(e) => warn!(
                    partition = p,
                    "kafka: {OFFSETS_TOPIC} partition not loaded: {e}"
                ),
            }
        }
    }

    /// Every group with members or history here, classic and consumer-protocol.
    pub fn list(&self) -> Vec<ListedGroup> {
        let mut out: Vec<_> = self
            .groups
            .borrow()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.phase.name(),
                    "classic",
                )
            })
            .collect();
        out.extend(self.consumer_list());
        out
    }

    /// A group's state and members; an unknown group is "Dead", as in Kafka.
    pub fn describe(&self, group_id: &str) -> GroupView {
        if let Some(v) = self.consumer_classic_view(group_id) {
            return v;
        }
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

    pub async fn join(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        p: JoinParams,
    ) -> Result<JoinOutcome, GroupError> {
        let group_id = p.group_id.clone();
        self.classic_may_take(shard, partition, &group_id).await?;
        let rx = self.with_group(&group_id, true, |g| g.join(p, self.clock.now()))?;
        let out = rx.await.unwrap_or(Err(GroupError::RebalanceInProgress))?;
        if out.leader == out.member_id {
            info!(group = %group_id, generation = out.generation, members = out.members.len(), protocol = %out.protocol_name, "kafka: group rebalanced");
        }
        Ok(out)
    }

    /// SyncGroup. The leader's assignment is stored durably (the group's
    /// membership record) before any member receives it, so the generation
    /// members go on with is the one a restart restores.
    pub async fn sync(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncOutcome, GroupError> {
        self.not_consumer(group_id)?;
        let to_store = self.with_group(group_id, false, |g| {
            Ok(g.leader_sync_snapshot(member, generation, &assignments, self.clock.wall_ms()))
        })?;
        if let Some(v) = to_store {
            if let Err(e) = self
                .offsets
                .store_group(shard, partition, group_id, Some(&v))
                .await
            {
                warn!(group = %group_id, generation, "kafka: group assignment not stored, the group rebalances: {e}");
                let now = self.clock.now();
                let _ = self.with_group(group_id, false, |g| {
                    g.assignment_not_stored(generation, now);
                    Ok(())
                });
                return Err(e);
            }
        }
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
        self.not_consumer(group_id)?;
        self.with_group(group_id, false, |g| {
            g.heartbeat(member, generation, self.clock.now())
        })
    }

    /// Remove members, each named by (member id, instance id); one result
    /// per member, in order.
    pub fn leave(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), GroupError>> {
        if let Err(e) = self.not_consumer(group_id) {
            return vec![Err(e); members.len()];
        }
        let now = self.clock.now();
        let results = members
            .iter()
            .map(|(id, instance)| {
                let m = MemberRef {
                    member_id: id,
                    instance_id: instance.as_deref(),
                };
                self.with_group(group_id, false, |g| g.leave(m, now))
            })
            .collect();
        self.store_emptied(shard);
        results
    }

    /// Store, in the background, the groups that became Empty (the last
    /// member left or expired), so a restart does not bring their members
    /// back. Each is stored as it is when its write starts, and only if it
    /// is still Empty then.
    fn store_emptied(self: &Rc<Self>, shard: &Rc<Shard>) {
        let ids: Vec<String> = self
            .groups
            .borrow_mut()
            .values_mut()
            .filter(|g| g.empty_unstored)
            .map(|g| {
                g.empty_unstored = false;
                // Offsets of an Empty group expire this long after now.
                g.empty_since_ms = Some(self.clock.wall_ms());
                g.id.clone()
            })
            .collect();
        self.each_later(shard, ids, |c, shard, id, p| async move {
            let v = match c.groups.borrow().get(&id) {
                Some(g) if g.phase == Phase::Empty => {
                    g.snapshot(None, g.empty_since_ms.unwrap_or(c.clock.wall_ms()))
                }
                _ => return,
            };
            if let Err(e) = c.offsets.store_group(&shard, p, &id, Some(&v)).await {
                warn!(group = %id, "kafka: empty group not stored (after a restart its members return until their sessions expire): {e}");
            }
        });
    }

    /// Run `f` for each group of `ids`, with its offsets partition, one
    /// after the other in the background (stores that no request waits
    /// for). Nothing runs if the offsets topic is gone.
    pub(super) fn each_later<F, Fut>(self: &Rc<Self>, shard: &Rc<Shard>, ids: Vec<String>, f: F)
    where
        F: Fn(Rc<Coordinator>, Rc<Shard>, String, u32) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        if ids.is_empty() {
            return;
        }
        let (c, shard) = (self.clone(), shard.clone());
        glommio::spawn_local(async move {
            let Some(partitions) = shard.topics().get(OFFSETS_TOPIC).map(|m| m.partitions) else {
                return;
            };
            for id in ids {
                let p = partition_of(&id, partitions);
                f(c.clone(), shard.clone(), id, p).await;
            }
        })
        .detach();
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
        let check =
            if let Some(r) = self.consumer_check_commit(group_id, member, generation, &items) {
                r
            } else {
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
        // Each commit at debug level: which member and generation asked
        // for which offsets and what it was answered, so a group that
        // resumes somewhere unexpected can be traced to the commit that
        // put it there.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let offsets: Vec<(i32, i64)> = items
                .iter()
                .map(|i| (i.partition, i.committed.offset))
                .collect();
            debug!(group = %group_id, member = %member.member_id, generation, ?offsets, result = ?check, "kafka: offset commit");
        }
        check?;
        self.offsets.commit(shard, partition, group_id, items).await
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> OffsetMap {
        self.offsets.fetch(group_id, wanted.as_deref())
    }

    /// DeleteGroups: an empty group's state and committed offsets go, as
    /// in Kafka: a tombstone for each committed offset and one for the
    /// group's membership record.
    pub async fn delete_group(
        &self,
        shard: &Rc<Shard>,
        partition: u32,
        group_id: &str,
    ) -> Result<(), GroupError> {
        let consumer = self.consumer.borrow().get(group_id).map(|g| g.is_empty());
        {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                _ if consumer == Some(false) => return Err(GroupError::NonEmptyGroup),
                Some(g) if !g.members.is_empty() => return Err(GroupError::NonEmptyGroup),
                None if consumer.is_none() && !self.offsets.has_group(group_id) => {
                    return Err(GroupError::GroupIdNotFound)
                }
                _ => {}
            }
        }
        let parts = self.offsets.partitions_of(group_id);
        self.offsets
            .delete_offsets(shard, partition, group_id, &parts)
            .await?;
        if consumer.is_some() {
            // Its records go (and it, unless a member came meanwhile).
            let empty = self.consumer.borrow().get(group_id).map(|g| g.is_empty());
            if empty == Some(true) {
                self.consumer.borrow_mut().remove(group_id);
            }
            self.persist_consumer(shard, partition, group_id, Scope::All, None)
                .await?;
        }
        self.offsets
            .store_group(shard, partition, group_id, None)
            .await?;
        // A member may have joined while the tombstone was written: then
        // the group stays (its offsets are gone, as they would be in Kafka
        // had the join come just after the delete).
        let mut groups = self.groups.borrow_mut();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
        let mut consumer = self.consumer.borrow_mut();
        if consumer.get(group_id).is_some_and(|g| g.is_empty()) {
            consumer.remove(group_id);
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
        let consumer = self
            .consumer
            .borrow()
            .get(group_id)
            .map(|g| g.subscribed_topics());
        let subscribed: BTreeSet<String> = if let Some(topics) = consumer {
            topics
        } else {
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

    /// Expire silent members; returns the consumer groups that changed.
    fn tick(&self, now: Instant) -> Vec<String> {
        for (id, g) in self.groups.borrow_mut().iter_mut() {
            for (m, why) in g.tick(now) {
                info!(group = %id, member = %m, "kafka: group member removed: {why}");
            }
        }
        self.consumer_tick(now)
    }
}

async fn ticker(shard: Rc<Shard>, c: std::rc::Weak<Coordinator>) {
    while !shard.shutting_down.get() {
        let Some((c, now, changed)) = next_tick(&c).await else {
            return;
        };
        c.persist_consumer_later(&shard, changed);
        c.drop_unled(&shard);
        c.store_emptied(&shard);
        if c.expiry.due(now) {
            c.expire_offsets(&shard).await;
        }
    }
}

/// One tick of the ticker: wait [`TICK`] on the coordinator's clock, then
/// expire the members whose session or rebalance deadline passed. Returns
/// the coordinator, the time of the tick and the consumer groups that
/// changed; None once the coordinator is gone.
async fn next_tick(
    c: &std::rc::Weak<Coordinator>,
) -> Option<(Rc<Coordinator>, Instant, Vec<String>)> {
    let clock = c.upgrade()?.clock.clone();
    clock.sleep(TICK).await;
    let c = c.upgrade()?;
    let now = c.clock.now();
    let changed = c.tick(now);
    Some((c, now, changed))
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
