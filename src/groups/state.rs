//! The state machine of one consumer group (Kafka's classic group
//! protocol). Synchronous and I/O-free: the coordinator owns the groups,
//! calls these methods with the current time, and awaits the receivers
//! they hand out.
//!
//! ```text
//!   Empty --join--> PreparingRebalance --all members joined, or the rebalance
//!     ^                 ^   |             deadline passed (laggards removed)--+
//!     |   join, leave,  |   v                                                 |
//!     |   expiry        |  CompletingRebalance <------------------------------+
//!     |                 |   | leader's SyncGroup (assignments)
//!     |                 |   v
//!     +-- last member --+- Stable
//!         leaves/expires
//! ```
//!
//! - A join (new or known member) starts a rebalance; the JoinGroup answer
//!   waits until every member has rejoined (they learn about the rebalance
//!   from REBALANCE_IN_PROGRESS on their heartbeats) or the rebalance
//!   deadline passes.
//! - Members that stop heartbeating for their session timeout are removed,
//!   except while their JoinGroup is parked here (Kafka's rule too).
//! - The leader (the longest-standing member) gets every member's
//!   subscription and sends the assignment in its SyncGroup; followers'
//!   SyncGroups wait for it.
//! - Static membership (group.instance.id) is accepted but treated as dynamic.

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
}

pub enum SyncStep {
    Now(SyncOutcome),
    Wait(SyncReply),
}

pub struct Group {
    pub id: String,
    pub phase: Phase,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    rebalance_deadline: Option<Instant>,
    next_seq: u64,
}

impl Group {
    pub fn new(id: String) -> Self {
        Group {
            id,
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: None,
            next_seq: 0,
        }
    }

    pub fn join(&mut self, p: JoinParams, now: Instant) -> Result<JoinReply, GroupError> {
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&p.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if p.protocol_type.is_empty() || p.protocols.is_empty() {
            return Err(GroupError::InconsistentProtocol);
        }
        let others = self.members.values().filter(|m| m.id != p.member_id);
        let mut others = others.peekable();
        if others.peek().is_some() {
            if self.protocol_type.as_deref() != Some(p.protocol_type.as_str()) {
                return Err(GroupError::InconsistentProtocol);
            }
            let shared = |name: &str| {
                self.members
                    .values()
                    .filter(|m| m.id != p.member_id)
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            };
            if !p.protocols.iter().any(|(n, _)| shared(n)) {
                return Err(GroupError::InconsistentProtocol);
            }
        }
        let member_id = if p.member_id.is_empty() {
            if self.members.len() >= MEMBERS_MAX {
                return Err(GroupError::GroupFull);
            }
            let id = format!("{}-{:032x}", p.client_id, rand::random::<u128>());
            let seq = self.next_seq;
            self.next_seq += 1;
            self.members.insert(
                id.clone(),
                Member {
                    id: id.clone(),
                    instance_id: None,
                    client_id: String::new(),
                    session_timeout: Duration::ZERO,
                    rebalance_timeout: Duration::ZERO,
                    protocol_type: String::new(),
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    seq,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
            id
        } else if self.members.contains_key(&p.member_id) {
            p.member_id.clone()
        } else {
            return Err(GroupError::UnknownMember);
        };
        let (tx, rx) = oneshot::channel();
        let m = self
            .members
            .get_mut(&member_id)
            .expect("inserted or present");
        m.instance_id = p.instance_id;
        m.client_id = p.client_id;
        m.session_timeout = Duration::from_millis(p.session_timeout_ms as u64);
        let rebalance_ms = if p.rebalance_timeout_ms > 0 {
            p.rebalance_timeout_ms
        } else {
            p.session_timeout_ms
        };
        m.rebalance_timeout = Duration::from_millis(rebalance_ms as u64);
        m.protocol_type = p.protocol_type.clone();
        m.protocols = p.protocols;
        m.last_seen = now;
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(Err(GroupError::RebalanceInProgress));
        }
        self.protocol_type = Some(p.protocol_type);
        self.prepare_rebalance(now);
        self.try_complete_join(now);
        Ok(rx)
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<SyncStep, GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMember);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
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
                    let waiting = self.member_ids(|m| m.sync_waiter.is_some());
                    for id in waiting {
                        let out = self.sync_outcome(&id);
                        if let Some(w) =
                            self.members.get_mut(&id).and_then(|m| m.sync_waiter.take())
                        {
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
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMember);
        };
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        m.last_seen = now;
        match self.phase {
            Phase::Empty => Err(GroupError::UnknownMember),
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            Phase::CompletingRebalance | Phase::Stable => Ok(()),
        }
    }

    pub fn leave(&mut self, member_id: &str, now: Instant) -> Result<(), GroupError> {
        let Some(mut m) = self.members.remove(member_id) else {
            return Err(GroupError::UnknownMember);
        };
        m.fail_waiters(GroupError::UnknownMember);
        self.after_removal(now);
        Ok(())
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

    /// Whether a member may commit offsets now (Kafka's rules: a commit
    /// with the current generation is accepted even mid-rebalance, so
    /// consumers can commit what they processed before rejoining).
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(()); // a standalone (manually assigned) consumer
        }
        if self.phase == Phase::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMember);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// Expire silent members and finish a rebalance whose deadline passed.
    /// Returns the ids of the expired members.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let expired = self.member_ids(|m| {
            m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
        });
        for id in &expired {
            if let Some(mut m) = self.members.remove(id) {
                m.fail_waiters(GroupError::UnknownMember);
            }
        }
        if !expired.is_empty() {
            self.after_removal(now);
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
        if self.phase == Phase::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.phase = Phase::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    fn try_complete_join(&mut self, now: Instant) {
        if self.phase == Phase::PreparingRebalance
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now);
        }
    }

    /// End the join phase: members that did not rejoin are removed, a new
    /// generation starts, everyone gets its JoinGroup answer.
    fn complete_join(&mut self, now: Instant) {
        assert_eq!(self.phase, Phase::PreparingRebalance);
        let laggards = self.member_ids(|m| m.join_waiter.is_none());
        for id in laggards {
            if let Some(mut m) = self.members.remove(&id) {
                m.fail_waiters(GroupError::UnknownMember);
            }
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
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
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
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
            .collect();
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = now;
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
mod tests {
    use super::*;

    fn params(member: &str) -> JoinParams {
        JoinParams {
            group_id: "g".into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            session_timeout_ms: 6000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        }
    }

    fn joined(rx: &mut JoinReply) -> JoinOutcome {
        rx.try_recv().unwrap().expect("answered").unwrap()
    }

    #[test]
    fn two_members_rebalance_then_one_expires() {
        let t0 = Instant::now();
        let mut g = Group::new("g".into());
        let mut a = g.join(params(""), t0).unwrap();
        let ja = joined(&mut a);
        assert_eq!((ja.generation, ja.leader == ja.member_id), (1, true));
        assert_eq!(ja.members.len(), 1);
        assert!(matches!(
            g.sync(
                &ja.member_id,
                1,
                vec![(ja.member_id.clone(), Bytes::from_static(b"all"))],
                t0
            ),
            Ok(SyncStep::Now(_))
        ));
        assert_eq!(g.phase, Phase::Stable);
        // B joins: A must rejoin; B's answer waits.
        let mut b = g.join(params(""), t0).unwrap();
        assert!(b.try_recv().unwrap().is_none());
        assert_eq!(
            g.heartbeat(&ja.member_id, 1, t0),
            Err(GroupError::RebalanceInProgress)
        );
        let mut a2 = g.join(params(&ja.member_id), t0).unwrap();
        let ja2 = joined(&mut a2);
        let jb = joined(&mut b);
        assert_eq!(ja2.generation, 2);
        assert_eq!(
            ja2.leader, ja.member_id,
            "the longest-standing member leads"
        );
        assert_eq!(ja2.members.len(), 2);
        assert!(jb.members.is_empty());
        // B syncs first and waits for the leader.
        let SyncStep::Wait(mut sb) = g.sync(&jb.member_id, 2, vec![], t0).unwrap() else {
            panic!("follower waits")
        };
        let asg = vec![
            (ja.member_id.clone(), Bytes::from_static(b"p0")),
            (jb.member_id.clone(), Bytes::from_static(b"p1")),
        ];
        let SyncStep::Now(sa) = g.sync(&ja.member_id, 2, asg, t0).unwrap() else {
            panic!("leader answered at once")
        };
        assert_eq!(&sa.assignment[..], b"p0");
        assert_eq!(
            &sb.try_recv().unwrap().unwrap().unwrap().assignment[..],
            b"p1"
        );
        // B goes silent: after its session timeout it is removed.
        let t1 = t0 + Duration::from_millis(4000);
        g.heartbeat(&ja.member_id, 2, t1).unwrap();
        assert!(g.tick(t1).is_empty());
        let t2 = t0 + Duration::from_millis(6500);
        assert_eq!(g.tick(t2), vec![jb.member_id.clone()]);
        assert_eq!(g.phase, Phase::PreparingRebalance);
        let mut a3 = g.join(params(&ja.member_id), t2).unwrap();
        let ja3 = joined(&mut a3);
        assert_eq!((ja3.generation, ja3.members.len()), (3, 1));
    }

    #[test]
    fn leave_and_commit_rules() {
        let t0 = Instant::now();
        let mut g = Group::new("g".into());
        assert_eq!(g.check_commit("", -1), Ok(()), "standalone commit");
        let mut a = g.join(params(""), t0).unwrap();
        let ja = joined(&mut a);
        assert_eq!(
            g.check_commit(&ja.member_id, 1),
            Err(GroupError::RebalanceInProgress)
        );
        g.sync(&ja.member_id, 1, vec![], t0).unwrap();
        assert_eq!(g.check_commit(&ja.member_id, 1), Ok(()));
        assert_eq!(
            g.check_commit(&ja.member_id, 0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(g.check_commit("nobody", 1), Err(GroupError::UnknownMember));
        g.leave(&ja.member_id, t0).unwrap();
        assert_eq!(g.phase, Phase::Empty);
        assert_eq!(g.leave(&ja.member_id, t0), Err(GroupError::UnknownMember));
        assert_eq!(
            g.join(params("ghost"), t0).err(),
            Some(GroupError::UnknownMember)
        );
    }

    #[test]
    fn laggards_are_dropped_at_the_rebalance_deadline() {
        let t0 = Instant::now();
        let mut g = Group::new("g".into());
        let ja = joined(&mut g.join(params(""), t0).unwrap());
        g.sync(&ja.member_id, 1, vec![], t0).unwrap();
        let mut b = g.join(params(""), t0).unwrap();
        // A keeps heartbeating but never rejoins.
        let t1 = t0 + Duration::from_millis(5000);
        assert_eq!(
            g.heartbeat(&ja.member_id, 1, t1),
            Err(GroupError::RebalanceInProgress)
        );
        g.tick(t1);
        assert!(b.try_recv().unwrap().is_none());
        g.tick(t0 + Duration::from_millis(10_001));
        let jb = joined(&mut b);
        assert_eq!((jb.members.len(), jb.leader == jb.member_id), (1, true));
        assert!(!g.members.contains_key(&ja.member_id));
    }
}
