//! Every knob, with its unit in its name. Broker-wide settings come from
//! flags or a TOML file (`--config FILE`); per-topic settings are stored with
//! the topic and can be given at creation as `key=value` (Kafka's dotted
//! names such as `retention.ms` are accepted too).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("unknown topic config '{0}' (known: {known})", known = TopicConfig::KEYS.join(", "))]
    UnknownTopicKey(String),
    #[error("topic config '{key}': cannot parse '{value}' (numbers; validate_compressed takes true or false)")]
    BadTopicValue { key: String, value: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error("unsupported setting: {0}")]
    Unsupported(String),
}

/// Broker-wide configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Root of all partition directories and metadata.
    pub data_dir: PathBuf,
    /// Number of shards (one pinned executor per shard). None: every online CPU.
    pub shards: Option<usize>,
    /// Native protocol listener.
    pub listen: String,
    /// Kafka protocol listener; empty string disables it.
    pub kafka_listen: String,
    /// Address advertised in Kafka Metadata responses (default: the bound kafka_listen address).
    pub advertised_kafka_addr: Option<String>,
    /// Create unknown topics on Kafka Metadata/Produce requests.
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics.
    pub default_partitions: u32,
    /// In a cluster: replicas per partition of topics created without a
    /// replication factor (auto-created, or -1 in Kafka CreateTopics).
    pub default_replication_factor: u16,
    /// In a cluster: replicas per partition of `__consumer_offsets` when it
    /// is created (Kafka's `offsets.topic.replication.factor`), capped at
    /// the brokers live then. A single broker ignores it.
    pub offsets_topic_replication_factor: u16,

    /// Largest request frame accepted, in bytes. Larger frames are refused and the connection closed.
    pub max_request_bytes: usize,
    /// Connections a shard accepts before refusing new ones.
    pub max_connections_per_shard: usize,
    /// Request bytes a connection may have in flight before the broker stops reading its socket.
    pub max_inflight_bytes_per_connection: usize,
    /// Bytes a shard may hold for requests across all its connections:
    /// request frames being read or served, and answers not yet written.
    pub max_inflight_bytes_per_shard: usize,
    /// Bytes a shard may hold appended but not yet written to segment files
    /// (acks=0/1 data ahead of the flushers); appends wait beyond it.
    pub max_unwritten_bytes_per_shard: usize,
    /// In a cluster: bytes of replicated entries a shard keeps in memory
    /// for followers (its groups' windows and reads for lagging
    /// followers); beyond it they are served from disk, and at twice it a
    /// follower takes no new appends until its own are durable.
    pub replication_memory_bytes_per_shard: usize,
    /// Largest Fetch answer the broker builds, whatever the client asks for
    /// (Kafka's broker-side `fetch.max.bytes`). The first batch always goes.
    pub fetch_max_bytes: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout_ms: u64,
    /// A request frame must arrive completely within this long once started (slow-loris bound).
    pub partial_frame_timeout_ms: u64,
    /// A connection whose client accepts no byte of its answers for this
    /// long is closed, and what it held is freed: answers waiting for a
    /// client that does not read are charged to the shard's in-flight
    /// budget, which every connection of the shard shares.
    pub write_stall_timeout_ms: u64,
    /// At start-up, how long to wait for a listen address, or the data
    /// directory's lock, still held on behalf of a process that has exited
    /// (a broker killed moments ago), in ms. A live holder fails at once.
    pub bind_wait_ms: u64,
    /// Per-shard memory budget for the batch cache, in bytes.
    pub shard_cache_bytes_max: usize,

    /// Size of each direct-I/O write buffer, in bytes (512 KiB..1 MiB
    /// reaches full disk speed). Default 512 KiB: a buffer trimmed for a
    /// sync point keeps its whole allocation while it is written and
    /// pooled, and with 1,000 partitions (a sync point after nearly every
    /// batch) 450-730 such 1 MiB buffers were live at once, and the
    /// broker's peak RSS was 2,300-2,493 MiB with no consumer, at 512 KiB
    /// 1,853-1,927, at the same throughput (README, "Against the disk").
    pub write_chunk_bytes: usize,
    /// Direct-I/O writes a partition keeps in flight.
    pub write_behind: usize,
    /// What direct reads and writes align to: the device's unit
    /// (`"device"`, the default) or the file system's block when that is
    /// larger (`"filesystem"`: 4 KiB on ext4 over a 512-byte device).
    /// `"filesystem"` lets ext4 start each write on the shard's thread
    /// instead of a kernel worker (a write covering part of a block is
    /// serialised and blocks): the broker used ~20% less CPU per GB with 4
    /// partitions. But with 1,000 partitions and a live consumer its group
    /// commits took 47-87 ms instead of 6-10, and the consumer fell behind
    /// the cache in 7 of 10 runs (45-92% consumed, against 97-102% in 7
    /// of 7 with `"device"`). It happens in a fresh broker's first seconds,
    /// when 60% of its CPU zeroes newly touched memory; a warmed broker
    /// kept up in 3 of 3 runs. README, "Against the disk".
    pub direct_io_alignment: DirectIoAlignment,
    /// Most segment file space reserved ahead of the writes (fallocate), in
    /// bytes; a segment reserves as far ahead as it has been written, from
    /// 1 MiB up to this. 0 disables.
    pub segment_preallocate_bytes: u64,
    /// Longest time appended data may stay un-synced, in ms.
    pub flush_interval_ms: u64,
    /// Shortest time, in µs, from the start of one sync to the start of the
    /// next one that was asked for (by a consumer waiting at the end, an
    /// acks=all producer, or the cache's sync trigger). 0: the next starts
    /// as soon as the last one ends. Why: a consumer tailing a busy
    /// partition asks for a sync at every append, so syncs ran back to back
    /// (1,700 a second per shard at 100 B records, each a padded tail
    /// write and an fdatasync through io_uring's workers); at 1 ms they
    /// halved, broker CPU per GB fell 15% and throughput rose 10%
    /// (README, "Against the disk"). A partition synced less often than
    /// this waits for nothing.
    pub sync_min_interval_us: u64,
    /// How often the durable position is checkpointed for recovery, in ms.
    pub recovery_point_interval_ms: u64,
    /// How often retention runs, in ms.
    pub retention_check_interval_ms: u64,
    /// Busy-poll before an idle executor parks, in µs. Lowers cross-shard latency, costs CPU.
    pub spin_before_park_us: u64,
    /// Report (on stderr, with a backtrace) any shard task queue that runs
    /// this many ms past its time slice without yielding; 0 = off. A
    /// diagnostic for latency spikes (glommio's stall detector).
    pub stall_report_ms: u64,
    /// Registered io_uring buffer memory per executor, in bytes.
    pub io_memory_bytes: usize,
    /// Kernel worker threads per shard for blocking file operations
    /// (fdatasync, fallocate, ftruncate; io_uring's bounded io-wq workers).
    /// 0 = 4 × online CPUs, the kernel's own size for a ring of our depth,
    /// set explicitly because glommio leaves one shard with 2
    /// (`storage::io_workers`).
    pub io_workers_per_shard: u32,
    /// Pin shard N to CPU N. Disable when sharing a box with a load generator you pin yourself.
    pub pin_cpus: bool,
    /// How long a consumer group that was empty waits for more members
    /// before its first generation, in ms (Kafka's
    /// `group.initial.rebalance.delay.ms`, same default); waits again while
    /// members keep arriving, up to the rebalance timeout. 0 turns it off.
    pub group_initial_rebalance_delay_ms: u64,
    /// Consumer-protocol groups (KIP-848): the heartbeat interval the
    /// coordinator tells members to keep, in ms (Kafka's
    /// `group.consumer.heartbeat.interval.ms`, same default).
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Consumer-protocol groups: a member not heard from for this long is
    /// removed and its partitions reassigned, in ms (Kafka's
    /// `group.consumer.session.timeout.ms`, same default). At least two
    /// heartbeat intervals.
    pub group_consumer_session_timeout_ms: u64,
    /// Committed offsets of a group with no members (or of a topic no
    /// member subscribes to, or committed standalone) are deleted this long
    /// after their commit, or after the group emptied (Kafka's
    /// `offsets.retention.minutes`, same default: 7 days). Fractions are
    /// allowed (0.05 = 3 s), for tests.
    pub offsets_retention_minutes: f64,
    /// How often expired offsets are looked for, in ms (Kafka's
    /// `offsets.retention.check.interval.ms`, same default).
    pub offsets_retention_check_interval_ms: u64,

    /// Defaults for topics created without explicit settings.
    pub topic_defaults: TopicConfig,

    /// This broker's id in a cluster (`--node-id`); None: a single broker,
    /// no cluster (the other cluster keys must then be empty).
    pub node_id: Option<u32>,
    /// Listener for other brokers (`--rpc-listen HOST:PORT`); cluster mode only.
    pub rpc_listen: String,
    /// The controller's voters and their RPC addresses
    /// (`--controller-voters 1@HOST:PORT,2@HOST:PORT,3@HOST:PORT`).
    pub controller_voters: String,
    /// Cluster mode: how often a broker tells the controller it is alive
    /// (Kafka's `broker.heartbeat.interval.ms`, which defaults to 2000).
    pub broker_heartbeat_interval_ms: u64,
    /// Cluster mode: a broker not heard from for this long is fenced (its
    /// partitions show no leader; new partitions avoid it). Kafka's
    /// `broker.session.timeout.ms` (default 9000). At least twice the
    /// heartbeat interval.
    pub broker_session_timeout_ms: u64,
}

/// A broker's cluster settings, checked (see [`BrokerConfig::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub node_id: u32,
    pub rpc_listen: String,
    /// (broker id, RPC address) of every controller voter, sorted by id.
    pub voters: Vec<(u32, String)>,
    /// See [`BrokerConfig::broker_heartbeat_interval_ms`].
    pub heartbeat_interval: std::time::Duration,
    /// See [`BrokerConfig::broker_session_timeout_ms`].
    pub session_timeout: std::time::Duration,
}

impl ClusterSettings {
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|(id, _)| *id == self.node_id)
    }

    pub fn voter_addr(&self, id: u32) -> Option<&str> {
        self.voters
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, a)| a.as_str())
    }
}

/// Parse `1@HOST:PORT,2@HOST:PORT,...`: ids ≥ 1, distinct, sorted on return.
pub fn parse_voters(s: &str) -> Result<Vec<(u32, String)>, ConfigError> {
    let bad = |m: String| ConfigError::Invalid(format!("controller_voters '{s}': {m}"));
    let mut out: Vec<(u32, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| bad(format!("'{part}' is not ID@HOST:PORT")))?;
        let id: u32 = id
            .parse()
            .map_err(|_| bad(format!("'{id}' is not a broker id")))?;
        if id == 0 {
            return Err(bad("broker ids start at 1".into()));
        }
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(bad(format!("'{addr}' is not HOST:PORT")));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(bad(format!("broker {id} is listed twice")));
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        return Err(bad("no voters".into()));
    }
    out.sort();
    Ok(out)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("./shardlog-data"),
            shards: None,
            listen: "127.0.0.1:9400".into(),
            kafka_listen: "127.0.0.1:9092".into(),
            advertised_kafka_addr: None,
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            max_request_bytes: 64 << 20,
            max_connections_per_shard: 4096,
            max_inflight_bytes_per_connection: 64 << 20,
            max_inflight_bytes_per_shard: 256 << 20,
            max_unwritten_bytes_per_shard: 128 << 20,
            replication_memory_bytes_per_shard: 64 << 20,
            fetch_max_bytes: 55 << 20,
            idle_timeout_ms: 600_000,
            partial_frame_timeout_ms: 30_000,
            write_stall_timeout_ms: 60_000,
            bind_wait_ms: 10_000,
            shard_cache_bytes_max: 512 << 20,
            write_chunk_bytes: 512 << 10,
            write_behind: 4,
            direct_io_alignment: DirectIoAlignment::Device,
            segment_preallocate_bytes: 32 << 20,
            flush_interval_ms: 1000,
            sync_min_interval_us: 1000,
            recovery_point_interval_ms: 5000,
            retention_check_interval_ms: 5000,
            spin_before_park_us: 0,
            stall_report_ms: 0,
            io_memory_bytes: 16 << 20,
            io_workers_per_shard: 0,
            pin_cpus: true,
            group_initial_rebalance_delay_ms: 3000,
            group_consumer_heartbeat_interval_ms: 5000,
            group_consumer_session_timeout_ms: 45_000,
            offsets_retention_minutes: 7.0 * 24.0 * 60.0,
            offsets_retention_check_interval_ms: 600_000,
            topic_defaults: TopicConfig::default(),
            node_id: None,
            rpc_listen: String::new(),
            controller_voters: String::new(),
            broker_heartbeat_interval_ms: 500,
            broker_session_timeout_ms: 3000,
        }
    }
}

/// [`BrokerConfig::direct_io_alignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectIoAlignment {
    /// The device's direct-I/O unit (512 bytes on most).
    Device,
    /// The larger of the device's unit and the file system's block size.
    Filesystem,
}

/// Write buffers each shard keeps for reuse (`write_chunk_bytes` each):
/// part of its memory bound.
pub const WRITE_POOL_BUFFERS: usize = 64;

impl BrokerConfig {
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// The most memory `shards` shards hold for data under these settings,
    /// in bytes (README, "Guarantees: memory"): per shard, the request
    /// budget, the batch cache, twice the unwritten budget or one request,
    /// whichever is larger (unwritten data sits in its cached frame and in
    /// its write chunk), the pool of write buffers and the io_uring memory;
    /// in a cluster, the replicated entries held for followers.
    /// Connections (128 KiB each) and a fixed overhead come on top.
    pub fn data_memory_bound(&self, shards: usize) -> u64 {
        let unwritten = self
            .max_unwritten_bytes_per_shard
            .max(self.max_request_bytes);
        // Replicated entries held for followers: twice the budget, plus
        // one append message and one read past it (replica::WindowBudget).
        let replication = if self.node_id.is_some() {
            2 * self.replication_memory_bytes_per_shard + (2 << 20)
        } else {
            0
        };
        let per_shard = self.max_inflight_bytes_per_shard
            + self.shard_cache_bytes_max
            + 2 * unwritten
            + WRITE_POOL_BUFFERS * self.write_chunk_bytes
            + self.io_memory_bytes
            + replication;
        (shards * per_shard) as u64
    }

    /// The part of [`Self::data_memory_bound`] that lives on the heap
    /// (all of it but the io_uring memory): what the allocation governor
    /// lets pages in use plus freed pages kept reach before it purges
    /// (`alloc::set_heap_bytes_max`).
    pub fn heap_bytes_max(&self, shards: usize) -> usize {
        (self.data_memory_bound(shards) as usize).saturating_sub(shards * self.io_memory_bytes)
    }

    /// The broker's whole resident memory bound (README, "Guarantees:
    /// memory"): [`Self::data_memory_bound`], plus 128 KiB per connection
    /// (its read buffer and one small request in flight), plus a fixed
    /// 256 MiB (code, runtimes, metadata and allocator slack; an idle
    /// broker uses about 40 MiB of it).
    pub fn memory_bound(&self, shards: usize, connections: usize) -> u64 {
        self.data_memory_bound(shards) + connections as u64 * (128 << 10) + (256 << 20)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.write_chunk_bytes < 4096 || !self.write_chunk_bytes.is_power_of_two() {
            return bad("write_chunk_bytes must be a power of two >= 4096");
        }
        if self.write_behind == 0 {
            return bad("write_behind must be >= 1");
        }
        if self.max_request_bytes < 1024 {
            return bad("max_request_bytes must be >= 1024");
        }
        if self.write_stall_timeout_ms < 10 {
            return bad("write_stall_timeout_ms must be >= 10");
        }
        if self.fetch_max_bytes < 1024 {
            return bad("fetch_max_bytes must be >= 1024");
        }
        if self.shards == Some(0) {
            return bad("shards must be >= 1");
        }
        if self.default_replication_factor == 0 {
            return bad("default_replication_factor must be >= 1");
        }
        if self.offsets_topic_replication_factor == 0 {
            return bad("offsets_topic_replication_factor must be >= 1");
        }
        if self.default_partitions == 0 {
            return bad("default_partitions must be >= 1");
        }
        if self.group_consumer_heartbeat_interval_ms == 0
            || self.group_consumer_heartbeat_interval_ms > i32::MAX as u64
            || self.group_consumer_session_timeout_ms
                < 2 * self.group_consumer_heartbeat_interval_ms
        {
            return bad("group_consumer_session_timeout_ms must be at least twice \
                 group_consumer_heartbeat_interval_ms, which must be 1..=2147483647");
        }
        // A retention under 1 ms would expire offsets as they are committed.
        if !(self.offsets_retention_minutes * 60_000.0 >= 1.0
            && self.offsets_retention_minutes * 60_000.0 <= i64::MAX as f64)
        {
            return bad("offsets_retention_minutes must be at least 1 ms (1.7e-5) and finite");
        }
        if self.offsets_retention_check_interval_ms == 0 {
            return bad("offsets_retention_check_interval_ms must be >= 1");
        }
        self.cluster()?;
        self.topic_defaults.validate()
    }

    /// `offsets_retention_minutes` in ms (validated to be 1 or more).
    pub fn offsets_retention_ms(&self) -> i64 {
        (self.offsets_retention_minutes * 60_000.0).round().max(1.0) as i64
    }

    /// The cluster settings: None for a single broker (no `node_id`);
    /// refuses half a cluster configuration.
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let Some(node_id) = self.node_id else {
            if !self.rpc_listen.is_empty() || !self.controller_voters.is_empty() {
                return Err(ConfigError::Invalid(
                    "rpc_listen and controller_voters need node_id (--node-id N)".into(),
                ));
            }
            return Ok(None);
        };
        if node_id == 0 {
            return Err(ConfigError::Invalid("node_id must be >= 1".into()));
        }
        if self.rpc_listen.is_empty() {
            return Err(ConfigError::Invalid(
                "node_id needs rpc_listen (--rpc-listen HOST:PORT)".into(),
            ));
        }
        if self.controller_voters.is_empty() {
            return Err(ConfigError::Invalid(
                "node_id needs controller_voters (--controller-voters 1@HOST:PORT,...)".into(),
            ));
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms < 2 * self.broker_heartbeat_interval_ms
        {
            return Err(ConfigError::Invalid(format!(
                "broker_session_timeout_ms ({}) must be at least twice broker_heartbeat_interval_ms \
                 ({}), which must be >= 1: else a live broker is fenced between two heartbeats",
                self.broker_session_timeout_ms, self.broker_heartbeat_interval_ms
            )));
        }
        Ok(Some(ClusterSettings {
            node_id,
            rpc_listen: self.rpc_listen.clone(),
            voters: parse_voters(&self.controller_voters)?,
            heartbeat_interval: std::time::Duration::from_millis(self.broker_heartbeat_interval_ms),
            session_timeout: std::time::Duration::from_millis(self.broker_session_timeout_ms),
        }))
    }
}

/// Kafka topic config names that shardlog stores with the topic and shows
/// in DescribeConfigs, but does not act on (one replica, no compaction, no
/// recompression, no tiered storage). Kafka admin tools set them; refusing
/// them would fail whole AlterConfigs calls for settings that mean nothing
/// here. The names [`TopicConfig::kafka_key`] knows are applied instead.
pub const KAFKA_TOPIC_KEYS_STORED: &[&str] = &[
    "compression.type",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "segment.index.bytes",
    "segment.jitter.ms",
    "unclean.leader.election.enable",
];

/// Per-topic settings, stored durably with the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// A segment rolls once it would grow past this many bytes.
    pub segment_bytes: u64,
    /// A segment rolls once it is this old, in ms.
    pub segment_ms: u64,
    /// Closed segments whose newest record is older than this are deleted, in ms; -1 keeps forever.
    pub retention_ms: i64,
    /// Closed segments are deleted while the partition is larger than this; -1 means no size limit.
    pub retention_bytes: i64,
    /// Bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// Largest batch accepted, in bytes.
    pub max_batch_bytes: u32,
    /// Decompress every compressed batch at produce and walk its records
    /// (count, offset deltas, lengths) before storing it. On by default, as
    /// in Kafka: a compressed batch that lies or does not decompress would
    /// otherwise be stored and stop every consumer of the partition at it,
    /// or make later offsets collide, and neither can be repaired once
    /// stored. The price, measured in benches/README.md ("validate"): one
    /// streaming decompression per batch, about 0.6-1.6 CPU s per GiB of
    /// records for snappy, lz4 and zstd and 2.6-3.0 for gzip, which can
    /// double the broker's CPU per compressed byte; a topic whose producers
    /// are trusted may pay none of it. Uncompressed batches are always
    /// walked (0.2-0.3 s per GiB).
    pub validate_compressed: bool,
    /// Kafka's `cleanup.policy`: `delete`, `compact` or both (comma
    /// separated). Without `delete`, retention deletes nothing. With
    /// `compact`, every produced record must have a key (Kafka's
    /// INVALID_RECORD otherwise; compressed batches are then always
    /// decompressed to check), but shardlog does not compact: every record
    /// is kept.
    pub cleanup_policy: String,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_batch_bytes: 8 << 20,
            validate_compressed: true,
            cleanup_policy: CLEANUP_DELETE.to_string(),
        }
    }
}

/// `cleanup.policy` values.
pub const CLEANUP_DELETE: &str = "delete";
pub const CLEANUP_COMPACT: &str = "compact";

impl TopicConfig {
    pub const KEYS: [&'static str; 8] = [
        "segment_bytes",
        "segment_ms",
        "retention_ms",
        "retention_bytes",
        "index_interval_bytes",
        "max_batch_bytes",
        "validate_compressed",
        "cleanup_policy",
    ];

    /// Apply `key=value` overrides; Kafka's dotted names are accepted
    /// (`retention.ms`, `segment.bytes`, `max.message.bytes`).
    pub fn with_overrides(
        mut self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        for (k, v) in overrides {
            let key = match k.replace('.', "_").as_str() {
                "max_message_bytes" => "max_batch_bytes".to_string(),
                other => other.to_string(),
            };
            let num = |v: &str| -> Result<i64, ConfigError> {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ConfigError::BadTopicValue {
                        key: k.clone(),
                        value: v.to_string(),
                    })
            };
            match key.as_str() {
                "segment_bytes" => self.segment_bytes = num(v)?.max(0) as u64,
                "segment_ms" => self.segment_ms = num(v)?.max(0) as u64,
                "retention_ms" => self.retention_ms = num(v)?,
                "retention_bytes" => self.retention_bytes = num(v)?,
                "index_interval_bytes" => self.index_interval_bytes = num(v)?.max(0) as u32,
                "max_batch_bytes" => self.max_batch_bytes = num(v)?.max(0) as u32,
                "validate_compressed" => {
                    self.validate_compressed = match v.trim() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ConfigError::BadTopicValue {
                                key: k.clone(),
                                value: v.to_string(),
                            })
                        }
                    }
                }
                "cleanup_policy" => self.cleanup_policy = cleanup_policy(v)?,
                // Kafka admin tools send these; they mean nothing for a single
                // replica that stores batches as the producer compressed them.
                "min_insync_replicas" | "compression_type" => {}
                _ => return Err(ConfigError::UnknownTopicKey(k.clone())),
            }
        }
        self.validate()?;
        Ok(self)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes < 4096 {
            return Err(ConfigError::Invalid("segment_bytes must be >= 4096".into()));
        }
        if self.index_interval_bytes == 0 {
            return Err(ConfigError::Invalid(
                "index_interval_bytes must be >= 1".into(),
            ));
        }
        if self.max_batch_bytes < 128 {
            return Err(ConfigError::Invalid(
                "max_batch_bytes must be >= 128".into(),
            ));
        }
        Ok(())
    }

    /// What produce-time record validation allows for this topic.
    pub fn record_limits(&self) -> crate::format::validate::RecordLimits {
        crate::format::validate::RecordLimits::for_topic(
            self.max_batch_bytes,
            self.validate_compressed,
        )
        .with_keys_required(self.compacted())
    }

    /// `cleanup.policy` includes `compact`: records must have keys.
    pub fn compacted(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p == CLEANUP_COMPACT)
    }

    /// `cleanup.policy` includes `delete`: retention applies.
    pub fn deletes(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p == CLEANUP_DELETE)
    }

    /// Kafka's dotted name for a key this config applies (either spelling,
    /// ours or Kafka's), or None if it is not one of ours.
    pub fn kafka_key(key: &str) -> Option<&'static str> {
        Some(match key.replace('_', ".").as_str() {
            "segment.bytes" => "segment.bytes",
            "segment.ms" => "segment.ms",
            "retention.ms" => "retention.ms",
            "retention.bytes" => "retention.bytes",
            "index.interval.bytes" => "index.interval.bytes",
            "max.message.bytes" | "max.batch.bytes" => "max.message.bytes",
            "validate.compressed" => "validate.compressed",
            "cleanup.policy" => "cleanup.policy",
            _ => return None,
        })
    }

    /// Put `key` (one [`Self::kafka_key`] knows) back to its value in `defaults`.
    pub fn reset(&mut self, key: &str, defaults: &TopicConfig) -> Result<(), ConfigError> {
        match Self::kafka_key(key) {
            Some("segment.bytes") => self.segment_bytes = defaults.segment_bytes,
            Some("segment.ms") => self.segment_ms = defaults.segment_ms,
            Some("retention.ms") => self.retention_ms = defaults.retention_ms,
            Some("retention.bytes") => self.retention_bytes = defaults.retention_bytes,
            Some("index.interval.bytes") => {
                self.index_interval_bytes = defaults.index_interval_bytes
            }
            Some("max.message.bytes") => self.max_batch_bytes = defaults.max_batch_bytes,
            Some("validate.compressed") => self.validate_compressed = defaults.validate_compressed,
            Some("cleanup.policy") => self.cleanup_policy = defaults.cleanup_policy.clone(),
            _ => return Err(ConfigError::UnknownTopicKey(key.to_string())),
        }
        Ok(())
    }

    /// Settings as ordered key/value strings, for describe and Kafka DescribeConfigs.
    pub fn entries(&self) -> Vec<(String, String)> {
        vec![
            ("segment_bytes".into(), self.segment_bytes.to_string()),
            ("segment_ms".into(), self.segment_ms.to_string()),
            ("retention_ms".into(), self.retention_ms.to_string()),
            ("retention_bytes".into(), self.retention_bytes.to_string()),
            (
                "index_interval_bytes".into(),
                self.index_interval_bytes.to_string(),
            ),
            ("max_batch_bytes".into(), self.max_batch_bytes.to_string()),
            (
                "validate_compressed".into(),
                self.validate_compressed.to_string(),
            ),
            ("cleanup_policy".into(), self.cleanup_policy.clone()),
        ]
    }
}

/// A `cleanup.policy` value, normalised: a non-empty comma-separated set of
/// `delete` and `compact`, in that order.
fn cleanup_policy(v: &str) -> Result<String, ConfigError> {
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty()
        || items
            .iter()
            .any(|i| *i != CLEANUP_DELETE && *i != CLEANUP_COMPACT)
    {
        return Err(ConfigError::Invalid(format!(
            "cleanup.policy={v}: expected delete, compact or delete,compact"
        )));
    }
    let out: Vec<&str> = [CLEANUP_DELETE, CLEANUP_COMPACT]
        .into_iter()
        .filter(|p| items.contains(p))
        .collect();
    Ok(out.join(","))
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[test]
    fn cluster_keys_come_together_or_not_at_all() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.cluster().unwrap(), None);
        c.rpc_listen = "127.0.0.1:9401".into();
        assert!(c.validate().is_err(), "rpc_listen without node_id");
        c.node_id = Some(2);
        assert!(c.validate().is_err(), "no voters");
        c.controller_voters = "3@h:3, 1@h:1,2@h:2".into();
        let cs = c.cluster().unwrap().unwrap();
        assert_eq!(
            cs.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(cs.is_voter());
        assert_eq!(cs.voter_addr(3), Some("h:3"));
        for bad in ["1@h:1,1@h:2", "0@h:1", "x@h:1", "1@h", "1@:5", "1h:1", ","] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
        assert_eq!(cs.heartbeat_interval, std::time::Duration::from_millis(500));
        assert_eq!(cs.session_timeout, std::time::Duration::from_secs(3));
        // A session shorter than two heartbeats would fence live brokers.
        c.broker_session_timeout_ms = 900;
        assert!(c.validate().is_err());
        c.broker_heartbeat_interval_ms = 300;
        assert_eq!(
            c.cluster().unwrap().unwrap().session_timeout,
            std::time::Duration::from_millis(900)
        );
        c.node_id = Some(0);
        assert!(c.validate().is_err());
    }

    #[test]
    fn consumer_group_session_is_at_least_two_heartbeats() {
        let mut c = BrokerConfig::default();
        assert_eq!(
            (
                c.group_consumer_heartbeat_interval_ms,
                c.group_consumer_session_timeout_ms
            ),
            (5000, 45_000),
            "Kafka's defaults"
        );
        assert!(c.validate().is_ok());
        c.group_consumer_session_timeout_ms = 9999;
        assert!(c.validate().is_err());
        c.group_consumer_heartbeat_interval_ms = 0;
        assert!(c.validate().is_err());
        c.group_consumer_heartbeat_interval_ms = 500;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn offset_retention_defaults_to_kafkas_and_takes_fractions() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.offsets_retention_ms(), 7 * 24 * 3_600_000, "7 days");
        assert_eq!(c.offsets_retention_check_interval_ms, 600_000);
        let c2: BrokerConfig = toml::from_str(
            "offsets_retention_minutes = 0.05\noffsets_retention_check_interval_ms = 250",
        )
        .unwrap();
        assert_eq!(c2.offsets_retention_ms(), 3000);
        assert!(c2.validate().is_ok());
        // An integer minute count is read too (TOML has two number types).
        let c3: BrokerConfig = toml::from_str("offsets_retention_minutes = 1440").unwrap();
        assert_eq!(c3.offsets_retention_ms(), 86_400_000);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            c.offsets_retention_minutes = bad;
            assert!(c.validate().is_err(), "{bad}");
        }
        c.offsets_retention_minutes = 1.0;
        c.offsets_retention_check_interval_ms = 0;
        assert!(c.validate().is_err());
    }
}
