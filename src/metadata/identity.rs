//! Partition identity: which topic a partition directory belongs to.
//!
//! A directory name says only `<topic>-<partition>`, and a name can be
//! reused: delete a topic (or lose the topic table), create one of the same
//! name, and the new topic would find the old one's segments and serve them
//! as its own. So every partition directory carries `identity.json`, naming
//! the topic, the partition and the topic's id (the table's stable,
//! random `id`). It is written when the directory is created and made
//! durable before any segment exists, and never changes.
//!
//! The rules, applied by the shard before it opens a partition
//! ([`claim`]) and by the controller before it creates one:
//! - identity matches the table: the directory is the partition's;
//! - identity differs: the directory is refused (the partition goes
//!   offline with a message) and nothing in it is touched;
//! - no valid identity and no other files: an interrupted creation; it is claimed;
//! - no identity but files: refused, except at startup for topics already
//!   in the table, where it is taken as a data directory from before
//!   identities existed (the migration in [`super::startup`]);
//! - a new topic or partition whose directory already exists: the old
//!   directory is moved aside into `<data-dir>/stale/` ([`move_aside`]), so
//!   the new partition starts empty and the old data is kept for the operator.

use super::{durable, partition_dir, MetadataError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The identity file in every partition directory.
pub const FILE_NAME: &str = "identity.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionIdentity {
    pub topic: String,
    pub partition: u32,
    /// The topic's id in the topic table (32 hex digits).
    pub topic_id: String,
}

impl std::fmt::Display for PartitionIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic '{}' partition {} (topic id {})",
            self.topic, self.partition, self.topic_id
        )
    }
}

/// What [`claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The directory did not exist: created, with its identity.
    Created,
    /// The directory existed, empty and without identity (a creation
    /// interrupted by a crash): its identity was written.
    ClaimedEmpty,
    /// The directory's identity matches.
    Matches,
}

/// The identity of the partition directory `dir`, if it has one.
pub fn read(dir: &Path) -> Result<Option<PartitionIdentity>, MetadataError> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| MetadataError::Parse {
                path,
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetadataError::io("read", &path)(e)),
    }
}

/// Write (or replace) the identity of `dir`, durably.
pub fn write(dir: &Path, id: &PartitionIdentity) -> Result<(), MetadataError> {
    let mut bytes = serde_json::to_vec_pretty(id).expect("identity serialises");
    bytes.push(b'\n');
    durable::replace(dir, FILE_NAME, &bytes)
}

/// Make sure the directory of partition `expected` is this partition's,
/// creating it (with its identity, before any segment) if it is missing.
/// Refuses a directory that belongs to something else.
pub fn claim(data_dir: &Path, expected: &PartitionIdentity) -> Result<Claim, MetadataError> {
    claim_all(data_dir, std::slice::from_ref(expected))
        .pop()
        .expect("one result per partition")
}

/// [`claim`] for many partitions at once (a new topic, the partitions a
/// shard opens at startup): the identity files written are made durable
/// together by one `syncfs` of the data directory's file system, before
/// this returns and so before any segment exists. Three fsyncs per
/// partition made creating a 1000-partition topic take 5 s instead of 0.3 s.
pub fn claim_all(
    data_dir: &Path,
    expected: &[PartitionIdentity],
) -> Vec<Result<Claim, MetadataError>> {
    let mut out: Vec<Result<Claim, MetadataError>> = expected
        .iter()
        .map(|id| claim_unsynced(data_dir, id))
        .collect();
    let wrote = out
        .iter()
        .any(|r| matches!(r, Ok(Claim::Created | Claim::ClaimedEmpty)));
    if wrote {
        if let Err(e) = syncfs(data_dir) {
            let msg = e.to_string();
            for r in out.iter_mut() {
                if matches!(r, Ok(Claim::Created | Claim::ClaimedEmpty)) {
                    *r = Err(MetadataError::io("syncfs", data_dir)(std::io::Error::new(
                        e.kind(),
                        msg.clone(),
                    )));
                }
            }
        }
    }
    out
}

/// The decision of [`claim`], with any identity file written but not yet durable.
fn claim_unsynced(data_dir: &Path, expected: &PartitionIdentity) -> Result<Claim, MetadataError> {
    let dir = partition_dir(data_dir, &expected.topic, expected.partition);
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            write_unsynced(&dir, expected)?;
            return Ok(Claim::Created);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(MetadataError::io("create", &dir)(e)),
    }
    let found = read(&dir);
    if let Ok(Some(found)) = &found {
        if found == expected {
            return Ok(Claim::Matches);
        }
    }
    // Without a valid identity, a directory holding nothing else is one
    // whose creation a crash interrupted (identity files are made durable
    // before any segment is created): it is claimed.
    let only_identity = std::fs::read_dir(&dir)
        .map_err(MetadataError::io("list", &dir))?
        .filter_map(|e| e.ok())
        .all(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(FILE_NAME))
        });
    match found {
        Ok(Some(found)) => Err(MetadataError::IdentityMismatch {
            dir,
            found: Box::new(found),
            expected: Box::new(expected.clone()),
        }),
        _ if only_identity => {
            write_unsynced(&dir, expected)?;
            Ok(Claim::ClaimedEmpty)
        }
        Ok(None) => Err(MetadataError::Unidentified {
            dir,
            expected: Box::new(expected.clone()),
        }),
        Err(e) => Err(e),
    }
}

/// Write the identity through a temporary file and a rename (so it is
/// never seen half-written), leaving durability to the caller's syncfs.
fn write_unsynced(dir: &Path, id: &PartitionIdentity) -> Result<(), MetadataError> {
    let mut bytes = serde_json::to_vec_pretty(id).expect("identity serialises");
    bytes.push(b'\n');
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    std::fs::write(&tmp, &bytes).map_err(MetadataError::io("write", &tmp))?;
    let path = dir.join(FILE_NAME);
    std::fs::rename(&tmp, &path).map_err(MetadataError::io("rename", &path))
}

/// Flush the whole file system holding `path` (data, metadata, journal).
fn syncfs(path: &Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let d = std::fs::File::open(path)?;
    // SAFETY: a valid open file descriptor; syncfs takes no pointers.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Move the directory `data_dir/name` out of the way, into
/// `data_dir/stale/<name>.<topic id or "unidentified">-<unix ms>`, durably.
/// Its contents are not touched. `now_ms` is the caller's wall time (the
/// shard's clock). Returns where it went.
pub fn move_aside(data_dir: &Path, name: &str, now_ms: i64) -> Result<PathBuf, MetadataError> {
    let dir = data_dir.join(name);
    // An unreadable identity is still moved aside: the point is that it is not adopted.
    let tag = match read(&dir) {
        Ok(Some(id)) => id.topic_id,
        _ => "unidentified".to_string(),
    };
    let stale = data_dir.join(super::dirs::STALE_DIR);
    std::fs::create_dir_all(&stale).map_err(MetadataError::io("create", &stale))?;
    let ms = now_ms;
    let mut target = stale.join(format!("{name}.{tag}-{ms}"));
    let mut n = 1;
    while target.exists() {
        target = stale.join(format!("{name}.{tag}-{ms}.{n}"));
        n += 1;
    }
    std::fs::rename(&dir, &target).map_err(MetadataError::io("rename", &dir))?;
    durable::sync_dir(&stale)?;
    durable::sync_dir(data_dir)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(topic: &str, p: u32, tid: &str) -> PartitionIdentity {
        PartitionIdentity {
            topic: topic.into(),
            partition: p,
            topic_id: tid.into(),
        }
    }

    #[test]
    fn claim_creates_matches_and_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let a = id("t", 0, "aa");
        assert_eq!(claim(d, &a).unwrap(), Claim::Created);
        assert_eq!(read(&d.join("t-0")).unwrap(), Some(a.clone()));
        assert_eq!(claim(d, &a).unwrap(), Claim::Matches);
        // Same name, another topic id: refused, untouched.
        let b = id("t", 0, "bb");
        let e = claim(d, &b).unwrap_err();
        assert!(matches!(e, MetadataError::IdentityMismatch { .. }), "{e}");
        assert_eq!(read(&d.join("t-0")).unwrap(), Some(a));
        // No identity, empty (or a torn identity only): claimed; no identity with files: refused.
        std::fs::create_dir(d.join("u-0")).unwrap();
        assert_eq!(claim(d, &id("u", 0, "cc")).unwrap(), Claim::ClaimedEmpty);
        std::fs::create_dir(d.join("w-0")).unwrap();
        std::fs::write(d.join("w-0").join(FILE_NAME), b"{\"top").unwrap();
        assert_eq!(claim(d, &id("w", 0, "ee")).unwrap(), Claim::ClaimedEmpty);
        assert_eq!(read(&d.join("w-0")).unwrap(), Some(id("w", 0, "ee")));
        std::fs::create_dir(d.join("v-0")).unwrap();
        std::fs::write(d.join("v-0").join("00000000000000000000.log"), b"x").unwrap();
        let e = claim(d, &id("v", 0, "dd")).unwrap_err();
        assert!(matches!(e, MetadataError::Unidentified { .. }), "{e}");
    }

    #[test]
    fn move_aside_keeps_the_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        claim(d, &id("t", 3, "abc")).unwrap();
        std::fs::write(d.join("t-3").join("data"), b"old").unwrap();
        let to = move_aside(d, "t-3", 1_700_000_000_000).unwrap();
        assert!(!d.join("t-3").exists());
        assert!(to.starts_with(d.join("stale")));
        assert!(to
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("t-3.abc-"));
        assert_eq!(std::fs::read(to.join("data")).unwrap(), b"old");
    }
}
