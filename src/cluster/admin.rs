//! The command-line side of the cluster RPC (blocking, std sockets):
//! `shardlog cluster status` asks one broker for its view of the
//! controller state; `shardlog cluster create-topic` proposes a topic
//! through any broker, which forwards it to the controller leader;
//! `shardlog cluster reassign` proposes new replica sets the same way and
//! can wait until the partitions' leaders have carried them out.

use crate::controller::command::{Command, Envelope};
use crate::controller::state::{ControllerState, Outcome, Refusal};
use crate::controller::wire::{self, ProposeReply, Request, Response, HEADER_BYTES};
use crate::protocol::DecodeError;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("bad answer from {addr}: {source}")]
    Decode { addr: String, source: DecodeError },
    #[error("{addr} is not a controller replica (ask a --controller-voters broker)")]
    NotAReplica { addr: String },
    #[error("the controller refused: {0}")]
    Refused(Refusal),
    #[error("no controller leader answered in time; the request may still be applied")]
    NoLeader,
    #[error("unexpected answer from {addr}")]
    Unexpected { addr: String },
}

/// One exchange with the broker at `addr`.
pub fn call(addr: &str, req: &Request, timeout: Duration) -> Result<Response, AdminError> {
    let io = |source| AdminError::Io {
        addr: addr.to_string(),
        source,
    };
    let sa = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::other("no address")))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(&wire::encode_request(1, req)).map_err(io)?;
    let mut h = [0u8; HEADER_BYTES];
    s.read_exact(&mut h).map_err(io)?;
    let decode = |source| AdminError::Decode {
        addr: addr.to_string(),
        source,
    };
    let header = wire::read_header(&h, super::rpc::MAX_RESPONSE_BYTES).map_err(decode)?;
    let mut body = BytesMut::zeroed(header.body_len);
    s.read_exact(&mut body).map_err(io)?;
    wire::decode_response(header.api, body).map_err(decode)
}

/// A broker's view of the controller state.
pub struct View {
    pub leader: Option<u32>,
    pub term: u64,
    pub commit: u64,
    pub state: ControllerState,
}

pub fn view(addr: &str, timeout: Duration) -> Result<View, AdminError> {
    match call(addr, &Request::GetState, timeout)? {
        Response::State {
            leader,
            term,
            commit,
            state,
        } => Ok(View {
            leader,
            term,
            commit,
            state,
        }),
        _ => Err(AdminError::NotAReplica {
            addr: addr.to_string(),
        }),
    }
}

/// `shardlog cluster status`: brokers, the controller leader, partitions
/// led per broker; with `partitions`, every partition's placement.
pub fn render(v: &View, partitions: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "controller leader: {} (term {}, commit index {}, applied {})",
        v.leader.map_or("none".to_string(), |l| l.to_string()),
        v.term,
        v.commit,
        v.state.applied_index
    );
    let mut led: BTreeMap<u32, usize> = BTreeMap::new();
    for t in v.state.topics.values() {
        for p in &t.partitions {
            *led.entry(p.node).or_default() += 1;
        }
    }
    for b in v.state.brokers.values() {
        let _ = writeln!(
            out,
            "broker {}\t{}\tkafka={}\tnative={}\trpc={}\tshards={}\tpartitions_led={}",
            b.reg.id,
            if b.live { "live" } else { "fenced" },
            b.reg.kafka_addr,
            b.reg.native_addr,
            b.reg.rpc_addr,
            b.reg.shards,
            led.get(&b.reg.id).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(out, "topics: {}", v.state.topics.len());
    if partitions {
        for (name, t) in &v.state.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let _ = write!(
                    out,
                    "{name}\t{i}\tleader={}\tshard={}\tleader_epoch={}",
                    p.node, p.shard, p.leader_epoch
                );
                if !p.followers.is_empty() {
                    let _ = write!(out, "\treplicas={}", join(&p.replicas()));
                }
                if !p.target.is_empty() {
                    let target: Vec<u32> = p.target.iter().map(|(n, _)| *n).collect();
                    let _ = write!(out, "\treassigning_to={}", join(&target));
                }
                let _ = writeln!(out);
            }
        }
    }
    out
}

/// Create a topic through the brokers at `addrs` (any broker: it forwards
/// to the controller leader), trying them in turn until `deadline` passes
/// (a controller election takes 1-2 s). A retry that finds the topic
/// created with our id counts as success, so a topic is never created
/// twice and an acknowledged one exists.
pub fn create_topic(
    addrs: &[String],
    name: &str,
    partitions: u32,
    replication_factor: u16,
    config: Vec<(String, String)>,
    timeout: Duration,
    deadline: Duration,
) -> Result<u128, AdminError> {
    let started = std::time::Instant::now();
    let topic_id = rand::random::<u128>();
    let env = Envelope {
        origin: 0,
        seq: 0,
        command: Command::CreateTopic {
            name: name.to_string(),
            topic_id,
            partitions,
            config,
            replication_factor,
        },
    };
    let mut attempt = 0;
    while attempt == 0 || started.elapsed() < deadline {
        let addr = &addrs[attempt % addrs.len()];
        attempt += 1;
        match call(addr, &Request::Propose(env.clone()), timeout) {
            Ok(Response::Proposed(ProposeReply::Applied(r))) => match r.outcome {
                Outcome::Done => return Ok(topic_id),
                Outcome::Refused(Refusal::TopicExists) => {
                    // Ours, committed by an earlier attempt whose answer was lost?
                    let ours = addrs.iter().any(|a| {
                        view(a, timeout).is_ok_and(|v| {
                            v.state.topics.get(name).is_some_and(|t| t.id == topic_id)
                        })
                    });
                    if ours {
                        return Ok(topic_id);
                    }
                    return Err(AdminError::Refused(Refusal::TopicExists));
                }
                Outcome::Refused(r) => return Err(AdminError::Refused(r)),
                Outcome::ProducerIds { .. } => {
                    return Err(AdminError::Unexpected { addr: addr.clone() })
                }
            },
            Ok(_) | Err(AdminError::Io { .. }) => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(AdminError::NoLeader)
}

fn join(nodes: &[u32]) -> String {
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Propose one command through the brokers at `addrs` in turn until one
/// reaches the controller leader or `deadline` passes. For commands that
/// are idempotent as state changes (a reassignment's target), a retry
/// after a lost answer does no harm.
fn propose(
    addrs: &[String],
    command: Command,
    timeout: Duration,
    deadline: Duration,
) -> Result<(), AdminError> {
    let started = std::time::Instant::now();
    let env = Envelope {
        origin: 0,
        seq: 0,
        command,
    };
    let mut attempt = 0;
    while attempt == 0 || started.elapsed() < deadline {
        let addr = &addrs[attempt % addrs.len()];
        attempt += 1;
        match call(addr, &Request::Propose(env.clone()), timeout) {
            Ok(Response::Proposed(ProposeReply::Applied(r))) => {
                return match r.outcome {
                    Outcome::Done => Ok(()),
                    Outcome::Refused(r) => Err(AdminError::Refused(r)),
                    Outcome::ProducerIds { .. } => {
                        Err(AdminError::Unexpected { addr: addr.clone() })
                    }
                }
            }
            Ok(_) | Err(AdminError::Io { .. }) => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(AdminError::NoLeader)
}

/// Start moving `partitions` of `topic` (all of them when empty) to the
/// replica set `replicas`. The controller records each target; each
/// partition's Raft leader adds the new replicas as learners, promotes
/// them once caught up, removes the others, and reports completion.
pub fn reassign(
    addrs: &[String],
    topic: &str,
    partitions: &[u32],
    replicas: &[u32],
    timeout: Duration,
    deadline: Duration,
) -> Result<Vec<u32>, AdminError> {
    let all: Vec<u32> = if partitions.is_empty() {
        let v = addrs
            .iter()
            .find_map(|a| view(a, timeout).ok())
            .ok_or(AdminError::NoLeader)?;
        let t = v
            .state
            .topics
            .get(topic)
            .ok_or(AdminError::Refused(Refusal::UnknownTopic))?;
        (0..t.partitions.len() as u32).collect()
    } else {
        partitions.to_vec()
    };
    for p in &all {
        propose(
            addrs,
            Command::ReassignPartition {
                name: topic.to_string(),
                partition: *p,
                replicas: replicas.to_vec(),
            },
            timeout,
            deadline,
        )?;
    }
    Ok(all)
}

/// Partitions of `topic` among `partitions` whose reassignment is still in
/// progress, as the broker at `addr` sees the controller state.
pub fn reassigning(
    addr: &str,
    topic: &str,
    partitions: &[u32],
    timeout: Duration,
) -> Result<Vec<u32>, AdminError> {
    let v = view(addr, timeout)?;
    let t = v
        .state
        .topics
        .get(topic)
        .ok_or(AdminError::Refused(Refusal::UnknownTopic))?;
    Ok(partitions
        .iter()
        .copied()
        .filter(|p| {
            t.partitions
                .get(*p as usize)
                .is_some_and(|a| !a.target.is_empty())
        })
        .collect())
}
