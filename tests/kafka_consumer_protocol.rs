//! The consumer group protocol of KIP-848 (`group.protocol=consumer`,
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe) through a real client
//! (librdkafka 2.12, via the `rdkafka` crate) and hand-built requests:
//! - two consumers in one group share a 4-partition topic, each message
//!   read once; one leaves (close) and the other takes every partition and
//!   reads the rest from the committed offsets;
//! - a broker restart keeps the committed offsets: a running consumer is
//!   told to rejoin and carries on with no message read twice;
//! - one protocol per group id; DescribeGroups, ListGroups and
//!   ConsumerGroupDescribe show consumer-protocol groups.
//!
//! The rules themselves (epochs, revocation before assignment, fencing,
//! timeouts) are unit-tested on the state machine
//! (`src/groups/consumer_group_tests.rs`); docs/kafka.md lists each rule
//! and its test.

mod common;

use common::kafka::{s, tn, Conn};
use common::{free_port, BrokerProc};
use kafka_protocol::messages::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// The broker's heartbeat interval here (Kafka's default is 5 s): each
/// reconciliation step takes a heartbeat.
const HEARTBEAT: &str = "group_consumer_heartbeat_interval_ms=500";

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

fn produce(bootstrap: &str, topic: &str, from: usize, to: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    // A few hundred messages: far below the producer's queue bound.
    for i in from..to {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        p.send(BaseRecord::to(topic).key(&k).payload(&v))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    p.flush(WAIT).expect("every message acknowledged");
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|t| t.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Messages read, per consumer: value -> (partition, offset).
type Seen = BTreeMap<String, (i32, i64)>;

/// Poll every consumer, recording messages, until `done` holds (bounded by WAIT).
fn poll_until(
    consumers: &[&BaseConsumer],
    seen: &mut [Seen],
    what: &str,
    mut done: impl FnMut(&[&BaseConsumer], &[Seen]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(consumers, seen) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for (c, s) in consumers.iter().zip(seen.iter_mut()) {
            match c.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                    let at = (m.partition(), m.offset());
                    if let Some(before) = s.insert(v.clone(), at) {
                        panic!(
                            "{what}: {v} read twice by one consumer: at {before:?}, then at {at:?}"
                        );
                    }
                }
                // The broker's restart: the client reconnects by itself.
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
                ))) => {}
                Some(Err(e)) => panic!("consumer error while waiting for {what}: {e}"),
                None => {}
            }
        }
    }
}

/// On a failing test, the broker's group log lines (why a rebalance came).
struct GroupLogOnPanic<'a>(&'a BrokerProc);

impl Drop for GroupLogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for l in self.0.plain_log().lines().filter(|l| l.contains("group")) {
                eprintln!("broker: {l}");
            }
        }
    }
}

/// The issue's case: two `group.protocol=consumer` consumers share a
/// 4-partition topic (each gets a share, no message read twice); one
/// leaves and the other gets every partition and reads the rest, starting
/// from the committed offsets.
#[test]
fn two_consumers_share_a_topic_and_one_takes_over_when_the_other_leaves() {
    let b = BrokerProc::start(&["--set", HEARTBEAT]);
    let _log = GroupLogOnPanic(&b);
    let addr = b.kafka.clone().unwrap();
    let (topic, group) = ("kip848-t", "kip848-g");
    b.create_topic(topic, 4);
    let a = consumer(&addr, group);
    let c = consumer(&addr, group);
    a.subscribe(&[topic]).unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut seen = vec![Seen::new(), Seen::new()];
    poll_until(&[&a, &c], &mut seen, "two partitions each", |cs, _| {
        cs.iter().all(|c| assigned(c).len() == 2)
    });
    let (pa, pc) = (assigned(&a), assigned(&c));
    assert!(pa.is_disjoint(&pc), "{pa:?} and {pc:?} overlap");

    produce(&addr, topic, 0, 200);
    poll_until(&[&a, &c], &mut seen, "the first 200 messages", |_, s| {
        s.iter().map(|s| s.len()).sum::<usize>() >= 200
    });
    for (i, (s, parts)) in seen.iter().zip([&pa, &pc]).enumerate() {
        assert!(!s.is_empty(), "consumer {i} got no share");
        assert!(
            s.values().all(|(p, _)| parts.contains(p)),
            "consumer {i} read only its own partitions"
        );
    }
    a.commit_consumer_state(CommitMode::Sync)
        .expect("a commits");
    c.commit_consumer_state(CommitMode::Sync)
        .expect("c commits");

    // c leaves (close sends its leave heartbeat, epoch -1).
    c.unsubscribe();
    drop(c);
    let mut seen_a = vec![seen[0].clone()];
    poll_until(&[&a], &mut seen_a, "a to take all 4 partitions", |cs, _| {
        assigned(cs[0]).len() == 4
    });
    produce(&addr, topic, 200, 400);
    poll_until(&[&a], &mut seen_a, "the other 200 messages", |_, s| {
        s[0].len() - seen[0].len() >= 200
    });
    std::thread::sleep(Duration::from_millis(500));
    poll_until(&[&a], &mut seen_a, "nothing more", |_, _| true);
    // Every message exactly once over both consumers: a did not re-read
    // what c had committed.
    let all: Vec<&String> = seen_a[0].keys().chain(seen[1].keys()).collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 400, "every message read");
    assert_eq!(all.len(), 400, "no message read twice");
    // The broker logged the group's epochs moving.
    assert!(b
        .plain_log()
        .contains("consumer group heartbeat changed the group"));
}

/// A broker restart (on the same ports) loses the group's in-memory state
/// but not its committed offsets: the running consumer is told
/// UNKNOWN_MEMBER_ID, rejoins, and reads only what came after its commit.
#[test]
fn a_restart_keeps_committed_offsets_and_the_consumer_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!("127.0.0.1:{}", free_port());
    let native = format!("127.0.0.1:{}", free_port());
    let mut b = BrokerProc::start_on(
        dir.path(),
        &dir.path().join("broker.stderr"),
        &native,
        &kafka,
        2,
        &["--set", HEARTBEAT],
    );
    let (topic, group) = ("kip848-restart", "kip848-restart-g");
    b.create_topic(topic, 2);
    produce(&kafka, topic, 0, 100);
    let c = consumer(&kafka, group);
    c.subscribe(&[topic]).unwrap();
    let mut seen = vec![Seen::new()];
    poll_until(&[&c], &mut seen, "100 messages", |_, s| s[0].len() >= 100);
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    let joins = |b: &BrokerProc| b.plain_log().matches("heartbeat changed the group").count();
    let joined_before = joins(&b);
    b.stop();
    b.restart();
    // Its next heartbeat gets UNKNOWN_MEMBER_ID (the group was in memory
    // only) and it rejoins with epoch 0, then resumes from its commit.
    poll_until(&[&c], &mut seen, "the consumer to rejoin", |_, _| {
        joins(&b) > joined_before
    });
    produce(&kafka, topic, 100, 150);
    poll_until(&[&c], &mut seen, "the 50 new messages", |_, s| {
        s[0].len() >= 150
    });
    c.commit_consumer_state(CommitMode::Sync)
        .expect("commit after the rejoin");
    drop(c);
    // A fresh member of the group starts at the committed offsets: it
    // reads only what is produced now, none of the 150 before.
    let fresh = consumer(&kafka, group);
    fresh.subscribe(&[topic]).unwrap();
    let mut seen_fresh = vec![Seen::new()];
    poll_until(&[&fresh], &mut seen_fresh, "an assignment", |cs, _| {
        assigned(cs[0]).len() == 2
    });
    produce(&kafka, topic, 150, 160);
    poll_until(&[&fresh], &mut seen_fresh, "the 10 newest", |_, s| {
        s[0].len() >= 10
    });
    std::thread::sleep(Duration::from_millis(500));
    poll_until(&[&fresh], &mut seen_fresh, "nothing more", |_, _| true);
    let want: BTreeSet<String> = (150..160).map(|i| format!("v{i}")).collect();
    assert_eq!(
        seen_fresh[0].keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "only what came after the commits"
    );
}

/// One protocol per group id, and the group shows in the listings.
#[test]
fn a_group_has_one_protocol_and_is_listed_and_described() {
    let b = BrokerProc::start(&["--set", HEARTBEAT]);
    let addr = b.kafka.clone().unwrap();
    b.create_topic("wire-t", 3);
    let mut conn = Conn::new(&addr);
    // v1: the member chooses its id.
    let hb = |member: &str, epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("wire-g")))
            .with_member_id(s(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![tn("wire-t")]))
            .with_topic_partitions(Some(vec![]))
    };
    let r: ConsumerGroupHeartbeatResponse =
        conn.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb("m-1", 0));
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(
        r.member_id.as_deref().map(|m| m.to_string()),
        Some("m-1".into())
    );
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 500);
    let parts: usize = r
        .assignment
        .unwrap()
        .topic_partitions
        .iter()
        .map(|t| t.partitions.len())
        .sum();
    assert_eq!(parts, 3);
    // v1 needs a member id; v0 gets one from the broker.
    let r: ConsumerGroupHeartbeatResponse =
        conn.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb("", 0));
    assert_eq!(r.error_code, 42, "INVALID_REQUEST");
    let r: ConsumerGroupHeartbeatResponse =
        conn.call(ApiKey::ConsumerGroupHeartbeat, 0, &hb("", 0));
    assert_eq!(r.error_code, 0);
    let v0_member = r.member_id.unwrap().to_string();
    assert!(!v0_member.is_empty());
    // Fenced: an epoch the member never had.
    let r: ConsumerGroupHeartbeatResponse = conn.call(
        ApiKey::ConsumerGroupHeartbeat,
        1,
        &hb("m-1", 9).with_topic_partitions(None),
    );
    assert_eq!(r.error_code, 110, "FENCED_MEMBER_EPOCH");
    // Regex subscriptions are refused with a message, never ignored.
    let r: ConsumerGroupHeartbeatResponse = conn.call(
        ApiKey::ConsumerGroupHeartbeat,
        1,
        &hb("m-r", 0)
            .with_subscribed_topic_names(Some(vec![]))
            .with_subscribed_topic_regex(Some(s("wire-.*"))),
    );
    assert_eq!(r.error_code, 42, "INVALID_REQUEST");
    assert!(r.error_message.unwrap().contains("regular expression"));

    // A classic member cannot join it; classic requests do not find it.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("wire-g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))]);
    let r: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(r.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");
    let r: HeartbeatResponse = conn.call(
        ApiKey::Heartbeat,
        4,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s("wire-g")))
            .with_member_id(s("m-1"))
            .with_generation_id(1),
    );
    assert_eq!(r.error_code, 69, "GROUP_ID_NOT_FOUND");

    // ConsumerGroupDescribe, DescribeGroups, ListGroups (type filter).
    let r: ConsumerGroupDescribeResponse = conn.call(
        ApiKey::ConsumerGroupDescribe,
        1,
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(s("wire-g")), GroupId(s("nope"))]),
    );
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0);
    assert_eq!(
        g.group_state.to_string(),
        "Reconciling",
        "the v0 member waits for m-1's partitions"
    );
    assert_eq!(g.assignor_name.to_string(), "uniform");
    assert_eq!(g.members.len(), 2);
    assert_eq!(g.group_epoch, 2);
    let m1 = g
        .members
        .iter()
        .find(|m| m.member_id.to_string() == "m-1")
        .unwrap();
    assert_eq!(m1.member_epoch, 1);
    assert_eq!(
        m1.assignment.topic_partitions[0].topic_name.to_string(),
        "wire-t"
    );
    assert_eq!(r.groups[1].error_code, 69, "GROUP_ID_NOT_FOUND");
    let r: DescribeGroupsResponse = conn.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("wire-g"))]),
    );
    assert_eq!(r.groups[0].protocol_type.to_string(), "consumer");
    assert_eq!(r.groups[0].members.len(), 2);
    let listed = |types: Vec<&str>| -> Vec<(String, String)> {
        let r: ListGroupsResponse = Conn::new(&addr).call(
            ApiKey::ListGroups,
            5,
            &ListGroupsRequest::default().with_types_filter(types.into_iter().map(s).collect()),
        );
        r.groups
            .iter()
            .map(|g| (g.group_id.to_string(), g.group_type.to_string()))
            .collect()
    };
    assert_eq!(
        listed(vec!["consumer"]),
        vec![("wire-g".to_string(), "consumer".to_string())]
    );
    assert!(listed(vec!["classic"]).is_empty());

    // Both members leave: the group is Empty and a classic group may take the id.
    for m in ["m-1", v0_member.as_str()] {
        let r: ConsumerGroupHeartbeatResponse = conn.call(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            &hb(m, -1)
                .with_subscribed_topic_names(None)
                .with_topic_partitions(None),
        );
        assert_eq!((r.error_code, r.member_epoch), (0, -1));
    }
    let r: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 5, &join.with_member_id(s("")));
    assert_eq!(r.error_code, 0, "an empty consumer group gives its id up");
    let r: ConsumerGroupHeartbeatResponse =
        conn.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb("m-2", 0));
    assert_eq!(
        r.error_code, 69,
        "a classic group with members: GROUP_ID_NOT_FOUND"
    );
}
