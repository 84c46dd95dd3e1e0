//! Topic metadata: names, partition counts, per-topic config.
//!
//! Ownership: shard 0 is the controller. It alone changes metadata: it
//! validates a change, persists it (`<data-dir>/meta/topics.json`, written
//! to a temporary file, fsynced, renamed, directory fsynced) and then
//! broadcasts the new immutable [`TopicTable`] to every shard. Every shard
//! holds an `Arc` of the latest table and answers metadata questions from it.
//!
//! Map of the module:
//! - [`dirs`]: which entries of the data directory are partition directories;
//! - [`identity`]: the identity file that ties a partition directory to its topic id;
//! - [`startup`]: loading the table for a broker: refusing a lost table,
//!   migrating old data directories, finishing interrupted deletes;
//! - [`recover`]: rebuilding a lost table from the partition directories;
//! - [`reserve`]: the space kept aside so metadata can be written on a full disk;
//! - [`durable`]: atomic, durable replacement of a small file.

pub mod alter;
pub mod dirs;
pub mod durable;
pub mod identity;
pub mod recover;
pub mod reserve;
pub mod startup;

use crate::config::TopicConfig;
use identity::PartitionIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::warn;

/// The command that rebuilds a lost topic table, for messages.
pub fn recover_command(data_dir: &Path) -> String {
    format!(
        "shardlog recover-metadata --data-dir {}",
        data_dir.display()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is not valid: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("invalid topic name '{0}': use 1-200 characters from [a-zA-Z0-9._-], not '.' or '..'")]
    InvalidName(String),
    #[error(
        "refusing to start: the topic table {table} is {problem}, but the data directory {data_dir} \
         holds {dirs}. Starting without the table would serve none of them and let a new topic of \
         the same name adopt their data. Rebuild the table from the directories with `{command}` \
         (it says what it cannot recover), or move the directories out of {data_dir} if they are \
         not wanted",
        data_dir = data_dir.display(),
        table = meta_path(data_dir).display(),
        command = recover_command(data_dir)
    )]
    TableLost {
        data_dir: PathBuf,
        /// "missing", or "unreadable (why)".
        problem: String,
        /// "N partition directories (a-0, a-1, ...)".
        dirs: String,
    },
    #[error(
        "partition directory {dir} belongs to {found}, but the topic table says it is {expected}; \
         it is not served and nothing in it was touched. Move it out of the data directory \
         (the partition then starts empty), or, if it really is this partition's data, \
         put the table's topic id into {dir}/identity.json; then restart"
    )]
    IdentityMismatch {
        dir: PathBuf,
        found: Box<PartitionIdentity>,
        expected: Box<PartitionIdentity>,
    },
    #[error(
        "partition directory {dir} holds files but no identity file (identity.json), so it cannot \
         be told from another topic's data: it is not served as {expected} and nothing in it was \
         touched. Move it out of the data directory (the partition then starts empty), or, if it \
         is this partition's data, restart: at startup a directory without identity file is \
         taken as its table topic's (the migration of data directories from before identity files)"
    )]
    Unidentified {
        dir: PathBuf,
        expected: Box<PartitionIdentity>,
    },
}

impl MetadataError {
    /// `MetadataError::io("write", path)` maps an `io::Error` to this error.
    pub fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MetadataError {
        let path = path.to_path_buf();
        move |source| MetadataError::Io { op, path, source }
    }

    /// The device is full (retryable once space is freed).
    pub fn is_no_space(&self) -> bool {
        matches!(self, MetadataError::Io { source, .. } if crate::storage::file::is_no_space(source))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// Stable 128-bit id (Kafka topic ids), hex.
    pub id: String,
    pub created_ms: i64,
    /// Kafka topic configs stored but not acted on
    /// ([`crate::config::KAFKA_TOPIC_KEYS_STORED`]), by Kafka name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stored_config: BTreeMap<String, String>,
    /// In a cluster: where each partition lives, as the controller placed
    /// it (one entry per partition). Empty on a single node, where every
    /// partition is here and its shard follows from the name
    /// (`router::placement`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<Assignment>,
}

/// A partition's place in a cluster: the broker that leads it, the shard
/// there, the leader epoch (it grows each time the leader moves), and the
/// brokers of its other replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub node: u32,
    pub shard: u16,
    pub leader_epoch: u32,
    /// Brokers holding the partition's other replicas (none until topics
    /// are created with a replication factor above 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<u32>,
    /// The shard of each follower's replica on its broker (same order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follower_shards: Vec<u16>,
    /// The Raft group's voters at its creation (empty: the current
    /// replicas): a replica joining later starts from this configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin: Vec<u32>,
    /// A reassignment in progress: the brokers the partition should end
    /// with (empty: none), and their replicas' shards (same order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_shards: Vec<u16>,
}

impl Assignment {
    /// Whether the partition is replicated by a Raft group (more than one
    /// replica).
    pub fn replicated(&self) -> bool {
        !self.followers.is_empty()
    }

    /// The shard of `node`'s replica, if `node` holds one (a current
    /// replica, or one a reassignment in progress adds).
    pub fn replica_shard(&self, node: u32) -> Option<u16> {
        if node == self.node {
            return Some(self.shard);
        }
        if let Some(i) = self.followers.iter().position(|f| *f == node) {
            return Some(self.follower_shards.get(i).copied().unwrap_or(self.shard));
        }
        let i = self.target.iter().position(|f| *f == node)?;
        Some(self.target_shards.get(i).copied().unwrap_or(self.shard))
    }

    /// Every broker holding a replica: the current ones, then those a
    /// reassignment in progress adds (Kafka's Metadata lists both while a
    /// partition moves).
    pub fn all_replicas(&self) -> Vec<u32> {
        let mut v = self.replicas();
        for n in &self.target {
            if !v.contains(n) {
                v.push(*n);
            }
        }
        v
    }

    /// The Raft group's configuration at index 0 (see `origin`).
    pub fn origin_voters(&self) -> Vec<u32> {
        if self.origin.is_empty() {
            self.replicas()
        } else {
            self.origin.clone()
        }
    }

    /// Every replica's broker, the initial leader first (the group's voters).
    pub fn replicas(&self) -> Vec<u32> {
        let mut v = vec![self.node];
        v.extend(&self.followers);
        v
    }
}

/// A broker of the cluster as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    pub id: u32,
    /// `host:port` advertised to Kafka clients.
    pub kafka_addr: String,
    /// `host:port` of the native listener.
    pub native_addr: String,
    /// `host:port` of the inter-broker RPC listener.
    #[serde(default)]
    pub rpc_addr: String,
    /// Registered and not fenced by the controller.
    pub live: bool,
}

/// An immutable snapshot of every topic, with a version that grows on each change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicTable {
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out; a restart continues from here.
    #[serde(default)]
    pub producer_id_block_end: i64,
    /// Topics deleted from `topics` whose partition directories may still
    /// exist: a delete persists the table first (so a crash can never
    /// leave a table naming a topic whose data is half gone), then removes
    /// the directories, then drops the entry. A start after a crash in
    /// between finishes the job ([`startup`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleting: Vec<DeletedTopic>,
    /// In a cluster: every registered broker, from the controller's state.
    /// Empty on a single node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<u32, BrokerEndpoint>,
    /// In a cluster: the controller log index this table was derived from
    /// (0 on a single node). A table from an older index never replaces a
    /// newer one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub controller_index: u64,
    /// In a cluster: the id of the cluster whose controller made this
    /// table (0: none yet). A controller state of another cluster (one
    /// that lost its state and started afresh at the same addresses) is
    /// never installed over it: it would delete every topic it does not
    /// know.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cluster_id: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A deleted topic whose directories are being removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedTopic {
    pub name: String,
    pub id: String,
    pub partitions: u32,
}

pub type SharedTopics = Arc<TopicTable>;

/// Internal topics (consumer offsets) start with this prefix and are hidden from listings.
pub const INTERNAL_PREFIX: &str = "__";

pub fn validate_name(name: &str) -> Result<(), MetadataError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MetadataError::InvalidName(name.to_string()))
    }
}

/// Directory of one partition.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

pub fn meta_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("topics.json")
}

/// Random-enough topic id: hash of name, time and process id.
pub fn new_topic_id(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let a = crate::format::crc::crc32c(name.as_bytes()) as u128;
    let b = crate::format::crc::crc32c(&t.to_le_bytes()) as u128;
    let c = crate::format::crc::crc32c(&std::process::id().to_le_bytes()) as u128;
    let d = rand::random::<u32>() as u128;
    format!("{:032x}", (a << 96) | (b << 64) | (c << 32) | d)
}

impl TopicTable {
    /// The table a broker starts with: see [`startup::load`] (refuses a
    /// lost table while partition directories exist, migrates data
    /// directories from before identity files, finishes interrupted deletes).
    pub fn load(data_dir: &Path) -> Result<TopicTable, MetadataError> {
        startup::load(data_dir)
    }

    /// Just read the table file: None if there is none.
    pub fn read(data_dir: &Path) -> Result<Option<TopicTable>, MetadataError> {
        let path = meta_path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| MetadataError::Parse {
                        path,
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(MetadataError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Persist atomically and durably. On a full disk, the space reserve is
    /// given back and the write tried once more (see [`reserve`]): that is
    /// what lets a topic be deleted to make a full disk empty again.
    pub fn persist(&self, data_dir: &Path) -> Result<(), MetadataError> {
        match self.write_file(data_dir) {
            Err(e) if e.is_no_space() && reserve::release(data_dir)? => {
                warn!(
                    "writing the topic table hit a full disk ({e}); released the metadata \
                     space reserve {} and retrying",
                    reserve::path(data_dir).display()
                );
                self.write_file(data_dir)
            }
            r => r,
        }
    }

    fn write_file(&self, data_dir: &Path) -> Result<(), MetadataError> {
        let path = meta_path(data_dir);
        let dir = path.parent().expect("meta/topics.json has a parent");
        std::fs::create_dir_all(dir).map_err(MetadataError::io("create", dir))?;
        let bytes = serde_json::to_vec_pretty(self).expect("metadata serialises");
        durable::replace(dir, "topics.json", &bytes)
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The identity partition `p` of `topic` must carry.
    pub fn identity(&self, topic: &str, partition: u32) -> Option<PartitionIdentity> {
        self.topics.get(topic).map(|m| PartitionIdentity {
            topic: m.name.clone(),
            partition,
            topic_id: m.id.clone(),
        })
    }
}
