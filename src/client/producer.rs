//! The batching producer.
//!
//! Records go into one open batch per partition. A batch is *ready* when it
//! holds `batch_bytes` (uncompressed) or has been open for `linger_ms`. One
//! sender task per producer takes ready batches whenever an in-flight slot
//! is free, compresses each once, packs them into a request of at most
//! `request_bytes_max` and sends it; requests on the connection keep the
//! order in which batches became ready, so records of one partition are
//! appended in send order. With `linger_ms = 0` a batch is ready at once,
//! but records keep filling it while every in-flight slot is busy (Kafka's
//! behaviour): batching adapts to load.
//!
//! Routing (see [`super::routes`]): one request carries batches for one
//! broker, the leader of each of their partitions. A batch whose answer is
//! `NotLeader`, or (in a cluster) whose request met a failed connection, is
//! sent again after a routes refresh and a backoff, at most
//! [`ROUTED_ATTEMPTS_MAX`] sends and never past `request_timeout_ms` after
//! its first. Order within
//! a partition survives a retry: the partition is held (no new batch of it
//! goes out) from the first failed answer until every batch of it in
//! flight has answered; then the failed batches go again in the order they
//! were sealed, ahead of anything newer. (Without idempotence a batch that
//! a dying connection had already delivered may be stored twice, and
//! batches in flight while leadership moves to the very broker they were
//! sent to may land around a failed one: the same at-least-once terms as
//! Kafka's non-idempotent producer.)
//!
//! Completion: every record returns a [`Delivery`] that resolves to its
//! offset; loadgen instead attaches a `u64` token per record and gets one
//! [`AckedBatch`] callback per batch (no per-record allocation), and
//! queues records in runs under one hold of the lock ([`Burst`]).
//!
//! Memory: records buffered but not yet acknowledged are bounded by
//! `buffer_bytes_max`; `send` waits when the producer is over it.

use super::partitioner::{DefaultPartitioner, Partitioner};
use super::routes::{retry_backoff, ROUTED_ATTEMPTS_MAX};
use super::{Client, ClientError};
use crate::format::{BatchBuilder, Compression, ProducerIds};
use crate::protocol::frame::ApiKey;
use crate::protocol::messages::{
    encode_produce_deferred, Acks, ProduceResponse, ProduceTopicFrames,
};
use crate::protocol::ErrorCode;
use bytes::Bytes;
use hashbrown::hash_map::EntryRef;
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

#[derive(Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    pub compression: Compression,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub request_bytes_max: usize,
    pub max_inflight_requests: usize,
    pub request_timeout_ms: u32,
    pub buffer_bytes_max: usize,
    /// Called once per acknowledged (or failed) batch, on the client's runtime.
    pub on_batch_acked: Option<BatchCallback>,
}

/// A topic's sealed batches, per partition, in send order.
type TopicBatches = (Arc<str>, Vec<(u32, Vec<Bytes>)>);

/// Per-batch acknowledgement callback.
pub type BatchCallback = Arc<dyn Fn(&AckedBatch) + Send + Sync>;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            compression: Compression::None,
            batch_bytes: 64 << 10,
            linger_ms: 5,
            request_bytes_max: 4 << 20,
            max_inflight_requests: 5,
            request_timeout_ms: 30_000,
            buffer_bytes_max: 64 << 20,
            on_batch_acked: None,
        }
    }
}

/// What a batch-ack callback sees.
pub struct AckedBatch<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// Offset of the first record (None for acks=0 or on error).
    pub base_offset: Option<u64>,
    pub tokens: &'a [u64],
    pub uncompressed_bytes: usize,
    pub compressed_bytes: usize,
    pub error: Option<&'a ClientError>,
}

struct BatchAck {
    result: OnceLock<Result<Option<u64>, ClientError>>,
    notify: Notify,
}

impl BatchAck {
    fn new() -> Arc<Self> {
        Arc::new(BatchAck {
            result: OnceLock::new(),
            notify: Notify::new(),
        })
    }
    fn set(&self, r: Result<Option<u64>, ClientError>) {
        let _ = self.result.set(r);
        self.notify.notify_waiters();
    }
}

/// Resolves when the record's batch is acknowledged.
pub struct Delivery {
    ack: Arc<BatchAck>,
    index: u32,
    pub partition: u32,
}

impl Delivery {
    /// The record's offset (None with acks=0).
    pub async fn wait(self) -> Result<Option<u64>, ClientError> {
        loop {
            let n = self.ack.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if let Some(r) = self.ack.result.get() {
                return r.clone().map(|o| o.map(|b| b + self.index as u64));
            }
            n.await;
        }
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    ack: Arc<BatchAck>,
    tokens: Vec<u64>,
    opened: Instant,
    bytes: usize,
    /// Room reserved for its records when it opened (see
    /// [`Accumulator::reserved`]).
    reserved: usize,
}

struct SealedBatch {
    topic: Arc<str>,
    partition: u32,
    batch: OpenBatch,
    /// Seal order across the producer: a partition's failed batches are
    /// sent again in this order.
    seq: u64,
    /// The frame, built (compressed, CRC'd) on the first send; a retry
    /// sends the same bytes.
    frame: Option<Bytes>,
    /// Sends so far, and when the first went out.
    attempts: u32,
    first_sent: Option<Instant>,
    /// A retry waits until then (backoff).
    not_before: Option<Instant>,
}

/// Most bytes a record's deltas add to its zero-delta size
/// ([`BatchBuilder::record_size`]): a timestamp delta of up to 10 bytes
/// and an offset delta of up to 5 instead of one each, and one more byte of
/// length.
const RECORD_DELTA_SLACK: usize = 9 + 4 + 1;

/// A partition of a topic.
type PartKey = (Arc<str>, u32);

/// The open batches, by topic and then partition. Nested so that queueing a
/// record looks its batch up by `&str`, without an owned key: cloning and
/// dropping the topic's `Arc<str>` per record, on a count the sender's
/// thread also touches, was a quarter of a loadgen producer's CPU with
/// 100 B records.
#[derive(Default)]
struct OpenBatches {
    /// A topic is here only while it has an open batch: `remove` drops it
    /// with its last one.
    by_topic: hashbrown::HashMap<Arc<str>, HashMap<u32, OpenBatch>, FxBuildHasher>,
}

impl OpenBatches {
    fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// The open batch of `topic`'s `partition`, opened with `open` if there
    /// is none (`shared` gives the topic's name as a shared string then).
    fn get_or_open(
        &mut self,
        topic: &str,
        partition: u32,
        shared: impl FnOnce() -> Arc<str>,
        open: impl FnOnce() -> OpenBatch,
    ) -> &mut OpenBatch {
        // One hash and compare of the topic: std's map needed two lookups
        // here (a `get_mut` that may return cannot fall through to an
        // insert under today's borrow checker), and they, with the
        // compares, were ~10% of a 100 B loadgen producer's CPU.
        let parts = match self.by_topic.entry_ref(topic) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => v.insert_with_key(shared(), HashMap::default()),
        };
        parts.entry(partition).or_insert_with(open)
    }

    /// Take a partition's open batch out, with its key.
    fn remove(&mut self, topic: &str, partition: u32) -> Option<(PartKey, OpenBatch)> {
        let parts = self.by_topic.get_mut(topic)?;
        let b = parts.remove(&partition)?;
        let t = if parts.is_empty() {
            self.by_topic.remove_entry(topic).expect("present above").0
        } else {
            self.by_topic
                .get_key_value(topic)
                .expect("present above")
                .0
                .clone()
        };
        Some(((t, partition), b))
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, u32, &OpenBatch)> {
        self.by_topic
            .iter()
            .flat_map(|(t, parts)| parts.iter().map(move |(p, b)| (t, *p, b)))
    }
}

#[derive(Default)]
struct Accumulator {
    open: OpenBatches,
    /// Full batches, in the order they filled up. A deque: the sender
    /// takes from the front, and with small batches and a large buffer this
    /// holds tens of thousands of them (a `Vec::remove(0)` per batch taken
    /// moved them all and cost loadgen a core at 1 KiB batches).
    full: VecDeque<SealedBatch>,
    /// Next [`SealedBatch::seq`].
    next_seq: u64,
    /// Held partitions (see the module doc) and their batches to send
    /// again, in seal order. A key is present from the first failed answer
    /// until its batches have gone out again.
    retry: HashMap<PartKey, VecDeque<SealedBatch>>,
    /// Batches handed to a request and not yet answered, per partition.
    inflight: HashMap<PartKey, usize>,
    flush_requested: bool,
    closed: bool,
    /// Room reserved up front by the open batches, at most
    /// `buffer_bytes_max` (beyond one record each).
    reserved: usize,
    /// The topic of the last record queued, shared by its batches' keys:
    /// a producer sends to one topic or a few, and making a new `Arc<str>`
    /// for each record was an allocation and a free per record.
    last_topic: Option<Arc<str>>,
}

/// `topic` as a shared string, without allocating when it is the topic of
/// the last batch opened.
fn shared_topic(last: &mut Option<Arc<str>>, topic: &str) -> Arc<str> {
    match last {
        Some(t) if **t == *topic => t.clone(),
        _ => {
            let t: Arc<str> = Arc::from(topic);
            *last = Some(t.clone());
            t
        }
    }
}

/// One record to queue, with its encoded size
/// ([`BatchBuilder::record_size`]).
struct RecordRef<'a> {
    partition: u32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [(&'a str, Option<&'a [u8]>)],
    timestamp_ms: i64,
    token: u64,
    size: usize,
}

/// Queue `r` into its partition's open batch, under the accumulator's
/// lock; its room in the buffer was already taken. Returns the delivery
/// (if `tracked`), whether the batch filled up (and was sealed), and
/// whether the record opened a batch. Inlined: in a [`Burst`]'s copy the
/// untracked record's `Delivery` is known to be `None` and disappears.
#[inline(always)]
fn queue_record(
    acc: &mut Accumulator,
    cfg: &ProducerConfig,
    topic: &str,
    r: &RecordRef<'_>,
    tracked: bool,
) -> (Option<Delivery>, bool, bool) {
    // A new batch reserves room for a full batch at once: grown by
    // doubling, it was copied at every doubling on its way up (the
    // producers' memmove fell from 3.1% to 1.7% of a 100 B loadgen
    // run's samples). All open batches together reserve at most
    // the buffer's budget: with a thousand partitions, a full
    // batch's room for each would hold (and, as the allocator
    // reuses touched memory, keep resident) far more than the
    // records buffered; past the budget a batch starts at one
    // record's room and grows as before.
    let left = cfg.buffer_bytes_max.saturating_sub(acc.reserved);
    // `size` counts zero deltas; in the batch a record's timestamp
    // and offset deltas (and so its length) take up to
    // RECORD_DELTA_SLACK more bytes, and a full batch's last
    // record overflowed a room of exactly `batch_bytes + size`:
    // a copy of the whole batch at its doubling (2.5% of a 100 B
    // producer's CPU), and its tokens' too.
    let size = r.size;
    let room = (cfg.batch_bytes + size + RECORD_DELTA_SLACK)
        .min(left)
        .max(size);
    let (open, reserved, last_topic) = (&mut acc.open, &mut acc.reserved, &mut acc.last_topic);
    let b = open.get_or_open(
        topic,
        r.partition,
        || shared_topic(last_topic, topic),
        || {
            *reserved += room;
            OpenBatch {
                builder: BatchBuilder::with_capacity(room).for_codec(cfg.compression),
                ack: BatchAck::new(),
                tokens: Vec::with_capacity(room / size.max(1) + 1),
                opened: Instant::now(),
                bytes: 0,
                reserved: room,
            }
        },
    );
    let first = b.builder.is_empty();
    b.builder.push(r.timestamp_ms, r.key, r.value, r.headers);
    b.tokens.push(r.token);
    b.bytes += size;
    let delivery = tracked.then(|| Delivery {
        ack: b.ack.clone(),
        index: b.builder.record_count() as u32 - 1,
        partition: r.partition,
    });
    let full = b.builder.size_bytes() >= cfg.batch_bytes;
    if full {
        let (key_t, batch) = acc.open.remove(topic, r.partition).expect("just queued");
        let sealed = acc.seal(key_t, batch);
        acc.full.push_back(sealed);
    }
    (delivery, full, first)
}

impl Accumulator {
    fn seal(&mut self, key: PartKey, batch: OpenBatch) -> SealedBatch {
        assert!(
            self.reserved >= batch.reserved,
            "a batch's room was counted when it opened"
        );
        self.reserved -= batch.reserved;
        self.next_seq += 1;
        SealedBatch {
            topic: key.0,
            partition: key.1,
            batch,
            seq: self.next_seq,
            frame: None,
            attempts: 0,
            first_sent: None,
            not_before: None,
        }
    }
}

struct Inner {
    client: Client,
    cfg: ProducerConfig,
    partitioner: Box<dyn Partitioner>,
    partitions: Mutex<HashMap<String, u32>>,
    /// The first topic whose partitions were learned (never changes).
    first_topic: OnceLock<Arc<str>>,
    acc: Mutex<Accumulator>,
    wake_sender: Notify,
    buffered: AtomicUsize,
    buffer_freed: Notify,
    /// Batches handed to the sender but not yet acknowledged.
    unacked: AtomicUsize,
    acked: Notify,
    inflight: Arc<Semaphore>,
}

/// A producer. Cheap to clone; all clones share batches and the sender.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    pub fn new(client: Client, cfg: ProducerConfig) -> Producer {
        Self::with_partitioner(client, cfg, Box::new(DefaultPartitioner::new()))
    }

    pub fn with_partitioner(
        client: Client,
        cfg: ProducerConfig,
        partitioner: Box<dyn Partitioner>,
    ) -> Producer {
        let inflight = Arc::new(Semaphore::new(cfg.max_inflight_requests.max(1)));
        let inner = Arc::new(Inner {
            client,
            cfg,
            partitioner,
            partitions: Mutex::new(HashMap::default()),
            first_topic: OnceLock::new(),
            acc: Mutex::new(Accumulator::default()),
            wake_sender: Notify::new(),
            buffered: AtomicUsize::new(0),
            buffer_freed: Notify::new(),
            unacked: AtomicUsize::new(0),
            acked: Notify::new(),
            inflight,
        });
        tokio::spawn(sender_loop(inner.clone()));
        Producer { inner }
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Partition count of a topic (cached after the first lookup).
    pub async fn partitions(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(n) = self.inner.partitions.lock().unwrap().get(topic) {
            return Ok(*n);
        }
        let t = self.inner.client.topic(topic).await?;
        self.inner
            .partitions
            .lock()
            .unwrap()
            .insert(topic.to_string(), t.partitions);
        let _ = self.inner.first_topic.set(Arc::from(topic));
        Ok(t.partitions)
    }

    /// Queue a record; the partition comes from the partitioner.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<Delivery, ClientError> {
        let n = self.partitions(topic).await?;
        let p = self.inner.partitioner.partition(topic, key, n);
        self.send_to(topic, p, key, value, headers, now_ms(), 0)
            .await
    }

    /// Queue a record for an explicit partition, with a timestamp and a token
    /// passed back in the batch-ack callback.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_to(
        &self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<Delivery, ClientError> {
        let d = self
            .enqueue(
                topic,
                partition,
                key,
                value,
                headers,
                timestamp_ms,
                token,
                true,
            )
            .await?;
        Ok(d.expect("a delivery was asked for"))
    }

    /// [`Producer::send_to`] without a [`Delivery`]: for a caller that
    /// learns of acks through the batch-ack callback alone. Making and
    /// dropping the handle per record moves its batch's shared count
    /// between the caller's and the sender's cores.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_to_untracked(
        &self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<(), ClientError> {
        self.enqueue(
            topic,
            partition,
            key,
            value,
            headers,
            timestamp_ms,
            token,
            false,
        )
        .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn enqueue(
        &self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
        token: u64,
        tracked: bool,
    ) -> Result<Option<Delivery>, ClientError> {
        // The topic's leaders are learned with its partition count (once).
        // An unknown topic is not refused here: the broker's answer says so,
        // as before routing.
        // The first topic's check is a string compare, without a lock:
        // most producers send to one topic, and the lookup's lock and hash
        // were ~5% of a loadgen producer's CPU with 100 B records.
        if self.inner.first_topic.get().map(|t| &**t) != Some(topic) {
            let _ = self.partitions(topic).await;
        }
        let size = BatchBuilder::record_size(key, value, headers);
        // Bound the memory of buffered, unacknowledged records. The check
        // comes first: registering for a wake-up costs more than the rest
        // of a small record's send, and the buffer usually has room.
        let has_room = |cur: usize| cur == 0 || cur + size <= self.inner.cfg.buffer_bytes_max;
        while !has_room(self.inner.buffered.load(Ordering::Acquire)) {
            let n = self.inner.buffer_freed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            // Again, once registered: room freed in between would
            // otherwise be a wake-up missed.
            if has_room(self.inner.buffered.load(Ordering::Acquire)) {
                break;
            }
            n.await;
        }
        self.inner.buffered.fetch_add(size, Ordering::AcqRel);
        let (delivery, full, first) = {
            let mut acc = self.inner.acc.lock().unwrap();
            if acc.closed {
                // Not queued: give its room back.
                self.inner.buffered.fetch_sub(size, Ordering::AcqRel);
                return Err(ClientError::Invalid("producer is closed".into()));
            }
            let r = RecordRef {
                partition,
                key,
                value,
                headers,
                timestamp_ms,
                token,
                size,
            };
            queue_record(&mut acc, &self.inner.cfg, topic, &r, tracked)
        };
        if full {
            let n = self.partitions(topic).await.unwrap_or(1);
            self.inner.partitioner.on_batch_sealed(topic, partition, n);
        }
        // A new batch must reach the sender even with linger > 0: an idle
        // sender waits without a deadline and would otherwise only see the
        // batch once some batch fills up, holding it far past linger.
        if full || first {
            self.inner.wake_sender.notify_one();
        }
        Ok(delivery)
    }

    /// Bytes the open batches reserved up front for their records: at most
    /// `buffer_bytes_max`, beyond one record's room per batch.
    pub fn reserved_bytes(&self) -> usize {
        self.inner.acc.lock().unwrap().reserved
    }

    /// Send everything buffered and wait until it is acknowledged.
    pub async fn flush(&self) -> Result<(), ClientError> {
        loop {
            let n = self.inner.acked.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            let empty = {
                let mut acc = self.inner.acc.lock().unwrap();
                let empty = acc.open.is_empty() && acc.full.is_empty();
                if !empty {
                    acc.flush_requested = true;
                }
                empty
            };
            if empty && self.inner.unacked.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            self.inner.wake_sender.notify_one();
            // Re-check periodically in case a wake-up raced.
            let _ = tokio::time::timeout(Duration::from_millis(50), n).await;
        }
    }

    /// Flush, then stop the sender.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.flush().await?;
        self.inner.acc.lock().unwrap().closed = true;
        self.inner.wake_sender.notify_one();
        Ok(())
    }
}

/// Room a [`Burst`] takes from the buffer's budget at a time.
const BURST_RESERVE_BYTES: usize = 64 << 10;

/// Records queued in a row under one hold of the producer's lock, for a
/// caller that sends many small records at once (loadgen's producers).
///
/// **Why.** Per record, [`Producer::send_to_untracked`] takes and releases
/// the accumulator's lock and adds to the shared count of buffered bytes.
/// With 100 B records those atomic operations, and the store-buffer drain
/// each one forces after the record's bytes were written, were about a
/// quarter of a loadgen producer thread.
///
/// **Budget.** `buffer_bytes_max` holds as for single sends: room is taken
/// from the buffered count before a record is queued, up to
/// `BURST_RESERVE_BYTES` (64 KiB) at a time, and what is left is given back on
/// drop. When there is no room, [`Burst::try_send`] queues nothing and
/// returns false; the caller drops the burst and sends that record with
/// [`Producer::send_to_untracked`], which waits for room.
///
/// Lifecycle: made by [`Producer::burst`] and dropped on the caller's
/// thread within one synchronous stretch. It holds a std mutex guard (so
/// it is not `Send`) that the sender task also waits for: hold it for a
/// few dozen records and never across an `.await`.
pub struct Burst<'a> {
    inner: &'a Inner,
    /// Held until drop (an `Option` so that drop releases it first).
    acc: Option<MutexGuard<'a, Accumulator>>,
    topic: &'a str,
    partitions: u32,
    /// Room taken from `Inner::buffered` and not yet used by a record.
    reserved: usize,
    /// Partitions whose batch filled up in this burst, for the partitioner.
    sealed: Vec<u32>,
    /// A batch was opened or sealed: the sender has work.
    wake: bool,
}

impl Producer {
    /// Start a [`Burst`] of records for `topic`. An unknown topic is not
    /// refused here, as with [`Producer::send_to`]: the broker's answer
    /// says so.
    pub async fn burst<'a>(&'a self, topic: &'a str) -> Result<Burst<'a>, ClientError> {
        let partitions = self.partitions(topic).await.unwrap_or(1);
        let acc = self.inner.acc.lock().unwrap();
        if acc.closed {
            return Err(ClientError::Invalid("producer is closed".into()));
        }
        Ok(Burst {
            inner: &self.inner,
            acc: Some(acc),
            topic,
            partitions,
            reserved: 0,
            sealed: Vec::new(),
            wake: false,
        })
    }
}

impl Burst<'_> {
    /// Queue a record for `partition` if the buffer has room for it, with a
    /// token for the batch-ack callback (no [`Delivery`]). False: nothing
    /// was queued (see the type's doc).
    pub fn try_send(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
        token: u64,
    ) -> bool {
        let size = BatchBuilder::record_size(key, value, headers);
        if size > self.reserved && !self.reserve(size) {
            return false;
        }
        self.reserved -= size;
        let r = RecordRef {
            partition,
            key,
            value,
            headers,
            timestamp_ms,
            token,
            size,
        };
        let acc = self.acc.as_mut().expect("held until drop");
        let (_, full, first) = queue_record(acc, &self.inner.cfg, self.topic, &r, false);
        if full {
            self.sealed.push(partition);
        }
        self.wake |= full || first;
        true
    }

    /// Take room for at least `size` more bytes from the buffer's budget:
    /// a chunk if it fits, else just `size`. The rule is a single send's:
    /// a record fits if the buffer is empty or stays within the budget.
    fn reserve(&mut self, size: usize) -> bool {
        let max = self.inner.cfg.buffer_bytes_max;
        let chunk = BURST_RESERVE_BYTES.min(max).max(size);
        for want in [chunk, size] {
            let took =
                self.inner
                    .buffered
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                        (cur == 0 || cur + want <= max).then_some(cur + want)
                    });
            if took.is_ok() {
                self.reserved += want;
                return true;
            }
        }
        false
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        drop(self.acc.take());
        if self.reserved > 0 {
            self.inner
                .buffered
                .fetch_sub(self.reserved, Ordering::AcqRel);
            self.inner.buffer_freed.notify_waiters();
        }
        for &p in &self.sealed {
            self.inner
                .partitioner
                .on_batch_sealed(self.topic, p, self.partitions);
        }
        if self.wake {
            self.inner.wake_sender.notify_one();
        }
    }
}

/// The client's wall time, stamped into the records it sends (a client
/// timestamp, CreateTime: the broker's decisions use its own clock).
pub fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.wall_ms()
}

/// What the sender takes for one request: batches whose partitions share
/// a leader, and that leader's node id.
struct Ready {
    batches: Vec<SealedBatch>,
    node: u32,
}

/// Take the batches that are ready and led by one broker, at most about
/// `budget` bytes: first the retries of held partitions with nothing in
/// flight (once their backoff is over), then full batches, then open ones
/// past linger (all of them when flushing). A held partition sends nothing
/// new. Returns how long until the next batch is due, if none is ready.
fn take_ready(inner: &Inner, budget: usize) -> (Option<Ready>, Option<Duration>) {
    let mut guard = inner.acc.lock().unwrap();
    let acc = &mut *guard;
    let routes = inner.client.routes();
    let linger = Duration::from_millis(inner.cfg.linger_ms);
    let now = Instant::now();
    let mut out: Vec<SealedBatch> = Vec::new();
    let mut node: Option<u32> = None;
    let mut bytes = 0;
    let mut next_due: Option<Duration> = None;
    let mut due_in = |d: Duration| next_due = Some(next_due.map_or(d, |n: Duration| n.min(d)));
    // Whether a batch of partition `k` may join this request: same leader.
    let joins = |k: &PartKey, node: &mut Option<u32>| {
        let leader = routes.leader(&k.0, k.1);
        match node {
            Some(n) if *n != leader => false,
            _ => {
                *node = Some(leader);
                true
            }
        }
    };
    let held: Vec<PartKey> = acc.retry.keys().cloned().collect();
    for k in held {
        if acc.inflight.get(&k).copied().unwrap_or(0) > 0 {
            continue;
        }
        let q = acc.retry.get_mut(&k).expect("held partition");
        if let Some(wait) = q
            .front()
            .and_then(|b| b.not_before)
            .and_then(|t| t.checked_duration_since(now))
            .filter(|w| !w.is_zero())
        {
            due_in(wait);
            continue;
        }
        if !q.is_empty() && !joins(&k, &mut node) {
            continue;
        }
        // All of the partition's retries go in one request, in seal order.
        while let Some(b) = q.pop_front() {
            bytes += b.batch.bytes;
            out.push(b);
        }
        acc.retry.remove(&k);
    }
    let mut i = 0;
    while i < acc.full.len() && (out.is_empty() || bytes < budget) {
        let k = (acc.full[i].topic.clone(), acc.full[i].partition);
        if acc.retry.contains_key(&k) || !joins(&k, &mut node) {
            i += 1;
            continue;
        }
        let b = acc.full.remove(i).expect("index below len");
        bytes += b.batch.bytes;
        out.push(b);
    }
    let flushing = acc.flush_requested;
    let due: Vec<PartKey> = acc
        .open
        .iter()
        .filter(|(_, _, b)| flushing || now.duration_since(b.opened) >= linger)
        .map(|(t, p, _)| (t.clone(), p))
        .collect();
    for k in due {
        if !out.is_empty() && bytes >= budget {
            break;
        }
        // Behind a held partition, or a full batch of its own left behind.
        let behind = acc.retry.contains_key(&k)
            || acc
                .full
                .iter()
                .any(|f| f.partition == k.1 && f.topic == k.0);
        if behind || !joins(&k, &mut node) {
            continue;
        }
        let (k, b) = acc.open.remove(&k.0, k.1).expect("listed as due above");
        bytes += b.bytes;
        let sealed = acc.seal(k, b);
        out.push(sealed);
    }
    if acc.open.is_empty() && acc.full.is_empty() {
        acc.flush_requested = false;
    }
    for b in &out {
        *acc.inflight
            .entry((b.topic.clone(), b.partition))
            .or_default() += 1;
    }
    // Counted as unacknowledged before the lock is released: `flush` sees
    // a batch either in the accumulator or in `unacked`. Counted after, a
    // flush on another thread could find both empty between the two and
    // return before these batches were answered (the CLI's `produce` then
    // reported records neither acknowledged nor failed). A retry's batch
    // (its frame already made) was counted when it first went out.
    let fresh = out.iter().filter(|b| b.frame.is_none()).count();
    inner.unacked.fetch_add(fresh, Ordering::AcqRel);
    if let Some(d) = acc
        .open
        .iter()
        .map(|(_, _, b)| linger.saturating_sub(now.duration_since(b.opened)))
        .min()
    {
        due_in(d);
    }
    let ready = node
        .filter(|_| !out.is_empty())
        .map(|node| Ready { batches: out, node });
    (ready, next_due)
}

async fn sender_loop(inner: Arc<Inner>) {
    loop {
        let permit = match inner.inflight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let ready = loop {
            let n = inner.wake_sender.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            let (ready, next_due) = take_ready(&inner, inner.cfg.request_bytes_max);
            if let Some(ready) = ready {
                break ready;
            }
            if inner.acc.lock().unwrap().closed {
                return;
            }
            match next_due {
                Some(d) => {
                    let _ = tokio::time::timeout(d.max(Duration::from_micros(100)), n).await;
                }
                None => n.await,
            }
        };
        let mut batches = ready.batches;
        // Seal: compress once, CRC once (a retry reuses the frame).
        let now = Instant::now();
        for s in &mut batches {
            if s.frame.is_none() {
                s.frame = Some(
                    s.batch
                        .builder
                        .finish(inner.cfg.compression, ProducerIds::NONE),
                );
            }
            s.attempts += 1;
            s.first_sent.get_or_insert(now);
        }
        send_request(&inner, ready.node, batches, permit).await;
    }
}

async fn send_request(
    inner: &Arc<Inner>,
    node: u32,
    frames: Vec<SealedBatch>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Group by topic, then partition; several batches of one partition stay in order.
    let mut order: Vec<TopicBatches> = Vec::new();
    for s in &frames {
        let f = s.frame.clone().expect("built before sending");
        let t = match order.iter_mut().find(|(t, _)| *t == s.topic) {
            Some(t) => t,
            None => {
                order.push((s.topic.clone(), Vec::new()));
                order.last_mut().unwrap()
            }
        };
        match t.1.iter_mut().find(|(p, _)| *p == s.partition) {
            Some((_, v)) => v.push(f),
            None => t.1.push((s.partition, vec![f])),
        }
    }
    let acks = inner.cfg.acks;
    let timeout = inner.cfg.request_timeout_ms;
    let topics: Vec<ProduceTopicFrames<'_>> = order
        .iter()
        .map(|(t, ps)| (&**t, ps.iter().map(|(p, v)| (*p, v.as_slice())).collect()))
        .collect();
    let seen = inner.client.routes().refresh_count();
    let sent = match inner.client.routes().node(node).await {
        Ok(conn) => {
            conn.send_parts(
                ApiKey::Produce,
                crate::protocol::API_VERSION,
                |b, payload| encode_produce_deferred(b, payload, acks, timeout, &topics),
                acks != Acks::None,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let inner = inner.clone();
    // The write is done (order on the wire is fixed); wait for the answer elsewhere.
    tokio::spawn(async move {
        let outcome: Result<Option<ProduceResponse>, ClientError> = match sent {
            Err(e) => Err(e),
            Ok(None) => Ok(None),
            Ok(Some(rx)) => match rx.await {
                Err(_) => Err(ClientError::Closed),
                Ok(Err(e)) => Err(e),
                Ok(Ok((h, mut r))) => {
                    if h.error != ErrorCode::None {
                        Err(ClientError::Broker {
                            code: h.error,
                            message: h.message,
                        })
                    } else {
                        ProduceResponse::decode(&mut r)
                            .map(Some)
                            .map_err(Into::into)
                    }
                }
            },
        };
        drop(permit);
        answered(&inner, seen, frames, outcome).await;
    });
}

/// Settle the batches of one answered (or failed) request: acknowledge
/// them, or hold their partitions and queue them to be sent again.
async fn answered(
    inner: &Arc<Inner>,
    seen: u64,
    frames: Vec<SealedBatch>,
    outcome: Result<Option<ProduceResponse>, ClientError>,
) {
    // Per-partition results; batches of one partition got consecutive offsets.
    let mut results: HashMap<(String, u32), Result<u64, ClientError>> = HashMap::default();
    if let Ok(Some(resp)) = &outcome {
        for (t, ps) in &resp.topics {
            for p in ps {
                let r = if p.result.error == ErrorCode::None {
                    Ok(p.base_offset)
                } else {
                    Err(ClientError::Broker {
                        code: p.result.error,
                        message: p.result.message.clone(),
                    })
                };
                results.insert((t.clone(), p.result.partition), r);
            }
        }
    }
    let timeout = Duration::from_millis(inner.cfg.request_timeout_ms as u64);
    let mut next_offset: HashMap<(String, u32), u64> = HashMap::default();
    let mut settled = Vec::with_capacity(frames.len());
    let mut again = Vec::new();
    let mut why: Option<String> = None;
    for s in frames {
        let key = (s.topic.to_string(), s.partition);
        let r: Result<Option<u64>, ClientError> = match &outcome {
            Err(e) => Err(e.clone()),
            Ok(None) => Ok(None),
            Ok(Some(_)) => match results.get(&key) {
                Some(Ok(base)) => {
                    let o = next_offset.entry(key.clone()).or_insert(*base);
                    let mine = *o;
                    *o += s.batch.builder_count() as u64;
                    Ok(Some(mine))
                }
                Some(Err(e)) => Err(e.clone()),
                None => Err(ClientError::Protocol(format!(
                    "no result for {}-{} in the produce response",
                    key.0, key.1
                ))),
            },
        };
        let retry = matches!(&r, Err(e) if inner.client.routes().is_reroutable_for(e, &key.0, key.1))
            && s.attempts < ROUTED_ATTEMPTS_MAX
            && s.first_sent.is_some_and(|t| t.elapsed() < timeout);
        if retry {
            if why.is_none() {
                why = r.err().map(|e| e.to_string());
            }
            again.push(s);
        } else {
            settled.push((s, r));
        }
    }
    let all_keys = part_keys(again.iter().chain(settled.iter().map(|(s, _)| s)));
    if !again.is_empty() {
        // Hold the partitions at once, so nothing newer of theirs goes out
        // while the routes refresh.
        {
            let mut acc = inner.acc.lock().unwrap();
            for k in part_keys(again.iter()) {
                acc.retry.entry(k).or_default();
            }
        }
        tracing::debug!(
            batches = again.len(),
            error = why.as_deref().unwrap_or(""),
            "produce to the wrong or a dead broker; refreshing routes and sending again"
        );
        let mut topics: Vec<&str> = again.iter().map(|s| &*s.topic).collect();
        topics.sort_unstable();
        topics.dedup();
        // A failed refresh leaves the routes as they were; the retry says
        // what is wrong if it fails again.
        let _ = inner.client.refresh_routes(seen, &topics).await;
    }
    {
        let mut acc = inner.acc.lock().unwrap();
        let not_before = Instant::now();
        for mut s in again {
            s.not_before = Some(not_before + retry_backoff(s.attempts));
            let q = acc.retry.entry((s.topic.clone(), s.partition)).or_default();
            let at = q.partition_point(|b| b.seq < s.seq);
            q.insert(at, s);
        }
        for k in all_keys {
            let n = acc.inflight.get_mut(&k).expect("counted when taken");
            *n -= 1;
            if *n == 0 {
                acc.inflight.remove(&k);
            }
        }
    }
    let n = settled.len();
    for (s, r) in settled {
        if let Some(cb) = &inner.cfg.on_batch_acked {
            cb(&AckedBatch {
                topic: &s.topic,
                partition: s.partition,
                base_offset: r.as_ref().ok().copied().flatten(),
                tokens: &s.batch.tokens,
                uncompressed_bytes: s.batch.bytes,
                compressed_bytes: s.frame.as_ref().map_or(0, |f| f.len()),
                error: r.as_ref().err(),
            });
        }
        s.batch.ack.set(r);
        inner.buffered.fetch_sub(s.batch.bytes, Ordering::AcqRel);
    }
    inner.buffer_freed.notify_waiters();
    inner.unacked.fetch_sub(n, Ordering::AcqRel);
    inner.acked.notify_waiters();
    inner.wake_sender.notify_one();
}

fn part_keys<'a>(batches: impl Iterator<Item = &'a SealedBatch>) -> Vec<PartKey> {
    batches.map(|s| (s.topic.clone(), s.partition)).collect()
}

impl OpenBatch {
    fn builder_count(&self) -> usize {
        self.tokens.len()
    }
}
