//! Partition placement: a deterministic, balanced partition -> shard table
//! that every shard computes the same way, with no coordination.
//!
//! `shard = (fnv1a(topic) + partition) mod shards`. Within a topic,
//! consecutive partitions go to consecutive shards, so any topic's
//! partitions are spread evenly (counts differ by at most one); the hash
//! offset keeps many small topics from all starting on shard 0.
//! Placement depends only on the shard count; after a restart with another
//! `--shards`, partitions simply open on their new owners (the files are
//! shared).

use crate::metadata::TopicMeta;

/// Where a partition is served, as one broker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// On this broker, by this shard.
    Here(usize),
    /// Led by another broker of the cluster.
    Elsewhere { node: u32 },
}

/// Where partition `partition` of `meta` is served, seen from broker `me`
/// (None: a single node) with `shards` shards. In a cluster the topic
/// table carries the controller's assignment (node and shard); a single
/// node, or a partition the table has no assignment for, uses the hash
/// placement below. A shard index beyond this broker's shard count (it
/// restarted with fewer `--shards`) wraps around, as the hash does.
pub fn locate(meta: &TopicMeta, partition: u32, shards: usize, me: Option<u32>) -> Location {
    match (me, meta.assignment.get(partition as usize)) {
        // A replicated partition is served on each broker by the shard
        // holding its replica there (it answers NOT_LEADER unless its
        // Raft group leads).
        (Some(me), Some(a)) if a.replicated() && a.replica_shard(me).is_some() => {
            Location::Here(a.replica_shard(me).expect("checked") as usize % shards)
        }
        (Some(me), Some(a)) if a.node != me => Location::Elsewhere { node: a.node },
        (Some(_), Some(a)) => Location::Here(a.shard as usize % shards),
        _ => Location::Here(shard_of(&meta.name, partition, shards)),
    }
}

/// FNV-1a, 64-bit.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub fn shard_of(topic: &str, partition: u32, shards: usize) -> usize {
    ((fnv1a(topic) % shards as u64 + partition as u64) % shards as u64) as usize
}

/// Shard owning a consumer group's coordinator.
pub fn shard_of_group(group: &str, shards: usize) -> usize {
    (fnv1a(group) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_within_a_topic() {
        for shards in 1..9 {
            for parts in 1..40u32 {
                let mut count = vec![0; shards];
                for p in 0..parts {
                    count[shard_of("orders", p, shards)] += 1;
                }
                let (min, max) = (count.iter().min().unwrap(), count.iter().max().unwrap());
                assert!(
                    max - min <= 1,
                    "{shards} shards, {parts} partitions: {count:?}"
                );
            }
        }
        assert_eq!(shard_of("a", 3, 4), shard_of("a", 3, 4));
    }
}
