//! A real Kafka client (librdkafka, through the `rdkafka` crate) against
//! the Kafka listener: codecs, key placement, idempotent retries, consumer
//! groups with rebalances and a killed member, committed offsets across a
//! broker restart, and interop with the native protocol.
//!
//! Every wait is bounded; everything talks to 127.0.0.1 only.

mod common;

use common::BrokerProc;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Delivery reports: (partition, offset) per success, and the failures.
#[derive(Clone, Default)]
struct Reports {
    ok: Arc<Mutex<Vec<(i32, i64)>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => self.ok.lock().unwrap().push((m.partition(), m.offset())),
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> (BaseProducer<Reports>, Reports) {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("api.version.request", "true");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let reports = Reports::default();
    let p = c.create_with_context(reports.clone()).expect("producer");
    (p, reports)
}

/// Send with back-pressure handling, then flush; every message must be acknowledged.
fn send_all(
    p: &BaseProducer<Reports>,
    reports: &Reports,
    records: Vec<BaseRecord<'_, [u8], [u8]>>,
) {
    let n = records.len();
    let before = reports.ok.lock().unwrap().len();
    for mut r in records {
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(WAIT).expect("flush");
    let failed = reports.failed.lock().unwrap();
    assert!(failed.is_empty(), "delivery failures: {failed:?}");
    assert_eq!(
        reports.ok.lock().unwrap().len() - before,
        n,
        "every message acknowledged"
    );
}

fn consumer(bootstrap: &str, group: Option<&str>, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    if let Some(g) = group {
        c.set("group.id", g)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: Option<i64>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn got(m: &rdkafka::message::BorrowedMessage<'_>) -> Got {
    Got {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().unwrap_or_default().to_vec(),
        timestamp: m.timestamp().to_millis(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_string(), x.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Read `n` messages from the start of every listed partition (assigned,
/// not subscribed: the group id is librdkafka's requirement, never joined).
fn read_n(bootstrap: &str, topic: &str, partitions: &[i32], n: usize) -> Vec<Got> {
    let c = consumer(bootstrap, None, &[("group.id", "assign-only")]);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} messages from {topic}",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(got(&m.expect("consume")));
        }
    }
    out
}

/// Prints the end of the broker's log when a test fails.
struct LogOnPanic(std::path::PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let _ = std::fs::write(std::env::temp_dir().join("kafka-rdkafka-broker.log"), &log);
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- broker log (last 60 lines) ---");
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

#[test]
fn every_codec_round_trips_through_librdkafka() {
    let b = BrokerProc::start(&[]);
    let kafka = b.kafka.clone().unwrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        b.create_topic(&topic, 1);
        let (p, r) = producer(
            &kafka,
            &[("compression.type", codec), ("batch.num.messages", "50")],
        );
        let base_ts = 1_700_000_000_000i64;
        let records: Vec<(String, String)> = (0..200)
            .map(|i| (format!("key-{i}"), format!("{codec} value {i} ").repeat(5)))
            .collect();
        let heads = OwnedHeaders::new()
            .insert(Header {
                key: "h1",
                value: Some("one"),
            })
            .insert(Header {
                key: "h2",
                value: None::<&str>,
            });
        let sends = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                BaseRecord::to(&topic)
                    .key(k.as_bytes())
                    .payload(v.as_bytes())
                    .timestamp(base_ts + i as i64)
                    .headers(heads.clone())
            })
            .collect();
        send_all(&p, &r, sends);
        let back = read_n(&kafka, &topic, &[0], 200);
        for (i, g) in back.iter().enumerate() {
            assert_eq!(g.offset, i as i64, "{codec}");
            assert_eq!(g.key.as_deref(), Some(records[i].0.as_bytes()), "{codec}");
            assert_eq!(g.value, records[i].1.as_bytes(), "{codec}");
            assert_eq!(g.timestamp, Some(base_ts + i as i64), "{codec}");
            assert_eq!(
                g.headers,
                vec![
                    ("h1".to_string(), Some(b"one".to_vec())),
                    ("h2".to_string(), None)
                ],
                "{codec}"
            );
        }
    }
}

#[test]
fn keys_land_where_the_java_partitioner_puts_them() {
    let b = BrokerProc::start(&[]);
    let kafka = b.kafka.clone().unwrap();
    b.create_topic("keyed", 7);
    let (p, r) = producer(&kafka, &[("partitioner", "murmur2_random")]);
    let keys: Vec<String> = (0..300).map(|i| format!("customer-{i}")).collect();
    let sends = keys
        .iter()
        .map(|k| {
            BaseRecord::to("keyed")
                .key(k.as_bytes())
                .payload(k.as_bytes())
        })
        .collect();
    send_all(&p, &r, sends);
    let back = read_n(&kafka, "keyed", &(0..7).collect::<Vec<_>>(), 300);
    let mut used = BTreeSet::new();
    for g in back {
        let key = g.key.unwrap();
        let want = shardlog::client::partitioner::partition_for_key(&key, 7);
        assert_eq!(
            g.partition as u32,
            want,
            "key {}",
            String::from_utf8_lossy(&key)
        );
        used.insert(g.partition);
    }
    assert_eq!(used.len(), 7, "keys spread over every partition");
}

/// A TCP proxy that forwards Kafka frames and, for the first `drops`
/// Produce responses, closes the client connection instead of forwarding:
/// the broker appended the batch, the client never hears of it and retries.
fn dropping_proxy(listener: TcpListener, broker: String, drops: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(upstream) = TcpStream::connect(&broker) else {
                return;
            };
            let apis: Arc<Mutex<std::collections::VecDeque<i16>>> = Default::default();
            let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
            let (mut u_in, mut u_out) = (upstream.try_clone().unwrap(), upstream);
            let a = apis.clone();
            std::thread::spawn(move || {
                while let Some(f) = read_frame(&mut c_in) {
                    let key = i16::from_be_bytes([f[4], f[5]]);
                    let acks = if key == 0 { produce_acks(&f) } else { 1 };
                    if acks != 0 {
                        a.lock().unwrap().push_back(key);
                    }
                    if u_out.write_all(&f).is_err() {
                        break;
                    }
                }
                let _ = u_out.shutdown(std::net::Shutdown::Both);
            });
            let drops = drops.clone();
            std::thread::spawn(move || {
                while let Some(f) = read_frame(&mut u_in) {
                    let key = apis.lock().unwrap().pop_front();
                    if key == Some(0)
                        && drops
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                            .is_ok()
                    {
                        break;
                    }
                    if c_out.write_all(&f).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
                let _ = u_in.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = i32::from_be_bytes(len) as usize;
    let mut f = vec![0u8; 4 + n];
    f[..4].copy_from_slice(&len);
    s.read_exact(&mut f[4..]).ok()?;
    Some(f)
}

/// The acks of a Produce request frame (v3+): after the header and the
/// transactional id.
fn produce_acks(f: &[u8]) -> i16 {
    let version = i16::from_be_bytes([f[6], f[7]]);
    let mut at = 4 + 8;
    let client_id_len = i16::from_be_bytes([f[at], f[at + 1]]);
    at += 2 + client_id_len.max(0) as usize;
    if version >= 9 {
        at += 1; // empty tagged fields of header v2
        let n = f[at] as usize; // compact nullable string: 0 = null (short ids only)
        at += 1 + n.saturating_sub(1);
    } else {
        let n = i16::from_be_bytes([f[at], f[at + 1]]);
        at += 2 + n.max(0) as usize;
    }
    i16::from_be_bytes([f[at], f[at + 1]])
}

#[test]
fn idempotent_retries_do_not_duplicate() {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap().to_string();
    let b = BrokerProc::start(&["--advertised-kafka-addr", &proxy_addr]);
    b.create_topic("idem", 3);
    let drops = Arc::new(AtomicUsize::new(3));
    dropping_proxy(proxy, b.kafka.clone().unwrap(), drops.clone());
    let (p, r) = producer(
        &proxy_addr,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("batch.num.messages", "20"),
            ("retry.backoff.ms", "50"),
        ],
    );
    let values: Vec<String> = (0..1000).map(|i| format!("unique-{i}")).collect();
    let sends = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            BaseRecord::to("idem")
                .partition((i % 3) as i32)
                .payload(v.as_bytes())
        })
        .collect();
    send_all(&p, &r, sends);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the proxy dropped produce responses"
    );
    let back = read_n(&b.kafka.clone().unwrap(), "idem", &[0, 1, 2], 1000);
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for g in &back {
        *seen.entry(g.value.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), 1000);
    assert!(seen.values().all(|n| *n == 1), "no duplicates");
    // Nothing beyond the 1000: the retried batches were not appended twice.
    let c = consumer(&b.kafka.clone().unwrap(), None, &[]);
    for part in 0..3 {
        let (lo, hi) = c.fetch_watermarks("idem", part, WAIT).unwrap();
        assert_eq!(
            hi - lo,
            back.iter().filter(|g| g.partition == part).count() as i64
        );
    }
}

/// What a group member saw: messages and its current assignment.
#[derive(Default)]
struct Seen {
    msgs: Mutex<Vec<(i32, i64, String)>>,
    assigned: Mutex<Vec<i32>>,
}

fn group_member(
    bootstrap: String,
    group: &'static str,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<Seen>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let h = std::thread::spawn(move || {
        let c = consumer(
            &bootstrap,
            Some(group),
            &[("auto.commit.interval.ms", "100")],
        );
        c.subscribe(&[topic]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(110);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match c.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                    s.msgs.lock().unwrap().push((m.partition(), m.offset(), v));
                }
                // Transient (a connection lost and re-established): librdkafka recovers.
                Some(Err(e)) => eprintln!("group member: {e}"),
                None => {}
            }
            let a: Vec<i32> = c
                .assignment()
                .map(|t| t.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            *s.assigned.lock().unwrap() = a;
        }
        // Dropping closes the consumer: final commit and LeaveGroup.
    });
    (seen, h)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn produce_values(
    p: &BaseProducer<Reports>,
    r: &Reports,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) {
    let values: Vec<String> = range.map(|i| format!("m{i}")).collect();
    let sends = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            BaseRecord::to(topic)
                .partition(i as i32 % partitions)
                .payload(v.as_bytes())
        })
        .collect();
    send_all(p, r, sends);
}

fn all_values(sets: &[&[(i32, i64, String)]]) -> BTreeSet<String> {
    sets.iter()
        .flat_map(|s| s.iter().map(|(_, _, v)| v.clone()))
        .collect()
}

fn expect_values(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// The child process of `consumer_group_splits_rebalances_and_survives_a_kill`:
/// a group member that prints what it consumes and commits synchronously.
#[test]
fn group_child_process() {
    let Ok(bootstrap) = std::env::var("SHARDLOG_KAFKA_CHILD") else {
        return; // only meaningful when spawned by the group test
    };
    let c = consumer(
        &bootstrap,
        Some("splitters"),
        &[("enable.auto.commit", "false")],
    );
    c.subscribe(&["grp"]).unwrap();
    let out = std::io::stdout();
    let mut last_assigned = String::new();
    let deadline = Instant::now() + Duration::from_secs(100);
    while Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = m.expect("consume");
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            c.commit_message(&m, CommitMode::Sync).expect("commit");
            writeln!(out.lock(), "MSG {} {} {v}", m.partition(), m.offset()).unwrap();
        }
        let a: Vec<String> = c
            .assignment()
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| e.partition().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let a = a.join(",");
        if a != last_assigned {
            writeln!(out.lock(), "ASSIGNED {a}").unwrap();
            last_assigned = a;
        }
        out.lock().flush().unwrap();
    }
}

#[test]
fn consumer_group_splits_rebalances_and_survives_a_kill() {
    let b = BrokerProc::start(&[]);
    let _log = LogOnPanic(b.stderr_path.clone());
    let kafka = b.kafka.clone().unwrap();
    b.create_topic("grp", 4);
    let (p, r) = producer(&kafka, &[]);
    produce_values(&p, &r, "grp", 4, 0..400);
    // Two members split the four partitions.
    let stop_a = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::new(AtomicBool::new(false));
    let (a, ha) = group_member(kafka.clone(), "splitters", "grp", stop_a.clone());
    let (bm, hb) = group_member(kafka.clone(), "splitters", "grp", stop_b.clone());
    wait_until("two members with two partitions each", || {
        let (x, y) = (
            a.assigned.lock().unwrap().clone(),
            bm.assigned.lock().unwrap().clone(),
        );
        let union: BTreeSet<i32> = x.iter().chain(&y).copied().collect();
        x.len() == 2 && y.len() == 2 && union.len() == 4
    });
    wait_until("the first 400 consumed", || {
        all_values(&[&a.msgs.lock().unwrap(), &bm.msgs.lock().unwrap()])
            .is_superset(&expect_values(0..400))
    });
    // B leaves cleanly: A takes everything.
    stop_b.store(true, Ordering::SeqCst);
    hb.join().unwrap();
    wait_until("A owns all four partitions", || {
        a.assigned.lock().unwrap().len() == 4
    });
    produce_values(&p, &r, "grp", 4, 400..600);
    wait_until("A consumed 400..600", || {
        all_values(&[&a.msgs.lock().unwrap()]).is_superset(&expect_values(400..600))
    });
    // C, a separate process, joins and takes two partitions.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "group_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHARDLOG_KAFKA_CHILD", &kafka)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child_lines: Arc<Mutex<Vec<String>>> = Default::default();
    let cl = child_lines.clone();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            cl.lock().unwrap().push(line);
        }
    });
    let child_assigned = || -> Vec<i32> {
        child_lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| l.find("ASSIGNED ").map(|i| &l[i + 9..]))
            .map(|a| {
                a.split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| x.parse().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + WAIT;
    while !(a.assigned.lock().unwrap().len() == 2 && child_assigned().len() == 2) {
        if Instant::now() > deadline {
            panic!(
                "A and C did not split the partitions: A has {:?}, C said {:?}",
                a.assigned.lock().unwrap(),
                child_lines.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let c_parts = child_assigned();
    assert!(c_parts.len() == 2, "C owns two partitions");
    produce_values(&p, &r, "grp", 4, 600..800);
    let child_msgs = || -> Vec<(i32, i64, String)> {
        child_lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.find("MSG ").map(|i| &l[i + 4..]))
            .map(|l| {
                let mut it = l.splitn(3, ' ');
                let p = it.next().unwrap().parse().unwrap();
                let o = it.next().unwrap().parse().unwrap();
                (p, o, it.next().unwrap().to_string())
            })
            .collect()
    };
    wait_until("A and C consumed 600..800", || {
        all_values(&[&a.msgs.lock().unwrap(), &child_msgs()]).is_superset(&expect_values(600..800))
    });
    // Kill C without a goodbye: its partitions come back to A after its
    // session times out, from C's committed offsets.
    let c_committed: BTreeMap<i32, i64> =
        child_msgs()
            .iter()
            .fold(BTreeMap::new(), |mut m, (p, o, _)| {
                let e = m.entry(*p).or_insert(0);
                *e = (*e).max(o + 1);
                m
            });
    child.kill().unwrap();
    child.wait().unwrap();
    let a_before = a.msgs.lock().unwrap().len();
    produce_values(&p, &r, "grp", 4, 800..1000);
    wait_until("A owns all four partitions again", || {
        a.assigned.lock().unwrap().len() == 4
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let have = all_values(&[
            &a.msgs.lock().unwrap(),
            &bm.msgs.lock().unwrap(),
            &child_msgs(),
        ]);
        let missing: Vec<String> = expect_values(0..1000).difference(&have).cloned().collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let a_late: Vec<(i32, i64, String)> = a.msgs.lock().unwrap()[a_before..].to_vec();
            panic!(
                "lost {} messages, e.g. {:?}; C had {c_parts:?} committed {c_committed:?}; A since the kill: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)],
                &a_late[..a_late.len().min(20)]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let after: Vec<(i32, i64, String)> = a.msgs.lock().unwrap()[a_before..].to_vec();
    for part in c_parts {
        let first = after
            .iter()
            .filter(|(p, _, _)| *p == part)
            .map(|(_, o, _)| *o)
            .min();
        assert_eq!(
            first,
            c_committed.get(&part).copied(),
            "A resumed partition {part} at C's committed offset"
        );
    }
    stop_a.store(true, Ordering::SeqCst);
    ha.join().unwrap();
}

#[test]
fn committed_offsets_survive_a_broker_restart() {
    let mut b = BrokerProc::start(&[]);
    let kafka = b.kafka.clone().unwrap();
    b.create_topic("durable", 2);
    let (p, r) = producer(&kafka, &[]);
    produce_values(&p, &r, "durable", 2, 0..100);
    drop(p);
    {
        let c = consumer(&kafka, Some("keeper"), &[("enable.auto.commit", "false")]);
        c.subscribe(&["durable"]).unwrap();
        let mut n = 0;
        let deadline = Instant::now() + WAIT;
        while n < 100 {
            assert!(Instant::now() < deadline, "consumed {n} of 100");
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                m.expect("consume");
                n += 1;
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("durable", 0, Offset::Offset(30))
            .unwrap();
        tpl.add_partition_offset("durable", 1, Offset::Offset(20))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    // No flush, no goodbye: commits were acknowledged only once durable.
    b.kill9();
    b.restart();
    let kafka = b.kafka.clone().unwrap();
    let c = consumer(&kafka, Some("keeper"), &[("enable.auto.commit", "false")]);
    let mut want = TopicPartitionList::new();
    want.add_partition("durable", 0);
    want.add_partition("durable", 1);
    let committed = c.committed_offsets(want, WAIT).unwrap();
    let got: Vec<(i32, Offset)> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    assert_eq!(got, vec![(0, Offset::Offset(30)), (1, Offset::Offset(20))]);
    c.subscribe(&["durable"]).unwrap();
    let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while firsts.len() < 2 {
        assert!(Instant::now() < deadline, "resumed on {firsts:?}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            firsts.entry(m.partition()).or_insert(m.offset());
        }
    }
    assert_eq!(firsts, BTreeMap::from([(0, 30), (1, 20)]));
}

#[test]
fn native_and_kafka_clients_read_each_other() {
    use shardlog::client::{
        Client, Consumer as NativeConsumer, ConsumerConfig, Producer as NativeProducer,
        ProducerConfig, StartAt,
    };
    use shardlog::format::Compression;
    let b = BrokerProc::start(&[]);
    let kafka = b.kafka.clone().unwrap();
    b.create_topic("k2n", 1);
    b.create_topic("n2k", 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Kafka -> native, lz4.
    let (p, r) = producer(&kafka, &[("compression.type", "lz4")]);
    let heads = OwnedHeaders::new().insert(Header {
        key: "origin",
        value: Some("kafka"),
    });
    let sends = (0..50)
        .map(|i| {
            let r = BaseRecord::to("k2n")
                .payload(b"from librdkafka" as &[u8])
                .timestamp(1_600_000_000_000 + i)
                .headers(heads.clone());
            if i % 2 == 0 {
                r.key(b"even" as &[u8])
            } else {
                r
            }
        })
        .collect();
    send_all(&p, &r, sends);
    let native: Vec<shardlog::client::Message> = rt.block_on(async {
        let client = Client::connect(&b.native).await.unwrap();
        let mut c = NativeConsumer::new(
            client,
            "k2n",
            None,
            StartAt::Earliest,
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while out.len() < 50 {
            assert!(Instant::now() < deadline);
            out.extend(c.poll().await.unwrap());
        }
        out
    });
    for (i, m) in native.iter().enumerate() {
        assert_eq!(m.offset, i as u64);
        assert_eq!(m.timestamp_ms, 1_600_000_000_000 + i as i64);
        assert_eq!(
            m.key.as_deref(),
            if i % 2 == 0 { Some(&b"even"[..]) } else { None }
        );
        assert_eq!(m.value.as_deref(), Some(&b"from librdkafka"[..]));
        assert_eq!(
            m.headers,
            vec![(
                "origin".to_string(),
                Some(bytes::Bytes::from_static(b"kafka"))
            )]
        );
    }
    // Native -> Kafka, zstd.
    rt.block_on(async {
        let client = Client::connect(&b.native).await.unwrap();
        let cfg = ProducerConfig {
            compression: Compression::Zstd,
            ..Default::default()
        };
        let p = NativeProducer::new(client, cfg);
        for i in 0..50u64 {
            let key = format!("n{i}");
            p.send_to(
                "n2k",
                0,
                Some(key.as_bytes()),
                Some(b"from shardlog"),
                &[("origin", Some(b"native"))],
                1_650_000_000_000 + i as i64,
                i,
            )
            .await
            .unwrap();
        }
        p.flush().await.unwrap();
        p.close().await.unwrap();
    });
    let back = read_n(&kafka, "n2k", &[0], 50);
    for (i, g) in back.iter().enumerate() {
        assert_eq!(g.offset, i as i64);
        assert_eq!(g.key, Some(format!("n{i}").into_bytes()));
        assert_eq!(g.value, b"from shardlog");
        assert_eq!(g.timestamp, Some(1_650_000_000_000 + i as i64));
        assert_eq!(
            g.headers,
            vec![("origin".to_string(), Some(b"native".to_vec()))]
        );
    }
}

#[test]
fn clients_ride_through_a_broker_restart() {
    let mut b = BrokerProc::start(&[]);
    let _log = LogOnPanic(b.stderr_path.clone());
    let kafka = b.kafka.clone().unwrap();
    // Keep the Kafka port across the restart, so live clients reconnect.
    let at = b.args.iter().position(|a| a == "--kafka-listen").unwrap();
    b.args[at + 1] = kafka.clone();
    b.create_topic("ride", 2);
    let (p, r) = producer(&kafka, &[("enable.idempotence", "true")]);
    produce_values(&p, &r, "ride", 2, 0..100);
    let stop = Arc::new(AtomicBool::new(false));
    let (a, ha) = group_member(kafka.clone(), "riders", "ride", stop.clone());
    wait_until("0..100 consumed", || {
        all_values(&[&a.msgs.lock().unwrap()]).is_superset(&expect_values(0..100))
    });
    // Let an auto-commit land, then restart: group membership is rebuilt by
    // the clients rejoining, committed offsets by replay.
    std::thread::sleep(Duration::from_millis(500));
    b.stop();
    b.restart();
    assert_eq!(b.kafka.as_deref(), Some(kafka.as_str()));
    produce_values(&p, &r, "ride", 2, 100..200);
    wait_until("100..200 consumed after the restart", || {
        all_values(&[&a.msgs.lock().unwrap()]).is_superset(&expect_values(0..200))
    });
    wait_until("the member owns both partitions again", || {
        a.assigned.lock().unwrap().len() == 2
    });
    // Resumed from committed offsets, not from the beginning.
    let msgs = a.msgs.lock().unwrap().clone();
    let reread = msgs.len() - 200;
    assert!(reread < 100, "re-read {reread} messages after the restart");
    stop.store(true, Ordering::SeqCst);
    ha.join().unwrap();
}
