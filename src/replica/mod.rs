//! Replicated partitions (issue 13; docs/replication.md, "Plan for issue
//! 13"): one Raft group per partition, whose log is the partition's own
//! segment log, one frame per Raft entry.
//!
//! Built so far (not yet driven by the broker):
//! - [`log_index`]: the bridge between Raft indexes and the log's offsets
//!   and terms, bounded in memory;
//! - [`hard_state`]: the replica's term, vote, commit, log start and
//!   configuration, in one small durable file per partition.

pub mod hard_state;
pub mod log_index;

pub use hard_state::{ReplicaState, StateError};
pub use log_index::{EpochStart, Found, LogIndex};
