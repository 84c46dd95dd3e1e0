//! The controller's state machine: what the cluster agrees on.
//!
//! Lifecycle and cores: one `ControllerState` per controller replica, owned
//! by its [`super::node::ControllerNode`] on the shard that runs the
//! controller (shard 0); brokers that are not voters get copies of it. It
//! changes only through [`ControllerState::apply`], in log order, so
//! replicas that applied the same prefix of the log hold equal states
//! (the simulation checks it byte for byte through [`ControllerState::encode`]).
//!
//! `apply` is a pure function of the state and the command: no clock, no
//! randomness (a new topic's id is chosen by the proposer and travels in
//! the command), no I/O.
//!
//! Snapshot layout (all integers little-endian; strings `u16 length | UTF-8`):
//! ```text
//! u8 version (=3) | u64 applied_index | i64 next_producer_id | u64 cluster_id
//! u32 brokers  | brokers x (u32 id | u64 incarnation | u16 shards | str kafka_addr
//!                           | str native_addr | str rpc_addr | u8 live)
//! u32 topics   | topics x (str name | u64 id_hi | u64 id_lo | u32 n | n x (str key | str value)
//!                          | u16 replication_factor
//!                          | u32 partitions | partitions x (u32 node | u16 shard | u32 leader_epoch
//!                                                         | u8 followers | followers x (u32 node | u16 shard)
//!                                                         | u8 origin | origin x u32 node
//!                                                         | u8 target | target x (u32 node | u16 shard)))
//! u32 sessions | sessions x (u32 origin | u64 seq | outcome)
//! outcome      u8 code: 0 done | 1 producer ids (i64 first | u32 count) | 2 refused (u8 refusal)
//! ```
//! Version 1 (read, never written) is the same without `cluster_id`,
//! `replication_factor` (1) and the followers (none); version 2 without
//! `origin` and `target` (both empty).

use super::command::{
    get_config, get_u128, put_config, put_u128, Command, Envelope, Registration, MAX_PARTITIONS,
};
use super::placement::{self, Candidate, Loads};
use crate::protocol::codec::{put_str, Reader};
use crate::protocol::DecodeError;
use bytes::{BufMut, BytesMut};
use std::collections::BTreeMap;

pub const SNAPSHOT_VERSION: u8 = 3;
/// Most producer ids one command may take.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// As the broker last announced itself.
    pub reg: Registration,
    /// Registered and not fenced: it may lead partitions and take new ones.
    pub live: bool,
}

/// Where a partition lives: its leader (node and shard) and, with a
/// replication factor above 1, its followers on other brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub node: u32,
    pub shard: u16,
    /// Grows each time the partition moves.
    pub leader_epoch: u32,
    /// (node, shard) of each follower; nodes distinct, and not `node`.
    pub followers: Vec<(u32, u16)>,
    /// The Raft group's voters when it was created (its configuration at
    /// index 0), which a replica joining later starts from before it
    /// replays the group's configuration changes. Empty: the current
    /// replicas (the partition was never reassigned).
    pub origin: Vec<u32>,
    /// A reassignment in progress: (node, shard) of every replica the
    /// partition should end with. Empty: none.
    pub target: Vec<(u32, u16)>,
}

impl PartitionAssignment {
    /// Every replica's broker, the leader of record first.
    pub fn replicas(&self) -> Vec<u32> {
        std::iter::once(self.node)
            .chain(self.followers.iter().map(|(n, _)| *n))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: u128,
    /// Topic settings as `key = value` text, validated by the broker that
    /// proposed them (the controller stores, it does not interpret).
    pub config: Vec<(String, String)>,
    /// Replicas per partition, leader included (≥ 1).
    pub replication_factor: u16,
    pub partitions: Vec<PartitionAssignment>,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the topic already exists")]
    TopicExists,
    #[error("no such topic")]
    UnknownTopic,
    #[error("invalid topic name")]
    InvalidName,
    #[error("invalid partition count (1..={MAX_PARTITIONS}, and partitions never shrink)")]
    InvalidPartitions,
    #[error("no live broker to place partitions on")]
    NoLiveBroker,
    #[error("no such broker")]
    UnknownBroker,
    #[error("the broker has restarted since (another incarnation)")]
    StaleIncarnation,
    #[error("no such shard on that broker")]
    UnknownShard,
    #[error("invalid producer id count")]
    InvalidCount,
    #[error("a newer request of the same origin was applied already")]
    StaleRequest,
    #[error("the replication factor is 0 or above the number of live brokers")]
    ReplicationFactor,
    #[error("only a replicated partition (replication factor 2 or more) can be reassigned, to 2 or more distinct live brokers")]
    InvalidReassignment,
    #[error("no such reassignment in progress")]
    NoReassignment,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::TopicExists => 1,
            Refusal::UnknownTopic => 2,
            Refusal::InvalidName => 3,
            Refusal::InvalidPartitions => 4,
            Refusal::NoLiveBroker => 5,
            Refusal::UnknownBroker => 6,
            Refusal::StaleIncarnation => 7,
            Refusal::UnknownShard => 8,
            Refusal::InvalidCount => 9,
            Refusal::StaleRequest => 10,
            Refusal::ReplicationFactor => 11,
            Refusal::InvalidReassignment => 12,
            Refusal::NoReassignment => 13,
        }
    }

    fn from_code(c: u8) -> Option<Refusal> {
        Some(match c {
            1 => Refusal::TopicExists,
            2 => Refusal::UnknownTopic,
            3 => Refusal::InvalidName,
            4 => Refusal::InvalidPartitions,
            5 => Refusal::NoLiveBroker,
            6 => Refusal::UnknownBroker,
            7 => Refusal::StaleIncarnation,
            8 => Refusal::UnknownShard,
            9 => Refusal::InvalidCount,
            10 => Refusal::StaleRequest,
            11 => Refusal::ReplicationFactor,
            12 => Refusal::InvalidReassignment,
            13 => Refusal::NoReassignment,
            _ => return None,
        })
    }
}

/// What applying a command did; sent back to whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    ProducerIds { first: i64, count: u32 },
    Refused(Refusal),
}

impl Outcome {
    pub fn encode_into(&self, b: &mut BytesMut) {
        match self {
            Outcome::Done => b.put_u8(0),
            Outcome::ProducerIds { first, count } => {
                b.put_u8(1);
                b.put_i64_le(*first);
                b.put_u32_le(*count);
            }
            Outcome::Refused(r) => {
                b.put_u8(2);
                b.put_u8(r.code());
            }
        }
    }

    pub fn decode_from(r: &mut Reader) -> Result<Outcome, DecodeError> {
        Ok(match r.u8("outcome")? {
            0 => Outcome::Done,
            1 => Outcome::ProducerIds {
                first: r.i64("first producer id")?,
                count: r.u32("producer id count")?,
            },
            2 => {
                let c = r.u8("refusal")?;
                Outcome::Refused(Refusal::from_code(c).ok_or(DecodeError::Invalid {
                    what: "refusal",
                    detail: format!("{c}"),
                })?)
            }
            c => {
                return Err(DecodeError::Invalid {
                    what: "outcome",
                    detail: format!("{c}"),
                })
            }
        })
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyResult {
    pub outcome: Outcome,
    /// The entry repeated a request already applied (same origin and seq,
    /// or an older seq): nothing changed, `outcome` is the first answer.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerState {
    /// Index of the last log entry applied; every entry is applied once, in order.
    pub applied_index: u64,
    pub brokers: BTreeMap<u32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
    /// Producer ids below this have been handed out.
    pub next_producer_id: i64,
    /// Names this cluster: set when the first broker registers (from its
    /// id and incarnation, so every replica computes the same value), never
    /// changed. A broker's data directory remembers it, so a controller
    /// that lost its state (a new cluster at the same addresses) cannot
    /// make brokers delete the topics it does not know. 0: none yet.
    pub cluster_id: u64,
    /// Last request applied per origin broker, with its outcome: one entry
    /// per broker id, so bounded by the brokers.
    pub sessions: BTreeMap<u32, (u64, Outcome)>,
}

impl ControllerState {
    /// An entry with no command (a new leader's empty entry) moves the
    /// applied index only.
    pub fn skip(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    pub fn apply(&mut self, index: u64, env: &Envelope) -> ApplyResult {
        self.skip(index);
        if env.origin != 0 {
            if let Some(&(last, outcome)) = self.sessions.get(&env.origin) {
                if env.seq <= last {
                    let outcome = if env.seq == last {
                        outcome
                    } else {
                        Outcome::Refused(Refusal::StaleRequest)
                    };
                    return ApplyResult {
                        outcome,
                        duplicate: true,
                    };
                }
            }
        }
        let outcome = self.execute(&env.command);
        if env.origin != 0 {
            self.sessions.insert(env.origin, (env.seq, outcome));
        }
        ApplyResult {
            outcome,
            duplicate: false,
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.brokers
            .values()
            .filter(|b| b.live && b.reg.shards > 0)
            .map(|b| Candidate {
                id: b.reg.id,
                shards: b.reg.shards,
            })
            .collect()
    }

    fn loads(&self) -> Loads {
        let live = |n: &u32| self.brokers.get(n).is_some_and(|b| b.live);
        let mut loads = Loads::default();
        for t in self.topics.values() {
            for p in &t.partitions {
                if live(&p.node) {
                    loads.add(p.node, p.shard);
                }
                for (n, s) in &p.followers {
                    if live(n) {
                        loads.add_follower(*n, *s);
                    }
                }
                // A reassignment's new replicas count where they go.
                for (n, s) in &p.target {
                    if live(n) && !p.replicas().contains(n) {
                        loads.add_follower(*n, *s);
                    }
                }
            }
        }
        loads
    }

    fn place(
        &self,
        topic: &str,
        first: u32,
        count: u32,
        rf: u16,
    ) -> Result<Vec<PartitionAssignment>, Refusal> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return Err(Refusal::NoLiveBroker);
        }
        let placed = placement::place(&candidates, &mut self.loads(), topic, first, count, rf)
            .ok_or(Refusal::ReplicationFactor)?;
        Ok(placed
            .into_iter()
            .map(|p| PartitionAssignment {
                node: p.leader.0,
                shard: p.leader.1,
                leader_epoch: 0,
                followers: p.followers,
                origin: Vec::new(),
                target: Vec::new(),
            })
            .collect())
    }

    fn execute(&mut self, command: &Command) -> Outcome {
        match self.execute_inner(command) {
            Ok(o) => o,
            Err(r) => Outcome::Refused(r),
        }
    }

    fn execute_inner(&mut self, command: &Command) -> Result<Outcome, Refusal> {
        match command {
            Command::RegisterBroker(reg) => {
                if reg.shards == 0 {
                    return Err(Refusal::UnknownShard);
                }
                if self.cluster_id == 0 {
                    self.cluster_id = (reg.incarnation ^ ((reg.id as u64) << 48)).max(1);
                }
                self.brokers.insert(
                    reg.id,
                    BrokerInfo {
                        reg: reg.clone(),
                        live: true,
                    },
                );
            }
            Command::SetBrokerLive {
                id,
                incarnation,
                live,
            } => {
                let b = self.brokers.get_mut(id).ok_or(Refusal::UnknownBroker)?;
                if b.reg.incarnation != *incarnation {
                    return Err(Refusal::StaleIncarnation);
                }
                b.live = *live;
            }
            Command::CreateTopic {
                name,
                topic_id,
                partitions,
                config,
                replication_factor,
            } => {
                crate::metadata::validate_name(name).map_err(|_| Refusal::InvalidName)?;
                if self.topics.contains_key(name) {
                    return Err(Refusal::TopicExists);
                }
                if *partitions == 0 || *partitions > MAX_PARTITIONS {
                    return Err(Refusal::InvalidPartitions);
                }
                let placed = self.place(name, 0, *partitions, *replication_factor)?;
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        id: *topic_id,
                        config: config.clone(),
                        replication_factor: *replication_factor,
                        partitions: placed,
                    },
                );
            }
            Command::DeleteTopic { name } => {
                self.topics.remove(name).ok_or(Refusal::UnknownTopic)?;
            }
            Command::CreatePartitions { name, total } => {
                let have = self
                    .topics
                    .get(name)
                    .ok_or(Refusal::UnknownTopic)?
                    .partitions
                    .len() as u32;
                if *total <= have || *total > MAX_PARTITIONS {
                    return Err(Refusal::InvalidPartitions);
                }
                let rf = self.topics[name].replication_factor;
                let more = self.place(name, have, total - have, rf)?;
                self.topics
                    .get_mut(name)
                    .expect("checked above")
                    .partitions
                    .extend(more);
            }
            Command::AlterTopicConfig { name, config } => {
                self.topics
                    .get_mut(name)
                    .ok_or(Refusal::UnknownTopic)?
                    .config = config.clone();
            }
            Command::AllocateProducerIds { count } => {
                if *count == 0 || *count > MAX_PRODUCER_ID_BLOCK {
                    return Err(Refusal::InvalidCount);
                }
                let first = self.next_producer_id;
                self.next_producer_id += *count as i64;
                return Ok(Outcome::ProducerIds {
                    first,
                    count: *count,
                });
            }
            Command::MovePartition {
                name,
                partition,
                node,
                shard,
            } => {
                let b = self.brokers.get(node).ok_or(Refusal::UnknownBroker)?;
                if *shard >= b.reg.shards {
                    return Err(Refusal::UnknownShard);
                }
                let t = self.topics.get_mut(name).ok_or(Refusal::UnknownTopic)?;
                let p = t
                    .partitions
                    .get_mut(*partition as usize)
                    .ok_or(Refusal::InvalidPartitions)?;
                // Moving the leader onto one of its followers swaps them:
                // the replica set keeps distinct brokers.
                if let Some(f) = p.followers.iter_mut().find(|(n, _)| n == node) {
                    *f = (p.node, p.shard);
                }
                p.node = *node;
                p.shard = *shard;
                p.leader_epoch += 1;
            }
            Command::ReassignPartition {
                name,
                partition,
                replicas,
            } => {
                let live = |n: &u32| self.brokers.get(n).is_some_and(|b| b.live);
                let mut distinct = replicas.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if distinct.len() != replicas.len() || replicas.len() < 2 {
                    return Err(Refusal::InvalidReassignment);
                }
                if replicas.iter().any(|n| !self.brokers.contains_key(n)) {
                    return Err(Refusal::UnknownBroker);
                }
                let t = self.topics.get(name).ok_or(Refusal::UnknownTopic)?;
                let p = t
                    .partitions
                    .get(*partition as usize)
                    .ok_or(Refusal::InvalidPartitions)?;
                if p.followers.is_empty() {
                    return Err(Refusal::InvalidReassignment);
                }
                let mut current = p.replicas();
                current.sort_unstable();
                // Replicas that stay keep their shard; a new one goes to
                // its broker's least loaded shard. New replicas must be on
                // live brokers (they have to catch up).
                let mut loads = self.loads();
                let mut target = Vec::with_capacity(replicas.len());
                for n in replicas {
                    let shard = if *n == p.node {
                        p.shard
                    } else if let Some((_, s)) = p.followers.iter().find(|(f, _)| f == n) {
                        *s
                    } else if let Some((_, s)) = p.target.iter().find(|(f, _)| f == n) {
                        *s
                    } else {
                        if !live(n) {
                            return Err(Refusal::InvalidReassignment);
                        }
                        let shards = self.brokers[n].reg.shards;
                        let s = placement::least_loaded_shard(&loads, *n, shards);
                        loads.add_follower(*n, s);
                        s
                    };
                    target.push((*n, shard));
                }
                let p = &mut self.topics.get_mut(name).expect("checked").partitions
                    [*partition as usize];
                // The current set as the target cancels a reassignment
                // (learners already added leave the group again).
                p.target = if distinct == current && p.target.is_empty() {
                    Vec::new()
                } else {
                    target
                };
            }
            Command::CompleteReassignment {
                name,
                partition,
                leader,
                replicas,
            } => {
                let p = self
                    .topics
                    .get_mut(name)
                    .ok_or(Refusal::UnknownTopic)?
                    .partitions
                    .get_mut(*partition as usize)
                    .ok_or(Refusal::InvalidPartitions)?;
                let mut want: Vec<u32> = p.target.iter().map(|(n, _)| *n).collect();
                want.sort_unstable();
                let mut got = replicas.clone();
                got.sort_unstable();
                if p.target.is_empty() || want != got {
                    return Err(Refusal::NoReassignment);
                }
                if p.origin.is_empty() {
                    p.origin = p.replicas();
                }
                let target = std::mem::take(&mut p.target);
                let (lead, rest): (Vec<_>, Vec<_>) =
                    target.into_iter().partition(|(n, _)| n == leader);
                let mut ordered = lead;
                ordered.extend(rest);
                let (node, shard) = ordered[0];
                if node != p.node {
                    p.leader_epoch += 1;
                }
                p.node = node;
                p.shard = shard;
                p.followers = ordered[1..].to_vec();
            }
        }
        Ok(Outcome::Done)
    }

    /// The snapshot bytes (layout in the module doc).
    pub fn encode(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(256);
        b.put_u8(SNAPSHOT_VERSION);
        b.put_u64_le(self.applied_index);
        b.put_i64_le(self.next_producer_id);
        b.put_u64_le(self.cluster_id);
        b.put_u32_le(self.brokers.len() as u32);
        for br in self.brokers.values() {
            br.reg.encode_into(&mut b);
            b.put_u8(br.live as u8);
        }
        b.put_u32_le(self.topics.len() as u32);
        for (name, t) in &self.topics {
            put_str(&mut b, name);
            put_u128(&mut b, t.id);
            put_config(&mut b, &t.config);
            b.put_u16_le(t.replication_factor);
            b.put_u32_le(t.partitions.len() as u32);
            for p in &t.partitions {
                b.put_u32_le(p.node);
                b.put_u16_le(p.shard);
                b.put_u32_le(p.leader_epoch);
                assert!(p.followers.len() < 256, "at most 255 followers");
                b.put_u8(p.followers.len() as u8);
                for (n, sh) in &p.followers {
                    b.put_u32_le(*n);
                    b.put_u16_le(*sh);
                }
                assert!(p.origin.len() < 256 && p.target.len() < 256);
                b.put_u8(p.origin.len() as u8);
                for n in &p.origin {
                    b.put_u32_le(*n);
                }
                b.put_u8(p.target.len() as u8);
                for (n, sh) in &p.target {
                    b.put_u32_le(*n);
                    b.put_u16_le(*sh);
                }
            }
        }
        b.put_u32_le(self.sessions.len() as u32);
        for (origin, (seq, outcome)) in &self.sessions {
            b.put_u32_le(*origin);
            b.put_u64_le(*seq);
            outcome.encode_into(&mut b);
        }
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<ControllerState, DecodeError> {
        let mut r = Reader::new(BytesMut::from(bytes));
        let v = r.u8("snapshot version")?;
        if !(1..=SNAPSHOT_VERSION).contains(&v) {
            return Err(DecodeError::Invalid {
                what: "snapshot version",
                detail: format!("{v}, this broker reads 1 to {SNAPSHOT_VERSION}"),
            });
        }
        let mut s = ControllerState {
            applied_index: r.u64("applied index")?,
            next_producer_id: r.i64("next producer id")?,
            ..Default::default()
        };
        if v >= 2 {
            s.cluster_id = r.u64("cluster id")?;
        }
        for _ in 0..r.count("brokers", 21)? {
            let br = BrokerInfo {
                reg: Registration::decode_from(&mut r)?,
                live: r.u8("live")? != 0,
            };
            s.brokers.insert(br.reg.id, br);
        }
        // Smallest topic and partition entries at this version.
        let (topic_min, partition_min) = match v {
            1 => (26, 10),
            2 => (28, 11),
            _ => (28, 13),
        };
        for _ in 0..r.count("topics", topic_min)? {
            let name = r.string("topic")?;
            let id = get_u128(&mut r, "topic id")?;
            let config = get_config(&mut r)?;
            let replication_factor = if v >= 2 {
                r.u16("replication factor")?
            } else {
                1
            };
            let n = r.count("partitions", partition_min)?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                let mut p = PartitionAssignment {
                    node: r.u32("node")?,
                    shard: r.u16("shard")?,
                    leader_epoch: r.u32("leader epoch")?,
                    followers: Vec::new(),
                    origin: Vec::new(),
                    target: Vec::new(),
                };
                if v >= 2 {
                    for _ in 0..r.u8("followers")? {
                        p.followers
                            .push((r.u32("follower node")?, r.u16("follower shard")?));
                    }
                }
                if v >= 3 {
                    for _ in 0..r.u8("origin voters")? {
                        p.origin.push(r.u32("origin voter")?);
                    }
                    for _ in 0..r.u8("target replicas")? {
                        p.target
                            .push((r.u32("target node")?, r.u16("target shard")?));
                    }
                }
                partitions.push(p);
            }
            s.topics.insert(
                name,
                TopicInfo {
                    id,
                    config,
                    replication_factor,
                    partitions,
                },
            );
        }
        for _ in 0..r.count("sessions", 13)? {
            let origin = r.u32("origin")?;
            let seq = r.u64("seq")?;
            s.sessions
                .insert(origin, (seq, Outcome::decode_from(&mut r)?));
        }
        r.finish()?;
        Ok(s)
    }

    /// The live broker that leads `topic`'s `partition`, if any.
    pub fn leader_of(&self, topic: &str, partition: u32) -> Option<&BrokerInfo> {
        let p = self.topics.get(topic)?.partitions.get(partition as usize)?;
        self.brokers.get(&p.node).filter(|b| b.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: u32, inc: u64) -> Command {
        Command::RegisterBroker(Registration {
            id,
            incarnation: inc,
            shards: 2,
            kafka_addr: format!("127.0.0.1:{}", 9092 + id),
            native_addr: format!("127.0.0.1:{}", 9400 + id),
            rpc_addr: format!("127.0.0.1:{}", 9500 + id),
        })
    }

    fn env(origin: u32, seq: u64, command: Command) -> Envelope {
        Envelope {
            origin,
            seq,
            command,
        }
    }

    #[test]
    fn a_repeated_request_is_answered_from_the_session_and_changes_nothing() {
        let mut s = ControllerState::default();
        s.apply(1, &env(1, 1, reg(1, 5)));
        let create = env(
            1,
            2,
            Command::CreateTopic {
                name: "t".into(),
                topic_id: 7,
                partitions: 3,
                config: vec![],
                replication_factor: 1,
            },
        );
        assert_eq!(
            s.apply(2, &create),
            ApplyResult {
                outcome: Outcome::Done,
                duplicate: false
            }
        );
        let before = s.encode();
        let again = s.apply(3, &create);
        assert_eq!(
            again,
            ApplyResult {
                outcome: Outcome::Done,
                duplicate: true
            }
        );
        assert_eq!(s.encode()[9..], before[9..], "only the applied index moved");
        let other = env(
            2,
            1,
            Command::CreateTopic {
                name: "t".into(),
                topic_id: 8,
                partitions: 1,
                config: vec![],
                replication_factor: 1,
            },
        );
        assert_eq!(
            s.apply(4, &other).outcome,
            Outcome::Refused(Refusal::TopicExists)
        );
    }

    #[test]
    fn a_reassignment_records_its_target_and_completes_only_as_asked() {
        let mut s = ControllerState::default();
        let mut i = 0;
        let mut ap = |s: &mut ControllerState, c: Command| {
            i += 1;
            s.apply(i, &env(0, 0, c)).outcome
        };
        for b in 1..=4 {
            ap(&mut s, reg(b, 10));
        }
        let create = |name: &str, rf| Command::CreateTopic {
            name: name.into(),
            topic_id: 1,
            partitions: 2,
            config: vec![],
            replication_factor: rf,
        };
        assert_eq!(ap(&mut s, create("one", 1)), Outcome::Done);
        assert_eq!(ap(&mut s, create("three", 3)), Outcome::Done);
        let reassign = |name: &str, replicas: Vec<u32>| Command::ReassignPartition {
            name: name.into(),
            partition: 0,
            replicas,
        };
        // Refused: a partition without replicas, one replica, a repeated
        // broker, an unknown broker.
        for (c, why) in [
            (reassign("one", vec![2, 3]), Refusal::InvalidReassignment),
            (reassign("three", vec![4]), Refusal::InvalidReassignment),
            (
                reassign("three", vec![4, 4, 2]),
                Refusal::InvalidReassignment,
            ),
            (reassign("three", vec![2, 3, 9]), Refusal::UnknownBroker),
            (reassign("nope", vec![2, 3]), Refusal::UnknownTopic),
        ] {
            assert_eq!(ap(&mut s, c), Outcome::Refused(why));
        }
        let before = s.topics["three"].partitions[0].clone();
        let mut old = before.replicas();
        old.sort_unstable();
        assert_eq!(old.len(), 3);
        let leaving = old[0];
        let target: Vec<u32> = (1..=4).filter(|n| *n != leaving).collect();
        assert_eq!(ap(&mut s, reassign("three", target.clone())), Outcome::Done);
        let p = s.topics["three"].partitions[0].clone();
        assert_eq!(
            p.replicas(),
            before.replicas(),
            "nothing moves until it completes"
        );
        let mut moving: Vec<u32> = p.target.iter().map(|(n, _)| *n).collect();
        moving.sort_unstable();
        assert_eq!(moving, target);
        let shard4 = p.target.iter().find(|(n, _)| *n == 4).unwrap().1;
        assert!(shard4 < 2);
        // The snapshot keeps the target (and, later, the origin).
        assert_eq!(ControllerState::decode(&s.encode()).unwrap(), s);
        // A completion for another set is ignored.
        let complete = |replicas: Vec<u32>, leader| Command::CompleteReassignment {
            name: "three".into(),
            partition: 0,
            leader,
            replicas,
        };
        assert_eq!(
            ap(&mut s, complete(vec![1, 2, 3], 1)),
            Outcome::Refused(Refusal::NoReassignment)
        );
        assert_eq!(ap(&mut s, complete(target.clone(), 4)), Outcome::Done);
        let p = s.topics["three"].partitions[0].clone();
        assert_eq!(p.node, 4, "the reporting leader is the leader of record");
        let mut now = p.replicas();
        now.sort_unstable();
        assert_eq!(now, target);
        assert!(p.target.is_empty());
        let mut origin = p.origin.clone();
        origin.sort_unstable();
        assert_eq!(origin, old, "the group's first voters are remembered");
        assert_eq!(ControllerState::decode(&s.encode()).unwrap(), s);
        // A second completion finds nothing to complete.
        assert_eq!(
            ap(&mut s, complete(target, 4)),
            Outcome::Refused(Refusal::NoReassignment)
        );
    }

    #[test]
    fn topics_land_on_live_brokers_and_a_stale_fence_is_ignored() {
        let mut s = ControllerState::default();
        let mut i = 0;
        let mut ap = |s: &mut ControllerState, c: Command| {
            i += 1;
            s.apply(i, &env(0, 0, c)).outcome
        };
        assert_eq!(
            ap(
                &mut s,
                Command::CreateTopic {
                    name: "t".into(),
                    topic_id: 1,
                    partitions: 1,
                    config: vec![],
                    replication_factor: 1,
                }
            ),
            Outcome::Refused(Refusal::NoLiveBroker)
        );
        for b in 1..=3 {
            ap(&mut s, reg(b, 10));
        }
        assert_eq!(
            ap(
                &mut s,
                Command::SetBrokerLive {
                    id: 2,
                    incarnation: 9,
                    live: false
                }
            ),
            Outcome::Refused(Refusal::StaleIncarnation)
        );
        ap(
            &mut s,
            Command::SetBrokerLive {
                id: 2,
                incarnation: 10,
                live: false,
            },
        );
        ap(
            &mut s,
            Command::CreateTopic {
                name: "t".into(),
                topic_id: 1,
                partitions: 6,
                config: vec![],
                replication_factor: 1,
            },
        );
        let nodes: Vec<u32> = s.topics["t"].partitions.iter().map(|p| p.node).collect();
        assert!(!nodes.contains(&2), "{nodes:?}");
        assert_eq!(nodes.iter().filter(|n| **n == 1).count(), 3);
        assert_eq!(s.leader_of("t", 0).map(|b| b.reg.id), Some(nodes[0]));
        assert_eq!(
            ap(
                &mut s,
                Command::CreatePartitions {
                    name: "t".into(),
                    total: 6
                }
            ),
            Outcome::Refused(Refusal::InvalidPartitions)
        );
        assert_eq!(
            ap(&mut s, Command::AllocateProducerIds { count: 10 }),
            Outcome::ProducerIds {
                first: 0,
                count: 10
            }
        );
        assert_eq!(
            ap(&mut s, Command::AllocateProducerIds { count: 10 }),
            Outcome::ProducerIds {
                first: 10,
                count: 10
            }
        );
        ap(
            &mut s,
            Command::MovePartition {
                name: "t".into(),
                partition: 0,
                node: 2,
                shard: 1,
            },
        );
        assert_eq!(
            s.topics["t"].partitions[0],
            PartitionAssignment {
                node: 2,
                shard: 1,
                leader_epoch: 1,
                followers: vec![],
                origin: vec![],
                target: vec![],
            }
        );
        assert_eq!(s.leader_of("t", 0), None, "its broker is fenced");
        let back = ControllerState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn replicas_go_to_distinct_live_brokers_and_survive_a_snapshot() {
        let mut s = ControllerState::default();
        let mut i = 0;
        let mut ap = |s: &mut ControllerState, c: Command| {
            i += 1;
            s.apply(i, &env(0, 0, c)).outcome
        };
        for b in 1..=3 {
            ap(&mut s, reg(b, 10));
        }
        let create = |rf: u16| Command::CreateTopic {
            name: format!("rf{rf}"),
            topic_id: rf as u128,
            partitions: 6,
            config: vec![],
            replication_factor: rf,
        };
        assert_eq!(
            ap(&mut s, create(4)),
            Outcome::Refused(Refusal::ReplicationFactor)
        );
        assert_eq!(
            ap(&mut s, create(0)),
            Outcome::Refused(Refusal::ReplicationFactor)
        );
        assert_eq!(ap(&mut s, create(3)), Outcome::Done);
        ap(
            &mut s,
            Command::CreatePartitions {
                name: "rf3".into(),
                total: 9,
            },
        );
        let t = &s.topics["rf3"];
        assert_eq!(t.replication_factor, 3);
        assert_eq!(t.partitions.len(), 9);
        for p in &t.partitions {
            let mut nodes: Vec<u32> = std::iter::once(p.node)
                .chain(p.followers.iter().map(|f| f.0))
                .collect();
            nodes.sort();
            assert_eq!(nodes, vec![1, 2, 3], "{p:?}");
        }
        // Moving the leader onto a follower swaps the two.
        let p0 = t.partitions[0].clone();
        let (to, to_shard) = p0.followers[0];
        ap(
            &mut s,
            Command::MovePartition {
                name: "rf3".into(),
                partition: 0,
                node: to,
                shard: to_shard,
            },
        );
        let moved = &s.topics["rf3"].partitions[0];
        assert_eq!((moved.node, moved.leader_epoch), (to, 1));
        assert!(moved.followers.contains(&(p0.node, p0.shard)), "{moved:?}");
        let back = ControllerState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn damaged_snapshots_are_errors_not_panics() {
        let mut s = ControllerState::default();
        s.apply(1, &env(1, 1, reg(1, 1)));
        s.apply(
            2,
            &env(
                1,
                2,
                Command::CreateTopic {
                    name: "t".into(),
                    topic_id: 3,
                    partitions: 2,
                    config: vec![("a".into(), "b".into())],
                    replication_factor: 1,
                },
            ),
        );
        let bytes = s.encode();
        for cut in 0..bytes.len() {
            assert!(ControllerState::decode(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0xff;
            let _ = ControllerState::decode(&b);
        }
    }
}
