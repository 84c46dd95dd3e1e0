//! The cluster controller: the metadata every broker of a cluster agrees on
//! (brokers, topics, where each partition lives), replicated through one
//! Raft group run by raft-rs (docs/replication.md).
//!
//! Everything here is sans-IO apart from [`file_log`]: the caller owns the
//! clock (it calls [`node::ControllerNode::tick`]), the network (it carries
//! the messages a node returns and steps the ones that arrive) and the
//! thread. So the same code runs in a broker's shard and, many nodes to a
//! process, in the seeded simulation (`tests/controller_sim.rs`).
//!
//! Map of the module, bottom up:
//! - [`command`]: the commands of the replicated log and their byte layout;
//! - [`placement`]: which broker and shard a new partition goes to;
//! - [`state`]: the state machine the commands are applied to, and its
//!   snapshot encoding;
//! - [`log_view`]: the in-memory Raft log raft-rs reads (`raft::Storage`);
//! - [`persist`]: what must be durable before Raft may go on, as a trait,
//!   with an in-memory implementation for simulations;
//! - [`file_log`]: that trait on files in the data directory, CRC-checked
//!   and fsynced;
//! - [`node`]: one controller replica, a raft-rs `RawNode` plus the state
//!   machine, driven by its caller;
//! - [`wire`]: the broker-to-broker RPC frames (requests to a replica);
//! - [`view`]: the topic table a broker serves from, derived from the state.

pub mod command;
pub mod file_log;
pub mod log_view;
pub mod node;
pub mod peer_link;
pub mod persist;
pub mod placement;
pub mod state;
pub mod view;
pub mod wire;

pub use command::{Command, Envelope};
pub use node::{Applied, ControllerNode, NodeError, Output};
pub use persist::{MemPersist, Persist, PersistError, Persisted};
pub use state::{BrokerInfo, ControllerState, Outcome, PartitionAssignment, TopicInfo};
