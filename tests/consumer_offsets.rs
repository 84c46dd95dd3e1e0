//! `__consumer_offsets` in Kafka's record format, and consumer groups that
//! survive broker restarts (issue 16, items 4 and 5), through a real broker
//! process and librdkafka (the `rdkafka` crate):
//! - a group's generation and assignment survive a SIGTERM restart and a
//!   kill -9 restart with no rebalance, every message is delivered once,
//!   and the committed offsets are exact;
//! - the records of `__consumer_offsets`, fetched like any topic, decode
//!   with a decoder written here from Kafka's schemas (not shardlog's
//!   encoder): offset commits, the group's membership, and DeleteGroups'
//!   tombstones;
//! - the records of a consumer-protocol (KIP-848) group (key types 3 to 8)
//!   decode with a reader written here from Kafka 4.0's schemas: its epochs,
//!   member, target and current assignment, and a leaving member's
//!   tombstones in Kafka's order;
//! - a data directory written by the broker before this format (the JSON
//!   encoding, groups placed by fnv1a) keeps its committed offsets, which
//!   are rewritten in Kafka's format at the next commit.
//!
//! The layout is in docs/consumer-offsets.md.

mod common;

use common::BrokerProc;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Every rebalance event a consumer saw: ("assign" | "revoke" | "error", partitions).
#[derive(Clone, Default)]
struct Rebalances(Arc<Mutex<Vec<Event>>>);

/// ("assign" | "revoke" | "error", partitions).
type Event = (&'static str, Vec<i32>);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let ev = match r {
            Rebalance::Assign(t) => (
                "assign",
                t.elements().iter().map(|e| e.partition()).collect(),
            ),
            Rebalance::Revoke(t) => (
                "revoke",
                t.elements().iter().map(|e| e.partition()).collect(),
            ),
            Rebalance::Error(_) => ("error", Vec::new()),
        };
        self.0.lock().unwrap().push(ev);
    }
}

fn consumer(bootstrap: &str, group: &str) -> (BaseConsumer<Rebalances>, Rebalances) {
    let ctx = Rebalances::default();
    let c = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(ctx.clone())
        .expect("consumer");
    (c, ctx)
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, n: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for i in 0..n {
        let v = format!("v{i}");
        p.send(
            BaseRecord::<(), _>::to(topic)
                .payload(&v)
                .partition(i as i32 % partitions),
        )
        .expect("queued");
    }
    p.flush(Duration::from_secs(30)).expect("produced");
}

/// The value of `name=` on each log line with `what` about `group`.
fn logged(b: &BrokerProc, what: &str, group: &str, name: &str) -> Vec<String> {
    b.plain_log()
        .lines()
        .filter(|l| l.contains(what) && l.contains(&format!("group={group} ")))
        .filter_map(|l| {
            let at = l.find(&format!(" {name}="))? + name.len() + 2;
            Some(l[at..].chars().take_while(|c| !c.is_whitespace()).collect())
        })
        .collect()
}

/// Poll for messages until `n` more arrived, committing each synchronously
/// (a commit that fails while the broker restarts is retried). Transient
/// errors (the broker is away) are tolerated; returns (partition, offset)
/// of each delivery.
fn consume_committing(c: &BaseConsumer<Rebalances>, n: usize) -> Vec<(i32, i64)> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out: {} of {n} messages",
            got.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got.push((m.partition(), m.offset()));
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1))
                .unwrap();
            while let Err(e) = c.commit(&tpl, CommitMode::Sync) {
                assert!(Instant::now() < deadline, "commit never succeeded: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    got
}

/// Committed offsets of the consumer's group for `topic` partitions 0..n.
fn committed(c: &BaseConsumer<Rebalances>, topic: &str, n: i32) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(t) => {
                return t
                    .elements()
                    .iter()
                    .map(|e| {
                        let o = match e.offset() {
                            Offset::Offset(o) => o,
                            _ => -1,
                        };
                        (e.partition(), o)
                    })
                    .collect()
            }
            Err(e) => assert!(Instant::now() < deadline, "committed offsets: {e}"),
        }
    }
}

#[test]
fn a_group_keeps_its_generation_and_offsets_across_restarts() {
    let mut b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    let (topic, group) = ("dur-t", "dur-g");
    b.create_topic(topic, 2);
    produce(&addr, topic, 2, 60);
    let (c, events) = consumer(&addr, group);
    c.subscribe(&[topic]).unwrap();
    let mut seen = consume_committing(&c, 20);
    let generation = logged(&b, "group rebalanced", group, "generation");
    assert_eq!(generation.len(), 1, "one generation formed");
    let before = committed(&c, topic, 2);

    b.stop();
    b.restart();
    // The committed offsets are exactly those committed before.
    assert_eq!(committed(&c, topic, 2), before, "after SIGTERM");
    seen.extend(consume_committing(&c, 20));
    let before = committed(&c, topic, 2);

    b.kill9();
    b.restart();
    assert_eq!(committed(&c, topic, 2), before, "after kill -9");
    seen.extend(consume_committing(&c, 20));
    // Heartbeats keep being accepted: no rebalance comes later either.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            panic!("no more messages, got {}@{}", m.partition(), m.offset());
        }
    }

    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a message delivered twice: {seen:?}"
    );
    assert_eq!(seen.len(), 60);
    assert_eq!(committed(&c, topic, 2), BTreeMap::from([(0, 30), (1, 30)]));
    let moves: Vec<_> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, p)| *k == "error" || !p.is_empty())
        .cloned()
        .collect();
    assert_eq!(moves.len(), 1, "one assignment, never revoked: {moves:?}");
    assert_eq!(
        logged(&b, "group rebalanced", group, "generation"),
        generation,
        "no generation formed after the restarts"
    );
    assert_eq!(
        logged(&b, "group restored", group, "generation"),
        vec![generation[0].clone(), generation[0].clone()],
        "each start restored the group at its generation"
    );
}

// ---- an independent reader of Kafka's __consumer_offsets records ----------
// Written from Kafka's schemas (OffsetCommitKey/Value, GroupMetadataKey/
// Value and the ConsumerGroup*Key/Value records in Kafka's
// group-coordinator module), not from shardlog's encoder.

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn nstr(&mut self) -> Option<String> {
        let n = self.i16();
        (n >= 0).then(|| String::from_utf8(self.take(n as usize).to_vec()).unwrap())
    }
    fn str(&mut self) -> String {
        self.nstr().expect("a non-null string")
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.i32();
        self.take(n.max(0) as usize).to_vec()
    }
    // Flexible versions: unsigned varints, lengths as N + 1 (0: null).
    fn uvarint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..).step_by(7) {
            let b = self.take(1)[0];
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return v;
            }
        }
        unreachable!()
    }
    fn compact_nstr(&mut self) -> Option<String> {
        let n = self.uvarint();
        (n > 0).then(|| String::from_utf8(self.take(n as usize - 1).to_vec()).unwrap())
    }
    fn compact_str(&mut self) -> String {
        self.compact_nstr().expect("a non-null compact string")
    }
    fn compact_len(&mut self) -> usize {
        let n = self.uvarint();
        assert!(n > 0, "a null array where the schema has none");
        n as usize - 1
    }
    fn uuid(&mut self) -> [u8; 16] {
        self.take(16).try_into().unwrap()
    }
    fn tagged_fields(&mut self) {
        for _ in 0..self.uvarint() {
            let _tag = self.uvarint();
            let n = self.uvarint() as usize;
            self.take(n);
        }
    }
    /// `[]TopicPartitions`: uuid, `[]int32`, tagged fields.
    fn id_partitions(&mut self) -> Vec<([u8; 16], Vec<i32>)> {
        (0..self.compact_len())
            .map(|_| {
                let id = self.uuid();
                let ps = (0..self.compact_len()).map(|_| self.i32()).collect();
                self.tagged_fields();
                (id, ps)
            })
            .collect()
    }
}

/// A consumer-protocol group record's value, by key type (3 to 8).
#[derive(Debug, Clone, PartialEq)]
enum CgValue {
    /// 3: group epoch.
    Epoch(i32),
    /// 4: (topic id, name, partitions) per subscribed topic.
    Topics(Vec<([u8; 16], String, i32)>),
    /// 5: (client id, subscribed topic names, rebalance timeout, server assignor).
    Member(String, Vec<String>, i32, Option<String>),
    /// 6: assignment epoch.
    AssignmentEpoch(i32),
    /// 7: target partitions.
    Target(Vec<([u8; 16], Vec<i32>)>),
    /// 8: (member epoch, previous epoch, state, assigned, pending revocation).
    Current(
        i32,
        i32,
        i8,
        Vec<([u8; 16], Vec<i32>)>,
        Vec<([u8; 16], Vec<i32>)>,
    ),
}

fn decode_cg_value(kind: i16, v: &[u8]) -> CgValue {
    let mut v = In(v);
    assert_eq!(v.i16(), 0, "value version 0");
    let out = match kind {
        3 => CgValue::Epoch(v.i32()),
        4 => CgValue::Topics(
            (0..v.compact_len())
                .map(|_| {
                    let id = v.uuid();
                    let name = v.compact_str();
                    let n = v.i32();
                    for _ in 0..v.compact_len() {
                        let _partition = v.i32();
                        for _ in 0..v.compact_len() {
                            v.compact_str();
                        }
                        v.tagged_fields();
                    }
                    v.tagged_fields();
                    (id, name, n)
                })
                .collect(),
        ),
        5 => {
            let _instance = v.compact_nstr();
            let _rack = v.compact_nstr();
            let client = v.compact_str();
            let _host = v.compact_str();
            let topics = (0..v.compact_len()).map(|_| v.compact_str()).collect();
            assert_eq!(v.compact_nstr(), None, "no regex");
            CgValue::Member(client, topics, v.i32(), v.compact_nstr())
        }
        6 => CgValue::AssignmentEpoch(v.i32()),
        7 => CgValue::Target(v.id_partitions()),
        8 => {
            let (epoch, previous) = (v.i32(), v.i32());
            let state = v.take(1)[0] as i8;
            CgValue::Current(epoch, previous, state, v.id_partitions(), v.id_partitions())
        }
        k => panic!("key type {k}"),
    };
    v.tagged_fields();
    assert!(v.0.is_empty(), "the value ends with its fields");
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Rec {
    /// (group, topic, partition) -> Some((offset, leader epoch, metadata)) or a tombstone.
    Offset(String, String, i32, Option<(i64, i32, String)>),
    /// group -> Some((protocol type, generation, protocol, leader, members)) or a tombstone.
    Group(String, Option<GroupMeta>),
    /// (key type 3..=8, group, member for 5/7/8) -> value or a tombstone.
    Cg(i16, String, Option<String>, Option<CgValue>),
}

#[derive(Debug, Clone, PartialEq)]
struct GroupMeta {
    protocol_type: String,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    /// (member id, client id, session timeout, subscription, assignment)
    members: Vec<MemberMeta>,
}

/// (member id, client id, session timeout, subscription, assignment)
type MemberMeta = (String, String, i32, Vec<u8>, Vec<u8>);

fn decode(key: &[u8], value: Option<&[u8]>) -> Rec {
    let mut k = In(key);
    match k.i16() {
        0 | 1 => {
            let (g, t, p) = (k.str(), k.str(), k.i32());
            assert!(k.0.is_empty(), "key ends with its fields");
            let v = value.map(|v| {
                let mut v = In(v);
                let version = v.i16();
                assert!((0..=3).contains(&version), "offset value version {version}");
                let offset = v.i64();
                let epoch = if version >= 3 { v.i32() } else { -1 };
                let meta = v.str();
                let _commit_ts = v.i64();
                if version == 1 {
                    let _expire_ts = v.i64();
                }
                assert!(v.0.is_empty());
                (offset, epoch, meta)
            });
            Rec::Offset(g, t, p, v)
        }
        2 => {
            let g = k.str();
            assert!(k.0.is_empty());
            let v = value.map(|v| {
                let mut v = In(v);
                let version = v.i16();
                assert!((0..=3).contains(&version), "group value version {version}");
                let protocol_type = v.str();
                let generation = v.i32();
                let protocol = v.nstr();
                let leader = v.nstr();
                if version >= 2 {
                    let _state_ts = v.i64();
                }
                let n = v.i32();
                let members = (0..n)
                    .map(|_| {
                        let id = v.str();
                        if version >= 3 {
                            let _instance = v.nstr();
                        }
                        let client = v.str();
                        let _host = v.str();
                        if version >= 1 {
                            let _rebalance_timeout = v.i32();
                        }
                        let session = v.i32();
                        (id, client, session, v.bytes(), v.bytes())
                    })
                    .collect();
                assert!(v.0.is_empty());
                GroupMeta {
                    protocol_type,
                    generation,
                    protocol,
                    leader,
                    members,
                }
            });
            Rec::Group(g, v)
        }
        t @ 3..=8 => {
            let g = k.str();
            let member = matches!(t, 5 | 7 | 8).then(|| k.str());
            assert!(k.0.is_empty(), "key ends with its fields");
            Rec::Cg(t, g, member, value.map(|v| decode_cg_value(t, v)))
        }
        v => panic!("unknown key version {v}"),
    }
}

/// Every record of `__consumer_offsets`, fetched through the Kafka listener.
fn read_offsets_topic(bootstrap: &str) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "offsets-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(OFFSETS_TOPIC), Duration::from_secs(10))
        .unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    assert!(n > 0, "{OFFSETS_TOPIC} has partitions");
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..n {
        let (_, hi) = c
            .fetch_watermarks(OFFSETS_TOPIC, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, hi);
        tpl.add_partition_offset(OFFSETS_TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = (0..n).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + WAIT;
    while next.iter().any(|(p, o)| *o < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "reading {OFFSETS_TOPIC}: at {next:?} of {ends:?}"
        );
        if let Some(r) = c.poll(Duration::from_millis(100)) {
            let m = r.expect("fetch of the offsets topic");
            let key = m.key().expect("a key");
            // Records of the old encoding (keyed by the group id's UTF-8)
            // are not Kafka's; a Kafka key starts with a version 0..=8.
            if key.first() == Some(&0) {
                out.push(decode(key, m.payload()));
            }
            next.insert(m.partition(), m.offset() + 1);
        }
    }
    out
}

/// Kafka's partition for a group: abs(Java's String.hashCode) % n.
fn kafka_partition(group: &str, n: i32) -> i32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    (if h == i32::MIN { 0 } else { h.abs() }) % n
}

#[test]
fn offsets_topic_records_decode_with_kafkas_schemas() {
    let b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    let (topic, group) = ("fmt-t", "fmt-g");
    b.create_topic(topic, 2);
    produce(&addr, topic, 2, 6);
    let (c, _) = consumer(&addr, group);
    c.subscribe(&[topic]).unwrap();
    consume_committing(&c, 6);
    let recs = read_offsets_topic(&addr);

    // The last commit of each partition: offset 3 (three messages each).
    let last = |p: i32| {
        recs.iter()
            .rev()
            .find_map(|r| match r {
                Rec::Offset(g, t, q, v) if g == group && t == topic && *q == p => Some(v.clone()),
                _ => None,
            })
            .flatten()
    };
    assert_eq!(last(0).map(|v| v.0), Some(3));
    assert_eq!(last(1).map(|v| v.0), Some(3));
    assert_eq!(
        last(0).map(|v| v.2),
        Some(String::new()),
        "no metadata is \"\""
    );
    // The group's membership: the consumer leads its generation with the
    // range assignor and holds both partitions.
    let meta = recs
        .iter()
        .rev()
        .find_map(|r| match r {
            Rec::Group(g, Some(m)) if g == group => Some(m.clone()),
            _ => None,
        })
        .expect("a group metadata record");
    assert_eq!(meta.protocol_type, "consumer");
    let generation = logged(&b, "group rebalanced", group, "generation");
    assert_eq!(meta.generation.to_string(), generation[0]);
    assert_eq!(meta.members.len(), 1);
    let (member, _client, session, subscription, assignment) = &meta.members[0];
    assert_eq!(meta.leader.as_ref(), Some(member));
    assert!(meta.protocol.is_some());
    assert_eq!(*session, 10_000);
    // ConsumerProtocolSubscription/Assignment name the topic.
    let has = |bytes: &[u8]| bytes.windows(topic.len()).any(|w| w == topic.as_bytes());
    assert!(has(subscription) && has(assignment));

    // The group's records sit in Kafka's partition for the group.
    let n = {
        let md = c
            .fetch_metadata(Some(OFFSETS_TOPIC), Duration::from_secs(10))
            .unwrap();
        md.topics()[0].partitions().len() as i32
    };
    let fetch_part =
        |want: &dyn Fn(&Rec) -> bool| -> BTreeSet<i32> { read_partitions(&addr, n, want) };
    assert_eq!(
        fetch_part(&|r| matches!(r, Rec::Offset(g, ..) | Rec::Group(g, _) if g == group)),
        BTreeSet::from([kafka_partition(group, n)])
    );

    // DeleteGroups (once the member left): tombstones for each offset and
    // for the group.
    c.unsubscribe();
    drop(c);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .unwrap();
    let rt = std::thread::spawn(move || {
        futures::executor::block_on(admin.delete_groups(&[group], &AdminOptions::new()))
    });
    let res = rt.join().unwrap().expect("delete_groups");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let recs = read_offsets_topic(&addr);
    let tail: Vec<&Rec> = recs
        .iter()
        .filter(|r| matches!(r, Rec::Offset(g, ..) | Rec::Group(g, _) if g == group))
        .collect();
    let n = tail.len();
    assert!(n >= 3);
    let ends: BTreeSet<String> = tail[n - 3..].iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(
        ends,
        BTreeSet::from([
            format!("{:?}", Rec::Offset(group.into(), topic.into(), 0, None)),
            format!("{:?}", Rec::Offset(group.into(), topic.into(), 1, None)),
            format!("{:?}", Rec::Group(group.into(), None)),
        ]),
        "the last records of the group are its tombstones"
    );
}

/// A consumer-protocol (KIP-848) group's records, read back through the
/// Kafka listener and decoded with the reader above (Kafka 4.0's
/// ConsumerGroup* schemas): a member joins (hand-built heartbeats, v1) and
/// gets both partitions; its acknowledging heartbeat changes nothing and
/// writes nothing; it leaves, which writes its three tombstones (current
/// assignment, target, metadata, in Kafka's order) before the new group
/// epoch; all in the group's partition.
#[test]
fn consumer_protocol_group_records_decode_with_kafkas_schemas() {
    use common::kafka::{s, tn, Conn};
    use kafka_protocol::messages::*;
    let b = BrokerProc::start(&[]);
    let addr = b.kafka.clone().unwrap();
    let (topic, group) = ("cp-fmt-t", "cp-fmt-g");
    b.create_topic(topic, 2);
    let mut c = Conn::new(&addr);
    let hb = |epoch: i32, owned: Option<Vec<consumer_group_heartbeat_request::TopicPartitions>>| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s("m-1"))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
            .with_subscribed_topic_names((epoch == 0).then(|| vec![tn(topic)]))
            .with_topic_partitions(owned)
    };
    let r: ConsumerGroupHeartbeatResponse =
        c.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb(0, Some(vec![])));
    assert_eq!(
        (r.error_code, r.member_epoch),
        (0, 1),
        "{:?}",
        r.error_message
    );
    let given = &r.assignment.expect("an assignment").topic_partitions[0];
    let id: [u8; 16] = *given.topic_id.as_bytes();
    assert_eq!(given.partitions, vec![0, 1]);
    let owned = consumer_group_heartbeat_request::TopicPartitions::default()
        .with_topic_id(given.topic_id)
        .with_partitions(vec![0, 1]);
    let before_ack = read_offsets_topic(&addr).len();
    let r: ConsumerGroupHeartbeatResponse =
        c.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb(1, Some(vec![owned])));
    assert_eq!((r.error_code, r.member_epoch), (0, 1));
    assert_eq!(
        read_offsets_topic(&addr).len(),
        before_ack,
        "a heartbeat that changes nothing writes nothing"
    );
    let recs = read_offsets_topic(&addr);
    let latest = |t: i16, member: Option<&str>| {
        recs.iter()
            .rev()
            .find_map(|r| match r {
                Rec::Cg(k, g, m, v) if *k == t && g == group && m.as_deref() == member => {
                    Some(v.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no record of type {t} for {member:?}: {recs:?}"))
    };
    assert_eq!(latest(3, None), Some(CgValue::Epoch(1)));
    assert_eq!(
        latest(4, None),
        Some(CgValue::Topics(vec![(id, topic.to_string(), 2)]))
    );
    assert_eq!(
        latest(5, Some("m-1")),
        Some(CgValue::Member(
            "shardlog-test".into(),
            vec![topic.to_string()],
            30_000,
            None
        ))
    );
    assert_eq!(latest(6, None), Some(CgValue::AssignmentEpoch(1)));
    assert_eq!(
        latest(7, Some("m-1")),
        Some(CgValue::Target(vec![(id, vec![0, 1])]))
    );
    assert_eq!(
        latest(8, Some("m-1")),
        Some(CgValue::Current(1, 0, 0, vec![(id, vec![0, 1])], vec![])),
        "epoch 1 (previous 0), stable, owning both partitions"
    );

    // The member leaves: its records' tombstones, then the group's epoch 2.
    let r: ConsumerGroupHeartbeatResponse =
        c.call(ApiKey::ConsumerGroupHeartbeat, 1, &hb(-1, None));
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    let recs = read_offsets_topic(&addr);
    let mine: Vec<(i16, Option<String>, bool)> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Cg(k, g, m, v) if g == group => Some((*k, m.clone(), v.is_some())),
            _ => None,
        })
        .collect();
    let m1 = || Some("m-1".to_string());
    let tail = &mine[mine.len() - 4..];
    assert_eq!(
        tail[..3],
        [(8, m1(), false), (7, m1(), false), (5, m1(), false)],
        "{mine:?}"
    );
    assert_eq!(tail[3], (3, None, true));
    assert_eq!(
        recs.iter().rev().find_map(|r| match r {
            Rec::Cg(3, g, None, v) if g == group => Some(v.clone()),
            _ => None,
        }),
        Some(Some(CgValue::Epoch(2)))
    );
    let n = 8;
    assert_eq!(
        read_partitions(&addr, n, &|r| matches!(r, Rec::Cg(_, g, ..) if g == group)),
        BTreeSet::from([kafka_partition(group, n)])
    );
}

/// Which partitions of the offsets topic hold records for which `want` holds.
fn read_partitions(bootstrap: &str, n: i32, want: &dyn Fn(&Rec) -> bool) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    for p in 0..n {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "offsets-reader")
            .create()
            .unwrap();
        let (_, hi) = c
            .fetch_watermarks(OFFSETS_TOPIC, p, Duration::from_secs(10))
            .unwrap();
        if hi == 0 {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(OFFSETS_TOPIC, p, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut at = 0;
        while at < hi {
            assert!(Instant::now() < deadline);
            if let Some(r) = c.poll(Duration::from_millis(100)) {
                let m = r.unwrap();
                if want(&decode(m.key().unwrap(), m.payload())) {
                    found.insert(p);
                }
                at = m.offset() + 1;
            }
        }
    }
    found
}

/// Extract `tests/data/legacy-offsets.tar.gz` (a data directory the broker
/// wrote at 4414c78, before Kafka's format) into `dir`.
fn unpack_legacy(dir: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-offsets.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "unpacking {}", fixture.display());
}

#[test]
fn a_data_dir_in_the_old_encoding_keeps_its_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    unpack_legacy(tmp.path());
    let dir = tmp.path().join("data");
    let mut b = BrokerProc::start_in(&dir, &[]);
    let addr = b.kafka.clone().unwrap();
    let topic = "legacy-t";
    // What the old broker was told (tests/data/make_legacy_offsets.py):
    // group legacy-<i> committed offset 10*i + p on partition p (after a
    // first commit of 1); legacy-3's offset of partition 2 was deleted
    // (OffsetDelete); legacy-gone was deleted (DeleteGroups).
    let expect = |i: i64| -> BTreeMap<i32, i64> {
        (0..3)
            .map(|p| {
                (
                    p,
                    if i == 3 && p == 2 {
                        -1
                    } else {
                        10 * i + p as i64
                    },
                )
            })
            .collect()
    };
    for i in 1..=4 {
        let (c, _) = consumer(&addr, &format!("legacy-{i}"));
        assert_eq!(committed(&c, topic, 3), expect(i), "legacy-{i}");
    }
    let (gone, _) = consumer(&addr, "legacy-gone");
    assert_eq!(
        committed(&gone, topic, 3),
        BTreeMap::from([(0, -1), (1, -1), (2, -1)])
    );
    drop(gone);

    // A new commit of one partition rewrites the group's other offsets in
    // Kafka's format; all survive a restart.
    let (c, _) = consumer(&addr, "legacy-1");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(99))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
    drop(c);
    let recs = read_offsets_topic(&addr);
    let rewritten: BTreeMap<i32, i64> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Offset(g, t, p, Some(v)) if g == "legacy-1" && t == topic => Some((*p, v.0)),
            _ => None,
        })
        .collect();
    assert_eq!(rewritten, BTreeMap::from([(0, 99), (1, 11), (2, 12)]));
    b.kill9();
    b.restart();
    let (c, _) = consumer(&addr, "legacy-1");
    assert_eq!(
        committed(&c, topic, 3),
        BTreeMap::from([(0, 99), (1, 11), (2, 12)])
    );
    let (c2, _) = consumer(&addr, "legacy-2");
    assert_eq!(committed(&c2, topic, 3), expect(2));
}
