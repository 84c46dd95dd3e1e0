//! Who coordinates the groups of a replicated `__consumer_offsets`
//! partition: the broker whose replica leads the partition's Raft group,
//! and only once that replica holds everything committed before its term.
//!
//! Why a term and not just "leads": the coordinator keeps the partition's
//! committed offsets and group memberships in memory, read from the log
//! once. A broker that led term 3, lost the lead while another broker
//! took commits in term 4, and leads again in term 5 would otherwise serve
//! what it read in term 3. So the coordinator remembers the term it loaded
//! a partition in ([`super::Coordinator::load`]) and reloads whenever the
//! term it leads in is another; its ticker drops the partition's groups as
//! soon as its replica no longer leads that term.
//!
//! Why wait for the term's own entry: a new leader holds every committed
//! entry (Raft's leader completeness), but it may not have *applied*
//! them yet: its high watermark, below which the replay reads, can lag
//! until the empty entry it appends at the start of its term commits.
//! Until then its groups' requests get COORDINATOR_LOAD_IN_PROGRESS.
//!
//! An offsets partition with one replica (a single broker, or a cluster
//! whose offsets topic was created with factor 1) has no Raft group: its
//! owner coordinates, loading once, as before.

use super::{GroupError, OFFSETS_TOPIC};
use crate::shard::Shard;
use std::rc::Rc;

/// Where a group's coordinator is, as this broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorAt {
    /// This broker.
    Here,
    /// Another broker, by id.
    Broker(u32),
    /// Nobody known: the partition's group has no leader this broker knows of.
    Unknown,
    /// This broker holds no replica of the partition, so does not know its
    /// leader: these brokers, its replicas, do.
    AskReplicas(Vec<u32>),
}

/// The broker coordinating the groups of offsets partition `partition`
/// (FindCoordinator): for a replicated partition its Raft leader as this
/// broker's replica last saw it; else where the partition is placed.
///
/// A broker holding no replica of the partition does not know its leader
/// (the controller does not track Raft leaders yet): the replicas do
/// (FindCoordinator asks them, `kafka::coordinator_probe`).
pub fn coordinator_at(
    shard: &Shard,
    meta: &crate::metadata::TopicMeta,
    partition: u32,
) -> CoordinatorAt {
    let at = |node: u32| match shard.node_id() {
        Some(me) if me == node => CoordinatorAt::Here,
        _ => CoordinatorAt::Broker(node),
    };
    if let Some(a) = meta
        .assignment
        .get(partition as usize)
        .filter(|a| a.replicated())
    {
        return match shard
            .replication()
            .and_then(|r| r.leader(&meta.name, partition))
        {
            Some((Some(l), _)) => at(l),
            Some((None, _)) => CoordinatorAt::Unknown,
            None => CoordinatorAt::AskReplicas(a.replicas()),
        };
    }
    match shard.locate(meta, partition) {
        crate::router::Location::Here(_) => CoordinatorAt::Here,
        crate::router::Location::Elsewhere { node } => CoordinatorAt::Broker(node),
    }
}

/// Wait (up to `max`) until this broker's replicas of these offsets
/// partitions have elected their first leaders. FindCoordinator waits for
/// it, as it waits for the offsets topic's creation: just created, its
/// partitions elect leaders within 1–2 s. (Answered "not available" in
/// that time, a librdkafka group in tests/cluster.rs's four-broker test
/// once did not form within 60 s; why, in librdkafka, was not found.) A
/// replica that knew a leader and lost it (cut off, or an election under
/// way) is not waited for: that can last, and the client had better ask
/// another broker. Neither is a partition with no replica here.
pub async fn await_leaders(shard: &Rc<Shard>, partitions: &[u32], max: std::time::Duration) {
    let Some(r) = shard.replication() else {
        return;
    };
    let deadline = shard.clock.now() + max;
    loop {
        let topics = shard.topics();
        let Some(meta) = topics.get(OFFSETS_TOPIC) else {
            return;
        };
        let unelected = partitions.iter().any(|p| {
            let held = meta.assignment.get(*p as usize).is_some_and(|a| {
                a.replicated()
                    && shard
                        .node_id()
                        .is_some_and(|me| a.replica_shard(me).is_some())
            });
            // Term 0: no election yet; None: the replica is not open yet.
            held && matches!(r.leader(OFFSETS_TOPIC, *p), None | Some((None, 0)))
        });
        if !unelected || shard.clock.now() >= deadline {
            return;
        }
        shard
            .clock
            .sleep(std::time::Duration::from_millis(100))
            .await;
    }
}

/// On the shard holding this broker's replica of offsets partition
/// `partition`: the term in which this replica leads it and may serve
/// its groups (`Ok(None)`: the partition is not replicated, its owner
/// serves). Not leading: NOT_COORDINATOR (the client asks
/// FindCoordinator again); leading, but its term's first entry not yet
/// applied: COORDINATOR_LOAD_IN_PROGRESS (it retries).
pub async fn serving_term(shard: &Rc<Shard>, partition: u32) -> Result<Option<u64>, GroupError> {
    if !replicated(shard, partition) {
        return Ok(None);
    }
    let Some(r) = shard.replication() else {
        return Err(GroupError::NotCoordinator);
    };
    match r.lead(OFFSETS_TOPIC, partition).await {
        Some(l) if l.leads && l.term_applied => Ok(Some(l.term)),
        Some(l) if l.leads => Err(GroupError::CoordinatorLoading),
        Some(_) => Err(GroupError::NotCoordinator),
        // The table names a replica here, but its group is not open yet
        // (the offsets topic was just created, or the broker just started).
        None => Err(GroupError::CoordinatorLoading),
    }
}

/// Whether this broker still leads offsets partition `partition` in
/// `term`, as its replica saw it at its last tick (the ticker's check;
/// a request re-checks through [`serving_term`]).
pub fn still_leads(shard: &Shard, partition: u32, term: u64) -> bool {
    let me = shard.node_id();
    shard
        .replication()
        .and_then(|r| r.leader(OFFSETS_TOPIC, partition))
        .is_some_and(|(l, t)| l.is_some() && l == me && t == term)
}

/// Whether offsets partition `partition` is a Raft group's.
pub fn replicated(shard: &Shard, partition: u32) -> bool {
    shard.topics().get(OFFSETS_TOPIC).is_some_and(|m| {
        m.assignment
            .get(partition as usize)
            .is_some_and(|a| a.replicated())
    })
}
