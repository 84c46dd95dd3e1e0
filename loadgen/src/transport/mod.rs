//! The seam between loadgen's actors and a broker protocol.
//!
//! Actors see three handles — [`Admin`], [`ProducerBackend`],
//! [`ConsumerBackend`] — each an enum with one variant per protocol. Enums
//! rather than trait objects: the hot calls (`send`, `poll`) stay static
//! dispatch with borrowed arguments, and async methods need no boxing.
//!
//! Two protocols: [`native`] (shardlog's own, through `shardlog::client`)
//! and [`kafka`] (librdkafka through the `rdkafka` crate, for shardlog's
//! Kafka listener or any Kafka-compatible broker). Adding one means a
//! `Protocol` variant, a module implementing the same operations, and one
//! match arm per method here. The contract every backend keeps:
//! - `send` queues one record for an explicit partition and carries an
//!   opaque `u64` token; each acknowledgement (or failure) comes back
//!   through the [`AckSink`] with the tokens it covers, on any thread;
//! - `close` returns once every queued record was acknowledged or failed;
//! - `poll` hands every record received to the visitor, in partition order;
//! - a backend's client threads count as loadgen's CPU: threads it starts
//!   itself call `cpu::register_current_thread`, and library threads are
//!   recognised by name (see `cpu.rs`).

pub mod kafka;
pub mod native;
pub mod version;

use serde::Serialize;
use shardlog::format::Compression;
use shardlog::protocol::messages::Acks;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Native(#[from] shardlog::client::ClientError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Invalid(String),
}

/// Which wire protocol talks to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// shardlog's native protocol, through the shardlog client library.
    Native,
    /// The Kafka protocol through librdkafka: shardlog's Kafka listener or
    /// any Kafka-compatible broker (Apache Kafka, Redpanda).
    Kafka,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Kafka => "kafka",
        }
    }
}

/// Where the broker is and how to talk to it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub protocol: Protocol,
    pub addr: String,
}

/// Producer knobs every backend must map onto its own settings.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub compression: Compression,
    pub acks: Acks,
    pub max_inflight: usize,
    pub buffer_bytes: usize,
}

/// What the report records about a client library and its settings.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientInfo {
    pub library: String,
    pub producer_config: BTreeMap<String, String>,
    pub consumer_config: BTreeMap<String, String>,
}

/// One acknowledged (or failed) group of records, or a report of batches.
///
/// The native client acknowledges a batch at a time: tokens, `batches: 1`
/// and its bytes in one event. librdkafka acknowledges records one by one
/// (`batches: 0`, no bytes) and reports batches separately, from its
/// statistics: events with no tokens, `batches > 0` and their bytes.
pub struct AckEvent<'a> {
    pub partition: u32,
    /// The tokens passed to `send`, one per record.
    pub tokens: &'a [u64],
    /// Batches this event accounts for.
    pub batches: u64,
    /// Record bytes of those batches before and after compression, when
    /// the backend knows them.
    pub uncompressed_bytes: Option<usize>,
    pub compressed_bytes: Option<usize>,
    pub error: Option<String>,
}

pub type AckSink = Arc<dyn Fn(&AckEvent) + Send + Sync>;

/// A topic as the run found it.
#[derive(Debug, Clone, Copy)]
pub struct TopicInfo {
    pub partitions: u32,
    /// Created by this call (so loadgen may delete it afterwards).
    pub created: bool,
    /// Replicas per partition, when known: from Kafka Metadata (the
    /// largest replica list), or the factor this call created the topic
    /// with. The native Metadata does not carry it.
    pub replication_factor: Option<u16>,
}

/// Topic administration.
pub enum Admin {
    Native(native::NativeAdmin),
    Kafka(kafka::KafkaAdmin),
}

impl Admin {
    pub async fn connect(target: &Target) -> Result<Admin, TransportError> {
        match target.protocol {
            Protocol::Native => Ok(Admin::Native(
                native::NativeAdmin::connect(&target.addr).await?,
            )),
            Protocol::Kafka => Ok(Admin::Kafka(
                kafka::KafkaAdmin::connect(&target.addr).await?,
            )),
        }
    }

    /// Create the topic if missing, with `replication_factor` replicas per
    /// partition (None: the broker's default). An existing topic keeps its
    /// partition count and factor, which are returned.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: Option<u16>,
    ) -> Result<TopicInfo, TransportError> {
        match self {
            Admin::Native(a) => a.ensure_topic(topic, partitions, replication_factor).await,
            Admin::Kafka(a) => a.ensure_topic(topic, partitions, replication_factor).await,
        }
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), TransportError> {
        match self {
            Admin::Native(a) => a.delete_topic(topic).await,
            Admin::Kafka(a) => a.delete_topic(topic).await,
        }
    }
}

/// A producer connection.
pub enum ProducerBackend {
    Native(native::NativeProducer),
    Kafka(kafka::KafkaProducer),
}

/// Records sent in a row by one producer thread: the native client queues
/// them under one hold of its lock ([`shardlog::client::producer::Burst`]);
/// librdkafka takes them one by one as always. Lifecycle: made and dropped
/// by a producer within one synchronous stretch, never held across an
/// `.await`.
pub enum SendBurst<'a> {
    Native(shardlog::client::producer::Burst<'a>),
    Kafka(&'a kafka::KafkaProducer),
}

impl SendBurst<'_> {
    /// Queue a record now if the client has room for it. `Ok(false)`:
    /// nothing was queued; drop the burst and [`ProducerBackend::send`] it,
    /// which waits for room.
    #[inline]
    pub fn try_send(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<bool, TransportError> {
        match self {
            SendBurst::Native(b) => {
                Ok(b.try_send(partition, key, Some(value), &[], timestamp_ms, token))
            }
            SendBurst::Kafka(p) => {
                p.send_now(partition, key, value, timestamp_ms, token)?;
                Ok(true)
            }
        }
    }
}

impl ProducerBackend {
    /// Must be called inside the tokio runtime (clients spawn their sender task).
    pub async fn open(
        target: &Target,
        topic: &str,
        settings: &ProducerSettings,
        sink: AckSink,
    ) -> Result<ProducerBackend, TransportError> {
        match target.protocol {
            Protocol::Native => Ok(ProducerBackend::Native(
                native::NativeProducer::open(&target.addr, topic, settings, sink).await?,
            )),
            Protocol::Kafka => Ok(ProducerBackend::Kafka(
                kafka::KafkaProducer::open(&target.addr, topic, settings, sink).await?,
            )),
        }
    }

    #[inline]
    pub async fn send(
        &self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<(), TransportError> {
        match self {
            ProducerBackend::Native(p) => p.send(partition, key, value, timestamp_ms, token).await,
            ProducerBackend::Kafka(p) => p.send(partition, key, value, timestamp_ms, token).await,
        }
    }

    /// Start a run of records sent in a row (see [`SendBurst`]).
    pub async fn burst(&self) -> Result<SendBurst<'_>, TransportError> {
        match self {
            ProducerBackend::Native(p) => Ok(SendBurst::Native(p.burst().await?)),
            ProducerBackend::Kafka(p) => Ok(SendBurst::Kafka(p)),
        }
    }

    pub async fn close(&self) -> Result<(), TransportError> {
        match self {
            ProducerBackend::Native(p) => p.close().await,
            ProducerBackend::Kafka(p) => p.close().await,
        }
    }

    /// Caveats about how the client was set up, for the run's notes.
    pub fn notes(&self) -> &[String] {
        match self {
            ProducerBackend::Native(_) => &[],
            ProducerBackend::Kafka(p) => p.notes(),
        }
    }
}

/// The client library and settings a run used, when they are not
/// loadgen's own (the native client's settings are the workload's).
pub fn client_info(target: &Target, settings: &ProducerSettings) -> Option<ClientInfo> {
    match target.protocol {
        Protocol::Native => None,
        Protocol::Kafka => Some(kafka::client_info(&target.addr, settings)),
    }
}

/// A consumer of some partitions of one topic, positioned at their ends
/// when opened (so it sees exactly what the run produces).
pub enum ConsumerBackend {
    Native(native::NativeConsumer),
    Kafka(kafka::KafkaConsumer),
}

impl ConsumerBackend {
    pub async fn open(
        target: &Target,
        topic: &str,
        partitions: Vec<u32>,
        max_wait_ms: u32,
    ) -> Result<ConsumerBackend, TransportError> {
        match target.protocol {
            Protocol::Native => Ok(ConsumerBackend::Native(
                native::NativeConsumer::open(&target.addr, topic, partitions, max_wait_ms).await?,
            )),
            Protocol::Kafka => Ok(ConsumerBackend::Kafka(
                kafka::KafkaConsumer::open(&target.addr, topic, partitions, max_wait_ms).await?,
            )),
        }
    }

    /// One fetch round; `visit(partition, value)` for every record.
    /// Returns the number of records.
    pub async fn poll(&mut self, visit: impl FnMut(u32, &[u8])) -> Result<usize, TransportError> {
        match self {
            ConsumerBackend::Native(c) => c.poll(visit).await,
            ConsumerBackend::Kafka(c) => c.poll(visit).await,
        }
    }

    /// Every partition's position reached the latest high watermark seen.
    pub fn caught_up(&self) -> bool {
        match self {
            ConsumerBackend::Native(c) => c.caught_up(),
            ConsumerBackend::Kafka(c) => c.caught_up(),
        }
    }
}
