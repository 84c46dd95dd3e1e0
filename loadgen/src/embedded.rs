//! A broker inside the loadgen process, for runs without `--broker`.
//!
//! It listens on 127.0.0.1 (ephemeral ports: the native listener always,
//! the Kafka listener too for `--protocol kafka`), keeps its data in a
//! temporary directory that is removed afterwards, and runs
//! one shard per online CPU, pinned as in production. Loadgen's own
//! threads are not pinned, so on a small machine they share cores with the
//! shards; the report's CPU figures show by how much.

use crate::transport::Protocol;
use serde::Serialize;
use shardlog::broker::{Broker, BrokerError};
use shardlog::config::BrokerConfig;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot create a data directory under {dir}: {source}")]
    TempDir {
        dir: PathBuf,
        source: std::io::Error,
    },
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
}

pub struct EmbeddedBroker {
    broker: Option<Broker>,
    dir: tempfile::TempDir,
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
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("loadgen-broker-")
            .tempdir_in(&parent)
            .map_err(|source| EmbeddedError::TempDir {
                dir: parent.clone(),
                source,
            })?;
        let broker = Broker::start(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            kafka_listen: match protocol {
                Protocol::Native => "".into(),
                Protocol::Kafka => "127.0.0.1:0".into(),
            },
            shards,
            ..Default::default()
        })?;
        if protocol == Protocol::Kafka && broker.kafka_addr.is_none() {
            broker.shutdown();
            return Err(EmbeddedError::NoKafkaListener);
        }
        Ok(EmbeddedBroker {
            broker: Some(broker),
            dir,
            protocol,
        })
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
            data_dir: Some(self.dir.path().display().to_string()),
            data_dir_fs: fs_type(self.dir.path()),
            broker_pid: None,
        }
    }

    /// Stop the broker (closing every partition durably) and remove its data.
    pub fn shutdown(mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
    }
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
