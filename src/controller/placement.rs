//! Where a new partition lives: a broker, then one of its shards.
//!
//! Deterministic given its inputs (the live brokers and the partitions
//! already placed), so every controller replica that applies the same
//! command computes the same answer, and none of it needs to be in the log.
//!
//! Rule, per new partition in order: the live broker with the fewest
//! partitions; among equals, the first at or after a topic-dependent
//! starting point in broker-id order (so many one-partition topics do not
//! all land on the lowest id). Then, on that broker, its shard with the
//! fewest partitions, ties broken the same way. Every partition is its own
//! leader (no replicas yet), so balancing partitions balances leaders.
//! Partitions on brokers that are not live do not count: a broker that
//! comes back keeps its partitions and takes new ones once it is the
//! least loaded.

use crate::router::placement::fnv1a;
use std::collections::BTreeMap;

/// A broker that may receive partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: u32,
    pub shards: u16,
}

/// Partitions per broker and per (broker, shard), of live brokers.
#[derive(Debug, Default, Clone)]
pub struct Loads {
    pub per_broker: BTreeMap<u32, u64>,
    pub per_shard: BTreeMap<(u32, u16), u64>,
}

impl Loads {
    pub fn add(&mut self, node: u32, shard: u16) {
        *self.per_broker.entry(node).or_default() += 1;
        *self.per_shard.entry((node, shard)).or_default() += 1;
    }
}

/// Place partitions `first .. first + count` of `topic`. `candidates`
/// must be sorted by id with no duplicates and every shard count ≥ 1;
/// None if there is no candidate.
pub fn place(
    candidates: &[Candidate],
    loads: &mut Loads,
    topic: &str,
    first: u32,
    count: u32,
) -> Option<Vec<(u32, u16)>> {
    if candidates.is_empty() {
        return None;
    }
    assert!(
        candidates.windows(2).all(|w| w[0].id < w[1].id),
        "placement candidates must be sorted by id"
    );
    assert!(candidates.iter().all(|c| c.shards >= 1));
    let h = fnv1a(topic);
    let mut out = Vec::with_capacity(count as usize);
    for p in first..first + count {
        let n = candidates.len() as u64;
        let start = ((h + p as u64) % n) as usize;
        let broker = (0..candidates.len())
            .map(|i| candidates[(start + i) % candidates.len()])
            .min_by_key(|c| loads.per_broker.get(&c.id).copied().unwrap_or(0))
            .expect("candidates are not empty");
        let s = broker.shards as u64;
        let shard_start = ((h + p as u64) % s) as u16;
        let shard = (0..broker.shards)
            .map(|i| ((shard_start as u32 + i as u32) % broker.shards as u32) as u16)
            .min_by_key(|sh| loads.per_shard.get(&(broker.id, *sh)).copied().unwrap_or(0))
            .expect("a broker has a shard");
        loads.add(broker.id, shard);
        out.push((broker.id, shard));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(v: impl Iterator<Item = u64>) -> u64 {
        let v: Vec<u64> = v.collect();
        v.iter().max().unwrap() - v.iter().min().unwrap()
    }

    #[test]
    fn partitions_spread_over_brokers_then_shards_within_one() {
        let brokers = [
            Candidate { id: 1, shards: 2 },
            Candidate { id: 2, shards: 4 },
            Candidate { id: 5, shards: 3 },
        ];
        let mut loads = Loads::default();
        for (t, parts) in [
            ("a", 1),
            ("b", 7),
            ("orders", 8),
            ("c", 1),
            ("d", 2),
            ("e", 13),
        ] {
            let placed = place(&brokers, &mut loads, t, 0, parts).unwrap();
            assert_eq!(placed.len(), parts as usize);
            for (node, shard) in placed {
                let b = brokers.iter().find(|b| b.id == node).unwrap();
                assert!(shard < b.shards);
            }
            assert!(
                spread(
                    brokers
                        .iter()
                        .map(|b| loads.per_broker.get(&b.id).copied().unwrap_or(0))
                ) <= 1
            );
            for b in brokers {
                let per_shard =
                    (0..b.shards).map(|s| loads.per_shard.get(&(b.id, s)).copied().unwrap_or(0));
                assert!(spread(per_shard) <= 1, "{loads:?}");
            }
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_placement_and_one_topic_partitions_do_not_pile_up() {
        let brokers = [
            Candidate { id: 1, shards: 1 },
            Candidate { id: 2, shards: 1 },
            Candidate { id: 3, shards: 1 },
        ];
        let mut a = Loads::default();
        let mut b = Loads::default();
        for i in 0..30 {
            let t = format!("t{i}");
            assert_eq!(
                place(&brokers, &mut a, &t, 0, 1),
                place(&brokers, &mut b, &t, 0, 1)
            );
        }
        assert!(spread(a.per_broker.values().copied()) <= 1, "{a:?}");
        assert_eq!(place(&[], &mut a, "x", 0, 1), None);
    }

    #[test]
    fn a_new_broker_takes_new_partitions_until_it_catches_up() {
        let mut loads = Loads::default();
        let two = [
            Candidate { id: 1, shards: 1 },
            Candidate { id: 2, shards: 1 },
        ];
        place(&two, &mut loads, "old", 0, 10).unwrap();
        let three = [two[0], two[1], Candidate { id: 3, shards: 1 }];
        let placed = place(&three, &mut loads, "new", 0, 5).unwrap();
        assert!(placed.iter().all(|(n, _)| *n == 3), "{placed:?}");
    }
}
