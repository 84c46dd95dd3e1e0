//! Soak with kill -9: producers (acks=all) and a consumer group run while
//! the broker is killed with SIGKILL at random moments and restarted.
//!
//! At the end every acknowledged message must be in the log exactly once, in
//! per-partition order, and the group must have committed its progress up
//! to the end of every partition. Both protocols: the native client with
//! standalone group commits, and librdkafka with a real consumer group.
//!
//! Length: `SHARDLOG_SOAK_SECS` (default 12 per protocol). The long run:
//! `tests/soak.sh 10` (minutes).

mod common;

use common::{ok, BrokerProc};
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use shardlog::client::{
    Client, Consumer as NativeConsumer, ConsumerConfig, Producer as NativeProducer, ProducerConfig,
    StartAt,
};
use shardlog::protocol::messages::Acks;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "soak";
const PARTITIONS: u32 = 4;
const GROUP: &str = "soak-group";

fn soak_secs() -> u64 {
    std::env::var("SHARDLOG_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    acked: Mutex<HashSet<u64>>,
    consumed: Mutex<HashSet<u64>>,
    consumed_total: AtomicU64,
    /// What the consumers' polls returned other than a message, kept so a
    /// shortfall can be explained (librdkafka reports fetch errors there).
    poll_errors: Mutex<Vec<String>>,
    /// Per partition, the offsets a consumer was handed, with the cycle
    /// that first got each.
    delivered: Mutex<HashMap<(u32, u64), u32>>,
    /// The group's committed offsets as each cycle started (after the
    /// restart), for the shortfall's explanation.
    committed_at_start: Mutex<Vec<Vec<Option<u64>>>>,
    /// The kill -9 cycle running now (0 = the first).
    cycle: AtomicU32,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------------------ native clients

fn native_producer(addr: String, seq: Arc<AtomicU64>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    runtime().block_on(async move {
        let Ok(c) = Client::connect(&addr).await else {
            return;
        };
        let t2 = tally.clone();
        let p = NativeProducer::new(
            c,
            ProducerConfig {
                acks: Acks::All,
                linger_ms: 2,
                batch_bytes: 16 << 10,
                request_timeout_ms: 5000,
                on_batch_acked: Some(Arc::new(move |b| {
                    if b.error.is_none() {
                        t2.acked.lock().unwrap().extend(b.tokens.iter().copied());
                    }
                })),
                ..Default::default()
            },
        );
        while !stop.load(Ordering::Relaxed) {
            let s = seq.fetch_add(1, Ordering::Relaxed);
            let v = s.to_string();
            if p.send_to(
                TOPIC,
                (s % PARTITIONS as u64) as u32,
                None,
                Some(v.as_bytes()),
                &[],
                0,
                s,
            )
            .await
            .is_err()
            {
                break;
            }
            tally.sent.fetch_add(1, Ordering::Relaxed);
            if s.is_multiple_of(32) {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(8), p.flush()).await;
    });
}

/// A member of the native "group": a static share of the partitions,
/// starting at the group's committed offsets, committing as it goes.
fn native_consumer(addr: String, parts: Vec<u32>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    runtime().block_on(async move {
        let Ok(c) = Client::connect(&addr).await else {
            return;
        };
        let Ok(committed) = c.committed_offsets(GROUP, TOPIC, &parts).await else {
            return;
        };
        let Ok(mut cons) = NativeConsumer::new(
            c.clone(),
            TOPIC,
            Some(parts.clone()),
            StartAt::Earliest,
            ConsumerConfig {
                max_wait_ms: 100,
                ..Default::default()
            },
        )
        .await
        else {
            return;
        };
        for (p, o) in parts.iter().zip(&committed) {
            if let Some(o) = o {
                cons.seek(*p, *o);
            }
        }
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let Ok(msgs) = cons.poll().await else { return };
            {
                let mut seen = tally.consumed.lock().unwrap();
                let cycle = tally.cycle.load(Ordering::Relaxed);
                let mut delivered = tally.delivered.lock().unwrap();
                for m in &msgs {
                    delivered.entry((m.partition, m.offset)).or_insert(cycle);
                    seen.insert(
                        std::str::from_utf8(m.value.as_deref().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap(),
                    );
                }
            }
            tally
                .consumed_total
                .fetch_add(msgs.len() as u64, Ordering::Relaxed);
            if last_commit.elapsed() > Duration::from_millis(200) || msgs.is_empty() {
                let pos: Vec<(&str, u32, u64)> = cons
                    .positions()
                    .iter()
                    .map(|(p, o)| (TOPIC, *p, *o))
                    .collect();
                if c.commit_offsets(GROUP, &pos).await.is_err() {
                    return;
                }
                last_commit = Instant::now();
            }
        }
    });
}

// ------------------------------------------------------------ Kafka clients

struct Acked(Arc<Tally>);
impl ClientContext for Acked {}
impl ProducerContext for Acked {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, r: &DeliveryResult<'_>, seq: Box<u64>) {
        if r.is_ok() {
            self.0.acked.lock().unwrap().insert(*seq);
        }
    }
}

fn kafka_producer(addr: String, seq: Arc<AtomicU64>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let p: BaseProducer<Acked> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(Acked(tally.clone()))
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let s = seq.fetch_add(1, Ordering::Relaxed);
        let v = s.to_string();
        let rec = BaseRecord::with_opaque_to(TOPIC, Box::new(s))
            .payload(v.as_bytes())
            .key(&[])
            .partition((s % PARTITIONS as u64) as i32);
        match p.send(rec) {
            Ok(()) => {
                tally.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        p.poll(Duration::ZERO);
        if s.is_multiple_of(32) {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let _ = p.flush(Duration::from_secs(8));
}

/// A member of a real Kafka consumer group, committing manually.
/// A member of the librdkafka consumer group. It is a static member
/// (`group.instance.id`): the consumer that takes its place after a kill -9
/// replaces the member the restarted broker restored, at once, where a
/// dynamic member would wait out the dead members' session timeout (longer
/// than a cycle) before the group could rebalance.
fn kafka_consumer(addr: String, instance: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", GROUP)
        .set("group.instance.id", &instance)
        .set("enable.auto.commit", "false")
        // Offsets are stored only for messages this loop has recorded.
        // With librdkafka's default (stored as poll hands a message out),
        // rdkafka's drop, which polls and discards the queued messages
        // while the consumer closes, stored offsets no one saw, and an
        // async commit still queued from before the kill -9 committed them
        // to the restarted broker: the group then skipped those messages.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("reconnect.backoff.max.ms", "200")
        .set("socket.timeout.ms", "2000")
        .create()
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v: u64 = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                tally.consumed.lock().unwrap().insert(v);
                tally.consumed_total.fetch_add(1, Ordering::Relaxed);
                let cycle = tally.cycle.load(Ordering::Relaxed);
                tally
                    .delivered
                    .lock()
                    .unwrap()
                    .entry((m.partition() as u32, m.offset() as u64))
                    .or_insert(cycle);
                // Fails only if the partition was revoked meanwhile; its
                // new owner then reads from the last commit (at least once).
                let _ = c.store_offset_from_message(&m);
            }
            Some(Err(e)) => {
                let cycle = tally.cycle.load(Ordering::Relaxed);
                tally
                    .poll_errors
                    .lock()
                    .unwrap()
                    .push(format!("cycle {cycle}: {e}"));
            }
            None => {}
        }
        if last_commit.elapsed() > Duration::from_millis(200) {
            let _ = c.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    // No final synchronous commit: the broker may be dead (kill -9) by now;
    // the quiet phase checks that commits reached the end.
}

// ------------------------------------------------------------ the soak

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Native,
    Kafka,
}

fn run_cycle(
    b: &BrokerProc,
    proto: Proto,
    seq: &Arc<AtomicU64>,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
    produce: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    if produce {
        let (addr, seq, t, s) = match proto {
            Proto::Native => (b.native.clone(), seq.clone(), tally.clone(), stop.clone()),
            Proto::Kafka => (
                b.kafka.clone().unwrap(),
                seq.clone(),
                tally.clone(),
                stop.clone(),
            ),
        };
        threads.push(std::thread::spawn(move || match proto {
            Proto::Native => native_producer(addr, seq, t, s),
            Proto::Kafka => kafka_producer(addr, seq, t, s),
        }));
    }
    for half in [vec![0u32, 2], vec![1, 3]] {
        let (t, s) = (tally.clone(), stop.clone());
        match proto {
            Proto::Native => {
                let addr = b.native.clone();
                threads.push(std::thread::spawn(move || {
                    native_consumer(addr, half, t, s)
                }));
            }
            Proto::Kafka => {
                let addr = b.kafka.clone().unwrap();
                let instance = format!("soak-consumer-{}", half[0]);
                threads.push(std::thread::spawn(move || {
                    kafka_consumer(addr, instance, t, s)
                }));
            }
        }
    }
    threads
}

fn soak(proto: Proto) {
    let secs = soak_secs();
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        None,
    ));
    let tally = Arc::new(Tally::default());
    let seq = Arc::new(AtomicU64::new(0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(secs ^ proto as u64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut restarts: usize = 0;
    while Instant::now() < deadline {
        record_committed(&b, &tally);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = run_cycle(&b, proto, &seq, &tally, &stop, true);
        std::thread::sleep(Duration::from_millis(rng.gen_range(600..2500)));
        b.kill9();
        stop.store(true, Ordering::Relaxed);
        // Restart before joining the clients: dropping an rdkafka consumer
        // closes it, and that close waits for the group coordinator, so it
        // can only finish once a broker is back (a 10-minute soak once hung
        // here with the broker down). The clients have seen `stop` and
        // exit; the producer's final flush may still deliver to the new
        // broker, which is counted like any acknowledgement.
        b.restart();
        restarts += 1;
        for t in threads {
            t.join().expect("client thread");
        }
        tally.cycle.fetch_add(1, Ordering::Relaxed);
    }
    // Quiet phase: no producers; the group consumes to the end and commits.
    // The end is read afresh each round and must hold still for a second:
    // a producer whose final flush gave up (its broker was killed) may have
    // left a request on the wire that the restarted broker appends only
    // after the producer thread ended, so an end read once, right after the
    // join, can be short of what the log finally holds.
    record_committed(&b, &tally);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = run_cycle(&b, proto, &seq, &tally, &stop, false);
    let caught_up = Instant::now() + Duration::from_secs(60);
    let mut end_since: Option<(Vec<u64>, Instant)> = None;
    let (committed, hw) = loop {
        let (committed, hw): (Vec<Option<u64>>, Vec<u64>) = runtime().block_on(async {
            let c = Client::connect(&b.native).await.unwrap();
            let mut hw = Vec::new();
            for p in 0..PARTITIONS {
                hw.push(c.list_offset(TOPIC, p, -1).await.unwrap());
            }
            (committed_offsets(&c).await, hw)
        });
        let held = match &end_since {
            Some((end, since)) if *end == hw => since.elapsed() >= Duration::from_secs(1),
            _ => {
                end_since = Some((hw.clone(), Instant::now()));
                false
            }
        };
        let at_end = committed.iter().zip(&hw).all(|(c, h)| *c == Some(*h));
        if (at_end && held) || Instant::now() > caught_up {
            break (committed, hw);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Verify the log itself.
    let log: BTreeMap<u32, Vec<u64>> = runtime()
        .block_on(common::read_topic(&b.native, TOPIC))
        .into_iter()
        .map(|(p, vs)| {
            let seqs = vs
                .iter()
                .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
                .collect();
            (p, seqs)
        })
        .collect();
    let mut count: HashMap<u64, u32> = HashMap::new();
    for (p, seqs) in &log {
        for w in seqs.windows(2) {
            assert!(w[1] > w[0], "partition {p}: {} after {}", w[1], w[0]);
        }
        for s in seqs {
            assert_eq!(
                s % PARTITIONS as u64,
                *p as u64,
                "message in the wrong partition"
            );
            *count.entry(*s).or_default() += 1;
        }
    }
    let acked = tally.acked.lock().unwrap();
    let lost = acked.iter().filter(|s| !count.contains_key(s)).count();
    let duplicated = count.values().filter(|n| **n > 1).count();
    let stored: usize = log.values().map(|v| v.len()).sum();
    let consumed = tally.consumed.lock().unwrap().len();
    // Offsets first delivered in each cycle (the last is the quiet phase):
    // shows whether the group resumed after each kill -9 or sat idle.
    let mut per_cycle = vec![0u64; restarts + 1];
    for c in tally.delivered.lock().unwrap().values() {
        if let Some(n) = per_cycle.get_mut(*c as usize) {
            *n += 1;
        }
    }
    println!(
        "soak {proto:?} {secs}s: produced {} acknowledged {} stored {stored} consumed {consumed} (deliveries {}, new offsets per cycle {per_cycle:?}) lost {lost} duplicated {duplicated} restarts {restarts}",
        tally.sent.load(Ordering::Relaxed),
        acked.len(),
        tally.consumed_total.load(Ordering::Relaxed),
    );
    assert!(
        acked.len() > 100,
        "the soak acknowledged only {} messages",
        acked.len()
    );
    assert_eq!(lost, 0, "acknowledged messages lost");
    assert_eq!(duplicated, 0, "messages stored twice");
    assert!(restarts >= 2, "only {restarts} kill -9 restarts");
    if consumed != stored {
        explain_shortfall(&log, &tally, &committed, &hw);
        print_group_log(&b);
    }
    assert_eq!(consumed, stored, "the group consumed every stored message");
    assert_eq!(
        committed,
        hw.iter().map(|h| Some(*h)).collect::<Vec<_>>(),
        "the group committed its progress to the end"
    );
}

/// The group's committed offset of each partition (None: no commit yet).
async fn committed_offsets(c: &Client) -> Vec<Option<u64>> {
    c.committed_offsets(GROUP, TOPIC, &(0..PARTITIONS).collect::<Vec<_>>())
        .await
        .unwrap()
}

/// Note the group's committed offsets as a cycle starts.
fn record_committed(b: &BrokerProc, tally: &Tally) {
    let committed = runtime()
        .block_on(async { committed_offsets(&Client::connect(&b.native).await.unwrap()).await });
    tally.committed_at_start.lock().unwrap().push(committed);
}

/// Say which stored messages no consumer was handed: per partition, the
/// offset ranges, what the group delivered around them and in which cycle,
/// and what the polls returned instead of messages.
fn explain_shortfall(
    log: &BTreeMap<u32, Vec<u64>>,
    tally: &Tally,
    committed: &[Option<u64>],
    hw: &[u64],
) {
    let consumed = tally.consumed.lock().unwrap();
    let delivered = tally.delivered.lock().unwrap();
    for (p, seqs) in log {
        let missing: Vec<u64> = (0..seqs.len() as u64)
            .filter(|o| !consumed.contains(&seqs[*o as usize]))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for o in missing {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == o => *end = o,
                _ => ranges.push((o, o)),
            }
        }
        for (a, b) in &ranges {
            let before = a.checked_sub(1).and_then(|o| delivered.get(&(*p, o)));
            let after = delivered.get(&(*p, b + 1));
            eprintln!(
                "partition {p}: offsets {a}..={b} ({} messages, seq {}..{}) never delivered; \
                 offset before delivered in cycle {before:?}, offset after in cycle {after:?}",
                b - a + 1,
                seqs[*a as usize],
                seqs[*b as usize],
            );
        }
        eprintln!(
            "partition {p}: committed {:?}, high watermark {}",
            committed.get(*p as usize),
            hw[*p as usize]
        );
    }
    for (cycle, c) in tally.committed_at_start.lock().unwrap().iter().enumerate() {
        eprintln!("cycle {cycle} started with committed offsets {c:?}");
    }
    let errors = tally.poll_errors.lock().unwrap();
    eprintln!("{} poll errors:", errors.len());
    for e in errors.iter().take(40) {
        eprintln!("  {e}");
    }
}

/// The broker's own account of the group across every restart: its
/// rebalances, removals, restores and (with `RUST_LOG=shardlog::groups=debug`)
/// each offset commit with its answer.
fn print_group_log(b: &BrokerProc) {
    let log = std::fs::read_to_string(&b.stderr_path).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kafka: ") && l.contains("group"))
        .collect();
    eprintln!("broker's group log ({} lines, the last 400):", lines.len());
    for l in lines.iter().rev().take(400).rev() {
        eprintln!("  {l}");
    }
}

#[test]
fn soak_native_with_kill9() {
    soak(Proto::Native);
}

#[test]
fn soak_kafka_with_kill9() {
    soak(Proto::Kafka);
}
