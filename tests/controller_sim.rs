//! A seeded simulation of the controller's Raft group: several replicas in
//! one process over a simulated network that drops, delays, duplicates and
//! reorders messages and cuts nodes off, with crashes and restarts from
//! each replica's stable storage, on a simulated clock (one step = one
//! tick). Clients submit commands (one outstanding request per client, as
//! brokers do) and retry them at other replicas until one is applied.
//!
//! Checked, for every seed:
//! - every committed command is applied at the same log index, with the
//!   same outcome, on every replica that applies it, in index order;
//! - no request (origin, seq) takes effect at two indexes (a retried request
//!   committed twice is applied once);
//! - after the network heals and every replica is up, every request is
//!   answered, all replicas hold byte-identical states, and that state is
//!   what replaying the agreed log from scratch gives (so snapshots sent to
//!   lagging replicas carry exactly the applied state).
//!
//! A failure prints its seed; `SHARDLOG_SIM_SEED=N` replays one seed,
//! `SHARDLOG_SIM_SEEDS` (default 150) and `SHARDLOG_SIM_STEPS` (default
//! 400) make a longer run, e.g. `SHARDLOG_SIM_SEEDS=5000 SHARDLOG_SIM_STEPS=2000
//! cargo test --release --test controller_sim`.

use raft::eraftpb::{Message, MessageType};
use shardlog::controller::command::{Command, Envelope, Registration};
use shardlog::controller::file_log::FileLog;
use shardlog::controller::node::{NodeConfig, ProposeError};
use shardlog::controller::state::ApplyResult;
use shardlog::controller::{ControllerNode, ControllerState, MemPersist, Persist};
use std::collections::{BTreeMap, BTreeSet};

/// SplitMix64: a tiny seeded generator, so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

struct InFlight {
    at: u64,
    order: u64,
    msg: Message,
}

struct Pending {
    env: Envelope,
    retry_at: u64,
}

struct Client {
    origin: u32,
    next_seq: u64,
    pending: Option<Pending>,
}

/// What the whole run agreed on, checked as replicas apply.
#[derive(Default)]
struct Agreed {
    /// index -> (origin, seq, command, result), as first applied anywhere.
    log: BTreeMap<u64, (u32, u64, Command, ApplyResult)>,
    /// (origin, seq) -> the index where it took effect.
    effective: BTreeMap<(u32, u64), u64>,
    answered: u64,
    /// Entries that repeated an applied request (answered from the session).
    duplicates: u64,
    snapshots_installed: u64,
    crashes: u64,
}

struct Sim<P: Persist> {
    rng: Rng,
    now: u64,
    cfgs: Vec<NodeConfig>,
    open: Box<dyn Fn(usize) -> P>,
    nodes: Vec<Option<ControllerNode<P>>>,
    restart_at: Vec<u64>,
    net: Vec<InFlight>,
    order: u64,
    /// Nodes cut off from every other node.
    isolated: BTreeSet<usize>,
    clients: Vec<Client>,
    agreed: Agreed,
    last_applied: Vec<u64>,
    /// Removes the replicas' directories (file storage) when the run ends.
    _dir: Option<tempfile::TempDir>,
}

impl<P: Persist> Sim<P> {
    fn new(seed: u64, voters: usize, open: Box<dyn Fn(usize) -> P>) -> Sim<P> {
        let mut rng = Rng(seed);
        let snapshot_every = 3 + rng.below(20);
        let ids: Vec<u64> = (1..=voters as u64).collect();
        let cfgs: Vec<NodeConfig> = ids
            .iter()
            .map(|&id| NodeConfig {
                snapshot_every,
                fixed_election_timeout: true,
                // Distinct timeouts break ties between candidates
                // deterministically; the network's randomness does the rest.
                election_tick: 10 + 3 * id as usize,
                ..NodeConfig::new(id, ids.clone())
            })
            .collect();
        let nodes = (0..voters)
            .map(|i| Some(ControllerNode::open(&cfgs[i], open(i)).expect("open")))
            .collect();
        Sim {
            rng,
            now: 0,
            cfgs,
            open,
            nodes,
            restart_at: vec![0; voters],
            net: Vec::new(),
            order: 0,
            isolated: BTreeSet::new(),
            clients: (0..3)
                .map(|i| Client {
                    origin: 100 + i,
                    next_seq: 1,
                    pending: None,
                })
                .collect(),
            agreed: Agreed::default(),
            last_applied: vec![0; voters],
            _dir: None,
        }
    }

    fn random_command(&mut self) -> Command {
        let name = format!("t{}", self.rng.below(6));
        match self.rng.below(7) {
            0 => Command::RegisterBroker(Registration {
                id: 1 + self.rng.below(4) as u32,
                incarnation: self.rng.below(3),
                shards: 1 + self.rng.below(3) as u16,
                kafka_addr: "127.0.0.1:9092".into(),
                native_addr: "127.0.0.1:9400".into(),
                rpc_addr: "127.0.0.1:9401".into(),
            }),
            1 => Command::SetBrokerLive {
                id: 1 + self.rng.below(4) as u32,
                incarnation: self.rng.below(3),
                live: self.rng.chance(500),
            },
            2 | 3 => Command::CreateTopic {
                name,
                topic_id: self.rng.next() as u128,
                partitions: 1 + self.rng.below(4) as u32,
                config: vec![("retention.ms".into(), format!("{}", self.rng.below(100)))],
                replication_factor: 1 + self.rng.below(3) as u16,
            },
            4 => Command::DeleteTopic { name },
            5 => Command::CreatePartitions {
                name,
                total: 1 + self.rng.below(8) as u32,
            },
            _ => Command::AllocateProducerIds {
                count: 1 + self.rng.below(100) as u32,
            },
        }
    }

    fn send(&mut self, from: usize, msgs: Vec<Message>) {
        for msg in msgs {
            let to = msg.to as usize - 1;
            let lost = self.isolated.contains(&from)
                || self.isolated.contains(&to)
                || self.nodes[to].is_none()
                || self.rng.chance(50);
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                // A real transport knows whether its snapshot stream got
                // through, and says so (raft-rs waits for the word).
                if let Some(node) = self.nodes[from].as_mut() {
                    node.report_snapshot(msg.to, !lost);
                }
            }
            if lost {
                continue;
            }
            let copies = if self.rng.chance(30) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = if self.rng.chance(50) {
                    1 + self.rng.below(30)
                } else {
                    1 + self.rng.below(4)
                };
                self.order += 1;
                self.net.push(InFlight {
                    at: self.now + delay,
                    order: self.order,
                    msg: msg.clone(),
                });
            }
        }
    }

    /// Run `ready` on node `i`, check what it applied, send its messages.
    fn drain(&mut self, i: usize, seed: u64) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let out = node.ready().expect("ready");
        if let Some(index) = out.installed_snapshot {
            assert!(
                index > self.last_applied[i],
                "seed {seed}: node {} went back to snapshot {index}",
                i + 1
            );
            self.last_applied[i] = index;
            self.agreed.snapshots_installed += 1;
        }
        for a in &out.applied {
            assert!(
                a.index > self.last_applied[i],
                "seed {seed}: node {} applied {} after {}",
                i + 1,
                a.index,
                self.last_applied[i]
            );
            self.last_applied[i] = a.index;
            let rec = (a.origin, a.seq, a.command.clone(), a.result);
            match self.agreed.log.get(&a.index) {
                Some(first) => assert_eq!(
                    first,
                    &rec,
                    "seed {seed}: node {} applied something else at index {}",
                    i + 1,
                    a.index
                ),
                None => {
                    self.agreed.log.insert(a.index, rec);
                }
            }
            if a.result.duplicate {
                self.agreed.duplicates += 1;
            } else {
                let at = *self
                    .agreed
                    .effective
                    .entry((a.origin, a.seq))
                    .or_insert(a.index);
                assert_eq!(
                    at,
                    a.index,
                    "seed {seed}: request {:?} took effect at {at} and again at {}",
                    (a.origin, a.seq),
                    a.index
                );
            }
            for c in self.clients.iter_mut() {
                if c.origin == a.origin && c.pending.as_ref().is_some_and(|p| p.env.seq == a.seq) {
                    c.pending = None;
                    self.agreed.answered += 1;
                }
            }
        }
        self.send(i, out.messages);
    }

    fn propose(&mut self, c: usize, seed: u64) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        let mut target = up[self.rng.below(up.len() as u64) as usize];
        let env = self.clients[c]
            .pending
            .as_ref()
            .expect("pending")
            .env
            .clone();
        // Follow one leader hint, as a broker's controller client does.
        for _ in 0..2 {
            let node = self.nodes[target].as_mut().expect("up");
            match node.propose(&env) {
                Ok(_) => break,
                Err(ProposeError::NotLeader { leader: Some(l) })
                    if self.nodes[l as usize - 1].is_some() =>
                {
                    target = l as usize - 1;
                }
                Err(_) => break,
            }
        }
        self.drain(target, seed);
    }

    fn step(&mut self, seed: u64, chaos: bool) {
        self.now += 1;
        let n = self.nodes.len();
        if chaos {
            if self.rng.chance(8) {
                let i = self.rng.below(n as u64) as usize;
                if self.nodes[i].is_some() {
                    self.nodes[i] = None; // kill -9: memory gone, storage kept
                    self.agreed.crashes += 1;
                    self.restart_at[i] = self.now + 5 + self.rng.below(60);
                }
            }
            if self.rng.chance(6) {
                self.isolated.insert(self.rng.below(n as u64) as usize);
            }
            if self.rng.chance(15) {
                self.isolated.clear();
            }
        }
        for i in 0..n {
            if self.nodes[i].is_none() && (!chaos || self.now >= self.restart_at[i]) {
                let node = ControllerNode::open(&self.cfgs[i], (self.open)(i)).expect("reopen");
                self.last_applied[i] = node.state().applied_index;
                self.nodes[i] = Some(node);
            }
        }
        // Deliver what is due, in (time, send order) order.
        self.net.sort_by_key(|m| (m.at, m.order));
        let due = self.net.iter().take_while(|m| m.at <= self.now).count();
        let arrived: Vec<InFlight> = self.net.drain(..due).collect();
        for m in arrived {
            let to = m.msg.to as usize - 1;
            if let Some(node) = self.nodes[to].as_mut() {
                let _ = node.step(m.msg);
            }
        }
        for i in 0..n {
            if let Some(node) = self.nodes[i].as_mut() {
                if self.rng.chance(900) {
                    node.tick();
                }
            }
        }
        for i in 0..n {
            self.drain(i, seed);
        }
        for c in 0..self.clients.len() {
            match &self.clients[c].pending {
                None if chaos && self.rng.chance(150) => {
                    let command = self.random_command();
                    let cl = &mut self.clients[c];
                    cl.pending = Some(Pending {
                        env: Envelope {
                            origin: cl.origin,
                            seq: cl.next_seq,
                            command,
                        },
                        retry_at: self.now,
                    });
                    cl.next_seq += 1;
                }
                Some(p) if p.retry_at <= self.now => {
                    let wait = 15 + self.rng.below(20);
                    self.clients[c].pending.as_mut().expect("pending").retry_at = self.now + wait;
                    self.propose(c, seed);
                }
                _ => {}
            }
        }
    }

    fn run(&mut self, seed: u64, steps: u64) {
        for _ in 0..steps {
            self.step(seed, true);
        }
        // Heal: everyone up, no cuts; every request must be answered and
        // every replica must catch up.
        self.isolated.clear();
        let mut quiet = 0;
        for _ in 0..3000 {
            self.step(seed, false);
            let commit = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.commit_index())
                .max()
                .unwrap_or(0);
            let caught_up = self
                .nodes
                .iter()
                .flatten()
                .all(|n| n.state().applied_index == commit);
            let idle = self.clients.iter().all(|c| c.pending.is_none());
            quiet = if caught_up && idle { quiet + 1 } else { 0 };
            if quiet > 30 {
                break;
            }
        }
        if quiet <= 30 {
            for n in self.nodes.iter().flatten() {
                eprintln!(
                    "node {}: leader {:?} term {} commit {} applied {} snapshot {}",
                    n.id(),
                    n.leader_id(),
                    n.term(),
                    n.commit_index(),
                    n.state().applied_index,
                    n.snapshot_index()
                );
            }
            for c in &self.clients {
                eprintln!(
                    "client {}: pending {:?}",
                    c.origin,
                    c.pending.as_ref().map(|p| &p.env)
                );
            }
        }
        assert!(quiet > 30, "seed {seed}: the healed cluster did not settle (requests unanswered or replicas behind)");
        let states: Vec<ControllerState> = self
            .nodes
            .iter()
            .flatten()
            .map(|n| n.state().clone())
            .collect();
        for s in &states[1..] {
            assert_eq!(
                s.encode(),
                states[0].encode(),
                "seed {seed}: replicas disagree"
            );
        }
        // Replaying the agreed log from scratch gives the same state.
        let mut model = ControllerState::default();
        for (index, (origin, seq, command, result)) in &self.agreed.log {
            let env = Envelope {
                origin: *origin,
                seq: *seq,
                command: command.clone(),
            };
            assert_eq!(
                &model.apply(*index, &env),
                result,
                "seed {seed}: replay differs at {index}"
            );
        }
        model.applied_index = states[0].applied_index;
        assert_eq!(
            model, states[0],
            "seed {seed}: state is not the replay of the agreed log"
        );
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SHARDLOG_SIM_SEED") {
        return vec![s.parse().expect("SHARDLOG_SIM_SEED is a number")];
    }
    (0..env_u64("SHARDLOG_SIM_SEEDS", 150)).collect()
}

fn run_seeds<P: Persist>(what: &str, seeds: &[u64], steps: u64, make: impl Fn(u64) -> Sim<P>) {
    let mut total = [0u64; 5];
    for &seed in seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sim = make(seed);
            sim.run(seed, steps);
            let a = &sim.agreed;
            [
                a.answered,
                a.log.len() as u64,
                a.duplicates,
                a.snapshots_installed,
                a.crashes,
            ]
        }));
        match result {
            Ok(counts) => {
                for (t, c) in total.iter_mut().zip(counts) {
                    *t += c;
                }
            }
            Err(e) => {
                eprintln!("{what}: seed {seed} failed; replay with SHARDLOG_SIM_SEED={seed} cargo test --test controller_sim");
                std::panic::resume_unwind(e);
            }
        }
    }
    let [answered, applied, duplicates, snapshots, crashes] = total;
    eprintln!(
        "{what}: {} seeds x {steps} steps: {answered} requests answered, {applied} commands applied \
         ({duplicates} of them repeats answered from the session), {snapshots} snapshots installed, {crashes} crashes",
        seeds.len()
    );
    // The run must have exercised what it checks, or it proves nothing.
    assert!(
        answered >= seeds.len() as u64,
        "too few requests answered: {answered}"
    );
    assert!(crashes > 0, "no crash happened");
    if seeds.len() >= 20 {
        assert!(
            duplicates > 0 && snapshots > 0,
            "no repeat or no snapshot install exercised"
        );
    }
}

#[test]
fn three_replicas_agree_on_every_committed_command_through_faults() {
    let steps = env_u64("SHARDLOG_SIM_STEPS", 400);
    run_seeds("3 replicas, memory storage", &seeds(), steps, |seed| {
        let disks: Vec<MemPersist> = (0..3).map(|_| MemPersist::default()).collect();
        Sim::new(seed, 3, Box::new(move |i| disks[i].clone()))
    });
}

#[test]
fn five_replicas_agree_on_every_committed_command_through_faults() {
    let steps = env_u64("SHARDLOG_SIM_STEPS", 400);
    let seeds: Vec<u64> = seeds()
        .into_iter()
        .map(|s| s + 1_000_000)
        .take(60)
        .collect();
    run_seeds("5 replicas, memory storage", &seeds, steps, |seed| {
        let disks: Vec<MemPersist> = (0..5).map(|_| MemPersist::default()).collect();
        Sim::new(seed, 5, Box::new(move |i| disks[i].clone()))
    });
}

/// The same simulation over the real controller files (each replica in its
/// own directory; a crash drops the replica and reopens its files).
#[test]
fn three_replicas_on_files_agree_through_crashes() {
    let steps = env_u64("SHARDLOG_SIM_STEPS", 400).min(300);
    let seeds: Vec<u64> = seeds().into_iter().map(|s| s + 2_000_000).take(6).collect();
    run_seeds("3 replicas, file storage", &seeds, steps, |seed| {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs: Vec<std::path::PathBuf> = (0..3)
            .map(|i| root.path().join(format!("node{i}")))
            .collect();
        let mut sim = Sim::new(
            seed,
            3,
            Box::new(move |i| FileLog::new(&dirs[i]).expect("controller dir")),
        );
        sim._dir = Some(root);
        sim
    });
}
