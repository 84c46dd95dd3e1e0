//! The state machine of one consumer group (Kafka's classic group
//! protocol, with the rules of Kafka's `GroupCoordinator`; each rule and
//! the test that shows it are listed in docs/kafka.md, "Group rules").
//! Synchronous and I/O-free: the coordinator owns the groups, calls these
//! methods with the current time, and awaits the receivers they hand out.
//!
//! ```text
//!   Empty --join--> PreparingRebalance --all members joined (after the initial
//!     ^                 ^   |             delay, for a group that was Empty), or
//!     |                 |   |             the rebalance deadline passed
//!     |   join, leave,  |   v             (laggards removed) -------------+
//!     |   expiry        |  CompletingRebalance <--------------------------+
//!     |                 |   | leader's SyncGroup (assignments)
//!     |                 |   v
//!     +-- last member --+- Stable
//!         leaves/expires
//! ```
//!
//! - A group that was Empty waits `initial_delay` (Kafka's
//!   `group.initial.rebalance.delay.ms`) before its first generation, and
//!   waits again (up to the rebalance timeout in all) while new members keep
//!   arriving, so consumers started together share one generation.
//! - A new member's join, a leader's rejoin, or a rejoin with changed
//!   protocols starts a rebalance; a follower rejoining with the same
//!   protocols gets the current generation back and no rebalance.
//! - The JoinGroup answer waits until every member has rejoined (they learn
//!   about the rebalance from REBALANCE_IN_PROGRESS on their heartbeats) or
//!   the rebalance deadline passes; members that did not rejoin are removed.
//! - Members that stop heartbeating for their session timeout are removed,
//!   except while their JoinGroup or SyncGroup is parked here (Kafka's
//!   rule too: a member awaiting a rebalance satisfies its heartbeats).
//! - A new member (joined with no member id, not yet in a generation) whose
//!   JoinGroup is still unanswered [`NEW_MEMBER_JOIN_TIMEOUT`] after it
//!   joined is removed (Kafka's `NewMemberJoinTimeoutMs`): a client that
//!   gave up waiting and joined again leaves no defunct member for longer.
//! - Pending sync: every member of a new generation must send its SyncGroup
//!   within the rebalance timeout (the largest member's); when that
//!   deadline passes, in CompletingRebalance or Stable, the members that
//!   did not are removed and the group rebalances (Kafka's DelayedSync).
//! - The leader (the longest-standing member) gets every member's
//!   subscription and sends the assignment in its SyncGroup; followers'
//!   SyncGroups wait for it.
//! - Static members (`group.instance.id`): a member restarting with the same
//!   instance id takes over the old member's place under a new member id,
//!   without a rebalance when the group is stable; the old id is fenced
//!   (FENCED_INSTANCE_ID on anything it sends).

use super::records::{GroupValue, MemberValue};
use super::{GroupError, GroupView, JoinOutcome, JoinParams, MemberView, SyncOutcome};
use bytes::Bytes;
use futures::channel::oneshot;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub type JoinReply = oneshot::Receiver<Result<JoinOutcome, GroupError>>;
pub type SyncReply = oneshot::Receiver<Result<SyncOutcome, GroupError>>;

/// Session timeouts accepted (Kafka's defaults are 6 s .. 30 min; tests go lower).
pub const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;
/// Members per group, so one group cannot take the coordinator's memory.
pub const MEMBERS_MAX: usize = 10_000;
/// How long a new member's JoinGroup may wait for its first generation
/// before the member is removed (Kafka's `NewMemberJoinTimeoutMs`, a
/// constant there too).
pub const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Characters of the client or instance id that start a member id.
const MEMBER_ID_PREFIX_CHARS_MAX: usize = 200;

/// Whether the strings a JoinGroup brings fit the group's stored record
/// (int16 length prefixes); a longer protocol type or name, or instance
/// id, is refused as an inconsistent protocol.
fn storable(p: &JoinParams) -> bool {
    let max = super::records::STRING_LEN_MAX;
    p.protocol_type.len() <= max
        && p.protocols.iter().all(|(n, _)| n.len() <= max)
        && p.instance_id.as_ref().is_none_or(|i| i.len() <= max)
        && p.client_id.len() <= max
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    /// Kafka's name for the state (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// Who a request speaks for: its member id and, for a static member, its
/// `group.instance.id`.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
}

impl<'a> MemberRef<'a> {
    pub fn dynamic(member_id: &'a str) -> Self {
        MemberRef {
            member_id,
            instance_id: None,
        }
    }
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    /// Order of first join: the leader is the longest-standing member.
    seq: u64,
    /// When the member joined with no member id, until it is first part of
    /// a generation (Kafka's `isNew`): bounds its wait by
    /// [`NEW_MEMBER_JOIN_TIMEOUT`].
    new_since: Option<Instant>,
    /// In the current generation and its SyncGroup not yet received
    /// (Kafka's pending-sync set).
    pending_sync: bool,
    join_waiter: Option<oneshot::Sender<Result<JoinOutcome, GroupError>>>,
    sync_waiter: Option<oneshot::Sender<Result<SyncOutcome, GroupError>>>,
}

impl Member {
    fn fail_waiters(&mut self, e: GroupError) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(Err(e.clone()));
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(Err(e));
        }
    }

    /// Take the fields a JoinGroup carries.
    fn update(&mut self, p: &JoinParams, now: Instant) {
        self.client_id = p.client_id.clone();
        self.session_timeout = Duration::from_millis(p.session_timeout_ms as u64);
        let rebalance_ms = if p.rebalance_timeout_ms > 0 {
            p.rebalance_timeout_ms
        } else {
            p.session_timeout_ms
        };
        self.rebalance_timeout = Duration::from_millis(rebalance_ms as u64);
        self.protocol_type = p.protocol_type.clone();
        self.protocols = p.protocols.clone();
        self.last_seen = now;
    }

    /// Park a JoinGroup; an earlier parked one is answered RebalanceInProgress.
    fn park_join(&mut self) -> JoinReply {
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.join_waiter.replace(tx) {
            let _ = old.send(Err(GroupError::RebalanceInProgress));
        }
        rx
    }
}

/// Why [`Group::tick`] removed a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Not heard from for its session timeout.
    Session,
    /// In a generation whose sync deadline passed without its SyncGroup.
    SyncMissed,
    /// A new member whose JoinGroup waited [`NEW_MEMBER_JOIN_TIMEOUT`].
    NewMemberJoin,
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::Session => "session timeout",
            Expiry::SyncMissed => "no SyncGroup within the rebalance timeout",
            Expiry::NewMemberJoin => "a new member's JoinGroup waited too long for a generation",
        })
    }
}

pub enum SyncStep {
    Now(SyncOutcome),
    Wait(SyncReply),
}

/// The initial rebalance of a group that was Empty (Kafka's
/// InitialDelayedJoin): it completes at `until`, unless members joined
/// meanwhile and `remaining` allows another wait.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    until: Instant,
    remaining: Duration,
    new_member_added: bool,
}

/// One group. Lifecycle: created by the coordinator on the first JoinGroup
/// naming it, or restored from its stored membership after a restart
/// ([`Group::restore`]); lives (possibly Empty) until DeleteGroups; owned by the
/// coordinator of its shard, on that shard's core only.
pub struct Group {
    pub id: String,
    pub phase: Phase,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> the member id that holds it now.
    statics: BTreeMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// CompletingRebalance or Stable with members whose SyncGroup for this
    /// generation has not come: when they are removed.
    sync_deadline: Option<Instant>,
    /// `group.initial.rebalance.delay.ms`; zero turns the delay off.
    initial_delay: Duration,
    delayed: Option<InitialDelay>,
    next_seq: u64,
    /// The group emptied (a new generation with no members) and that has
    /// not been stored yet; the coordinator stores it and clears this.
    pub empty_unstored: bool,
    /// When (wall ms) the group last became Empty, if known: its offsets
    /// expire that long after (the coordinator sets it; Kafka's
    /// `currentStateTimestamp`).
    pub empty_since_ms: Option<i64>,
}

impl Group {
    pub fn new(id: String, initial_delay: Duration) -> Self {
        Group {
            id,
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            statics: BTreeMap::new(),
            rebalance_deadline: None,
            sync_deadline: None,
            initial_delay,
            delayed: None,
            next_seq: 0,
            empty_unstored: false,
            empty_since_ms: None,
        }
    }

    /// A group as it was last stored (after a restart): Stable with the
    /// stored generation, protocol, leader, members and assignments when it
    /// had members, else Empty. Every member's session starts afresh at
    /// `now`, so members that are still alive keep heartbeating and
    /// committing with their generation, without a rebalance; the others
    /// expire after their session timeout, as in Kafka.
    pub fn restore(id: String, v: GroupValue, initial_delay: Duration, now: Instant) -> Self {
        let mut g = Group::new(id, initial_delay);
        g.generation = v.generation;
        g.protocol_type = Some(v.protocol_type);
        let protocol = match v.protocol {
            Some(p) if !v.members.is_empty() => p,
            _ => {
                g.empty_since_ms =
                    (v.current_state_timestamp_ms >= 0).then_some(v.current_state_timestamp_ms);
                return g;
            }
        };
        // The leader keeps the most seniority; the rest keep their order.
        let mut members = v.members;
        members.sort_by_key(|m| Some(&m.member_id) != v.leader.as_ref());
        for mv in members {
            let seq = g.next_seq;
            g.next_seq += 1;
            if let Some(instance) = &mv.group_instance_id {
                g.statics.insert(instance.clone(), mv.member_id.clone());
            }
            let m = Member {
                id: mv.member_id.clone(),
                instance_id: mv.group_instance_id,
                client_id: mv.client_id,
                session_timeout: Duration::from_millis(mv.session_timeout_ms.max(0) as u64),
                rebalance_timeout: Duration::from_millis(mv.rebalance_timeout_ms.max(0) as u64),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                // Only the chosen protocol's metadata is stored (as in
                // Kafka): a member rejoining with more is a change.
                protocols: vec![(protocol.clone(), mv.subscription)],
                assignment: mv.assignment,
                last_seen: now,
                seq,
                new_since: None,
                pending_sync: false,
                join_waiter: None,
                sync_waiter: None,
            };
            g.members.insert(mv.member_id, m);
        }
        g.leader = v.leader.filter(|l| g.members.contains_key(l));
        if g.leader.is_none() {
            g.leader = g
                .members
                .values()
                .min_by_key(|m| m.seq)
                .map(|m| m.id.clone());
        }
        g.protocol = Some(protocol);
        g.phase = Phase::Stable;
        g
    }

    /// The group as Kafka stores it (group metadata value), with each
    /// member's assignment from `assignments` when given (the leader's
    /// SyncGroup, before it is applied), else its current one.
    pub fn snapshot(&self, assignments: Option<&[(String, Bytes)]>, now_ms: i64) -> GroupValue {
        let protocol = self.protocol.clone();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            leader: self.leader.clone(),
            current_state_timestamp_ms: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: String::new(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128)
                        as i32,
                    session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == protocol.as_ref())
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: match assignments {
                        Some(a) => a
                            .iter()
                            .find(|(id, _)| *id == m.id)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
            protocol,
        }
    }

    /// If this SyncGroup is the leader's and will complete the rebalance,
    /// the group as it will then be, to store before it is applied (Kafka
    /// stores the assignment before anyone receives it). None otherwise:
    /// [`Group::sync`] answers those.
    pub fn leader_sync_snapshot(
        &self,
        member: MemberRef<'_>,
        generation: i32,
        assignments: &[(String, Bytes)],
        now_ms: i64,
    ) -> Option<GroupValue> {
        let completes = self.validate_member(member).is_ok()
            && generation == self.generation
            && self.phase == Phase::CompletingRebalance
            && self.leader.as_deref() == Some(member.member_id);
        completes.then(|| self.snapshot(Some(assignments), now_ms))
    }

    /// The leader's assignment of `generation` could not be stored: if the
    /// group still awaits it, everyone rejoins (Kafka's rule).
    pub fn assignment_not_stored(&mut self, generation: i32, now: Instant) {
        if self.phase == Phase::CompletingRebalance && self.generation == generation {
            self.prepare_rebalance(now);
        }
    }

    /// Kafka's `supportsProtocols`: an Empty group takes any non-empty
    /// protocol list; otherwise the type must match and one protocol must be
    /// one every other member supports.
    fn supports(&self, p: &JoinParams) -> bool {
        if p.protocol_type.is_empty() || p.protocols.is_empty() {
            return false;
        }
        let mut others = self
            .members
            .values()
            .filter(|m| m.id != p.member_id)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(p.protocol_type.as_str()) {
            return false;
        }
        p.protocols.iter().any(|(n, _)| {
            self.members
                .values()
                .filter(|m| m.id != p.member_id)
                .all(|m| m.protocols.iter().any(|(x, _)| x == n))
        })
    }

    /// Kafka's `validateMember`: a static member is known by its instance
    /// id, and a member id other than the one holding it is fenced.
    fn validate_member(&self, m: MemberRef<'_>) -> Result<(), GroupError> {
        if let Some(instance) = m.instance_id {
            return match self.statics.get(instance) {
                None => Err(GroupError::UnknownMember),
                Some(id) if id != m.member_id => Err(GroupError::FencedInstance),
                Some(_) => Ok(()),
            };
        }
        if !self.members.contains_key(m.member_id) {
            return Err(GroupError::UnknownMember);
        }
        Ok(())
    }

    fn new_member_id(p: &JoinParams) -> String {
        // Bounded, so a member id always fits the stored record's string.
        let prefix: String = p
            .instance_id
            .as_deref()
            .unwrap_or(&p.client_id)
            .chars()
            .take(MEMBER_ID_PREFIX_CHARS_MAX)
            .collect();
        format!("{prefix}-{:032x}", rand::random::<u128>())
    }

    pub fn join(&mut self, p: JoinParams, now: Instant) -> Result<JoinReply, GroupError> {
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&p.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if !self.supports(&p) || !storable(&p) {
            return Err(GroupError::InconsistentProtocol);
        }
        if p.member_id.is_empty() {
            if let Some(old) = p.instance_id.as_ref().and_then(|i| self.statics.get(i)) {
                let old = old.clone();
                return Ok(self.replace_static(&old, p, now));
            }
            return self.join_new(p, now);
        }
        self.validate_member(MemberRef {
            member_id: &p.member_id,
            instance_id: p.instance_id.as_deref(),
        })?;
        let id = p.member_id.clone();
        let m = self.members.get_mut(&id).expect("validated");
        let same = m.protocols == p.protocols;
        m.update(&p, now);
        self.protocol_type = Some(p.protocol_type);
        match self.phase {
            Phase::Empty => Err(GroupError::UnknownMember),
            Phase::PreparingRebalance => {
                let rx = self.members.get_mut(&id).expect("validated").park_join();
                self.try_complete_join(now);
                Ok(rx)
            }
            // Kafka: the member lost its JoinGroup answer; send it again.
            Phase::CompletingRebalance if same => Ok(self.answer_now(&id, false)),
            // Kafka: a follower rejoining unchanged changes nothing.
            Phase::Stable if same && self.leader.as_deref() != Some(id.as_str()) => {
                Ok(self.answer_now(&id, false))
            }
            Phase::CompletingRebalance | Phase::Stable => {
                let rx = self.members.get_mut(&id).expect("validated").park_join();
                self.prepare_rebalance(now);
                self.try_complete_join(now);
                Ok(rx)
            }
        }
    }

    fn join_new(&mut self, p: JoinParams, now: Instant) -> Result<JoinReply, GroupError> {
        if self.members.len() >= MEMBERS_MAX {
            return Err(GroupError::GroupFull);
        }
        let id = Self::new_member_id(&p);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut m = Member {
            id: id.clone(),
            instance_id: p.instance_id.clone(),
            client_id: String::new(),
            session_timeout: Duration::ZERO,
            rebalance_timeout: Duration::ZERO,
            protocol_type: String::new(),
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_seen: now,
            seq,
            new_since: Some(now),
            pending_sync: false,
            join_waiter: None,
            sync_waiter: None,
        };
        m.update(&p, now);
        let rx = m.park_join();
        if let Some(instance) = &p.instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        self.members.insert(id, m);
        self.protocol_type = Some(p.protocol_type);
        if let Some(d) = self.delayed.as_mut() {
            d.new_member_added = true;
        }
        self.prepare_rebalance(now);
        self.try_complete_join(now);
        Ok(rx)
    }

    /// A static member rejoined with no member id (it restarted): it takes
    /// the old member's place, assignment and seniority under a new id; the
    /// old id is fenced.
    fn replace_static(&mut self, old_id: &str, p: JoinParams, now: Instant) -> JoinReply {
        let mut m = self.members.remove(old_id).expect("statics name members");
        m.fail_waiters(GroupError::FencedInstance);
        let id = Self::new_member_id(&p);
        m.id = id.clone();
        m.update(&p, now);
        let instance = p.instance_id.clone().expect("a static member");
        self.statics.insert(instance, id.clone());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(id.clone());
        }
        self.members.insert(id.clone(), m);
        match self.phase {
            Phase::Stable
                if self.select_protocol() == self.protocol.clone().unwrap_or_default() =>
            {
                // Kafka: the group's assignment still holds; the member
                // gets the current generation and syncs for its share.
                self.answer_now(&id, true)
            }
            _ => {
                let rx = self.members.get_mut(&id).expect("inserted").park_join();
                // Kafka rebalances from CompletingRebalance too: the old
                // member may already have been handed the leader's role.
                self.prepare_rebalance(now);
                self.try_complete_join(now);
                rx
            }
        }
    }

    /// A JoinGroup answered at once with the current generation. A leader
    /// gets the roster, and with `skip_assignment` is told the assignment
    /// stands (JoinGroup v9+).
    fn answer_now(&mut self, id: &str, skip_assignment: bool) -> JoinReply {
        let (tx, rx) = oneshot::channel();
        let leader = self.leader.clone().unwrap_or_default();
        let out = JoinOutcome {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members: if leader == id {
                self.roster()
            } else {
                Vec::new()
            },
            skip_assignment: skip_assignment && leader == id,
            leader,
        };
        let _ = tx.send(Ok(out));
        rx
    }

    pub fn sync(
        &mut self,
        member: MemberRef<'_>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<SyncStep, GroupError> {
        self.validate_member(member)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let member_id = member.member_id;
        if matches!(self.phase, Phase::CompletingRebalance | Phase::Stable) {
            self.synced(member_id);
        }
        match self.phase {
            Phase::Empty => Err(GroupError::UnknownMember),
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            Phase::Stable => Ok(SyncStep::Now(self.sync_outcome(member_id))),
            Phase::CompletingRebalance => {
                self.members.get_mut(member_id).expect("checked").last_seen = now;
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.phase = Phase::Stable;
                    let ids = self.member_ids(|m| m.sync_waiter.is_some());
                    for id in ids {
                        let out = self.sync_outcome(&id);
                        let m = self.members.get_mut(&id).expect("listed");
                        // Kafka: an answered member's session starts afresh.
                        m.last_seen = now;
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(Ok(out));
                        }
                    }
                    Ok(SyncStep::Now(self.sync_outcome(member_id)))
                } else {
                    let (tx, rx) = oneshot::channel();
                    let m = self.members.get_mut(member_id).expect("checked");
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(Err(GroupError::RebalanceInProgress));
                    }
                    Ok(SyncStep::Wait(rx))
                }
            }
        }
    }

    /// The member's SyncGroup for this generation came: it is no longer
    /// pending, and with nobody pending the sync deadline is off.
    fn synced(&mut self, member_id: &str) {
        self.members
            .get_mut(member_id)
            .expect("validated")
            .pending_sync = false;
        if self.members.values().all(|m| !m.pending_sync) {
            self.sync_deadline = None;
        }
    }

    /// Ids of the members for which `pred` holds (collected, so the caller
    /// may then change the members).
    fn member_ids(&self, pred: impl Fn(&Member) -> bool) -> Vec<String> {
        self.members
            .values()
            .filter(|m| pred(m))
            .map(|m| m.id.clone())
            .collect()
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol.clone().unwrap_or_default(),
        }
    }

    pub fn heartbeat(
        &mut self,
        member: MemberRef<'_>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.validate_member(member)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let m = self.members.get_mut(member.member_id).expect("validated");
        m.last_seen = now;
        match self.phase {
            Phase::Empty => Err(GroupError::UnknownMember),
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            Phase::CompletingRebalance | Phase::Stable => Ok(()),
        }
    }

    /// LeaveGroup: a member leaves by its id, or a static member by its
    /// instance id (the member id may then be empty, as admin tools send it).
    pub fn leave(&mut self, member: MemberRef<'_>, now: Instant) -> Result<(), GroupError> {
        let id = match member.instance_id {
            Some(instance) => match self.statics.get(instance) {
                None => return Err(GroupError::UnknownMember),
                Some(id) if !member.member_id.is_empty() && id != member.member_id => {
                    return Err(GroupError::FencedInstance)
                }
                Some(id) => id.clone(),
            },
            None => member.member_id.to_string(),
        };
        if !self.remove_member(&id, GroupError::UnknownMember) {
            return Err(GroupError::UnknownMember);
        }
        self.after_removal(now);
        Ok(())
    }

    /// Remove a member (and its instance id); its parked requests get `e`.
    fn remove_member(&mut self, id: &str, e: GroupError) -> bool {
        let Some(mut m) = self.members.remove(id) else {
            return false;
        };
        if let Some(instance) = &m.instance_id {
            if self.statics.get(instance).map(String::as_str) == Some(id) {
                self.statics.remove(instance);
            }
        }
        m.fail_waiters(e);
        true
    }

    pub fn view(&self) -> GroupView {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupView {
            state: self.phase.name(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            members: self
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        }
    }

    /// Whether an OffsetCommit may be stored now (Kafka's
    /// `validateOffsetCommit`, in its order):
    /// - generation < 0 on an Empty group: a standalone consumer or an
    ///   admin client, accepted;
    /// - otherwise a member must be named: unknown -> UNKNOWN_MEMBER_ID,
    ///   an instance id held by another member -> FENCED_INSTANCE_ID, a
    ///   generation other than the group's -> ILLEGAL_GENERATION;
    /// - neither generation nor member on a group with members ->
    ///   UNKNOWN_MEMBER_ID;
    /// - a valid member while the group awaits its leader's assignment
    ///   (CompletingRebalance) -> REBALANCE_IN_PROGRESS. A commit with the
    ///   current generation while members rejoin (PreparingRebalance) is
    ///   accepted, so consumers can commit what they processed before
    ///   they rejoin.
    pub fn check_commit(&self, member: MemberRef<'_>, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && self.phase == Phase::Empty {
            return Ok(());
        }
        if generation >= 0 || !member.member_id.is_empty() || member.instance_id.is_some() {
            self.validate_member(member)?;
            if generation != self.generation {
                return Err(GroupError::IllegalGeneration);
            }
        } else if self.phase != Phase::Empty {
            return Err(GroupError::UnknownMember);
        }
        if self.phase == Phase::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Expire silent members and new members that waited too long, remove
    /// members that missed the sync deadline, end an initial delay, and
    /// finish a rebalance whose deadline passed. Returns the removed
    /// members' ids, each with why.
    pub fn tick(&mut self, now: Instant) -> Vec<(String, Expiry)> {
        let mut expired: Vec<(String, Expiry)> = self
            .members
            .values()
            .filter_map(|m| {
                let why = if m
                    .new_since
                    .is_some_and(|t| now.duration_since(t) >= NEW_MEMBER_JOIN_TIMEOUT)
                {
                    // Kafka: parked or not, a new member's wait is bounded.
                    Expiry::NewMemberJoin
                } else if m.join_waiter.is_some() || m.sync_waiter.is_some() {
                    // Awaiting the rebalance counts as heartbeating.
                    return None;
                } else if now.duration_since(m.last_seen) > m.session_timeout {
                    Expiry::Session
                } else {
                    return None;
                };
                Some((m.id.clone(), why))
            })
            .collect();
        if matches!(self.phase, Phase::CompletingRebalance | Phase::Stable)
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            self.sync_deadline = None;
            for m in self.members.values() {
                if m.pending_sync && !expired.iter().any(|(id, _)| *id == m.id) {
                    expired.push((m.id.clone(), Expiry::SyncMissed));
                }
            }
        }
        for (id, _) in &expired {
            self.remove_member(id, GroupError::UnknownMember);
        }
        if !expired.is_empty() {
            self.after_removal(now);
        }
        if let Some(d) = self.delayed.as_mut() {
            if now >= d.until {
                if d.new_member_added && !d.remaining.is_zero() {
                    // Kafka: members keep arriving; wait once more.
                    let step = self.initial_delay.min(d.remaining);
                    d.remaining -= step;
                    d.until = now + step;
                    d.new_member_added = false;
                } else {
                    self.delayed = None;
                    if self.phase == Phase::PreparingRebalance {
                        self.complete_join(now);
                    }
                }
            }
        }
        if self.phase == Phase::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| now >= d)
        {
            self.complete_join(now);
        }
        expired
    }

    fn after_removal(&mut self, now: Instant) {
        if self
            .leader
            .as_ref()
            .is_some_and(|l| !self.members.contains_key(l))
        {
            self.leader = None;
        }
        match self.phase {
            Phase::Stable | Phase::CompletingRebalance => self.prepare_rebalance(now),
            Phase::PreparingRebalance | Phase::Empty => {}
        }
        self.try_complete_join(now);
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.phase == Phase::PreparingRebalance {
            return;
        }
        self.sync_deadline = None;
        for m in self.members.values_mut() {
            m.pending_sync = false;
        }
        if self.phase == Phase::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    // Its wait counted as heartbeats; its session restarts.
                    m.last_seen = now;
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let timeout = self.rebalance_timeout();
        if self.phase == Phase::Empty && !self.initial_delay.is_zero() {
            // Kafka's InitialDelayedJoin: the first wait is the configured
            // delay; the rest of the rebalance timeout is left for more.
            self.delayed = Some(InitialDelay {
                until: now + self.initial_delay,
                remaining: timeout.saturating_sub(self.initial_delay),
                new_member_added: false,
            });
            self.rebalance_deadline = None;
        } else {
            self.rebalance_deadline = Some(now + timeout);
        }
        self.phase = Phase::PreparingRebalance;
    }

    /// The group's rebalance timeout: the largest of its members' (Kafka's
    /// `rebalanceTimeoutMs`), bounding both the join and the sync phase.
    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn try_complete_join(&mut self, now: Instant) {
        if self.phase == Phase::PreparingRebalance
            && self.delayed.is_none()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now);
        }
    }

    /// (member id, instance id, metadata for the group's protocol) of every member.
    fn roster(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (m.id.clone(), m.instance_id.clone(), meta)
            })
            .collect()
    }

    /// End the join phase: members that did not rejoin are removed, a new
    /// generation starts, everyone gets its JoinGroup answer.
    fn complete_join(&mut self, now: Instant) {
        assert_eq!(self.phase, Phase::PreparingRebalance);
        let laggards = self.member_ids(|m| m.join_waiter.is_none());
        for id in laggards {
            self.remove_member(&id, GroupError::UnknownMember);
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.rebalance_deadline = None;
        self.delayed = None;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.empty_unstored = true;
            self.protocol = None;
            self.leader = None;
            return;
        }
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.seq)
                .map(|m| m.id.clone());
        }
        let leader = self.leader.clone().expect("a non-empty group has a leader");
        let protocol = self.select_protocol();
        self.protocol = Some(protocol.clone());
        self.phase = Phase::CompletingRebalance;
        let roster = self.roster();
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        // Kafka's DelayedSync: everyone's SyncGroup is due within the
        // group's rebalance timeout (the largest member's).
        self.sync_deadline = Some(now + self.rebalance_timeout());
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = now;
            m.new_since = None;
            m.pending_sync = true;
            let out = JoinOutcome {
                generation: self.generation,
                protocol_type: protocol_type.clone(),
                protocol_name: protocol.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == leader {
                    roster.clone()
                } else {
                    Vec::new()
                },
                skip_assignment: false,
            };
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Ok(out));
            }
        }
    }

    /// The protocol every member supports that most members prefer (ties:
    /// the leader's order).
    fn select_protocol(&self) -> String {
        let leader = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .expect("called with a leader");
        let common: Vec<&str> = leader
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == n))
            })
            .collect();
        let mut votes = vec![0usize; common.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(n, _)| common.iter().position(|c| c == n))
            {
                votes[i] += 1;
            }
        }
        let best = (0..common.len())
            .max_by_key(|&i| (votes[i], std::cmp::Reverse(i)))
            .map(|i| common[i].to_string());
        // Joins are refused unless they share a protocol with every member,
        // so the leader's list always has a common one.
        best.unwrap_or_else(|| leader.protocols[0].0.clone())
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
pub(super) mod tests;
