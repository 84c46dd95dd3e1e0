//! raft-rs 0.7 (TiKV's sans-IO `RawNode`) on glommio: one driver task per
//! broker runs every replica that broker holds, the multi-raft shape TiKV
//! uses and the one a shard would use for its partitions.
//!
//! A broker's driver owns its `RawNode`s (one per group) and an inbox.
//! Inputs: `Tick` (from a timer task, every heartbeat interval), a batch of
//! Raft messages from one peer broker, or a proposal. After draining the
//! inbox it handles `Ready` for every group the inputs touched, then sends
//! at most one batch per peer broker, carrying every group's messages: the
//! heartbeats of a thousand groups travel in one message per peer per tick
//! (what Redpanda's heartbeat manager does).
//!
//! Logs are raft-rs's `MemStorage`; "persisted" is immediate.

use super::{cpu_over_rounds, Scenario, ENTRY_BYTES};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const BROKERS: u64 = 3;

pub enum Input {
    Tick,
    /// Messages from one peer broker, each tagged with its group.
    Batch(Vec<(u32, Message)>),
    Propose {
        group: u32,
        data: Vec<u8>,
        done: oneshot::Sender<()>,
    },
}

struct Replica {
    node: RawNode<MemStorage>,
    /// Leader only: proposals waiting for commit, by log index.
    pending: VecDeque<(u64, oneshot::Sender<()>)>,
    applied_entries: u64,
}

/// Counters for what went over the "wire".
#[derive(Default)]
pub struct Traffic {
    pub batches: Cell<u64>,
    pub messages: Cell<u64>,
}

pub struct Broker {
    id: u64,
    replicas: Vec<Replica>,
    /// Inbox senders of every broker, indexed by broker id (0 unused).
    peers: Vec<mpsc::UnboundedSender<Input>>,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    outbox: Vec<Vec<(u32, Message)>>,
    traffic: Rc<Traffic>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// raft-rs settings: one tick per heartbeat interval, heartbeat every tick,
/// election after 10–20 ticks without a leader.
fn raft_config(id: u64) -> Config {
    let c = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        max_inflight_msgs: 256,
        max_size_per_msg: 1 << 20,
        ..Default::default()
    };
    c.validate().expect("valid raft-rs config");
    c
}

impl Broker {
    fn new(
        id: u64,
        groups: u32,
        peers: Vec<mpsc::UnboundedSender<Input>>,
        traffic: Rc<Traffic>,
    ) -> Broker {
        let logger = logger();
        let replicas = (0..groups)
            .map(|_| {
                let store = MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
                Replica {
                    node: RawNode::new(&raft_config(id), store, &logger).expect("RawNode"),
                    pending: VecDeque::new(),
                    applied_entries: 0,
                }
            })
            .collect();
        Broker {
            id,
            replicas,
            peers,
            dirty: vec![false; groups as usize],
            dirty_list: Vec::new(),
            outbox: (0..=BROKERS).map(|_| Vec::new()).collect(),
            traffic,
        }
    }

    fn touch(&mut self, g: u32) {
        if !self.dirty[g as usize] {
            self.dirty[g as usize] = true;
            self.dirty_list.push(g);
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Tick => {
                for g in 0..self.replicas.len() as u32 {
                    self.replicas[g as usize].node.tick();
                    self.touch(g);
                }
            }
            Input::Batch(msgs) => {
                for (g, m) in msgs {
                    // A stale or misrouted message is Raft's to ignore.
                    let _ = self.replicas[g as usize].node.step(m);
                    self.touch(g);
                }
            }
            Input::Propose { group, data, done } => {
                let r = &mut self.replicas[group as usize];
                if r.node.propose(vec![], data).is_ok() {
                    let index = r.node.raft.raft_log.last_index();
                    r.pending.push_back((index, done));
                }
                // Not leader: `done` drops, the proposer sees `Canceled`.
                self.touch(group);
            }
        }
    }

    /// Handles `Ready` for every touched group, then sends one batch per
    /// peer.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_list);
        for &g in &dirty {
            self.dirty[g as usize] = false;
            self.ready(g);
        }
        self.dirty_list = dirty;
        self.dirty_list.clear();
        for to in 1..=BROKERS as usize {
            if self.outbox[to].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.outbox[to]);
            self.traffic.batches.set(self.traffic.batches.get() + 1);
            self.traffic
                .messages
                .set(self.traffic.messages.get() + batch.len() as u64);
            let _ = self.peers[to].unbounded_send(Input::Batch(batch));
        }
    }

    fn route(outbox: &mut [Vec<(u32, Message)>], g: u32, msgs: Vec<Message>) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                super::count_heartbeat();
            }
            outbox[m.to as usize].push((g, m));
        }
    }

    fn apply(r: &mut Replica, entries: Vec<Entry>) {
        for e in entries {
            if !e.data.is_empty() {
                r.applied_entries += 1;
            }
            while r.pending.front().is_some_and(|(i, _)| *i <= e.index) {
                let (_, done) = r.pending.pop_front().expect("front");
                let _ = done.send(());
            }
        }
    }

    /// The `RawNode` ready cycle (raft-rs's documented order): send, persist
    /// (here: append to `MemStorage`), apply, advance.
    fn ready(&mut self, g: u32) {
        let r = &mut self.replicas[g as usize];
        if !r.node.has_ready() {
            return;
        }
        let mut rd = r.node.ready();
        Self::route(&mut self.outbox, g, rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            r.node
                .mut_store()
                .wl()
                .apply_snapshot(snap)
                .expect("apply snapshot");
        }
        let committed = rd.take_committed_entries();
        Self::apply(r, committed);
        if !rd.entries().is_empty() {
            r.node
                .mut_store()
                .wl()
                .append(rd.entries())
                .expect("append");
        }
        if let Some(hs) = rd.hs() {
            r.node.mut_store().wl().set_hardstate(hs.clone());
        }
        Self::route(&mut self.outbox, g, rd.take_persisted_messages());
        let mut light = r.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            r.node.mut_store().wl().mut_hard_state().set_commit(commit);
        }
        Self::route(&mut self.outbox, g, light.take_messages());
        let committed = light.take_committed_entries();
        Self::apply(r, committed);
        r.node.advance_apply();
    }

    fn leaders(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.node.raft.state == StateRole::Leader)
            .count()
    }
}

/// Three brokers, each holding one replica of every group, each driven by
/// its own task on the current executor.
pub struct Cluster {
    pub brokers: Vec<Rc<RefCell<Broker>>>,
    inboxes: Vec<mpsc::UnboundedSender<Input>>,
    pub traffic: Rc<Traffic>,
    heartbeat: Duration,
}

impl Cluster {
    pub async fn start(groups: u32, heartbeat: Duration) -> Cluster {
        let traffic = Rc::new(Traffic::default());
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..=BROKERS {
            let (tx, rx) = mpsc::unbounded::<Input>();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let mut brokers = Vec::new();
        for id in 1..=BROKERS {
            let b = Rc::new(RefCell::new(Broker::new(
                id,
                groups,
                senders.clone(),
                traffic.clone(),
            )));
            if id == 1 {
                for r in &mut b.borrow_mut().replicas {
                    r.node.campaign().expect("campaign");
                }
                let all: Vec<u32> = (0..groups).collect();
                let mut bm = b.borrow_mut();
                for g in all {
                    bm.touch(g);
                }
                bm.flush();
            }
            let mut rx = receivers[id as usize].take().expect("inbox");
            let driver = b.clone();
            glommio::spawn_local(async move {
                while let Some(first) = rx.next().await {
                    let mut b = driver.borrow_mut();
                    b.handle(first);
                    while let Ok(more) = rx.try_recv() {
                        b.handle(more);
                    }
                    b.flush();
                }
            })
            .detach();
            let tick = senders[id as usize].clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(heartbeat).await;
                    if tick.unbounded_send(Input::Tick).is_err() {
                        break;
                    }
                }
            })
            .detach();
            brokers.push(b);
        }
        let c = Cluster {
            brokers,
            inboxes: senders,
            traffic,
            heartbeat,
        };
        let t0 = Instant::now();
        while c.brokers[0].borrow().leaders() < groups as usize {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "elections did not finish"
            );
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // Let the new leaders' empty entries commit everywhere.
        glommio::timer::sleep(heartbeat * 4).await;
        c
    }

    /// Proposes `data` to group `g` on broker 1 (its leader) and waits
    /// until broker 1 sees it committed (and applied).
    pub async fn propose(&self, group: u32, data: Vec<u8>) {
        let (done, rx) = oneshot::channel();
        self.inboxes[1]
            .unbounded_send(Input::Propose { group, data, done })
            .expect("broker 1 inbox");
        rx.await.expect("proposal committed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for tx in &self.inboxes {
            tx.close_channel();
        }
    }
}

/// (a) one proposal at a time to group 0; wall time until committed.
pub struct Commit {
    cluster: Cluster,
}

impl Commit {
    pub async fn setup() -> Commit {
        Commit {
            cluster: Cluster::start(1, Duration::from_millis(50)).await,
        }
    }
}

impl Scenario for Commit {
    async fn run(&self, iters: u64) -> Duration {
        let t0 = Instant::now();
        for _ in 0..iters {
            self.cluster.propose(0, vec![7; ENTRY_BYTES]).await;
        }
        t0.elapsed()
    }
}

/// (c) `window` proposals in flight at a time to group 0.
pub struct Pipelined {
    cluster: Cluster,
    window: u64,
}

impl Pipelined {
    pub async fn setup(window: u64) -> Pipelined {
        Pipelined {
            cluster: Cluster::start(1, Duration::from_millis(50)).await,
            window,
        }
    }
}

impl Scenario for Pipelined {
    async fn run(&self, iters: u64) -> Duration {
        let t0 = Instant::now();
        let mut left = iters;
        while left > 0 {
            let n = left.min(self.window);
            let props = (0..n).map(|_| self.cluster.propose(0, vec![7; ENTRY_BYTES]));
            futures::future::join_all(props).await;
            left -= n;
        }
        t0.elapsed()
    }
}

/// (b) `groups` idle groups ticked every heartbeat; executor CPU time per
/// heartbeat interval.
pub struct Idle {
    pub cluster: Cluster,
    groups: u32,
}

impl Idle {
    pub async fn setup(groups: u32, heartbeat: Duration) -> Idle {
        Idle {
            cluster: Cluster::start(groups, heartbeat).await,
            groups,
        }
    }
}

impl Scenario for Idle {
    async fn run(&self, rounds: u64) -> Duration {
        let cpu = cpu_over_rounds(rounds, self.cluster.heartbeat).await;
        assert_eq!(
            self.cluster.brokers[0].borrow().leaders(),
            self.groups as usize,
            "leadership lost while idle"
        );
        cpu
    }
}
