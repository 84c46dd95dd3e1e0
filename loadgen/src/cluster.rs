//! A local cluster of `shardlog serve` processes, for `--cluster N`: what
//! a replicated topic (`--replication-factor` above 1) needs, on one host.
//!
//! Every broker listens on loopback ports picked free (native, Kafka and
//! RPC), keeps its data in a subdirectory of one temporary directory, and
//! is a controller voter (`--node-id I --controller-voters 1@..,2@..`).
//! Each runs **one shard, unpinned** unless told otherwise: shard threads
//! pinned by three brokers would pile onto the same first cores, and on a
//! small machine (the 2-core VM the README's figures come from) N brokers
//! and loadgen share the cores anyway, so more shards only add threads
//! fighting for them.
//!
//! [`LocalCluster::start`] returns once the controller has a leader and
//! every broker is live (what `shardlog cluster status --wait-for-brokers
//! N` waits for) and each broker's listeners accept connections. Loadgen
//! then talks to broker 1, which forwards topic changes to the controller;
//! clients follow partition leaders to the other brokers.
//!
//! **Cleanup.** Dropping the cluster stops every broker (SIGTERM, then
//! SIGKILL after a grace period) and removes the data. Exits that skip
//! destructors (a second Ctrl-C) call [`kill_all`] first. Each broker also
//! gets SIGKILL from the kernel if loadgen dies without either
//! (`PR_SET_PDEATHSIG`), so no broker outlives it; only its data directory
//! would then be left behind.

use crate::embedded::{registered_tempdir, remove_registered, TempDirError};
use shardlog::cluster::admin;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the brokers may take to elect a controller and register
/// (a debug build on a loaded 2-core machine takes a few seconds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Pids of brokers this process started and has not stopped yet.
static LIVE_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILL every broker this process still runs, for exits that skip
/// destructors; [`crate::embedded::remove_data_dirs`] removes their data
/// afterwards.
pub fn kill_all() {
    let pids = std::mem::take(&mut *LIVE_PIDS.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: reaps our own child; `status` is a live local.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no shardlog binary at {0} (build it: cargo build -p shardlog [--release], or give --shardlog-bin PATH)")]
    NoBinary(PathBuf),
    #[error("cannot find loadgen's own executable to look for shardlog next to it: {0}")]
    NoOwnPath(std::io::Error),
    #[error(transparent)]
    TempDir(#[from] TempDirError),
    #[error("cannot write {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot pick free loopback ports: {0}")]
    Ports(std::io::Error),
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "broker {node} exited ({status}) while the cluster started; the end of its log:\n{log}"
    )]
    Exited {
        node: u32,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error(
        "the cluster was not ready after {waited:?}: {state}; the end of broker 1's log:\n{log}"
    )]
    NotReady {
        waited: Duration,
        state: String,
        log: String,
    },
}

/// What `--cluster` asks for.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub brokers: u32,
    /// The `shardlog` binary; None: next to loadgen's executable.
    pub bin: Option<PathBuf>,
    /// Parent of the temporary data directory (None: the system temp dir).
    pub parent: Option<PathBuf>,
    /// Shards per broker (None: 1).
    pub shards: Option<usize>,
}

/// One broker of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: u32,
    pub native_addr: String,
    pub kafka_addr: String,
    pub rpc_addr: String,
    pub pid: u32,
    log: PathBuf,
}

pub struct LocalCluster {
    nodes: Vec<Node>,
    children: Vec<Child>,
    pub bin: PathBuf,
    pub shards: usize,
    /// Taken (and removed) once the brokers have stopped.
    dir: Option<tempfile::TempDir>,
}

/// `shardlog` next to the running executable (target/<profile>/ for both
/// when built by cargo).
pub fn default_bin() -> Result<PathBuf, ClusterError> {
    let me = std::env::current_exe().map_err(ClusterError::NoOwnPath)?;
    Ok(me.with_file_name("shardlog"))
}

/// `n` distinct free loopback ports: all bound at once, then released
/// for the brokers to bind (another process could take one meanwhile; the
/// broker then fails to start and says so).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The last `max` bytes of a log file, for error messages.
fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

impl LocalCluster {
    /// Start the brokers and wait until they form a cluster.
    pub fn start(opts: &ClusterOptions) -> Result<LocalCluster, ClusterError> {
        let bin = match &opts.bin {
            Some(b) => b.clone(),
            None => default_bin()?,
        };
        if !bin.is_file() {
            return Err(ClusterError::NoBinary(bin));
        }
        let dir = registered_tempdir(opts.parent.as_deref(), "loadgen-cluster-")?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            children: Vec::new(),
            bin,
            shards: opts.shards.unwrap_or(1),
            dir: Some(dir),
        };
        // From here on, an error drops `cluster`: brokers stopped, data removed.
        cluster.spawn_all(opts.brokers)?;
        cluster.wait_ready(READY_TIMEOUT)?;
        Ok(cluster)
    }

    fn spawn_all(&mut self, brokers: u32) -> Result<(), ClusterError> {
        let n = brokers as usize;
        let ports = free_ports(3 * n).map_err(ClusterError::Ports)?;
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let voters = (0..n)
            .map(|i| format!("{}@{}", i + 1, addr(2 * n + i)))
            .collect::<Vec<_>>()
            .join(",");
        let dir = self.data_dir().to_path_buf();
        for i in 0..n {
            let id = i as u32 + 1;
            let (native_addr, kafka_addr, rpc_addr) = (addr(i), addr(n + i), addr(2 * n + i));
            let log = dir.join(format!("node{id}.log"));
            let data = dir.join(format!("node{id}"));
            let log_err = |source| ClusterError::Log {
                path: log.clone(),
                source,
            };
            let out = File::create(&log).map_err(log_err)?;
            let err = out.try_clone().map_err(log_err)?;
            let mut cmd = Command::new(&self.bin);
            cmd.arg("serve")
                .args(["--node-id", &id.to_string()])
                .args(["--rpc-listen", &rpc_addr])
                .args(["--controller-voters", &voters])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen", &native_addr])
                .args(["--kafka-listen", &kafka_addr])
                .args(["--shards", &self.shards.to_string()])
                .arg("--no-pin")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            // SAFETY: prctl is async-signal-safe and touches no memory of
            // ours. The broker is killed when the thread that started it
            // exits: loadgen starts brokers from its main thread.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
            let pid = child.id();
            LIVE_PIDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pid);
            self.children.push(child);
            self.nodes.push(Node {
                id,
                native_addr,
                kafka_addr,
                rpc_addr,
                pid,
                log,
            });
        }
        Ok(())
    }

    /// Wait for a controller leader, every broker live, and every
    /// listener accepting connections; fail early if a broker exits.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let t0 = Instant::now();
        let want = self.nodes.len();
        loop {
            for (node, child) in self.nodes.iter().zip(self.children.iter_mut()) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ClusterError::Exited {
                        node: node.id,
                        status,
                        log: log_tail(&node.log, 2000),
                    });
                }
            }
            let first = &self.nodes[0];
            let state = match admin::view(&first.rpc_addr, Duration::from_secs(2)) {
                Ok(v) => {
                    let live = v.state.brokers.values().filter(|b| b.live).count();
                    if v.leader.is_some() && live >= want && self.listeners_up() {
                        return Ok(());
                    }
                    format!(
                        "controller leader {}, {live} of {want} brokers live",
                        v.leader.map_or("none".into(), |l| l.to_string())
                    )
                }
                Err(e) => e.to_string(),
            };
            if t0.elapsed() >= timeout {
                return Err(ClusterError::NotReady {
                    waited: timeout,
                    state,
                    log: log_tail(&first.log, 2000),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn listeners_up(&self) -> bool {
        self.nodes.iter().all(|n| {
            [&n.native_addr, &n.kafka_addr].iter().all(|a| {
                a.parse()
                    .is_ok_and(|sa| TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_ok())
            })
        })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The temporary directory holding every broker's data and log.
    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// Every broker's pid, for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// Stop every broker and remove the data.
    pub fn shutdown(self) {
        drop(self)
    }

    fn stop_brokers(&mut self) {
        for c in &self.children {
            // SAFETY: as in kill_all; the child is not reaped yet.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        let mut live = LIVE_PIDS.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|p| !self.nodes.iter().any(|n| n.pid == *p));
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // The brokers first: they hold files in the directory.
        self.stop_brokers();
        if let Some(dir) = self.dir.take() {
            remove_registered(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut p = free_ports(9).unwrap();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 9);
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let e = LocalCluster::start(&ClusterOptions {
            brokers: 3,
            bin: Some("/nonexistent/shardlog".into()),
            parent: None,
            shards: None,
        })
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("no shardlog binary at /nonexistent/shardlog"),
            "{e}"
        );
    }
}
