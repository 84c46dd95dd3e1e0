//! openraft 0.10 (alpha) on glommio: a `RaftTypeConfig`, an in-memory log
//! store and state machine, and an in-process network, for groups of three
//! nodes on one executor.
//!
//! Each node is a full openraft `Raft`: its core task, a state-machine
//! worker, and per-follower replication tasks, all spawned through
//! `GlommioRuntime`. The network calls the target node's `Raft` handle
//! directly, which is openraft's own in-memory transport pattern: the call
//! travels the target's API channel to its core task and back by oneshot.

use super::glommio_rt::GlommioRuntime;
use super::{cpu_over_rounds, Scenario, ENTRY_BYTES};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    Config, EntryPayload, OptionalSend, RaftLogReader, RaftNetworkFactory, RaftNetworkV2,
    RaftSnapshotBuilder, ServerState, SnapshotPolicy,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An entry's application payload: opaque bytes.
#[derive(Clone, Debug)]
pub struct Payload(pub Vec<u8>);

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The spike's types: byte payloads, unit responses, no node metadata,
    /// the glommio runtime.
    pub Cfg:
        D = Payload,
        R = (),
        Node = (),
        AsyncRuntime = GlommioRuntime,
);

pub type Raft = openraft::Raft<Cfg, StateMachine>;

// ---- log store ----

#[derive(Default)]
struct LogInner {
    vote: Option<VoteOf<Cfg>>,
    committed: Option<LogIdOf<Cfg>>,
    last_purged: Option<LogIdOf<Cfg>>,
    log: BTreeMap<u64, <Cfg as openraft::RaftTypeConfig>::Entry>,
}

/// The Raft log in memory. In the broker this would be the partition's
/// segment log itself (see docs/replication.md).
#[derive(Clone, Default)]
pub struct LogStore(Rc<RefCell<LogInner>>);

impl RaftLogReader<Cfg> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<<Cfg as openraft::RaftTypeConfig>::Entry>, io::Error> {
        Ok(self
            .0
            .borrow()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<Cfg>>, io::Error> {
        Ok(self.0.borrow().vote)
    }
}

impl RaftLogStorage<Cfg> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Cfg>, io::Error> {
        let inner = self.0.borrow();
        let last = inner.log.values().next_back().map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Cfg>) -> Result<(), io::Error> {
        self.0.borrow_mut().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<Cfg>>) -> Result<(), io::Error> {
        self.0.borrow_mut().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<Cfg>>, io::Error> {
        Ok(self.0.borrow().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Cfg>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = <Cfg as openraft::RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.0.borrow_mut();
            for e in entries {
                inner.log.insert(e.index(), e);
            }
        }
        // In memory, "flushed" is immediate. The broker would call this from
        // the partition's flusher after the fdatasync (group commit).
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<Cfg>>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index() + 1);
        let mut inner = self.0.borrow_mut();
        let _ = inner.log.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<Cfg>) -> Result<(), io::Error> {
        let mut inner = self.0.borrow_mut();
        let keep = inner.log.split_off(&(log_id.index() + 1));
        inner.log = keep;
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

// ---- state machine ----

#[derive(Default)]
struct SmInner {
    last_applied: Option<LogIdOf<Cfg>>,
    membership: StoredMembershipOf<Cfg>,
    applied_entries: u64,
    snapshot: Option<(SnapshotMetaOf<Cfg>, Vec<u8>)>,
}

/// Counts applied entries; its snapshot is that count.
#[derive(Clone, Default)]
pub struct StateMachine(Rc<RefCell<SmInner>>);

impl RaftSnapshotBuilder<Cfg> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Cfg, Cursor<Vec<u8>>>, io::Error> {
        let mut inner = self.0.borrow_mut();
        let data = inner.applied_entries.to_le_bytes().to_vec();
        let meta = SnapshotMetaOf::<Cfg> {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
        };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<Cfg, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<Cfg> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Cfg>>, StoredMembershipOf<Cfg>), io::Error> {
        let inner = self.0.borrow();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Cfg>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            {
                let mut inner = self.0.borrow_mut();
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(_) => inner.applied_entries += 1,
                    EntryPayload::Membership(ref m) => {
                        inner.membership =
                            StoredMembershipOf::<Cfg>::new(Some(entry.log_id), m.clone());
                    }
                }
            }
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Cfg>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let count = u64::from_le_bytes(
            data.as_slice()
                .try_into()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "snapshot length"))?,
        );
        let mut inner = self.0.borrow_mut();
        inner.applied_entries = count;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Cfg, Cursor<Vec<u8>>>>, io::Error> {
        Ok(self
            .0
            .borrow()
            .snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<Cfg, _> {
                meta: meta.clone(),
                snapshot: Cursor::new(data.clone()),
            }))
    }
}

// ---- network ----

/// The three nodes of one group, by id; filled once all are built.
type Peers = Rc<RefCell<BTreeMap<u64, Raft>>>;

pub struct Network {
    peers: Peers,
}

pub struct Connection {
    target: u64,
    peers: Peers,
}

impl Connection {
    fn peer(&self) -> Result<Raft, Unreachable<Cfg>> {
        self.peers
            .borrow()
            .get(&self.target)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("no node {}", self.target)))
    }
}

impl RaftNetworkFactory<Cfg> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, _node: &()) -> Connection {
        Connection {
            target,
            peers: self.peers.clone(),
        }
    }
}

impl RaftNetworkV2<Cfg> for Connection {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Cfg>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Cfg>, RPCError<Cfg>> {
        if rpc.entries.is_empty() {
            super::count_heartbeat();
        }
        let peer = self.peer()?;
        peer.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Cfg>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Cfg>, RPCError<Cfg>> {
        let peer = self.peer()?;
        peer.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Cfg>,
        snapshot: SnapshotOf<Cfg, Cursor<Vec<u8>>>,
        _cancel: impl std::future::Future<Output = openraft::error::ReplicationClosed>
            + OptionalSend
            + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<Cfg>, StreamingError<Cfg>> {
        let peer = self.peer()?;
        peer.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

// ---- groups ----

/// openraft's settings for the spike: heartbeat every `heartbeat`, election
/// timeouts 10–20 heartbeats, no automatic snapshots.
pub fn config(heartbeat: Duration) -> Arc<Config> {
    let hb = heartbeat.as_millis() as u64;
    let c = Config {
        cluster_name: "spike".into(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 10,
        election_timeout_max: hb * 20,
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    Arc::new(c.validate().expect("valid openraft config"))
}

/// One group: three nodes, node 1 initialised and elected leader.
pub struct Group {
    pub nodes: Vec<Raft>,
}

impl Group {
    pub async fn start(config: Arc<Config>) -> Group {
        let peers: Peers = Rc::default();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let raft = Raft::new(
                id,
                config.clone(),
                Network {
                    peers: peers.clone(),
                },
                LogStore::default(),
                StateMachine::default(),
            )
            .await
            .expect("start openraft node");
            peers.borrow_mut().insert(id, raft.clone());
            nodes.push(raft);
        }
        let members: BTreeSet<u64> = (1..=3).collect();
        nodes[0].initialize(members).await.expect("initialize");
        nodes[0].trigger().elect(false).await.expect("elect");
        Group { nodes }
    }

    /// Waits until node 1 leads and accepts writes: a new openraft leader
    /// refuses `client_write` (`ForwardToLeader`, reason `LeaseExpired`)
    /// until a quorum has acknowledged it, so this retries one write.
    pub async fn wait_leader(&self) {
        self.nodes[0]
            .wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "node 1 leads")
            .await
            .expect("node 1 became leader");
        let t0 = Instant::now();
        while self
            .leader()
            .client_write(Payload(vec![0; ENTRY_BYTES]))
            .await
            .is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "leader never writable"
            );
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn leader(&self) -> &Raft {
        &self.nodes[0]
    }

    pub async fn shutdown(&self) {
        for n in &self.nodes {
            let _ = n.shutdown().await;
        }
    }
}

/// (a) one proposal at a time; criterion sees the wall time from
/// `client_write` to its return (committed on a majority and applied on the
/// leader).
pub struct Commit {
    group: Group,
}

impl Commit {
    pub async fn setup() -> Commit {
        let group = Group::start(config(Duration::from_millis(50))).await;
        group.wait_leader().await;
        Commit { group }
    }
}

impl Scenario for Commit {
    async fn run(&self, iters: u64) -> Duration {
        let t0 = Instant::now();
        for _ in 0..iters {
            self.group
                .leader()
                .client_write(Payload(vec![7; ENTRY_BYTES]))
                .await
                .expect("client_write");
        }
        t0.elapsed()
    }
}

/// (c) pipelined proposals: `window` concurrent `client_write`s at a time,
/// wall time until all `iters` are committed.
pub struct Pipelined {
    group: Group,
    window: u64,
}

impl Pipelined {
    pub async fn setup(window: u64) -> Pipelined {
        let group = Group::start(config(Duration::from_millis(50))).await;
        group.wait_leader().await;
        Pipelined { group, window }
    }
}

impl Scenario for Pipelined {
    async fn run(&self, iters: u64) -> Duration {
        let t0 = Instant::now();
        let mut left = iters;
        while left > 0 {
            let n = left.min(self.window);
            let writes = (0..n).map(|_| {
                self.group
                    .leader()
                    .client_write(Payload(vec![7; ENTRY_BYTES]))
            });
            for r in futures::future::join_all(writes).await {
                r.expect("client_write");
            }
            left -= n;
        }
        t0.elapsed()
    }
}

/// (b) `groups` idle groups with timer-driven heartbeats; criterion sees
/// the executor's CPU time per heartbeat interval (all groups together).
pub struct Idle {
    groups: Vec<Group>,
    heartbeat: Duration,
}

impl Idle {
    pub async fn setup(groups: usize, heartbeat: Duration) -> Idle {
        let config = config(heartbeat);
        let mut all = Vec::with_capacity(groups);
        for _ in 0..groups {
            all.push(Group::start(config.clone()).await);
        }
        for g in &all {
            g.wait_leader().await;
        }
        // Let the elections' blank entries and membership settle.
        glommio::timer::sleep(heartbeat * 4).await;
        Idle {
            groups: all,
            heartbeat,
        }
    }
}

impl Scenario for Idle {
    async fn run(&self, rounds: u64) -> Duration {
        let cpu = cpu_over_rounds(rounds, self.heartbeat).await;
        // Every group must still have its leader: an election storm would
        // be measured as "idle" cost otherwise.
        for g in &self.groups {
            assert!(g.leader().is_leader(), "leadership lost while idle");
        }
        cpu
    }
}
