//! Messages between shards. Everything here is `Send`: it crosses cores.
//! Payload buffers move with the message (no copy).

use super::ops::{
    AdminOp, AdminResult, FetchPart, FetchPartResult, OffsetsPart, OffsetsPartResult, ProducePart,
    ProducePartResult,
};
use super::Reply;
use crate::metadata::SharedTopics;
use crate::protocol::messages::Acks;
use std::time::Instant;

/// Which protocol a listener speaks. Defined here, with the message that
/// carries it (`ShardMsg::Adopt`), so the router does not depend on the
/// shard or server layers above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Native,
    Kafka,
}

impl ListenerKind {
    /// For logs: which protocol a listener or connection speaks.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Native => "native",
            ListenerKind::Kafka => "kafka",
        }
    }
}

pub enum ShardMsg {
    /// Append batches to partitions this shard owns.
    Produce {
        parts: Vec<ProducePart>,
        acks: Acks,
        timeout_ms: u32,
        reply: Reply<Vec<ProducePartResult>>,
    },
    /// Read partitions this shard owns. With `wait_until`, wait for data
    /// until then (long poll) unless `cancel` fires first.
    Fetch {
        parts: Vec<FetchPart>,
        /// The answer's byte budget: reads stop once it is reached (see
        /// `shard::local::read_parts`).
        max_bytes: usize,
        wait_until: Option<Instant>,
        cancel: Option<flume::Receiver<()>>,
        reply: Reply<Vec<FetchPartResult>>,
    },
    /// Offsets (earliest, latest, by time) and partition states.
    Offsets {
        parts: Vec<OffsetsPart>,
        reply: Reply<Vec<OffsetsPartResult>>,
    },
    /// To the controller (shard 0): change topic metadata.
    Admin {
        op: AdminOp,
        reply: Reply<AdminResult>,
    },
    /// From the controller: a new topic table; open/close partitions to match.
    ApplyTopics {
        topics: SharedTopics,
        reply: Reply<()>,
    },
    /// A connection accepted elsewhere, to serve here.
    Adopt {
        stream: glommio::net::AcceptedTcpStream,
        kind: ListenerKind,
    },
    /// Stop: close listeners and partitions (flush, sync), then exit.
    Shutdown { reply: Reply<()> },
    /// Run a closure on the shard: extension point for subsystems (group coordinator).
    Task(Box<dyn FnOnce() + Send>),
}
