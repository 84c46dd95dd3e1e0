//! Starting and stopping a broker: one pinned executor thread per shard.
//!
//! [`Broker::start`] returns once every shard has recovered its partitions
//! and the listeners are bound; [`Broker::shutdown`] stops accepting,
//! closes every partition (flush, fsync, indexes, checkpoints) and joins
//! the threads. The `serve` command wires SIGINT/SIGTERM to shutdown;
//! loadgen embeds a broker the same way.

use crate::config::BrokerConfig;
use crate::data_dir::DataDir;
use crate::metadata::TopicTable;
use crate::router::{reply_channel, Router, ShardMsg};
use crate::server::bind::Listeners;
use crate::shard::{self, ShardReady};
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// A shard's time slice (see the executor builder below). At 50 ms a
/// Metadata request under a produce flood took 150-800 ms at p99; 10 ms
/// still gave 30 ms at p50, since each step of a fresh client's way may
/// wait out a slice; 2 ms gave 22 ms at p50, but not safely: glommio 0.9
/// then sometimes parked an executor with its tasks runnable (a completion
/// of its preempt timer left in the latency ring makes `run_task_queues`
/// run nothing, and the park did not return), so a starting broker's
/// shard ran its first task only 62 s later, when a debugger's signal
/// woke it. `cargo test --test broker` hung in 7 of 25 runs at 2 ms
/// (CI too, at 4e91caa and 0712c39), 0 times in 12 at 10 ms.
const PREEMPT_TIMER: Duration = Duration::from_millis(10);

/// `stall_report_ms`: log each stall glommio's detector catches, with its backtrace.
#[derive(Debug)]
struct StallReport(Duration);

impl glommio::StallDetectionHandler for StallReport {
    fn threshold(&self, _: glommio::TaskQueueHandle, _: Duration) -> Option<Duration> {
        Some(self.0)
    }
    // The default `stall` logs through the `log` crate, which the tracing
    // subscriber prints (`WARN glommio::executor::stall`).
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
    #[error(transparent)]
    Bind(#[from] crate::server::bind::BindError),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error("cannot start shard {shard}: {detail}")]
    Executor { shard: usize, detail: String },
    #[error(
        "the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {} KiB; glommio needs at least {} KiB to start \
         its io_uring executors (and about shards x 3 x io_memory_bytes to register its I/O buffers). \
         Raise it: `ulimit -l unlimited` (as root) before starting, `LimitMEMLOCK=infinity` in a systemd unit, \
         `--ulimit memlock=-1:-1` for Docker, or a memlock line in /etc/security/limits.d/ (see tuning/README.md)",
        limit_bytes / 1024,
        MIN_MEMLOCK_BYTES / 1024
    )]
    MemlockTooLow { limit_bytes: u64 },
    #[error("{0}")]
    Startup(String),
    #[error(
        "refusing to start in cluster mode: the data directory {data_dir} holds topics a single \
         broker created ({topics}). The cluster's controller does not know them, so this broker \
         would delete them when it installs the controller's topic table. Start it without \
         --node-id to serve them, or move their directories and meta/ out of the data directory \
         first",
        data_dir = data_dir.display()
    )]
    SingleNodeTopicsInCluster {
        data_dir: std::path::PathBuf,
        /// "a, b, c (and N more)".
        topics: String,
    },
    #[error(
        "refusing to start as a single broker: the data directory {data_dir} belongs to a \
         cluster node (its topic table came from the cluster's controller). Alone, this broker \
         would create empty partitions for those other brokers lead. Start it with its \
         --node-id, --rpc-listen and --controller-voters",
        data_dir = data_dir.display()
    )]
    ClusterDataDirAlone { data_dir: std::path::PathBuf },
}

/// A data directory serves in the mode that made its topic table: a
/// single broker's topics would be deleted by a cluster node (the
/// controller does not know them), and a cluster node's table, served
/// alone, would make empty partitions for other brokers' ones.
fn check_mode_matches(
    topics: &TopicTable,
    cluster: bool,
    data_dir: &std::path::Path,
) -> Result<(), BrokerError> {
    let from_controller = topics.controller_index > 0;
    if cluster && !from_controller && !topics.topics.is_empty() {
        let names: Vec<&str> = topics.topics.keys().map(String::as_str).collect();
        let mut shown = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if names.len() > 5 {
            shown.push_str(&format!(" (and {} more)", names.len() - 5));
        }
        return Err(BrokerError::SingleNodeTopicsInCluster {
            data_dir: data_dir.to_path_buf(),
            topics: shown,
        });
    }
    if !cluster && from_controller {
        return Err(BrokerError::ClusterDataDirAlone {
            data_dir: data_dir.to_path_buf(),
        });
    }
    Ok(())
}

pub struct Broker {
    router: Router,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    pub native_addr: SocketAddr,
    pub kafka_addr: Option<SocketAddr>,
    pub shards: usize,
    /// The data directory's absolute path, locked until the broker is dropped.
    data_dir: DataDir,
}

/// Reports a shard that stops before it reported ready: its code panicked,
/// or its executor never ran it (glommio failed to set up the thread's
/// io_uring, and dropped the closure that owns this guard). Without it,
/// `start` would wait forever on the other shards' senders.
struct ReadyGuard(std::sync::mpsc::Sender<Result<ShardReady, String>>, usize);

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        let _ = self
            .0
            .send(Err(format!("shard {} stopped during startup", self.1)));
    }
}

/// glommio 0.9 refuses to create an executor below this RLIMIT_MEMLOCK
/// (`Reactor::new`, DESIGN.md §4).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// The soft RLIMIT_MEMLOCK in bytes; None when unlimited or unknown.
fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur)
}

/// Whether the process may lock memory beyond its limit (CAP_IPC_LOCK, as
/// root normally has), read from /proc/self/status.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Check the locked-memory limit before any executor starts.
///
/// **Why.** Below 512 KiB glommio fails every executor with an error that
/// reached the user as "a shard exited during startup"; say instead which
/// limit it is and how to raise it. Above that but below what the shards'
/// registered buffers need, glommio only logs a raw `Os { code: 12 }`
/// warning and runs on unregistered (slower) buffers: explain that too.
fn check_memlock(shards: usize, io_memory_bytes: usize) -> Result<(), BrokerError> {
    let Some(limit) = memlock_limit() else {
        return Ok(());
    };
    if limit < MIN_MEMLOCK_BYTES {
        return Err(BrokerError::MemlockTooLow { limit_bytes: limit });
    }
    // Each executor registers its io_memory with up to three rings.
    let wanted = (shards as u64) * 3 * (io_memory_bytes.max(65536) as u64);
    if limit < wanted && !has_cap_ipc_lock() {
        warn!(
            memlock_kib = limit / 1024,
            wanted_kib = wanted / 1024,
            "the locked-memory limit (ulimit -l) is below shards x 3 x io_memory_bytes: io_uring buffers may not be registered and I/O runs slower; raise it (ulimit -l unlimited, LimitMEMLOCK=infinity) or lower io_memory_bytes"
        );
    }
    Ok(())
}

/// What this broker tells the controller about itself: its shard count
/// and the addresses clients reach it at.
fn announce(
    config: &BrokerConfig,
    ls: &Listeners,
    shards: usize,
) -> Result<crate::cluster::driver::Announce, BrokerError> {
    let addr = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.to_string())
            .map_err(|e| BrokerError::Startup(format!("listener address: {e}")))
    };
    let kafka_addr = match (&config.advertised_kafka_addr, &ls.kafka) {
        (Some(a), _) => a.clone(),
        (None, Some(k)) => addr(k)?,
        (None, None) => String::new(),
    };
    Ok(crate::cluster::driver::Announce {
        shards: shards.min(u16::MAX as usize) as u16,
        kafka_addr,
        native_addr: addr(&ls.native)?,
    })
}

/// Number of online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Stop the shards that did start, join every thread, and return the most
/// telling error: an executor's own failure (glommio's reason) if one
/// failed, else `reported`. The data directory lock is released by the
/// caller dropping it, after this has joined every thread.
fn abort_startup(
    router: Router,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    reported: String,
) -> BrokerError {
    let mut waits = Vec::new();
    for s in 0..router.shards() {
        let (tx, rx) = reply_channel();
        if router.send(s, ShardMsg::Shutdown { reply: tx }).is_ok() {
            waits.push((s, rx));
        }
    }
    // A shard that fails on its own just after the message was queued
    // never answers, and its queued reply sender is never dropped (see
    // `Router::is_gone`): wait only while the shard is still there.
    for (s, rx) in waits {
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Err(flume::RecvTimeoutError::Timeout) if !router.is_gone(s) => continue,
                _ => break,
            }
        }
    }
    let mut first = None;
    for (shard, t) in threads.into_iter().enumerate() {
        if let Err(e) = t.join() {
            // Each executor needs a handful of descriptors (rings, eventfds)
            // before any partition is open: name the limit that ran out.
            let emfile = matches!(&e, glommio::GlommioError::IoError(io)
                if io.raw_os_error() == Some(libc::EMFILE));
            let hint = if emfile {
                "; raise the open-file limit (ulimit -n, LimitNOFILE=)"
            } else {
                ""
            };
            first.get_or_insert(BrokerError::Executor {
                shard,
                detail: format!("{e}{hint}"),
            });
        }
    }
    first.unwrap_or(BrokerError::Startup(reported))
}

impl Broker {
    pub fn start(mut config: BrokerConfig) -> Result<Broker, BrokerError> {
        config.validate()?;
        let n = config.shards.unwrap_or_else(online_cpus);
        // Before the directory is touched: a limit that stops every
        // executor is the user's to fix, and nothing should be created first.
        check_memlock(n, config.io_memory_bytes)?;
        // The lock first: a refused broker must touch nothing in the
        // directory. Then every later use of the path is absolute.
        let data_dir = DataDir::open_waiting(
            &config.data_dir,
            Duration::from_millis(config.bind_wait_ms),
            |pid| {
                tracing::info!(
                    "data directory lock still held by PID {}, which has exited or is exiting; waiting for the kernel to release it",
                    pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                )
            },
        )?;
        config.data_dir = data_dir.path().to_path_buf();
        // Bound before anything is read or created in the directory and
        // before any shard starts: a port conflict fails fast, leaves a new
        // data directory holding only its lock file, and the ready line
        // means every listener is serving.
        let cluster = config.cluster()?;
        let mut listeners = Some(Listeners::bind(&config)?);
        let topics = Arc::new(TopicTable::load(&config.data_dir)?);
        check_mode_matches(&topics, cluster.is_some(), &config.data_dir)?;
        let cpus = online_cpus();
        if n > cpus && config.pin_cpus {
            warn!(
                shards = n,
                cpus, "more shards than CPUs: shards share CPUs (shard N runs on CPU N mod {cpus})"
            );
        }
        let config = Arc::new(config);
        let (router, receivers) = Router::new(n);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        for (id, rx) in receivers.into_iter().enumerate() {
            // Pin shard N to CPU N (wrapping when there are more shards than CPUs).
            let placement = if config.pin_cpus {
                Placement::Fixed(id % cpus)
            } else {
                Placement::Unbound
            };
            let mut b = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .io_memory(config.io_memory_bytes)
                // How long tasks run before the executor polls for I/O
                // again, and when `yield_if_needed` yields: this bounds
                // how long a fresh client's request waits behind a large
                // produce (conversion and append yield between partitions).
                .preempt_timer(PREEMPT_TIMER);
            if config.spin_before_park_us > 0 {
                b = b.spin_before_park(Duration::from_micros(config.spin_before_park_us));
            }
            if config.stall_report_ms > 0 {
                b = b.detect_stalls(Some(Box::new(StallReport(Duration::from_millis(
                    config.stall_report_ms,
                )))));
            }
            let (c, r, t, tx) = (
                config.clone(),
                router.clone(),
                topics.clone(),
                ready_tx.clone(),
            );
            let mut l = if id == 0 { listeners.take() } else { None };
            // Shard 0 runs the cluster side (controller replica, rpc).
            let cluster_start = match (&cluster, l.as_mut()) {
                (Some(cs), Some(ls)) => {
                    let announce = announce(&config, ls, n)?;
                    let rpc = ls.rpc.take().expect("cluster mode binds the rpc listener");
                    Some((cs.clone(), rpc, announce))
                }
                _ => None,
            };
            // Made here, not inside the closure: if the executor never runs
            // the closure, dropping it must still report the shard.
            let guard = ReadyGuard(tx.clone(), id);
            let handle = b
                .spawn(move || async move {
                    // The server layer plugs in here: the shard, below it,
                    // calls these rather than naming `server::acceptor`.
                    let cluster = match cluster_start {
                        Some((cs, rpc, announce)) => {
                            match crate::cluster::driver::start(cs, &c, rpc, announce) {
                                Ok(d) => Some(d),
                                Err(e) => {
                                    // Reported like any startup failure: the guard
                                    // tells `start` this shard stopped.
                                    tracing::error!("cannot start the cluster side: {e}");
                                    return;
                                }
                            }
                        }
                        None => None,
                    };
                    // The server layer plugs in here: the shard, below it,
                    // calls these rather than naming `server::acceptor`.
                    let frontend = shard::Frontend {
                        listen: l.map(|l| -> shard::Listen {
                            Box::new(move |s| {
                                crate::server::acceptor::serve_listeners(
                                    s,
                                    l,
                                    crate::kafka::serve_connection,
                                )
                            })
                        }),
                        adopt,
                        // In a cluster, clients are served once this
                        // broker caught up with the controller.
                        attach: cluster.map(|d| -> shard::Attach {
                            Box::new(move |s| {
                                d.attach(s);
                                Box::pin(d.catch_up(crate::cluster::driver::CATCH_UP_WAIT))
                            })
                        }),
                    };
                    shard::run(id, c, r, rx, t, tx, frontend).await;
                    std::mem::forget(guard);
                })
                .map_err(|e| BrokerError::Executor {
                    shard: id,
                    detail: e.to_string(),
                })?;
            threads.push(handle);
        }
        drop(ready_tx);
        let mut native_addr = None;
        let mut kafka_addr = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(ShardReady {
                    shard,
                    native_addr: na,
                    kafka_addr: ka,
                })) => {
                    if shard == 0 {
                        native_addr = na;
                        kafka_addr = ka;
                    }
                }
                Ok(Err(e)) => return Err(abort_startup(router, threads, e)),
                Err(_) => {
                    return Err(abort_startup(
                        router,
                        threads,
                        "a shard exited during startup".into(),
                    ))
                }
            }
        }
        let native_addr = native_addr.expect("shard 0 reports the listener address");
        info!(shards = n, native = %native_addr, kafka = ?kafka_addr, "broker ready");
        Ok(Broker {
            router,
            threads,
            native_addr,
            kafka_addr,
            shards: n,
            data_dir,
        })
    }

    /// The data directory, resolved to its canonical absolute path.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Stop accepting, close every partition durably, join the shard threads.
    pub fn shutdown(self) {
        let mut waits = Vec::new();
        for s in 0..self.router.shards() {
            let (tx, rx) = reply_channel();
            if self
                .router
                .send(s, ShardMsg::Shutdown { reply: tx })
                .is_ok()
            {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv();
        }
        for t in self.threads {
            let _ = t.join();
        }
        // The lock goes last, once no shard can touch the directory.
        drop(self.data_dir);
        info!("broker stopped");
    }
}

/// Serve a connection another shard accepted ([`shard::Frontend::adopt`]):
/// the server's acceptor, with the Kafka listener plugged in.
fn adopt(
    shard: &std::rc::Rc<shard::Shard>,
    stream: glommio::net::TcpStream,
    kind: crate::router::ListenerKind,
) {
    crate::server::acceptor::serve(shard, stream, kind, crate::kafka::serve_connection)
}
