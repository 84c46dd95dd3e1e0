//! One workload: everything that defines a run, as plain data.
//!
//! The CLI, sweep profiles and tests all build a [`WorkloadSpec`]; the
//! runner only reads it; the report prints it back verbatim, so a result is
//! never separated from the settings that produced it.

use crate::payload::{PayloadKind, HEADER_LEN};
use serde::{Deserialize, Serialize};
use shardlog::format::Compression;
use shardlog::protocol::messages::Acks;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
}

/// How records are keyed (keys decide the partition, murmur2 like Kafka's
/// Java client; without keys each producer sticks to a partition until a
/// batch's worth of bytes went there, like Kafka's sticky partitioner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    None,
    Random,
    Sequential,
}

/// Length of generated keys.
pub const KEY_LEN: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub topic: String,
    pub partitions: u32,
    /// Replicas per partition of a created topic; None: the broker's
    /// default (`default_replication_factor`; Kafka: `-1`).
    #[serde(default)]
    pub replication_factor: Option<u16>,
    /// Value size in bytes, including loadgen's 32-byte header.
    pub message_size: usize,
    pub payload: PayloadKind,
    pub keys: KeyMode,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub compression: Compression,
    #[serde(with = "acks_text")]
    pub acks: Acks,
    pub producers: u32,
    pub consumers: u32,
    /// Messages per second over all producers; 0 = as fast as possible
    /// (closed loop: each send waits only for buffer space).
    pub rate: u64,
    pub warmup_ms: u64,
    pub duration_ms: u64,
    /// After the producers stop, how long consumers may take to catch up.
    pub drain_timeout_ms: u64,
    /// Producer wake-up period in µs for an open-loop schedule. Each
    /// wake-up is a context switch (≈10-15 µs of CPU in a VM), so waking
    /// for every message would make loadgen, not the broker, the
    /// bottleneck at high rates. Messages due within one period are sent
    /// together at its end; the added delay (< one period) is measured as
    /// publish delay and included in every latency. Producers whose
    /// messages are at least a period apart wake exactly for each one.
    /// 0 = always wake per message.
    pub pacing_us: u64,
    /// Produce requests in flight per producer.
    pub max_inflight: usize,
    /// Producer memory bound for unacknowledged records, per producer.
    /// None: [`WorkloadSpec::producer_buffer_bytes`] chooses.
    pub buffer_bytes: Option<usize>,
    /// Delete the topic after the run (sweeps use one topic per point).
    pub delete_topic_after: bool,
    /// Fault injection for tests: consumers drop every Nth message before
    /// checking it (0 = off). The run must then fail its loss check.
    #[serde(default)]
    pub fault_drop_every: u64,
    /// Catch-up read: consumers start only once the producers have
    /// finished, and read the whole backlog as fast as they can (from disk
    /// once the backlog outgrows the broker's cache). The run then reports
    /// the catch-up read rate separately ([`crate::result::CatchUp`]).
    #[serde(default)]
    pub catch_up: bool,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            topic: "loadgen".into(),
            partitions: 4,
            replication_factor: None,
            message_size: 1024,
            payload: PayloadKind::Compressible { ratio: 2.0 },
            keys: KeyMode::None,
            batch_bytes: 64 << 10,
            linger_ms: 5,
            compression: Compression::None,
            acks: Acks::Leader,
            producers: 1,
            consumers: 1,
            rate: 20_000,
            warmup_ms: 1000,
            duration_ms: 10_000,
            drain_timeout_ms: 10_000,
            pacing_us: 100,
            max_inflight: 5,
            buffer_bytes: None,
            delete_topic_after: false,
            fault_drop_every: 0,
            catch_up: false,
        }
    }
}

/// Loadgen's own memory that does not grow with the workload: code,
/// runtime threads, client libraries, histograms, the time series.
pub const FIXED_MEMORY_BYTES: u64 = 128 << 20;
/// What one consumer may hold: the fetch answer being read (Kafka:
/// `fetch.max.bytes` and the local queue, 32 MiB; the native client asks
/// for up to 50 MiB, 16 MiB per partition, and got 9-16 MiB answers at
/// saturation), the client reader's spare buffer (at most 32 MiB,
/// `shardlog::client::read_buffer`) and one batch's decoded record views.
/// Measured with the spare at 32 MiB: 2 native consumers catching up on
/// 7.3 GB of 100 B messages took loadgen to 188 MiB RSS in all, against
/// this workload's 704 MiB budget.
pub const CONSUMER_MEMORY_BYTES: u64 = 3 * (32 << 20);
/// A producer holds at most `buffer_bytes` of unacknowledged records
/// (enforced before a record is copied in), and besides them the sealed
/// (compressed) copy of a batch and the encoded request while it is
/// written: at most three times the buffer.
pub const PRODUCER_MEMORY_PER_BUFFER_BYTE: u64 = 3;

/// Default producer buffer: [`BUFFER_BYTES_PER_PRODUCER`] each, but at
/// most [`BUFFER_BYTES_ALL_PRODUCERS`] among them all (and never less than
/// [`BUFFER_BYTES_MIN`]).
///
/// Why a total: a closed-loop producer keeps its buffer full, so the
/// buffer is its queue. 64 producers at 64 MiB each queued 4 GiB: loadgen
/// spent the first seconds filling it (1.8 cores, nothing acknowledged),
/// publish p50 was 3.4 s, and 16 partitions with 64 producers measured
/// 353-456 MiB/s. At 8 MiB each: 1,047 MiB/s, publish p50 433 ms (issue 14).
pub const BUFFER_BYTES_PER_PRODUCER: usize = 64 << 20;
/// See [`BUFFER_BYTES_PER_PRODUCER`].
pub const BUFFER_BYTES_ALL_PRODUCERS: usize = 512 << 20;
/// See [`BUFFER_BYTES_PER_PRODUCER`]: room for a few 1 MiB batches in flight.
pub const BUFFER_BYTES_MIN: usize = 8 << 20;

impl WorkloadSpec {
    /// Each producer's buffer: `--buffer-bytes` when given, else the
    /// default (see [`BUFFER_BYTES_PER_PRODUCER`]).
    pub fn producer_buffer_bytes(&self) -> usize {
        self.buffer_bytes.unwrap_or_else(|| {
            let share = BUFFER_BYTES_ALL_PRODUCERS / self.producers.max(1) as usize;
            share.clamp(BUFFER_BYTES_MIN, BUFFER_BYTES_PER_PRODUCER)
        })
    }

    /// Upper bound on loadgen's own memory for this workload, whatever its
    /// rate or duration. An embedded broker adds its own budget
    /// (`EmbeddedBroker::memory_budget`).
    pub fn memory_budget(&self) -> u64 {
        let consumers = self.consumers.min(self.partitions) as u64;
        self.producers as u64
            * PRODUCER_MEMORY_PER_BUFFER_BYTE
            * self.producer_buffer_bytes() as u64
            + consumers * CONSUMER_MEMORY_BYTES
            + FIXED_MEMORY_BYTES
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |m: String| Err(SpecError::Invalid(m));
        if self.topic.is_empty() {
            return bad("--topic must not be empty".into());
        }
        if self.partitions == 0 {
            return bad("--partitions must be at least 1".into());
        }
        if self.replication_factor == Some(0) {
            return bad("--replication-factor must be at least 1".into());
        }
        if self.message_size < HEADER_LEN {
            return bad(format!(
                "--message-size must be at least {HEADER_LEN} bytes: every message carries a {HEADER_LEN}-byte header (producer id, sequence number, send time)"
            ));
        }
        if self.message_size > 16 << 20 {
            return bad("--message-size above 16 MiB is not supported".into());
        }
        if self.batch_bytes == 0 {
            return bad("--batch-bytes must be at least 1".into());
        }
        if self.producers == 0 {
            return bad("--producers must be at least 1".into());
        }
        if self.catch_up && self.consumers == 0 {
            return bad("--catch-up measures consumers: it needs --consumers 1 or more".into());
        }
        if self.catch_up && self.acks == Acks::None {
            return bad("--catch-up needs acknowledged writes (--acks 1 or all): consumers read what the producers had acknowledged".into());
        }
        if self.duration_ms == 0 {
            return bad("--duration must be longer than 0".into());
        }
        if self.max_inflight == 0 {
            return bad("--max-inflight must be at least 1".into());
        }
        if self.producer_buffer_bytes() < self.message_size * 2 {
            return bad("--buffer-bytes must hold at least two messages".into());
        }
        if let PayloadKind::Compressible { ratio } = self.payload {
            if !(1.0..=64.0).contains(&ratio) {
                return bad(format!(
                    "--compress-ratio {ratio} is out of range (1 to 64)"
                ));
            }
        }
        Ok(())
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
    pub fn closed_loop(&self) -> bool {
        self.rate == 0
    }
    /// Bytes of key + value per message, the unit of MiB/s figures.
    pub fn record_payload_bytes(&self) -> usize {
        self.message_size
            + if self.keys == KeyMode::None {
                0
            } else {
                KEY_LEN
            }
    }
}

/// Acks as the CLI spells them: "0", "1", "all".
pub mod acks_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use shardlog::protocol::messages::Acks;

    pub fn serialize<S: Serializer>(a: &Acks, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Acks, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_serializes() {
        let s = WorkloadSpec::default();
        s.validate().unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"acks\":\"1\""), "{j}");
        assert!(j.contains("\"compression\":\"none\""), "{j}");
        let back: WorkloadSpec = serde_json::from_str(&j).unwrap();
        assert_eq!(back.acks, Acks::Leader);
    }

    #[test]
    fn rejects_tiny_messages() {
        let s = WorkloadSpec {
            message_size: 16,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("header"));
    }

    /// The default buffer shares 512 MiB among the producers (64 MiB at
    /// most, 8 MiB at least); a given `--buffer-bytes` is taken as it is.
    #[test]
    fn the_default_producer_buffer_shares_a_total() {
        let with = |producers: u32, buffer_bytes: Option<usize>| WorkloadSpec {
            producers,
            buffer_bytes,
            ..Default::default()
        };
        let mib = 1 << 20;
        assert_eq!(with(1, None).producer_buffer_bytes(), 64 * mib);
        assert_eq!(with(2, None).producer_buffer_bytes(), 64 * mib);
        assert_eq!(with(16, None).producer_buffer_bytes(), 32 * mib);
        assert_eq!(with(64, None).producer_buffer_bytes(), 8 * mib);
        assert_eq!(with(1000, None).producer_buffer_bytes(), 8 * mib);
        assert_eq!(with(64, Some(64 * mib)).producer_buffer_bytes(), 64 * mib);
        // The memory budget follows what the producers get.
        assert_eq!(
            with(64, None).memory_budget(),
            64 * 3 * 8 * mib as u64 + CONSUMER_MEMORY_BYTES + FIXED_MEMORY_BYTES
        );
    }
}
