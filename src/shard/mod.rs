//! A shard: one pinned glommio executor that owns a share of the partitions.
//!
//! Lifecycle: [`crate::broker`] starts one thread per shard, pinned to its
//! CPU; [`run`] probes the data device (glommio io-poll workaround), opens
//! (recovers) the partitions this shard owns, reports ready, then serves
//! [`ShardMsg`]s until Shutdown, when it closes every partition (flush,
//! fsync, indexes, checkpoint) and returns. Listeners and adopted
//! connections are served through the [`Frontend`] the broker plugs in
//! (the server layer sits above the shard, so the shard never names it).
//!
//! Ownership: everything in [`Shard`] belongs to its executor and is never
//! touched from another core. Other shards reach it only through the
//! router. The current shard is available to code running on it through
//! [`Shard::current`].

pub mod admin;
pub mod append_gate;
pub mod dispatch;
pub mod housekeeping;
pub mod local;
pub mod memory;
pub mod queues;
pub mod replication;

use crate::clock::{Clock, SystemClock};
use crate::config::BrokerConfig;
use crate::metadata::{identity, partition_dir, SharedTopics};
use crate::partition::Partition;
use crate::router::ops::{OfflineCause, OpError};
use crate::router::{locate, shard_of, ListenerKind, Location, Router, ShardMsg};
use crate::storage::dma::{remove_partition_dir, DmaDisk};
use crate::storage::{CacheBudget, LogConfig, WriteBudget};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use tracing::{error, info, warn};

/// Starts the accept loops on the bound listeners (shard 0 only); the
/// returned tasks are dropped at shutdown. See [`Frontend`].
pub type Listen = Box<dyn FnOnce(&Rc<Shard>) -> Result<Vec<glommio::task::JoinHandle<()>>, String>>;

/// Attaches a layer above the shard once its partitions are open; the
/// shard starts serving clients when the returned future is done (see
/// [`Frontend`]).
pub type Attach =
    Box<dyn FnOnce(&Rc<Shard>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

/// The connection layer's entry points, plugged in by the broker at startup.
///
/// Why a hook: accepting and serving connections is the server layer's
/// job, and the server sits above the shard (docs/architecture.md), so the
/// shard reaches it through what the broker hands in here instead of
/// naming `server::acceptor`.
pub struct Frontend {
    /// Serve the listeners on this shard (shard 0 only, else `None`).
    pub listen: Option<Listen>,
    /// Serve a connection another shard accepted and handed here
    /// ([`ShardMsg::Adopt`]), already bound to this executor.
    pub adopt: fn(&Rc<Shard>, glommio::net::TcpStream, ListenerKind),
    /// Called once the shard has opened its partitions, before it serves
    /// (shard 0 in a cluster: the cluster layer attaches itself here and
    /// catches up with the controller before clients are served).
    pub attach: Option<Attach>,
}

/// Per-shard state that belongs to a layer above the shard (the group
/// coordinator, the Kafka listener's advertised address), with typed
/// access and no downcasts.
///
/// Why not a field of [`Shard`]: the shard must not depend on `groups` or
/// `kafka`; and it replaces a `TypeId -> Rc<dyn Any>` map. The owner
/// declares one in a `thread_local!` (a shard is its executor's thread, as
/// [`Shard::current`] relies on). The shard keeps the value alive, so it is
/// dropped with the shard exactly as a field would be; the slot holds only
/// a weak handle, tagged with the shard it was made for.
pub struct PerShard<T: 'static> {
    slot: RefCell<Option<(*const Shard, Weak<T>)>>,
}

impl<T: 'static> Default for PerShard<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> PerShard<T> {
    pub const fn new() -> Self {
        PerShard {
            slot: RefCell::new(None),
        }
    }

    /// `shard`'s value, if it has one.
    pub fn get(&self, shard: &Rc<Shard>) -> Option<Rc<T>> {
        match &*self.slot.borrow() {
            Some((owner, v)) if std::ptr::eq(*owner, Rc::as_ptr(shard)) => v.upgrade(),
            _ => None,
        }
    }

    /// `shard`'s value, made with `make` on first use; `true` if made now.
    pub fn get_or_insert_with(&self, shard: &Rc<Shard>, make: impl FnOnce() -> T) -> (Rc<T>, bool) {
        if let Some(v) = self.get(shard) {
            return (v, false);
        }
        let v = Rc::new(make());
        shard.held.borrow_mut().push(v.clone());
        *self.slot.borrow_mut() = Some((Rc::as_ptr(shard), Rc::downgrade(&v)));
        (v, true)
    }
}

/// Anything a shard keeps alive for a [`PerShard`] slot (never looked at).
trait Held {}
impl<T> Held for T {}

/// A partition as its owning shard sees it.
pub enum PartitionSlot {
    Online {
        partition: Rc<Partition<DmaDisk>>,
        flusher: glommio::task::JoinHandle<()>,
    },
    /// Recovery refused it (corruption) or its storage failed.
    Offline(OfflineCause),
}

/// Per-core broker state.
pub struct Shard {
    pub id: usize,
    pub router: Router,
    pub config: Arc<BrokerConfig>,
    pub disk: DmaDisk,
    topics: RefCell<SharedTopics>,
    partitions: RefCell<HashMap<(String, u32), PartitionSlot>>,
    pub cache_budget: Rc<CacheBudget>,
    /// Time for everything on this shard: flush intervals, long-poll and
    /// ack deadlines, group sessions, connection timeouts.
    pub clock: Rc<dyn Clock>,
    /// Appended bytes its flushers have not written yet; appends wait while it is spent.
    pub write_budget: Rc<WriteBudget>,
    /// Appends go through this in arrival order (see [`append_gate`]).
    pub append_gate: append_gate::AppendGate,
    /// Bytes held for clients' requests and answers, across connections.
    pub memory: Rc<memory::RequestMemory>,
    pub connections: Cell<usize>,
    pub shutting_down: Cell<bool>,
    /// Listening addresses (shard 0 binds them), for Metadata answers.
    pub native_addr: RefCell<Option<SocketAddr>>,
    pub kafka_addr: RefCell<Option<SocketAddr>>,
    /// Controller state (shard 0 only): next producer id to hand out.
    pub next_producer_id: Cell<i64>,
    /// Values of [`PerShard`] slots, owned here so they live as long as the shard.
    held: RefCell<Vec<Rc<dyn Held>>>,
    /// Serves connections handed over by other shards (see [`Frontend`]).
    adopt: fn(&Rc<Shard>, glommio::net::TcpStream, ListenerKind),
    /// Shard 0 in a cluster: where metadata changes go (see [`admin`]).
    controller_link: RefCell<Option<Rc<dyn admin::ControllerLink>>>,
    /// In a cluster: this shard's replicated partitions (Raft groups).
    replication: Option<Rc<replication::Replication>>,
    /// Which task queue work runs in (see [`queues`]).
    pub queues: queues::TaskQueues,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Shard>>> = const { RefCell::new(None) };
}

impl Shard {
    /// The shard running on this thread. Panics off a shard thread.
    pub fn current() -> Rc<Shard> {
        CURRENT.with(|c| c.borrow().clone().expect("not on a shard thread"))
    }

    pub fn shards(&self) -> usize {
        self.router.shards()
    }

    pub fn topics(&self) -> SharedTopics {
        self.topics.borrow().clone()
    }

    /// Shard 0, in a cluster: send metadata changes to the controller
    /// through `link` from now on.
    pub fn link_controller(&self, link: Rc<dyn admin::ControllerLink>) {
        assert_eq!(self.id, 0, "the controller link lives on shard 0");
        *self.controller_link.borrow_mut() = Some(link);
    }

    /// In a cluster: this shard's replicated partitions.
    pub fn replication(&self) -> Option<&Rc<replication::Replication>> {
        self.replication.as_ref()
    }

    /// This broker's id in a cluster (None: a single node).
    pub fn node_id(&self) -> Option<u32> {
        self.config.node_id
    }

    /// Where a partition of a known topic is served (see [`locate`]).
    pub fn locate(&self, meta: &crate::metadata::TopicMeta, partition: u32) -> Location {
        locate(meta, partition, self.shards(), self.node_id())
    }

    /// The shard that answers for a partition on this broker: its owner,
    /// or (for a partition led elsewhere, or an unknown topic) this shard,
    /// which answers with the error at once instead of routing it.
    pub fn serving_shard(&self, topic: &str, partition: u32) -> usize {
        self.serving_shard_in(&self.topics(), topic, partition)
    }

    /// [`Self::serving_shard`] against a table the caller holds (one
    /// lookup of the shard's table for a whole request's partitions).
    pub fn serving_shard_in(&self, topics: &SharedTopics, topic: &str, partition: u32) -> usize {
        match topics.get(topic).map(|m| self.locate(m, partition)) {
            Some(Location::Here(s)) => s,
            Some(Location::Elsewhere { .. }) => self.id,
            None => shard_of(topic, partition, self.shards()),
        }
    }

    /// Whether this shard serves `topic`'s `partition` (false for an
    /// unknown topic, or a partition on another shard or broker).
    pub fn owns_partition(&self, topic: &str, partition: u32) -> bool {
        self.topics()
            .get(topic)
            .is_some_and(|m| self.owns(m, partition))
    }

    fn owns(&self, meta: &crate::metadata::TopicMeta, partition: u32) -> bool {
        self.locate(meta, partition) == Location::Here(self.id)
    }

    /// A partition this shard owns.
    pub fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Rc<Partition<DmaDisk>>, OpError> {
        let topics = self.topics();
        let Some(meta) = topics.get(topic) else {
            return Err(OpError::UnknownTopic(topic.to_string()));
        };
        if partition >= meta.partitions {
            return Err(OpError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: meta.partitions,
            });
        }
        match self.locate(meta, partition) {
            Location::Here(s) => assert_eq!(s, self.id, "routed to the wrong shard"),
            Location::Elsewhere { node } => {
                return Err(OpError::NotLeader {
                    topic: topic.to_string(),
                    partition,
                    leader: node,
                })
            }
        }
        match self
            .partitions
            .borrow()
            .get(&(topic.to_string(), partition))
        {
            // A log that found corruption on a read is offline like one
            // that recovery refused.
            Some(PartitionSlot::Online { partition: p, .. }) => match p.offline_cause() {
                None => {
                    // A replicated partition serves clients only where its
                    // Raft group's leader is.
                    if let Some(a) = meta
                        .assignment
                        .get(partition as usize)
                        .filter(|a| a.replicated())
                    {
                        let me = self
                            .node_id()
                            .expect("replicated partitions are a cluster's");
                        let leader = self
                            .replication
                            .as_ref()
                            .and_then(|r| r.leader(topic, partition))
                            .and_then(|(l, _)| l);
                        if leader != Some(me) {
                            return Err(OpError::NotLeader {
                                topic: topic.to_string(),
                                partition,
                                leader: leader.unwrap_or(a.node),
                            });
                        }
                    }
                    Ok(p.clone())
                }
                Some(cause) => Err(OpError::Offline {
                    topic: topic.to_string(),
                    partition,
                    cause: cause.into(),
                }),
            },
            Some(PartitionSlot::Offline(cause)) => Err(OpError::Offline {
                topic: topic.to_string(),
                partition,
                cause: cause.clone(),
            }),
            None => Err(OpError::UnknownTopic(topic.to_string())),
        }
    }

    /// Every online partition of this shard.
    pub fn online_partitions(&self) -> Vec<Rc<Partition<DmaDisk>>> {
        self.partitions
            .borrow()
            .values()
            .filter_map(|s| match s {
                PartitionSlot::Online { partition, .. } => Some(partition.clone()),
                PartitionSlot::Offline(_) => None,
            })
            .collect()
    }

    /// Bring owned partitions in line with `topics`: open new ones, close
    /// and delete removed ones.
    pub async fn apply_topics(self: &Rc<Self>, topics: SharedTopics) {
        let old = self.topics.replace(topics.clone());
        if old.version > topics.version {
            // Stale broadcast: keep the newer table.
            self.topics.replace(old);
            return;
        }
        // Close (and keep the files of) partitions the controller moved to
        // another broker or shard: the new owner serves them from now on.
        let moved: Vec<(String, u32)> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| {
                topics
                    .get(t)
                    .is_some_and(|m| *p < m.partitions && !self.owns(m, *p))
            })
            .cloned()
            .collect();
        for key in moved {
            let slot = self.partitions.borrow_mut().remove(&key);
            if let Some(r) = &self.replication {
                r.remove(&key.0, key.1);
            }
            let was_online = matches!(slot, Some(PartitionSlot::Online { .. }));
            if let Some(PartitionSlot::Online { partition, flusher }) = slot {
                if let Err(e) = partition.close().await {
                    warn!(topic = %key.0, partition = key.1, "closing a partition that moved: {e}");
                }
                flusher.cancel();
            }
            // A replica a reassignment removed from a replicated
            // partition's group: its copy is out of the group for good (a
            // later reassignment back starts a fresh replica), so its space
            // comes back now. A partition moved without replicas keeps its
            // files: they are its only copy.
            let me = self.node_id();
            let removed_replica = was_online
                && old
                    .get(&key.0)
                    .and_then(|m| m.assignment.get(key.1 as usize))
                    .is_some_and(|a| a.replicated())
                && topics
                    .get(&key.0)
                    .and_then(|m| m.assignment.get(key.1 as usize))
                    .is_some_and(|a| {
                        a.replicated() && me.is_some_and(|me| a.replica_shard(me).is_none())
                    });
            if removed_replica {
                let dir = partition_dir(&self.config.data_dir, &key.0, key.1);
                if let Err(e) = remove_partition_dir(&dir).await {
                    warn!(dir = %dir.display(), "removing a replica reassigned away: {e}");
                }
                info!(topic = %key.0, partition = key.1, "replica reassigned away: closed and deleted here");
                continue;
            }
            info!(topic = %key.0, partition = key.1, "partition moved away: closed here");
        }
        // Every group learns its peers' addresses (a broker that joined
        // since may now hold replicas) and any reassignment in progress.
        if let (Some(r), Some(_)) = (&self.replication, self.node_id()) {
            if !topics.brokers.is_empty() {
                r.set_peer_addrs(
                    topics
                        .brokers
                        .iter()
                        .map(|(id, b)| (*id, b.rpc_addr.clone()))
                        .collect(),
                );
            }
            for ((t, p), slot) in self.partitions.borrow().iter() {
                if !matches!(slot, PartitionSlot::Online { .. }) {
                    continue;
                }
                let target = topics
                    .get(t)
                    .and_then(|m| m.assignment.get(*p as usize))
                    .filter(|a| a.replicated() && !a.target.is_empty())
                    .map(|a| a.target.clone());
                r.set_target(t, *p, target);
            }
        }
        // Close and delete partitions of topics that went away.
        let doomed: Vec<(String, u32)> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| topics.get(t).is_none_or(|m| *p >= m.partitions))
            .cloned()
            .collect();
        for key in doomed {
            let slot = self.partitions.borrow_mut().remove(&key);
            if let Some(r) = &self.replication {
                r.remove(&key.0, key.1);
            }
            let was_online = matches!(slot, Some(PartitionSlot::Online { .. }));
            if let Some(PartitionSlot::Online { partition, flusher }) = slot {
                if let Err(e) = partition.close().await {
                    warn!(topic = %key.0, partition = key.1, "closing a deleted partition: {e}");
                }
                // On a full disk close() gives up at once but the flusher
                // would retry forever, keeping the segment files open, so
                // their space would never come back. Stop it.
                flusher.cancel();
            }
            // Only a directory this partition opened, or one that carries
            // the deleted topic's identity: an offline partition's
            // directory may be someone else's data.
            let id = old.identity(&key.0, key.1);
            let dir = partition_dir(&self.config.data_dir, &key.0, key.1);
            let ours =
                was_online || id.is_some_and(|id| identity::read(&dir).ok().flatten() == Some(id));
            if !ours {
                warn!(dir = %dir.display(), "partition deleted; its directory is not the topic's and is left untouched");
                continue;
            }
            // Off the shard's thread: freeing a partition's segments takes
            // 100s of ms per GiB on a file system mounted with `discard`.
            if let Err(e) = remove_partition_dir(&dir).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(dir = %dir.display(), "removing a deleted partition: {e}");
                }
            }
            info!(topic = %key.0, partition = key.1, "partition deleted");
        }
        // Altered topic configs apply to open partitions at once.
        for ((t, _), slot) in self.partitions.borrow().iter() {
            if let (PartitionSlot::Online { partition, .. }, Some(m)) = (slot, topics.get(t)) {
                if partition.topic_config() != m.config {
                    partition.set_topic_config(m.config.clone());
                }
            }
        }
        // Open partitions this shard owns but has not opened.
        let mut opens = Vec::new();
        for meta in topics.topics.values() {
            for p in 0..meta.partitions {
                let key = (meta.name.clone(), p);
                if self.owns(meta, p) && !self.partitions.borrow().contains_key(&key) {
                    let id = topics
                        .identity(&meta.name, p)
                        .expect("topic is in the table");
                    opens.push((key, meta.config.clone(), id));
                }
            }
        }
        // Each directory must be its partition's (identity file), or be
        // created now with it, durably, before any segment.
        // Off the shard's thread: the claim's `syncfs` flushes the whole
        // file system (7 ms on an idle disk, far more on a busy one), and
        // every task of this shard would wait for it (glommio's stall
        // detector caught it in a topic creation under a produce flood).
        let ids: Vec<_> = opens.iter().map(|(_, _, id)| id.clone()).collect();
        let data_dir = self.config.data_dir.clone();
        let claims =
            crate::storage::dma::off_shard(move || identity::claim_all(&data_dir, &ids)).await;
        let results = futures::future::join_all(opens.into_iter().zip(claims).map(
            |((key, tcfg, _), claim)| {
                let this = self.clone();
                async move {
                    if let Err(e) = claim {
                        return (key, Err(OfflineCause::NotClaimed(Arc::new(e))));
                    }
                    let dir = partition_dir(&this.config.data_dir, &key.0, key.1);
                    let cfg = LogConfig::from_broker(&this.config, tcfg);
                    let r = Partition::open(
                        this.disk.clone(),
                        dir,
                        cfg,
                        this.cache_budget.clone(),
                        this.write_budget.clone(),
                        this.clock.clone(),
                    )
                    .await
                    .map_err(OfflineCause::Storage);
                    (key, r)
                }
            },
        ))
        .await;
        for (key, r) in results {
            let slot = match r {
                Ok(partition) => {
                    let flusher = self.queues.spawn_bulk(partition.run_flusher()).detach();
                    if let Err(e) = self.open_group(&topics, &key, &partition).await {
                        error!(topic = %key.0, partition = key.1, "replica offline: {e}");
                    }
                    PartitionSlot::Online { partition, flusher }
                }
                Err(e) => {
                    error!(topic = %key.0, partition = key.1, "partition offline: {e}");
                    PartitionSlot::Offline(e)
                }
            };
            self.partitions.borrow_mut().insert(key, slot);
        }
        self.stamp_leader_epochs(&topics);
    }

    /// A replicated partition just opened here: start its Raft group's
    /// replica (voters: every replica's broker, from the assignment).
    async fn open_group(
        &self,
        topics: &SharedTopics,
        key: &(String, u32),
        partition: &Rc<Partition<DmaDisk>>,
    ) -> Result<(), crate::replica::ReplicaError> {
        let (Some(r), Some(me)) = (&self.replication, self.node_id()) else {
            return Ok(());
        };
        let Some(meta) = topics.get(&key.0) else {
            return Ok(());
        };
        let Some(a) = meta
            .assignment
            .get(key.1 as usize)
            .filter(|a| a.replicated())
        else {
            return Ok(());
        };
        // (The peers' addresses were set by `apply_topics` before opens.)
        let topic_id = u128::from_str_radix(&meta.id, 16).unwrap_or(0);
        // A new replica starts from the group's first configuration and
        // replays its changes; a replica with saved state ignores this.
        let mut cfg = crate::replica::GroupConfig::new(
            me as u64,
            a.origin_voters().iter().map(|n| *n as u64).collect(),
        );
        cfg.prefer_leader(a.node == me);
        cfg.memory = r.memory();
        let group =
            crate::replica::PartitionGroup::open(&cfg, self.disk.clone(), partition.clone())
                .await?;
        r.insert(
            &key.0,
            key.1,
            crate::replica::GroupKey {
                topic_id,
                partition: key.1,
            },
            group,
        );
        if !a.target.is_empty() {
            r.set_target(&key.0, key.1, Some(a.target.clone()));
        }
        info!(topic = %key.0, partition = key.1, replicas = ?a.replicas(), target = ?a.target, "replica of a replicated partition opened");
        Ok(())
    }

    /// In a cluster: each open partition appends with the leader epoch of
    /// its placement (the controller bumps it when a partition moves).
    fn stamp_leader_epochs(&self, topics: &SharedTopics) {
        for ((t, p), slot) in self.partitions.borrow().iter() {
            let epoch = topics
                .get(t)
                .and_then(|m| m.assignment.get(*p as usize))
                .map(|a| a.leader_epoch as i32);
            if let (PartitionSlot::Online { partition, .. }, Some(e)) = (slot, epoch) {
                if partition.leader_epoch() < e {
                    partition.set_leader_epoch(e);
                }
            }
        }
    }

    /// Close every partition: flush, sync, indexes, checkpoints.
    pub async fn close_all(&self) {
        let slots: Vec<_> = self.partitions.borrow_mut().drain().collect();
        let closes = slots.into_iter().filter_map(|(key, slot)| match slot {
            PartitionSlot::Online { partition, flusher } => Some(async move {
                if let Err(e) = partition.close().await {
                    error!(topic = %key.0, partition = key.1, "close failed: {e}");
                }
                drop(flusher);
            }),
            PartitionSlot::Offline(_) => None,
        });
        futures::future::join_all(closes).await;
    }
}

/// What a shard reports once it is serving.
#[derive(Debug, Clone)]
pub struct ShardReady {
    pub shard: usize,
    pub native_addr: Option<SocketAddr>,
    pub kafka_addr: Option<SocketAddr>,
}

/// Body of a shard's executor thread.
pub async fn run(
    id: usize,
    config: Arc<BrokerConfig>,
    router: Router,
    rx: flume::Receiver<ShardMsg>,
    topics: SharedTopics,
    ready: std::sync::mpsc::Sender<Result<ShardReady, String>>,
    frontend: Frontend,
) {
    // Before any other DMA open on this executor: the io-poll probe workaround.
    let alignment =
        match crate::storage::dma::probe_device(&config.data_dir, config.direct_io_alignment).await
        {
            Ok(a) => a,
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "shard {id}: cannot probe data directory {}: {e}",
                    config.data_dir.display()
                )));
                return;
            }
        };
    info!(
        shard = id,
        alignment,
        setting = ?config.direct_io_alignment,
        "direct I/O alignment"
    );
    // Before any partition opens: each shard's own pool of kernel workers
    // for fdatasync and fallocate, of the same size on every shard.
    let io_workers = match config.io_workers_per_shard {
        0 => crate::storage::io_workers::default_bounded(),
        n => n,
    };
    match crate::storage::io_workers::set_bounded(io_workers) {
        Ok((before, after)) => info!(
            shard = id,
            io_workers = after,
            kernel_had = before,
            "io workers for blocking file operations"
        ),
        Err(e) => warn!(
            shard = id,
            "cannot size the io workers for blocking file operations (Linux 5.15+), the kernel's stay: {e}"
        ),
    }
    let shard = Rc::new(Shard {
        id,
        router,
        disk: DmaDisk::new(alignment),
        topics: RefCell::new(Arc::new(Default::default())),
        partitions: RefCell::new(HashMap::new()),
        cache_budget: CacheBudget::new(config.shard_cache_bytes_max),
        clock: SystemClock::shared(),
        write_budget: WriteBudget::new(config.max_unwritten_bytes_per_shard),
        append_gate: append_gate::AppendGate::default(),
        memory: memory::RequestMemory::new(config.max_inflight_bytes_per_shard),
        connections: Cell::new(0),
        shutting_down: Cell::new(false),
        native_addr: RefCell::new(None),
        kafka_addr: RefCell::new(None),
        next_producer_id: Cell::new(topics.producer_id_block_end),
        held: RefCell::new(Vec::new()),
        adopt: frontend.adopt,
        controller_link: RefCell::new(None),
        replication: config
            .node_id
            .map(|n| replication::Replication::new(n, config.replication_memory_bytes_per_shard)),
        queues: queues::TaskQueues::create(),
        config,
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(shard.clone()));
    shard.apply_topics(topics).await;
    crate::storage::dma::assert_poll_ring_idle();
    // Started after the io-poll check above: it reads and writes logs.
    let replication = shard
        .replication
        .as_ref()
        .map(|r| glommio::spawn_local(r.clone().run(Rc::downgrade(&shard))).detach());
    if let Some(attach) = frontend.attach {
        attach(&shard).await;
    }
    let mut accept_tasks = Vec::new();
    if let Some(listen) = frontend.listen {
        match listen(&shard) {
            Ok(tasks) => accept_tasks = tasks,
            Err(e) => {
                let _ = ready.send(Err(e));
                shard.close_all().await;
                return;
            }
        }
    }
    let _ = ready.send(Ok(ShardReady {
        shard: id,
        native_addr: *shard.native_addr.borrow(),
        kafka_addr: *shard.kafka_addr.borrow(),
    }));
    let housekeeping = glommio::spawn_local(housekeeping::run(shard.clone())).detach();
    while let Ok(msg) = rx.recv_async().await {
        if let ShardMsg::Shutdown { reply } = msg {
            let io = crate::storage::io_stats::counts();
            // In hundredths of a ms.
            let sync_ms_avg = (io.sync_micros / 10 / io.syncs.max(1)) as f64 / 100.0;
            info!(
                shard = id,
                read_from_cache_mib = io.cache_bytes >> 20,
                read_from_disk_mib = io.disk_bytes >> 20,
                disk_reads = io.disk_reads,
                disk_read_mib = io.disk_read_bytes >> 20,
                syncs = io.syncs,
                sync_ms_avg,
                slow_disk_ops = io.slow_ops,
                slowest_disk_op_ms = io.slowest_op_micros / 1000,
                "shutting down: closing partitions"
            );
            shard.shutting_down.set(true);
            drop(accept_tasks);
            housekeeping.cancel();
            // No more appends or truncations by the groups once the
            // partitions close.
            if let Some(r) = &replication {
                r.cancel();
            }
            shard.close_all().await;
            crate::storage::dma::assert_poll_ring_idle();
            let _ = reply.send(());
            break;
        }
        local::handle(&shard, msg);
    }
    CURRENT.with(|c| *c.borrow_mut() = None);
}
