//! The controller replica's loop on shard 0, and the RPC server.
//!
//! Lifecycle: [`start`] is called once on shard 0 when the broker runs in
//! cluster mode. It opens the replica from `<data-dir>/controller/` (when
//! this broker is a voter), and spawns on shard 0:
//! - a ticker: every [`TICK`], `tick` the replica, then [`Driver::pump`];
//! - one sender per peer voter: a bounded queue of Raft messages, written
//!   in batches (one frame per batch) over one long-lived connection,
//!   reconnecting after a failure (the failure is reported to Raft);
//! - the RPC accept loop and one task per inbound connection;
//! - this broker's registration, retried until the controller applies it.
//!
//! [`Driver::pump`] is the only place `ready` is called: it persists
//! (fsync), applies, hands messages to the senders, wakes proposals that
//! were applied, and logs brokers joining and controller leader changes.
//! Every task runs on shard 0 and the replica sits in a `RefCell`, never
//! borrowed across an `.await`.

use super::rpc;
use crate::config::{BrokerConfig, ClusterSettings};
use crate::controller::command::{Command, Envelope, Registration};
use crate::controller::file_log::FileLog;
use crate::controller::node::{NodeConfig, ProposeError};
use crate::controller::peer_link::PeerLink;
use crate::controller::state::{ApplyResult, ControllerState, Outcome};
use crate::controller::view;
use crate::controller::wire::{self, ProposeReply, Request, Response, HEADER_BYTES};
use crate::controller::ControllerNode;
use crate::router::ops::AdminError;
use crate::shard::{admin, Shard};
use bytes::BytesMut;
use futures::channel::{mpsc, oneshot};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use raft::eraftpb::{Message, MessageType};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Raft tick: heartbeats every tick, elections after 10-20 ticks of silence.
pub const TICK: Duration = Duration::from_millis(100);
/// How long a starting broker waits to catch up with the controller before
/// it serves clients anyway (from the topic table it had).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// How long a proposal waits to be applied before answering "timed out".
pub const PROPOSE_WAIT: Duration = Duration::from_secs(5);
/// Raft messages queued per peer; beyond it they are dropped (Raft resends).
const OUTBOX_MESSAGES: usize = 4096;
/// Messages per frame to a peer.
const BATCH_MESSAGES: usize = 512;
// How often a broker tells the controller leader it is alive, and how long
// one not heard from stays live (`settings.heartbeat_interval`,
// `settings.session_timeout`: config keys `broker_heartbeat_interval_ms`,
// `broker_session_timeout_ms`). A broker past its session is fenced
// (marked not live: its partitions show no leader and new partitions
// avoid it) by the controller leader; a new leader waits one session
// before fencing anyone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::controller::peer_link::within;

type Waiters = BTreeMap<(u32, u64), Vec<oneshot::Sender<ApplyResult>>>;

pub struct Driver {
    settings: ClusterSettings,
    /// This broker's replica; None when it is not a voter.
    node: Option<RefCell<ControllerNode<FileLog>>>,
    outboxes: BTreeMap<u32, RefCell<mpsc::Sender<Message>>>,
    waiters: RefCell<Waiters>,
    last_leader: Cell<Option<u64>>,
    /// This broker's next request number: starts at the wall clock in µs,
    /// so it keeps growing across restarts (the controller's sessions
    /// refuse a seq at or below the last one applied).
    next_seq: Cell<u64>,
    max_frame_bytes: usize,
    idle_timeout: Duration,
    partial_frame_timeout: Duration,
    rpc_connections: Cell<usize>,
    max_rpc_connections: usize,
    /// This process's incarnation (registered; sent with each heartbeat).
    incarnation: u64,
    /// Leader only: when each broker (and incarnation) was last heard from.
    /// Soft state, not in the log: a new leader starts it afresh.
    last_heard: RefCell<BTreeMap<u32, (u64, Instant)>>,
    /// When this replica last became leader (None: not leader).
    leader_since: Cell<Option<Instant>>,
    /// Where heartbeats go: the last leader hint.
    heartbeat_to: Cell<Option<u32>>,
    /// Shard 0, once it has opened its partitions ([`Driver::attach`]).
    shard: RefCell<Weak<Shard>>,
    /// The controller log index of the table this broker serves.
    published: Cell<u64>,
    /// Wakes the publisher (capacity 1: a wake-up pending is enough).
    wake: RefCell<Option<mpsc::Sender<()>>>,
    /// Not a voter: the latest state fetched from a voter.
    fetched: RefCell<Option<ControllerState>>,
    /// Held by each of this broker's requests ([`Driver::request`]) from
    /// its first proposal to its answer: the controller's sessions keep
    /// one request per origin (a later seq applied first refuses an
    /// earlier one as stale), so this broker's registration and its
    /// clients' admin requests go one at a time.
    one_request: Rc<futures::lock::Mutex<()>>,
}

/// What this broker announces when it registers.
pub struct Announce {
    pub shards: u16,
    pub kafka_addr: String,
    pub native_addr: String,
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

/// Start the cluster side of this broker on the current executor (shard 0).
pub fn start(
    settings: ClusterSettings,
    config: &BrokerConfig,
    listener: std::net::TcpListener,
    announce: Announce,
) -> Result<Rc<Driver>, String> {
    let node = if settings.is_voter() {
        let dir = config.data_dir.join("controller");
        let log = FileLog::new(&dir).map_err(|e| e.to_string())?;
        let voters: Vec<u64> = settings.voters.iter().map(|(id, _)| *id as u64).collect();
        let cfg = NodeConfig::new(settings.node_id as u64, voters);
        let node = ControllerNode::open(&cfg, log).map_err(|e| e.to_string())?;
        info!(
            node = settings.node_id,
            applied = node.state().applied_index,
            snapshot = node.snapshot_index(),
            "controller replica opened"
        );
        Some(RefCell::new(node))
    } else {
        None
    };
    let mut outboxes = BTreeMap::new();
    let mut receivers = Vec::new();
    if node.is_some() {
        for (id, addr) in &settings.voters {
            if *id != settings.node_id {
                let (tx, rx) = mpsc::channel(OUTBOX_MESSAGES);
                outboxes.insert(*id, RefCell::new(tx));
                receivers.push((*id, addr.clone(), rx));
            }
        }
    }
    let driver = Rc::new(Driver {
        settings: settings.clone(),
        node,
        outboxes,
        waiters: RefCell::new(BTreeMap::new()),
        last_leader: Cell::new(None),
        next_seq: Cell::new(unix_micros()),
        max_frame_bytes: config.max_request_bytes,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        partial_frame_timeout: Duration::from_millis(config.partial_frame_timeout_ms),
        rpc_connections: Cell::new(0),
        max_rpc_connections: config.max_connections_per_shard,
        incarnation: unix_micros() ^ ((std::process::id() as u64) << 40),
        last_heard: RefCell::new(BTreeMap::new()),
        leader_since: Cell::new(None),
        heartbeat_to: Cell::new(None),
        shard: RefCell::new(Weak::new()),
        published: Cell::new(0),
        wake: RefCell::new(None),
        fetched: RefCell::new(None),
        one_request: Rc::new(futures::lock::Mutex::new(())),
    });
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // SAFETY: a bound, listening TCP socket whose ownership moves into
    // glommio's listener here.
    let listener = unsafe {
        use std::os::fd::{FromRawFd, IntoRawFd};
        TcpListener::from_raw_fd(listener.into_raw_fd())
    };
    info!(%local, node = settings.node_id, "listening for brokers (rpc)");
    glommio::spawn_local(driver.clone().accept_loop(listener)).detach();
    if driver.node.is_some() {
        glommio::spawn_local(driver.clone().ticker()).detach();
        for (id, addr, rx) in receivers {
            glommio::spawn_local(driver.clone().peer_sender(id, addr, rx)).detach();
        }
    }
    let reg = Registration {
        id: settings.node_id,
        incarnation: driver.incarnation,
        shards: announce.shards,
        kafka_addr: announce.kafka_addr,
        native_addr: announce.native_addr,
        rpc_addr: settings.rpc_listen.clone(),
    };
    glommio::spawn_local(driver.clone().register(reg)).detach();
    glommio::spawn_local(driver.clone().heartbeats()).detach();
    Ok(driver)
}

impl Driver {
    fn node(&self) -> Option<std::cell::RefMut<'_, ControllerNode<FileLog>>> {
        self.node.as_ref().map(|n| n.borrow_mut())
    }

    fn next_envelope(&self, command: Command) -> Envelope {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        Envelope {
            origin: self.settings.node_id,
            seq,
            command,
        }
    }

    /// Persist, apply and send what the replica produced.
    pub fn pump(&self) {
        let Some(mut node) = self.node() else {
            return;
        };
        let out = match node.ready() {
            Ok(out) => out,
            Err(e) => {
                // The replica's storage failed: it must not go on (Raft's
                // promises rest on it). The panic hook exits the process.
                error!(error = %e, "controller storage failed");
                panic!("controller storage failed: {e}");
            }
        };
        let leader = node.leader_id();
        let term = node.term();
        let is_leader = node.is_leader();
        drop(node);
        match (is_leader, self.leader_since.get()) {
            (true, None) => {
                self.leader_since.set(Some(Instant::now()));
                self.last_heard.borrow_mut().clear();
            }
            (false, Some(_)) => self.leader_since.set(None),
            _ => {}
        }
        if leader != self.last_leader.get() {
            self.last_leader.set(leader);
            match leader {
                Some(l) => info!(leader = l, term, "controller leader changed"),
                None => info!(term, "controller has no leader"),
            }
        }
        for m in out.messages {
            let Some(outbox) = self.outboxes.get(&(m.to as u32)) else {
                continue;
            };
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let to = m.to;
            if outbox.borrow_mut().try_send(m).is_err() && is_snapshot {
                if let Some(mut n) = self.node() {
                    n.report_snapshot(to, false);
                }
            }
        }
        if out.applied.is_empty() {
            return;
        }
        self.wake_publisher();
        let mut waiters = self.waiters.borrow_mut();
        for a in out.applied {
            if !a.result.duplicate {
                match &a.command {
                    Command::RegisterBroker(r) => info!(
                        broker = r.id,
                        kafka = %r.kafka_addr,
                        native = %r.native_addr,
                        rpc = %r.rpc_addr,
                        shards = r.shards,
                        "broker joined the cluster"
                    ),
                    Command::SetBrokerLive {
                        id, live: false, ..
                    } => {
                        info!(broker = id, "broker left the cluster (fenced)")
                    }
                    Command::CreateTopic {
                        name, partitions, ..
                    } if a.result.outcome == Outcome::Done => {
                        info!(topic = %name, partitions, "topic created")
                    }
                    Command::DeleteTopic { name } if a.result.outcome == Outcome::Done => {
                        info!(topic = %name, "topic deleted")
                    }
                    _ => {}
                }
            }
            for w in waiters.remove(&(a.origin, a.seq)).unwrap_or_default() {
                let _ = w.send(a.result);
            }
        }
    }

    /// Shard 0 has opened its partitions: from now on metadata changes go
    /// through the controller ([`super::link`]), and the tables derived
    /// from its state are installed on this broker (by the publisher; a
    /// broker that is not a voter fetches the state from the voters).
    pub fn attach(self: &Rc<Self>, shard: &Rc<Shard>) {
        *self.shard.borrow_mut() = Rc::downgrade(shard);
        shard.link_controller(Rc::new(super::link::Link::new(self.clone())));
        let (tx, rx) = mpsc::channel(1);
        *self.wake.borrow_mut() = Some(tx);
        glommio::spawn_local(self.clone().publisher(rx)).detach();
        if self.node.is_none() {
            glommio::spawn_local(self.clone().state_fetcher()).detach();
        }
        self.wake_publisher();
    }

    /// Wait (up to `max`) until this broker serves a topic table at least
    /// as new as the controller leader's state when asked: the leader's
    /// applied index, from `GetState`. A broker that restarts must not
    /// serve clients from its old table (a topic deleted and created again
    /// meanwhile would be served from the old partition), as a Kafka broker
    /// serves only once it has caught up with the metadata log. A broker
    /// that never had a controller's table does not wait.
    pub async fn catch_up(self: Rc<Self>, max: Duration) {
        // A broker that never served a controller's table has nothing
        // stale to serve (it holds no partitions yet): no wait.
        if self
            .shard()
            .is_none_or(|s| s.topics().controller_index == 0)
        {
            return;
        }
        let started = Instant::now();
        let mut target = None;
        'ask: while started.elapsed() < max {
            for (id, addr) in &self.settings.voters {
                if let Ok(Response::State { leader, state, .. }) =
                    rpc::call(addr, &Request::GetState, Duration::from_secs(1)).await
                {
                    if leader == Some(*id) {
                        target = Some(state.applied_index);
                        if self.node.is_none() {
                            *self.fetched.borrow_mut() = Some(state);
                            self.wake_publisher();
                        }
                        break 'ask;
                    }
                }
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        if let Some(target) = target {
            while self.published.get() < target && started.elapsed() < max {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            if self.published.get() >= target {
                info!(index = target, waited = ?started.elapsed(), "caught up with the controller");
                return;
            }
        }
        warn!(
            waited = ?started.elapsed(),
            "not caught up with the controller (no leader answered, or its state was not \
             installed in time): serving clients from the topic table this broker has"
        );
    }

    pub(super) fn shard(&self) -> Option<Rc<Shard>> {
        self.shard.borrow().upgrade()
    }

    fn wake_publisher(&self) {
        if let Some(tx) = self.wake.borrow_mut().as_mut() {
            let _ = tx.try_send(());
        }
    }

    /// The newest controller state this broker knows.
    fn known_state(&self) -> Option<ControllerState> {
        match self.node() {
            Some(n) => Some(n.state().clone()),
            None => self.fetched.borrow().clone(),
        }
    }

    /// Install the table of each newer controller state on this broker,
    /// one at a time (a burst of applied entries becomes one install).
    async fn publisher(self: Rc<Self>, mut wake: mpsc::Receiver<()>) {
        loop {
            let Some(shard) = self.shard() else {
                return;
            };
            // A broker that is not a voter has no state until its first fetch.
            let state = self.known_state();
            if let Some(state) = state.filter(|s| s.applied_index > self.published.get()) {
                let index = state.applied_index;
                let defaults = shard.config.topic_defaults.clone();
                match admin::install(&shard, |cur| view::table_of(&state, cur, &defaults)).await {
                    Ok(()) => self.published.set(index),
                    Err(e @ AdminError::OtherCluster { .. }) => {
                        // Said once per controller state, not retried: only
                        // a newer state (or an operator) can change it.
                        error!(index, "{e}");
                        self.published.set(index);
                    }
                    Err(e) => {
                        warn!(
                            index,
                            "cannot install the controller's metadata here yet: {e}"
                        );
                        glommio::timer::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
            if wake.next().await.is_none() {
                return;
            }
        }
    }

    /// Not a voter: fetch the controller state from a voter (the leader
    /// the heartbeats found, else each voter in turn) once per heartbeat
    /// interval, and publish it when it is newer.
    async fn state_fetcher(self: Rc<Self>) {
        let mut next_voter = 0;
        loop {
            glommio::timer::sleep(self.settings.heartbeat_interval).await;
            let target = self.heartbeat_to.get().unwrap_or_else(|| {
                next_voter += 1;
                self.settings.voters[next_voter % self.settings.voters.len()].0
            });
            let Some(addr) = self.settings.voter_addr(target).map(str::to_string) else {
                continue;
            };
            if let Ok(Response::State { state, .. }) = rpc::call(
                &addr,
                &Request::GetState,
                self.settings.heartbeat_interval * 2,
            )
            .await
            {
                let newer = self
                    .fetched
                    .borrow()
                    .as_ref()
                    .is_none_or(|s| s.applied_index < state.applied_index);
                if newer {
                    *self.fetched.borrow_mut() = Some(state);
                    self.wake_publisher();
                }
            }
        }
    }

    async fn ticker(self: Rc<Self>) {
        let mut ticks: u64 = 0;
        loop {
            glommio::timer::sleep(TICK).await;
            if let Some(mut n) = self.node() {
                n.tick();
            }
            self.pump();
            ticks += 1;
            if ticks.is_multiple_of(10) {
                self.check_sessions();
            }
        }
    }

    /// Leader only: fence live brokers not heard from within the session
    /// timeout, unfence fenced ones heard from again (same
    /// incarnation; a restarted broker registers anew instead).
    fn check_sessions(self: &Rc<Self>) {
        let Some(since) = self.leader_since.get() else {
            return;
        };
        if since.elapsed() < self.settings.session_timeout {
            return;
        }
        let changes: Vec<Command> = {
            let Some(n) = self.node() else { return };
            let heard = self.last_heard.borrow();
            n.state()
                .brokers
                .values()
                .filter_map(|b| {
                    let recent = heard.get(&b.reg.id).is_some_and(|(inc, at)| {
                        *inc == b.reg.incarnation && at.elapsed() < self.settings.session_timeout
                    });
                    (recent != b.live).then_some(Command::SetBrokerLive {
                        id: b.reg.id,
                        incarnation: b.reg.incarnation,
                        live: recent,
                    })
                })
                .collect()
        };
        for command in changes {
            // No session (origin 0): setting liveness twice is harmless.
            let env = Envelope {
                origin: 0,
                seq: 0,
                command,
            };
            let d = self.clone();
            glommio::spawn_local(async move {
                d.propose(env, false).await;
            })
            .detach();
        }
    }

    fn heard_from(&self, broker: u32, incarnation: u64) -> Result<(), Option<u32>> {
        if self.leader_since.get().is_none() {
            return Err(self.node().and_then(|n| n.leader_id()).map(|l| l as u32));
        }
        self.last_heard
            .borrow_mut()
            .insert(broker, (incarnation, Instant::now()));
        Ok(())
    }

    /// Every broker: tell the controller leader we are alive.
    async fn heartbeats(self: Rc<Self>) {
        let me = self.settings.node_id;
        let mut next_voter = 0;
        loop {
            glommio::timer::sleep(self.settings.heartbeat_interval).await;
            if self.heard_from(me, self.incarnation).is_ok() {
                continue;
            }
            let target = self
                .heartbeat_to
                .get()
                .or_else(|| self.node().and_then(|n| n.leader_id()).map(|l| l as u32))
                .unwrap_or_else(|| {
                    next_voter += 1;
                    self.settings.voters[next_voter % self.settings.voters.len()].0
                });
            let Some(addr) = self.settings.voter_addr(target).map(str::to_string) else {
                continue;
            };
            let beat = Request::Heartbeat {
                broker: me,
                incarnation: self.incarnation,
            };
            match rpc::call(&addr, &beat, self.settings.heartbeat_interval * 2).await {
                Ok(Response::Heartbeat(Ok(()))) => self.heartbeat_to.set(Some(target)),
                Ok(Response::Heartbeat(Err(hint))) => self.heartbeat_to.set(hint),
                _ => self.heartbeat_to.set(None),
            }
        }
    }

    /// Propose `env` here, or (`forward`) at the leader this replica knows.
    pub async fn propose(self: &Rc<Self>, env: Envelope, forward: bool) -> ProposeReply {
        let res = match self.node() {
            Some(mut n) => n.propose(&env),
            None => Err(ProposeError::NotLeader { leader: None }),
        };
        let leader = match res {
            Ok(_) => {
                let (tx, rx) = oneshot::channel();
                self.waiters
                    .borrow_mut()
                    .entry((env.origin, env.seq))
                    .or_default()
                    .push(tx);
                self.pump();
                return match within(PROPOSE_WAIT, rx).await {
                    Some(Ok(result)) => ProposeReply::Applied(result),
                    _ => {
                        self.waiters.borrow_mut().remove(&(env.origin, env.seq));
                        ProposeReply::TimedOut
                    }
                };
            }
            Err(ProposeError::NotLeader { leader }) => leader.map(|l| l as u32),
            Err(ProposeError::TooLarge { .. }) => return ProposeReply::Invalid,
            Err(ProposeError::Dropped(_)) => None,
        };
        let target = match leader {
            Some(l) if forward => self.settings.voter_addr(l).map(str::to_string),
            _ => None,
        };
        let Some(addr) = target else {
            return ProposeReply::NotLeader(leader);
        };
        match rpc::call(
            &addr,
            &Request::Propose(env),
            PROPOSE_WAIT + Duration::from_secs(1),
        )
        .await
        {
            Ok(Response::Proposed(reply)) => reply,
            Ok(_) => ProposeReply::Invalid,
            Err(e) => {
                warn!(error = %e, "forwarding a proposal to the controller leader failed");
                ProposeReply::TimedOut
            }
        }
    }

    /// A request from this broker: tried at every voter in turn (through
    /// this replica first, which forwards to its leader) until one applies it.
    pub async fn request(
        self: &Rc<Self>,
        command: Command,
        budget: Duration,
    ) -> Option<ApplyResult> {
        let lock = self.one_request.clone();
        let _one = lock.lock().await;
        // Numbered once it is this request's turn, so seqs are applied in order.
        let env = self.next_envelope(command);
        // Attempts until `budget` has passed: while a new controller leader
        // is being elected (1-2 s after the old one died) every attempt can
        // fail fast (refused connection, no leader known).
        let started = Instant::now();
        let mut attempt = 0;
        while attempt == 0 || started.elapsed() < budget {
            let reply = if self.node.is_some() && attempt % 2 == 0 {
                self.propose(env.clone(), true).await
            } else {
                let (_, addr) = &self.settings.voters[attempt % self.settings.voters.len()];
                match rpc::call(
                    addr,
                    &Request::Propose(env.clone()),
                    PROPOSE_WAIT + Duration::from_secs(1),
                )
                .await
                {
                    Ok(Response::Proposed(r)) => r,
                    _ => ProposeReply::TimedOut,
                }
            };
            if let ProposeReply::Applied(r) = reply {
                return Some(r);
            }
            attempt += 1;
            glommio::timer::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    async fn register(self: Rc<Self>, reg: Registration) {
        let id = reg.id;
        loop {
            match self
                .request(
                    Command::RegisterBroker(reg.clone()),
                    Duration::from_secs(10),
                )
                .await
            {
                Some(r) if r.outcome == Outcome::Done => {
                    info!(broker = id, "registered with the controller");
                    return;
                }
                Some(r) => {
                    // A stale seq (this broker's clock went back across a
                    // restart) or a refusal: say so and ask again.
                    warn!(broker = id, outcome = ?r.outcome, "registration refused; retried");
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => {}
            }
            warn!(
                broker = id,
                "controller not reachable yet; registration retried"
            );
        }
    }

    async fn peer_sender(self: Rc<Self>, peer: u32, addr: String, mut rx: mpsc::Receiver<Message>) {
        let mut link = PeerLink::new("controller", peer, TICK, WRITE_TIMEOUT);
        while let Some(first) = rx.next().await {
            let mut batch = vec![first];
            while batch.len() < BATCH_MESSAGES {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let snapshots: Vec<u64> = batch
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to)
                .collect();
            let frame = wire::encode_request(0, &Request::Raft(batch));
            let ok = link.send(&addr, &frame).await;
            if let Some(mut n) = self.node() {
                for to in snapshots {
                    n.report_snapshot(to, ok);
                }
                if !ok {
                    n.report_unreachable(peer as u64);
                }
            }
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok(s) => {
                    if self.rpc_connections.get() >= self.max_rpc_connections {
                        warn!("refusing rpc connection: at max_connections_per_shard");
                        continue;
                    }
                    self.rpc_connections.set(self.rpc_connections.get() + 1);
                    let d = self.clone();
                    glommio::spawn_local(async move {
                        let _ = s.set_nodelay(true);
                        let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                        if let Err(why) = d.serve_connection(s).await {
                            warn!(%peer, %why, "rpc connection closed");
                        }
                        d.rpc_connections.set(d.rpc_connections.get() - 1);
                    })
                    .detach();
                }
                Err(e) => {
                    warn!("rpc accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Serve one inbound connection until it closes. Err: why it was closed
    /// by us (bad frame, timeout); a clean close by the peer is Ok.
    async fn serve_connection(self: &Rc<Self>, mut s: TcpStream) -> Result<(), String> {
        loop {
            let mut h = [0u8; HEADER_BYTES];
            match within(self.idle_timeout, s.read_exact(&mut h)).await {
                None => return Err("idle timeout".into()),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(())) => {}
            }
            let header = wire::read_header(&h, self.max_frame_bytes).map_err(|e| e.to_string())?;
            // Charged against the frame limit above, before this allocation.
            let mut body = BytesMut::zeroed(header.body_len);
            match within(self.partial_frame_timeout, s.read_exact(&mut body)).await {
                None => return Err("partial frame timeout".into()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(())) => {}
            }
            let req = wire::decode_request(header.api, body).map_err(|e| e.to_string())?;
            let resp = match req {
                Request::Raft(msgs) => {
                    if let Some(mut n) = self.node() {
                        let me = self.settings.node_id as u64;
                        for m in msgs {
                            // Only messages between voters, addressed to us:
                            // raft-rs would take a higher term from anyone
                            // (a stray or hostile sender could depose the
                            // leader). A message Raft refuses (local type)
                            // is dropped, as a lost one would be.
                            let from_voter = self
                                .settings
                                .voters
                                .iter()
                                .any(|(id, _)| *id as u64 == m.from);
                            if !from_voter || m.to != me || m.from == me {
                                continue;
                            }
                            let _ = n.step(m);
                        }
                    }
                    self.pump();
                    continue;
                }
                Request::Replicate(batch) => {
                    if let Some(shard) = self.shard() {
                        crate::shard::replication::route(&shard, batch);
                    }
                    continue;
                }
                Request::Propose(env) => Response::Proposed(self.propose(env, true).await),
                Request::Heartbeat {
                    broker,
                    incarnation,
                } => Response::Heartbeat(self.heard_from(broker, incarnation)),
                Request::GetState => match self.node() {
                    Some(n) => Response::State {
                        leader: n.leader_id().map(|l| l as u32),
                        term: n.term(),
                        commit: n.commit_index(),
                        state: n.state().clone(),
                    },
                    // Not a voter: the state it last fetched (term and
                    // commit unknown here: 0), and the leader its
                    // heartbeats found.
                    None => match self.fetched.borrow().clone() {
                        Some(state) => Response::State {
                            leader: self.heartbeat_to.get(),
                            term: 0,
                            commit: 0,
                            state,
                        },
                        None => Response::Proposed(ProposeReply::NotLeader(None)),
                    },
                },
            };
            let frame = wire::encode_response(header.correlation_id, &resp);
            match within(WRITE_TIMEOUT, s.write_all(&frame)).await {
                Some(Ok(())) => {}
                _ => return Err("response write failed".into()),
            }
        }
    }
}
