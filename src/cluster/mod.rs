//! A broker's part in a cluster: the controller replica it runs (when it
//! is one of `--controller-voters`), the RPC listener other brokers talk
//! to, and its own registration with the controller.
//!
//! Everything here runs on shard 0, next to the client listeners: one
//! executor owns the controller replica, so no lock guards it.
//! - [`rpc`]: one request/response exchange over a fresh connection (the
//!   outbound side of admin requests, and `shardlog cluster status`);
//! - [`admin`]: the blocking client of `shardlog cluster ...`;
//! - [`driver`]: the controller replica's loop (ticks, Raft messages in
//!   and out, proposals and their waiters), the RPC server, and the
//!   publisher that installs the topic table derived from the controller's
//!   state on this broker;
//! - [`link`]: metadata changes from this broker's clients (CreateTopics,
//!   DeleteTopics, configs, producer ids) turned into controller commands.

pub mod admin;
pub mod driver;
pub mod link;
pub mod rpc;

pub use crate::config::ClusterSettings;
