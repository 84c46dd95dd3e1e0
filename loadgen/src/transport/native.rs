//! The native-protocol backend: a thin adapter over `shardlog::client`.
//!
//! Each producer and consumer gets its own connection, like separate
//! client processes would, so the broker sees realistic per-connection
//! ordering and flow control.

use super::{AckEvent, AckSink, ProducerSettings, TopicInfo, TransportError};
use shardlog::client::producer::{AckedBatch, Burst};
use shardlog::client::ClientError;
use shardlog::client::{Client, Consumer, ConsumerConfig, Producer, ProducerConfig, StartAt};
use shardlog::protocol::ErrorCode;
use std::sync::Arc;

/// How long a created topic may take to reach every broker.
const TOPIC_VISIBLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct NativeAdmin {
    client: Client,
}

impl NativeAdmin {
    pub async fn connect(addr: &str) -> Result<NativeAdmin, TransportError> {
        Ok(NativeAdmin {
            client: Client::connect(addr).await?,
        })
    }

    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: Option<u16>,
    ) -> Result<TopicInfo, TransportError> {
        let created = match self
            .client
            .create_replicated_topic(topic, partitions, replication_factor, &[])
            .await
        {
            Ok(()) => true,
            Err(ClientError::Broker {
                code: ErrorCode::TopicExists,
                ..
            }) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(TopicInfo {
            partitions: self.visible_everywhere(topic).await?,
            created,
            replication_factor: replication_factor.filter(|_| created),
        })
    }

    /// Wait (up to [`TOPIC_VISIBLE_TIMEOUT`]) until `topic` is known to
    /// every live broker of the cluster (just this one on a single node);
    /// returns its partition count.
    ///
    /// Why every broker: a created topic is in the table of the broker
    /// that created it when the creation is answered (`cluster::link`
    /// waits for that), but another broker installs the controller's new
    /// table a moment later, and a request routed there meanwhile (to a
    /// partition it leads) is answered UnknownTopic.
    async fn visible_everywhere(&self, topic: &str) -> Result<u32, TransportError> {
        let deadline = std::time::Instant::now() + TOPIC_VISIBLE_TIMEOUT;
        loop {
            let md = self.client.metadata(&[topic]).await?;
            let known_here = md
                .topics
                .first()
                .filter(|t| t.error == ErrorCode::None)
                .map(|t| t.partitions);
            if let Some(partitions) = known_here {
                let mut everywhere = true;
                for b in md.brokers.iter().filter(|b| b.live && b.id != md.this_node) {
                    let other = Client::connect(&b.native_addr).await?;
                    match other.topic(topic).await {
                        Ok(_) => {}
                        Err(ClientError::UnknownTopic(_)) => {
                            everywhere = false;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if everywhere {
                    return Ok(partitions);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(TransportError::Invalid(format!(
                    "topic '{topic}' is not known to every broker after {TOPIC_VISIBLE_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), TransportError> {
        Ok(self.client.delete_topic(topic).await?)
    }
}

pub struct NativeProducer {
    producer: Producer,
    topic: Arc<str>,
}

impl NativeProducer {
    pub async fn open(
        addr: &str,
        topic: &str,
        s: &ProducerSettings,
        sink: AckSink,
    ) -> Result<NativeProducer, TransportError> {
        let client = Client::connect(addr).await?;
        let on_batch_acked: Arc<dyn Fn(&AckedBatch) + Send + Sync> =
            Arc::new(move |b: &AckedBatch| {
                let err = b.error.map(|e| e.to_string());
                sink(&AckEvent {
                    partition: b.partition,
                    tokens: b.tokens,
                    batches: 1,
                    uncompressed_bytes: Some(b.uncompressed_bytes),
                    compressed_bytes: Some(b.compressed_bytes),
                    error: err,
                });
            });
        let cfg = ProducerConfig {
            acks: s.acks,
            compression: s.compression,
            batch_bytes: s.batch_bytes,
            linger_ms: s.linger_ms,
            max_inflight_requests: s.max_inflight,
            buffer_bytes_max: s.buffer_bytes,
            // A request carries at least one full batch.
            request_bytes_max: ProducerConfig::default()
                .request_bytes_max
                .max(s.batch_bytes * 2),
            on_batch_acked: Some(on_batch_acked),
            ..ProducerConfig::default()
        };
        Ok(NativeProducer {
            producer: Producer::new(client, cfg),
            topic: Arc::from(topic),
        })
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
        // No Delivery handle: acks arrive through the sink.
        self.producer
            .send_to_untracked(
                &self.topic,
                partition,
                key,
                Some(value),
                &[],
                timestamp_ms,
                token,
            )
            .await?;
        Ok(())
    }

    /// Records in a row under one hold of the client's lock (see
    /// [`Burst`]).
    pub async fn burst(&self) -> Result<Burst<'_>, TransportError> {
        Ok(self.producer.burst(&self.topic).await?)
    }

    pub async fn close(&self) -> Result<(), TransportError> {
        Ok(self.producer.close().await?)
    }
}

pub struct NativeConsumer {
    consumer: Consumer,
}

impl NativeConsumer {
    pub async fn open(
        addr: &str,
        topic: &str,
        partitions: Vec<u32>,
        max_wait_ms: u32,
    ) -> Result<NativeConsumer, TransportError> {
        let client = Client::connect(addr).await?;
        // Larger answers than the client's defaults: a benchmark's
        // consumer has at most two fetches in flight (the client sends the
        // next one ahead), so its rate is bounded by the answer's size over
        // a round trip (4 MiB per partition held one partition's consumer
        // to 273 MiB/s). Kafka's fetch.max.bytes is 50 MiB.
        let cfg = ConsumerConfig {
            max_wait_ms,
            max_bytes: 50 << 20,
            partition_max_bytes: 16 << 20,
            ..ConsumerConfig::default()
        };
        // A leader that does not know the new topic yet answers
        // UnknownTopic for a moment; the client retries that (see
        // `Routes::is_reroutable_for`), as a Kafka client retries
        // UNKNOWN_TOPIC_OR_PARTITION.
        let consumer = Consumer::new(client, topic, Some(partitions), StartAt::Latest, cfg).await?;
        Ok(NativeConsumer { consumer })
    }

    pub async fn poll(
        &mut self,
        mut visit: impl FnMut(u32, &[u8]),
    ) -> Result<usize, TransportError> {
        // Borrowed records: the header is read from each value in place.
        Ok(self
            .consumer
            .poll_with(|partition, r| visit(partition, r.record.value.unwrap_or(&[])))
            .await?)
    }

    pub fn caught_up(&self) -> bool {
        self.consumer.caught_up()
    }
}
