//! Topic metadata: names, partition counts, per-topic config.
//!
//! Ownership: shard 0 is the controller. It alone changes metadata: it
//! validates a change, persists it (`<data-dir>/meta/topics.json`, written
//! to a temporary file, fsynced, renamed, directory fsynced) and then
//! broadcasts the new immutable [`TopicTable`] to every shard. Every shard
//! holds an `Arc` of the latest table and answers metadata questions from it.

use crate::config::TopicConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// Stable 128-bit id (Kafka topic ids), hex.
    pub id: String,
    pub created_ms: i64,
}

/// An immutable snapshot of every topic, with a version that grows on each change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicTable {
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out; a restart continues from here.
    #[serde(default)]
    pub producer_id_block_end: i64,
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
    let a = crc32c::crc32c(name.as_bytes()) as u128;
    let b = crc32c::crc32c(&t.to_le_bytes()) as u128;
    let c = crc32c::crc32c(&std::process::id().to_le_bytes()) as u128;
    let d = rand::random::<u32>() as u128;
    format!("{:032x}", (a << 96) | (b << 64) | (c << 32) | d)
}

impl TopicTable {
    pub fn load(data_dir: &Path) -> Result<TopicTable, MetadataError> {
        let path = meta_path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MetadataError::Parse {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TopicTable::default()),
            Err(source) => Err(MetadataError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Persist atomically and durably.
    pub fn persist(&self, data_dir: &Path) -> Result<(), MetadataError> {
        let path = meta_path(data_dir);
        let dir = path.parent().unwrap().to_path_buf();
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| MetadataError::Io {
                op,
                path: p,
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let tmp = dir.join("topics.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).expect("metadata serialises");
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &dir))?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }
}
