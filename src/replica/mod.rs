//! Replicated partitions (issue 13; docs/replication.md, "Plan for issue
//! 13"): one Raft group per partition, whose log is the partition's own
//! segment log, one frame per Raft entry.
//!
//! The broker runs these for every topic created with a replication factor
//! above 1 (`shard::replication`); `tests/replica_sim.rs` drives the same
//! modules under a simulated network, disk and clock:
//! - [`driver`]: a shard's groups, ticked together, messages batched per
//!   peer broker; [`wire`]: the bytes of such a batch;
//! - [`group`]: one replica of a partition's group (raft-rs `RawNode`),
//!   appending to and truncating the partition's log, moving its high
//!   watermark to the commit index;
//! - [`entry`]: a Raft entry as a frame (Raft's own entries as control
//!   batches);
//! - [`storage`]: what raft-rs reads (`raft::Storage`): recent entries in a
//!   bounded window, older ones fetched from the log asynchronously;
//! - [`log_index`]: the bridge between Raft indexes and the log's offsets
//!   and terms, bounded in memory;
//! - [`hard_state`]: the replica's term, vote, commit, log start (with
//!   the producer table as of it) and configuration, in two small
//!   alternating files per partition;
//! - [`snapshot_data`]: what a Raft snapshot carries (a position, the
//!   configuration's index, the producer table as of the log start).

pub mod driver;
pub mod entry;
pub mod group;
pub mod hard_state;
pub mod log_index;
pub mod snapshot_data;
pub mod storage;
pub mod window_budget;
pub mod wire;

pub use driver::{DriverStats, GroupKey, ReplicationDriver};
pub use group::{
    GroupConfig, Outcome, PartitionGroup, ProposeError, Proposed, Reconfig, ReplicaError,
};
pub use hard_state::{ReplicaState, StateDecodeError, StateError, StateFile};
pub use log_index::{EpochStart, Found, LogIndex};
pub use snapshot_data::{SnapshotData, SnapshotDataError};
pub use window_budget::WindowBudget;
