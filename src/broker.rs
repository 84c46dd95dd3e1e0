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
    #[error("{0}")]
    Startup(String),
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

/// Reports a shard that exits by panicking before it reported ready.
struct ReadyGuard(std::sync::mpsc::Sender<Result<ShardReady, String>>, usize);

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        let _ = self
            .0
            .send(Err(format!("shard {} panicked during startup", self.1)));
    }
}

/// Number of online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Broker {
    pub fn start(mut config: BrokerConfig) -> Result<Broker, BrokerError> {
        config.validate()?;
        // The lock first: a refused broker must touch nothing in the
        // directory. Then every later use of the path is absolute.
        let data_dir = DataDir::open(&config.data_dir)?;
        config.data_dir = data_dir.path().to_path_buf();
        let topics = Arc::new(TopicTable::load(&config.data_dir)?);
        let n = config.shards.unwrap_or_else(online_cpus);
        let cpus = online_cpus();
        if n > cpus && config.pin_cpus {
            warn!(
                shards = n,
                cpus, "more shards than CPUs: shards share CPUs (shard N runs on CPU N mod {cpus})"
            );
        }
        // Bound before any shard starts, so a port conflict fails fast and
        // the ready line means every listener is serving.
        let mut listeners = Some(Listeners::bind(&config)?);
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
                .preempt_timer(Duration::from_millis(50));
            if config.spin_before_park_us > 0 {
                b = b.spin_before_park(Duration::from_micros(config.spin_before_park_us));
            }
            let (c, r, t, tx) = (
                config.clone(),
                router.clone(),
                topics.clone(),
                ready_tx.clone(),
            );
            let l = if id == 0 { listeners.take() } else { None };
            let handle = b
                .spawn(move || async move {
                    // If the shard dies before reporting, say so instead of leaving start() waiting.
                    let guard = ReadyGuard(tx.clone(), id);
                    shard::run(id, c, r, rx, t, tx, l).await;
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
                Ok(Err(e)) => {
                    let b = Broker {
                        router,
                        threads,
                        native_addr: "0.0.0.0:0".parse().unwrap(),
                        kafka_addr: None,
                        shards: n,
                        data_dir,
                    };
                    b.shutdown();
                    return Err(BrokerError::Startup(e));
                }
                Err(_) => return Err(BrokerError::Startup("a shard exited during startup".into())),
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
