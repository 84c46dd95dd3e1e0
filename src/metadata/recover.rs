//! Rebuilding a lost topic table from the partition directories:
//! `shardlog recover-metadata --data-dir DIR`.
//!
//! What the directories tell, and what they cannot:
//! - topic names and partitions: from the directory names; the partition
//!   count is the highest partition number + 1, and missing numbers below
//!   it (gaps) are reported: those partitions start empty;
//! - topic ids: from the identity files, so the partitions keep belonging
//!   to their topic. Directories from before identity files get a new id
//!   (written into them). Directories of one topic that disagree, or an
//!   identity naming another directory, stop the rebuild: guessing would
//!   merge two topics' data;
//! - the producer id counter: continued well past the highest id in the
//!   partitions' checkpoints, so no idempotent producer id is handed out twice;
//! - per-topic configs and creation times are not stored in the
//!   directories: recovered topics get the built-in defaults, except that
//!   retention keeps everything (a default 7-day retention could delete
//!   data the original topic kept), and the report says so.
//!
//! It takes the data directory's lock ([`crate::data_dir::DataDir`], as a
//! running broker does), so it never runs next to a broker. It refuses to replace a readable table
//! unless forced, and keeps any table it replaces next to the new one.

use super::{dirs, identity, meta_path, partition_dir, reserve};
use super::{MetadataError, TopicMeta, TopicTable};
use crate::config::TopicConfig;
use crate::data_dir::{DataDir, DataDirError};
use crate::storage::checkpoint::{self, Checkpoint};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Producer ids may have been handed out past the highest one found in a
/// checkpoint (checkpoints lag by up to `recovery_point_interval_ms` after
/// a crash); new ones start this far above it.
pub const PRODUCER_ID_MARGIN: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Lock(#[from] DataDirError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("data directory {0} does not exist")]
    NoDataDir(PathBuf),
    #[error(
        "the topic table {path} is present and readable ({topics} topics): nothing to recover. \
         --force rebuilds it from the directories anyway (per-topic configs are lost; the current \
         file is kept next to it)"
    )]
    TableValid { path: PathBuf, topics: usize },
    #[error(
        "cannot rebuild the topic table: partition directories disagree about which topic they \
         belong to:\n{0}\nMove the directories that do not belong out of the data directory \
         (and out of the way of the topic names), then run again"
    )]
    Conflicts(String),
}

/// Where a recovered topic's id came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// Every partition directory's identity file.
    Identity,
    /// Some directories' identity files; the others had none and got it.
    PartlyIdentity { written: usize },
    /// No directory had one: a new id, written into every directory.
    New { written: usize },
}

#[derive(Debug, Clone)]
pub struct RecoveredTopic {
    pub name: String,
    pub partitions: u32,
    pub id: String,
    pub id_source: IdSource,
    /// Partition numbers below the highest that have no directory.
    pub gaps: Vec<u32>,
}

/// What `recover` did, printed by the command.
#[derive(Debug, Clone)]
pub struct Report {
    pub table: PathBuf,
    pub topics: Vec<RecoveredTopic>,
    /// Where the table that was replaced went (unreadable, or --force).
    pub previous_table: Option<PathBuf>,
    pub highest_producer_id_seen: Option<i64>,
    pub producer_id_block_end: i64,
    /// Directories moved aside earlier (in stale/), not considered.
    pub stale_dirs: usize,
}

/// Rebuild the topic table of `data_dir` from its partition directories.
/// `now_ms` (wall time) becomes the recovered topics' creation time and
/// tags the replaced table's file name.
pub fn recover(data_dir: &Path, force: bool, now_ms: i64) -> Result<Report, RecoverError> {
    if !data_dir.is_dir() {
        return Err(RecoverError::NoDataDir(data_dir.to_path_buf()));
    }
    let _lock = DataDir::open(data_dir)?;
    let table_path = meta_path(data_dir);
    let keep_previous_as = match TopicTable::read(data_dir) {
        Ok(None) => None,
        Ok(Some(t)) if !force => {
            return Err(RecoverError::TableValid {
                path: table_path,
                topics: t.topics.len(),
            })
        }
        Ok(Some(_)) => Some("replaced"),
        Err(_) => Some("unreadable"),
    };
    let found = dirs::partition_dirs(data_dir).map_err(MetadataError::io("list", data_dir))?;
    let mut conflicts = String::new();
    let mut topics = Vec::new();
    let mut highest_pid: Option<i64> = None;
    // Decide everything before writing anything: a conflict leaves the directory as it was.
    let mut plans = Vec::new();
    for (name, ps) in &found {
        let max = *ps.last().expect("a topic in the listing has a partition");
        let have: BTreeSet<u32> = ps.iter().copied().collect();
        let gaps: Vec<u32> = (0..=max).filter(|p| !have.contains(p)).collect();
        let mut ids: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut unidentified = Vec::new();
        for &p in ps {
            let dir = partition_dir(data_dir, name, p);
            match identity::read(&dir) {
                Ok(Some(id)) if id.topic == *name && id.partition == p => {
                    ids.entry(id.topic_id).or_default().push(p)
                }
                Ok(Some(id)) => {
                    let _ = writeln!(conflicts, "  {}: its identity says {id}", dir.display());
                }
                Ok(None) => unidentified.push(p),
                Err(e) => {
                    let _ = writeln!(conflicts, "  {}: {e}", dir.display());
                }
            }
            if let Some(pid) = highest_checkpoint_pid(&dir) {
                highest_pid = Some(highest_pid.map_or(pid, |h| h.max(pid)));
            }
        }
        if ids.len() > 1 {
            let list: Vec<String> = ids
                .iter()
                .map(|(id, ps)| format!("id {id} in partitions {ps:?}"))
                .collect();
            let _ = writeln!(
                conflicts,
                "  topic '{name}': its directories carry different topic ids: {}",
                list.join("; ")
            );
            continue;
        }
        let (id, id_source) = match ids.into_keys().next() {
            Some(id) if unidentified.is_empty() => (id, IdSource::Identity),
            Some(id) => (
                id,
                IdSource::PartlyIdentity {
                    written: unidentified.len(),
                },
            ),
            None => (
                super::new_topic_id(name),
                IdSource::New {
                    written: unidentified.len(),
                },
            ),
        };
        plans.push((name.clone(), unidentified));
        topics.push(RecoveredTopic {
            name: name.clone(),
            partitions: max + 1,
            id,
            id_source,
            gaps,
        });
    }
    if !conflicts.is_empty() {
        return Err(RecoverError::Conflicts(conflicts.trim_end().to_string()));
    }
    let mut table = TopicTable {
        version: 1,
        ..Default::default()
    };
    for t in &topics {
        table.topics.insert(
            t.name.clone(),
            TopicMeta {
                name: t.name.clone(),
                partitions: t.partitions,
                config: recovered_config(),
                id: t.id.clone(),
                created_ms: now_ms,
                stored_config: Default::default(),
                assignment: Vec::new(),
            },
        );
    }
    table.producer_id_block_end = highest_pid.map_or(0, |h| h + 1) + PRODUCER_ID_MARGIN;
    // Identity files first: if this stops half-way, the next run finds
    // the same ids in them and builds the same table.
    for (name, unidentified) in &plans {
        for &p in unidentified {
            let id = table.identity(name, p).expect("topic was just added");
            identity::write(&partition_dir(data_dir, name, p), &id)?;
        }
    }
    let previous_table = match keep_previous_as {
        Some(why) => {
            let to = table_path.with_file_name(format!("topics.json.{why}-{now_ms}"));
            std::fs::rename(&table_path, &to).map_err(MetadataError::io("rename", &table_path))?;
            Some(to)
        }
        None => None,
    };
    table.persist(data_dir)?;
    let _ = reserve::refill(data_dir);
    let stale_dirs = std::fs::read_dir(data_dir.join(dirs::STALE_DIR))
        .map(|d| d.count())
        .unwrap_or(0);
    Ok(Report {
        table: table_path,
        topics,
        previous_table,
        highest_producer_id_seen: highest_pid,
        producer_id_block_end: table.producer_id_block_end,
        stale_dirs,
    })
}

/// Built-in defaults, but retention keeps everything: the original
/// retention is unknown, and recovery must not be what deletes data.
pub fn recovered_config() -> TopicConfig {
    TopicConfig {
        retention_ms: -1,
        retention_bytes: -1,
        ..TopicConfig::default()
    }
}

/// The highest idempotent producer id in a partition's checkpoint, if any.
fn highest_checkpoint_pid(dir: &Path) -> Option<i64> {
    let bytes = std::fs::read(dir.join(checkpoint::FILE_NAME)).ok()?;
    let cp = Checkpoint::decode(&bytes).ok()?;
    cp.producers.iter().map(|(pid, _)| *pid).max()
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dirs: u32 = self
            .topics
            .iter()
            .map(|t| t.partitions - t.gaps.len() as u32)
            .sum();
        writeln!(
            f,
            "rebuilt {} from {dirs} partition directories: {} topics",
            self.table.display(),
            self.topics.len()
        )?;
        for t in &self.topics {
            let source = match &t.id_source {
                IdSource::Identity => "from the identity files".to_string(),
                IdSource::PartlyIdentity { written } => format!(
                    "from the identity files; written into {written} directories that had none"
                ),
                IdSource::New { written } => {
                    format!("NEW: no directory had an identity file; written into all {written}")
                }
            };
            writeln!(
                f,
                "  topic {}: {} partitions, id {} ({source})",
                t.name, t.partitions, t.id
            )?;
            if !t.gaps.is_empty() {
                writeln!(
                    f,
                    "  WARNING topic {}: partitions {:?} have no directory: they start empty \
                     (whatever they held is gone)",
                    t.name, t.gaps
                )?;
            }
        }
        match self.highest_producer_id_seen {
            Some(h) => writeln!(
                f,
                "producer ids continue from {} (highest seen in checkpoints: {h}, plus a margin of {PRODUCER_ID_MARGIN})",
                self.producer_id_block_end
            )?,
            None => writeln!(
                f,
                "producer ids continue from {} (none seen in checkpoints; a margin of {PRODUCER_ID_MARGIN})",
                self.producer_id_block_end
            )?,
        }
        if let Some(p) = &self.previous_table {
            writeln!(f, "the previous table was kept as {}", p.display())?;
        }
        if self.stale_dirs > 0 {
            writeln!(
                f,
                "{} directories in stale/ (moved aside earlier) were not considered",
                self.stale_dirs
            )?;
        }
        let c = recovered_config();
        writeln!(f, "could not recover:")?;
        writeln!(
            f,
            "  - per-topic configs: every topic gets the built-in defaults (segment_bytes={}, \
             segment_ms={}, index_interval_bytes={}, max_batch_bytes={}), except retention, \
             which keeps everything (retention_ms=-1, retention_bytes=-1) so that recovery \
             deletes nothing; to restore the real values, edit {} while the broker is stopped",
            c.segment_bytes,
            c.segment_ms,
            c.index_interval_bytes,
            c.max_batch_bytes,
            self.table.display()
        )?;
        writeln!(f, "  - topic creation times (set to now)")?;
        writeln!(
            f,
            "  - topics that had no partition directory at all (never written to disk) and \
             deletes that were in progress: a deleted topic whose directories were still \
             there is listed above as a topic"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::identity::PartitionIdentity;

    fn pid(topic: &str, p: u32, id: &str) -> PartitionIdentity {
        PartitionIdentity {
            topic: topic.into(),
            partition: p,
            topic_id: id.into(),
        }
    }

    #[test]
    fn rebuilds_names_counts_ids_and_reports_gaps() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for p in [0, 1, 3] {
            identity::claim(d, &pid("orders", p, "aa")).unwrap();
        }
        std::fs::create_dir(d.join("legacy-0")).unwrap();
        std::fs::write(d.join("legacy-0").join("00000000000000000000.log"), b"x").unwrap();
        let r = recover(d, false, 1_700_000_000_000).unwrap();
        let t = TopicTable::read(d).unwrap().unwrap();
        assert_eq!(t.topics["orders"].partitions, 4);
        assert_eq!(t.topics["orders"].id, "aa");
        assert_eq!(r.topics[1].gaps, vec![2]);
        assert_eq!(t.topics["legacy"].partitions, 1);
        assert_eq!(
            identity::read(&d.join("legacy-0")).unwrap(),
            t.identity("legacy", 0),
            "a new id is written into the directories"
        );
        assert_eq!(t.topics["orders"].config.retention_ms, -1);
        let text = r.to_string();
        assert!(
            text.contains("could not recover") && text.contains("[2]"),
            "{text}"
        );
        // A readable table is not replaced without --force.
        assert!(matches!(
            recover(d, false, 1_700_000_000_000).unwrap_err(),
            RecoverError::TableValid { .. }
        ));
        let r = recover(d, true, 1_700_000_000_000).unwrap();
        assert!(r.previous_table.unwrap().exists());
    }

    #[test]
    fn producer_ids_continue_past_the_checkpoints() {
        use crate::storage::producer_state::ProducerEntry;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        identity::claim(d, &pid("t", 0, "aa")).unwrap();
        let cp = Checkpoint {
            segment_base: 0,
            position: 0,
            next_offset: 0,
            producers: [4711, 12]
                .into_iter()
                .map(|pid| {
                    let e = ProducerEntry {
                        epoch: 0,
                        batches: Default::default(),
                        last_seen_offset: 0,
                        last_timestamp: -1,
                    };
                    (pid, e)
                })
                .collect(),
        };
        std::fs::write(d.join("t-0").join(checkpoint::FILE_NAME), cp.encode()).unwrap();
        let r = recover(d, false, 1_700_000_000_000).unwrap();
        assert_eq!(r.highest_producer_id_seen, Some(4711));
        let t = TopicTable::read(d).unwrap().unwrap();
        assert_eq!(t.producer_id_block_end, 4712 + PRODUCER_ID_MARGIN);
    }

    #[test]
    fn disagreeing_directories_stop_the_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        identity::claim(d, &pid("t", 0, "aa")).unwrap();
        identity::claim(d, &pid("t", 1, "bb")).unwrap();
        let e = recover(d, false, 1_700_000_000_000).unwrap_err();
        assert!(matches!(e, RecoverError::Conflicts(_)), "{e}");
        assert!(TopicTable::read(d).unwrap().is_none(), "nothing written");
    }
}
