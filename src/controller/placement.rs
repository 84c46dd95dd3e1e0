//! Where a new partition lives: a broker, then one of its shards.
//!
//! Deterministic given its inputs (the live brokers and the partitions
//! already placed), so every controller replica that applies the same
//! command computes the same answer, and none of it needs to be in the log.
//!
//! Rule, per new partition in order: its leader goes to the live broker
//! leading the fewest partitions; among equals, the first at or after a
//! topic-dependent starting point in broker-id order (so many
//! one-partition topics do not all land on the lowest id). Each of its
//! `rf - 1` followers goes to another broker, the one holding the fewest
//! replicas (leaders and followers), ties broken the same way. On each
//! chosen broker, the shard holding the fewest replicas, ties broken the
//! same way. Replicas on brokers that are not live do not count: a broker
//! that comes back keeps its partitions and takes new ones once it is the
//! least loaded.

use crate::router::placement::fnv1a;
use std::collections::BTreeMap;

/// A broker that may receive partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: u32,
    pub shards: u16,
}

/// What live brokers hold: partitions led per broker, replicas (led or
/// followed) per broker and per (broker, shard).
#[derive(Debug, Default, Clone)]
pub struct Loads {
    pub per_broker: BTreeMap<u32, u64>,
    pub replicas_per_broker: BTreeMap<u32, u64>,
    pub per_shard: BTreeMap<(u32, u16), u64>,
}

impl Loads {
    /// A partition led on `node`'s `shard`.
    pub fn add(&mut self, node: u32, shard: u16) {
        *self.per_broker.entry(node).or_default() += 1;
        self.add_follower(node, shard);
    }

    /// A replica that follows, on `node`'s `shard`.
    pub fn add_follower(&mut self, node: u32, shard: u16) {
        *self.replicas_per_broker.entry(node).or_default() += 1;
        *self.per_shard.entry((node, shard)).or_default() += 1;
    }
}

/// Where one partition's replicas go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// (broker, shard) of the leader.
    pub leader: (u32, u16),
    /// (broker, shard) of each follower, on brokers distinct from each
    /// other and from the leader's.
    pub followers: Vec<(u32, u16)>,
}

/// Place partitions `first .. first + count` of `topic`, `rf` replicas
/// each. `candidates` must be sorted by id with no duplicates and every
/// shard count ≥ 1; None if there are fewer candidates than `rf` (or none).
pub fn place(
    candidates: &[Candidate],
    loads: &mut Loads,
    topic: &str,
    first: u32,
    count: u32,
    rf: u16,
) -> Option<Vec<Placed>> {
    if candidates.is_empty() || rf == 0 || candidates.len() < rf as usize {
        return None;
    }
    assert!(
        candidates.windows(2).all(|w| w[0].id < w[1].id),
        "placement candidates must be sorted by id"
    );
    assert!(candidates.iter().all(|c| c.shards >= 1));
    let h = fnv1a(topic);
    let n = candidates.len();
    // The candidates in order from the rotation start for partition `p`.
    let rotated = |p: u32, skip: u64| {
        let start = ((h + p as u64 + skip) % n as u64) as usize;
        (0..n).map(move |i| candidates[(start + i) % n])
    };
    let shard_on = |loads: &Loads, b: Candidate, p: u32| {
        let shard_start = ((h + p as u64) % b.shards as u64) as u32;
        (0..b.shards as u32)
            .map(|i| ((shard_start + i) % b.shards as u32) as u16)
            .min_by_key(|sh| loads.per_shard.get(&(b.id, *sh)).copied().unwrap_or(0))
            .expect("a broker has a shard")
    };
    let mut out = Vec::with_capacity(count as usize);
    for p in first..first + count {
        let leader = rotated(p, 0)
            .min_by_key(|c| loads.per_broker.get(&c.id).copied().unwrap_or(0))
            .expect("candidates are not empty");
        let shard = shard_on(loads, leader, p);
        loads.add(leader.id, shard);
        let mut chosen = vec![leader.id];
        let mut followers = Vec::with_capacity(rf as usize - 1);
        for _ in 1..rf {
            let f = rotated(p, 1)
                .filter(|c| !chosen.contains(&c.id))
                .min_by_key(|c| loads.replicas_per_broker.get(&c.id).copied().unwrap_or(0))
                .expect("at least rf candidates");
            let fs = shard_on(loads, f, p);
            loads.add_follower(f.id, fs);
            chosen.push(f.id);
            followers.push((f.id, fs));
        }
        out.push(Placed {
            leader: (leader.id, shard),
            followers,
        });
    }
    Some(out)
}

/// The shard of broker `node` (with `shards` shards) holding the fewest
/// replicas: where a replica added to an existing partition goes.
pub fn least_loaded_shard(loads: &Loads, node: u32, shards: u16) -> u16 {
    assert!(shards >= 1);
    (0..shards)
        .min_by_key(|sh| loads.per_shard.get(&(node, *sh)).copied().unwrap_or(0))
        .expect("a broker has a shard")
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
            let placed = place(&brokers, &mut loads, t, 0, parts, 1).unwrap();
            assert_eq!(placed.len(), parts as usize);
            for Placed {
                leader: (node, shard),
                ..
            } in placed
            {
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
                place(&brokers, &mut a, &t, 0, 1, 1),
                place(&brokers, &mut b, &t, 0, 1, 1)
            );
        }
        assert!(spread(a.per_broker.values().copied()) <= 1, "{a:?}");
        assert_eq!(place(&[], &mut a, "x", 0, 1, 1), None);
    }

    #[test]
    fn a_new_broker_takes_new_partitions_until_it_catches_up() {
        let mut loads = Loads::default();
        let two = [
            Candidate { id: 1, shards: 1 },
            Candidate { id: 2, shards: 1 },
        ];
        place(&two, &mut loads, "old", 0, 10, 1).unwrap();
        let three = [two[0], two[1], Candidate { id: 3, shards: 1 }];
        let placed = place(&three, &mut loads, "new", 0, 5, 1).unwrap();
        assert!(placed.iter().all(|p| p.leader.0 == 3), "{placed:?}");
    }

    #[test]
    fn replicas_go_to_distinct_brokers_and_spread_evenly() {
        let brokers = [
            Candidate { id: 1, shards: 2 },
            Candidate { id: 2, shards: 2 },
            Candidate { id: 3, shards: 1 },
            Candidate { id: 4, shards: 3 },
        ];
        let mut loads = Loads::default();
        for (t, parts) in [("a", 1), ("orders", 12), ("b", 5), ("c", 3)] {
            for p in place(&brokers, &mut loads, t, 0, parts, 3).unwrap() {
                let mut nodes: Vec<u32> = std::iter::once(p.leader.0)
                    .chain(p.followers.iter().map(|f| f.0))
                    .collect();
                assert_eq!(p.followers.len(), 2);
                nodes.sort();
                nodes.dedup();
                assert_eq!(nodes.len(), 3, "{p:?}");
                for (node, shard) in std::iter::once(p.leader).chain(p.followers) {
                    assert!(shard < brokers.iter().find(|b| b.id == node).unwrap().shards);
                }
            }
            // Leaders and replicas both spread evenly over the brokers.
            assert!(
                spread(
                    brokers
                        .iter()
                        .map(|b| loads.per_broker.get(&b.id).copied().unwrap_or(0))
                ) <= 1,
                "{loads:?}"
            );
            assert!(
                spread(
                    brokers.iter().map(|b| loads
                        .replicas_per_broker
                        .get(&b.id)
                        .copied()
                        .unwrap_or(0))
                ) <= 1,
                "{loads:?}"
            );
        }
        // More replicas than brokers: no placement.
        assert_eq!(place(&brokers[..2], &mut loads, "x", 0, 1, 3), None);
    }
}
