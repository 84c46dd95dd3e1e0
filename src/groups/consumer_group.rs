//! One consumer-protocol group (KIP-848, Kafka 4's `group.protocol=consumer`):
//! members heartbeat with ConsumerGroupHeartbeat, the coordinator computes
//! the assignment ([`super::assignor`]) and hands each member its share,
//! one step at a time. No I/O; time is passed in, so every timeout is
//! driven exactly in tests (`consumer_group_tests.rs`).
//!
//! Kafka's rules (`GroupMetadataManager.consumerGroupHeartbeat`,
//! `CurrentAssignmentBuilder`), three epochs:
//! - the **group epoch** goes up whenever what the assignment depends on
//!   changes: a member joins or leaves, a subscription or the chosen
//!   assignor changes, a subscribed topic appears, vanishes or grows;
//! - the **assignment epoch** is the group epoch the target assignment was
//!   computed at; it catches up (a new target) at the next heartbeat;
//! - each **member epoch** is the assignment epoch the member has
//!   reconciled to. A member moves to the new epoch only once it has
//!   given up every partition the new target takes from it: it is first
//!   told its kept partitions (state `UnrevokedPartitions`, old epoch);
//!   its next heartbeat whose owned partitions no longer list the revoked
//!   ones releases them and advances its epoch. A partition another member
//!   still owns (assigned or being revoked) is not handed out
//!   (`UnreleasedPartitions`) until that member releases it. So no
//!   partition is ever owned by two members at once.
//!
//! Lifecycle: created by a member's first heartbeat (epoch 0), lives in its
//! coordinator's memory (one core, the shard owning the group's offsets
//! partition) until it is empty and a classic member, DeleteGroups or the
//! expiry of its offsets takes the id. Its state is stored after every
//! change, in Kafka's records ([`super::consumer_store`]), and rebuilt from
//! them after a restart ([`ConsumerGroup::restore`]): members carry on with
//! their epochs and partitions.

use super::assignor::{Assignor, TopicPartitions};
use super::GroupError;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Members one consumer group may hold (Kafka's `group.consumer.max.size`
/// default is unbounded; a bound keeps a client from exhausting memory).
pub const MEMBERS_MAX: usize = 10_000;
/// Topic names one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
/// Longest member id, instance id or rack id kept (the same int16-length
/// strings Kafka stores).
pub const ID_BYTES_MAX: usize = 1024;
/// Epoch a member leaves with.
pub const LEAVE_EPOCH: i32 = -1;
/// Epoch a static member leaves with (it may come back with its instance id).
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// Where a member stands in reconciling to the target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the assignment epoch with its whole target.
    Stable,
    /// Told to give up `revoking`; keeps its epoch until it has.
    UnrevokedPartitions,
    /// At the assignment epoch, waiting for partitions others still own.
    UnreleasedPartitions,
}

/// One member of a consumer group: created by its first heartbeat (epoch
/// 0), removed when it leaves (-1) or its session or rebalance timeout
/// ends; owned by its group, on the coordinator's core.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub rebalance_timeout: Duration,
    pub subscribed: BTreeSet<String>,
    /// The member's `server_assignor`, if it named one.
    pub assignor: Option<Assignor>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    /// What the member may consume now.
    pub assigned: TopicPartitions,
    /// What it was told to give up and has not yet confirmed.
    pub revoking: TopicPartitions,
    session_deadline: Instant,
    /// While revoking: when the member is removed if it has not confirmed
    /// (its rebalance timeout, Kafka's rule).
    revoke_deadline: Option<Instant>,
    /// A static member that left with epoch -2: its place and partitions
    /// wait for its instance id until its session expires.
    departed: bool,
}

/// A ConsumerGroupHeartbeat, as the coordinator needs it (topics by name).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatParams {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// None: unchanged.
    pub subscribed: Option<Vec<String>>,
    /// None or empty: no regex.
    pub regex: Option<String>,
    /// None: unchanged.
    pub assignor: Option<String>,
    /// The partitions the member owns; None: unchanged since it last said.
    pub owned: Option<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed or the member needs it
    /// whole (a join or a full request); None: unchanged.
    pub assignment: Option<TopicPartitions>,
}

/// The current partition counts of topics, by name.
pub trait TopicLookup {
    fn partitions(&self, topic: &str) -> Option<u32>;
}

impl TopicLookup for BTreeMap<String, u32> {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
}

/// One consumer group's state. Lives on its coordinator's core.
#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// Target assignment, computed at `assignment_epoch`.
    target: BTreeMap<String, TopicPartitions>,
    /// Partition count of each subscribed topic when the group epoch last
    /// moved (a topic that does not exist is absent).
    topics_seen: BTreeMap<String, u32>,
    session_timeout: Duration,
    heartbeat_interval: Duration,
}

/// A consumer group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupView {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    /// Each member, with its target assignment.
    pub members: Vec<(Member, TopicPartitions)>,
}

fn is_empty(t: &TopicPartitions) -> bool {
    t.values().all(|p| p.is_empty())
}

fn overlaps(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|q| !ps.is_disjoint(q)))
}

fn is_subset(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|q| ps.is_subset(q)))
}

fn normalized(t: TopicPartitions) -> TopicPartitions {
    t.into_iter().filter(|(_, p)| !p.is_empty()).collect()
}

fn too_long(s: &Option<String>) -> bool {
    s.as_ref().is_some_and(|s| s.len() > ID_BYTES_MAX)
}

impl Member {
    /// A member as it joins: epoch 0, owning nothing, its session ending at
    /// `session_deadline`; its subscription is set by the caller.
    pub fn joining(
        id: String,
        instance_id: Option<String>,
        rack_id: Option<String>,
        client_id: String,
        rebalance_timeout: Duration,
        assignor: Option<Assignor>,
        session_deadline: Instant,
    ) -> Member {
        Member {
            id,
            instance_id,
            rack_id,
            client_id,
            rebalance_timeout,
            subscribed: BTreeSet::new(),
            assignor,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: TopicPartitions::new(),
            revoking: TopicPartitions::new(),
            session_deadline,
            revoke_deadline: None,
            departed: false,
        }
    }

    /// A static member that left with epoch -2, whose place waits.
    pub fn departed(&self) -> bool {
        self.departed
    }

    pub fn set_departed(&mut self, departed: bool) {
        self.departed = departed;
    }
}

impl ConsumerGroup {
    /// A group as it was stored (after a restart): its epochs, the topic
    /// sizes it last saw, its members (with their targets) with their
    /// epochs and ownership. Every member's session starts afresh at `now`
    /// (a member that died with the broker expires after its session
    /// timeout, as in Kafka); a member revoking has its rebalance timeout
    /// from `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        id: String,
        group_epoch: i32,
        assignment_epoch: i32,
        topics_seen: BTreeMap<String, u32>,
        members: Vec<(Member, TopicPartitions)>,
        session_timeout: Duration,
        heartbeat_interval: Duration,
        now: Instant,
    ) -> Self {
        let mut g = ConsumerGroup::new(id, session_timeout, heartbeat_interval);
        g.group_epoch = group_epoch;
        // Kafka's invariant: the target is never ahead of the group.
        g.assignment_epoch = assignment_epoch.min(group_epoch);
        g.topics_seen = topics_seen;
        for (mut m, target) in members {
            let target = normalized(target);
            if !target.is_empty() {
                g.target.insert(m.id.clone(), target);
            }
            m.assigned = normalized(m.assigned);
            m.revoking = normalized(m.revoking);
            m.session_deadline = now + session_timeout;
            m.revoke_deadline =
                (m.state == MemberState::UnrevokedPartitions).then(|| now + m.rebalance_timeout);
            g.members.insert(m.id.clone(), m);
        }
        g
    }

    /// Every member, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// A member's target assignment (empty if none).
    pub fn target_of(&self, member_id: &str) -> TopicPartitions {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// Partition counts of the subscribed topics when the epoch last moved.
    pub fn topics_seen(&self) -> &BTreeMap<String, u32> {
        &self.topics_seen
    }

    pub fn new(id: String, session_timeout: Duration, heartbeat_interval: Duration) -> Self {
        ConsumerGroup {
            id,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topics_seen: BTreeMap::new(),
            session_timeout,
            heartbeat_interval,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// Kafka's group state: Empty, Assigning (a new target is due),
    /// Reconciling (some member is not yet at it), Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one most members name (ties: the
    /// first by name), else the default (Kafka's rule).
    pub fn assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&'static str, (usize, Assignor)> = BTreeMap::new();
        for a in self.members.values().filter_map(|m| m.assignor) {
            votes.entry(a.name()).or_insert((0, a)).0 += 1;
        }
        votes
            .into_values()
            .rev()
            .max_by_key(|(n, _)| *n)
            .map_or(Assignor::DEFAULT, |(_, a)| a)
    }

    fn bump(&mut self) {
        self.group_epoch += 1;
    }

    /// Partitions owned (assigned or being revoked) by members other than
    /// `except`.
    fn owned_by_others(&self, except: &str) -> BTreeSet<(String, i32)> {
        self.members
            .values()
            .filter(|m| m.id != except)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()))
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    }

    /// A ConsumerGroupHeartbeat. `topics` gives the subscribed topics'
    /// current partition counts.
    pub fn heartbeat(
        &mut self,
        p: HeartbeatParams,
        topics: &dyn TopicLookup,
        now: Instant,
    ) -> Result<HeartbeatReply, GroupError> {
        if p.regex.as_deref().is_some_and(|r| !r.is_empty()) {
            return Err(GroupError::RegexUnsupported);
        }
        if too_long(&p.instance_id) || too_long(&p.rack_id) || p.member_id.len() > ID_BYTES_MAX {
            return Err(GroupError::InvalidRequest(
                "an id is longer than 1024 bytes",
            ));
        }
        if p.subscribed
            .as_ref()
            .is_some_and(|s| s.len() > SUBSCRIBED_TOPICS_MAX)
        {
            return Err(GroupError::InvalidRequest("too many subscribed topics"));
        }
        let assignor = match p.assignor.as_deref() {
            None | Some("") => None,
            Some(name) => Some(Assignor::from_name(name).ok_or(GroupError::UnsupportedAssignor)?),
        };
        let mut new_member = false;
        match p.member_epoch {
            LEAVE_EPOCH | LEAVE_STATIC_EPOCH => return self.leave(p),
            e if e < LEAVE_STATIC_EPOCH => {
                return Err(GroupError::InvalidRequest("member epoch below -2"))
            }
            0 => new_member = self.join(&p, assignor, now)?,
            _ => self.check_epoch(&p)?,
        }
        let id = p.member_id.clone();
        let before = self.members[&id].assigned.clone();
        // The member's own fields. A new member changes the group even
        // with no subscription.
        let mut changed = new_member;
        {
            let m = self.members.get_mut(&id).expect("member");
            m.session_deadline = now + self.session_timeout;
            m.departed = false;
            m.client_id = p.client_id.clone();
            if p.rack_id.is_some() {
                m.rack_id = p.rack_id.clone();
            }
            if p.rebalance_timeout_ms > 0 {
                m.rebalance_timeout = Duration::from_millis(p.rebalance_timeout_ms as u64);
            }
            if let Some(s) = &p.subscribed {
                let s: BTreeSet<String> = s.iter().cloned().collect();
                if s != m.subscribed {
                    m.subscribed = s;
                    changed = true;
                }
            }
            if assignor.is_some() && assignor != m.assignor {
                m.assignor = assignor;
                changed = true;
            }
        }
        self.refresh_target(topics, changed);
        self.reconcile(&id, p.owned.as_ref(), now);
        let m = &self.members[&id];
        // Kafka's rule: a full request (a join, or every optional field
        // set, as a client sends after an error) or a changed assignment.
        let full = p.member_epoch == 0
            || (p.rebalance_timeout_ms != -1 && p.owned.is_some() && p.subscribed.is_some());
        let assignment = if full || m.assigned != before {
            Some(m.assigned.clone())
        } else {
            None
        };
        Ok(HeartbeatReply {
            member_id: id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis().min(i32::MAX as u128) as i32,
            assignment,
        })
    }

    /// Epoch 0: a new member, a member rejoining (it owns nothing now), or
    /// a static member coming back under a new member id. True for a new
    /// member.
    fn join(
        &mut self,
        p: &HeartbeatParams,
        assignor: Option<Assignor>,
        now: Instant,
    ) -> Result<bool, GroupError> {
        if p.subscribed.is_none() {
            return Err(GroupError::InvalidRequest(
                "SubscribedTopicNames must be set in the first request",
            ));
        }
        if p.owned.as_ref().is_some_and(|o| !is_empty(o)) {
            return Err(GroupError::InvalidRequest(
                "TopicPartitions must be empty when (re-)joining",
            ));
        }
        if p.member_id.is_empty() {
            return Err(GroupError::InvalidRequest("MemberId can't be empty"));
        }
        let rebalance_timeout = Duration::from_millis(p.rebalance_timeout_ms.max(0) as u64);
        // A static member taking the place of its earlier self.
        if let Some(instance) = &p.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance) && m.id != p.member_id)
                .map(|m| (m.id.clone(), m.departed));
            match holder {
                Some((_, false)) => return Err(GroupError::UnreleasedInstanceId),
                Some((old, true)) => {
                    let mut m = self.members.remove(&old).expect("holder");
                    // The new incarnation owns nothing yet: what the old
                    // one had is released, and handed back as its target.
                    m.id = p.member_id.clone();
                    m.assigned.clear();
                    m.revoking.clear();
                    m.state = MemberState::Stable;
                    m.previous_epoch = m.epoch;
                    m.epoch = 0;
                    m.revoke_deadline = None;
                    m.session_deadline = now + self.session_timeout;
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(p.member_id.clone(), t);
                    }
                    self.members.insert(p.member_id.clone(), m);
                    return Ok(false);
                }
                None => {}
            }
        }
        if let Some(m) = self.members.get_mut(&p.member_id) {
            // Rejoining (after FENCED_MEMBER_EPOCH, or a lost answer): it
            // gave up everything, so nothing of its old share is owned.
            m.assigned.clear();
            m.revoking.clear();
            m.state = MemberState::Stable;
            m.previous_epoch = m.epoch;
            m.epoch = 0;
            m.revoke_deadline = None;
            return Ok(false);
        }
        if self.members.len() >= MEMBERS_MAX {
            return Err(GroupError::GroupFull);
        }
        // The subscription is set (and the epoch bumped) by the caller.
        let m = Member::joining(
            p.member_id.clone(),
            p.instance_id.clone(),
            p.rack_id.clone(),
            p.client_id.clone(),
            rebalance_timeout,
            assignor,
            now + self.session_timeout,
        );
        self.members.insert(p.member_id.clone(), m);
        Ok(true)
    }

    /// Kafka's `throwIfMemberEpochIsInvalid`: the member's current epoch,
    /// or its previous one with owned partitions it still may own (the
    /// answer that moved it on was lost).
    fn check_epoch(&self, p: &HeartbeatParams) -> Result<(), GroupError> {
        let m = self
            .members
            .get(&p.member_id)
            .ok_or(GroupError::UnknownMember)?;
        if let Some(instance) = &p.instance_id {
            if m.instance_id.as_ref() != Some(instance) {
                return Err(GroupError::FencedInstance);
            }
        }
        if p.member_epoch == m.epoch {
            return Ok(());
        }
        let lost_answer = p.member_epoch == m.previous_epoch
            && p.member_epoch < m.epoch
            && p.owned.as_ref().is_some_and(|o| is_subset(o, &m.assigned));
        if lost_answer {
            Ok(())
        } else {
            Err(GroupError::FencedMemberEpoch)
        }
    }

    fn leave(&mut self, p: HeartbeatParams) -> Result<HeartbeatReply, GroupError> {
        let id = if p.member_epoch == LEAVE_STATIC_EPOCH {
            // A static member leaves by instance id (Kafka's
            // `consumerGroupStaticMemberGroupLeave`).
            let instance = p.instance_id.as_ref().ok_or(GroupError::InvalidRequest(
                "InstanceId can't be null when leaving with epoch -2",
            ))?;
            let m = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .ok_or(GroupError::UnknownMember)?;
            if m.id != p.member_id {
                return Err(GroupError::FencedInstance);
            }
            m.id.clone()
        } else {
            p.member_id.clone()
        };
        if !self.members.contains_key(&id) {
            return Err(GroupError::UnknownMember);
        }
        if p.member_epoch == LEAVE_STATIC_EPOCH {
            // Kept, partitions and all, until its session expires or its
            // instance id rejoins.
            self.members.get_mut(&id).expect("member").departed = true;
        } else {
            self.remove(&id);
        }
        Ok(HeartbeatReply {
            member_id: p.member_id,
            member_epoch: p.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Remove a member: its partitions are free at once; the group epoch
    /// moves so the others share them.
    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.bump();
        }
    }

    /// Bump the group epoch (once) if the member changed the group or a
    /// subscribed topic changed, then compute a new target assignment if
    /// the group epoch is ahead of it.
    fn refresh_target(&mut self, topics: &dyn TopicLookup, member_changed: bool) {
        let now_seen: BTreeMap<String, u32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| topics.partitions(&t).map(|n| (t, n)))
            .collect();
        let topics_changed = now_seen != self.topics_seen;
        self.topics_seen = now_seen;
        if member_changed || topics_changed {
            self.bump();
        }
        if self.group_epoch <= self.assignment_epoch {
            return;
        }
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.subscribed.clone()))
            .collect();
        self.target = self
            .assignor()
            .assign(&subscriptions, &self.topics_seen, &self.target)
            .into_iter()
            .map(|(m, t)| (m, normalized(t)))
            .collect();
        self.assignment_epoch = self.group_epoch;
    }

    /// Kafka's `CurrentAssignmentBuilder`: move member `id` one step
    /// towards its target, given the partitions it says it owns.
    fn reconcile(&mut self, id: &str, owned: Option<&TopicPartitions>, now: Instant) {
        // Still owns (or does not say it gave up) partitions it must revoke.
        let still_owns = |revoking: &TopicPartitions| match owned {
            None => true,
            Some(o) => overlaps(o, revoking),
        };
        let m = &self.members[id];
        match m.state {
            MemberState::UnrevokedPartitions if still_owns(&m.revoking) => return,
            MemberState::Stable if m.epoch == self.assignment_epoch => return,
            _ => {}
        }
        let taken = self.owned_by_others(id);
        let target = self.target.get(id).cloned().unwrap_or_default();
        let assignment_epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("member");
        let mut keep = TopicPartitions::new();
        let mut revoke = TopicPartitions::new();
        let mut gain = TopicPartitions::new();
        let mut unreleased = false;
        for (t, ps) in &m.assigned {
            for &p in ps {
                let dst = if target.get(t).is_some_and(|q| q.contains(&p)) {
                    &mut keep
                } else {
                    &mut revoke
                };
                dst.entry(t.clone()).or_default().insert(p);
            }
        }
        for (t, ps) in &target {
            for &p in ps {
                if m.assigned.get(t).is_some_and(|q| q.contains(&p)) {
                    continue;
                }
                if taken.contains(&(t.clone(), p)) {
                    unreleased = true;
                } else {
                    gain.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        let set_epoch = |m: &mut Member, e: i32| {
            if m.epoch != e {
                m.previous_epoch = m.epoch;
                m.epoch = e;
            }
        };
        if !is_empty(&revoke) && still_owns(&revoke) {
            // Revocation first: the member keeps its epoch and is told only
            // what it keeps; it gets nothing new until it confirms.
            m.assigned = keep;
            m.revoking = revoke;
            if m.state != MemberState::UnrevokedPartitions {
                m.revoke_deadline = Some(now + m.rebalance_timeout);
            }
            m.state = MemberState::UnrevokedPartitions;
            return;
        }
        for (t, ps) in gain {
            keep.entry(t).or_default().extend(ps);
        }
        // The protocol's invariant: nothing handed out is owned by another
        // member (assigned or still being revoked).
        assert!(
            keep.iter()
                .all(|(t, ps)| ps.iter().all(|p| !taken.contains(&(t.clone(), *p)))),
            "group {}: member {id} would own a partition another member owns",
            self.id
        );
        m.assigned = keep;
        m.revoking.clear();
        m.revoke_deadline = None;
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        set_epoch(m, assignment_epoch);
    }

    /// Expire members whose session ended, or who did not revoke within
    /// their rebalance timeout. Returns the ids removed.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now >= m.session_deadline || m.revoke_deadline.is_some_and(|d| now >= d))
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove(id);
        }
        gone
    }

    /// OffsetCommit of partitions `parts` from a member (Kafka's
    /// `ConsumerGroup.validateOffsetCommit`): with epoch < 0 and no members,
    /// an admin commit; else the member must exist and commit at its
    /// current epoch, or at its previous one for partitions it still owns
    /// (a commit sent before the answer that moved it on arrived: the
    /// client cannot know its new epoch yet; Kafka 4.1 relaxes its check
    /// the same way, per partition).
    pub fn check_commit(
        &self,
        member_id: &str,
        epoch: i32,
        parts: &[(&str, i32)],
    ) -> Result<(), GroupError> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMember)?;
        let owns = |t: &str, p: i32| {
            [&m.assigned, &m.revoking]
                .iter()
                .any(|a| a.get(t).is_some_and(|ps| ps.contains(&p)))
        };
        // (Epoch 0 is a join: nothing is owned at it.)
        let in_flight = epoch == m.previous_epoch
            && epoch > 0
            && epoch < m.epoch
            && parts.iter().all(|(t, p)| owns(t, *p));
        if epoch != m.epoch && !in_flight {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// OffsetFetch v9 naming a member: epoch -1 is an admin read; else the
    /// member must exist at that epoch (Kafka's `validateOffsetFetch`).
    pub fn check_fetch(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        if epoch < 0 {
            return Ok(());
        }
        self.check_commit(member_id, epoch, &[])
    }

    pub fn view(&self) -> ConsumerGroupView {
        ConsumerGroupView {
            state: self.state_name(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor().name(),
            members: self
                .members
                .values()
                .map(|m| {
                    (
                        m.clone(),
                        self.target.get(&m.id).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }
}
