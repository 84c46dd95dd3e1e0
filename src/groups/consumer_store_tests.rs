//! A consumer group through its records: what is written after each
//! change, and that a group rebuilt from the records is the group that
//! wrote them (epochs, members, ownership, targets).

use super::*;
use crate::groups::consumer_group::{HeartbeatParams, HeartbeatReply};

const SESSION: Duration = Duration::from_secs(45);
const INTERVAL: Duration = Duration::from_secs(5);

fn tp(list: &[(&str, &[i32])]) -> TopicPartitions {
    list.iter()
        .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
        .collect()
}

fn hb(id: &str, epoch: i32, owned: TopicPartitions) -> HeartbeatParams {
    HeartbeatParams {
        member_id: id.into(),
        member_epoch: epoch,
        client_id: "c".into(),
        rebalance_timeout_ms: if epoch == 0 { 30_000 } else { -1 },
        subscribed: (epoch == 0).then(|| vec!["t".to_string()]),
        owned: Some(owned),
        ..Default::default()
    }
}

fn ids() -> TopicIds {
    TopicIds::from_pairs([("t".to_string(), [7u8; 16])])
}

/// Write what `diff` says, as the coordinator does, at log offset `*at`.
fn write(
    store: &ConsumerStore,
    g: Option<&ConsumerGroup>,
    scope: Scope,
    at: &mut u64,
) -> Vec<(RecordKey, Option<Bytes>)> {
    let recs = store.diff("g", g, &ids(), scope);
    store.written("g", &recs, *at);
    *at += recs.len() as u64;
    recs
}

fn kinds(recs: &[(RecordKey, Option<Bytes>)]) -> Vec<(ConsumerKind, Option<String>, bool)> {
    recs.iter()
        .map(|(k, v)| match k {
            RecordKey::Consumer { kind, member, .. } => (*kind, member.clone(), v.is_some()),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Everything restore keeps, member by member.
fn image(g: &ConsumerGroup) -> (i32, i32, String) {
    let members: Vec<String> = g
        .members()
        .map(|m| {
            format!(
                "{} e{} p{} {:?} a{:?} r{:?} t{:?} {:?}",
                m.id,
                m.epoch,
                m.previous_epoch,
                m.state,
                m.assigned,
                m.revoking,
                g.target_of(&m.id),
                m.subscribed
            )
        })
        .collect();
    (g.group_epoch, g.assignment_epoch, members.join("; "))
}

#[test]
fn a_group_restored_from_its_records_is_the_group_that_wrote_them() {
    let now = Instant::now();
    let topics: BTreeMap<String, u32> = [("t".to_string(), 4)].into();
    let mut g = ConsumerGroup::new("g".into(), SESSION, INTERVAL);
    let store = ConsumerStore::default();
    let mut at = 0u64;
    // a joins and gets all four partitions.
    let r: HeartbeatReply = g.heartbeat(hb("a", 0, tp(&[])), &topics, now).unwrap();
    assert_eq!(
        (r.member_epoch, r.assignment.clone().unwrap()),
        (1, tp(&[("t", &[0, 1, 2, 3])]))
    );
    let first = write(&store, Some(&g), Scope::All, &mut at);
    assert_eq!(
        kinds(&first),
        vec![
            (ConsumerKind::MemberMetadata, Some("a".into()), true),
            (ConsumerKind::PartitionMetadata, None, true),
            (ConsumerKind::Metadata, None, true),
            (ConsumerKind::TargetAssignmentMember, Some("a".into()), true),
            (ConsumerKind::TargetAssignmentMetadata, None, true),
            (
                ConsumerKind::CurrentMemberAssignment,
                Some("a".into()),
                true
            ),
        ],
        "Kafka's order for a new member"
    );
    // The same heartbeat again changes nothing, so writes nothing.
    g.heartbeat(hb("a", 1, tp(&[("t", &[0, 1, 2, 3])])), &topics, now)
        .unwrap();
    assert!(write(&store, Some(&g), Scope::Member("a"), &mut at).is_empty());
    // b joins: a must revoke two partitions (a is UnrevokedPartitions).
    g.heartbeat(hb("b", 0, tp(&[])), &topics, now).unwrap();
    g.heartbeat(hb("a", 1, tp(&[("t", &[0, 1, 2, 3])])), &topics, now)
        .unwrap();
    let second = write(&store, Some(&g), Scope::All, &mut at);
    assert!(
        kinds(&second).contains(&(ConsumerKind::Metadata, None, true)),
        "the group epoch moved"
    );
    assert_eq!(
        g.member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );

    // Rebuild from the records, as replay hands them over.
    let mut recs = StoredRecords::new();
    for (i, (k, v)) in first.iter().chain(second.iter()).enumerate() {
        match v {
            Some(v) => recs.insert(k.clone(), (i as u64 + 1, v.clone())),
            None => recs.remove(k),
        };
    }
    let later = now + Duration::from_secs(100);
    let back = restore("g", &recs, &ids(), SESSION, INTERVAL, later).unwrap();
    assert_eq!(image(&back), image(&g));
    // Restored, it writes nothing new: the records already say it all.
    let store2 = ConsumerStore::default();
    store2.restored("g", recs.clone());
    assert!(store2.diff("g", Some(&back), &ids(), Scope::All).is_empty());
    // Sessions restart at the restore: no one expires at once, and the
    // revoking member's rebalance timeout counts from then too.
    let mut back = back;
    assert!(back.tick(later + Duration::from_secs(29)).is_empty());
    assert_eq!(back.tick(later + SESSION).len(), 2);

    // A topic deleted (or recreated under another id) is not restored.
    let other = TopicIds::from_pairs([("t".to_string(), [8u8; 16])]);
    let gone = restore("g", &recs, &other, SESSION, INTERVAL, later).unwrap();
    assert!(gone.members().all(|m| m.assigned.is_empty()));
    assert!(gone.topics_seen().is_empty());
}

#[test]
fn a_departed_static_member_and_a_deleted_group_are_stored_as_kafka_does() {
    let now = Instant::now();
    let topics: BTreeMap<String, u32> = [("t".to_string(), 2)].into();
    let mut g = ConsumerGroup::new("g".into(), SESSION, INTERVAL);
    let store = ConsumerStore::default();
    let mut at = 10u64;
    let mut p = hb("s", 0, tp(&[]));
    p.instance_id = Some("i".into());
    g.heartbeat(p, &topics, now).unwrap();
    write(&store, Some(&g), Scope::All, &mut at);
    // Static leave (-2): kept, stored with member epoch -2.
    let mut leave = hb("s", -2, tp(&[]));
    leave.instance_id = Some("i".into());
    leave.owned = None;
    g.heartbeat(leave, &topics, now).unwrap();
    let recs = write(&store, Some(&g), Scope::Member("s"), &mut at);
    assert_eq!(recs.len(), 1, "only its current assignment changed");
    let Some(ConsumerValue::CurrentAssignment(c)) = recs[0]
        .1
        .as_ref()
        .map(|v| records::decode_consumer_value(ConsumerKind::CurrentMemberAssignment, v).unwrap())
    else {
        panic!("{recs:?}")
    };
    assert_eq!(
        (c.member_epoch, c.previous_member_epoch),
        (STATIC_LEFT_EPOCH, 1)
    );
    let stored = store.stored.borrow().get("g").cloned().unwrap();
    let back = restore("g", &stored, &ids(), SESSION, INTERVAL, now).unwrap();
    let m = back.member("s").unwrap();
    assert!(m.departed());
    assert_eq!(m.epoch, 1);
    // The group gone: a tombstone for every record, members' first and the
    // group epoch's last (Kafka's replay refuses a group deleted before
    // its members).
    let tomb = write(&store, None, Scope::All, &mut at);
    assert_eq!(tomb.len(), 6);
    assert!(tomb.iter().all(|(_, v)| v.is_none()));
    assert_eq!(kinds(&tomb)[0].0, ConsumerKind::CurrentMemberAssignment);
    assert_eq!(kinds(&tomb)[5].0, ConsumerKind::Metadata);
    assert!(store.stored.borrow().get("g").is_none());
}
