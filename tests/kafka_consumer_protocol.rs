//! The consumer group protocol of KIP-848 (`group.protocol=consumer`,
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe) through a real client
//! (librdkafka 2.12, via the `rdkafka` crate) and hand-built requests:
//! - two consumers in one group share a 4-partition topic, each message
//!   read once; one leaves (close) and the other takes every partition and
//!   reads the rest from the committed offsets;
//! - a broker restart (SIGTERM, then kill -9) keeps the group: its epoch,
//!   members, member epochs and assignments are as before, the running
//!   consumers carry on without rejoining and with no message read twice,
//!   and a fresh member starts from the committed offsets;
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

/// On a failing test, the broker's group log lines (why a rebalance came),
/// read from its log file (so the broker may be restarted meanwhile).
struct GroupLogOnPanic(std::path::PathBuf);

impl GroupLogOnPanic {
    fn of(b: &BrokerProc) -> Self {
        GroupLogOnPanic(b.stderr_path.clone())
    }
}

impl Drop for GroupLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            for l in log.lines().filter(|l| l.contains("group")) {
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
    let _log = GroupLogOnPanic::of(&b);
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

/// A consumer group as ConsumerGroupDescribe shows it: group epoch,
/// assignment epoch, state, and per member id its epoch, its assignment
/// and its target (topic, partitions).
/// (topic, partition) pairs.
type Parts = BTreeSet<(String, i32)>;

#[derive(Debug, Clone, PartialEq)]
struct Described {
    group_epoch: i32,
    assignment_epoch: i32,
    state: String,
    members: BTreeMap<String, (i32, Parts, Parts)>,
}

fn describe(addr: &str, group: &str) -> Described {
    let r: ConsumerGroupDescribeResponse = Conn::new(addr).call(
        ApiKey::ConsumerGroupDescribe,
        1,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]),
    );
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0, "{:?}", g.error_message);
    let parts = |a: &consumer_group_describe_response::Assignment| {
        a.topic_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic_name.to_string(), *p)))
            .collect::<BTreeSet<_>>()
    };
    Described {
        group_epoch: g.group_epoch,
        assignment_epoch: g.assignment_epoch,
        state: g.group_state.to_string(),
        members: g
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    (
                        m.member_epoch,
                        parts(&m.assignment),
                        parts(&m.target_assignment),
                    ),
                )
            })
            .collect(),
    }
}

/// Issue 16: a consumer-protocol group survives a broker restart, SIGTERM
/// and then kill -9: right after each restart ConsumerGroupDescribe shows
/// the same group epoch, members, member epochs and assignments; the two
/// running consumers carry on with no rejoin (the broker logs no
/// membership change), every message is read once over both; a fresh
/// member at the end starts from the committed offsets.
#[test]
fn a_restart_keeps_the_group_epochs_and_assignments_and_consumers_carry_on() {
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
    let _log = GroupLogOnPanic::of(&b);
    let (topic, group) = ("kip848-restart", "kip848-restart-g");
    b.create_topic(topic, 4);
    let a = consumer(&kafka, group);
    let c = consumer(&kafka, group);
    a.subscribe(&[topic]).unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut seen = vec![Seen::new(), Seen::new()];
    poll_until(&[&a, &c], &mut seen, "two partitions each", |cs, _| {
        cs.iter().all(|c| assigned(c).len() == 2)
    });
    let mut produced = 0;
    for kill in [false, true] {
        produce(&kafka, topic, produced, produced + 200);
        produced += 200;
        poll_until(&[&a, &c], &mut seen, "every message so far", |_, s| {
            s.iter().map(|s| s.len()).sum::<usize>() >= produced
        });
        a.commit_consumer_state(CommitMode::Sync)
            .expect("a commits");
        c.commit_consumer_state(CommitMode::Sync)
            .expect("c commits");
        // Both members reconciled (each acknowledges at its next heartbeat).
        let deadline = Instant::now() + WAIT;
        let before = loop {
            let d = describe(&kafka, group);
            if d.state == "Stable" {
                break d;
            }
            assert!(Instant::now() < deadline, "group not Stable: {d:?}");
            poll_until(&[&a, &c], &mut seen, "a heartbeat", |_, _| true);
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(before.members.len(), 2);
        let log_at = b.plain_log().len();
        if kill {
            b.kill9();
        } else {
            assert_eq!(b.stop(), Some(0));
        }
        b.restart();
        // Before any member's heartbeat could change it: as stored.
        let after = describe(&kafka, group);
        assert_eq!(after, before, "kill -9: {kill}");
        // The consumers carry on: new messages, each read once.
        produce(&kafka, topic, produced, produced + 200);
        produced += 200;
        poll_until(&[&a, &c], &mut seen, "the new messages", |_, s| {
            s.iter().map(|s| s.len()).sum::<usize>() >= produced
        });
        let both: BTreeSet<&String> = seen[0].keys().chain(seen[1].keys()).collect();
        assert_eq!(
            both.len(),
            produced,
            "kill -9: {kill}: no message read by both consumers"
        );
        // Still the same epochs: no member rejoined, none was fenced.
        let later = describe(&kafka, group);
        assert_eq!(
            (later.group_epoch, &later.members),
            (before.group_epoch, &before.members),
            "kill -9: {kill}"
        );
        let log = b.plain_log()[log_at..].to_string();
        assert!(log.contains("kafka: consumer group restored"), "{log}");
        assert!(
            !log.contains("heartbeat changed the group") && !log.contains("heartbeat refused"),
            "kill -9: {kill}: the group changed after the restart:\n{log}"
        );
    }
    a.commit_consumer_state(CommitMode::Sync)
        .expect("a commits");
    c.commit_consumer_state(CommitMode::Sync)
        .expect("c commits");
    drop(a);
    drop(c);
    // A fresh member of the group starts at the committed offsets: it
    // reads only what is produced now.
    let fresh = consumer(&kafka, group);
    fresh.subscribe(&[topic]).unwrap();
    let mut seen_fresh = vec![Seen::new()];
    poll_until(&[&fresh], &mut seen_fresh, "an assignment", |cs, _| {
        assigned(cs[0]).len() == 4
    });
    produce(&kafka, topic, produced, produced + 10);
    poll_until(&[&fresh], &mut seen_fresh, "the 10 newest", |_, s| {
        s[0].len() >= 10
    });
    std::thread::sleep(Duration::from_millis(500));
    poll_until(&[&fresh], &mut seen_fresh, "nothing more", |_, _| true);
    let want: BTreeSet<String> = (produced..produced + 10).map(|i| format!("v{i}")).collect();
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
