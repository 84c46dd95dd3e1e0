//! The Kafka-protocol backend, on librdkafka (the `rdkafka` crate), so the
//! same workloads, checks and reports run against shardlog's Kafka
//! listener or any Kafka-compatible broker (Apache Kafka, Redpanda).
//!
//! **Producer knobs** ([`producer_config`]):
//!
//! | loadgen            | librdkafka                                   |
//! | ------------------ | -------------------------------------------- |
//! | batch bytes        | `batch.size` (and `batch.num.messages` at its maximum, so bytes decide) |
//! | linger             | `linger.ms`                                  |
//! | compression        | `compression.type`                           |
//! | acks               | `acks` (0, 1, all)                           |
//! | in-flight requests | `max.in.flight.requests.per.connection`      |
//! | buffer             | `queue.buffering.max.kbytes` (and no message-count limit) |
//!
//! **Delivery semantics.** The delivery checks must mean the same thing as
//! on the native path, so nothing may retry behind loadgen's back in a way
//! that duplicates or reorders: with `acks=all` the producer is idempotent
//! (`enable.idempotence=true`: retries are safe, the broker drops
//! duplicates by sequence number, in-flight is capped at 5); with `acks=0`
//! or `1` idempotence is impossible in librdkafka, so `retries=0` — a
//! failed request is a delivery error, never a silent duplicate. Each run's
//! notes say which was used.
//!
//! **Publish latency.** Each record's delivery opaque is its token (the
//! intended send time, a `usize`: no allocation per record); librdkafka's
//! delivery report hands it back, one record at a time, on a loadgen
//! thread that polls the producer. Batch sizes and compression ratios come
//! from librdkafka's statistics (once a second): batches, their bytes on
//! the wire, and the key+value bytes they carried.
//!
//! **Consumer.** Partitions are assigned (no group membership, no commits),
//! starting at the high watermarks read when the consumer opens — exactly
//! what the native consumer does — with `fetch.min.bytes=1` and a short
//! `fetch.wait.max.ms` so records are handed over as soon as the broker has
//! them.

use super::{AckEvent, AckSink, ClientInfo, ProducerSettings, TopicInfo, TransportError};
use futures::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use shardlog::protocol::messages::Acks;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on every metadata and admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// A freshly created topic may take a moment to show up in metadata (on a
/// multi-broker cluster, until leaders are elected): retry this long.
const TOPIC_VISIBLE_TIMEOUT: Duration = Duration::from_secs(60);
/// librdkafka's own deadline for a record (`message.timeout.ms`); a record
/// not acknowledged by then fails with a delivery error.
const MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// `fetch.wait.max.ms`: how long the broker may hold a fetch with no data.
const FETCH_WAIT_MAX_MS: u32 = 10;
/// `statistics.interval.ms` of producers (librdkafka's granularity is 1 s).
const STATS_INTERVAL_MS: u32 = 1000;
/// Most records one `poll` hands over.
const POLL_MAX: usize = 4096;
/// librdkafka's limit on in-flight requests with idempotence.
const IDEMPOTENT_INFLIGHT_MAX: usize = 5;

/// "librdkafka 2.12.1".
pub fn library() -> String {
    format!("librdkafka {}", rdkafka::util::get_rdkafka_version().1)
}

fn base_config(addr: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr).set("client.id", client_id);
    c
}

/// Run blocking librdkafka calls (metadata, watermarks, flush, destroy) on
/// tokio's blocking pool, whose threads count as loadgen's CPU.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransportError::Invalid(format!("a blocking Kafka call failed: {e}")))?
}

/// Retry `f` while it fails with an error that a new topic's metadata
/// propagation explains, up to [`TOPIC_VISIBLE_TIMEOUT`].
fn retry_until_visible<T>(
    mut f: impl FnMut() -> Result<Option<T>, KafkaError>,
    what: &str,
) -> Result<T, TransportError> {
    let deadline = Instant::now() + TOPIC_VISIBLE_TIMEOUT;
    loop {
        let last = match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) if is_transient(&e) => Some(e),
            Err(e) => return Err(e.into()),
        };
        if Instant::now() >= deadline {
            return Err(TransportError::Invalid(match last {
                Some(e) => format!("{what}: {e}"),
                None => format!("{what}: not visible after {TOPIC_VISIBLE_TIMEOUT:?}"),
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `md` shows `topic` without error and each of `partitions` (every
/// partition when `None`) with a leader that the same answer lists as a
/// broker.
///
/// Why check before `fetch_watermarks`: librdkafka caches a partition
/// whose leader is -1 (LEADER_NOT_AVAILABLE while a new Raft group elects)
/// as a *permanent* error, answers `UnknownPartition` from its cache, and
/// does not refresh the topic on its own. An explicit Metadata request
/// refreshes that cache entry, so only a partition seen led here is asked.
fn led_in(md: &rdkafka::metadata::Metadata, topic: &str, partitions: Option<&[u32]>) -> bool {
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return false;
    };
    let led = |q: &rdkafka::metadata::MetadataPartition| {
        q.error().is_none() && q.leader() >= 0 && md.brokers().iter().any(|b| b.id() == q.leader())
    };
    t.error().is_none()
        && !t.partitions().is_empty()
        && match partitions {
            None => t.partitions().iter().all(led),
            Some(ps) => ps.iter().all(|&p| {
                t.partitions()
                    .iter()
                    .find(|q| q.id() == p as i32)
                    .is_some_and(led)
            }),
        }
}

fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
        )
    )
}

// ------------------------------------------------------------------ admin

pub struct KafkaAdmin {
    admin: Arc<AdminClient<DefaultClientContext>>,
}

impl KafkaAdmin {
    /// Creating a librdkafka client does not connect; a metadata request
    /// does, so a wrong address fails here with a clear error.
    pub async fn connect(addr: &str) -> Result<KafkaAdmin, TransportError> {
        let admin: AdminClient<DefaultClientContext> =
            base_config(addr, "loadgen-admin").create()?;
        let admin = Arc::new(admin);
        let a = admin.clone();
        let what = addr.to_string();
        blocking(move || {
            a.inner()
                .fetch_metadata(None, ADMIN_TIMEOUT)
                .map(|_| ())
                .map_err(|e| {
                    TransportError::Invalid(format!(
                        "no Kafka metadata from {what} ({e}); is it a Kafka listener? (shardlog's native listener needs --protocol native)"
                    ))
                })
        })
        .await?;
        Ok(KafkaAdmin { admin })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT))
    }

    /// Create the topic with `replication_factor` replicas (None: the
    /// broker's default, `-1`, KIP-464); "already exists" keeps the
    /// existing topic. Its factor is read back from Metadata.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: Option<u16>,
    ) -> Result<TopicInfo, TransportError> {
        let rf = replication_factor.map_or(-1, i32::from);
        let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(rf));
        let results = self.admin.create_topics([&new], &Self::options()).await?;
        let created = match results.into_iter().next() {
            Some(Ok(_)) => true,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => false,
            Some(Err((t, code))) => {
                return Err(TransportError::Invalid(format!(
                    "cannot create topic '{t}': {code}"
                )))
            }
            None => {
                return Err(TransportError::Invalid(format!(
                    "CreateTopics for '{topic}' returned no result"
                )))
            }
        };
        let a = self.admin.clone();
        let name = topic.to_string();
        let (partitions, replicas) = blocking(move || {
            retry_until_visible(
                || {
                    let md = a.inner().fetch_metadata(Some(&name), ADMIN_TIMEOUT)?;
                    let Some(t) = md.topics().iter().find(|t| t.name() == name) else {
                        return Ok(None);
                    };
                    // Visible with a leader for every partition.
                    let ready = led_in(&md, &name, None);
                    let replicas = t.partitions().iter().map(|p| p.replicas().len());
                    let replicas = replicas.max().unwrap_or(0);
                    Ok(ready.then_some((t.partitions().len() as u32, replicas)))
                },
                &format!("topic '{name}'"),
            )
        })
        .await?;
        Ok(TopicInfo {
            partitions,
            created,
            replication_factor: u16::try_from(replicas).ok().filter(|r| *r > 0),
        })
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), TransportError> {
        let results = self.admin.delete_topics(&[topic], &Self::options()).await?;
        match results.into_iter().next() {
            Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => Ok(()),
            Some(Err((t, code))) => Err(TransportError::Invalid(format!(
                "cannot delete topic '{t}': {code}"
            ))),
            None => Ok(()),
        }
    }
}

// --------------------------------------------------------------- producer

/// librdkafka producer settings for loadgen's knobs, plus what a reader of
/// the report must know about them.
pub fn producer_config(addr: &str, s: &ProducerSettings) -> (ClientConfig, Vec<String>) {
    let mut notes = Vec::new();
    let mut c = base_config(addr, "loadgen-producer");
    let idempotent = s.acks == Acks::All;
    let mut inflight = s.max_inflight.max(1);
    if idempotent && inflight > IDEMPOTENT_INFLIGHT_MAX {
        notes.push(format!(
            "kafka: max in-flight {inflight} lowered to {IDEMPOTENT_INFLIGHT_MAX}, librdkafka's limit for an idempotent producer"
        ));
        inflight = IDEMPOTENT_INFLIGHT_MAX;
    }
    c.set("acks", s.acks.to_string())
        .set("compression.type", s.compression.name())
        .set("linger.ms", s.linger_ms.to_string())
        .set(
            "batch.size",
            s.batch_bytes.clamp(1, i32::MAX as usize).to_string(),
        )
        // Bytes decide the batch, as on the native path.
        .set("batch.num.messages", "1000000")
        // Also caps a batch: keep it out of batch.size's way.
        .set(
            "message.max.bytes",
            (s.batch_bytes + (64 << 10))
                .clamp(1_000_000, 1_000_000_000)
                .to_string(),
        )
        .set(
            "max.in.flight.requests.per.connection",
            inflight.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (s.buffer_bytes / 1024)
                .clamp(1, i32::MAX as usize)
                .to_string(),
        )
        .set("queue.buffering.max.messages", "0")
        // Java-compatible key hashing (loadgen places records explicitly,
        // with the same murmur2 for keyed records).
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string());
    if idempotent {
        c.set("enable.idempotence", "true");
        notes.push(format!(
            "kafka: {}, acks=all with enable.idempotence=true: retries are on and deduplicated by the broker, so the duplicate and order checks stay meaningful",
            library()
        ));
    } else {
        c.set("enable.idempotence", "false")
            .set("message.send.max.retries", "0");
        notes.push(format!(
            "kafka: {}, acks={} with enable.idempotence=false and retries=0 (librdkafka cannot be idempotent below acks=all): a failed request is reported as a delivery error rather than retried into a possible duplicate",
            library(),
            s.acks
        ));
    }
    (c, notes)
}

/// The consumer's settings (the `max_wait` of a poll round is loadgen's).
pub fn consumer_config(addr: &str) -> ClientConfig {
    let mut c = base_config(addr, "loadgen-consumer");
    // librdkafka wants a group id even for assign(); the group is never joined.
    c.set("group.id", "loadgen-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string())
        // A consumer that fell behind by its local queue's worth waits this
        // long before fetching again (default 1 s: a latency cliff).
        .set("fetch.queue.backoff.ms", "10")
        // Bound what a consumer buffers, as the native consumer's fetch
        // size does (librdkafka's defaults allow 64 MiB queued plus a
        // 50 MB fetch per consumer).
        .set(
            "queued.max.messages.kbytes",
            (CONSUMER_BUFFER_BYTES / 1024).to_string(),
        )
        .set("fetch.max.bytes", CONSUMER_BUFFER_BYTES.to_string());
    c
}

/// Fetched bytes a Kafka consumer may hold: queued and in one fetch each.
pub const CONSUMER_BUFFER_BYTES: usize = 32 << 20;

fn config_map(c: &ClientConfig) -> BTreeMap<String, String> {
    c.config_map()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the report records about the Kafka client.
pub fn client_info(addr: &str, s: &ProducerSettings) -> ClientInfo {
    ClientInfo {
        library: library(),
        producer_config: config_map(&producer_config(addr, s).0),
        consumer_config: config_map(&consumer_config(addr)),
    }
}

/// The parts of librdkafka's statistics JSON used here.
#[derive(Deserialize, Default)]
struct Stats {
    /// Key and value bytes of every record put into a batch so far.
    #[serde(default)]
    txmsg_bytes: i64,
    #[serde(default)]
    topics: BTreeMap<String, TopicStats>,
    /// Idempotent producer state.
    #[serde(default)]
    eos: Option<Eos>,
}

#[derive(Deserialize, Default)]
struct Eos {
    #[serde(default)]
    idemp_state: String,
}

#[derive(Deserialize, Default)]
struct TopicStats {
    /// Batch sizes on the wire (after compression) since the last report.
    #[serde(default)]
    batchsize: Window,
}

#[derive(Deserialize, Default)]
struct Window {
    #[serde(default)]
    sum: i64,
    #[serde(default)]
    cnt: i64,
}

/// Receives delivery reports and statistics on the polling thread.
struct Reports {
    sink: AckSink,
    topic: String,
    /// `txmsg_bytes` at the previous statistics report.
    last_txmsg_bytes: AtomicI64,
    /// The idempotent producer has its producer id.
    pid_assigned: AtomicBool,
}

impl ClientContext for Reports {
    fn stats_raw(&self, json: &[u8]) {
        let Ok(s) = serde_json::from_slice::<Stats>(json) else {
            return;
        };
        if s.eos.is_some_and(|e| e.idemp_state == "Assigned") {
            self.pid_assigned.store(true, Ordering::Relaxed);
        }
        let Some(t) = s.topics.get(&self.topic) else {
            return;
        };
        if t.batchsize.cnt <= 0 {
            // Bytes (if any) carry over to the report that has their batches.
            return;
        }
        let uncompressed =
            s.txmsg_bytes - self.last_txmsg_bytes.swap(s.txmsg_bytes, Ordering::Relaxed);
        (self.sink)(&AckEvent {
            partition: 0,
            tokens: &[],
            batches: t.batchsize.cnt as u64,
            uncompressed_bytes: Some(uncompressed.max(0) as usize),
            compressed_bytes: Some(t.batchsize.sum.max(0) as usize),
            error: None,
        });
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let (partition, error) = match result {
            Ok(m) => (m.partition(), None),
            Err((e, m)) => (m.partition(), Some(e.to_string())),
        };
        (self.sink)(&AckEvent {
            partition: partition.max(0) as u32,
            tokens: &[token as u64],
            batches: 0,
            uncompressed_bytes: None,
            compressed_bytes: None,
            error,
        });
    }
}

pub struct KafkaProducer {
    producer: Arc<BaseProducer<Reports>>,
    topic: String,
    stop: Arc<AtomicBool>,
    poller: Mutex<Option<JoinHandle<()>>>,
    notes: Vec<String>,
}

impl KafkaProducer {
    pub async fn open(
        addr: &str,
        topic: &str,
        s: &ProducerSettings,
        sink: AckSink,
    ) -> Result<KafkaProducer, TransportError> {
        const _: () = assert!(usize::BITS >= 64, "tokens are u64 and travel as usize");
        let (cfg, notes) = producer_config(addr, s);
        let reports = Reports {
            sink,
            topic: topic.to_string(),
            last_txmsg_bytes: AtomicI64::new(0),
            pid_assigned: AtomicBool::new(false),
        };
        let producer: Arc<BaseProducer<Reports>> = Arc::new(cfg.create_with_context(reports)?);
        // Connect and learn the topic before the run's clock starts, as the
        // native producer does.
        let (p, t) = (producer.clone(), topic.to_string());
        blocking(move || {
            retry_until_visible(
                || {
                    // The topic is enough: librdkafka's producer looks up
                    // a partition's leader again while it has none.
                    let md = p.client().fetch_metadata(Some(&t), ADMIN_TIMEOUT)?;
                    Ok(md
                        .topics()
                        .iter()
                        .any(|x| x.name() == t && x.error().is_none())
                        .then_some(()))
                },
                &format!("topic '{t}'"),
            )
        })
        .await?;
        // Delivery reports and statistics are served on a loadgen thread.
        let stop = Arc::new(AtomicBool::new(false));
        let (p, st) = (producer.clone(), stop.clone());
        let poller = std::thread::Builder::new()
            .name("lg-kafka-acks".into())
            .spawn(move || {
                crate::cpu::register_current_thread();
                while !st.load(Ordering::Relaxed) {
                    p.poll(Duration::from_millis(50));
                }
                crate::cpu::unregister_current_thread();
            })
            .map_err(|e| TransportError::Invalid(format!("cannot start a polling thread: {e}")))?;
        if s.acks == Acks::All {
            // librdkafka asks for a producer id 500 ms after start (no
            // broker is up before), and holds every record until it has
            // one; wait for it, as the native producer connects before the
            // run's clock starts. Statistics (once a second) say when.
            let p = producer.clone();
            blocking(move || {
                let deadline = Instant::now() + ADMIN_TIMEOUT;
                while !p.context().pid_assigned.load(Ordering::Relaxed) {
                    if Instant::now() >= deadline {
                        return Err(TransportError::Invalid(format!(
                            "the idempotent producer got no producer id within {ADMIN_TIMEOUT:?} (InitProducerId)"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })
            .await?;
        }
        Ok(KafkaProducer {
            producer,
            topic: topic.to_string(),
            stop,
            poller: Mutex::new(Some(poller)),
            notes,
        })
    }

    /// Queue one record. `send` runs inside `Handle::block_on` on a
    /// producer's own thread (see `producer.rs`), so waiting here for
    /// buffer space blocks no tokio worker; the wait is part of the
    /// record's latency, as on the native path.
    #[inline]
    pub async fn send(
        &self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<(), TransportError> {
        self.send_now(partition, key, value, timestamp_ms, token)
    }

    /// [`KafkaProducer::send`] without a future: librdkafka's queueing is
    /// synchronous (it sleeps here while its queue is full).
    pub fn send_now(
        &self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<(), TransportError> {
        let mut record =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(&self.topic, token as usize)
                .partition(partition as i32)
                .payload(value)
                .timestamp(timestamp_ms);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Wait until every queued record was acknowledged or failed (librdkafka
    /// fails what it could not deliver within `message.timeout.ms`).
    pub async fn close(&self) -> Result<(), TransportError> {
        let p = self.producer.clone();
        blocking(move || {
            p.flush(Duration::from_millis(MESSAGE_TIMEOUT_MS + 5_000))
                .map_err(TransportError::from)
        })
        .await
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.poller.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}

// --------------------------------------------------------------- consumer

pub struct KafkaConsumer {
    consumer: StreamConsumer,
    topic: CString,
    partitions: Vec<u32>,
    /// Next offset per partition (indexed by partition number).
    next: Vec<i64>,
    max_wait: Duration,
    /// An error met after some records were handed over; returned by the
    /// next poll so those records are not lost to the caller.
    pending_error: Option<KafkaError>,
}

impl KafkaConsumer {
    pub async fn open(
        addr: &str,
        topic: &str,
        partitions: Vec<u32>,
        max_wait_ms: u32,
    ) -> Result<KafkaConsumer, TransportError> {
        let cfg = consumer_config(addr);
        let (t, parts) = (topic.to_string(), partitions.clone());
        // Blocking-pool threads are inside the runtime, which the stream
        // consumer needs for its wake-up task.
        let (consumer, start) = blocking(move || {
            let c: StreamConsumer = cfg.create()?;
            let mut tpl = TopicPartitionList::new();
            let mut start = Vec::new();
            // One Metadata request (repeated only while some partition has
            // no leader) refreshes librdkafka's cache for every assigned
            // partition before their watermarks are asked (see `led_in`).
            retry_until_visible(
                || {
                    let md = c.fetch_metadata(Some(&t), ADMIN_TIMEOUT)?;
                    Ok(led_in(&md, &t, Some(&parts)).then_some(()))
                },
                &format!("topic '{t}' partitions {parts:?}"),
            )?;
            for &p in &parts {
                let high = retry_until_visible(
                    || Ok(Some(c.fetch_watermarks(&t, p as i32, ADMIN_TIMEOUT)?.1)),
                    &format!("topic '{t}' partition {p}"),
                )?;
                tpl.add_partition_offset(&t, p as i32, Offset::Offset(high))?;
                start.push((p, high));
            }
            c.assign(&tpl)?;
            Ok((c, start))
        })
        .await?;
        let max_p = partitions.iter().copied().max().unwrap_or(0) as usize;
        let mut next = vec![0; max_p + 1];
        for (p, high) in start {
            next[p as usize] = high;
        }
        Ok(KafkaConsumer {
            consumer,
            topic: CString::new(topic)
                .map_err(|_| TransportError::Invalid("topic name contains a NUL".into()))?,
            partitions,
            next,
            max_wait: Duration::from_millis(max_wait_ms as u64),
            pending_error: None,
        })
    }

    /// Wait up to `max_wait` for a record, then hand over everything
    /// already fetched (up to [`POLL_MAX`]).
    pub async fn poll(
        &mut self,
        mut visit: impl FnMut(u32, &[u8]),
    ) -> Result<usize, TransportError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e.into());
        }
        let KafkaConsumer {
            consumer,
            next,
            max_wait,
            pending_error,
            ..
        } = self;
        let mut stream = consumer.stream();
        let first = match tokio::time::timeout(*max_wait, stream.next()).await {
            Ok(Some(r)) => r,
            _ => return Ok(0),
        };
        let mut take = |r: Result<BorrowedMessage<'_>, KafkaError>| -> Result<(), KafkaError> {
            let m = r?;
            let p = m.partition();
            if let Some(slot) = usize::try_from(p).ok().and_then(|i| next.get_mut(i)) {
                *slot = m.offset() + 1;
            }
            visit(p.max(0) as u32, m.payload().unwrap_or(&[]));
            Ok(())
        };
        take(first)?;
        let mut n = 1;
        while n < POLL_MAX {
            match stream.next().now_or_never() {
                Some(Some(r)) => {
                    if let Err(e) = take(r) {
                        *pending_error = Some(e);
                        break;
                    }
                    n += 1;
                }
                _ => break,
            }
        }
        Ok(n)
    }

    /// Every partition's position reached the high watermark of its latest
    /// fetch response (librdkafka's cached value: no request).
    pub fn caught_up(&self) -> bool {
        let rk = self.consumer.client().native_ptr();
        self.partitions.iter().all(|&p| {
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: rk is the live client handle owned by self.consumer;
            // topic is NUL-terminated; low/high are valid for writes.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    rk,
                    self.topic.as_ptr(),
                    p as i32,
                    &mut low,
                    &mut high,
                )
            };
            err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                && high >= 0
                && self.next[p as usize] >= high
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog::format::Compression;

    fn settings(acks: Acks, max_inflight: usize) -> ProducerSettings {
        ProducerSettings {
            batch_bytes: 1 << 20,
            linger_ms: 7,
            compression: Compression::Zstd,
            acks,
            max_inflight,
            buffer_bytes: 32 << 20,
        }
    }

    fn get(c: &ClientConfig, k: &str) -> String {
        c.get(k)
            .unwrap_or_else(|| panic!("{k} not set"))
            .to_string()
    }

    #[test]
    fn knobs_map_onto_librdkafka_settings() {
        let (c, _) = producer_config("h:9092", &settings(Acks::Leader, 8));
        assert_eq!(get(&c, "bootstrap.servers"), "h:9092");
        assert_eq!(get(&c, "batch.size"), "1048576");
        assert_eq!(get(&c, "linger.ms"), "7");
        assert_eq!(get(&c, "compression.type"), "zstd");
        assert_eq!(get(&c, "acks"), "1");
        assert_eq!(get(&c, "max.in.flight.requests.per.connection"), "8");
        assert_eq!(get(&c, "queue.buffering.max.kbytes"), "32768");
        // A 1 MiB batch is not capped by the request size limit.
        assert!(get(&c, "message.max.bytes").parse::<usize>().unwrap() > 1 << 20);
        assert_eq!(get(&c, "partitioner"), "murmur2_random");
    }

    #[test]
    fn acks_all_is_idempotent_and_lower_acks_never_retry() {
        let (c, notes) = producer_config("h:9092", &settings(Acks::All, 8));
        assert_eq!(get(&c, "acks"), "all");
        assert_eq!(get(&c, "enable.idempotence"), "true");
        assert_eq!(get(&c, "max.in.flight.requests.per.connection"), "5");
        assert!(c.get("message.send.max.retries").is_none());
        assert!(
            notes.iter().any(|n| n.contains("lowered to 5")),
            "{notes:?}"
        );
        for acks in [Acks::None, Acks::Leader] {
            let (c, notes) = producer_config("h:9092", &settings(acks, 5));
            assert_eq!(get(&c, "enable.idempotence"), "false");
            assert_eq!(get(&c, "message.send.max.retries"), "0");
            assert!(notes.iter().any(|n| n.contains("retries=0")), "{notes:?}");
        }
        // librdkafka itself accepts every combination.
        for acks in [Acks::None, Acks::Leader, Acks::All] {
            let (c, _) = producer_config("127.0.0.1:1", &settings(acks, 5));
            c.create::<BaseProducer>()
                .unwrap_or_else(|e| panic!("acks={acks}: {e}"));
        }
        consumer_config("127.0.0.1:1")
            .create::<rdkafka::consumer::BaseConsumer>()
            .unwrap();
    }

    #[test]
    fn statistics_become_batch_reports() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let reports = Reports {
            sink: Arc::new(move |e: &AckEvent| {
                ev.lock().unwrap().push((
                    e.tokens.len(),
                    e.batches,
                    e.uncompressed_bytes,
                    e.compressed_bytes,
                ))
            }),
            topic: "t".into(),
            last_txmsg_bytes: AtomicI64::new(0),
            pid_assigned: AtomicBool::new(false),
        };
        let stats = |txmsg_bytes: i64, cnt: i64, sum: i64, idemp: &str| {
            format!(
                r#"{{"name":"x","txmsg_bytes":{txmsg_bytes},"eos":{{"idemp_state":"{idemp}"}},
                   "topics":{{"t":{{"topic":"t","batchsize":{{"min":1,"max":2,"avg":1,"sum":{sum},"cnt":{cnt}}},
                   "batchcnt":{{"sum":3,"cnt":{cnt}}},"partitions":{{}}}}}}}}"#
            )
        };
        reports.stats_raw(stats(10_000, 4, 5_000, "WaitPID").as_bytes());
        assert!(!reports.pid_assigned.load(Ordering::Relaxed));
        reports.stats_raw(stats(16_000, 0, 0, "Assigned").as_bytes());
        assert!(reports.pid_assigned.load(Ordering::Relaxed));
        reports.stats_raw(stats(30_000, 2, 4_000, "Assigned").as_bytes());
        reports.stats_raw(b"not json");
        // Interval deltas of the cumulative byte count; no event without batches.
        assert_eq!(
            *events.lock().unwrap(),
            vec![
                (0, 4, Some(10_000), Some(5_000)),
                (0, 2, Some(20_000), Some(4_000))
            ]
        );
    }
}
