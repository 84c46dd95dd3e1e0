//! The consumer-protocol (KIP-848) state machine, rule by rule, with time
//! passed in (docs/kafka.md "Consumer group protocol (KIP-848)" lists each
//! rule and its test).

use super::assignor::TopicPartitions;
use super::consumer_group::*;
use super::GroupError;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const SESSION: Duration = Duration::from_secs(45);
const INTERVAL: Duration = Duration::from_secs(5);

fn group() -> ConsumerGroup {
    ConsumerGroup::new("g".into(), SESSION, INTERVAL)
}

fn topics(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
    list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn tp(list: &[(&str, &[i32])]) -> TopicPartitions {
    list.iter()
        .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
        .collect()
}

fn count(t: &TopicPartitions) -> usize {
    t.values().map(|p| p.len()).sum()
}

fn join(id: &str, subscribed: &[&str]) -> HeartbeatParams {
    HeartbeatParams {
        member_id: id.into(),
        member_epoch: 0,
        client_id: "test".into(),
        rebalance_timeout_ms: 30_000,
        subscribed: Some(subscribed.iter().map(|t| t.to_string()).collect()),
        owned: Some(TopicPartitions::new()),
        ..Default::default()
    }
}

fn beat(id: &str, epoch: i32, owned: Option<TopicPartitions>) -> HeartbeatParams {
    HeartbeatParams {
        member_id: id.into(),
        member_epoch: epoch,
        client_id: "test".into(),
        rebalance_timeout_ms: -1,
        owned,
        ..Default::default()
    }
}

/// A well-behaved client: what it owns, and its epoch. It gives up what
/// an answer leaves out at once and takes what an answer adds.
#[derive(Debug, Default, Clone)]
struct Client {
    epoch: i32,
    owned: TopicPartitions,
}

impl Client {
    fn apply(&mut self, r: &HeartbeatReply) {
        self.epoch = r.member_epoch;
        if let Some(a) = &r.assignment {
            self.owned = a.clone();
        }
    }
}

/// No partition is owned by two clients.
fn exclusive(clients: &BTreeMap<String, Client>) {
    let mut seen = BTreeSet::new();
    for (id, c) in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                assert!(
                    seen.insert((t.clone(), *p)),
                    "{t}-{p} owned twice (second: {id}): {clients:?}"
                );
            }
        }
    }
}

#[test]
fn a_partition_moves_only_after_its_owner_revoked_it() {
    let t = topics(&[("t", 4)]);
    let now = Instant::now();
    let mut g = group();
    let r = g.heartbeat(join("a", &["t"]), &t, now).unwrap();
    assert_eq!(
        r.member_epoch, 1,
        "the first member's join moves the group to epoch 1"
    );
    assert_eq!(r.assignment, Some(tp(&[("t", &[0, 1, 2, 3])])));
    assert_eq!(r.heartbeat_interval_ms, 5000);
    assert_eq!(g.state_name(), "Stable");

    // b joins: epoch 2, its target is half of a's partitions, which a
    // still owns: b gets nothing yet.
    let r = g.heartbeat(join("b", &["t"]), &t, now).unwrap();
    assert_eq!((r.member_epoch, r.assignment.clone()), (2, Some(tp(&[]))));
    assert_eq!(g.group_epoch, 2);
    assert_eq!(g.state_name(), "Reconciling");
    let b_target = g
        .view()
        .members
        .iter()
        .find(|(m, _)| m.id == "b")
        .unwrap()
        .1
        .clone();
    assert_eq!(count(&b_target), 2);

    // a's heartbeat: told what it keeps, at its old epoch.
    let r = g.heartbeat(beat("a", 1, None), &t, now).unwrap();
    assert_eq!(r.member_epoch, 1, "a keeps epoch 1 until it has revoked");
    let kept = r.assignment.clone().unwrap();
    assert_eq!(count(&kept), 2);
    assert_eq!(
        g.member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );
    // Without a's confirmation b still gets nothing.
    let r = g.heartbeat(beat("b", 2, None), &t, now).unwrap();
    assert_eq!(r.assignment, None, "unchanged");
    assert!(g.member("b").unwrap().assigned.is_empty());
    // a still lists a revoked partition: no progress.
    let r = g
        .heartbeat(beat("a", 1, Some(tp(&[("t", &[0, 1, 2, 3])]))), &t, now)
        .unwrap();
    assert_eq!(r.member_epoch, 1);
    // a confirms: epoch 2, and then b gets its two.
    let r = g
        .heartbeat(beat("a", 1, Some(kept.clone())), &t, now)
        .unwrap();
    assert_eq!(r.member_epoch, 2);
    assert_eq!(g.member("a").unwrap().state, MemberState::Stable);
    let r = g.heartbeat(beat("b", 2, None), &t, now).unwrap();
    assert_eq!(r.assignment, Some(b_target));
    assert_eq!(g.state_name(), "Stable");
}

/// Members join, leave and heartbeat in a pseudo-random order (fixed
/// seeds); clients never own a partition at the same time, and once the
/// group is left alone every partition is owned, evenly.
#[test]
fn no_partition_is_ever_owned_by_two_members() {
    for seed in 1..=40u64 {
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let t = topics(&[("t", 6), ("u", 3)]);
        let mut g = group();
        let now = Instant::now();
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        let mut made = 0;
        for _ in 0..200 {
            match next(10) {
                0 | 1 if clients.len() < 5 => {
                    made += 1;
                    let id = format!("m{made}");
                    let r = g.heartbeat(join(&id, &["t", "u"]), &t, now).unwrap();
                    let mut c = Client::default();
                    c.apply(&r);
                    clients.insert(id, c);
                }
                2 if !clients.is_empty() => {
                    let id = clients
                        .keys()
                        .nth(next(clients.len() as u64) as usize)
                        .unwrap()
                        .clone();
                    let c = clients.remove(&id).unwrap();
                    g.heartbeat(beat(&id, LEAVE_EPOCH, None), &t, now).unwrap();
                    drop(c);
                }
                _ if !clients.is_empty() => {
                    let id = clients
                        .keys()
                        .nth(next(clients.len() as u64) as usize)
                        .unwrap()
                        .clone();
                    let c = clients.get_mut(&id).unwrap();
                    // Clients say what they own now and then, as librdkafka
                    // does when it acknowledges.
                    let owned = (next(2) == 0).then(|| c.owned.clone());
                    let r = g.heartbeat(beat(&id, c.epoch, owned), &t, now).unwrap();
                    c.apply(&r);
                }
                _ => {}
            }
            exclusive(&clients);
        }
        // Left alone, every member heartbeats (with its owned partitions)
        // until nothing changes.
        for _ in 0..6 {
            for (id, c) in clients.iter_mut() {
                let r = g
                    .heartbeat(beat(id, c.epoch, Some(c.owned.clone())), &t, now)
                    .unwrap();
                c.apply(&r);
            }
            exclusive(&clients);
        }
        if clients.is_empty() {
            continue;
        }
        assert_eq!(g.state_name(), "Stable", "seed {seed}");
        let counts: Vec<usize> = clients.values().map(|c| count(&c.owned)).collect();
        assert_eq!(
            counts.iter().sum::<usize>(),
            9,
            "seed {seed}: every partition owned"
        );
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "seed {seed}: uneven {counts:?}");
        for c in clients.values() {
            assert_eq!(
                c.epoch, g.group_epoch,
                "seed {seed}: every member at the group epoch"
            );
        }
    }
}

#[test]
fn leaving_and_expiring_hand_partitions_to_the_rest() {
    let t = topics(&[("t", 4)]);
    let t0 = Instant::now();
    let mut g = group();
    let a = g.heartbeat(join("a", &["t"]), &t, t0).unwrap();
    let _ = g.heartbeat(join("b", &["t"]), &t, t0).unwrap();
    let kept = g
        .heartbeat(beat("a", a.member_epoch, None), &t, t0)
        .unwrap()
        .assignment
        .unwrap();
    g.heartbeat(beat("a", a.member_epoch, Some(kept)), &t, t0)
        .unwrap();
    let b = g.heartbeat(beat("b", 2, None), &t, t0).unwrap();
    assert_eq!(count(&b.assignment.unwrap()), 2);
    // a leaves (epoch -1): answered with -1; b gets all four at once.
    let r = g.heartbeat(beat("a", 2, None), &t, t0).unwrap();
    assert_eq!(r.assignment, None);
    let r = g.heartbeat(beat("a", LEAVE_EPOCH, None), &t, t0).unwrap();
    assert_eq!(r.member_epoch, LEAVE_EPOCH);
    let r = g.heartbeat(beat("b", 2, None), &t, t0).unwrap();
    assert_eq!(
        (r.member_epoch, r.assignment),
        (3, Some(tp(&[("t", &[0, 1, 2, 3])])))
    );
    // c joins; b goes silent: after its session timeout it is removed
    // and c takes everything.
    let c = g.heartbeat(join("c", &["t"]), &t, t0).unwrap();
    assert_eq!(c.assignment, Some(tp(&[])), "b still owns all");
    let later = t0 + SESSION - Duration::from_secs(1);
    assert!(g.tick(later).is_empty());
    g.heartbeat(beat("c", c.member_epoch, None), &t, later)
        .unwrap();
    assert_eq!(g.tick(t0 + SESSION), vec!["b".to_string()]);
    let r = g
        .heartbeat(beat("c", c.member_epoch, None), &t, t0 + SESSION)
        .unwrap();
    assert_eq!(r.assignment, Some(tp(&[("t", &[0, 1, 2, 3])])));
    // The last member leaves: Empty.
    g.heartbeat(beat("c", LEAVE_EPOCH, None), &t, t0 + SESSION)
        .unwrap();
    assert_eq!(g.state_name(), "Empty");
    assert!(g.is_empty());
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    let t = topics(&[("t", 2)]);
    let t0 = Instant::now();
    let mut g = group();
    let mut a = join("a", &["t"]);
    a.rebalance_timeout_ms = 10_000;
    g.heartbeat(a, &t, t0).unwrap();
    g.heartbeat(join("b", &["t"]), &t, t0).unwrap();
    g.heartbeat(beat("a", 1, None), &t, t0).unwrap();
    assert_eq!(
        g.member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );
    // It keeps heartbeating (session alive) but never confirms.
    let at = t0 + Duration::from_secs(9);
    g.heartbeat(beat("a", 1, None), &t, at).unwrap();
    g.heartbeat(beat("b", 2, None), &t, at).unwrap();
    assert!(g.tick(at).is_empty());
    assert_eq!(g.tick(t0 + Duration::from_secs(10)), vec!["a".to_string()]);
    let r = g.heartbeat(beat("b", 2, None), &t, at).unwrap();
    assert_eq!(r.assignment, Some(tp(&[("t", &[0, 1])])));
    // a's next heartbeat: it is gone.
    assert_eq!(
        g.heartbeat(beat("a", 1, None), &t, at),
        Err(GroupError::UnknownMember)
    );
}

#[test]
fn epochs_are_checked_and_a_rejoin_starts_over() {
    let t = topics(&[("t", 2)]);
    let now = Instant::now();
    let mut g = group();
    g.heartbeat(join("a", &["t"]), &t, now).unwrap();
    assert_eq!(
        g.heartbeat(beat("a", 7, None), &t, now),
        Err(GroupError::FencedMemberEpoch),
        "an epoch ahead of the member's"
    );
    assert_eq!(
        g.heartbeat(beat("nobody", 1, None), &t, now),
        Err(GroupError::UnknownMember)
    );
    // b joins; a reconciles to epoch 2 (previous epoch 1).
    g.heartbeat(join("b", &["t"]), &t, now).unwrap();
    let kept = g
        .heartbeat(beat("a", 1, None), &t, now)
        .unwrap()
        .assignment
        .unwrap();
    assert_eq!(
        g.heartbeat(beat("a", 1, Some(kept.clone())), &t, now)
            .unwrap()
            .member_epoch,
        2
    );
    // The answer was lost: a heartbeats again at epoch 1 with partitions
    // it may own: accepted (Kafka's rule), and told epoch 2.
    let r = g
        .heartbeat(beat("a", 1, Some(kept.clone())), &t, now)
        .unwrap();
    assert_eq!(r.member_epoch, 2);
    // At epoch 1 without owned partitions, or owning more: fenced.
    assert_eq!(
        g.heartbeat(beat("a", 1, None), &t, now),
        Err(GroupError::FencedMemberEpoch)
    );
    assert_eq!(
        g.heartbeat(beat("a", 1, Some(tp(&[("t", &[0, 1])]))), &t, now),
        Err(GroupError::FencedMemberEpoch)
    );
    // A fenced client rejoins with epoch 0 and the same id, owning
    // nothing: it gets its share back at the current epoch.
    let r = g.heartbeat(join("a", &["t"]), &t, now).unwrap();
    assert_eq!((r.member_epoch, r.assignment), (2, Some(kept)));
    // Joining while saying it owns partitions is refused.
    let mut bad = join("c", &["t"]);
    bad.owned = Some(tp(&[("t", &[0])]));
    assert!(matches!(
        g.heartbeat(bad, &t, now),
        Err(GroupError::InvalidRequest(_))
    ));
    let mut bad = join("c", &["t"]);
    bad.subscribed = None;
    assert!(matches!(
        g.heartbeat(bad, &t, now),
        Err(GroupError::InvalidRequest(_))
    ));
}

#[test]
fn commits_need_the_members_current_epoch() {
    let t = topics(&[("t", 2)]);
    let now = Instant::now();
    let mut g = group();
    let all = [("t", 0), ("t", 1)];
    let check =
        |g: &ConsumerGroup, m: &str, e: i32, parts: &[(&str, i32)]| g.check_commit(m, e, parts);
    assert_eq!(
        check(&g, "", -1, &all),
        Ok(()),
        "admin commit to an empty group"
    );
    g.heartbeat(join("a", &["t"]), &t, now).unwrap();
    assert_eq!(check(&g, "", -1, &all), Err(GroupError::UnknownMember));
    assert_eq!(check(&g, "x", 1, &all), Err(GroupError::UnknownMember));
    assert_eq!(check(&g, "a", 1, &all), Ok(()));
    assert_eq!(check(&g, "a", 0, &all), Err(GroupError::StaleMemberEpoch));
    assert_eq!(check(&g, "a", 2, &all), Err(GroupError::StaleMemberEpoch));
    // While a revokes (still epoch 1) it may commit what it gives up.
    g.heartbeat(join("b", &["t"]), &t, now).unwrap();
    let kept = g
        .heartbeat(beat("a", 1, None), &t, now)
        .unwrap()
        .assignment
        .unwrap();
    assert_eq!(check(&g, "a", 1, &all), Ok(()));
    // Once it confirmed (epoch 2), a commit still at epoch 1 (sent before
    // the answer arrived) is accepted for what it still owns only.
    g.heartbeat(beat("a", 1, Some(kept.clone())), &t, now)
        .unwrap();
    let (kt, ps) = kept.iter().next().unwrap();
    let own = (kt.as_str(), *ps.iter().next().unwrap());
    assert_eq!(check(&g, "a", 1, &[own]), Ok(()));
    assert_eq!(check(&g, "a", 1, &all), Err(GroupError::StaleMemberEpoch));
    assert_eq!(check(&g, "a", 2, &all), Ok(()), "the current epoch");
    assert_eq!(g.check_fetch("a", -1), Ok(()), "admin fetch");
    assert_eq!(g.check_fetch("a", 3), Err(GroupError::StaleMemberEpoch));
}
#[test]
fn a_static_member_returns_to_its_partitions() {
    let t = topics(&[("t", 4)]);
    let now = Instant::now();
    let mut g = group();
    let mut a = join("a1", &["t"]);
    a.instance_id = Some("inst-a".into());
    g.heartbeat(a, &t, now).unwrap();
    g.heartbeat(join("b", &["t"]), &t, now).unwrap();
    let kept = g
        .heartbeat(beat("a1", 1, None), &t, now)
        .unwrap()
        .assignment
        .unwrap();
    g.heartbeat(beat("a1", 1, Some(kept.clone())), &t, now)
        .unwrap();
    g.heartbeat(beat("b", 2, None), &t, now).unwrap();
    let epoch = g.group_epoch;
    // A second process with the same instance id while a1 is active.
    let mut dup = join("a2", &["t"]);
    dup.instance_id = Some("inst-a".into());
    assert_eq!(
        g.heartbeat(dup.clone(), &t, now),
        Err(GroupError::UnreleasedInstanceId)
    );
    // a1 leaves as a static member (-2): it keeps its place.
    let mut leave = beat("a1", LEAVE_STATIC_EPOCH, None);
    leave.instance_id = Some("inst-a".into());
    assert_eq!(
        g.heartbeat(leave, &t, now).unwrap().member_epoch,
        LEAVE_STATIC_EPOCH
    );
    assert_eq!(g.group_epoch, epoch, "no rebalance");
    // Its restart (a new member id) gets the same partitions, no rebalance.
    let r = g.heartbeat(dup, &t, now).unwrap();
    assert_eq!(r.assignment, Some(kept));
    assert_eq!(g.group_epoch, epoch);
    assert_eq!(
        g.heartbeat(beat("a1", 2, None), &t, now),
        Err(GroupError::UnknownMember)
    );
    // -2 without an instance id is refused.
    assert!(matches!(
        g.heartbeat(beat("b", LEAVE_STATIC_EPOCH, None), &t, now),
        Err(GroupError::InvalidRequest(_))
    ));
}

#[test]
fn assignor_regex_and_topic_changes() {
    let now = Instant::now();
    let mut g = group();
    let mut t = topics(&[("t", 3)]);
    let mut a = join("a", &["t"]);
    a.assignor = Some("range".into());
    g.heartbeat(a, &t, now).unwrap();
    let mut b = join("b", &["t"]);
    b.assignor = Some("range".into());
    g.heartbeat(b, &t, now).unwrap();
    assert_eq!(g.view().assignor, "range");
    let targets: Vec<TopicPartitions> = g.view().members.into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, vec![tp(&[("t", &[0, 1])]), tp(&[("t", &[2])])]);
    let mut c = join("c", &["t"]);
    c.assignor = Some("cooperative-sticky".into());
    assert_eq!(
        g.heartbeat(c, &t, now),
        Err(GroupError::UnsupportedAssignor)
    );
    let mut r = join("r", &[]);
    r.regex = Some("^t.*".into());
    assert_eq!(g.heartbeat(r, &t, now), Err(GroupError::RegexUnsupported));
    // The topic grows: the group epoch moves and the new partitions are
    // assigned.
    let kept = g
        .heartbeat(beat("a", 1, None), &t, now)
        .unwrap()
        .assignment
        .unwrap();
    g.heartbeat(beat("a", 1, Some(kept)), &t, now).unwrap();
    let before = g.group_epoch;
    t.insert("t".into(), 5);
    g.heartbeat(beat("a", 2, None), &t, now).unwrap();
    assert_eq!(g.group_epoch, before + 1);
    let total: usize = g.view().members.iter().map(|(_, t)| count(t)).sum();
    assert_eq!(total, 5);
    // A subscription change moves the epoch too.
    let mut change = beat("b", 2, None);
    change.subscribed = Some(vec!["t".into(), "other".into()]);
    g.heartbeat(change, &t, now).unwrap();
    assert_eq!(g.group_epoch, before + 2);
}
