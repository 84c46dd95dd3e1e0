//! Loading the topic table for a broker, and what must happen before any
//! partition is opened.
//!
//! - A lost table is loud: if `meta/topics.json` is missing or unreadable
//!   while partition directories exist, the broker refuses to start
//!   ([`MetadataError::TableLost`]) and names the recovery command. Starting
//!   with an empty table would hide every topic and let a new topic of the
//!   same name adopt an old one's data.
//! - Deletes interrupted by a crash are finished: the table lists them in
//!   `deleting`, and the directories whose identity matches are removed.
//! - Migration: partition directories of table topics that have no identity
//!   file (data directories from before identity files) get one, with a log
//!   line.
//! - Partition directories that belong to no topic are reported, and left alone.
//! - The metadata space reserve is (re)made if there is room.

use super::{dirs, identity, partition_dir, reserve};
use super::{DeletedTopic, MetadataError, TopicTable};
use std::collections::BTreeMap;
use std::path::Path;
use tracing::{info, warn};

/// The table a broker starts with. See the module doc.
pub fn load(data_dir: &Path) -> Result<TopicTable, MetadataError> {
    let found = dirs::partition_dirs(data_dir).map_err(MetadataError::io("list", data_dir))?;
    let table = match TopicTable::read(data_dir) {
        Ok(Some(t)) => t,
        Ok(None) if found.is_empty() => {
            // A new data directory.
            refill_reserve(data_dir);
            return Ok(TopicTable::default());
        }
        Ok(None) => return Err(lost(data_dir, "missing".into(), &found)),
        Err(e) if !found.is_empty() => {
            return Err(lost(data_dir, format!("unreadable ({e})"), &found))
        }
        Err(e) => return Err(e),
    };
    let mut table = table;
    let changed = finish_deletes(data_dir, &mut table);
    let migrated = migrate_identities(data_dir, &table)?;
    if migrated > 0 {
        info!(
            partitions = migrated,
            "migration: wrote an identity file (identity.json) into {migrated} partition \
             directories that had none (a data directory from before identity files); \
             from now on a directory whose identity does not match its topic is refused"
        );
    }
    report_strays(&table, &found);
    if changed {
        table.version += 1;
        if let Err(e) = table.persist(data_dir) {
            // The directories are gone already; the entries are retried next start.
            warn!("could not store the finished deletes in the topic table: {e}");
        }
    }
    refill_reserve(data_dir);
    Ok(table)
}

fn lost(data_dir: &Path, problem: String, found: &BTreeMap<String, Vec<u32>>) -> MetadataError {
    let count: usize = found.values().map(Vec::len).sum();
    MetadataError::TableLost {
        data_dir: data_dir.to_path_buf(),
        problem,
        dirs: format!(
            "{count} partition directories ({})",
            dirs::describe(found, 10)
        ),
    }
}

/// Remove what is left of deleted topics. Returns whether `deleting` changed.
fn finish_deletes(data_dir: &Path, table: &mut TopicTable) -> bool {
    if table.deleting.is_empty() {
        return false;
    }
    let before = table.deleting.len();
    table.deleting.retain(|d| !remove_deleted_dirs(data_dir, d));
    table.deleting.len() != before
}

/// Remove the directories of deleted topic `d` that still carry its
/// identity. Returns true when nothing of it is left to remove.
pub fn remove_deleted_dirs(data_dir: &Path, d: &DeletedTopic) -> bool {
    let mut done = true;
    let mut removed = 0;
    for p in 0..d.partitions {
        let dir = partition_dir(data_dir, &d.name, p);
        if !dir.exists() {
            continue;
        }
        match identity::read(&dir) {
            Ok(Some(id)) if id.topic_id == d.id && id.topic == d.name && id.partition == p => {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        warn!(dir = %dir.display(), "removing a deleted partition: {e}");
                        done = false;
                    }
                }
            }
            // Someone else's directory now (a topic created again under the
            // same name): not the deleted topic's data, not ours to remove.
            other => {
                warn!(
                    dir = %dir.display(),
                    "not removed although topic '{}' (id {}) was deleted: its identity is {:?}",
                    d.name, d.id, other.map(|o| o.map(|i| i.to_string()))
                );
            }
        }
    }
    if removed > 0 {
        info!(
            topic = %d.name,
            "deleted topic '{}': removed {removed} leftover partition directories (a delete interrupted by a stop, or a removal that failed before)",
            d.name
        );
        let _ = super::durable::sync_dir(data_dir);
    }
    done
}

/// Write identity files into existing partition directories of table
/// topics that have none. Returns how many were written.
fn migrate_identities(data_dir: &Path, table: &TopicTable) -> Result<usize, MetadataError> {
    let mut n = 0;
    for meta in table.topics.values() {
        for p in 0..meta.partitions {
            let dir = partition_dir(data_dir, &meta.name, p);
            if !dir.is_dir() {
                continue;
            }
            // An unreadable identity is left for the shard to refuse, with its message.
            if let Ok(None) = identity::read(&dir) {
                let id = table
                    .identity(&meta.name, p)
                    .expect("topic is in the table");
                identity::write(&dir, &id)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Log partition directories that no topic claims, and table partitions
/// without a directory.
fn report_strays(table: &TopicTable, found: &BTreeMap<String, Vec<u32>>) {
    for (topic, ps) in found {
        let deleting = table.deleting.iter().any(|d| &d.name == topic);
        for &p in ps {
            let claimed = table.get(topic).is_some_and(|m| p < m.partitions);
            if !claimed && !deleting {
                warn!(
                    "partition directory {topic}-{p} belongs to no topic in the topic table: it is \
                     not served and left untouched (a topic created under this name moves it aside \
                     into stale/)"
                );
            }
        }
    }
    for meta in table.topics.values() {
        let have = found.get(&meta.name);
        for p in 0..meta.partitions {
            if !have.is_some_and(|ps| ps.contains(&p)) {
                warn!(
                    "partition directory {}-{p} of topic '{}' is missing: the partition starts \
                     empty (expected only if the broker stopped right after creating it)",
                    meta.name, meta.name
                );
            }
        }
    }
}

/// Make the metadata space reserve if there is room; say so if there is not.
pub fn refill_reserve(data_dir: &Path) {
    match reserve::refill(data_dir) {
        Ok(_) => {}
        Err(e) if e.is_no_space() => warn!(
            "no room for the metadata space reserve ({e}): deleting a topic may fail while \
             the disk stays full"
        ),
        Err(e) => warn!("cannot make the metadata space reserve: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::identity::PartitionIdentity;

    fn table_with(name: &str, partitions: u32, id: &str) -> TopicTable {
        let mut t = TopicTable::default();
        t.topics.insert(
            name.into(),
            crate::metadata::TopicMeta {
                name: name.into(),
                partitions,
                config: Default::default(),
                id: id.into(),
                created_ms: 0,
                stored_config: Default::default(),
                assignment: Vec::new(),
            },
        );
        t
    }

    #[test]
    fn a_lost_table_with_partition_dirs_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // Fresh directory: fine.
        assert_eq!(load(d).unwrap(), TopicTable::default());
        std::fs::create_dir(d.join("orders-0")).unwrap();
        let e = load(d).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, MetadataError::TableLost { .. }), "{msg}");
        assert!(
            msg.contains("orders-0") && msg.contains("recover-metadata"),
            "{msg}"
        );
        std::fs::create_dir_all(d.join("meta")).unwrap();
        std::fs::write(crate::metadata::meta_path(d), b"{not json").unwrap();
        let msg = load(d).unwrap_err().to_string();
        assert!(msg.contains("unreadable"), "{msg}");
    }

    #[test]
    fn migration_writes_missing_identities_and_deletes_are_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let mut t = table_with("a", 2, "11");
        std::fs::create_dir(d.join("a-0")).unwrap();
        std::fs::write(d.join("a-0").join("00000000000000000000.log"), b"x").unwrap();
        // A deleted topic whose directories survived a crash, and a directory
        // of the same name that is not its own.
        t.deleting.push(DeletedTopic {
            name: "gone".into(),
            id: "22".into(),
            partitions: 2,
        });
        let gone0 = PartitionIdentity {
            topic: "gone".into(),
            partition: 0,
            topic_id: "22".into(),
        };
        identity::claim(d, &gone0).unwrap();
        identity::claim(
            d,
            &PartitionIdentity {
                topic: "gone".into(),
                partition: 1,
                topic_id: "33".into(),
            },
        )
        .unwrap();
        t.persist(d).unwrap();
        let loaded = load(d).unwrap();
        assert_eq!(
            identity::read(&d.join("a-0")).unwrap(),
            t.identity("a", 0),
            "migrated"
        );
        assert!(
            !d.join("a-1").exists(),
            "missing partitions are not made here"
        );
        assert!(
            !d.join("gone-0").exists(),
            "the deleted topic's directory is removed"
        );
        assert!(
            d.join("gone-1").exists(),
            "another topic's directory is not"
        );
        assert!(loaded.deleting.is_empty());
        assert_eq!(TopicTable::read(d).unwrap().unwrap(), loaded, "persisted");
        assert!(reserve::allocated_bytes(d) >= reserve::MIN_BYTES);
    }
}
