//! Choosing a partition for a record.
//!
//! The default matches the Java client (and kafka-python, kafkajs): keyed
//! records go to `(murmur2(key) & 0x7fffffff) % partitions`, so a key lands
//! on the same partition whichever of these clients wrote it. Records
//! without a key stick to one partition until its batch is sealed, then
//! move on (Kafka's sticky partitioner, KIP-480): full batches, fewer requests.
//! Custom placement plugs in through [`Partitioner`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Chooses partitions. Implementations must be cheap and thread-safe.
pub trait Partitioner: Send + Sync {
    /// Partition for a record with `key` in a topic of `partitions` partitions.
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: u32) -> u32;
    /// Called when a batch of `topic`/`partition` was sealed.
    fn on_batch_sealed(&self, _topic: &str, _partition: u32, _partitions: u32) {}
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    let length = data.len() as i32;
    let m: i32 = 0x5bd1_e995;
    let r = 24;
    let mut h: i32 = (0x9747_b28c_u32 as i32) ^ length;
    let length4 = data.len() / 4;
    for i in 0..length4 {
        let i4 = i * 4;
        let mut k = (data[i4] as i32)
            | ((data[i4 + 1] as i32) << 8)
            | ((data[i4 + 2] as i32) << 16)
            | ((data[i4 + 3] as i32) << 24);
        k = k.wrapping_mul(m);
        k ^= ((k as u32) >> r) as i32;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let tail = data.len() & !3;
    let rem = data.len() % 4;
    if rem == 3 {
        h ^= (data[tail + 2] as i32) << 16;
    }
    if rem >= 2 {
        h ^= (data[tail + 1] as i32) << 8;
    }
    if rem >= 1 {
        h ^= data[tail] as i32;
        h = h.wrapping_mul(m);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(m);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// Partition of a key under the Java client's default partitioner.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// murmur2 for keys, sticky for null keys.
#[derive(Default)]
pub struct DefaultPartitioner {
    sticky: Mutex<HashMap<String, u32>>,
}

impl DefaultPartitioner {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: u32) -> u32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => {
                let mut s = self.sticky.lock().unwrap();
                let p = s
                    .entry(topic.to_string())
                    .or_insert_with(|| rand::random::<u32>() % partitions);
                *p % partitions
            }
        }
    }

    fn on_batch_sealed(&self, topic: &str, partition: u32, partitions: u32) {
        // Move on only when the sealed batch was the sticky partition's.
        let mut s = self.sticky.lock().unwrap();
        if let Some(p) = s.get_mut(topic) {
            if *p % partitions == partition && partitions > 1 {
                let step = 1 + rand::random::<u32>() % (partitions - 1);
                *p = (partition + step) % partitions;
            }
        }
    }
}

/// Every record to one fixed partition (the CLI's `--partition`).
pub struct FixedPartitioner(pub u32);

impl Partitioner for FixedPartitioner {
    fn partition(&self, _topic: &str, _key: Option<&[u8]>, partitions: u32) -> u32 {
        self.0.min(partitions.saturating_sub(1))
    }
}

/// Null keys round-robin, one record at a time.
#[derive(Default)]
pub struct RoundRobinPartitioner {
    next: AtomicU32,
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, partitions: u32) -> u32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => self.next.fetch_add(1, Ordering::Relaxed) % partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Java client's UtilsTest.
    #[test]
    fn murmur2_matches_the_java_client() {
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
