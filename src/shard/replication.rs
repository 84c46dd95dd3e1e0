//! A shard's replicated partitions: their Raft groups, driven by one
//! [`ReplicationDriver`], and the connections that carry their batches to
//! peer brokers.
//!
//! The shard's replication task loops: on each tick (every
//! `REPLICATION_TICK`) it ticks every group; on each wake (a batch from a
//! peer, a proposal, a sync done) it steps what arrived and runs the
//! driver; then it asks the logs to sync what the groups wait for (one
//! sync per log, shared with acks=all producers: the flusher's group
//! commit) and hands each peer broker its one batch. Producers waiting for
//! their proposals re-check after every round ([`Replication::progressed`]).
//!
//! Batches go to the peer's RPC listener (shard 0 there), which routes
//! each group's messages to the shard holding that replica. Replication
//! traffic is fire-and-forget like the controller's Raft messages: a batch
//! that cannot be written is dropped and the peer reported unreachable;
//! Raft resends.
//!
//! Lifecycle and cores: created with the shard in cluster mode, owned by
//! the shard (an `Rc` in [`super::Shard`]); groups come and go with
//! `apply_topics`. Everything here runs on the shard's executor.

use crate::controller::peer_link::PeerLink;
use crate::controller::wire::{self as rpc_wire, Request};
use crate::event::LocalEvent;
use crate::partition::Partition;
use crate::replica::wire::Batch;
use crate::replica::{
    GroupKey, Outcome, PartitionGroup, ProposeError, Proposed, ReplicationDriver,
};
use crate::storage::dma::DmaDisk;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How often every group ticks: heartbeats every 3 ticks, elections after
/// 10–20 silent ticks (1–2 s).
pub const REPLICATION_TICK: Duration = Duration::from_millis(100);
/// Batches queued for one peer before new ones are dropped (Raft resends).
const PEER_QUEUE: usize = 256;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Replication {
    /// None only while a round runs (see `round`).
    driver: RefCell<Option<ReplicationDriver<DmaDisk>>>,
    /// (topic, partition) → its group key, for the partitions replicated here.
    keys: RefCell<HashMap<(String, u32), GroupKey>>,
    inbox: RefCell<Vec<Batch>>,
    wake: Rc<LocalEvent>,
    progressed: Rc<LocalEvent>,
    /// Peer broker → the queue of its sender task.
    peers: RefCell<HashMap<u32, flume::Sender<Batch>>>,
    /// Peer broker → its RPC address (from the topic table).
    addrs: RefCell<HashMap<u32, String>>,
    /// Proposals waiting for the task (the driver is busy across awaits
    /// during a round, so producers never borrow it themselves).
    proposals: RefCell<Vec<Proposal>>,
    /// Groups opened or closed since the last round.
    pending_groups: RefCell<Vec<(GroupKey, PartitionGroup<DmaDisk>)>>,
    removed: RefCell<Vec<GroupKey>>,
    /// Per group, the log offset a sync was last asked for (one waiting
    /// task per group and offset, not one per round).
    sync_asked: RefCell<HashMap<GroupKey, u64>>,
    /// Peers some batch to which was lost since the last round.
    lost_to: Rc<RefCell<std::collections::BTreeSet<u32>>>,
    /// (topic, partition) → (leader, term) as of the last round, for
    /// Metadata on any shard of this broker.
    leaders: RefCell<HashMap<(String, u32), LeaderView>>,
    /// (topic, partition) → its in-sync replicas, for the groups this
    /// broker leads (as of the last tick), on every shard of this broker.
    in_sync: RefCell<HashMap<(String, u32), Vec<u32>>>,
    /// Groups of this shard with a reassignment in progress: the
    /// replicas they should end with (from the controller's table).
    targets: RefCell<HashMap<GroupKey, Target>>,
    /// The shard's budget for replicated entries in memory, shared by its
    /// groups.
    memory: crate::replica::WindowBudget,
}

/// A reassignment this shard's replica carries out when it leads.
struct Target {
    topic: String,
    partition: u32,
    replicas: Vec<u64>,
    /// The tick the leader last reported the change complete (reports
    /// repeat, a few seconds apart, until the table shows it).
    reported_at: Option<u64>,
}

/// Ticks between two reports of one completed reassignment.
const REPORT_EVERY_TICKS: u64 = 30;

/// A group's leader (None: unknown) and term, as a replica saw them.
type LeaderView = (Option<u32>, u64);

/// A request for a replicated partition reached a replica that does not
/// lead it (or lost its leadership before the request was decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this broker's replica does not lead the partition")]
pub struct NotLeader;

/// This broker's replica's own view of its group's leadership, read
/// between rounds (see [`Replication::lead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lead {
    pub leads: bool,
    pub term: u64,
    /// It leads and has applied an entry of `term`: its high watermark
    /// covers everything committed before the term began.
    pub term_applied: bool,
}

struct Proposal {
    key: GroupKey,
    frames: Vec<Bytes>,
    reply: futures::channel::oneshot::Sender<Result<Vec<Proposed>, ProposeError>>,
}

impl Replication {
    pub fn new(node: u32, memory_bytes: usize) -> Rc<Replication> {
        Rc::new(Replication {
            memory: crate::replica::WindowBudget::new(memory_bytes),
            driver: RefCell::new(Some(ReplicationDriver::new(node))),
            keys: RefCell::new(HashMap::new()),
            inbox: RefCell::new(Vec::new()),
            wake: Rc::new(LocalEvent::new()),
            progressed: Rc::new(LocalEvent::new()),
            peers: RefCell::new(HashMap::new()),
            addrs: RefCell::new(HashMap::new()),
            proposals: RefCell::new(Vec::new()),
            pending_groups: RefCell::new(Vec::new()),
            removed: RefCell::new(Vec::new()),
            sync_asked: RefCell::new(HashMap::new()),
            lost_to: Rc::new(RefCell::new(Default::default())),
            leaders: RefCell::new(HashMap::new()),
            in_sync: RefCell::new(HashMap::new()),
            targets: RefCell::new(HashMap::new()),
        })
    }

    /// The driver, outside a round (the task's own steps between awaits).
    fn driver_mut(&self) -> std::cell::RefMut<'_, ReplicationDriver<DmaDisk>> {
        std::cell::RefMut::map(self.driver.borrow_mut(), |d| {
            d.as_mut().expect("not during a round")
        })
    }

    /// Fires after every round of the driver: proposals may have an outcome.
    pub fn progressed(&self) -> &Rc<LocalEvent> {
        &self.progressed
    }

    /// The shard's budget for replicated entries in memory.
    pub fn memory(&self) -> crate::replica::WindowBudget {
        self.memory.clone()
    }

    pub fn set_peer_addrs(&self, addrs: HashMap<u32, String>) {
        *self.addrs.borrow_mut() = addrs;
    }

    pub fn key_of(&self, topic: &str, partition: u32) -> Option<GroupKey> {
        self.keys
            .borrow()
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// Open a group (the task inserts it at its next round).
    pub fn insert(
        &self,
        topic: &str,
        partition: u32,
        key: GroupKey,
        group: PartitionGroup<DmaDisk>,
    ) {
        self.pending_groups.borrow_mut().push((key, group));
        self.keys
            .borrow_mut()
            .insert((topic.to_string(), partition), key);
        self.wake.notify();
    }

    /// The replicas partition `topic`/`partition` should end with (None:
    /// no reassignment in progress), from the controller's table.
    pub fn set_target(&self, topic: &str, partition: u32, replicas: Option<Vec<u32>>) {
        let Some(key) = self.key_of(topic, partition) else {
            return;
        };
        let mut targets = self.targets.borrow_mut();
        match replicas {
            None => {
                targets.remove(&key);
            }
            Some(r) => {
                let replicas: Vec<u64> = r.iter().map(|n| *n as u64).collect();
                if targets.get(&key).is_none_or(|t| t.replicas != replicas) {
                    targets.insert(
                        key,
                        Target {
                            topic: topic.to_string(),
                            partition,
                            replicas,
                            reported_at: None,
                        },
                    );
                }
            }
        }
    }

    /// Close a group (at the task's next round).
    pub fn remove(&self, topic: &str, partition: u32) {
        if let Some(key) = self
            .keys
            .borrow_mut()
            .remove(&(topic.to_string(), partition))
        {
            self.targets.borrow_mut().remove(&key);
            self.removed.borrow_mut().push(key);
            self.leaders
                .borrow_mut()
                .remove(&(topic.to_string(), partition));
            self.in_sync
                .borrow_mut()
                .remove(&(topic.to_string(), partition));
            self.wake.notify();
        }
    }

    /// The group's leader as this broker's replica knew it at its last
    /// round, and its term (None: no replica of it here).
    pub fn leader(&self, topic: &str, partition: u32) -> Option<LeaderView> {
        self.leaders
            .borrow()
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// The in-sync replicas of a partition this broker leads (None: not
    /// led here, so not known here).
    pub fn in_sync(&self, topic: &str, partition: u32) -> Option<Vec<u32>> {
        self.in_sync
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Batches from a peer (routed here by shard 0's RPC server).
    pub fn deliver(&self, batch: Batch) {
        self.inbox.borrow_mut().push(batch);
        self.wake.notify();
    }

    /// Queue each frame of a produce for the group of `topic`/`partition`,
    /// in order (the queue keeps the order calls are made in); the
    /// receiver gets the proposals once the task took them.
    pub fn submit(
        &self,
        topic: &str,
        partition: u32,
        frames: Vec<Bytes>,
    ) -> futures::channel::oneshot::Receiver<Result<Vec<Proposed>, ProposeError>> {
        let (reply, rx) = futures::channel::oneshot::channel();
        match self.key_of(topic, partition) {
            Some(key) => {
                self.proposals
                    .borrow_mut()
                    .push(Proposal { key, frames, reply });
                self.wake.notify();
            }
            None => {
                let _ = reply.send(Err(ProposeError::NotLeader { leader: None }));
            }
        }
        rx
    }

    /// What became of a proposal (Pending while the task is mid-round).
    pub fn outcome(&self, key: &GroupKey, p: Proposed) -> Outcome {
        // Out of its cell during a round: ask again after it.
        let d = self.driver.borrow();
        let Some(d) = d.as_ref() else {
            return Outcome::Pending;
        };
        d.group(key).map_or(Outcome::Lost, |g| g.outcome(p))
    }

    /// OffsetForLeaderEpoch on this broker's replica of a group it leads:
    /// `Ok(Some((epoch, end offset)))`, `Ok(None)` for an epoch below the
    /// log's first, or the leader (and term) when this replica does not lead.
    pub async fn epoch_end(
        &self,
        key: &GroupKey,
        epoch: u64,
    ) -> Result<Option<(u64, u64)>, LeaderView> {
        loop {
            let progressed = self.progressed.listen();
            {
                let d = self.driver.borrow();
                if let Some(d) = d.as_ref() {
                    return match d.group(key) {
                        Some(g) if g.is_leader() => Ok(g.epoch_end(epoch)),
                        Some(g) => Err((g.leader_id().map(|l| l as u32), g.term())),
                        None => Err((None, 0)),
                    };
                }
            }
            // Mid-round: ask again after it.
            progressed.await;
        }
    }

    /// Whether this broker's replica of `topic`/`partition` leads its
    /// group now, in which term, and whether it applied an entry of that
    /// term (None: no replica here). A hook for layers that keep state
    /// derived from a partition's log (the group coordinator reloads
    /// `__consumer_offsets` once a new term's entry is applied).
    pub async fn lead(&self, topic: &str, partition: u32) -> Option<Lead> {
        let key = self.key_of(topic, partition)?;
        loop {
            let progressed = self.progressed.listen();
            {
                let d = self.driver.borrow();
                if let Some(d) = d.as_ref() {
                    return d.group(&key).map(|g| Lead {
                        leads: g.is_leader(),
                        term: g.term(),
                        term_applied: g.applied_own_term(),
                    });
                }
            }
            // Mid-round: ask again after it.
            progressed.await;
        }
    }

    /// DeleteRecords on a replicated partition: the new log start goes
    /// through the group as an entry (`replica::entry::delete_records_frame`),
    /// and this waits until it is committed and applied on this broker's
    /// replica (each replica raises its log start as it applies it).
    /// `offset` must be at most the high watermark (the caller checks).
    /// `Err(NotLeader)`: this replica does not lead, or a new leader
    /// replaced the entry; the client asks the leader again.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), NotLeader> {
        let frame = crate::replica::entry::delete_records_frame(offset);
        let proposed = match self.submit(topic, partition, vec![frame]).await {
            Ok(Ok(p)) => p,
            _ => return Err(NotLeader),
        };
        let (Some(p), Some(key)) = (proposed.first().copied(), self.key_of(topic, partition))
        else {
            return Err(NotLeader);
        };
        loop {
            let progressed = self.progressed.listen();
            match self.outcome(&key, p) {
                Outcome::Committed { .. } => return Ok(()),
                Outcome::Lost => return Err(NotLeader),
                Outcome::Pending => progressed.await,
            }
        }
    }

    /// acks=1: the base offset of a proposal the leader appended, if it did.
    pub fn appended_at(&self, key: &GroupKey, p: Proposed) -> Option<u64> {
        let d = self.driver.borrow();
        d.as_ref()?.group(key)?.appended_at(p)
    }

    /// The shard's replication task.
    pub async fn run(self: Rc<Self>, shard: std::rc::Weak<super::Shard>) {
        let mut next_tick = std::time::Instant::now() + REPLICATION_TICK;
        let mut ticks = 0u64;
        loop {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            let woke = self.wake.listen();
            let now = std::time::Instant::now();
            let ticked = now >= next_tick;
            let mut compact = false;
            if ticked {
                self.driver_mut().tick();
                next_tick = now + REPLICATION_TICK;
                ticks += 1;
                self.reconfigure(&shard, ticks);
                // Retention every `retention_check_interval_ms`.
                let every = (shard.config.retention_check_interval_ms
                    / REPLICATION_TICK.as_millis() as u64)
                    .max(1);
                compact = ticks.is_multiple_of(every);
                if ticks.is_multiple_of(10) && tracing::enabled!(tracing::Level::DEBUG) {
                    for (key, g) in self.driver_mut().groups() {
                        debug!(?key, "replica: {}", g.describe());
                    }
                }
            }
            let batches = std::mem::take(&mut *self.inbox.borrow_mut());
            let proposals = std::mem::take(&mut *self.proposals.borrow_mut());
            let opened = std::mem::take(&mut *self.pending_groups.borrow_mut());
            let closed = std::mem::take(&mut *self.removed.borrow_mut());
            {
                let mut d = self.driver_mut();
                for key in closed {
                    d.remove(&key);
                    self.sync_asked.borrow_mut().remove(&key);
                }
                for (key, g) in opened {
                    if d.group(&key).is_none() {
                        d.insert(key, g);
                    }
                }
                for b in batches {
                    d.receive(b);
                }
                let lost: Vec<u32> = std::mem::take(&mut *self.lost_to.borrow_mut())
                    .into_iter()
                    .collect();
                for peer in lost {
                    d.report_unreachable(peer);
                }
                for p in proposals {
                    let r: Result<Vec<Proposed>, ProposeError> =
                        p.frames.into_iter().map(|f| d.propose(&p.key, f)).collect();
                    let _ = p.reply.send(r);
                }
            }
            self.round(&shard, ticked, compact).await;
            drop(shard);
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            futures_lite::future::or(woke, glommio::timer::sleep(wait)).await;
        }
    }

    /// Move each group with a reassignment in progress a step on (those
    /// this broker leads), and report the finished ones to the controller.
    fn reconfigure(&self, shard: &Rc<super::Shard>, tick: u64) {
        let Some(me) = shard.node_id() else {
            return;
        };
        let mut targets = self.targets.borrow_mut();
        for (key, t) in targets.iter_mut() {
            let step = self.driver_mut().reconfigure(key, &t.replicas);
            match step {
                Some(crate::replica::Reconfig::Done) => {}
                Some(s @ crate::replica::Reconfig::Proposed)
                | Some(s @ crate::replica::Reconfig::Transferring(_)) => {
                    info!(topic = %t.topic, partition = t.partition, target = ?t.replicas, "reassignment: {s:?}");
                    continue;
                }
                _ => continue,
            }
            if t.reported_at
                .is_some_and(|at| tick < at + REPORT_EVERY_TICKS)
            {
                continue;
            }
            t.reported_at = Some(tick);
            let op = crate::router::ops::AdminOp::CompleteReassignment {
                name: t.topic.clone(),
                partition: t.partition,
                leader: me,
                replicas: t.replicas.iter().map(|n| *n as u32).collect(),
            };
            let (topic, partition) = (t.topic.clone(), t.partition);
            let shard = shard.clone();
            glommio::spawn_local(async move {
                match shard.admin(op).await {
                    Ok(_) => info!(%topic, partition, "reassignment complete"),
                    Err(e) => warn!(%topic, partition, "reporting a completed reassignment: {e}"),
                }
            })
            .detach();
        }
    }

    /// One round: process, ask for syncs, release what is durable, send.
    async fn round(self: &Rc<Self>, shard: &super::Shard, ticked: bool, compact: bool) {
        // The driver leaves its cell for the round (it awaits truncations
        // and reads for followers): every other entry point only queues
        // and wakes this task, and readers of outcomes find it absent and
        // ask again after the round.
        let mut d = self.driver.take().expect("one round at a time");
        let mut failed = Vec::new();
        if compact {
            // Retention of replicated partitions runs here, between the
            // groups' ready cycles, not in the shard's housekeeping: a
            // group's index must move with its log.
            failed.extend(d.compact(shard.clock.wall_ms()).await);
        }
        failed.extend(d.process().await);
        d.on_durable();
        failed.extend(d.process().await);
        *self.driver.borrow_mut() = Some(d);
        for (key, e) in failed {
            warn!(?key, "replica failed; its group stops: {e}");
            self.driver_mut().remove(&key);
            self.keys.borrow_mut().retain(|_, k| *k != key);
        }
        let wanted = self.driver_mut().durable_wanted();
        for (key, end) in wanted {
            if self.sync_asked.borrow().get(&key) == Some(&end) {
                continue;
            }
            self.sync_asked.borrow_mut().insert(key, end);
            let part: Option<Rc<Partition<DmaDisk>>> =
                self.driver_mut().group(&key).map(|g| g.partition().clone());
            if let Some(part) = part {
                let me = self.clone();
                glommio::spawn_local(async move {
                    if part.wait_durable(end - 1).await.is_ok() {
                        me.wake.notify();
                    }
                })
                .detach();
            }
        }
        let out = self.driver_mut().take_batches();
        for (to, batch) in out {
            self.send(to, batch);
        }
        // Leaders and in-sync sets are noted once per tick, not at every
        // round (a round runs per proposal under load): a change reaches
        // Metadata within a tick.
        if ticked {
            self.note_leaders(shard);
        }
        self.progressed.notify();
    }

    /// Record this shard's groups' leaders, and tell the broker's other
    /// shards of every change (Metadata may be answered on any shard).
    fn note_leaders(&self, shard: &super::Shard) {
        // Per tick over every group: no allocation unless something changed.
        let d = self.driver_mut();
        let mut changed = Vec::new();
        let mut isr_changed = Vec::new();
        {
            let mut leaders = self.leaders.borrow_mut();
            let mut in_sync = self.in_sync.borrow_mut();
            for (tp, key) in self.keys.borrow().iter() {
                let Some(g) = d.group(key) else {
                    continue;
                };
                let l: LeaderView = (g.leader_id().map(|l| l as u32), g.term());
                if leaders.get(tp) != Some(&l) {
                    // One line per leadership won, the same shape on every
                    // broker: tests/cluster.rs checks that no epoch of a
                    // partition had two leaders.
                    if l.0.is_some() && l.0 == shard.node_id() {
                        info!(topic = %tp.0, partition = tp.1, epoch = l.1, node = l.0.unwrap_or(0), "replica: became leader");
                    }
                    leaders.insert(tp.clone(), l);
                    changed.push((tp.clone(), l));
                }
                let isr: Option<Vec<u32>> = g
                    .in_sync()
                    .map(|ids| ids.into_iter().map(|i| i as u32).collect());
                if in_sync.get(tp) != isr.as_ref() {
                    match &isr {
                        Some(isr) => in_sync.insert(tp.clone(), isr.clone()),
                        None => in_sync.remove(tp),
                    };
                    isr_changed.push((tp.clone(), isr));
                }
            }
        }
        if changed.is_empty() && isr_changed.is_empty() {
            return;
        }
        for s in 0..shard.shards() {
            if s == shard.id {
                continue;
            }
            let (changed, isr_changed) = (changed.clone(), isr_changed.clone());
            let _ = shard.router.send(
                s,
                crate::router::ShardMsg::Task(Box::new(move || {
                    if let Some(r) = super::Shard::current().replication() {
                        r.leaders.borrow_mut().extend(changed);
                        let mut in_sync = r.in_sync.borrow_mut();
                        for (k, isr) in isr_changed {
                            match isr {
                                Some(isr) => in_sync.insert(k, isr),
                                None => in_sync.remove(&k),
                            };
                        }
                    }
                })),
            );
        }
    }

    fn send(self: &Rc<Self>, to: u32, batch: Batch) {
        let tx = {
            let mut peers = self.peers.borrow_mut();
            match peers.get(&to) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = flume::bounded(PEER_QUEUE);
                    peers.insert(to, tx.clone());
                    glommio::spawn_local(self.clone().peer_sender(to, rx)).detach();
                    tx
                }
            }
        };
        // Full: the peer is slow or down. The groups hear of it at the next
        // round and probe the peer again (Raft resends from there).
        if tx.try_send(batch).is_err() {
            self.lost_to.borrow_mut().insert(to);
            self.wake.notify();
        }
    }

    async fn peer_sender(self: Rc<Self>, peer: u32, rx: flume::Receiver<Batch>) {
        let mut link = PeerLink::new("replication", peer, REPLICATION_TICK, WRITE_TIMEOUT);
        while let Ok(batch) = rx.recv_async().await {
            let Some(addr) = self.addrs.borrow().get(&peer).cloned() else {
                continue;
            };
            let frame = rpc_wire::encode_request(0, &Request::Replicate(batch));
            if !link.send(&addr, &frame).await {
                self.lost_to.borrow_mut().insert(peer);
                self.wake.notify();
            }
        }
    }
}

/// On the broker's RPC shard: hand each group's messages of a batch from
/// a peer to the shard holding this broker's replica of that group.
/// Messages for groups this broker does not replicate are dropped (Raft
/// resends once the table catches up).
pub fn route(shard: &Rc<super::Shard>, batch: Batch) {
    let Some(me) = shard.node_id() else {
        return;
    };
    let topics = shard.topics();
    // One pass over the table per batch, not one per message.
    let by_id: HashMap<u128, &crate::metadata::TopicMeta> = topics
        .topics
        .values()
        .filter_map(|t| Some((u128::from_str_radix(&t.id, 16).ok()?, t)))
        .collect();
    let mut by_shard: HashMap<usize, Vec<(GroupKey, raft::eraftpb::Message)>> = HashMap::new();
    for (key, m) in batch.items {
        let target = by_id.get(&key.topic_id).and_then(|t| {
            let a = t.assignment.get(key.partition as usize)?;
            Some(a.replica_shard(me)? as usize % shard.shards())
        });
        if let Some(s) = target {
            by_shard.entry(s).or_default().push((key, m));
        }
    }
    for (s, items) in by_shard {
        let part = Batch {
            from: batch.from,
            items,
        };
        if s == shard.id {
            if let Some(r) = shard.replication() {
                r.deliver(part);
            }
            continue;
        }
        let _ = shard.router.send(
            s,
            crate::router::ShardMsg::Task(Box::new(move || {
                let here = super::Shard::current();
                if let Some(r) = here.replication() {
                    r.deliver(part);
                }
            })),
        );
    }
}
