//! The shared-nothing router: which shard owns a partition, and the
//! messages shards send each other, and the protocol-neutral operations
//! those messages carry ([`ops`]: produce/fetch/offsets/admin parts and
//! their results). The operation types live here rather than in `shard` so
//! that the router, which names them in [`ShardMsg`], sits below the shard
//! and depends only on metadata, storage and protocol types.
//!
//! Shards share no mutable state. A request that a connection's shard
//! cannot serve locally becomes a [`ShardMsg`] on the owning shard's
//! channel; its payload (`Bytes`/`BytesMut` of the original request buffer)
//! moves with it, without a copy. Replies come back on a one-shot channel
//! carried in the message.
//!
//! Channels are flume (the user's choice; DESIGN.md §3 measures 4-5 M msg/s
//! between executors). They are unbounded so that sending never awaits,
//! which keeps the order of requests from one connection; the bound is
//! upstream, in the per-connection and per-shard in-flight byte budgets
//! that stop reading sockets (see crate::server::budget).

pub mod messages;
pub mod ops;
pub mod placement;

pub use messages::{ListenerKind, ShardMsg};
pub use placement::{locate, shard_of, Location};

/// The sending side of every shard's channel; cheap to clone, `Send`.
#[derive(Clone)]
pub struct Router {
    senders: Vec<flume::Sender<ShardMsg>>,
}

impl Router {
    /// Channels for `n` shards: the router and each shard's receiver.
    pub fn new(n: usize) -> (Router, Vec<flume::Receiver<ShardMsg>>) {
        assert!(n >= 1);
        let (senders, receivers) = (0..n).map(|_| flume::unbounded()).unzip();
        (Router { senders }, receivers)
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Send to a shard. Fails only if that shard has exited (shutdown).
    pub fn send(&self, shard: usize, msg: ShardMsg) -> Result<(), RouterError> {
        self.senders[shard]
            .send(msg)
            .map_err(|_| RouterError::ShardGone(shard))
    }

    /// Whether `shard` has dropped its receiver (its thread has ended).
    /// A message queued before that stays in the channel, reply sender
    /// and all, for as long as any router lives, so a waiter for its
    /// reply must check this rather than wait for a disconnect.
    pub fn is_gone(&self, shard: usize) -> bool {
        self.senders[shard].is_disconnected()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouterError {
    #[error("shard {0} is gone (shutting down)")]
    ShardGone(usize),
}

/// A one-shot reply channel.
pub type Reply<T> = flume::Sender<T>;

pub fn reply_channel<T>() -> (flume::Sender<T>, flume::Receiver<T>) {
    flume::bounded(1)
}
