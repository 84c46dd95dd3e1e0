//! The commands of the controller's replicated log, and their byte layout
//! (docs/replication.md, "Controller commands", repeats it).
//!
//! A command travels inside an [`Envelope`] that names who asked for it
//! (`origin`, a broker id) and that broker's request number (`seq`). The
//! state machine remembers the last `seq` applied per origin, so a request
//! retried after a lost answer (a controller leader change, a timeout) is
//! applied once however often it is committed.
//!
//! ```text
//! envelope  u8 version (=2) | u32 origin | u64 seq | u8 kind | body
//! strings   u16 length | UTF-8;  lists: u32 count | items;  all integers little-endian
//! kind 1 RegisterBroker     u32 id | u64 incarnation | u16 shards | str kafka_addr | str native_addr | str rpc_addr
//! kind 2 SetBrokerLive      u32 id | u64 incarnation | u8 live (0/1)
//! kind 3 CreateTopic        str name | u64 topic_id_hi | u64 topic_id_lo | u32 partitions | u32 n | n x (str key | str value)
//!                           | u16 replication_factor   (version 2; version 1 has none and means 1)
//! kind 4 DeleteTopic        str name
//! kind 5 CreatePartitions   str name | u32 total
//! kind 6 AlterTopicConfig   str name | u32 n | n x (str key | str value)   (replaces the whole config)
//! kind 7 AllocateProducerIds u32 count
//! kind 8 MovePartition      str name | u32 partition | u32 node | u16 shard
//! kind 9 ReassignPartition  str name | u32 partition | u8 n | n x u32 node   (the target replica set)
//! kind 10 CompleteReassignment str name | u32 partition | u32 leader | u8 n | n x u32 node
//! ```
//!
//! Decoding is for bytes that came off a disk or a socket: every length is
//! checked against the bytes present before anything is allocated, and bad
//! bytes give a [`DecodeError`], never a panic.

use crate::protocol::codec::{put_str, Reader};
use crate::protocol::DecodeError;
use bytes::{BufMut, BytesMut};

/// Version byte of the envelope; bumped when a layout changes. Entries
/// written at version 1 (before replication factors) are still read.
pub const COMMAND_VERSION: u8 = 2;
/// Largest encoded command accepted for proposal (a topic config is a few
/// KiB at most; this bounds what one log entry can cost every replica).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// Largest partition count a topic may have.
pub const MAX_PARTITIONS: u32 = 100_000;

/// Who asked for a command, and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The broker that proposed it (0: no session, never deduplicated).
    pub origin: u32,
    /// That broker's request number, growing per broker incarnation; 0 with
    /// origin 0.
    pub seq: u64,
    pub command: Command,
}

/// A broker as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: u32,
    /// Differs on every start of the broker process.
    pub incarnation: u64,
    pub shards: u16,
    /// What Kafka Metadata advertises for this broker (`host:port`).
    pub kafka_addr: String,
    pub native_addr: String,
    pub rpc_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    RegisterBroker(Registration),
    /// Fence (`live = false`) or unfence a broker; ignored unless
    /// `incarnation` is the registered one, so a late fence cannot take
    /// down a broker that has since restarted.
    SetBrokerLive {
        id: u32,
        incarnation: u64,
        live: bool,
    },
    CreateTopic {
        name: String,
        topic_id: u128,
        partitions: u32,
        config: Vec<(String, String)>,
        /// Replicas per partition (leader included), ≥ 1.
        replication_factor: u16,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: u32,
    },
    AlterTopicConfig {
        name: String,
        config: Vec<(String, String)>,
    },
    AllocateProducerIds {
        count: u32,
    },
    MovePartition {
        name: String,
        partition: u32,
        node: u32,
        shard: u16,
    },
    /// Start moving a replicated partition's replicas to `replicas` (an
    /// operator's `shardlog cluster reassign`): brokers in the target gain
    /// a replica that joins its Raft group as a learner; the group's leader
    /// changes the group's voters once they caught up, then reports
    /// [`Command::CompleteReassignment`]. A new target replaces one in
    /// progress; the current set as target cancels it.
    ReassignPartition {
        name: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// The partition's Raft group now has exactly `replicas` as voters
    /// (reported by its leader `leader`): they become the partition's
    /// replicas, and brokers outside them drop their copy. Ignored unless
    /// it matches the target in progress.
    CompleteReassignment {
        name: String,
        partition: u32,
        leader: u32,
        replicas: Vec<u32>,
    },
}

/// Most replicas a reassignment may name.
pub const MAX_REPLICAS: usize = 32;

fn put_nodes(b: &mut BytesMut, nodes: &[u32]) {
    assert!(
        nodes.len() <= MAX_REPLICAS,
        "at most {MAX_REPLICAS} replicas"
    );
    b.put_u8(nodes.len() as u8);
    for n in nodes {
        b.put_u32_le(*n);
    }
}

fn get_nodes(r: &mut Reader) -> Result<Vec<u32>, DecodeError> {
    let n = r.u8("replica count")? as usize;
    if n > MAX_REPLICAS {
        return Err(DecodeError::Invalid {
            what: "replica count",
            detail: format!("{n}, at most {MAX_REPLICAS}"),
        });
    }
    (0..n).map(|_| r.u32("replica")).collect()
}

impl Registration {
    pub fn encode_into(&self, b: &mut BytesMut) {
        b.put_u32_le(self.id);
        b.put_u64_le(self.incarnation);
        b.put_u16_le(self.shards);
        put_str(b, &self.kafka_addr);
        put_str(b, &self.native_addr);
        put_str(b, &self.rpc_addr);
    }

    pub fn decode_from(r: &mut Reader) -> Result<Registration, DecodeError> {
        Ok(Registration {
            id: r.u32("broker id")?,
            incarnation: r.u64("incarnation")?,
            shards: r.u16("shards")?,
            kafka_addr: r.string("kafka addr")?,
            native_addr: r.string("native addr")?,
            rpc_addr: r.string("rpc addr")?,
        })
    }
}

/// A 128-bit id as two u64s, high half first.
pub(crate) fn put_u128(b: &mut BytesMut, v: u128) {
    b.put_u64_le((v >> 64) as u64);
    b.put_u64_le(v as u64);
}

pub(crate) fn get_u128(r: &mut Reader, what: &'static str) -> Result<u128, DecodeError> {
    let hi = r.u64(what)? as u128;
    Ok((hi << 64) | r.u64(what)? as u128)
}

pub(crate) fn put_config(b: &mut BytesMut, config: &[(String, String)]) {
    b.put_u32_le(config.len() as u32);
    for (k, v) in config {
        put_str(b, k);
        put_str(b, v);
    }
}

pub(crate) fn get_config(r: &mut Reader) -> Result<Vec<(String, String)>, DecodeError> {
    let n = r.count("config entries", 4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((r.string("config key")?, r.string("config value")?));
    }
    Ok(out)
}

impl Envelope {
    pub fn encode(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(COMMAND_VERSION);
        b.put_u32_le(self.origin);
        b.put_u64_le(self.seq);
        match &self.command {
            Command::RegisterBroker(r) => {
                b.put_u8(1);
                r.encode_into(&mut b);
            }
            Command::SetBrokerLive {
                id,
                incarnation,
                live,
            } => {
                b.put_u8(2);
                b.put_u32_le(*id);
                b.put_u64_le(*incarnation);
                b.put_u8(*live as u8);
            }
            Command::CreateTopic {
                name,
                topic_id,
                partitions,
                config,
                replication_factor,
            } => {
                b.put_u8(3);
                put_str(&mut b, name);
                put_u128(&mut b, *topic_id);
                b.put_u32_le(*partitions);
                put_config(&mut b, config);
                b.put_u16_le(*replication_factor);
            }
            Command::DeleteTopic { name } => {
                b.put_u8(4);
                put_str(&mut b, name);
            }
            Command::CreatePartitions { name, total } => {
                b.put_u8(5);
                put_str(&mut b, name);
                b.put_u32_le(*total);
            }
            Command::AlterTopicConfig { name, config } => {
                b.put_u8(6);
                put_str(&mut b, name);
                put_config(&mut b, config);
            }
            Command::AllocateProducerIds { count } => {
                b.put_u8(7);
                b.put_u32_le(*count);
            }
            Command::MovePartition {
                name,
                partition,
                node,
                shard,
            } => {
                b.put_u8(8);
                put_str(&mut b, name);
                b.put_u32_le(*partition);
                b.put_u32_le(*node);
                b.put_u16_le(*shard);
            }
            Command::ReassignPartition {
                name,
                partition,
                replicas,
            } => {
                b.put_u8(9);
                put_str(&mut b, name);
                b.put_u32_le(*partition);
                put_nodes(&mut b, replicas);
            }
            Command::CompleteReassignment {
                name,
                partition,
                leader,
                replicas,
            } => {
                b.put_u8(10);
                put_str(&mut b, name);
                b.put_u32_le(*partition);
                b.put_u32_le(*leader);
                put_nodes(&mut b, replicas);
            }
        }
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(DecodeError::Invalid {
                what: "controller command",
                detail: format!("{} bytes, at most {MAX_COMMAND_BYTES}", bytes.len()),
            });
        }
        let mut r = Reader::new(BytesMut::from(bytes));
        let version = r.u8("command version")?;
        if version != COMMAND_VERSION && version != 1 {
            return Err(DecodeError::Invalid {
                what: "command version",
                detail: format!("{version}, this broker reads 1 and {COMMAND_VERSION}"),
            });
        }
        let origin = r.u32("origin")?;
        let seq = r.u64("seq")?;
        let command = match r.u8("command kind")? {
            1 => Command::RegisterBroker(Registration::decode_from(&mut r)?),
            2 => Command::SetBrokerLive {
                id: r.u32("broker id")?,
                incarnation: r.u64("incarnation")?,
                live: match r.u8("live")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(DecodeError::Invalid {
                            what: "live",
                            detail: format!("{v}"),
                        })
                    }
                },
            },
            3 => Command::CreateTopic {
                name: r.string("topic")?,
                topic_id: get_u128(&mut r, "topic id")?,
                partitions: r.u32("partitions")?,
                config: get_config(&mut r)?,
                replication_factor: if version >= 2 {
                    r.u16("replication factor")?
                } else {
                    1
                },
            },
            4 => Command::DeleteTopic {
                name: r.string("topic")?,
            },
            5 => Command::CreatePartitions {
                name: r.string("topic")?,
                total: r.u32("partitions")?,
            },
            6 => Command::AlterTopicConfig {
                name: r.string("topic")?,
                config: get_config(&mut r)?,
            },
            7 => Command::AllocateProducerIds {
                count: r.u32("count")?,
            },
            8 => Command::MovePartition {
                name: r.string("topic")?,
                partition: r.u32("partition")?,
                node: r.u32("node")?,
                shard: r.u16("shard")?,
            },
            9 => Command::ReassignPartition {
                name: r.string("topic")?,
                partition: r.u32("partition")?,
                replicas: get_nodes(&mut r)?,
            },
            10 => Command::CompleteReassignment {
                name: r.string("topic")?,
                partition: r.u32("partition")?,
                leader: r.u32("leader")?,
                replicas: get_nodes(&mut r)?,
            },
            k => {
                return Err(DecodeError::Invalid {
                    what: "command kind",
                    detail: format!("{k}"),
                })
            }
        };
        r.finish()?;
        Ok(Envelope {
            origin,
            seq,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        vec![
            Command::RegisterBroker(Registration {
                id: 2,
                incarnation: 77,
                shards: 4,
                kafka_addr: "127.0.0.1:9092".into(),
                native_addr: "127.0.0.1:9400".into(),
                rpc_addr: "127.0.0.1:9401".into(),
            }),
            Command::SetBrokerLive {
                id: 2,
                incarnation: 77,
                live: false,
            },
            Command::CreateTopic {
                name: "orders".into(),
                topic_id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
                partitions: 8,
                config: vec![("retention.ms".into(), "-1".into())],
                replication_factor: 3,
            },
            Command::DeleteTopic {
                name: "orders".into(),
            },
            Command::CreatePartitions {
                name: "orders".into(),
                total: 12,
            },
            Command::AlterTopicConfig {
                name: "orders".into(),
                config: vec![],
            },
            Command::AllocateProducerIds { count: 1000 },
            Command::MovePartition {
                name: "orders".into(),
                partition: 3,
                node: 1,
                shard: 0,
            },
            Command::ReassignPartition {
                name: "orders".into(),
                partition: 2,
                replicas: vec![2, 3, 4],
            },
            Command::CompleteReassignment {
                name: "orders".into(),
                partition: 2,
                leader: 3,
                replicas: vec![2, 3, 4],
            },
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for (i, command) in samples().into_iter().enumerate() {
            let env = Envelope {
                origin: 3,
                seq: i as u64 + 1,
                command,
            };
            assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_a_command_never_a_panic() {
        for command in samples() {
            let bytes = Envelope {
                origin: 1,
                seq: 9,
                command,
            }
            .encode();
            for cut in 0..bytes.len() {
                assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut b = bytes.to_vec();
                    b[i] ^= flip;
                    let _ = Envelope::decode(&b);
                }
            }
        }
    }
}
