//! A broker inside the loadgen process, for runs without `--broker`.
//!
//! It listens on 127.0.0.1 (ephemeral ports: the native listener always,
//! the Kafka listener too for `--protocol kafka`), keeps its data in a
//! temporary directory that is removed afterwards, and runs
//! one shard per online CPU, pinned as in production. Loadgen's own
//! threads are not pinned, so on a small machine they share cores with the
//! shards; the report's CPU figures show by how much.
//!
//! **Memory.** The broker shares loadgen's address space, so its budgets
//! are loadgen's: they are set here, smaller than a production broker's
//! defaults, and [`EmbeddedBroker::memory_budget`] adds them up for the
//! README and the tests, including data appended with acks=0/1 that the
//! disk has not absorbed yet (`max_unwritten_bytes_per_shard`).
//!
//! **Cleanup.** The data directory is removed when the broker is dropped or
//! shut down. A process that exits without unwinding (a second Ctrl-C,
//! SIGTERM) must call [`remove_data_dirs`] first: every directory this
//! process created and has not yet removed is registered for it.

use crate::transport::Protocol;
use serde::Serialize;
use shardlog::broker::{Broker, BrokerError};
use shardlog::config::BrokerConfig;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Batch cache per shard: a standalone broker's default, so that a run
/// without `--broker` measures what `shardlog serve` gives. Why not less:
/// the broker writes with O_DIRECT, so a consumer that falls further
/// behind than the cache reads from disk, beside the producers' writes,
/// and does not catch up while they run. At 128 MiB per shard (0.3 s of a
/// 2-producer 1 KB acks=1 run at ~850 MiB/s) the live consumer fell out
/// of it in 3 of 3 runs, read ~14 GiB from disk and consumed 60-78% of
/// what was produced; at 512 MiB it stayed in the cache in 2 of 3 (0
/// bytes from disk, 100% consumed, both sides' CPU per GB ~20% lower).
pub const CACHE_BYTES_PER_SHARD: usize = 512 << 20;
/// Request bytes a shard holds while serving them.
pub const INFLIGHT_BYTES_PER_SHARD: usize = 128 << 20;
/// Appended bytes a shard holds ahead of its flushers (acks=0/1).
pub const UNWRITTEN_BYTES_PER_SHARD: usize = 64 << 20;

/// Data directories of embedded brokers still alive in this process.
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove every embedded broker's data directory this process still has,
/// for exits that skip destructors. The broker may still be writing: a
/// file it creates meanwhile makes the removal fail, so it is retried.
pub fn remove_data_dirs() {
    let dirs = std::mem::take(&mut *LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for d in dirs {
        for _ in 0..5 {
            match std::fs::remove_dir_all(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => break,
            }
        }
    }
}

/// Have [`remove_data_dirs`] remove `dir` (a broker's data, here or in
/// a `--cluster` process) on an exit that skips destructors.
fn register_dir(dir: &Path) {
    LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
}

/// `dir` was removed (or is about to be) by its owner.
pub fn unregister_dir(dir: &Path) {
    LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != dir);
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create a data directory under {dir}: {source}")]
pub struct TempDirError {
    pub dir: PathBuf,
    pub source: std::io::Error,
}

/// A temporary directory `PREFIX*` under `parent` (default: the system
/// temp dir), registered for [`remove_data_dirs`]; its owner calls
/// [`unregister_dir`] once it removed it.
pub fn registered_tempdir(
    parent: Option<&Path>,
    prefix: &str,
) -> Result<tempfile::TempDir, TempDirError> {
    let parent = parent
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    // `--data-dir DIR` names where the data goes: a DIR that does not
    // exist yet is made (as `shardlog serve --data-dir` does), not refused.
    std::fs::create_dir_all(&parent).map_err(|source| TempDirError {
        dir: parent.clone(),
        source,
    })?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(|source| TempDirError {
            dir: parent.clone(),
            source,
        })?;
    register_dir(dir.path());
    Ok(dir)
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    TempDir(#[from] TempDirError),
    #[error("cannot start the embedded broker: {0}")]
    Start(#[from] BrokerError),
    #[error("the embedded broker started without its Kafka listener")]
    NoKafkaListener,
}

/// What the report says about the broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub embedded: bool,
    /// The address loadgen talked to (for the run's protocol).
    pub addr: String,
    pub shards: Option<usize>,
    pub data_dir: Option<String>,
    /// File system type of the data directory (direct I/O on tmpfs is not).
    pub data_dir_fs: Option<String>,
    pub broker_pid: Option<u32>,
    /// Brokers of the local cluster loadgen started (`--cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_brokers: Option<u32>,
}

pub struct EmbeddedBroker {
    broker: Option<Broker>,
    /// Taken (and removed) after the broker has stopped.
    dir: Option<tempfile::TempDir>,
    protocol: Protocol,
}

impl EmbeddedBroker {
    /// Start a broker with its data under `parent` (default: the system temp dir).
    ///
    /// With `Protocol::Kafka` the Kafka listener is enabled too, and
    /// [`addr`](Self::addr) is its address.
    pub fn start(
        parent: Option<&Path>,
        shards: Option<usize>,
        protocol: Protocol,
    ) -> Result<EmbeddedBroker, EmbeddedError> {
        let dir = registered_tempdir(parent, "loadgen-broker-")?;
        // From here on the directory is registered; a failed start drops
        // `dir` (removing it) and must unregister it too.
        let started = Self::start_in(&dir, shards, protocol);
        if started.is_err() {
            unregister_dir(dir.path());
        }
        Ok(EmbeddedBroker {
            broker: Some(started?),
            dir: Some(dir),
            protocol,
        })
    }

    fn start_in(
        dir: &tempfile::TempDir,
        shards: Option<usize>,
        protocol: Protocol,
    ) -> Result<Broker, EmbeddedError> {
        let broker = Broker::start(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            kafka_listen: match protocol {
                Protocol::Native => "".into(),
                Protocol::Kafka => "127.0.0.1:0".into(),
            },
            shards,
            ..Self::budgets()
        })?;
        if protocol == Protocol::Kafka && broker.kafka_addr.is_none() {
            broker.shutdown();
            return Err(EmbeddedError::NoKafkaListener);
        }
        Ok(broker)
    }

    /// What the broker's settings bound, in bytes
    /// ([`BrokerConfig::memory_bound`] of the settings used here, for
    /// loadgen's connections).
    pub fn memory_budget(shards: usize) -> u64 {
        Self::budgets().memory_bound(shards, 64)
    }

    /// The budgets an embedded broker runs with (the rest: defaults).
    fn budgets() -> BrokerConfig {
        BrokerConfig {
            shard_cache_bytes_max: CACHE_BYTES_PER_SHARD,
            max_inflight_bytes_per_shard: INFLIGHT_BYTES_PER_SHARD,
            max_unwritten_bytes_per_shard: UNWRITTEN_BYTES_PER_SHARD,
            ..Default::default()
        }
    }

    /// Let freed pages stay resident while pages in use plus kept fit in
    /// this broker's data budgets plus `loadgen_bytes` (loadgen's own
    /// budget, `WorkloadSpec::memory_budget`), as `shardlog serve` keeps
    /// them within its data budgets (shardlog's src/alloc.rs). Without
    /// it the governor purged all kept pages past 128 MiB 4-7 times in a
    /// 13 s 1 KB run, to be faulted in and zeroed again.
    pub fn keep_freed_pages_for(&self, loadgen_bytes: u64) {
        let shards = self.broker.as_ref().map_or(1, |b| b.shards);
        shardlog::alloc::set_heap_bytes_max(
            Self::budgets().heap_bytes_max(shards) + loadgen_bytes as usize,
        );
    }

    /// The data directory (removed when the broker stops).
    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// The address of the listener for the protocol it was started for.
    pub fn addr(&self) -> String {
        match self.protocol {
            Protocol::Native => self.native_addr(),
            Protocol::Kafka => self.kafka_addr().unwrap_or_default(),
        }
    }

    pub fn native_addr(&self) -> String {
        self.broker
            .as_ref()
            .map(|b| b.native_addr.to_string())
            .unwrap_or_default()
    }

    pub fn kafka_addr(&self) -> Option<String> {
        self.broker
            .as_ref()
            .and_then(|b| b.kafka_addr)
            .map(|a| a.to_string())
    }

    pub fn info(&self) -> BrokerInfo {
        BrokerInfo {
            embedded: true,
            addr: self.addr(),
            shards: self.broker.as_ref().map(|b| b.shards),
            data_dir: Some(self.data_dir().display().to_string()),
            data_dir_fs: fs_type(self.data_dir()),
            broker_pid: None,
            cluster_brokers: None,
        }
    }

    /// Stop the broker (closing every partition durably) and remove its data.
    pub fn shutdown(self) {
        drop(self)
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // The broker first: it holds files in the directory.
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
        if let Some(dir) = self.dir.take() {
            remove_registered(dir);
        }
    }
}

/// Remove a directory from [`registered_tempdir`] and unregister it.
pub fn remove_registered(dir: tempfile::TempDir) {
    let path = dir.path().to_path_buf();
    // An error here (already removed by remove_data_dirs) leaves nothing
    // to clean up.
    let _ = dir.close();
    unregister_dir(&path);
}

/// The file system type of `path`, from statfs's magic number.
pub fn fs_type(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    let name = match st.f_type as u64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs (no direct I/O: figures are not representative)",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        other => return Some(format!("unknown (0x{other:x})")),
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_that_does_not_exist_yet_is_made() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("not/yet");
        let dir = registered_tempdir(Some(&parent), "loadgen-test-").unwrap();
        assert!(dir.path().starts_with(&parent) && dir.path().is_dir());
        unregister_dir(dir.path());
    }
}
