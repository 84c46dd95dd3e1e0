//! Unit tests of the group state machine: time is an argument, so every
//! timeout (session, rebalance, initial delay) is driven exactly.

use super::*;

/// A JoinGroup of group "g": 6 s session, 10 s rebalance timeout.
pub(in crate::groups) fn params(member: &str) -> JoinParams {
    JoinParams {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "c".into(),
        session_timeout_ms: 6000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
    }
}

fn joined(rx: &mut JoinReply) -> JoinOutcome {
    rx.try_recv().unwrap().expect("answered").unwrap()
}

#[test]
fn two_members_rebalance_then_one_expires() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), Duration::ZERO);
    let mut a = g.join(params(""), t0).unwrap();
    let ja = joined(&mut a);
    assert_eq!((ja.generation, ja.leader == ja.member_id), (1, true));
    assert_eq!(ja.members.len(), 1);
    assert!(matches!(
        g.sync(
            MemberRef::dynamic(&ja.member_id),
            1,
            vec![(ja.member_id.clone(), Bytes::from_static(b"all"))],
            t0
        ),
        Ok(SyncStep::Now(_))
    ));
    assert_eq!(g.phase, Phase::Stable);
    // B joins: A must rejoin; B's answer waits.
    let mut b = g.join(params(""), t0).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    assert_eq!(
        g.heartbeat(MemberRef::dynamic(&ja.member_id), 1, t0),
        Err(GroupError::RebalanceInProgress)
    );
    let mut a2 = g.join(params(&ja.member_id), t0).unwrap();
    let ja2 = joined(&mut a2);
    let jb = joined(&mut b);
    assert_eq!(ja2.generation, 2);
    assert_eq!(
        ja2.leader, ja.member_id,
        "the longest-standing member leads"
    );
    assert_eq!(ja2.members.len(), 2);
    assert!(jb.members.is_empty());
    // B syncs first and waits for the leader.
    let SyncStep::Wait(mut sb) = g
        .sync(MemberRef::dynamic(&jb.member_id), 2, vec![], t0)
        .unwrap()
    else {
        panic!("follower waits")
    };
    let asg = vec![
        (ja.member_id.clone(), Bytes::from_static(b"p0")),
        (jb.member_id.clone(), Bytes::from_static(b"p1")),
    ];
    let SyncStep::Now(sa) = g
        .sync(MemberRef::dynamic(&ja.member_id), 2, asg, t0)
        .unwrap()
    else {
        panic!("leader answered at once")
    };
    assert_eq!(&sa.assignment[..], b"p0");
    assert_eq!(
        &sb.try_recv().unwrap().unwrap().unwrap().assignment[..],
        b"p1"
    );
    // B goes silent: after its session timeout it is removed.
    let t1 = t0 + Duration::from_millis(4000);
    g.heartbeat(MemberRef::dynamic(&ja.member_id), 2, t1)
        .unwrap();
    assert!(g.tick(t1).is_empty());
    let t2 = t0 + Duration::from_millis(6500);
    assert_eq!(g.tick(t2), vec![(jb.member_id.clone(), Expiry::Session)]);
    assert_eq!(g.phase, Phase::PreparingRebalance);
    let mut a3 = g.join(params(&ja.member_id), t2).unwrap();
    let ja3 = joined(&mut a3);
    assert_eq!((ja3.generation, ja3.members.len()), (3, 1));
}

#[test]
fn leave_and_commit_rules() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), Duration::ZERO);
    assert_eq!(
        g.check_commit(MemberRef::dynamic(""), -1),
        Ok(()),
        "standalone commit"
    );
    let mut a = g.join(params(""), t0).unwrap();
    let ja = joined(&mut a);
    assert_eq!(
        g.check_commit(MemberRef::dynamic(&ja.member_id), 1),
        Err(GroupError::RebalanceInProgress)
    );
    g.sync(MemberRef::dynamic(&ja.member_id), 1, vec![], t0)
        .unwrap();
    assert_eq!(g.check_commit(MemberRef::dynamic(&ja.member_id), 1), Ok(()));
    assert_eq!(
        g.check_commit(MemberRef::dynamic(&ja.member_id), 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit(MemberRef::dynamic("nobody"), 1),
        Err(GroupError::UnknownMember)
    );
    g.leave(MemberRef::dynamic(&ja.member_id), t0).unwrap();
    assert_eq!(g.phase, Phase::Empty);
    assert_eq!(
        g.leave(MemberRef::dynamic(&ja.member_id), t0),
        Err(GroupError::UnknownMember)
    );
    assert_eq!(
        g.join(params("ghost"), t0).err(),
        Some(GroupError::UnknownMember)
    );
}

#[test]
fn laggards_are_dropped_at_the_rebalance_deadline() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), Duration::ZERO);
    let ja = joined(&mut g.join(params(""), t0).unwrap());
    g.sync(MemberRef::dynamic(&ja.member_id), 1, vec![], t0)
        .unwrap();
    let mut b = g.join(params(""), t0).unwrap();
    // A keeps heartbeating but never rejoins.
    let t1 = t0 + Duration::from_millis(5000);
    assert_eq!(
        g.heartbeat(MemberRef::dynamic(&ja.member_id), 1, t1),
        Err(GroupError::RebalanceInProgress)
    );
    g.tick(t1);
    assert!(b.try_recv().unwrap().is_none());
    g.tick(t0 + Duration::from_millis(10_001));
    let jb = joined(&mut b);
    assert_eq!((jb.members.len(), jb.leader == jb.member_id), (1, true));
    assert!(!g.members.contains_key(&ja.member_id));
}

fn static_params(member: &str, instance: &str) -> JoinParams {
    JoinParams {
        instance_id: Some(instance.into()),
        ..params(member)
    }
}

fn pending(rx: &mut JoinReply) -> bool {
    rx.try_recv().unwrap().is_none()
}

/// Three members arriving within the initial delay share generation 1; the
/// delay is extended once because members kept arriving, then the group
/// forms without waiting for more.
#[test]
fn the_initial_delay_gathers_members_into_one_generation() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut g = Group::new("g".into(), ms(3000));
    let mut a = g.join(params(""), t0).unwrap();
    let mut b = g.join(params(""), t0 + ms(100)).unwrap();
    let mut c = g.join(params(""), t0 + ms(200)).unwrap();
    g.tick(t0 + ms(2999));
    assert!(pending(&mut a) && pending(&mut b) && pending(&mut c));
    // At 3 s members had arrived during the wait: one more wait.
    g.tick(t0 + ms(3000));
    assert!(pending(&mut a));
    g.tick(t0 + ms(5999));
    assert!(pending(&mut a));
    g.tick(t0 + ms(6000));
    let (ja, jb, jc) = (joined(&mut a), joined(&mut b), joined(&mut c));
    assert_eq!((ja.generation, jb.generation, jc.generation), (1, 1, 1));
    assert_eq!(ja.members.len(), 3, "the leader sees all three");
    assert_eq!(ja.leader, ja.member_id, "the first to join leads");
}

/// The initial delay never waits past the rebalance timeout in all, and a
/// lone member waits the delay once, not more.
#[test]
fn the_initial_delay_is_bounded_by_the_rebalance_timeout() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut g = Group::new("g".into(), ms(3000));
    let p = JoinParams {
        rebalance_timeout_ms: 5000,
        ..params("")
    };
    let mut first = g.join(p.clone(), t0).unwrap();
    let mut late = Vec::new();
    for s in 1..=4u64 {
        late.push(g.join(p.clone(), t0 + ms(1000 * s)).unwrap());
        g.tick(t0 + ms(1000 * s));
    }
    assert!(pending(&mut first));
    g.tick(t0 + ms(5000));
    assert_eq!(joined(&mut first).members.len(), 5);

    let mut lone = Group::new("h".into(), ms(3000));
    let mut a = lone.join(params(""), t0).unwrap();
    lone.tick(t0 + ms(2999));
    assert!(pending(&mut a));
    lone.tick(t0 + ms(3000));
    assert_eq!(joined(&mut a).generation, 1);
}

/// A follower that rejoins with the same protocols in a stable group gets
/// the current generation back and starts no rebalance; the leader's rejoin
/// does start one.
#[test]
fn an_unchanged_follower_rejoin_does_not_rebalance() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), Duration::ZERO);
    let mut a = g.join(params(""), t0).unwrap();
    let ja = joined(&mut a);
    g.sync(MemberRef::dynamic(&ja.member_id), 1, vec![], t0)
        .unwrap();
    let mut b = g.join(params(""), t0).unwrap();
    let mut a2 = g.join(params(&ja.member_id), t0).unwrap();
    let jb = joined(&mut b);
    joined(&mut a2);
    g.sync(MemberRef::dynamic(&ja.member_id), 2, vec![], t0)
        .unwrap();
    assert_eq!(g.phase, Phase::Stable);
    let jb2 = joined(&mut g.join(params(&jb.member_id), t0).unwrap());
    assert_eq!((jb2.generation, g.phase), (2, Phase::Stable));
    let mut a3 = g.join(params(&ja.member_id), t0).unwrap();
    assert_eq!(g.phase, Phase::PreparingRebalance);
    assert!(pending(&mut a3));
}

/// A static member that restarts (joins with its instance id and no member
/// id) takes its old place in a stable group without a rebalance; its old
/// member id is fenced everywhere.
#[test]
fn a_restarted_static_member_replaces_its_old_self_and_the_old_id_is_fenced() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), Duration::ZERO);
    let mut a = g.join(static_params("", "i-a"), t0).unwrap();
    let ja = joined(&mut a);
    let mut b = g.join(static_params("", "i-b"), t0).unwrap();
    let mut a2 = g.join(static_params(&ja.member_id, "i-a"), t0).unwrap();
    let jb = joined(&mut b);
    joined(&mut a2);
    let asg = vec![
        (ja.member_id.clone(), Bytes::from_static(b"p0")),
        (jb.member_id.clone(), Bytes::from_static(b"p1")),
    ];
    let a_ref = MemberRef {
        member_id: &ja.member_id,
        instance_id: Some("i-a"),
    };
    let b_ref = MemberRef {
        member_id: &jb.member_id,
        instance_id: Some("i-b"),
    };
    let SyncStep::Wait(_sb) = g.sync(b_ref, 2, vec![], t0).unwrap() else {
        panic!("follower waits")
    };
    g.sync(a_ref, 2, asg, t0).unwrap();
    assert_eq!(g.phase, Phase::Stable);

    // B restarts: same instance id, no member id.
    let jb2 = joined(&mut g.join(static_params("", "i-b"), t0).unwrap());
    assert_ne!(jb2.member_id, jb.member_id);
    assert_eq!(
        (jb2.generation, g.phase),
        (2, Phase::Stable),
        "no rebalance"
    );
    let b2_ref = MemberRef {
        member_id: &jb2.member_id,
        instance_id: Some("i-b"),
    };
    let SyncStep::Now(s) = g.sync(b2_ref, 2, vec![], t0).unwrap() else {
        panic!("a stable group answers at once")
    };
    assert_eq!(&s.assignment[..], b"p1", "it keeps its assignment");
    assert_eq!(g.heartbeat(b_ref, 2, t0), Err(GroupError::FencedInstance));
    assert_eq!(g.check_commit(b_ref, 2), Err(GroupError::FencedInstance));
    assert_eq!(
        g.join(static_params(&jb.member_id, "i-b"), t0).err(),
        Some(GroupError::FencedInstance)
    );
    assert_eq!(g.leave(b_ref, t0), Err(GroupError::FencedInstance));
    assert_eq!(g.check_commit(b2_ref, 2), Ok(()));
    // A static member leaves by instance id alone (admin tools do).
    g.leave(
        MemberRef {
            member_id: "",
            instance_id: Some("i-b"),
        },
        t0,
    )
    .unwrap();
    assert_eq!(g.phase, Phase::PreparingRebalance);
    assert_eq!(g.heartbeat(b2_ref, 2, t0), Err(GroupError::UnknownMember));
}

/// Kafka's order of OffsetCommit checks: member, then generation, then the
/// CompletingRebalance refusal; a commit with the current generation while
/// members rejoin is accepted; generation -1 only on an Empty group.
#[test]
fn commit_checks_follow_kafkas_order() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), Duration::ZERO);
    let ja = joined(&mut g.join(params(""), t0).unwrap());
    let a = MemberRef::dynamic(&ja.member_id);
    g.sync(a, 1, vec![], t0).unwrap();
    let mut b = g.join(params(""), t0).unwrap();
    // PreparingRebalance: A's generation is still the group's.
    assert_eq!(g.check_commit(a, 1), Ok(()));
    assert_eq!(
        g.check_commit(MemberRef::dynamic(""), -1),
        Err(GroupError::UnknownMember),
        "no standalone commits into a group with members"
    );
    joined(&mut g.join(params(&ja.member_id), t0).unwrap());
    let jb = joined(&mut b);
    // CompletingRebalance: a stale generation is ILLEGAL_GENERATION first.
    assert_eq!(g.check_commit(a, 1), Err(GroupError::IllegalGeneration));
    assert_eq!(g.check_commit(a, 2), Err(GroupError::RebalanceInProgress));
    // B leaves: it can no longer commit; A, rejoining, still can.
    g.sync(a, 2, vec![], t0).unwrap();
    g.leave(MemberRef::dynamic(&jb.member_id), t0).unwrap();
    assert_eq!(g.check_commit(a, 2), Ok(()));
    assert_eq!(
        g.check_commit(MemberRef::dynamic(&jb.member_id), 2),
        Err(GroupError::UnknownMember)
    );
}

/// Two members in generation 2 (A leads, B follows), both answered at `t0`;
/// `rebalance_timeout_ms` for both.
fn two_member_generation(
    g: &mut Group,
    rebalance_timeout_ms: i32,
    t0: Instant,
) -> (JoinOutcome, JoinOutcome) {
    let p = |id: &str| JoinParams {
        rebalance_timeout_ms,
        ..params(id)
    };
    let ja = joined(&mut g.join(p(""), t0).unwrap());
    g.sync(MemberRef::dynamic(&ja.member_id), 1, vec![], t0)
        .unwrap();
    let mut b = g.join(p(""), t0).unwrap();
    let ja2 = joined(&mut g.join(p(&ja.member_id), t0).unwrap());
    let jb = joined(&mut b);
    assert_eq!((ja2.generation, jb.generation), (2, 2));
    assert_eq!(ja2.leader, ja.member_id);
    (ja2, jb)
}

/// Kafka's pending-sync rule: a follower that keeps heartbeating but never
/// sends its SyncGroup is removed once the rebalance timeout has passed
/// since the generation formed, and the group rebalances; members that
/// synced stay, and once everyone has synced no deadline is left.
#[test]
fn a_follower_that_never_syncs_is_removed_at_the_rebalance_timeout() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut g = Group::new("g".into(), Duration::ZERO);
    let (ja, jb) = two_member_generation(&mut g, 10_000, t0);
    let (a, b) = (
        MemberRef::dynamic(&ja.member_id),
        MemberRef::dynamic(&jb.member_id),
    );
    g.sync(a, 2, vec![], t0).unwrap();
    assert_eq!(g.phase, Phase::Stable);
    // B heartbeats within its session (6 s) but never syncs.
    for at in [2000, 4000, 6000, 8000, 9999] {
        g.heartbeat(a, 2, t0 + ms(at)).unwrap();
        g.heartbeat(b, 2, t0 + ms(at)).unwrap();
        assert!(g.tick(t0 + ms(at)).is_empty(), "nobody removed at {at} ms");
    }
    assert_eq!(
        g.tick(t0 + ms(10_000)),
        vec![(jb.member_id.clone(), Expiry::SyncMissed)]
    );
    assert_eq!(g.phase, Phase::PreparingRebalance);
    assert_eq!(
        g.heartbeat(b, 2, t0 + ms(10_000)),
        Err(GroupError::UnknownMember)
    );
    assert_eq!(
        g.heartbeat(a, 2, t0 + ms(10_000)),
        Err(GroupError::RebalanceInProgress)
    );
    let ja3 = joined(&mut g.join(params(&ja.member_id), t0 + ms(10_000)).unwrap());
    assert_eq!((ja3.generation, ja3.members.len()), (3, 1));

    // Everyone synced: no deadline, members stay as long as they heartbeat.
    let mut h = Group::new("h".into(), Duration::ZERO);
    let (ja, jb) = two_member_generation(&mut h, 10_000, t0);
    let (a, b) = (
        MemberRef::dynamic(&ja.member_id),
        MemberRef::dynamic(&jb.member_id),
    );
    let SyncStep::Wait(_) = h.sync(b, 2, vec![], t0).unwrap() else {
        panic!("the follower waits for the leader")
    };
    h.sync(a, 2, vec![], t0 + ms(3000)).unwrap();
    for at in [5000, 10_000, 15_000, 20_000] {
        h.heartbeat(a, 2, t0 + ms(at)).unwrap();
        h.heartbeat(b, 2, t0 + ms(at)).unwrap();
        assert!(h.tick(t0 + ms(at)).is_empty());
    }
    assert_eq!((h.phase, h.members.len()), (Phase::Stable, 2));
}

/// A leader that never sends the assignment: at the rebalance timeout it is
/// removed, the follower waiting in SyncGroup is told to rejoin
/// (REBALANCE_IN_PROGRESS) and was not expired meanwhile although its
/// session timeout (6 s) passed: awaiting the leader counts as heartbeating,
/// and the answer restarts its session.
#[test]
fn a_leader_that_never_syncs_is_removed_and_the_waiting_follower_rejoins() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut g = Group::new("g".into(), Duration::ZERO);
    let (ja, jb) = two_member_generation(&mut g, 10_000, t0);
    let b = MemberRef::dynamic(&jb.member_id);
    let SyncStep::Wait(mut sb) = g.sync(b, 2, vec![], t0).unwrap() else {
        panic!("the follower waits for the leader")
    };
    // The leader heartbeats, so only the sync rule can remove it.
    for at in [3000, 6000, 9000, 9999] {
        g.heartbeat(MemberRef::dynamic(&ja.member_id), 2, t0 + ms(at))
            .unwrap();
        assert!(g.tick(t0 + ms(at)).is_empty(), "nobody removed at {at} ms");
    }
    assert_eq!(g.phase, Phase::CompletingRebalance);
    assert_eq!(
        g.tick(t0 + ms(10_000)),
        vec![(ja.member_id.clone(), Expiry::SyncMissed)]
    );
    assert_eq!(
        sb.try_recv().unwrap().unwrap().err(),
        Some(GroupError::RebalanceInProgress)
    );
    // Answered, its session starts afresh: it has 6 s to rejoin.
    assert!(g.tick(t0 + ms(15_000)).is_empty());
    let jb3 = joined(&mut g.join(params(&jb.member_id), t0 + ms(15_000)).unwrap());
    assert_eq!(
        (
            jb3.generation,
            jb3.leader == jb3.member_id,
            jb3.members.len()
        ),
        (3, true, 1)
    );
}

/// Kafka's NewMemberJoinTimeoutMs: a new member whose JoinGroup is still
/// unanswered 5 minutes after it joined (the group waits, up to a longer
/// rebalance timeout, for an old member to rejoin) is removed with
/// UNKNOWN_MEMBER_ID; when it joins again it is a new member again, and
/// the group forms once the old member rejoins.
#[test]
fn a_new_member_waiting_five_minutes_for_its_generation_is_removed() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut g = Group::new("g".into(), Duration::ZERO);
    let p = |id: &str| JoinParams {
        rebalance_timeout_ms: 600_000,
        ..params(id)
    };
    let ja = joined(&mut g.join(p(""), t0).unwrap());
    let a = MemberRef::dynamic(&ja.member_id);
    g.sync(a, 1, vec![], t0).unwrap();
    let mut b = g.join(p(""), t0).unwrap();
    // A heartbeats (and is told to rejoin) but takes its time.
    let mut at = 0;
    while at < 300_000 {
        at += 5000;
        assert_eq!(
            g.heartbeat(a, 1, t0 + ms(at - 1)),
            Err(GroupError::RebalanceInProgress)
        );
        let removed = g.tick(t0 + ms(at - 1));
        assert!(removed.is_empty(), "{removed:?} removed at {} ms", at - 1);
    }
    assert!(pending(&mut b));
    let removed = g.tick(t0 + NEW_MEMBER_JOIN_TIMEOUT);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].1, Expiry::NewMemberJoin);
    assert_eq!(
        b.try_recv().unwrap().unwrap().err(),
        Some(GroupError::UnknownMember)
    );
    assert_eq!((g.phase, g.members.len()), (Phase::PreparingRebalance, 1));
    // B tries again; A rejoins: one generation with both, B no longer new.
    let t1 = t0 + NEW_MEMBER_JOIN_TIMEOUT;
    let mut b2 = g.join(p(""), t1).unwrap();
    joined(&mut g.join(p(&ja.member_id), t1 + ms(1000)).unwrap());
    let jb2 = joined(&mut b2);
    assert_eq!(jb2.generation, 2);
    g.sync(a, 2, vec![], t1 + ms(1000)).unwrap();
    g.sync(MemberRef::dynamic(&jb2.member_id), 2, vec![], t1 + ms(1000))
        .unwrap();
    let b2 = MemberRef::dynamic(&jb2.member_id);
    let later = t1 + NEW_MEMBER_JOIN_TIMEOUT + ms(1000);
    g.heartbeat(a, 2, later).unwrap();
    g.heartbeat(b2, 2, later).unwrap();
    assert!(
        g.tick(later).is_empty(),
        "a member of a generation is not new"
    );
}
