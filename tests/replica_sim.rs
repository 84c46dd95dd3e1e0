//! Seeded simulation of a replicated partition (issue 13): three replicas
//! of one partition's Raft group in one process, each with its own
//! simulated disk (`storage::sim`) and its partition log, joined by a
//! simulated network that drops, delays, duplicates and reorders messages
//! and cuts nodes off, on simulated time (one tick per step). Proposals of
//! record batches arrive at whoever leads; replicas crash (losing what was
//! not synced) and restart.
//!
//! Checked after every step:
//! - at most one replica accepts writes per term (epoch);
//! - what a consumer reads below any replica's high watermark never
//!   changes, and every replica agrees on it (each replica's visible log is
//!   read incrementally and compared with one global map offset → batch);
//!
//! and at the end, with the network healed and every replica up:
//! - every acknowledged (committed, acks=all) proposal is present exactly
//!   once, at the offset it was acknowledged at, on every replica;
//! - the replicas' logs are identical.
//!
//! Every seed replays exactly: `SHARDLOG_SEED=1234 cargo test --test
//! replica_sim -- --nocapture`. `SHARDLOG_SEEDS=N` runs N seeds (default
//! 40) and `SHARDLOG_SIM_STEPS=N` sets steps per seed (default 400).

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog::clock::{Clock, ManualClock};
use shardlog::config::TopicConfig;
use shardlog::format::header::attr;
use shardlog::format::{read_records, BatchBuilder, Compression, ProducerIds};
use shardlog::partition::Partition;
use shardlog::replica::{GroupConfig, Outcome, PartitionGroup, Proposed};
use shardlog::storage::file::Disk;
use shardlog::storage::sim::SimDisk;
use shardlog::storage::{CacheBudget, LogConfig, WriteBudget};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

const NODES: u64 = 3;

fn log_cfg() -> LogConfig {
    LogConfig {
        topic: TopicConfig {
            segment_bytes: 16_000,
            segment_ms: u64::MAX / 4,
            retention_ms: -1,
            retention_bytes: -1,
            index_interval_bytes: 1000,
            max_batch_bytes: 1 << 20,
            validate_compressed: true,
            ..Default::default()
        },
        write_chunk_bytes: 8192,
        write_behind: 2,
        flush_interval_ms: 50,
        checkpoint_interval_ms: 1,
        cache_keep_bytes: 4096,
        preallocate_bytes: 0,
    }
}

struct Up {
    group: PartitionGroup<SimDisk>,
    _flusher: glommio::Task<()>,
}

struct Node {
    id: u64,
    disk: SimDisk,
    up: Option<Up>,
    /// Next offset this node's consumer reads from (kept across restarts:
    /// what was visible must come back).
    cursor: u64,
}

struct Flight {
    at: u64,
    from: u64,
    to: u64,
    msg: Message,
}

struct Prop {
    node: u64,
    p: Proposed,
    tag: u64,
    acked: Option<u64>,
}

#[derive(Default, Debug)]
struct Stats {
    proposed: u64,
    acked: u64,
    lost: u64,
    crashes: u64,
    /// Crashes of a replica holding appends that were not yet durable.
    crashes_unsynced: u64,
    cuts: u64,
    dropped: u64,
    duplicated: u64,
    elections: u64,
    fetches: u64,
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
    /// Term → the replica that accepted a proposal in it.
    writers: BTreeMap<u64, u64>,
    /// Term → the replica that was leader in it.
    leaders: BTreeMap<u64, u64>,
    /// What consumers have read: offset → (leader epoch, tag or control).
    read: BTreeMap<u64, (i32, Option<u64>)>,
    next_tag: u64,
    lossy: bool,
    stats: Stats,
}

fn group_cfg(id: u64) -> GroupConfig {
    let mut c = GroupConfig::new(id, (1..=NODES).collect());
    // Fixed, distinct election timeouts: raft-rs would draw them from the
    // thread's RNG, which would not replay.
    let t = 10 + 4 * id as usize;
    c.election_range = Some((t, t + 1));
    // A small window, so followers that fall behind are served from disk.
    c.window_bytes = 2048;
    c.max_size_per_msg = 4096;
    c.max_inflight_msgs = 4;
    c
}

impl Sim {
    fn fail(&self, what: String) -> ! {
        panic!("seed {}: step {}: {what}", self.seed, self.step)
    }

    async fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.up.is_none());
        let dir = PathBuf::from("/sim/p-0");
        node.disk.create_dir_all(&dir).unwrap();
        let clock: Rc<dyn Clock> = self.clock.clone();
        let partition = Partition::open(
            node.disk.clone(),
            dir,
            log_cfg(),
            CacheBudget::new(1 << 20),
            WriteBudget::unlimited(),
            clock,
        )
        .await
        .unwrap_or_else(|e| panic!("seed {}: node {} log: {e}", self.seed, node.id));
        let flusher = glommio::spawn_local(partition.run_flusher());
        let group = PartitionGroup::open(&group_cfg(node.id), node.disk.clone(), partition)
            .await
            .unwrap_or_else(|e| panic!("seed {}: node {} replica: {e}", self.seed, node.id));
        node.up = Some(Up {
            group,
            _flusher: flusher,
        });
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node
            .up
            .as_ref()
            .is_some_and(|u| u.group.durable_wanted().is_some())
        {
            self.stats.crashes_unsynced += 1;
        }
        // Dropping the flusher task cancels it; the disk forgets what was
        // not synced.
        node.up = None;
        node.disk.crash();
        self.net.retain(|f| f.to != node.id && f.from != node.id);
        self.stats.crashes += 1;
    }

    fn send(&mut self, from: u64, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let delay = if self.lossy {
                self.rng.gen_range(0..4)
            } else {
                0
            };
            self.net.push(Flight {
                at: self.step + delay,
                from,
                to,
                msg: m,
            });
        }
    }

    /// Run every replica's ready loop until nothing is left to do.
    async fn settle(&mut self) {
        for _ in 0..20 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                let id = self.nodes[i].id;
                let Some(up) = self.nodes[i].up.as_mut() else {
                    continue;
                };
                if up.group.fetch_for_followers().await.unwrap() {
                    self.stats.fetches += 1;
                }
                let mut msgs = up
                    .group
                    .ready()
                    .await
                    .unwrap_or_else(|e| panic!("seed {}: node {id} ready: {e}", self.seed));
                // Now and then the replica crashes between its append and
                // the sync: its disk loses the appends, and their
                // acknowledgements were never sent.
                if self.lossy
                    && up.group.durable_wanted().is_some()
                    && self.rng.gen_bool(0.01)
                    && self.nodes.iter().all(|n| n.up.is_some())
                {
                    self.send(id, msgs);
                    self.crash(i);
                    continue;
                }
                let up = self.nodes[i].up.as_mut().expect("up");
                // Sometimes the log syncs at once; otherwise the appends
                // stay pending (a crash now loses them) until the flusher's
                // interval passes or a later round syncs them.
                if let Some(end) = up.group.durable_wanted() {
                    if !self.lossy || self.rng.gen_bool(0.7) {
                        up.group
                            .partition()
                            .wait_durable(end - 1)
                            .await
                            .unwrap_or_else(|e| panic!("seed {}: node {id} sync: {e}", self.seed));
                    }
                }
                let released = up.group.on_durable();
                busy |= !released.is_empty() || up.group.has_ready();
                msgs.extend(released);
                busy |= !msgs.is_empty();
                self.send(id, msgs);
            }
            if !busy {
                return;
            }
            self.deliver(true);
        }
    }

    /// Deliver the messages that are due (all of them when `now` is set:
    /// the same step's exchange).
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
                    msg: f.msg.clone(),
                });
            }
            let Some(up) = self.nodes[(f.to - 1) as usize].up.as_mut() else {
                continue;
            };
            // A refused message is dropped, as a real transport would.
            let _ = up.group.step(f.msg);
        }
    }

    fn propose(&mut self) {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .up
                    .as_ref()
                    .is_some_and(|u| u.group.is_leader())
            })
            .collect();
        for i in leaders {
            let tag = self.next_tag;
            self.next_tag += 1;
            let mut b = BatchBuilder::new();
            for r in 0..self.rng.gen_range(1..4) {
                let v = format!("{tag}:{r}:{}", "x".repeat(self.rng.gen_range(0..300)));
                b.push(self.step as i64, None, Some(v.as_bytes()), &[]);
            }
            let frame = b.finish(Compression::None, ProducerIds::NONE);
            let node = self.nodes[i].id;
            let up = self.nodes[i].up.as_mut().unwrap();
            if let Ok(p) = up.group.propose(frame) {
                self.stats.proposed += 1;
                if let Some(&w) = self.writers.get(&p.term) {
                    if w != node {
                        self.fail(format!(
                            "nodes {w} and {node} both accepted writes in term {}",
                            p.term
                        ));
                    }
                }
                self.writers.insert(p.term, node);
                self.props.push(Prop {
                    node,
                    p,
                    tag,
                    acked: None,
                });
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
            if up.group.is_leader() {
                let term = up.group.term();
                match self.leaders.insert(term, id) {
                    Some(other) if other != id => {
                        self.fail(format!("nodes {other} and {id} both led term {term}"))
                    }
                    None => self.stats.elections += 1,
                    _ => {}
                }
            }
        }
        for k in 0..self.props.len() {
            if self.props[k].acked.is_some() {
                continue;
            }
            let node = self.props[k].node;
            let Some(up) = self.nodes[(node - 1) as usize].up.as_ref() else {
                continue;
            };
            match up.group.outcome(self.props[k].p) {
                Outcome::Committed { base_offset } => {
                    self.props[k].acked = Some(base_offset);
                    self.stats.acked += 1;
                }
                Outcome::Lost => {
                    // Never acknowledged: mark it so it is not looked at again.
                    self.props[k].acked = Some(u64::MAX);
                    self.stats.lost += 1;
                }
                Outcome::Pending => {}
            }
        }
        for i in 0..self.nodes.len() {
            self.read_visible(i).await;
        }
    }

    /// Read node `i`'s visible log from its cursor, and compare with what
    /// every consumer has read before.
    async fn read_visible(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let Some(up) = self.nodes[i].up.as_ref() else {
            return;
        };
        let part = up.group.partition().clone();
        loop {
            let from = self.nodes[i].cursor;
            let r = part
                .read(from, 64 << 10)
                .await
                .unwrap_or_else(|e| self.fail(format!("node {id} read at {from}: {e}")));
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
                if let Some(old) = self.read.insert(h.base_offset, seen) {
                    if old != seen {
                        self.fail(format!(
                            "node {id}: offset {} read as {seen:?}, earlier as {old:?}",
                            h.base_offset
                        ));
                    }
                }
                self.nodes[i].cursor = h.last_offset() + 1;
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
            let victim = self.rng.gen_range(1..=NODES);
            for other in 1..=NODES {
                if other != victim {
                    self.cut.insert((victim, other));
                    self.cut.insert((other, victim));
                }
            }
            self.stats.cuts += 1;
        } else if roll < 0.14 {
            self.cut.clear();
        }
        if self.rng.gen_bool(0.5) {
            self.propose();
        }
        for n in &mut self.nodes {
            if let Some(up) = n.up.as_mut() {
                up.group.tick();
            }
        }
        self.deliver(false);
        self.settle().await;
        self.check().await;
    }
}

async fn run_seed(seed: u64, steps: u64) -> Stats {
    let mut sim = Sim {
        seed,
        rng: StdRng::seed_from_u64(seed),
        clock: ManualClock::new(),
        step: 0,
        nodes: (1..=NODES)
            .map(|id| Node {
                id,
                disk: SimDisk::new(seed.wrapping_mul(31).wrapping_add(id)),
                up: None,
                cursor: 0,
            })
            .collect(),
        net: Vec::new(),
        cut: BTreeSet::new(),
        props: Vec::new(),
        writers: BTreeMap::new(),
        leaders: BTreeMap::new(),
        read: BTreeMap::new(),
        next_tag: 0,
        lossy: true,
        stats: Stats::default(),
    };
    for i in 0..NODES as usize {
        sim.start(i).await;
    }
    for _ in 0..steps {
        sim.run_step().await;
    }
    // Heal: every node up, no faults; proposals continue until one
    // commits in the final term, then quiet steps until all agree.
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
        let ups: Vec<_> = sim
            .nodes
            .iter()
            .map(|n| {
                let g = &n.up.as_ref().unwrap().group;
                (
                    g.applied_index(),
                    g.last_index(),
                    g.partition().high_watermark(),
                )
            })
            .collect();
        // A batch of the final term committed: everything before it is
        // committed too. Proposals still pending after that were never
        // acknowledged (their client timed out).
        let final_term = sim
            .nodes
            .iter()
            .map(|n| n.up.as_ref().unwrap().group.term())
            .max();
        let committed_now = sim
            .props
            .iter()
            .any(|p| Some(p.p.term) == final_term && p.acked.is_some_and(|a| a != u64::MAX));
        if committed_now && ups.iter().all(|u| *u == ups[0] && u.0 == u.1) {
            converged = true;
            break;
        }
    }
    if !converged {
        let view: Vec<_> = sim
            .nodes
            .iter()
            .map(|n| {
                let g = &n.up.as_ref().unwrap().group;
                (
                    g.term(),
                    g.is_leader(),
                    g.commit_index(),
                    g.applied_index(),
                    g.last_index(),
                )
            })
            .collect();
        sim.fail(format!(
            "replicas did not converge after healing: (term, leader, commit, applied, last) {view:?}"
        ));
    }
    sim.check().await;
    // Every acknowledged proposal is where it was acknowledged, once.
    let mut tags_at: BTreeMap<u64, u64> = BTreeMap::new();
    for (off, (_, tag)) in &sim.read {
        if let Some(t) = tag {
            if let Some(other) = tags_at.insert(*t, *off) {
                sim.fail(format!("batch {t} read at offsets {other} and {off}"));
            }
        }
    }
    for p in &sim.props {
        let Some(at) = p.acked.filter(|a| *a != u64::MAX) else {
            continue;
        };
        match tags_at.get(&p.tag) {
            Some(&o) if o == at => {}
            other => sim.fail(format!(
                "acknowledged batch {} (at {at}, term {}) is at {other:?}",
                p.tag, p.p.term
            )),
        }
    }
    // Every replica's consumer read the whole, same log.
    let ends: Vec<u64> = sim.nodes.iter().map(|n| n.cursor).collect();
    if ends.iter().any(|e| *e != ends[0]) {
        sim.fail(format!("replicas' visible ends differ: {ends:?}"));
    }
    sim.stats
}

impl Sim {
    /// A step with no faults (after healing); proposals only while `propose`.
    async fn run_step_quiet(&mut self, propose: bool) {
        self.step += 1;
        self.clock.advance(Duration::from_millis(10));
        if propose && self.step % 10 == 0 {
            self.propose();
        }
        for n in &mut self.nodes {
            if let Some(up) = n.up.as_mut() {
                up.group.tick();
            }
        }
        self.deliver(true);
        self.settle().await;
        self.check().await;
    }
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

#[test]
fn replicated_partition_survives_crashes_partitions_and_a_lossy_network() {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async {
        let steps = env_u64("SHARDLOG_SIM_STEPS", 400);
        let seeds: Vec<u64> = match std::env::var("SHARDLOG_SEED") {
            Ok(s) => vec![s.parse().unwrap()],
            Err(_) => {
                let first = env_u64("SHARDLOG_FIRST_SEED", 1);
                (first..first + env_u64("SHARDLOG_SEEDS", 40)).collect()
            }
        };
        let mut total = Stats::default();
        for seed in seeds {
            let s = run_seed(seed, steps).await;
            total.proposed += s.proposed;
            total.acked += s.acked;
            total.lost += s.lost;
            total.crashes += s.crashes;
            total.crashes_unsynced += s.crashes_unsynced;
            total.cuts += s.cuts;
            total.dropped += s.dropped;
            total.duplicated += s.duplicated;
            total.elections += s.elections;
            total.fetches += s.fetches;
        }
        println!("replica_sim: {total:?}");
        assert!(total.acked > 0, "nothing was ever acknowledged: {total:?}");
        assert!(total.elections > 0);
    });
}
