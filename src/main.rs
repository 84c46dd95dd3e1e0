//! The `shardlog` command: serve a broker, manage topics, produce and consume.
//!
//! The library does the work; this file parses flags and wires pieces
//! together. Exit codes: 0 success, 1 failure (with a message on stderr),
//! 2 bad usage (from clap).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use shardlog::client::{
    Client, Consumer, ConsumerConfig, FixedPartitioner, Partitioner, Producer, ProducerConfig,
    StartAt,
};
use shardlog::config::BrokerConfig;
use shardlog::format::Compression;
use shardlog::protocol::messages::Acks;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

shardlog::use_jemalloc!();

#[derive(Parser)]
#[command(
    name = "shardlog",
    version,
    about = "A Kafka-style commit-log broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a broker.
    Serve(ServeArgs),
    /// Create, list, describe, grow and delete topics.
    Topic {
        #[command(subcommand)]
        cmd: TopicCmd,
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9400",
            env = "SHARDLOG_BROKER"
        )]
        broker: String,
    },
    /// Send one message per stdin line; exits 0 only once every message is acknowledged.
    Produce(ProduceArgs),
    /// Print messages, one value per line.
    Consume(ConsumeArgs),
    /// Rebuild a lost topic table (meta/topics.json) from the partition
    /// directories, with the broker stopped.
    RecoverMetadata(RecoverArgs),
    /// A cluster's controller: its state as one broker sees it, topic creation.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
        /// A broker's RPC address (its --rpc-listen); any broker will do.
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9401",
            env = "SHARDLOG_RPC"
        )]
        rpc: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Brokers (live or fenced, addresses), the controller leader, and
    /// partitions led per broker, as the broker at --rpc sees them.
    Status {
        /// Also list every partition's leader, shard and leader epoch.
        #[arg(long)]
        partitions: bool,
        /// Wait (up to 30 s) until this many brokers are live, e.g. in a
        /// script that starts a cluster; fails if they are not.
        #[arg(long, default_value_t = 0)]
        wait_for_brokers: usize,
    },
    /// Create a topic through the controller (from any broker: it
    /// forwards to the controller leader); prints its placement.
    CreateTopic {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas of each partition (at most the live brokers); above 1
        /// each partition is a Raft group (docs/replication.md).
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// More brokers' RPC addresses to retry through, comma-separated.
        #[arg(long, value_delimiter = ',')]
        also: Vec<String>,
    },
    /// Move a replicated topic's partitions to another set of brokers
    /// while they serve (scale-out: name a new broker). Each new replica
    /// joins its partition's Raft group as a learner, is promoted once it
    /// has caught up, and the replicas left out are removed and their data
    /// deleted. Naming the current set cancels a reassignment in progress.
    Reassign {
        topic: String,
        /// The brokers every chosen partition should end on, e.g. 2,3,4.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
        /// Only these partitions (repeatable or comma-separated); default: all.
        #[arg(long, value_delimiter = ',')]
        partition: Vec<u32>,
        /// Return once proposed instead of waiting until every partition
        /// has moved (the wait gives up after --timeout-secs).
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// More brokers' RPC addresses to retry through, comma-separated.
        #[arg(long, value_delimiter = ',')]
        also: Vec<String>,
    },
}

#[derive(Args)]
struct RecoverArgs {
    /// The broker's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Rebuild even if the current table is readable (it is kept next to the new one).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the broker settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./shardlog-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of shards, one pinned executor each [default: all online CPUs].
    #[arg(long)]
    shards: Option<usize>,
    /// Native protocol listener [default: 127.0.0.1:9400].
    #[arg(long)]
    listen: Option<String>,
    /// Kafka protocol listener; "" disables it [default: 127.0.0.1:9092].
    #[arg(long)]
    kafka_listen: Option<String>,
    /// Address advertised to Kafka clients in Metadata.
    #[arg(long)]
    advertised_kafka_addr: Option<String>,
    /// Longest time appended data may stay un-synced, in ms.
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// Do not pin shard threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// This broker's id in a cluster (>= 1); without it the broker runs alone.
    #[arg(long)]
    node_id: Option<u32>,
    /// Listener for other brokers (cluster mode).
    #[arg(long)]
    rpc_listen: Option<String>,
    /// The controller's voters: 1@HOST:PORT,2@HOST:PORT,3@HOST:PORT (their RPC addresses).
    #[arg(long)]
    controller_voters: Option<String>,
    /// Set any other setting: --set key=value (TOML value syntax), repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (a cluster's brokers; at most the live
        /// ones). Default: the broker's `default_replication_factor`.
        #[arg(long)]
        replication_factor: Option<u16>,
        /// Topic setting, repeatable: retention_ms, retention_bytes, segment_bytes, segment_ms, ...
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List topics with their partition counts.
    List,
    /// Show a topic's settings and partitions.
    Describe { name: String },
    /// Grow a topic to N partitions (never shrinks).
    Alter {
        name: String,
        #[arg(long)]
        partitions: u32,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Args)]
struct ProduceArgs {
    topic: String,
    #[arg(long, default_value = "127.0.0.1:9400", env = "SHARDLOG_BROKER")]
    broker: String,
    /// Split each line at the first SEP into key and value (lines without SEP get a null key).
    #[arg(long)]
    key_separator: Option<String>,
    /// Send every message to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Seal a partition's batch at this many bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_bytes: usize,
    /// Wait up to this long for a batch to fill.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(Args)]
struct ConsumeArgs {
    topic: String,
    #[arg(long, default_value = "127.0.0.1:9400", env = "SHARDLOG_BROKER")]
    broker: String,
    /// Start at the earliest offset (default: the end).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in every consumed partition).
    #[arg(long)]
    offset: Option<u64>,
    /// Consume only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Exit after this many messages.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Print `key<TAB>value`.
    #[arg(long)]
    print_key: bool,
    /// Prefix each line with `PARTITION:OFFSET<TAB>`.
    #[arg(long)]
    print_offset: bool,
    /// Keep waiting for new messages instead of exiting at the end.
    #[arg(long)]
    follow: bool,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log that cannot be written (stderr on a full disk) must not stop the broker.
        .log_internal_errors(false)
        .init();
    // Freed pages kept for reuse stay within their budget (src/alloc.rs).
    if let Err(e) = shardlog::alloc::govern_kept_pages(shardlog::alloc::KEPT_BYTES_MAX) {
        tracing::warn!("freed memory is not governed; jemalloc decays it over 10 s instead: {e}");
    }
    let r = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Topic { cmd, broker } => runtime().block_on(topic(cmd, &broker)),
        Cmd::Produce(a) => runtime().block_on(produce(a)),
        Cmd::Consume(a) => runtime().block_on(consume(a)),
        Cmd::RecoverMetadata(a) => recover_metadata(a),
        Cmd::Cluster { cmd, rpc } => cluster(cmd, &rpc),
    };
    if let Err(e) = r {
        // `consume ... | head`: the reader went away, as it meant to. Like
        // any Unix filter, stop quietly.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// How long client commands wait for a broker that is starting, in ms
/// (`SHARDLOG_CONNECT_TIMEOUT_MS`).
const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 15_000;

/// Connect for a client command, waiting for a broker that is still
/// starting (see `Client::connect_retrying`).
async fn connect(addr: &str) -> Result<Client> {
    let ms = std::env::var("SHARDLOG_CONNECT_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONNECT_TIMEOUT_MS_DEFAULT);
    let c = Client::connect_retrying(addr, std::time::Duration::from_millis(ms), |e| {
        eprintln!("waiting up to {ms} ms for the broker at {addr} ({e})");
    })
    .await?;
    Ok(c)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn broker_config(a: ServeArgs) -> Result<BrokerConfig> {
    let mut table: toml::Table = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            text.parse()
                .with_context(|| format!("parsing {}", p.display()))?
        }
        None => toml::Table::new(),
    };
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        let value: toml::Value = format!("v = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("v").cloned())
            .unwrap_or_else(|| toml::Value::String(v.to_string()));
        table.insert(k.trim().to_string(), value);
    }
    let mut c: BrokerConfig = table
        .try_into()
        .context("invalid broker settings (see `shardlog serve --help` and README)")?;
    if let Some(d) = a.data_dir {
        c.data_dir = d;
    }
    if let Some(s) = a.shards {
        c.shards = Some(s);
    }
    if let Some(l) = a.listen {
        c.listen = l;
    }
    if let Some(l) = a.kafka_listen {
        c.kafka_listen = l;
    }
    if let Some(l) = a.advertised_kafka_addr {
        c.advertised_kafka_addr = Some(l);
    }
    if let Some(f) = a.flush_interval_ms {
        c.flush_interval_ms = f;
    }
    if a.no_pin {
        c.pin_cpus = false;
    }
    if let Some(n) = a.node_id {
        c.node_id = Some(n);
    }
    if let Some(r) = a.rpc_listen {
        c.rpc_listen = r;
    }
    if let Some(v) = a.controller_voters {
        c.controller_voters = v;
    }
    c.validate()?;
    Ok(c)
}

fn serve(a: ServeArgs) -> Result<()> {
    // A panic on any shard leaves state nobody can trust: report it and exit
    // (recovery on the next start keeps every acknowledged write), rather
    // than run on as a half-dead broker.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("panic: {info}; exiting");
        std::process::exit(101);
    }));
    let config = broker_config(a)?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    let heap_budget = config.clone();
    let broker = shardlog::broker::Broker::start(config)?;
    // The pages freed data leaves behind may stay resident up to the data
    // budgets (src/alloc.rs, `set_heap_bytes_max`); the io_uring memory is
    // outside jemalloc's heap.
    shardlog::alloc::set_heap_bytes_max(heap_budget.heap_bytes_max(broker.shards));
    // One line on stdout that scripts and tests can wait for.
    println!(
        "shardlog ready: native={} kafka={} shards={} data_dir={}",
        broker.native_addr,
        broker
            .kafka_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        broker.shards,
        broker.data_dir().display()
    );
    std::io::stdout().flush().ok();
    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "stopping: no new connections, flushing and syncing every partition"
        );
    }
    broker.shutdown();
    Ok(())
}

fn cluster(cmd: ClusterCmd, rpc: &str) -> Result<()> {
    use shardlog::cluster::admin;
    let timeout = std::time::Duration::from_secs(10);
    match cmd {
        ClusterCmd::Status {
            partitions,
            wait_for_brokers,
        } => {
            // A cluster that is starting has no controller leader for a
            // second or two, and a node that is starting refuses
            // connections: wait for a leader (and the brokers asked for),
            // then show what there is.
            let patience = if wait_for_brokers > 0 {
                3 * timeout
            } else {
                timeout
            };
            let started = std::time::Instant::now();
            let v = loop {
                let late = started.elapsed() > patience;
                match admin::view(rpc, timeout) {
                    Ok(v) => {
                        let live = v.state.brokers.values().filter(|b| b.live).count();
                        if v.leader.is_some() && live >= wait_for_brokers {
                            break v;
                        }
                        if late && wait_for_brokers > 0 {
                            print!("{}", admin::render(&v, partitions));
                            anyhow::bail!(
                                "{live} brokers live after {patience:?}, waited for {wait_for_brokers}"
                            );
                        }
                        if late {
                            break v;
                        }
                    }
                    Err(e) if late => return Err(e.into()),
                    Err(_) => {}
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            print!("{}", admin::render(&v, partitions));
        }
        ClusterCmd::CreateTopic {
            name,
            partitions,
            replication_factor,
            also,
        } => {
            let mut addrs = vec![rpc.to_string()];
            addrs.extend(also);
            admin::create_topic(
                &addrs,
                &name,
                partitions,
                replication_factor,
                vec![],
                timeout,
                2 * timeout,
            )?;
            // Show where it went, as the controller placed it.
            for addr in &addrs {
                if let Ok(v) = admin::view(addr, timeout) {
                    if let Some(t) = v.state.topics.get(&name) {
                        for (i, p) in t.partitions.iter().enumerate() {
                            println!("{name}\t{i}\tleader={}\tshard={}", p.node, p.shard);
                        }
                        return Ok(());
                    }
                }
            }
            println!("{name}\tcreated");
        }
        ClusterCmd::Reassign {
            topic,
            replicas,
            partition,
            no_wait,
            timeout_secs,
            also,
        } => {
            let mut addrs = vec![rpc.to_string()];
            addrs.extend(also);
            let parts =
                admin::reassign(&addrs, &topic, &partition, &replicas, timeout, 2 * timeout)?;
            let to = replicas
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",");
            println!("{topic}: reassigning {} partitions to {to}", parts.len());
            if no_wait {
                return Ok(());
            }
            let started = std::time::Instant::now();
            let mut last = usize::MAX;
            loop {
                let left = addrs
                    .iter()
                    .find_map(|a| admin::reassigning(a, &topic, &parts, timeout).ok());
                match left {
                    Some(l) if l.is_empty() => break,
                    Some(l) if l.len() != last => {
                        println!("{topic}: {} partitions still moving", l.len());
                        last = l.len();
                    }
                    _ => {}
                }
                if started.elapsed() > std::time::Duration::from_secs(timeout_secs) {
                    anyhow::bail!(
                        "{topic}: reassignment not finished after {timeout_secs} s (it goes on; \
                         `shardlog cluster status --partitions` shows what is left)"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            println!(
                "{topic}: {} partitions now on {to} ({:.1} s)",
                parts.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn recover_metadata(a: RecoverArgs) -> Result<()> {
    let report = shardlog::metadata::recover::recover(
        &a.data_dir,
        a.force,
        shardlog::clock::Clock::wall_ms(&shardlog::clock::SystemClock),
    )
    .with_context(|| format!("recover-metadata in {}", a.data_dir.display()))?;
    print!("{report}");
    Ok(())
}

fn parse_kv(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("'{kv}': expected KEY=VALUE"))
        })
        .collect()
}

async fn topic(cmd: TopicCmd, broker: &str) -> Result<()> {
    let c = connect(broker).await?;
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            config,
        } => {
            c.create_replicated_topic(&name, partitions, replication_factor, &parse_kv(&config)?)
                .await?;
            println!("created topic {name} with {partitions} partitions");
        }
        TopicCmd::List => {
            for t in c.metadata(&[]).await?.topics {
                println!("{}\t{}", t.name, t.partitions);
            }
        }
        TopicCmd::Describe { name } => {
            let m = c.metadata(&[&name]).await?;
            let t = c.topic(&name).await?;
            println!(
                "topic: {}\npartitions: {}\nshards: {}",
                t.name, t.partitions, m.shards
            );
            for (k, v) in &t.config {
                println!("config: {k}={v}");
            }
            if m.brokers.is_empty() {
                println!("partition\tshard\tlog_start\thigh_watermark");
                for (p, i) in t.partition_info.iter().enumerate() {
                    println!(
                        "{p}\t{}\t{}\t{}",
                        i.shard, i.log_start_offset, i.high_watermark
                    );
                }
            } else {
                // A cluster: each partition's leader (offsets come from the
                // leader, so partitions led elsewhere show 0 here).
                println!("partition\tleader\tshard\tlog_start\thigh_watermark");
                for (p, i) in t.partition_info.iter().enumerate() {
                    println!(
                        "{p}\t{}\t{}\t{}\t{}",
                        i.leader, i.shard, i.log_start_offset, i.high_watermark
                    );
                }
            }
        }
        TopicCmd::Alter { name, partitions } => {
            c.create_partitions(&name, partitions).await?;
            println!("topic {name} now has {partitions} partitions");
        }
        TopicCmd::Delete { name } => {
            c.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

async fn produce(a: ProduceArgs) -> Result<()> {
    let client = connect(&a.broker).await?;
    let partitions = client.topic(&a.topic).await?.partitions;
    if let Some(p) = a.partition {
        if p >= partitions {
            bail!(
                "topic '{}' has {partitions} partitions; there is no partition {p}",
                a.topic
            );
        }
    }
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (ok, bad, fe) = (acked.clone(), failed.clone(), first_error.clone());
    let cfg = ProducerConfig {
        acks: a.acks,
        compression: a.compression,
        batch_bytes: a.batch_bytes,
        linger_ms: a.linger_ms,
        on_batch_acked: Some(Arc::new(move |b| match b.error {
            None => {
                ok.fetch_add(b.tokens.len() as u64, Ordering::Relaxed);
            }
            Some(e) => {
                bad.fetch_add(b.tokens.len() as u64, Ordering::Relaxed);
                fe.lock().unwrap().get_or_insert_with(|| e.to_string());
            }
        })),
        ..Default::default()
    };
    let partitioner: Box<dyn Partitioner> = match a.partition {
        Some(p) => Box::new(FixedPartitioner(p)),
        None => Box::new(shardlog::client::DefaultPartitioner::new()),
    };
    let producer = Producer::with_partitioner(client, cfg, partitioner);
    // Read stdin on its own thread, in chunks, so the runtime never blocks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<String>>(16);
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let stdin = std::io::stdin();
        let mut chunk = Vec::with_capacity(1024);
        for line in stdin.lock().lines() {
            chunk.push(line?);
            if chunk.len() == 1024 && tx.blocking_send(std::mem::take(&mut chunk)).is_err() {
                return Ok(());
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        Ok(())
    });
    let mut sent = 0u64;
    while let Some(lines) = rx.recv().await {
        for line in lines {
            let (key, value) = match &a.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                    None => (None, line.as_bytes()),
                },
                None => (None, line.as_bytes()),
            };
            producer.send(&a.topic, key, Some(value), &[]).await?;
            sent += 1;
        }
    }
    reader
        .join()
        .expect("stdin reader")
        .context("reading stdin")?;
    producer.close().await?;
    let (ok, bad) = (
        acked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    if bad > 0 || ok != sent {
        bail!(
            "{bad} of {sent} messages failed ({} acknowledged); first error: {}",
            ok,
            first_error
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "none reported".into())
        );
    }
    eprintln!("produced {sent} messages to {} (acks={})", a.topic, a.acks);
    Ok(())
}

async fn consume(a: ConsumeArgs) -> Result<()> {
    let client = connect(&a.broker).await?;
    let start = match (a.from_beginning, a.offset) {
        (true, _) => StartAt::Earliest,
        (false, Some(o)) => StartAt::Offset(o),
        (false, None) => StartAt::Latest,
    };
    let cfg = ConsumerConfig {
        max_wait_ms: if a.follow { 500 } else { 100 },
        ..Default::default()
    };
    let mut consumer =
        Consumer::new(client, &a.topic, a.partition.map(|p| vec![p]), start, cfg).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut count = 0u64;
    let max = a.max_messages.unwrap_or(u64::MAX);
    let mut per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    while count < max {
        if !a.follow && consumer.caught_up() {
            break;
        }
        let msgs = consumer.poll().await?;
        for m in msgs {
            if a.print_offset {
                write!(out, "{}:{}\t", m.partition, m.offset)?;
            }
            if a.print_key {
                out.write_all(m.key.as_deref().unwrap_or(b""))?;
                out.write_all(b"\t")?;
            }
            out.write_all(m.value.as_deref().unwrap_or(b""))?;
            out.write_all(b"\n")?;
            *per_partition.entry(m.partition).or_default() += 1;
            count += 1;
            if count >= max {
                break;
            }
        }
        if a.follow {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}
