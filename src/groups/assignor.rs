//! Server-side assignors of consumer-protocol groups (KIP-848): given each
//! member's subscription and the subscribed topics' partition counts, the
//! group's target assignment. No I/O, no time: pure functions, called by
//! [`super::consumer_group`] each time the group epoch moves.
//!
//! - `uniform` (Kafka's default): every partition of a subscribed topic goes
//!   to one member subscribed to it, the counts as even as the
//!   subscriptions allow (with identical subscriptions, no two members
//!   differ by more than one), and sticky: a partition stays with its
//!   previous target owner unless balance needs it elsewhere. Kafka's
//!   `UniformAssignor` reaches the same kind of result with a different
//!   search; the exact partition-to-member choice may differ.
//! - `range`: per topic, the members subscribed to it in member-id order,
//!   each given a contiguous range of partitions, the first
//!   `partitions % members` one more (Kafka's `RangeAssignor`, not sticky).

use std::collections::{BTreeMap, BTreeSet};

/// topic name -> partitions.
pub type TopicPartitions = BTreeMap<String, BTreeSet<i32>>;

/// The assignors served, by the name a client puts in `server_assignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    /// Kafka's default (`group.consumer.assignors`' first entry).
    pub const DEFAULT: Assignor = Assignor::Uniform;

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment: member id -> its partitions. Every member in
    /// `subscriptions` has an entry (maybe empty). `previous` is the last
    /// target (stickiness for `uniform`). `topics`: partition count of each
    /// existing topic; subscribed topics that do not exist are skipped.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        topics: &BTreeMap<String, u32>,
        previous: &BTreeMap<String, TopicPartitions>,
    ) -> BTreeMap<String, TopicPartitions> {
        match self {
            Assignor::Uniform => uniform(subscriptions, topics, previous),
            Assignor::Range => range(subscriptions, topics),
        }
    }
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = subscriptions
        .keys()
        .map(|m| (m.clone(), TopicPartitions::new()))
        .collect();
    let subscribed: BTreeSet<&String> = subscriptions.values().flatten().collect();
    for topic in subscribed {
        let Some(&n) = topics.get(topic) else {
            continue;
        };
        // BTreeMap keys: member-id order.
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let (per, extra) = (n as usize / members.len(), n as usize % members.len());
        let mut next = 0i32;
        for (i, m) in members.into_iter().enumerate() {
            let take = per + usize::from(i < extra);
            if take == 0 {
                continue;
            }
            let parts = (next..next + take as i32).collect();
            next += take as i32;
            out.get_mut(m)
                .expect("every member has an entry")
                .insert(topic.clone(), parts);
        }
    }
    out
}

fn uniform(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, TopicPartitions>,
) -> BTreeMap<String, TopicPartitions> {
    // Work on a flat (topic, partition) -> owner map.
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut count: BTreeMap<&String, usize> = subscriptions.keys().map(|m| (m, 0)).collect();
    let eligible = |m: &str, t: &str| subscriptions.get(m).is_some_and(|s| s.contains(t));
    let exists = |t: &str, p: i32| topics.get(t).is_some_and(|&n| p >= 0 && (p as u32) < n);
    let partitions_total: usize = subscriptions
        .values()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|t| topics.get(t))
        .map(|&n| n as usize)
        .sum();
    // Sticky: a member keeps what it had, up to an even share of the
    // partitions (ceil), so newcomers have room.
    let members = subscriptions.len().max(1);
    let share = partitions_total.div_ceil(members);
    for (m, parts) in previous {
        if !subscriptions.contains_key(m) {
            continue;
        }
        for (t, ps) in parts {
            for &p in ps {
                if !eligible(m, t) || !exists(t, p) || count[m] >= share {
                    continue;
                }
                owner.insert((t.clone(), p), m.clone());
                *count.get_mut(m).expect("member") += 1;
            }
        }
    }
    // The rest, each to the least loaded member subscribed to its topic
    // (ties: member-id order).
    for (t, &n) in topics {
        for p in 0..n as i32 {
            let key = (t.clone(), p);
            if owner.contains_key(&key) {
                continue;
            }
            let best = count
                .iter()
                .filter(|(m, _)| eligible(m, t))
                .min_by_key(|(m, c)| (**c, **m))
                .map(|(m, _)| (*m).clone());
            if let Some(m) = best {
                *count.get_mut(&m).expect("member") += 1;
                owner.insert(key, m);
            }
        }
    }
    // Balance: move one partition at a time from a member to one that has
    // at least two fewer and may take it. Each move lowers the sum of
    // squared counts, so this ends.
    loop {
        let moved = owner.iter().find_map(|(key, from)| {
            let to = count
                .iter()
                .filter(|(m, c)| eligible(m, &key.0) && **c + 1 < count[from])
                .min_by_key(|(m, c)| (**c, **m))
                .map(|(m, _)| (*m).clone())?;
            Some((key.clone(), from.clone(), to))
        });
        let Some((key, from, to)) = moved else { break };
        *count.get_mut(&from).expect("member") -= 1;
        *count.get_mut(&to).expect("member") += 1;
        owner.insert(key, to);
    }
    let mut out: BTreeMap<String, TopicPartitions> = subscriptions
        .keys()
        .map(|m| (m.clone(), TopicPartitions::new()))
        .collect();
    for ((t, p), m) in owner {
        out.get_mut(&m)
            .expect("member")
            .entry(t)
            .or_default()
            .insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn topics(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn count(a: &TopicPartitions) -> usize {
        a.values().map(|p| p.len()).sum()
    }

    /// Every partition of a subscribed topic is assigned exactly once, to
    /// a member subscribed to its topic.
    fn check_complete(
        s: &BTreeMap<String, BTreeSet<String>>,
        t: &BTreeMap<String, u32>,
        a: &BTreeMap<String, TopicPartitions>,
    ) {
        let mut seen = BTreeSet::new();
        for (m, parts) in a {
            for (topic, ps) in parts {
                assert!(s[m].contains(topic), "{m} is not subscribed to {topic}");
                for p in ps {
                    assert!(seen.insert((topic.clone(), *p)), "{topic}-{p} twice");
                }
            }
        }
        let want: usize = s
            .values()
            .flatten()
            .collect::<BTreeSet<_>>()
            .iter()
            .filter_map(|x| t.get(*x))
            .map(|&n| n as usize)
            .sum();
        assert_eq!(seen.len(), want);
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        let s = subs(&[("b", &["t"]), ("a", &["t"]), ("c", &["t", "u"])]);
        let t = topics(&[("t", 7), ("u", 2)]);
        let a = Assignor::Range.assign(&s, &t, &BTreeMap::new());
        check_complete(&s, &t, &a);
        assert_eq!(a["a"]["t"], BTreeSet::from([0, 1, 2]));
        assert_eq!(a["b"]["t"], BTreeSet::from([3, 4]));
        assert_eq!(a["c"]["t"], BTreeSet::from([5, 6]));
        assert_eq!(a["c"]["u"], BTreeSet::from([0, 1]));
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let t = topics(&[("t", 5), ("u", 3)]);
        let one = subs(&[("a", &["t", "u"])]);
        let a1 = Assignor::Uniform.assign(&one, &t, &BTreeMap::new());
        check_complete(&one, &t, &a1);
        assert_eq!(count(&a1["a"]), 8);
        // A second member: 4 and 4, and everything b gets came from a
        // (a keeps 4 of its own).
        let two = subs(&[("a", &["t", "u"]), ("b", &["t", "u"])]);
        let a2 = Assignor::Uniform.assign(&two, &t, &a1);
        check_complete(&two, &t, &a2);
        assert_eq!((count(&a2["a"]), count(&a2["b"])), (4, 4));
        for (topic, ps) in &a2["a"] {
            assert!(ps.is_subset(&a1["a"][topic]));
        }
        // A third: 3, 3, 2; a and b each keep what they can.
        let three = subs(&[("a", &["t", "u"]), ("b", &["t", "u"]), ("c", &["t", "u"])]);
        let a3 = Assignor::Uniform.assign(&three, &t, &a2);
        check_complete(&three, &t, &a3);
        let mut counts: Vec<usize> = a3.values().map(count).collect();
        counts.sort();
        assert_eq!(counts, vec![2, 3, 3]);
        for m in ["a", "b"] {
            for (topic, ps) in &a3[m] {
                assert!(ps.is_subset(&a2[m][topic]), "{m} only loses partitions");
            }
        }
        // b leaves: a and c share everything, c keeps its own.
        let back = subs(&[("a", &["t", "u"]), ("c", &["t", "u"])]);
        let a4 = Assignor::Uniform.assign(&back, &t, &a3);
        check_complete(&back, &t, &a4);
        assert_eq!((count(&a4["a"]), count(&a4["c"])), (4, 4));
        for (topic, ps) in &a3["c"] {
            assert!(ps.is_subset(&a4["c"][topic]));
        }
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        let s = subs(&[("a", &["t"]), ("b", &["t", "u"]), ("c", &["u"])]);
        let t = topics(&[("t", 4), ("u", 4), ("missing", 0)]);
        let a = Assignor::Uniform.assign(&s, &t, &BTreeMap::new());
        check_complete(&s, &t, &a);
        let counts: Vec<usize> = a.values().map(count).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{a:?}");
        // A topic nobody can take (not subscribed) is not assigned; a
        // subscribed topic that does not exist is skipped.
        let s = subs(&[("a", &["nope"])]);
        let a = Assignor::Uniform.assign(&s, &t, &BTreeMap::new());
        assert!(a["a"].is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(Assignor::from_name("uniform"), Some(Assignor::Uniform));
        assert_eq!(Assignor::from_name("range"), Some(Assignor::Range));
        assert_eq!(Assignor::from_name("sticky"), None);
        assert_eq!(Assignor::DEFAULT.name(), "uniform");
    }
}
