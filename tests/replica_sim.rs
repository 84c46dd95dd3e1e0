//! Seeded simulation of replicated partitions (issue 13): three brokers
//! in one process, each with its own simulated disk (`storage::sim`), one
//! replication driver (`replica::ReplicationDriver`, the code a shard
//! runs) and a replica of each of two partitions' Raft groups. Brokers
//! exchange encoded batches (`replica::wire`, one per peer per round, all
//! groups together) over a simulated network that drops, delays,
//! duplicates and reorders them and cuts brokers off, on simulated time
//! (one tick per step). Proposals of record batches arrive at whoever
//! leads each partition; brokers crash (losing what their disk had not
//! synced, also between an append and its sync) and restart. Partition 0
//! is written by a plain producer, partition 1 by an idempotent one (one
//! producer id, sequences, at most 5 batches in flight) that now and
//! then retries every unacknowledged batch, in order, at whoever leads:
//! as a Kafka client does after a timeout or a leader change.
//!
//! Every request draws an acks setting, answered as the broker answers it
//! (`shard::local`'s `await_replicated`): acks=all once committed
//! (`PartitionGroup::outcome`), acks=1 once the leader appended it
//! (`PartitionGroup::appended_at`), acks=0 never. The plain producer uses
//! all three, the idempotent one all and 1 (a client that never hears back
//! cannot keep sequences; Kafka's refuse idempotence without acks=all).
//! The idempotent producer's answers are sometimes lost (it retries the
//! batch); when a leader expects an earlier sequence than the batch it
//! sends, the batches in between were lost: acks=1 ones it sends again.
//!
//! Checked after every step, per partition:
//! - at most one replica accepts writes, and one leads, per term (epoch);
//! - what a consumer reads below any replica's high watermark never
//!   changes, and every replica agrees on it (each replica's visible log is
//!   read incrementally and compared with one map offset → batch), and no
//!   batch is read at two offsets;
//! - a retry is never taken as a new entry while its batch was read; a
//!   retry refused as out of order is not among its producer's last 5
//!   batches in the leader's log; a leader never expects a sequence below
//!   an acks=all acknowledged batch's;
//!
//! and at the end, with the network healed and every broker up:
//! - every acks=all acknowledged proposal is present exactly once, at the
//!   offset it was acknowledged at, on every replica, and no batch
//!   (retries included) is in the log twice;
//! - an acks=1 acknowledged proposal is at the offset it was acknowledged
//!   at, or was lost by a failover (allowed, as in Kafka; counted as
//!   `lost_one`) and then never read there by a consumer;
//! - the replicas' visible logs end alike.
//!
//! Every seed replays exactly: `SHARDLOG_SEED=1234 cargo test --test
//! replica_sim -- --nocapture`. `SHARDLOG_SEEDS=N` runs N seeds (default
//! 40) from `SHARDLOG_FIRST_SEED` (default 1); `SHARDLOG_SIM_STEPS=N` sets
//! steps per seed (default 400).

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog::clock::{Clock, ManualClock};
use shardlog::config::TopicConfig;
use shardlog::format::header::attr;
use shardlog::format::{read_records, BatchBuilder, Compression, ProducerIds};
use shardlog::partition::Partition;
use shardlog::replica::wire;
use shardlog::replica::{
    GroupConfig, GroupKey, Outcome, PartitionGroup, ProposeError, Proposed, Reconfig,
    ReplicationDriver, WindowBudget,
};
use shardlog::storage::file::Disk;
use shardlog::storage::producer_state::{SequenceError, BATCHES_REMEMBERED};
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{CacheBudget, LogConfig, WriteBudget};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// The brokers whose replicas form each group at its start (its voters
/// at index 0); a reassignment simulation adds a fourth broker.
const NODES: u64 = 3;
const PARTITIONS: u32 = 2;
const TOPIC: u128 = 0xfeed;

fn key(p: u32) -> GroupKey {
    GroupKey {
        topic_id: TOPIC,
        partition: p,
    }
}

/// With `retention`, each log keeps about 6 KB (2 KB segments):
/// replicas move their logs' starts, and followers behind get snapshots.
fn log_cfg(retention: bool) -> LogConfig {
    LogConfig {
        topic: TopicConfig {
            segment_bytes: if retention { 2_000 } else { 16_000 },
            segment_ms: u64::MAX / 4,
            retention_ms: -1,
            retention_bytes: if retention { 6_000 } else { -1 },
            index_interval_bytes: 1000,
            max_batch_bytes: 1 << 20,
            validate_compressed: true,
            ..Default::default()
        },
        write_chunk_bytes: 8192,
        write_behind: 2,
        flush_interval_ms: 50,
        // Zero: a step awaits syncs while its clock stands still, so an
        // asked-for sync spaced after the last one would never start.
        sync_min_interval: Duration::ZERO,
        checkpoint_interval_ms: 1,
        preallocate_bytes: 0,
    }
}

struct Up {
    driver: ReplicationDriver<SimDisk>,
    _flushers: Vec<glommio::Task<()>>,
    /// The broker's (one shard's) budget for replicated entries in memory.
    memory: WindowBudget,
}

struct Node {
    id: u64,
    disk: SimDisk,
    up: Option<Up>,
    /// Per partition, the next offset this broker's consumer reads from
    /// (kept across restarts: what was visible must come back).
    cursor: Vec<u64>,
}

struct Flight {
    at: u64,
    from: u64,
    to: u64,
    bytes: BytesMut,
}

/// A producer's acks setting for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acks {
    /// acks=all: answered once committed (`PartitionGroup::outcome`).
    All,
    /// acks=1: answered once the leader appended it
    /// (`PartitionGroup::appended_at`, what the broker's produce path asks).
    One,
    /// acks=0: never answered.
    Zero,
}

struct Prop {
    node: u64,
    partition: u32,
    p: Proposed,
    tag: u64,
    acks: Acks,
    /// The offset it was acknowledged at (acks=all: committed there;
    /// acks=1: appended there); u64::MAX: lost before any answer.
    acked: Option<u64>,
}

#[derive(Default, Debug)]
struct Stats {
    proposed: u64,
    /// acks=all proposals acknowledged (committed).
    acked: u64,
    /// acks=1 proposals acknowledged (appended by the leader), and those
    /// of them that were not in the log in the end (a failover replaced
    /// them: Kafka's acks=1 contract allows it).
    acked_one: u64,
    lost_one: u64,
    /// acks=0 proposals (never acknowledged).
    sent_zero: u64,
    /// Proposals lost before any acknowledgement.
    lost: u64,
    crashes: u64,
    /// Crashes of a broker holding appends that were not yet durable.
    crashes_unsynced: u64,
    cuts: u64,
    batches: u64,
    dropped: u64,
    duplicated: u64,
    elections: u64,
    /// Idempotent producer: batches sent again, retries answered with the
    /// original's proposal (deduplicated), retries refused as out of order.
    retries: u64,
    deduplicated: u64,
    out_of_order: u64,
    /// Retries of a batch below the leader's log start, deduplicated (only
    /// the producer table as of the log start knew it), and those of them
    /// answered by a replica that had installed a snapshot.
    deduplicated_below_start: u64,
    deduplicated_after_snapshot: u64,
    /// Idempotent batches acknowledged with acks=1, found missing by the
    /// leader (a gap in the sequences) and sent again.
    resent_lost_one: u64,
    /// Reassignment: configuration changes proposed, leadership hand-overs.
    reconfigurations: u64,
    transfers: u64,
    /// Retention: replica-steps whose log start had moved; snapshots
    /// installed by followers.
    compacted: u64,
    snapshots: u64,
}

impl Stats {
    fn add(&mut self, s: &Stats) {
        self.proposed += s.proposed;
        self.acked += s.acked;
        self.acked_one += s.acked_one;
        self.lost_one += s.lost_one;
        self.sent_zero += s.sent_zero;
        self.lost += s.lost;
        self.crashes += s.crashes;
        self.crashes_unsynced += s.crashes_unsynced;
        self.cuts += s.cuts;
        self.batches += s.batches;
        self.dropped += s.dropped;
        self.duplicated += s.duplicated;
        self.elections += s.elections;
        self.retries += s.retries;
        self.deduplicated += s.deduplicated;
        self.out_of_order += s.out_of_order;
        self.deduplicated_below_start += s.deduplicated_below_start;
        self.deduplicated_after_snapshot += s.deduplicated_after_snapshot;
        self.resent_lost_one += s.resent_lost_one;
        self.reconfigurations += s.reconfigurations;
        self.transfers += s.transfers;
        self.compacted += s.compacted;
        self.snapshots += s.snapshots;
    }
}

struct Sim {
    seed: u64,
    rng: StdRng,
    clock: Rc<ManualClock>,
    step: u64,
    nodes: Vec<Node>,
    net: Vec<Flight>,
    /// Directed links that are cut.
    cut: BTreeSet<(u64, u64)>,
    props: Vec<Prop>,
    /// (partition, term) → the replica that accepted a proposal in it.
    writers: BTreeMap<(u32, u64), u64>,
    /// (partition, term) → the replica that led it.
    leaders: BTreeMap<(u32, u64), u64>,
    /// What consumers have read: (partition, offset) → (epoch, tag or control).
    read: BTreeMap<(u32, u64), (i32, Option<u64>)>,
    /// The same by batch: tag → (partition, offset) (a batch read at two
    /// offsets is in the log twice).
    read_tags: BTreeMap<u64, (u32, u64)>,
    /// Retries the leader answered as duplicates of a batch before its
    /// log's entries (acknowledged at that batch's offset): (tag, offset).
    dup_acks: Vec<(u64, u64)>,
    next_tag: u64,
    lossy: bool,
    stats: Stats,
    /// The idempotent producer of partition 1.
    idem: Idempotent,
    /// A reassignment in progress or done: the voters every group should
    /// end with (None: the groups keep their initial voters).
    target: Option<Vec<u64>>,
    /// Each broker's shard-wide memory limit for replicated entries, and
    /// each group's own window budget (None: the simulation's defaults).
    memory_limit: Option<(usize, usize)>,
    /// Retention on: every 20 steps each replica compacts its log.
    retention: bool,
}

/// An idempotent producer: its batches (frame and tag) by sequence, and
/// which are acknowledged, with which acks setting.
#[derive(Default)]
struct Idempotent {
    batches: Vec<(u64, bytes::Bytes)>,
    acked: BTreeMap<u64, Acks>,
    /// Sequences the broker answered "out of order" for while its log was
    /// already past them (the client gives up on those batches).
    given_up: BTreeSet<u64>,
    next_sequence: i32,
    /// The tags of its batches.
    tags: BTreeSet<u64>,
    /// Until this step the producer sends nothing and hears no answer.
    stalled_until: u64,
}

fn base_sequence(frame: &bytes::Bytes) -> i32 {
    read_records(frame, 1 << 20)
        .expect("our batch")
        .0
        .base_sequence
}

const IDEMPOTENT_PARTITION: u32 = 1;
const PRODUCER_ID: i64 = 77;
/// Kafka's limit for idempotent producers (max.in.flight <= 5).
const IN_FLIGHT: usize = 5;

fn group_cfg(id: u64, partition: u32, brokers: u64) -> GroupConfig {
    // Every group starts with brokers 1..=3 as voters; a fourth broker's
    // replica starts as a non-member and joins through a reassignment.
    let mut c = GroupConfig::new(id, (1..=NODES).collect());
    // Fixed, distinct election timeouts: raft-rs would draw them from the
    // thread's RNG, which would not replay. Spread so partitions elect
    // different leaders.
    let t = 10 + 4 * ((id + partition as u64) % brokers) as usize;
    c.election_range = Some((t, t + 1));
    // A small window, so followers that fall behind are served from disk.
    c.window_bytes = 2048;
    c.max_size_per_msg = 4096;
    c.max_inflight_msgs = 4;
    c
}

impl Sim {
    /// Three brokers, none started yet; `lossy`: faults on.
    fn new(seed: u64, lossy: bool) -> Sim {
        Sim::with_brokers(seed, lossy, NODES)
    }

    /// `brokers` brokers (3 or 4), each with a replica of every partition.
    fn with_brokers(seed: u64, lossy: bool, brokers: u64) -> Sim {
        Sim {
            seed,
            rng: StdRng::seed_from_u64(seed),
            clock: ManualClock::new(),
            step: 0,
            nodes: (1..=brokers)
                .map(|id| Node {
                    id,
                    disk: SimDisk::new(seed.wrapping_mul(31).wrapping_add(id)),
                    up: None,
                    cursor: vec![0; PARTITIONS as usize],
                })
                .collect(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            props: Vec::new(),
            writers: BTreeMap::new(),
            leaders: BTreeMap::new(),
            read: BTreeMap::new(),
            read_tags: BTreeMap::new(),
            dup_acks: Vec::new(),
            next_tag: 0,
            lossy,
            stats: Stats::default(),
            idem: Idempotent::default(),
            target: None,
            memory_limit: None,
            retention: false,
        }
    }

    fn brokers(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// The brokers whose replicas every group ends with.
    fn members(&self) -> Vec<u64> {
        self.target.clone().unwrap_or_else(|| (1..=NODES).collect())
    }

    /// Every broker's driver moves the groups it leads a step towards the
    /// target (as the shard's replication task does each tick).
    fn reconfigure(&mut self) {
        let Some(target) = self.target.clone() else {
            return;
        };
        for n in &mut self.nodes {
            let Some(up) = n.up.as_mut() else {
                continue;
            };
            for p in 0..PARTITIONS {
                match up.driver.reconfigure(&key(p), &target) {
                    Some(Reconfig::Proposed) => self.stats.reconfigurations += 1,
                    Some(Reconfig::Transferring(_)) => self.stats.transfers += 1,
                    _ => {}
                }
            }
        }
    }

    /// Whether every member of group `p` has applied exactly the target
    /// configuration (voters = target, no learners, not joint).
    fn reconfigured(&self, p: u32) -> bool {
        let want = self.members();
        want.iter().all(|id| {
            let cs = self.nodes[(*id - 1) as usize]
                .up
                .as_ref()
                .unwrap()
                .driver
                .group(&key(p))
                .unwrap()
                .conf_state();
            let mut voters = cs.voters.clone();
            voters.sort_unstable();
            voters == want && cs.learners.is_empty() && cs.voters_outgoing.is_empty()
        })
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: step {}: {what}", self.seed, self.step)
    }

    async fn start(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let disk = self.nodes[i].disk.clone();
        let mut driver = ReplicationDriver::new(id as u32);
        let mut flushers = Vec::new();
        let memory = match self.memory_limit {
            Some((shard, _)) => WindowBudget::new(shard),
            None => WindowBudget::unlimited(),
        };
        for p in 0..PARTITIONS {
            let dir = PathBuf::from(format!("/sim/t-{p}"));
            disk.create_dir_all(&dir).unwrap();
            let clock: Rc<dyn Clock> = self.clock.clone();
            let partition = Partition::open(
                disk.clone(),
                dir,
                log_cfg(self.retention),
                CacheBudget::new(1 << 20),
                WriteBudget::unlimited(),
                clock,
            )
            .await
            .unwrap_or_else(|e| self.fail(format!("node {id} log {p}: {e}")));
            flushers.push(glommio::spawn_local(partition.run_flusher()));
            let mut cfg = group_cfg(id, p, self.brokers());
            cfg.memory = memory.clone();
            if let Some((_, window)) = self.memory_limit {
                cfg.window_bytes = window;
            }
            let group = PartitionGroup::open(&cfg, disk.clone(), partition)
                .await
                .unwrap_or_else(|e| self.fail(format!("node {id} replica {p}: {e}")));
            driver.insert(key(p), group);
        }
        self.nodes[i].up = Some(Up {
            driver,
            _flushers: flushers,
            memory,
        });
    }

    /// Count the snapshots broker `i`'s replicas installed (before they go).
    fn count_snapshots(&mut self, i: usize) {
        if let Some(up) = self.nodes[i].up.as_ref() {
            for (_, g) in up.driver.groups() {
                self.stats.snapshots += g.snapshots_installed();
            }
        }
    }

    fn crash(&mut self, i: usize) {
        self.count_snapshots(i);
        let node = &mut self.nodes[i];
        if node
            .up
            .as_ref()
            .is_some_and(|u| !u.driver.durable_wanted().is_empty())
        {
            self.stats.crashes_unsynced += 1;
        }
        // Dropping the flusher tasks cancels them; the disk forgets what
        // was not synced.
        node.up = None;
        node.disk.crash();
        let id = node.id;
        self.net.retain(|f| f.to != id && f.from != id);
        self.stats.crashes += 1;
    }

    /// Run every broker's driver until no batch is left to send.
    async fn settle(&mut self) {
        for _ in 0..20 {
            let mut sent = false;
            for i in 0..self.nodes.len() {
                let id = self.nodes[i].id;
                let Some(up) = self.nodes[i].up.as_mut() else {
                    continue;
                };
                let failed = up.driver.process().await;
                if let Some((k, e)) = failed.first() {
                    self.fail(format!("node {id} group {k:?}: {e}"));
                }
                let wanted = up.driver.durable_wanted();
                // Now and then the broker crashes between its appends and
                // their sync: its disk loses them, and their
                // acknowledgements were never sent.
                if self.lossy
                    && !wanted.is_empty()
                    && self.rng.gen_bool(0.01)
                    && self.nodes.iter().all(|n| n.up.is_some())
                {
                    self.crash(i);
                    continue;
                }
                // Sometimes the logs sync at once; otherwise the appends
                // stay pending until the flusher's interval passes or a
                // later round syncs them.
                let up = self.nodes[i].up.as_mut().expect("up");
                for (k, end) in wanted {
                    if !self.lossy || self.rng.gen_bool(0.7) {
                        let part = up.driver.group(&k).expect("group").partition().clone();
                        part.wait_durable(end - 1)
                            .await
                            .unwrap_or_else(|e| panic!("seed {}: node {id} sync: {e}", self.seed));
                    }
                }
                up.driver.on_durable();
                let failed = up.driver.process().await;
                if let Some((k, e)) = failed.first() {
                    self.fail(format!("node {id} group {k:?}: {e}"));
                }
                for (to, batch) in up.driver.take_batches() {
                    let mut bytes = BytesMut::new();
                    wire::encode(&batch, &mut bytes);
                    let delay = if self.lossy {
                        self.rng.gen_range(0..4)
                    } else {
                        0
                    };
                    self.net.push(Flight {
                        at: self.step + delay,
                        from: id,
                        to: to as u64,
                        bytes,
                    });
                    self.stats.batches += 1;
                    sent = true;
                }
            }
            if !sent {
                return;
            }
            self.deliver(true);
        }
    }

    /// Deliver the batches that are due (all of them when `now` is set and
    /// the network is healed: the same step's exchange).
    fn deliver(&mut self, now: bool) {
        let due: Vec<Flight>;
        (due, self.net) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|f| f.at <= self.step || now && !self.lossy);
        for f in due {
            if self.lossy && self.rng.gen_bool(0.05) {
                self.stats.dropped += 1;
                continue;
            }
            if self.cut.contains(&(f.from, f.to)) {
                continue;
            }
            if self.lossy && self.rng.gen_bool(0.03) {
                self.stats.duplicated += 1;
                self.net.push(Flight {
                    at: self.step + self.rng.gen_range(1..5),
                    from: f.from,
                    to: f.to,
                    bytes: f.bytes.clone(),
                });
            }
            let Some(up) = self.nodes[(f.to - 1) as usize].up.as_mut() else {
                continue;
            };
            let batch = wire::decode(f.bytes)
                .unwrap_or_else(|e| panic!("seed {}: a batch we encoded: {e}", self.seed));
            up.driver.receive(batch);
        }
    }

    fn propose(&mut self, p: u32) {
        if p == IDEMPOTENT_PARTITION {
            // With retention, a plain producer writes there too: the log
            // start moves past the idempotent producer's batches while it
            // stalls, and its late retries find them compacted.
            if self.retention && self.rng.gen_bool(0.5) {
                self.propose_plain(p);
            }
            return self.propose_idempotent();
        }
        self.propose_plain(p)
    }

    /// A plain producer's batch at every replica that thinks it leads.
    fn propose_plain(&mut self, p: u32) {
        for i in 0..self.nodes.len() {
            let node = self.nodes[i].id;
            let leads = self.nodes[i]
                .up
                .as_ref()
                .is_some_and(|u| u.driver.group(&key(p)).is_some_and(|g| g.is_leader()));
            if !leads {
                continue;
            }
            let tag = self.next_tag;
            self.next_tag += 1;
            let mut b = BatchBuilder::new();
            for r in 0..self.rng.gen_range(1..4) {
                let v = format!("{tag}:{r}:{}", "x".repeat(self.rng.gen_range(0..300)));
                b.push(self.step as i64, None, Some(v.as_bytes()), &[]);
            }
            let frame = b.finish(Compression::None, ProducerIds::NONE);
            let acks = match self.rng.gen_range(0..20) {
                0..=9 => Acks::All,
                10..=16 => Acks::One,
                _ => Acks::Zero,
            };
            let up = self.nodes[i].up.as_mut().unwrap();
            if let Ok(pr) = up.driver.propose(&key(p), frame) {
                self.accepted(node, p, pr);
                if acks == Acks::Zero {
                    self.stats.sent_zero += 1;
                }
                self.props.push(Prop {
                    node,
                    partition: p,
                    p: pr,
                    tag,
                    acks,
                    acked: None,
                });
            }
        }
    }

    /// A new proposal `pr` accepted by `node`: the only writer of its term.
    fn accepted(&mut self, node: u64, p: u32, pr: Proposed) {
        self.stats.proposed += 1;
        if let Some(&w) = self.writers.get(&(p, pr.term)) {
            if w != node {
                self.fail(format!(
                    "partition {p}: nodes {w} and {node} both accepted writes in term {}",
                    pr.term
                ));
            }
        }
        self.writers.insert((p, pr.term), node);
    }

    /// The idempotent producer's turn: a new batch, or (now and then, or
    /// when 5 are unacknowledged) every unacknowledged batch again.
    fn propose_idempotent(&mut self) {
        let p = IDEMPOTENT_PARTITION;
        if self.step < self.idem.stalled_until {
            return;
        }
        // With retention, now and then the producer loses its connections
        // for a while (answers lost, nothing sent), then retries.
        if self.retention && self.lossy && self.rng.gen_bool(0.03) {
            self.idem.stalled_until = self.step + self.rng.gen_range(20..100);
            return;
        }
        let Some(i) = (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .up
                .as_ref()
                .is_some_and(|u| u.driver.group(&key(p)).is_some_and(|g| g.is_leader()))
        }) else {
            return;
        };
        let unacked: Vec<u64> = (0..self.idem.batches.len() as u64)
            .filter(|s| !self.idem.acked.contains_key(s) && !self.idem.given_up.contains(s))
            .collect();
        // In flight: every batch from the oldest unacknowledged one on (an
        // acks=1 answer may come before an earlier acks=all one's).
        let in_flight = unacked
            .first()
            .map_or(0, |s| self.idem.batches.len() - *s as usize);
        let send: Vec<(u64, bool)> =
            if !unacked.is_empty() && (in_flight >= IN_FLIGHT || self.rng.gen_bool(0.2)) {
                unacked.iter().map(|s| (*s, true)).collect()
            } else {
                let seq = self.idem.batches.len() as u64;
                let tag = self.next_tag;
                self.next_tag += 1;
                let mut b = BatchBuilder::new();
                let records = self.rng.gen_range(1..4);
                for r in 0..records {
                    let v = format!("{tag}:{r}:{}", "y".repeat(self.rng.gen_range(0..300)));
                    b.push(self.step as i64, None, Some(v.as_bytes()), &[]);
                }
                // Sequences count records, not batches.
                let frame = b.finish(
                    Compression::None,
                    ProducerIds {
                        producer_id: PRODUCER_ID,
                        producer_epoch: 0,
                        base_sequence: self.idem.next_sequence,
                    },
                );
                self.idem.next_sequence += records;
                self.idem.batches.push((tag, frame));
                self.idem.tags.insert(tag);
                vec![(seq, false)]
            };
        let node = self.nodes[i].id;
        for (seq, retry) in send {
            let (tag, frame) = self.idem.batches[seq as usize].clone();
            // No acks=0: a producer that never hears back cannot keep its
            // sequences (Kafka clients refuse idempotence without acks=all;
            // acks=1 is here because a broker must still not duplicate).
            let acks = if self.rng.gen_bool(0.6) {
                Acks::All
            } else {
                Acks::One
            };
            let up = self.nodes[i].up.as_mut().unwrap();
            let g = up.driver.group(&key(p)).unwrap();
            let (last_index, uncommitted) = (g.last_index(), g.last_index() - g.applied_index());
            let (log_start, hw) = (
                g.partition().log_start_offset(),
                g.partition().high_watermark(),
            );
            let snapshotted = g.snapshots_installed() > 0;
            if retry {
                self.stats.retries += 1;
            }
            match up.driver.propose(&key(p), frame.clone()) {
                Ok(pr) => {
                    if pr.index <= last_index
                        || self.props.iter().any(|x| x.partition == p && x.p == pr)
                    {
                        if !retry {
                            self.fail(format!(
                                "a new batch (sequence {seq}) was answered as a retry: {pr:?} (last index {last_index})"
                            ));
                        }
                        self.stats.deduplicated += 1;
                    } else {
                        if let Some(at) = self.read_tags.get(&tag) {
                            self.fail(format!(
                                "a retry of sequence {seq} (batch {tag}, read at {at:?}) was taken as a new entry {pr:?}"
                            ));
                        }
                        self.accepted(node, p, pr);
                    }
                    self.props.push(Prop {
                        node,
                        partition: p,
                        p: pr,
                        tag,
                        acks,
                        acked: None,
                    });
                }
                // A retry of a batch whose entry this leader no longer
                // knows (before its log's entries): the broker answers it
                // with the original's offset (acks=all once committed).
                Err(ProposeError::Duplicate { base_offset }) => {
                    if !retry {
                        self.fail(format!(
                            "a new batch (sequence {seq}) was answered as a duplicate at {base_offset}"
                        ));
                    }
                    if let Some(&at) = self.read_tags.get(&tag) {
                        if at != (p, base_offset) {
                            self.fail(format!(
                                "batch {tag} read at {at:?}, answered as a duplicate at {base_offset}"
                            ));
                        }
                    }
                    self.stats.deduplicated += 1;
                    if base_offset < log_start {
                        self.stats.deduplicated_below_start += 1;
                        if snapshotted {
                            self.stats.deduplicated_after_snapshot += 1;
                        }
                    }
                    if acks == Acks::One || base_offset < hw {
                        self.idem.acked.insert(seq, acks);
                        self.dup_acks.push((tag, base_offset));
                    }
                }
                Err(ProposeError::Sequence(SequenceError::OutOfOrderSequence {
                    expected, ..
                })) => {
                    self.stats.out_of_order += 1;
                    let base = base_sequence(&frame);
                    if expected > base {
                        // The leader's table is past this batch: fine only
                        // if it is not among the producer's last
                        // BATCHES_REMEMBERED in the leader's log (Kafka
                        // remembers 5), counting every entry the leader
                        // holds beyond what consumers read as one.
                        if let Some(&(_, at)) = self.read_tags.get(&tag) {
                            let later = self
                                .read
                                .range((p, at + 1)..(p + 1, 0))
                                .filter(|(_, (_, t))| {
                                    t.is_some_and(|t| self.idem.tags.contains(&t))
                                })
                                .count() as u64;
                            if later + uncommitted < BATCHES_REMEMBERED as u64 {
                                self.fail(format!(
                                    "sequence {seq} (batch {tag} at {at}) refused as out of order (expected {expected}) with {later} later batches of its producer read and {uncommitted} entries unapplied"
                                ));
                            }
                        }
                        self.idem.given_up.insert(seq);
                    } else {
                        self.note_sequence_gap(seq, expected);
                    }
                    // Later batches would be out of order too.
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// The leader expects sequence `expected`, below batch `seq`'s: the
    /// batches in between are not in its log. An acks=all acknowledged one
    /// must be (it was committed); an acks=1 acknowledged one may have
    /// been lost with its leader: the producer sends it again (Kafka's
    /// client would reset its sequences instead, KIP-360).
    fn note_sequence_gap(&mut self, seq: u64, expected: i32) {
        for j in 0..seq {
            let (tag, frame) = &self.idem.batches[j as usize];
            if base_sequence(frame) < expected {
                continue;
            }
            match self.idem.acked.get(&j) {
                Some(Acks::All) => self.fail(format!(
                    "batch {tag} (sequence {j}) acknowledged with acks=all, yet the leader expects sequence {expected}"
                )),
                Some(_) => {
                    self.idem.acked.remove(&j);
                    self.stats.resent_lost_one += 1;
                }
                // Given up on when another leader's log was past it: that
                // log's end was lost since.
                None => {
                    self.idem.given_up.remove(&j);
                }
            }
        }
    }

    /// Per-step checks: leaders, acknowledgements, consumer reads.
    async fn check(&mut self) {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let Some(up) = self.nodes[i].up.as_ref() else {
                continue;
            };
            for (k, g) in up.driver.groups() {
                if !g.is_leader() {
                    continue;
                }
                let term = g.term();
                match self.leaders.insert((k.partition, term), id) {
                    Some(other) if other != id => self.fail(format!(
                        "partition {}: nodes {other} and {id} both led term {term}",
                        k.partition
                    )),
                    None => self.stats.elections += 1,
                    _ => {}
                }
            }
        }
        for n in 0..self.props.len() {
            if self.props[n].acked.is_some() {
                continue;
            }
            let node = self.props[n].node;
            let Some(up) = self.nodes[(node - 1) as usize].up.as_ref() else {
                continue;
            };
            let g = up
                .driver
                .group(&key(self.props[n].partition))
                .expect("group");
            let (pr, acks) = (self.props[n].p, self.props[n].acks);
            // As the broker answers a produce request (shard::local's
            // `await_replicated`): acks=all from the proposal's outcome,
            // acks=1 from where the leader appended it.
            let acked_at = match (acks, g.outcome(pr)) {
                (_, Outcome::Lost) => {
                    self.props[n].acked = Some(u64::MAX);
                    self.stats.lost += 1;
                    continue;
                }
                (Acks::All, Outcome::Committed { base_offset }) => base_offset,
                (Acks::One, _) => match g.appended_at(pr) {
                    Some(base_offset) => base_offset,
                    None => continue,
                },
                _ => continue,
            };
            self.props[n].acked = Some(acked_at);
            match acks {
                Acks::All => self.stats.acked += 1,
                _ => self.stats.acked_one += 1,
            }
            // Now and then the answer is lost on its way: the idempotent
            // producer sends the batch again, and the leader must answer
            // with the original.
            if self.props[n].partition == IDEMPOTENT_PARTITION
                && self.step >= self.idem.stalled_until
                && !(self.lossy && self.rng.gen_bool(0.1))
            {
                let tag = self.props[n].tag;
                if let Some(seq) = self.idem.batches.iter().position(|(t, _)| *t == tag) {
                    self.idem.acked.insert(seq as u64, acks);
                }
            }
        }
        for i in 0..self.nodes.len() {
            for p in 0..PARTITIONS {
                self.read_visible(i, p).await;
            }
        }
    }

    /// Read broker `i`'s visible log of partition `p` from its cursor, and
    /// compare with what every consumer has read before.
    async fn read_visible(&mut self, i: usize, p: u32) {
        let id = self.nodes[i].id;
        let Some(up) = self.nodes[i].up.as_ref() else {
            return;
        };
        let part = up.driver.group(&key(p)).expect("group").partition().clone();
        loop {
            // Retention (or a snapshot) moved the log start past what this
            // consumer read: it skips to the start, as a Kafka consumer
            // resets on OFFSET_OUT_OF_RANGE.
            let start = part.log_start_offset();
            if self.nodes[i].cursor[p as usize] < start {
                self.nodes[i].cursor[p as usize] = start;
            }
            let from = self.nodes[i].cursor[p as usize];
            let r = part.read(from, 64 << 10).await.unwrap_or_else(|e| {
                self.fail(format!("node {id} partition {p} read at {from}: {e}"))
            });
            if r.frames.is_empty() {
                return;
            }
            for f in r.frames {
                let (h, recs) = read_records(&f, 1 << 20).expect("stored frames read back");
                let tag = if h.attributes & attr::CONTROL != 0 {
                    None
                } else {
                    let v = recs[0].value.as_ref().expect("a value");
                    let s = std::str::from_utf8(v).unwrap();
                    Some(s.split(':').next().unwrap().parse::<u64>().unwrap())
                };
                let seen = (h.partition_leader_epoch, tag);
                match self.read.insert((p, h.base_offset), seen) {
                    Some(old) if old != seen => self.fail(format!(
                        "node {id}: partition {p} offset {} read as {seen:?}, earlier as {old:?}",
                        h.base_offset
                    )),
                    Some(_) => {}
                    None => {
                        if let Some(t) = tag {
                            if let Some(other) = self.read_tags.insert(t, (p, h.base_offset)) {
                                self.fail(format!(
                                    "batch {t} read at {other:?} and at {:?}: in the log twice",
                                    (p, h.base_offset)
                                ));
                            }
                        }
                    }
                }
                self.nodes[i].cursor[p as usize] = h.last_offset() + 1;
            }
        }
    }

    async fn run_step(&mut self) {
        self.step += 1;
        self.clock.advance(Duration::from_millis(10));
        let down: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up.is_none())
            .collect();
        let roll: f64 = self.rng.gen();
        if self.lossy && roll < 0.02 && down.is_empty() {
            let i = self.rng.gen_range(0..self.nodes.len());
            self.crash(i);
        } else if roll < 0.08 && !down.is_empty() {
            self.start(down[0]).await;
        } else if self.lossy && roll < 0.10 && self.cut.is_empty() {
            let victim = self.rng.gen_range(1..=self.brokers());
            for other in 1..=self.brokers() {
                if other != victim {
                    self.cut.insert((victim, other));
                    self.cut.insert((other, victim));
                }
            }
            self.stats.cuts += 1;
        } else if roll < 0.14 {
            self.cut.clear();
        }
        for p in 0..PARTITIONS {
            if self.rng.gen_bool(0.5) {
                self.propose(p);
            }
        }
        self.tick_all();
        self.compact_all().await;
        self.deliver(false);
        self.settle().await;
        self.check().await;
    }

    fn tick_all(&mut self) {
        for n in &mut self.nodes {
            if let Some(up) = n.up.as_mut() {
                up.driver.tick();
            }
        }
        self.reconfigure();
    }

    /// Retention: every 20 steps, each broker's replicas move their log
    /// starts as far as retention allows (as the shard's replication task
    /// does every `retention_check_interval_ms`).
    async fn compact_all(&mut self) {
        if !self.retention || !self.step.is_multiple_of(20) {
            return;
        }
        let now = self.clock.wall_ms();
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let Some(up) = self.nodes[i].up.as_mut() else {
                continue;
            };
            let failed = up.driver.compact(now).await;
            if let Some((k, e)) = failed.first() {
                self.fail(format!("node {id} group {k:?} compaction: {e}"));
            }
            for p in 0..PARTITIONS {
                let g = up.driver.group(&key(p)).expect("group");
                if g.partition().log_start_offset() > 0 {
                    self.stats.compacted += 1;
                }
            }
        }
    }

    /// A step with no faults (after healing); proposals only while `propose`.
    async fn run_step_quiet(&mut self, propose: bool) {
        self.step += 1;
        self.clock.advance(Duration::from_millis(10));
        if propose && self.step.is_multiple_of(10) {
            for p in 0..PARTITIONS {
                self.propose(p);
            }
        }
        self.tick_all();
        self.compact_all().await;
        self.deliver(true);
        self.settle().await;
        self.check().await;
    }

    /// The broker whose replica of `p` leads and applied an entry of its
    /// term, among those up, after quiet steps (at most `steps`).
    async fn await_leader(&mut self, p: u32, steps: usize) -> Option<usize> {
        for _ in 0..steps {
            self.run_step_quiet(false).await;
            let leader = (0..self.nodes.len()).find(|&i| {
                self.nodes[i].up.as_ref().is_some_and(|u| {
                    let g = u.driver.group(&key(p)).unwrap();
                    g.is_leader() && g.applied_own_term()
                })
            });
            if leader.is_some() {
                return leader;
            }
        }
        None
    }

    /// Per partition: (applied, last, high watermark) of every member's
    /// replica.
    fn progress(&self, p: u32) -> Vec<(u64, u64, u64)> {
        let members = self.members();
        self.nodes
            .iter()
            .filter(|n| members.contains(&n.id))
            .map(|n| {
                let g = n.up.as_ref().unwrap().driver.group(&key(p)).unwrap();
                (
                    g.applied_index(),
                    g.last_index(),
                    g.partition().high_watermark(),
                )
            })
            .collect()
    }

    /// A batch of the final term committed on partition `p`: everything
    /// before it is committed too.
    fn final_term_committed(&self, p: u32) -> bool {
        let members = self.members();
        let final_term = self
            .nodes
            .iter()
            .filter(|n| members.contains(&n.id))
            .map(|n| n.up.as_ref().unwrap().driver.group(&key(p)).unwrap().term())
            .max();
        self.props.iter().any(|x| {
            x.partition == p
                && x.acks == Acks::All
                && Some(x.p.term) == final_term
                && x.acked.is_some_and(|a| a != u64::MAX)
        })
    }
}

async fn run_seed(seed: u64, steps: u64) -> Stats {
    run_seed_with(seed, steps, false, false).await
}

/// One seed; with `reassign`, a fourth broker takes part, and a quarter of
/// the way in every group is reassigned from brokers 1,2,3 to three of
/// 1..=4 that include broker 4 (one of the first three leaves).
async fn run_seed_with(seed: u64, steps: u64, reassign: bool, retention: bool) -> Stats {
    let brokers = if reassign { NODES + 1 } else { NODES };
    let mut sim = Sim::with_brokers(seed, true, brokers);
    sim.retention = retention;
    for i in 0..brokers as usize {
        sim.start(i).await;
    }
    let leaving = sim.rng.gen_range(1..=NODES);
    for step in 0..steps {
        if reassign && step == steps / 4 {
            sim.target = Some((1..=brokers).filter(|n| *n != leaving).collect());
        }
        sim.run_step().await;
    }
    // Heal: every broker up, no faults; proposals continue until one
    // commits in each partition's final term (proposals still pending
    // then were never acknowledged: their client timed out), then quiet
    // steps until all replicas agree.
    sim.lossy = false;
    sim.cut.clear();
    for i in 0..sim.nodes.len() {
        if sim.nodes[i].up.is_none() {
            sim.start(i).await;
        }
    }
    let mut converged = false;
    for round in 0..600 {
        sim.run_step_quiet(round < 300).await;
        converged = (0..PARTITIONS).all(|p| {
            let pr = sim.progress(p);
            sim.final_term_committed(p)
                && pr.iter().all(|u| *u == pr[0] && u.0 == u.1)
                && sim.reconfigured(p)
        });
        if converged {
            break;
        }
    }
    if !converged {
        let view: Vec<_> = (0..PARTITIONS).map(|p| sim.progress(p)).collect();
        sim.fail(format!(
            "replicas did not converge after healing: per partition (applied, last, hw) {view:?}"
        ));
    }
    sim.check().await;
    for i in 0..sim.nodes.len() {
        sim.count_snapshots(i);
    }
    // Every acknowledged proposal is where it was acknowledged, once.
    let mut tags_at: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    for ((p, off), (_, tag)) in &sim.read {
        if let Some(t) = tag {
            if let Some(other) = tags_at.insert(*t, (*p, *off)) {
                sim.fail(format!("batch {t} read at {other:?} and {:?}", (p, off)));
            }
        }
    }
    // With retention, a batch below a log start may be gone before any
    // consumer read it.
    let log_start = |p: u32| {
        sim.nodes
            .iter()
            .map(|n| {
                let d = &n.up.as_ref().unwrap().driver;
                d.group(&key(p)).unwrap().partition().log_start_offset()
            })
            .max()
            .unwrap_or(0)
    };
    // acks=1: a batch the leader appended may have been replaced by a
    // failover (counted), but then no consumer ever read it there.
    let mut lost_one = BTreeSet::new();
    for x in &sim.props {
        let Some(at) = x.acked.filter(|a| *a != u64::MAX) else {
            continue;
        };
        match tags_at.get(&x.tag) {
            Some(&(p, o)) if p == x.partition && o == at => {}
            None if at < log_start(x.partition) => {}
            other if x.acks == Acks::One => {
                if sim.read.get(&(x.partition, at)).map(|r| r.1) == Some(Some(x.tag)) {
                    sim.fail(format!(
                        "acks=1 batch {} was read at {at}, and is now at {other:?}",
                        x.tag
                    ));
                }
                lost_one.insert((x.tag, at));
            }
            other => sim.fail(format!(
                "acknowledged batch {} (partition {}, offset {at}, term {}) is at {other:?}",
                x.tag, x.partition, x.p.term
            )),
        }
    }
    sim.stats.lost_one += lost_one.len() as u64;
    for &(tag, at) in &sim.dup_acks {
        match tags_at.get(&tag) {
            Some(&(IDEMPOTENT_PARTITION, o)) if o == at => {}
            None if at < log_start(IDEMPOTENT_PARTITION) => {}
            other => sim.fail(format!(
                "batch {tag}, answered as a duplicate at {at}, is at {other:?}"
            )),
        }
    }
    // Every member's consumer read the whole, same log (a replica that
    // left read a prefix of it, checked with every read).
    let members = sim.members();
    for p in 0..PARTITIONS as usize {
        let ends: Vec<u64> = sim
            .nodes
            .iter()
            .filter(|n| members.contains(&n.id))
            .map(|n| n.cursor[p])
            .collect();
        if ends.iter().any(|e| *e != ends[0]) {
            sim.fail(format!(
                "partition {p}: replicas' visible ends differ: {ends:?}"
            ));
        }
    }
    sim.stats
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The seeds to run: `SHARDLOG_SEED` alone, or `count_var` (default
/// `default`) seeds from `SHARDLOG_FIRST_SEED` (default 1).
fn seeds(count_var: &str, default: u64) -> Vec<u64> {
    match std::env::var("SHARDLOG_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let first = env_u64("SHARDLOG_FIRST_SEED", 1);
            (first..first + env_u64(count_var, default)).collect()
        }
    }
}

#[test]
fn replicated_partitions_survive_crashes_partitions_and_a_lossy_network() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let steps = env_u64("SHARDLOG_SIM_STEPS", 400);
        let seeds = seeds("SHARDLOG_SEEDS", 40);
        let mut total = Stats::default();
        for seed in seeds {
            total.add(&run_seed(seed, steps).await);
        }
        println!("replica_sim: {total:?}");
        assert!(total.acked > 0, "nothing was ever acknowledged: {total:?}");
        assert!(total.acked_one > 0, "no acks=1 answer: {total:?}");
        assert!(total.elections > 0);
        assert!(
            total.deduplicated > 0,
            "no retry was ever deduplicated: {total:?}"
        );
    });
}

/// A follower cut off while its leader takes many batches catches up from
/// the leader's log in a few large reads (raft-rs asks again at every
/// trigger while entries are unavailable; those repeats once cost a read
/// each and stalled RF=3 produce for seconds at saturation), and once
/// every replica has everything, no replica keeps entries in memory.
#[test]
fn a_lagging_follower_is_served_in_few_reads_and_idle_groups_hold_no_entries() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let mut sim = Sim::new(7, false);
        for i in 0..NODES as usize {
            sim.start(i).await;
        }
        let leader_of = |sim: &Sim| -> Option<usize> {
            (0..sim.nodes.len()).find(|&i| {
                sim.nodes[i]
                    .up
                    .as_ref()
                    .unwrap()
                    .driver
                    .group(&key(0))
                    .unwrap()
                    .is_leader()
            })
        };
        let mut leader = None;
        for _ in 0..100 {
            sim.run_step_quiet(false).await;
            leader = leader_of(&sim);
            if leader.is_some() {
                break;
            }
        }
        let leader = leader.expect("a leader within 100 steps");
        let lagging = (leader + 1) % NODES as usize;
        let (l, f) = (sim.nodes[leader].id, sim.nodes[lagging].id);
        sim.cut.insert((l, f));
        sim.cut.insert((f, l));
        // 300 batches of up to ~1 KB: about 300 append messages' worth
        // (4 KiB each at most) that the follower misses.
        for _ in 0..300 {
            sim.propose(0);
            sim.run_step_quiet(false).await;
        }
        assert_eq!(
            leader_of(&sim),
            Some(leader),
            "the leader kept its majority"
        );
        let behind = {
            let g = |i: usize| {
                sim.nodes[i]
                    .up
                    .as_ref()
                    .unwrap()
                    .driver
                    .group(&key(0))
                    .unwrap()
                    .last_index()
            };
            g(leader) - g(lagging)
        };
        assert!(
            behind >= 290,
            "the follower fell behind by {behind} entries"
        );
        let reads_before = sim.nodes[leader]
            .up
            .as_ref()
            .unwrap()
            .driver
            .group(&key(0))
            .unwrap()
            .fetch_reads();
        sim.cut.clear();
        let mut caught_up = false;
        for step in 0..300 {
            // The producer goes on while the follower catches up: every
            // proposal makes raft-rs ask for the follower's entries again.
            if step < 40 {
                sim.propose(0);
            }
            sim.run_step_quiet(false).await;
            if step < 40 {
                continue;
            }
            let pr = sim.progress(0);
            if pr.iter().all(|u| *u == pr[0] && u.0 == u.1) {
                caught_up = true;
                break;
            }
        }
        assert!(caught_up, "the follower caught up: {:?}", sim.progress(0));
        let g = sim.nodes[leader]
            .up
            .as_ref()
            .unwrap()
            .driver
            .group(&key(0))
            .unwrap();
        let reads = g.fetch_reads() - reads_before;
        // The gap (about 300 KB) is well under one fetch chunk, but spans
        // about 19 of the simulation's 16 KB segments, and a read stops at
        // a segment's end: about one read per segment. Serving each
        // request as it came took 36 here (one per message at least).
        assert!(
            (1..=24).contains(&reads),
            "{behind} entries served with {reads} log reads"
        );
        for n in &sim.nodes {
            let g = n.up.as_ref().unwrap().driver.group(&key(0)).unwrap();
            assert_eq!(
                g.window_bytes(),
                0,
                "node {}: every replica has every entry, yet {} bytes stay in memory",
                n.id,
                g.window_bytes()
            );
        }
    });
}

/// Reassignment under faults: four brokers, every group starting with
/// brokers 1,2,3 as voters and broker 4's replicas as non-members; a
/// quarter of the way in, every group is reassigned to three brokers that
/// include 4 (one of 1,2,3, drawn per seed, leaves), while producers write
/// and brokers crash, restart and are cut off. The per-step checks hold
/// throughout (one leader and one writer per term, reads never change);
/// at the end every group's members applied exactly the target
/// configuration, and every acknowledged batch is on each of them, once.
/// `SHARDLOG_REASSIGN_SEEDS=N` (default 20) seeds from
/// `SHARDLOG_FIRST_SEED`; `SHARDLOG_SEED` replays one.
#[test]
fn reassignments_under_crashes_and_a_lossy_network_keep_every_acknowledged_batch() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let steps = env_u64("SHARDLOG_SIM_STEPS", 400);
        let seeds = seeds("SHARDLOG_REASSIGN_SEEDS", 20);
        let mut total = Stats::default();
        for seed in seeds {
            total.add(&run_seed_with(seed, steps, true, false).await);
        }
        println!("replica_sim reassignments: {total:?}");
        assert!(total.acked > 0, "nothing was ever acknowledged: {total:?}");
        assert!(total.reconfigurations > 0, "{total:?}");
    });
}

/// The shard-wide budget for replicated entries in memory holds while a
/// follower falls far behind and catches up: each group's own window is
/// large (1 MiB, which alone would keep every entry the follower misses),
/// the broker's budget small (16 KiB); after every step each broker holds
/// at most twice its budget plus one message and one read. The follower
/// still catches up (served from disk) and ends with every entry. Without
/// the budget, the same run keeps far more in the leader's memory.
#[test]
fn a_shard_keeps_replicated_entries_within_its_memory_budget() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let limit = 16 << 10;
        let held_during_cut = |budgeted: bool| async move {
            let mut sim = Sim::new(11, false);
            sim.memory_limit = Some((if budgeted { limit } else { usize::MAX / 4 }, 1 << 20));
            for i in 0..NODES as usize {
                sim.start(i).await;
            }
            for _ in 0..100 {
                sim.run_step_quiet(false).await;
            }
            let leader = (0..sim.nodes.len())
                .find(|&i| {
                    let d = &sim.nodes[i].up.as_ref().unwrap().driver;
                    d.group(&key(0)).unwrap().is_leader()
                })
                .expect("a leader within 100 steps");
            let lagging = (leader + 1) % NODES as usize;
            let (l, f) = (sim.nodes[leader].id, sim.nodes[lagging].id);
            sim.cut.insert((l, f));
            sim.cut.insert((f, l));
            let mut peak = 0;
            let bound = 2 * limit + (2 << 20);
            let mut check = |sim: &Sim| {
                for n in &sim.nodes {
                    let used = n.up.as_ref().unwrap().memory.used();
                    peak = peak.max(used);
                    if budgeted {
                        assert!(used <= bound, "node {}: {used} bytes held, bound {bound}", n.id);
                    }
                }
            };
            for _ in 0..300 {
                sim.propose(0);
                sim.run_step_quiet(false).await;
                check(&sim);
            }
            sim.cut.clear();
            let mut caught_up = false;
            for _ in 0..400 {
                sim.run_step_quiet(false).await;
                check(&sim);
                let pr = sim.progress(0);
                if pr.iter().all(|u| *u == pr[0] && u.0 == u.1) {
                    caught_up = true;
                    break;
                }
            }
            assert!(caught_up, "the follower caught up: {:?}", sim.progress(0));
            peak
        };
        let with = held_during_cut(true).await;
        let without = held_during_cut(false).await;
        println!("peak replicated bytes in memory per broker: {with} with a {limit}-byte budget, {without} without");
        assert!(
            without > 4 * with,
            "the budget made no difference: {with} with, {without} without"
        );
    });
}

/// Retention on replicated partitions: each replica's log keeps about
/// 6 KB, so replicas move their Raft logs' starts every 20 steps, and a
/// follower that was down or cut off while its leader's log start moved
/// past it gets a snapshot (a position) and starts its log again there.
/// Same faults and checks as the main simulation (what consumers read never
/// changes; acknowledged batches are where they were acknowledged unless
/// retention deleted them); every other seed also reassigns the groups to
/// a fourth broker, whose new replicas then start from a snapshot. A plain
/// producer writes to partition 1 too, and the idempotent producer now and
/// then stalls (answers lost) and then retries: its retries find their
/// batches below the leader's log start, known only to the producer table
/// as of that start (carried in snapshots; `deduplicated_below_start`).
/// `SHARDLOG_RETENTION_SEEDS=N` (default 20).
#[test]
fn retention_and_snapshots_keep_replicas_consistent_under_faults() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let steps = env_u64("SHARDLOG_SIM_STEPS", 400);
        let mut total = Stats::default();
        for seed in seeds("SHARDLOG_RETENTION_SEEDS", 20) {
            total.add(&run_seed_with(seed, steps, seed % 2 == 1, true).await);
        }
        println!("replica_sim retention: {total:?}");
        assert!(total.acked > 0, "nothing was ever acknowledged: {total:?}");
        assert!(total.compacted > 0, "no log start ever moved: {total:?}");
        assert!(
            total.snapshots > 0,
            "no follower ever needed a snapshot: {total:?}"
        );
    });
}

/// The idempotent producer's batch `seq` (base sequence `base_seq`, one
/// record), tagged `tag`.
fn idempotent_frame(tag: u64, base_seq: i32) -> bytes::Bytes {
    let mut b = BatchBuilder::new();
    b.push(0, None, Some(format!("{tag}:0:y").as_bytes()), &[]);
    b.finish(
        Compression::None,
        ProducerIds {
            producer_id: PRODUCER_ID,
            producer_epoch: 0,
            base_sequence: base_seq,
        },
    )
}

/// The producer table travels in Raft snapshots: a follower cut off while
/// its leader takes an idempotent producer's batches and then enough
/// plain ones for retention to delete them comes back, installs a
/// snapshot (its log restarts past those batches) and is made leader. The
/// producer's retries of its last batches are then answered as duplicates
/// at their original offsets (not appended again, not refused as out of
/// order), and its next batch is taken. Then the new leader restarts (its
/// table comes back from its saved Raft state) and answers the same.
/// Without the table in the snapshot, the first retry was a new entry.
#[test]
fn a_leader_that_installed_a_snapshot_deduplicates_retries_of_compacted_batches() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let p = IDEMPOTENT_PARTITION;
        let mut sim = Sim::new(5, false);
        sim.retention = true;
        for i in 0..NODES as usize {
            sim.start(i).await;
        }
        let group = |sim: &Sim, i: usize| {
            sim.nodes[i].up.as_ref().unwrap().driver.group(&key(p)).unwrap().partition().clone()
        };
        let l = sim
            .await_leader(p, 100)
            .await
            .expect("a leader within 100 steps");
        // The follower that will lead: the other with the shortest
        // election timeout, so it wins once `l` is gone.
        let timeout = |i: usize| group_cfg(sim.nodes[i].id, p, NODES).election_range.unwrap().0;
        let f = (0..NODES as usize)
            .filter(|&i| i != l)
            .min_by_key(|&i| timeout(i))
            .unwrap();
        let (lid, fid) = (sim.nodes[l].id, sim.nodes[f].id);
        sim.cut.insert((lid, fid));
        sim.cut.insert((fid, lid));
        // Four idempotent batches, committed.
        let mut sent = Vec::new();
        for seq in 0..4 {
            let tag = 1_000_000 + seq as u64;
            let frame = idempotent_frame(tag, seq);
            let pr = sim.nodes[l].up.as_mut().unwrap().driver.propose(&key(p), frame.clone());
            let pr = pr.expect("the leader takes the batch");
            sent.push((tag, frame, pr));
            sim.run_step_quiet(false).await;
        }
        let mut offsets = Vec::new();
        for _ in 0..50 {
            let g = sim.nodes[l].up.as_ref().unwrap().driver.group(&key(p)).unwrap();
            offsets = sent
                .iter()
                .filter_map(|(_, _, pr)| match g.outcome(*pr) {
                    Outcome::Committed { base_offset } => Some(base_offset),
                    _ => None,
                })
                .collect();
            if offsets.len() == sent.len() {
                break;
            }
            sim.run_step_quiet(false).await;
        }
        assert_eq!(offsets.len(), sent.len(), "the batches commit");
        // Plain batches (about 100 KB) until retention moved the leader's
        // log start past them.
        for _ in 0..300 {
            if group(&sim, l).log_start_offset() > *offsets.last().unwrap() {
                break;
            }
            sim.propose(0);
            for _ in 0..3 {
                let tag = sim.next_tag;
                sim.next_tag += 1;
                let mut b = BatchBuilder::new();
                b.push(0, None, Some(format!("{tag}:0:{}", "z".repeat(300)).as_bytes()), &[]);
                let frame = b.finish(Compression::None, ProducerIds::NONE);
                let up = sim.nodes[l].up.as_mut().unwrap();
                up.driver.propose(&key(p), frame).expect("the leader takes it");
            }
            sim.run_step_quiet(false).await;
        }
        assert!(
            group(&sim, l).log_start_offset() > *offsets.last().unwrap(),
            "retention moved the log start past the producer's batches"
        );
        sim.cut.clear();
        for _ in 0..300 {
            sim.run_step_quiet(false).await;
            let pr = sim.progress(p);
            if pr.iter().all(|u| *u == pr[0] && u.0 == u.1) {
                break;
            }
        }
        let follower = sim.nodes[f].up.as_ref().unwrap().driver.group(&key(p)).unwrap();
        assert!(follower.snapshots_installed() > 0, "the follower installed a snapshot");
        assert!(group(&sim, f).log_start_offset() > *offsets.last().unwrap());
        // The old leader goes: the follower leads.
        sim.crash(l);
        let now = sim.await_leader(p, 200).await;
        assert_eq!(now, Some(f), "the follower with the shortest timeout leads");
        let retry = |sim: &mut Sim, seq: usize| {
            let (tag, frame, _) = &sent[seq];
            let up = sim.nodes[f].up.as_mut().unwrap();
            let r = up.driver.propose(&key(p), frame.clone());
            assert_eq!(
                r,
                Err(ProposeError::Duplicate {
                    base_offset: offsets[seq]
                }),
                "a retry of batch {tag} (sequence {seq}) is answered with its offset"
            );
        };
        for seq in 0..4 {
            retry(&mut sim, seq);
        }
        // The leader restarts: its table comes back from its saved state.
        sim.crash(f);
        sim.start(f).await;
        let again = sim.await_leader(p, 300).await;
        if again == Some(f) {
            for seq in 0..4 {
                retry(&mut sim, seq);
            }
        }
        // The producer's next batch is taken by whoever leads, and it
        // commits; every batch is in the log once.
        let next = again.expect("a leader");
        let up = sim.nodes[next].up.as_mut().unwrap();
        let r = up.driver.propose(&key(p), idempotent_frame(2_000_000, 4));
        assert!(r.is_ok(), "the producer's next batch is taken: {r:?}");
        for i in 0..sim.nodes.len() {
            if sim.nodes[i].up.is_none() {
                sim.start(i).await;
            }
        }
        for _ in 0..100 {
            sim.run_step_quiet(false).await;
        }
        assert!(sim.read_tags.contains_key(&2_000_000), "the next batch is read");
        println!(
            "a leader that installed a snapshot: log start {}, producer batches at {offsets:?}, leader after restart {again:?} (the follower: {f})",
            group(&sim, f).log_start_offset()
        );
    });
}
