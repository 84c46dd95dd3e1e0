//! A 3-node cluster of real `shardlog serve` processes on distinct
//! 127.0.0.1 ports: the controller is elected, brokers register, topics
//! created through any node are placed over all three, a Kafka client
//! (librdkafka) creates, produces and consumes in a group through any node
//! as its bootstrap server, and killing the controller leader (`kill -9`)
//! under topic-creation load loses no acknowledged topic, creates none
//! twice, and does not stop the other nodes serving their partitions.
//! The native side follows leaders too: the CLI creates, produces and
//! consumes through different nodes, offsets are committed through the
//! group's coordinator, a producer keeps going when its partition moves,
//! and loadgen bootstrapped from one node loses nothing (the loadgen
//! binary comes from `cargo test --workspace`, or `LOADGEN_BIN`).
//!
//! `SHARDLOG_CLUSTER_KILLS` (default 10) sets how many leaders are killed.

mod common;

use common::{bin, BrokerProc};
use shardlog::cluster::admin::{self, View};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// A port for an RPC listener, below the kernel's ephemeral range
/// (32768+): `free_port` picks from that range, where a broker of another
/// test binding port 0 can take it before our broker binds it.
fn rpc_port() -> u16 {
    loop {
        let p = 20_000 + (rand::random::<u16>() % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

struct Cluster {
    nodes: Vec<BrokerProc>,
    rpc: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with_shards(1)
    }

    /// Three brokers with `shards` shards each.
    fn start_with_shards(shards: usize) -> Cluster {
        Cluster::start_with(shards, &[])
    }

    /// Three brokers with `shards` shards each and `extra` arguments.
    fn start_with(shards: usize, extra: &[&str]) -> Cluster {
        let rpc: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", rpc_port()))
            .collect();
        let voters = rpc
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, addr) in rpc.iter().enumerate() {
            let (node, dir) = start_node_with(i as u32 + 1, addr, &voters, shards, extra);
            nodes.push(node);
            dirs.push(dir);
        }
        Cluster {
            nodes,
            rpc,
            _dirs: dirs,
        }
    }

    /// Wait until node `i` sees a leader (other than `not`) and `brokers` registered.
    fn settled_view(&self, i: usize, brokers: usize, not: Option<u32>, max: Duration) -> View {
        let started = Instant::now();
        loop {
            if let Ok(v) = admin::view(&self.rpc[i], RPC_TIMEOUT) {
                if v.leader.is_some() && v.leader != not && v.state.brokers.len() >= brokers {
                    return v;
                }
            }
            assert!(
                started.elapsed() < max,
                "node {} saw no controller leader (other than {not:?}) with {brokers} brokers within {max:?}; \
                 the nodes' cluster log lines:\n{}",
                i + 1,
                self.cluster_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Cluster {
    /// Wait (up to 30 s) until `bootstrap` reports a leader for every
    /// partition of `topic`, none of them node `victim` (0-based).
    fn wait_for_leaders_without(&self, bootstrap: &str, topic: &str, victim: usize) {
        let started = Instant::now();
        loop {
            let now = kafka::leaders_any(bootstrap, topic);
            if now.iter().all(|l| *l > 0 && *l as usize - 1 != victim) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no new leader for every partition: {now:?}; logs:\n{}",
                self.cluster_logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Start broker 4, not a controller voter: it registers through the
    /// voters and fetches the controller's state from them.
    fn start_fourth(&self) -> (BrokerProc, tempfile::TempDir) {
        let voters = self
            .rpc
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let rpc4 = format!("127.0.0.1:{}", rpc_port());
        start_node(4, &rpc4, &voters)
    }

    fn cluster_logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for line in n
                .stderr()
                .lines()
                .filter(|l| l.contains("cluster::") || l.contains("panic"))
            {
                out.push_str(&format!("node {}: {line}\n", i + 1));
            }
        }
        out
    }
}

#[test]
fn three_nodes_elect_a_controller_and_place_topics_created_through_any_node_on_all_of_them() {
    let mut c = Cluster::start();
    let v = c.settled_view(0, 3, None, Duration::from_secs(30));
    for b in v.state.brokers.values() {
        assert!(b.live, "{b:?}");
        assert_eq!(
            b.reg.kafka_addr,
            c.nodes[b.reg.id as usize - 1].kafka.clone().unwrap()
        );
        assert_eq!(b.reg.native_addr, c.nodes[b.reg.id as usize - 1].native);
    }
    for (i, addr) in c.rpc.iter().enumerate() {
        let name = format!("via-node-{}", i + 1);
        admin::create_topic(
            std::slice::from_ref(addr),
            &name,
            4,
            1,
            vec![],
            RPC_TIMEOUT,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("create {name} through node {}: {e}", i + 1));
    }
    // Every node applies the same state; the 12 partitions are spread 4/4/4.
    let started = Instant::now();
    let states: Vec<View> = loop {
        let views: Vec<View> = (0..3)
            .filter_map(|i| admin::view(&c.rpc[i], RPC_TIMEOUT).ok())
            .collect();
        if views.len() == 3
            && views
                .iter()
                .all(|v| v.state.topics.len() == 3 && v.state.encode() == views[0].state.encode())
        {
            break views;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nodes did not converge"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut led: BTreeMap<u32, usize> = BTreeMap::new();
    for t in states[0].state.topics.values() {
        for p in &t.partitions {
            *led.entry(p.node).or_default() += 1;
        }
    }
    assert_eq!(
        led,
        BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
        "placement: {led:?}"
    );
    // The CLI shows the same.
    let out = std::process::Command::new(bin())
        .args(["cluster", "status", "--rpc", &c.rpc[2], "--partitions"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("controller leader: "), "{text}");
    for id in 1..=3 {
        assert!(text.contains(&format!("broker {id}\tlive\t")), "{text}");
        assert!(text.contains("partitions_led=4"), "{text}");
    }
    assert!(text.contains("via-node-2\t3\tleader="), "{text}");
    let logs = c.nodes[0].stderr();
    assert!(logs.contains("broker joined the cluster"), "{logs}");
    assert!(logs.contains("controller leader changed"), "{logs}");

    // A broker that stops beating is fenced, new partitions avoid it, and
    // it is live again once it restarts.
    let leader = c
        .settled_view(0, 3, None, Duration::from_secs(30))
        .leader
        .unwrap();
    let down = (leader % 3) as usize; // a node that is not the leader (index)
    let ask = (down + 1) % 3;
    c.nodes[down].kill9();
    let fenced = |c: &Cluster, live: bool| {
        let started = Instant::now();
        loop {
            if let Ok(v) = admin::view(&c.rpc[ask], RPC_TIMEOUT) {
                if v.state
                    .brokers
                    .get(&(down as u32 + 1))
                    .is_some_and(|b| b.live == live)
                {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "broker {} never became live={live}:\n{}",
                down + 1,
                c.cluster_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let took = fenced(&c, false);
    eprintln!("broker {} fenced {took:?} after its kill", down + 1);
    admin::create_topic(
        &[c.rpc[ask].clone()],
        "while-down",
        6,
        1,
        vec![],
        RPC_TIMEOUT,
        Duration::from_secs(20),
    )
    .unwrap();
    let v = admin::view(&c.rpc[ask], RPC_TIMEOUT).unwrap();
    let nodes: Vec<u32> = v.state.topics["while-down"]
        .partitions
        .iter()
        .map(|p| p.node)
        .collect();
    assert!(!nodes.contains(&(down as u32 + 1)), "{nodes:?}");
    c.nodes[down].restart();
    fenced(&c, true);
    assert!(c.cluster_logs().contains("broker left the cluster"));
}

/// librdkafka through one bootstrap server: topic creation, leaders,
/// produce, group consume, committed offsets.
mod kafka {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::Message;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    pub fn create(bootstrap: &str, topic: &str, partitions: i32) {
        create_replicated(bootstrap, topic, partitions, 1)
    }

    pub fn create_replicated(bootstrap: &str, topic: &str, partitions: i32, rf: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let created = futures::executor::block_on(admin.create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(rf),
            )],
            &opts,
        ))
        .unwrap();
        assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    }

    /// Each partition's leader as `bootstrap` reports it, once it lists
    /// `brokers` (Kafka addresses) and a leader for every partition.
    pub fn leaders(bootstrap: &str, topic: &str, brokers: &[String]) -> Vec<i32> {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let mut want = brokers.to_vec();
        want.sort();
        let started = Instant::now();
        loop {
            let md = probe
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .unwrap();
            let leaders: Vec<i32> = md.topics()[0]
                .partitions()
                .iter()
                .map(|p| p.leader())
                .collect();
            let mut addrs: Vec<String> = md
                .brokers()
                .iter()
                .map(|b| format!("{}:{}", b.host(), b.port()))
                .collect();
            addrs.sort();
            if addrs == want && !leaders.is_empty() && leaders.iter().all(|l| *l > 0) {
                return leaders;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{bootstrap}: brokers {addrs:?} (want {want:?}), leaders {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Each partition's leader as `bootstrap` reports it now (-1: none).
    /// Each partition's (leader, sorted in-sync replicas, replicas) as the
    /// broker at `bootstrap` reports them; empty if it did not answer.
    fn partitions_of(bootstrap: &str, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        match probe.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => md.topics()[0]
                .partitions()
                .iter()
                .map(|p| {
                    let mut isr = p.isr().to_vec();
                    isr.sort_unstable();
                    (p.leader(), isr, p.replicas().to_vec())
                })
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Each partition's replicas as `bootstrap` reports them.
    pub fn replicas_of(bootstrap: &str, topic: &str) -> Vec<Vec<i32>> {
        partitions_of(bootstrap, topic)
            .into_iter()
            .map(|p| p.2)
            .collect()
    }

    /// Each partition's in-sync replicas (sorted) as `bootstrap` reports them.
    pub fn isr_of(bootstrap: &str, topic: &str) -> Vec<Vec<i32>> {
        partitions_of(bootstrap, topic)
            .into_iter()
            .map(|p| p.1)
            .collect()
    }

    /// Each partition's leader as `bootstrap` reports it ([-1]: no answer).
    pub fn leaders_any(bootstrap: &str, topic: &str) -> Vec<i32> {
        match partitions_of(bootstrap, topic) {
            ps if ps.is_empty() => vec![-1],
            ps => ps.into_iter().map(|p| p.0).collect(),
        }
    }

    /// `n` keyed messages (key `k{i % 12}`, value `i`), idempotent,
    /// acks=all; every delivery must succeed.
    pub fn produce(bootstrap: &str, topic: &str, n: usize) {
        produce_range(bootstrap, topic, 0..n)
    }

    /// Messages with values `range` (key `k{i % 12}`), as [`produce`].
    pub fn produce_range(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let sends: Vec<_> = range
            .clone()
            .map(|i| {
                let (key, value) = (format!("k{}", i % 12), i.to_string());
                producer
                    .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for (i, s) in range.zip(sends) {
            let r = futures::executor::block_on(s).unwrap();
            assert!(r.is_ok(), "message {i}: {r:?}");
        }
    }

    /// A consumer assigned partitions 0..`partitions` of `topic` from
    /// their beginning (no group, nothing committed).
    pub fn from_beginning(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "unused")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }

    /// Every value of `topic` read from the beginning of each partition
    /// (assigned, no group), until `n` distinct values or 60 s, and then on
    /// until the partitions are quiet for 1.5 s (so a duplicate stored
    /// after the first `n` is read too).
    pub fn read_all(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Vec<usize> {
        let consumer = from_beginning(bootstrap, topic, partitions);
        let mut seen = Vec::new();
        let mut distinct = std::collections::BTreeSet::new();
        let started = Instant::now();
        while distinct.len() < n && started.elapsed() < Duration::from_secs(60) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
                let v: usize = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                seen.push(v);
                distinct.insert(v);
            }
        }
        let mut quiet = 0;
        while quiet < 3 && started.elapsed() < Duration::from_secs(90) {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    quiet = 0;
                    seen.push(
                        std::str::from_utf8(m.payload().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap(),
                    );
                }
                _ => quiet += 1,
            }
        }
        seen
    }

    /// Consume `n` messages in group `group`, check each key's values come
    /// in order, commit, and check another client (through `other`) sees
    /// the group's committed offsets add up to `n`.
    pub fn consume_in_group(bootstrap: &str, other: &str, topic: &str, group: &str, n: usize) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut got = 0;
        let started = Instant::now();
        while got < n && started.elapsed() < Duration::from_secs(60) {
            if let Some(m) = consumer.poll(Duration::from_millis(500)) {
                let m = m.unwrap();
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let v: usize = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                by_key.entry(key).or_default().push(v);
                got += 1;
            }
        }
        assert_eq!(got, n, "consumed through {bootstrap}");
        for (k, vs) in &by_key {
            assert!(
                vs.windows(2).all(|w| w[0] < w[1]),
                "key {k} out of order: {vs:?}"
            );
        }
        consumer.commit_consumer_state(CommitMode::Sync).unwrap();
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", other)
            .set("group.id", group)
            .create()
            .unwrap();
        let md = reader
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition(topic, p.id());
        }
        let committed = reader
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| e.offset().to_raw().unwrap_or(0))
            .sum();
        assert_eq!(total, n as i64, "committed offsets seen through {other}");
    }
}

#[test]
fn a_kafka_client_creates_produces_and_consumes_through_any_bootstrap_node() {
    let c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    // Created through node 1's Kafka listener (CreateTopics goes to the
    // controller from there).
    kafka::create(&brokers[0], "orders", 6);
    // Every node lists the three brokers and the same leaders, and every
    // node leads some of the six partitions.
    let seen: Vec<Vec<i32>> = brokers
        .iter()
        .map(|b| kafka::leaders(b, "orders", &brokers))
        .collect();
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    for node in 1..=3 {
        assert!(
            seen[0].contains(&node),
            "node {node} leads nothing: {seen:?}"
        );
    }
    // Produced through node 2: the client sends each partition's batches
    // to its leader. Consumed in a group through node 3 (the coordinator
    // may be any node); the commits are seen through node 1.
    kafka::produce(&brokers[1], "orders", 600);
    kafka::consume_in_group(&brokers[2], &brokers[0], "orders", "cluster-readers", 600);
}

/// A topic with three replicas per partition (issue 13): produce with
/// acks=all, kill -9 the broker leading partition 0, produce more through a
/// survivor; every acknowledged message is read back, and each replica's
/// directory holds the partition's data.
#[test]
fn a_replicated_topic_keeps_every_acknowledged_message_when_a_leader_is_killed() {
    let (mut c, brokers, leaders) = replicated_and_read_back(1, "replicated", 2, 300);
    // Kill the leader of partition 0; a follower takes over.
    let victim = leaders[0] as usize - 1;
    c.nodes[victim].kill9();
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| brokers[i].clone())
        .collect();
    c.wait_for_leaders_without(&survivors[0], "replicated", victim);
    kafka::produce_range(&survivors[0], "replicated", 300..600);
    // The new leader of partition 0 was a follower: it serves the first
    // 300 only if it replicated them.
    let all = kafka::read_all(&survivors[1], "replicated", 2, 600);
    let distinct: std::collections::BTreeSet<usize> = all.iter().copied().collect();
    let missing: Vec<usize> = (0..600).filter(|v| !distinct.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages missing after the kill: {missing:?}"
    );
    // The killed broker comes back and catches up; then the current leader
    // of partition 0 is killed too, and the two left (one of them the
    // restarted broker) still serve every acknowledged message.
    c.nodes[victim].restart();
    std::thread::sleep(Duration::from_secs(3));
    let now = kafka::leaders_any(&survivors[0], "replicated");
    let second = now[0] as usize - 1;
    assert_ne!(second, victim, "leaders now: {now:?}");
    c.nodes[second].kill9();
    let last = (0..3).find(|i| *i != second && *i != victim).unwrap();
    let all = kafka::read_all(&brokers[last], "replicated", 2, 600);
    let distinct: std::collections::BTreeSet<usize> = all.iter().copied().collect();
    let missing: Vec<usize> = (0..600).filter(|v| !distinct.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages missing after the second kill: {missing:?}; logs:\n{}",
        c.cluster_logs()
    );
}

/// Three brokers with `shards` shards each, an RF=3 topic of `partitions`
/// whose leaders are all elected, and `n` messages produced through broker
/// 2 and read back through broker 3. Returns the cluster, the brokers'
/// Kafka addresses and each partition's leader.
fn replicated_and_read_back(
    shards: usize,
    topic: &str,
    partitions: i32,
    n: usize,
) -> (Cluster, Vec<String>, Vec<i32>) {
    let c = Cluster::start_with_shards(shards);
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], topic, partitions, 3);
    let leaders = kafka::leaders(&brokers[0], topic, &brokers);
    kafka::produce(&brokers[1], topic, n);
    let first = kafka::read_all(&brokers[2], topic, partitions, n);
    let distinct: std::collections::BTreeSet<usize> = first.iter().copied().collect();
    assert_eq!(distinct.len(), n, "read back through another broker");
    (c, brokers, leaders)
}

/// Leaders of a replicated topic are killed (`kill -9`) again and again
/// while an idempotent librdkafka producer (acks=all, retries) writes
/// without pause; each killed broker restarts before the next kill, so a
/// majority is always up. Every message the producer saw acknowledged is
/// read back, none twice (the new leader knows the producer's sequences
/// from the replicated log and answers retries with the original), and
/// each key's messages in the order they were sent.
/// `SHARDLOG_REPL_KILLS` (default 3) sets how many leaders are killed.
#[test]
fn acknowledged_messages_survive_repeated_leader_kills_under_load() {
    let kills: usize = env_count("SHARDLOG_REPL_KILLS", 3);
    let mut c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], "churn", 3, 3);
    kafka::leaders(&brokers[0], "churn", &brokers);
    let (producer, acked, stop) = spawn_idempotent_producer(brokers.join(","), "churn");
    let mut killed = 0;
    for k in 0..kills {
        std::thread::sleep(Duration::from_secs(2));
        // The leader of partition k % 3, as a broker reports it (all are
        // up: the last victim restarted).
        let leaders = kafka::leaders_any(&brokers[(k + 1) % 3], "churn");
        let Some(&l) = leaders.get(k % 3).filter(|l| **l > 0) else {
            continue;
        };
        let victim = l as usize - 1;
        c.nodes[victim].kill9();
        killed += 1;
        eprintln!("kill {k}: broker {l} (leader of partition {})", k % 3);
        std::thread::sleep(Duration::from_secs(3));
        c.nodes[victim].restart();
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let all = kafka::read_all(&brokers[0], "churn", 3, acked.len());
    check_exactly_once(&format!("{kills} leader kills"), &acked, &all);
    let won = assert_one_leader_per_epoch(&c);
    assert!(
        won.keys().filter(|(t, _, _)| t == "churn").count() >= 3 + killed,
        "every partition's first leader and one per kill: {won:?}"
    );
}

/// (topic, partition, epoch) -> the brokers that logged winning that
/// epoch's leadership ("replica: became leader", one line each).
type Leaderships = BTreeMap<(String, u32, u64), std::collections::BTreeSet<u32>>;

/// The leaderships in broker logs (ANSI codes removed).
fn leaderships<'a>(logs: impl IntoIterator<Item = &'a str>) -> Leaderships {
    let mut out = Leaderships::new();
    for line in logs
        .into_iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("replica: became leader"))
    {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        out.entry((
            field("topic").to_string(),
            field("partition").parse().unwrap(),
            field("epoch").parse().unwrap(),
        ))
        .or_default()
        .insert(field("node").parse().unwrap());
    }
    out
}

/// No (topic, partition, epoch) was led by two brokers, as the brokers'
/// own logs (every incarnation: restarts append) tell it. Returns them.
fn assert_one_leader_per_epoch(c: &Cluster) -> Leaderships {
    assert_one_leader_per_epoch_in(&c.nodes)
}

/// [`assert_one_leader_per_epoch`] over these brokers' logs.
fn assert_one_leader_per_epoch_in(nodes: &[BrokerProc]) -> Leaderships {
    let logs: Vec<String> = nodes.iter().map(|n| n.plain_log()).collect();
    let won = leaderships(logs.iter().map(|l| l.as_str()));
    let twice: Vec<_> = won.iter().filter(|(_, nodes)| nodes.len() > 1).collect();
    assert!(twice.is_empty(), "two leaders in one epoch: {twice:?}");
    eprintln!(
        "{} leaderships in the brokers' logs, one leader each",
        won.len()
    );
    won
}

/// The log check above finds two leaders of one epoch when there are.
#[test]
fn the_leader_log_check_finds_two_leaders_of_one_epoch() {
    let a = "2026-12-03T20:00:00Z  INFO shardlog::shard::replication: replica: became leader topic=t partition=1 epoch=4 node=2\n\
             2026-12-03T20:00:09Z  INFO shardlog::shard::replication: replica: became leader topic=t partition=1 epoch=6 node=2";
    let b = "2026-12-03T20:00:05Z  INFO shardlog::shard::replication: replica: became leader topic=t partition=1 epoch=5 node=3";
    let fine = leaderships([a, b]);
    assert_eq!(fine.len(), 3);
    assert!(fine.values().all(|n| n.len() == 1));
    let c = "2026-12-03T20:00:05Z  INFO shardlog::shard::replication: replica: became leader topic=t partition=1 epoch=4 node=1";
    let bad = leaderships([a, b, c]);
    assert_eq!(
        bad[&("t".to_string(), 1, 4)]
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
}

type Acked = Arc<Mutex<Vec<usize>>>;

/// A count from the environment (a long run), else `default` (CI).
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An idempotent librdkafka producer (acks=all, retries for up to 60 s)
/// writing message i with key k{i % 12} to `topic` until told to stop;
/// the messages it saw acknowledged are recorded.
fn spawn_idempotent_producer(
    bootstrap: String,
    topic: &'static str,
) -> (std::thread::JoinHandle<()>, Acked, Arc<AtomicBool>) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, st) = (acked.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "60000")
            .create()
            .unwrap();
        let mut i = 0usize;
        let mut pending = Vec::new();
        while !st.load(Ordering::Relaxed) {
            let (key, value) = (format!("k{}", i % 12), i.to_string());
            if let Ok(f) = p.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                pending.push((i, f));
            }
            i += 1;
            if pending.len() >= 50 {
                for (v, f) in pending.drain(..) {
                    if let Ok(Ok(_)) = futures::executor::block_on(f) {
                        a.lock().unwrap().push(v);
                    }
                }
            }
        }
        for (v, f) in pending {
            if let Ok(Ok(_)) = futures::executor::block_on(f) {
                a.lock().unwrap().push(v);
            }
        }
    });
    (handle, acked, stop)
}

/// Every acknowledged message was read, none twice, and each key's
/// messages (one key, one partition) in the order they were sent.
fn check_exactly_once(what: &str, acked: &[usize], all: &[usize]) {
    assert!(
        acked.len() > 100,
        "{what}: only {} acknowledged",
        acked.len()
    );
    let read: std::collections::BTreeSet<usize> = all.iter().copied().collect();
    let missing: Vec<usize> = acked
        .iter()
        .filter(|v| !read.contains(v))
        .copied()
        .collect();
    eprintln!(
        "{what}: {} acknowledged, {} read ({} distinct), {} missing",
        acked.len(),
        all.len(),
        read.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{what}: acknowledged messages missing: {} of {}: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(
        all.len(),
        read.len(),
        "{what}: an idempotent producer's messages were stored twice"
    );
    let mut last_of_key = [None::<usize>; 12];
    for v in all {
        let k = v % 12;
        if let Some(prev) = last_of_key[k] {
            assert!(prev < *v, "{what}: key k{k}: {v} read after {prev}");
        }
        last_of_key[k] = Some(*v);
    }
}

/// The native CLI creates a replicated topic (`--replication-factor 3`),
/// produces through one broker and consumes through another (the client
/// follows the Raft leaders the brokers report); a replication factor above
/// the live brokers is refused with a clear error.
#[test]
fn the_native_cli_creates_produces_and_consumes_a_replicated_topic() {
    let c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let too_many = c.nodes[0].cli(
        &["topic", "create", "wide", "--replication-factor", "4"],
        None,
    );
    assert!(!too_many.status.success(), "RF 4 on 3 brokers was accepted");
    let err = String::from_utf8_lossy(&too_many.stderr).to_string();
    assert!(err.contains("replication factor"), "{err}");
    common::ok(c.nodes[0].cli(
        &[
            "topic",
            "create",
            "rep",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    ));
    await_topic_on(&c, 1, "rep");
    let input: String = (0..300).map(|i| format!("{i}\n")).collect();
    // The group leaders are elected within a second or two of creation:
    // the CLI retries NOT_LEADER with fresh metadata.
    common::ok(c.nodes[1].cli(&["produce", "rep", "--acks", "all"], Some(input.as_bytes())));
    let out = common::ok(c.nodes[2].cli(&["consume", "rep", "--from-beginning"], None));
    let mut got: Vec<u32> = out
        .lines()
        .map(|l| {
            l.parse()
                .unwrap_or_else(|_| panic!("line {l:?} of:\n{out}"))
        })
        .collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..300).collect::<Vec<u32>>(), "{out}");
}

#[test]
fn a_broker_that_joins_a_serving_cluster_takes_new_partitions_and_serves_them() {
    let c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let mut brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create(&brokers[0], "before", 3);
    kafka::produce(&brokers[0], "before", 120);
    let (node4, _dir4) = c.start_fourth();
    let v = c.settled_view(0, 4, None, Duration::from_secs(30));
    assert!(v.state.brokers[&4].live, "{:?}", v.state.brokers);
    brokers.push(node4.kafka.clone().unwrap());
    let _dump = LogsOnPanic(&c.nodes);
    let _dump4 = LogsOnPanic(std::slice::from_ref(&node4));
    // A topic created through the new node is spread over all four; the
    // new node serves its share, and the cluster kept serving throughout.
    kafka::create(&brokers[3], "after", 8);
    let leaders = kafka::leaders(&brokers[3], "after", &brokers);
    for node in 1..=4 {
        assert!(
            leaders.contains(&node),
            "node {node} leads nothing of {leaders:?}"
        );
    }
    kafka::produce(&brokers[3], "after", 400);
    kafka::consume_in_group(&brokers[0], &brokers[3], "after", "after-readers", 400);
    kafka::consume_in_group(&brokers[3], &brokers[1], "before", "before-readers", 120);
}

#[test]
fn topic_changes_through_any_node_reach_every_node_and_its_files() {
    let mut c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let data_dirs: Vec<std::path::PathBuf> = c.nodes.iter().map(|n| n.data_dir.clone()).collect();
    let partition_dirs = |name: &str| -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, d) in data_dirs.iter().enumerate() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let f = e.file_name().to_string_lossy().to_string();
                if f.starts_with(&format!("{name}-")) {
                    out.push((i + 1, f));
                }
            }
        }
        out.sort();
        out
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(started.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Created through node 1 with the native CLI, with a setting.
    common::ok(c.nodes[0].cli(
        &[
            "topic",
            "create",
            "audit",
            "--partitions",
            "6",
            "--config",
            "retention_ms=3600000",
        ],
        None,
    ));
    // Each node holds the directories of the partitions it leads, and
    // together they hold all six, once each.
    wait_for("six audit directories over the three nodes", &|| {
        partition_dirs("audit").len() == 6
    });
    let dirs = partition_dirs("audit");
    for node in 1..=3 {
        assert!(dirs.iter().any(|(n, _)| *n == node), "{dirs:?}");
    }
    // Node 3 describes it with the setting; node 2 grows it to 9.
    let described = common::ok(c.nodes[2].cli(&["topic", "describe", "audit"], None));
    assert!(described.contains("3600000"), "{described}");
    common::ok(c.nodes[1].cli(&["topic", "alter", "audit", "--partitions", "9"], None));
    wait_for("nine audit directories", &|| {
        partition_dirs("audit").len() == 9
    });
    let listed = common::ok(c.nodes[0].cli(&["topic", "list"], None));
    assert!(listed.contains("audit") && listed.contains('9'), "{listed}");
    // A name that exists is refused through any node, as on one broker.
    let again = c.nodes[2].cli(&["topic", "create", "audit", "--partitions", "1"], None);
    assert!(!again.status.success(), "{again:?}");
    // Some data in each of its partitions (each through its leader).
    let v = admin::view(&c.rpc[0], RPC_TIMEOUT).unwrap();
    for (p, a) in v.state.topics["audit"].partitions.iter().enumerate() {
        let p = p.to_string();
        common::ok(
            c.nodes[a.node as usize - 1]
                .cli(&["produce", "audit", "--partition", &p], Some(b"old\n")),
        );
    }
    // Deleted through node 3: every node removes its directories.
    common::ok(c.nodes[2].cli(&["topic", "delete", "audit"], None));
    wait_for("audit directories removed on every node", &|| {
        partition_dirs("audit").is_empty()
    });
    let gone = c.nodes[0].cli(&["topic", "describe", "audit"], None);
    assert!(!gone.status.success(), "{gone:?}");
    // Deleted and created again at once (nodes may see both in one
    // controller state): the new topic starts empty everywhere.
    common::ok(c.nodes[0].cli(&["topic", "create", "again", "--partitions", "6"], None));
    let v = admin::view(&c.rpc[0], RPC_TIMEOUT).unwrap();
    for (p, a) in v.state.topics["again"].partitions.iter().enumerate() {
        let p = p.to_string();
        let n = &c.nodes[a.node as usize - 1];
        let started = Instant::now();
        while !n
            .cli(&["produce", "again", "--partition", &p], Some(b"old\n"))
            .status
            .success()
        {
            assert!(started.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Node 3 is down (not fenced yet) while "again" is deleted and
    // created again: when it comes back, its first controller state has
    // both changes at once, and its old partitions must not serve as the
    // new topic's.
    c.nodes[2].kill9();
    common::ok(c.nodes[0].cli(&["topic", "delete", "again"], None));
    common::ok(c.nodes[1].cli(&["topic", "create", "again", "--partitions", "6"], None));
    c.nodes[2].restart();
    wait_for("six new directories of again", &|| {
        partition_dirs("again").len() == 6
    });
    let v = admin::view(&c.rpc[0], RPC_TIMEOUT).unwrap();
    for (p, a) in v.state.topics["again"].partitions.iter().enumerate() {
        let p = p.to_string();
        let n = &c.nodes[a.node as usize - 1];
        let started = Instant::now();
        let out = loop {
            let out = n.cli(
                &["consume", "again", "--partition", &p, "--from-beginning"],
                None,
            );
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).to_string();
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{out:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(out, "", "again-{p} on node {}", a.node);
        common::ok(n.cli(&["produce", "again", "--partition", &p], Some(b"new\n")));
    }
}

#[test]
fn a_data_directory_is_served_only_in_the_mode_that_made_it() {
    // `shardlog serve` on `dir` with `extra` flags must exit with an
    // error, not become ready. Returns its stderr.
    let refused = |dir: &std::path::Path, extra: &[&str]| -> String {
        let (code, err) = common::serve_expecting_exit(dir, extra);
        assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {err}");
        err
    };
    // A single broker's topics are not handed to a cluster that would
    // delete them; alone again, the broker still has them.
    let dir = tempfile::tempdir().unwrap();
    let mut single = BrokerProc::start_in(dir.path(), &[]);
    single.create_topic("kept", 2);
    common::ok(single.cli(&["produce", "kept"], Some(b"a\nb\nc\n")));
    single.stop();
    let rpc = format!("127.0.0.1:{}", rpc_port());
    let voters = format!("1@{rpc}");
    let why = refused(
        dir.path(),
        &[
            "--node-id",
            "1",
            "--rpc-listen",
            &rpc,
            "--controller-voters",
            &voters,
        ],
    );
    assert!(why.contains("single") && why.contains("kept"), "{why}");
    single.restart();
    let out = common::ok(single.cli(&["consume", "kept", "--from-beginning"], None));
    assert_eq!(out.lines().count(), 3, "{out}");
    drop(single);
    // A cluster node's directory does not start alone.
    let (mut node, cdir) = start_node(1, &rpc, &voters);
    create_once_elected(&node, "clustered");
    node.stop();
    let why = refused(cdir.path(), &[]);
    assert!(why.contains("cluster node"), "{why}");
}

#[test]
fn concurrent_topic_creations_through_one_broker_all_succeed() {
    // The controller keeps one session per broker (a later request applied
    // first makes an earlier one stale): a broker's requests, its own
    // registration included, must reach it one at a time.
    let rpc = format!("127.0.0.1:{}", rpc_port());
    let (node, _dir) = start_node(1, &rpc, &format!("1@{rpc}"));
    let native = node.native.clone();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|k| {
                let native = native.clone();
                s.spawn(move || {
                    let name = format!("many-{k}");
                    common::cli(
                        &native,
                        &["topic", "create", &name, "--partitions", "2"],
                        None,
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "many-{k}: {o:?}\n{}", node.stderr());
    }
    let listed = common::ok(node.cli(&["topic", "list"], None));
    for k in 0..8 {
        assert!(listed.contains(&format!("many-{k}")), "{listed}");
    }
    assert!(node.stderr().contains("registered with the controller"));
}

#[test]
fn a_controller_that_lost_its_state_cannot_make_a_broker_delete_its_topics() {
    let rpc = format!("127.0.0.1:{}", rpc_port());
    let voters = format!("1@{rpc}");
    let (mut node, dir) = start_node(1, &rpc, &voters);
    create_once_elected(&node, "precious");
    common::ok(node.cli(&["produce", "precious"], Some(b"x\ny\n")));
    node.stop();
    // The only voter loses its controller state: it starts a new cluster.
    std::fs::remove_dir_all(dir.path().join("controller")).unwrap();
    node.restart();
    let started = Instant::now();
    while !node.stderr().contains("not installed") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no refusal logged:\n{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The topic and its data are still served.
    let out = common::ok(node.cli(&["consume", "precious", "--from-beginning"], None));
    assert_eq!(out.lines().collect::<Vec<_>>(), ["x", "y"], "{out}");
    assert!(dir.path().join("precious-0").is_dir());
}

#[test]
fn killing_the_controller_leader_repeatedly_under_topic_creation_loses_no_acknowledged_topic() {
    let kills: usize = env_count("SHARDLOG_CLUSTER_KILLS", 10);
    let mut c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    // Each node's own data path, which does not go through the controller:
    // it must keep serving while the controller fails over. "steady" has
    // one partition per node (placement balances them); each node is sent
    // the partition it leads.
    admin::create_topic(
        &c.rpc,
        "steady",
        3,
        1,
        vec![],
        RPC_TIMEOUT,
        Duration::from_secs(20),
    )
    .unwrap();
    let v = c.settled_view(0, 3, None, Duration::from_secs(30));
    let led_by: BTreeMap<u32, u32> = v.state.topics["steady"]
        .partitions
        .iter()
        .enumerate()
        .map(|(p, a)| (a.node, p as u32))
        .collect();
    assert_eq!(led_by.len(), 3, "one steady partition per node: {led_by:?}");
    // Each node opens its partition once it has installed the table.
    for (i, n) in c.nodes.iter().enumerate() {
        let p = led_by[&(i as u32 + 1)].to_string();
        let started = Instant::now();
        while !n
            .cli(
                &["produce", "steady", "--partition", &p],
                Some(b"warm-up\n"),
            )
            .status
            .success()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node {} never served steady-{p}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut produced = [0usize; 3];
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u128)>>> = Arc::default();
    let creator = {
        let (stop, acked, rpc) = (stop.clone(), acked.clone(), c.rpc.clone());
        std::thread::spawn(move || {
            let mut k = 0;
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("load-{k}");
                // Each node in turn as the entry point, the others as fallbacks.
                let mut addrs = rpc.clone();
                addrs.rotate_left(k % 3);
                match admin::create_topic(
                    &addrs,
                    &name,
                    2,
                    1,
                    vec![],
                    RPC_TIMEOUT,
                    Duration::from_secs(30),
                ) {
                    Ok(id) => acked.lock().unwrap().push((name, id)),
                    Err(_) => failed += 1,
                }
                k += 1;
            }
            failed
        })
    };
    let mut elections = Vec::new();
    for round in 0..kills {
        let alive = (round % 3 + 1) % 3;
        let v = c.settled_view(alive, 3, None, Duration::from_secs(30));
        let leader = v.leader.unwrap();
        let before = acked.lock().unwrap().len();
        c.nodes[leader as usize - 1].kill9();
        let killed_at = Instant::now();
        let other = (0..3).find(|&i| i != leader as usize - 1).unwrap();
        let v = c.settled_view(other, 3, Some(leader), Duration::from_secs(30));
        elections.push(killed_at.elapsed());
        assert_ne!(v.leader, Some(leader));
        for (i, n) in c.nodes.iter().enumerate() {
            if i != leader as usize - 1 {
                let line = format!("round-{round}\n");
                let p = led_by[&(i as u32 + 1)].to_string();
                common::ok(n.cli(
                    &["produce", "steady", "--partition", &p],
                    Some(line.as_bytes()),
                ));
                produced[i] += 1;
                // And consumes, while the controller is still failing over.
                let out = common::ok(n.cli(
                    &["consume", "steady", "--partition", &p, "--from-beginning"],
                    None,
                ));
                assert!(
                    out.lines().any(|l| l == line.trim_end()),
                    "node {}: {out}",
                    i + 1
                );
            }
        }
        // Topic creation resumes under the new leader.
        let resumed = Instant::now();
        while acked.lock().unwrap().len() <= before {
            assert!(
                resumed.elapsed() < Duration::from_secs(20),
                "round {round}: no topic created after the failover"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c.nodes[leader as usize - 1].restart();
    }
    stop.store(true, Ordering::Relaxed);
    let failed = creator.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{kills} leaders killed; elections seen after {:?}; {} topics acknowledged, {failed} creations gave up",
        elections,
        acked.len()
    );
    assert!(
        acked.len() >= kills,
        "too few topics created: {}",
        acked.len()
    );
    // Every node ends with every acknowledged topic, under the id its
    // creator chose (so it was created once, by that request), and the
    // nodes agree byte for byte.
    let started = Instant::now();
    loop {
        let views: Vec<View> = (0..3)
            .filter_map(|i| admin::view(&c.rpc[i], RPC_TIMEOUT).ok())
            .collect();
        let complete = views.len() == 3
            && views.iter().all(|v| {
                acked
                    .iter()
                    .all(|(name, id)| v.state.topics.get(name).is_some_and(|t| t.id == *id))
                    && v.state.encode() == views[0].state.encode()
            });
        if complete {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "acknowledged topics missing or nodes disagree after the kills"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every message a node acknowledged while the controller failed over
    // (acks=all) is in its partition, through its own restarts.
    for (i, n) in c.nodes.iter().enumerate() {
        let p = led_by[&(i as u32 + 1)].to_string();
        let out = common::ok(n.cli(
            &["consume", "steady", "--partition", &p, "--from-beginning"],
            None,
        ));
        let rounds = out.lines().filter(|l| l.starts_with("round-")).count();
        assert_eq!(rounds, produced[i], "node {}'s partition: {out}", i + 1);
    }
}

/// Create a one-partition topic through a one-voter cluster's `node`,
/// retried until its controller has elected itself (up to 20 s).
fn create_once_elected(node: &BrokerProc, name: &str) {
    let started = Instant::now();
    while !node
        .cli(&["topic", "create", name, "--partitions", "1"], None)
        .status
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One cluster node (1 shard, unpinned) in a fresh directory, serving its
/// RPC on `rpc` with the controller voters `voters`.
fn start_node(id: u32, rpc: &str, voters: &str) -> (BrokerProc, tempfile::TempDir) {
    start_node_with_shards(id, rpc, voters, 1)
}

fn start_node_with_shards(
    id: u32,
    rpc: &str,
    voters: &str,
    shards: usize,
) -> (BrokerProc, tempfile::TempDir) {
    start_node_with(id, rpc, voters, shards, &[])
}

fn start_node_with(
    id: u32,
    rpc: &str,
    voters: &str,
    shards: usize,
    extra: &[&str],
) -> (BrokerProc, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("shardlog-cluster-")
        .tempdir()
        .unwrap();
    let id = id.to_string();
    let node = BrokerProc::start_on(
        dir.path(),
        &dir.path().join("broker.stderr"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        shards,
        &[
            &[
                "--no-pin",
                "--node-id",
                &id,
                "--rpc-listen",
                rpc,
                "--controller-voters",
                voters,
            ][..],
            extra,
        ]
        .concat(),
    );
    (node, dir)
}

#[test]
fn hostile_bytes_on_the_rpc_port_close_that_connection_and_nothing_else() {
    use std::io::{Read, Write};
    let rpc = format!("127.0.0.1:{}", rpc_port());
    let (node, _dir) = start_node(1, &rpc, &format!("1@{rpc}"));
    // A one-voter controller elects itself.
    let started = Instant::now();
    while !admin::view(&rpc, RPC_TIMEOUT).is_ok_and(|v| v.leader == Some(1)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let frames: [&[u8]; 5] = [
        // A 4 GiB frame: refused from its length, before any allocation.
        &[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0],
        // Shorter than its own header.
        &[2, 0, 0, 0, 1, 0],
        // Unknown api.
        &[6, 0, 0, 0, 0x63, 0, 0, 0, 0, 0],
        // Raft messages claiming a million entries in 4 bytes.
        &[10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x40, 0x42, 0x0f, 0],
        // A propose whose envelope is garbage.
        &[14, 0, 0, 0, 2, 0, 7, 0, 0, 0, 4, 0, 0, 0, 9, 9, 9, 9],
    ];
    for f in frames {
        let mut s = std::net::TcpStream::connect(&rpc).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(f).unwrap();
        let mut buf = Vec::new();
        // The broker closes the connection without an answer.
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "answered {buf:?} to {f:?}");
    }
    // Raft messages from a replica that is not a voter are dropped by Raft.
    let mut m = raft::eraftpb::Message {
        to: 1,
        from: 77,
        term: 1_000,
        ..Default::default()
    };
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    let mut s = std::net::TcpStream::connect(&rpc).unwrap();
    s.write_all(&shardlog::controller::wire::encode_request(
        0,
        &shardlog::controller::wire::Request::Raft(vec![m]),
    ))
    .unwrap();
    drop(s);
    // Still the leader of its term, still serving.
    std::thread::sleep(Duration::from_millis(300));
    let v = admin::view(&rpc, RPC_TIMEOUT).unwrap();
    assert_eq!(v.leader, Some(1), "{}", node.stderr());
    admin::create_topic(
        std::slice::from_ref(&rpc),
        "after-garbage",
        1,
        1,
        vec![],
        RPC_TIMEOUT,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        node.stderr().contains("rpc connection closed"),
        "{}",
        node.stderr()
    );
}

/// Wait until node `i`'s native listener describes `topic` (a topic created
/// through another node reaches each broker with the controller's table).
fn await_topic_on(c: &Cluster, i: usize, topic: &str) -> String {
    let started = Instant::now();
    loop {
        let out = c.nodes[i].cli(&["topic", "describe", topic], None);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node {} never saw topic {topic}: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The native client follows leaders: a topic created with the CLI through
/// node 1 has leaders on all three nodes; keyed lines produced with the CLI
/// through node 2 all come back, each key's in order, from a CLI consumer
/// bootstrapped from node 3; offsets committed through one node are read
/// through another, for groups whose coordinators are on every node.
#[test]
fn the_native_cli_and_client_produce_and_consume_through_any_bootstrap_node() {
    let c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    common::ok(c.nodes[0].cli(&["topic", "create", "keyed", "--partitions", "6"], None));
    // Every node describes the same leaders, and each node leads some.
    let leaders = |text: &str| -> Vec<u32> {
        text.lines()
            .skip_while(|l| !l.starts_with("partition\tleader"))
            .skip(1)
            .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let seen: Vec<Vec<u32>> = (0..3)
        .map(|i| leaders(&await_topic_on(&c, i, "keyed")))
        .collect();
    assert_eq!(seen[0].len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|l| *l == seen[0]),
        "nodes disagree: {seen:?}"
    );
    let mut nodes = seen[0].clone();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes, vec![1, 2, 3], "leaders {:?}", seen[0]);

    // 12 keys x 50 values, produced through node 2.
    let keys = 12;
    let per_key = 50;
    let mut input = String::new();
    for seq in 0..per_key {
        for k in 0..keys {
            input.push_str(&format!("key-{k}:{seq}\n"));
        }
    }
    common::ok(c.nodes[1].cli(
        &["produce", "keyed", "--key-separator", ":"],
        Some(input.as_bytes()),
    ));
    let out = common::ok(c.nodes[2].cli(
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "--print-key",
            "--print-offset",
        ],
        None,
    ));
    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut partitions_seen = std::collections::BTreeSet::new();
    for line in out.lines() {
        let mut f = line.split('\t');
        let (pos, key, value) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        partitions_seen.insert(pos.split(':').next().unwrap().to_string());
        by_key
            .entry(key.to_string())
            .or_default()
            .push(value.parse().unwrap());
    }
    assert_eq!(by_key.len(), keys, "{out}");
    for (k, vs) in &by_key {
        assert_eq!(
            *vs,
            (0..per_key).collect::<Vec<u32>>(),
            "key {k}: lost, duplicated or reordered"
        );
    }
    assert!(
        partitions_seen.len() > 3,
        "keys landed on {partitions_seen:?}"
    );

    // Offsets: committed through node 1, read through node 3. Groups are
    // spread over the offsets partitions, so their coordinators are on
    // every node (checked below through FindCoordinator).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use shardlog::client::Client;
        let via1 = Client::connect(&c.nodes[0].native).await.unwrap();
        let via3 = Client::connect(&c.nodes[2].native).await.unwrap();
        let groups: Vec<String> = (0..12).map(|g| format!("group-{g}")).collect();
        for (i, g) in groups.iter().enumerate() {
            via1.commit_offsets(g, &[("keyed", 0, 10 + i as u64), ("keyed", 5, 7)])
                .await
                .unwrap_or_else(|e| panic!("commit for {g} through node 1: {e}"));
        }
        for (i, g) in groups.iter().enumerate() {
            let got = via3
                .committed_offsets(g, "keyed", &[0, 1, 5])
                .await
                .unwrap_or_else(|e| panic!("offsets of {g} through node 3: {e}"));
            assert_eq!(got, vec![Some(10 + i as u64), None, Some(7)], "{g}");
        }
        // The coordinators of those groups really are on several nodes.
        let mut coordinators = std::collections::BTreeSet::new();
        for g in &groups {
            coordinators.insert(find_coordinator(&c.nodes[1].native, g).await);
        }
        assert!(coordinators.len() > 1, "every group on {coordinators:?}");
    });
    // Each offsets partition is led by the leader the controller placed (its
    // first replica): placement spreads them over the nodes, and the placed
    // leader times out first in its group's first election.
    let kafka0 = c.nodes[0].kafka.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaders = kafka::leaders_any(&kafka0, shardlog::groups::OFFSETS_TOPIC);
        let placed: Vec<i32> = kafka::replicas_of(&kafka0, shardlog::groups::OFFSETS_TOPIC)
            .iter()
            .map(|r| r.first().copied().unwrap_or(-1))
            .collect();
        if leaders == placed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offsets partitions led by {leaders:?}, placed on {placed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// FindCoordinator asked raw of the broker at `addr`.
async fn find_coordinator(addr: &str, group: &str) -> u32 {
    use shardlog::protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    use shardlog::protocol::ApiKey;
    let conn = shardlog::client::Connection::connect(addr).await.unwrap();
    let req = FindCoordinatorRequest {
        group: group.to_string(),
    };
    let mut r = conn
        .call(ApiKey::FindCoordinator, |b| req.encode(b))
        .await
        .unwrap();
    FindCoordinatorResponse::decode(&mut r).unwrap().node
}

/// The loadgen binary: `LOADGEN_BIN`, else next to the shardlog binary
/// (`cargo test --workspace`, the README's test command, builds it before
/// any test runs; alone, `cargo test --test cluster` does not: build it
/// with `cargo build -p loadgen` first).
fn loadgen_bin() -> std::path::PathBuf {
    let p = std::env::var_os("LOADGEN_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| bin().with_file_name("loadgen"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p loadgen` (or set LOADGEN_BIN)",
        p.display()
    );
    p
}

/// loadgen bootstrapped from one node of a cluster produces to and
/// consumes from the leaders of a topic spread over all three nodes, and
/// its delivery checks find nothing lost, duplicated or reordered.
#[test]
fn loadgen_against_a_cluster_node_loses_nothing() {
    let lg = loadgen_bin();
    let c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let out = std::process::Command::new(lg)
        .args([
            "run",
            "--broker",
            &c.nodes[1].native,
            "--topic",
            "lg-cluster",
            "--partitions",
            "6",
            "--rate",
            "2000",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--drain-timeout",
            "10s",
            "--quiet",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let checks = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("checks"))
        .unwrap_or_else(|| panic!("no checks line:\n{stdout}"));
    eprintln!("{stdout}");
    assert!(checks.contains(", lost 0,"), "{checks}");
    assert!(checks.contains("duplicated 0, reordered 0"), "{checks}");
    // The topic really is spread: every node leads some of its partitions.
    let text = await_topic_on(&c, 0, "lg-cluster");
    for node in 1..=3 {
        assert!(
            text.lines()
                .any(|l| l.split('\t').nth(1) == Some(&node.to_string())),
            "node {node} leads nothing:\n{text}"
        );
    }
}

/// Move partition `partition` of `topic` to `node` through the controller
/// (there is no CLI for it): proposed through each node in turn until one
/// reaches the controller leader.
fn move_partition(rpc: &[String], topic: &str, partition: u32, node: u32) {
    use shardlog::controller::command::{Command, Envelope};
    use shardlog::controller::state::Outcome;
    use shardlog::controller::wire::{ProposeReply, Request, Response};
    let env = Envelope {
        origin: 0,
        seq: 0,
        command: Command::MovePartition {
            name: topic.to_string(),
            partition,
            node,
            shard: 0,
        },
    };
    let started = Instant::now();
    for addr in rpc.iter().cycle() {
        if let Ok(Response::Proposed(ProposeReply::Applied(r))) =
            admin::call(addr, &Request::Propose(env.clone()), RPC_TIMEOUT)
        {
            assert!(matches!(r.outcome, Outcome::Done), "{:?}", r.outcome);
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "move not applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A producer keeps going when its partition's leader moves: batches the
/// old leader refuses with NotLeader go to the new leader after a routes
/// refresh, in order, and every record is acknowledged. The new leader's
/// log (data does not move without replicas) holds an unbroken, ordered
/// run of the records up to the last one.
#[test]
fn a_producer_follows_a_partition_whose_leader_moves() {
    use shardlog::client::{Client, Producer, ProducerConfig};
    use shardlog::protocol::messages::Acks;
    let c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    admin::create_topic(
        &[c.rpc[0].clone()],
        "moving",
        1,
        1,
        vec![],
        RPC_TIMEOUT,
        Duration::from_secs(20),
    )
    .unwrap();
    let from =
        admin::view(&c.rpc[0], RPC_TIMEOUT).unwrap().state.topics["moving"].partitions[0].node;
    let to = from % 3 + 1;
    for i in 0..3 {
        await_topic_on(&c, i, "moving");
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let move_now = AtomicBool::new(false);
    let moved = AtomicBool::new(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sent = std::thread::scope(|s| {
        s.spawn(|| {
            while !move_now.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            move_partition(&c.rpc, "moving", 0, to);
            moved.store(true, Ordering::SeqCst);
        });
        rt.block_on(async {
            let client = Client::connect(&c.nodes[1].native).await.unwrap();
            let (a, e) = (acked.clone(), errors.clone());
            let cfg = ProducerConfig {
                acks: Acks::Leader,
                // Small batches, many in flight when the leader moves.
                batch_bytes: 512,
                linger_ms: 1,
                on_batch_acked: Some(Arc::new(move |b| match b.error {
                    None => a.lock().unwrap().extend_from_slice(b.tokens),
                    Some(err) => e.lock().unwrap().push(err.to_string()),
                })),
                ..ProducerConfig::default()
            };
            let p = Producer::new(client, cfg);
            // Before the move, while it is applied, and 1000 records after.
            let mut seq = 0u64;
            let mut after = None;
            while after.is_none_or(|a| seq < a + 1000) {
                let v = seq.to_string();
                p.send_to("moving", 0, None, Some(v.as_bytes()), &[], 0, seq)
                    .await
                    .unwrap();
                seq += 1;
                if seq == 1000 {
                    move_now.store(true, Ordering::SeqCst);
                }
                if after.is_none() && moved.load(Ordering::SeqCst) {
                    after = Some(seq);
                }
                if seq.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            p.close().await.unwrap();
            seq
        })
    });
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_unstable();
    assert_eq!(acked, (0..sent).collect::<Vec<u64>>(), "acknowledged");
    let view = admin::view(&c.rpc[0], RPC_TIMEOUT).unwrap();
    assert_eq!(view.state.topics["moving"].partitions[0].node, to);
    // The new leader's log, read through node 3: an unbroken run ending
    // at the last record, starting after some records went to the old leader.
    let out = common::ok(c.nodes[2].cli(&["consume", "moving", "--from-beginning"], None));
    let values: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    let first = *values.first().expect("the new leader holds records");
    assert!(
        first > 0,
        "nothing went to the old leader: the move was not mid-stream"
    );
    assert_eq!(
        values,
        (first..sent).collect::<Vec<u64>>(),
        "the new leader's log is not the ordered run {first}..{sent}"
    );
    eprintln!("leader moved {from} -> {to}; records {first}..{sent} on the new leader");
}

/// The leader epoch of a replicated partition is the Raft term, and the
/// new leader after a kill answers OffsetForLeaderEpoch from the epoch
/// history (the old epoch ends where the new one's first entry starts);
/// a request naming an older epoch is fenced (FENCED_LEADER_EPOCH), a
/// newer one is UNKNOWN_LEADER_EPOCH, and a follower refuses
/// (NOT_LEADER_OR_FOLLOWER). Kafka clients use this to find out whether
/// their position is still on the leader's log after a failover.
#[test]
fn a_new_leader_answers_epoch_ends_from_its_history_and_fences_stale_epochs() {
    use common::kafka::{tn, Conn};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::*;
    let mut c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], "epochs", 1, 3);
    kafka::leaders(&brokers[0], "epochs", &brokers);
    kafka::produce(&brokers[1], "epochs", 100);
    // (leader, epoch) of partition 0, from a broker's Metadata v9.
    let view = |addr: &str| -> (i32, i32) {
        let r: MetadataResponse = Conn::new(addr).call(
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(tn("epochs"))),
            ])),
        );
        let p = &r.topics[0].partitions[0];
        (p.leader_id.0, p.leader_epoch)
    };
    let (old_leader, old_epoch) = view(&brokers[0]);
    assert!(old_leader > 0 && old_epoch >= 1, "{old_leader} {old_epoch}");
    let victim = old_leader as usize - 1;
    c.nodes[victim].kill9();
    let survivor = brokers[(victim + 1) % 3].clone();
    let started = Instant::now();
    let (leader, epoch) = loop {
        let (l, e) = view(&survivor);
        if l > 0 && l != old_leader && e > old_epoch {
            break (l, e);
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no new leader");
        std::thread::sleep(Duration::from_millis(200));
    };
    kafka::produce_range(&survivor, "epochs", 100..200);
    let ask = |addr: &str, current: i32, asked: i32| {
        let r: OffsetForLeaderEpochResponse = Conn::new(addr).call(
            ApiKey::OffsetForLeaderEpoch,
            3,
            &OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(tn("epochs"))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(asked)])]),
        );
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    let leader_addr = brokers[leader as usize - 1].clone();
    let (code, e_old, end_old) = ask(&leader_addr, epoch, old_epoch);
    let (code2, e_new, end_new) = ask(&leader_addr, epoch, epoch);
    eprintln!("epoch {old_epoch} ends at {end_old}; epoch {epoch} ends at {end_new}");
    assert_eq!(
        (code, e_old),
        (0, old_epoch),
        "the old epoch, from the history"
    );
    assert_eq!((code2, e_new), (0, epoch), "the current epoch");
    // The first 100 records (and the first leader's control entry) were
    // written in the old epoch; 100 more (and the new leader's control
    // entry) in the new one, which ends at the log end.
    assert!(
        end_old >= 100 && end_new >= end_old + 100,
        "{end_old} {end_new}"
    );
    let list_offsets = |current: i32| {
        let r: ListOffsetsResponse = Conn::new(&leader_addr).call(
            ApiKey::ListOffsets,
            4,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(tn("epochs"))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_current_leader_epoch(current)
                            .with_timestamp(-1),
                    ])]),
        );
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.leader_epoch)
    };
    let (code, offset, leader_epoch) = list_offsets(-1);
    assert_eq!(code, 0);
    assert_eq!(
        end_new, offset,
        "the current epoch ends at the high watermark once produce is acknowledged"
    );
    assert_eq!(leader_epoch, epoch, "ListOffsets names the group's term");
    // ListOffsets naming the current epoch is answered; a stale one is
    // fenced, a future one unknown.
    assert_eq!(list_offsets(epoch).0, 0);
    assert_eq!(
        list_offsets(old_epoch).0,
        74,
        "ListOffsets: FENCED_LEADER_EPOCH"
    );
    assert_eq!(
        list_offsets(epoch + 5).0,
        75,
        "ListOffsets: UNKNOWN_LEADER_EPOCH"
    );
    // Stale and future epochs, and a follower.
    assert_eq!(
        ask(&leader_addr, old_epoch, old_epoch).0,
        74,
        "FENCED_LEADER_EPOCH"
    );
    assert_eq!(
        ask(&leader_addr, epoch + 5, epoch).0,
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
    let follower = (0..3)
        .find(|i| *i != victim && *i != leader as usize - 1)
        .unwrap();
    assert_eq!(
        ask(&brokers[follower], -1, epoch).0,
        6,
        "NOT_LEADER_OR_FOLLOWER"
    );
    // A Fetch naming the old epoch is fenced too.
    let f: FetchResponse = Conn::new(&leader_addr).call(
        ApiKey::Fetch,
        12,
        &FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(tn("epochs"))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(old_epoch)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    assert_eq!(
        f.responses[0].partitions[0].error_code, 74,
        "Fetch: FENCED_LEADER_EPOCH"
    );
}

/// Brokers with two shards each: a replicated partition's group runs on
/// the shard that owns the partition's replica, so peers' batches arrive
/// at shard 0's RPC listener and are routed to the owning shard, and
/// produce reaching the other shard is forwarded. Six partitions spread
/// over both shards of every broker; a leader is killed and the rest go on.
#[test]
fn replicated_partitions_on_two_shard_brokers_replicate_and_fail_over() {
    let (mut c, brokers, leaders) = replicated_and_read_back(2, "sharded", 6, 600);
    let victim = leaders[1] as usize - 1;
    c.nodes[victim].kill9();
    let survivor = brokers[(victim + 1) % 3].clone();
    c.wait_for_leaders_without(&survivor, "sharded", victim);
    kafka::produce_range(&survivor, "sharded", 600..900);
    let all = kafka::read_all(&brokers[(victim + 2) % 3], "sharded", 6, 900);
    let distinct: std::collections::BTreeSet<usize> = all.iter().copied().collect();
    let missing: Vec<usize> = (0..900).filter(|v| !distinct.contains(v)).collect();
    assert!(missing.is_empty(), "missing after the kill: {missing:?}");
}

/// A leader cut off from the other brokers (not from its clients: a
/// failed link between racks, made with network namespaces and blackhole
/// routes) while an idempotent producer writes: the others elect a new
/// leader, the cut-off one steps down (Raft's check-quorum) and cannot
/// acknowledge anything, and once healed it rejoins as a follower,
/// dropping what it appended alone. Every acknowledged message is read
/// back once, in order per key. `SHARDLOG_REPL_ISOLATIONS` (default 2)
/// sets how many leaders are cut off, one after the other.
/// Three brokers, each in its own network namespace of `net` (one shard,
/// not pinned), once a controller leads and all three registered.
fn netns_cluster(net: &common::netns::Net) -> (Vec<BrokerProc>, Vec<tempfile::TempDir>) {
    let rpc: Vec<String> = (1..=3).map(|i| format!("{}:9500", net.addr(i))).collect();
    let voters = rpc
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let dir = tempfile::Builder::new()
            .prefix("shardlog-netns-")
            .tempdir()
            .unwrap();
        let wrapper = net.exec(i);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let listen = format!("{}:0", net.addr(i));
        let id = i.to_string();
        nodes.push(BrokerProc::start_wrapped(
            &wrapper,
            dir.path(),
            &dir.path().join("broker.stderr"),
            &listen,
            &listen,
            1,
            &[
                "--no-pin",
                "--node-id",
                &id,
                "--rpc-listen",
                &rpc[i - 1],
                "--controller-voters",
                &voters,
            ],
        ));
        dirs.push(dir);
    }
    let started = Instant::now();
    while !admin::view(&rpc[0], RPC_TIMEOUT)
        .is_ok_and(|v| v.leader.is_some() && v.state.brokers.len() >= 3)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no controller");
        std::thread::sleep(Duration::from_millis(100));
    }
    (nodes, dirs)
}

#[test]
fn an_isolated_leader_is_replaced_and_rejoins_without_losing_or_duplicating() {
    let rounds: usize = env_count("SHARDLOG_REPL_ISOLATIONS", 2);
    let net = common::netns::Net::new(3);
    let (nodes, _dirs) = netns_cluster(&net);
    let brokers: Vec<String> = nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], "isolated", 3, 3);
    kafka::leaders(&brokers[0], "isolated", &brokers);
    let (producer, acked, stop) = spawn_idempotent_producer(brokers.join(","), "isolated");
    for r in 0..rounds {
        std::thread::sleep(Duration::from_secs(2));
        let p = r % 3;
        let leaders = kafka::leaders_any(&brokers[(r + 1) % 3], "isolated");
        let Some(&l) = leaders.get(p).filter(|l| **l > 0) else {
            continue;
        };
        let cut = l as usize;
        net.isolate(cut);
        let other = brokers[cut % 3].clone();
        let started = Instant::now();
        // The leader seen here is the one used below: asking again may
        // catch the partition between leaders (-1), as a CI run did.
        let led_by = loop {
            let now = kafka::leaders_any(&other, "isolated");
            if now.get(p).is_some_and(|n| *n > 0 && *n as usize != cut) {
                eprintln!(
                    "isolation {r}: broker {cut} cut off; partition {p} now led by {}",
                    now[p]
                );
                break now[p] as usize;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "isolation {r}: no new leader of partition {p} without broker {cut}: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        // The new leader soon stops counting the cut-off broker in sync
        // (not heard from), and counts it again once it caught up.
        let new_leader = brokers[led_by - 1].clone();
        let in_sync_without = |want_cut: bool| {
            let started = Instant::now();
            loop {
                let isr = kafka::isr_of(&new_leader, "isolated");
                let has_cut = isr.get(p).is_some_and(|i| i.contains(&(cut as i32)));
                if isr.get(p).is_some_and(|i| i.len() >= 2) && has_cut == want_cut {
                    eprintln!("isolation {r}: partition {p} in sync: {:?}", isr[p]);
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "isolation {r}: partition {p}'s in-sync replicas {isr:?} (broker {cut} in: {want_cut})"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        in_sync_without(false);
        std::thread::sleep(Duration::from_secs(1));
        net.heal(cut);
        in_sync_without(true);
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let all = kafka::read_all(&brokers[0], "isolated", 3, acked.len());
    check_exactly_once(&format!("{rounds} leader isolations"), &acked, &all);
    drop(nodes);
}

/// Issue 13: `__consumer_offsets` is replicated (RF 3 on three brokers),
/// and a group's committed offsets survive `kill -9` of the broker
/// leading the group's offsets partition, again and again. Per round: a
/// librdkafka consumer in the group reads the topic (throttled, so it is
/// still reading and committing when the kill comes) and commits what it
/// read every 10 messages, synchronously; the leader of the group's
/// offsets partition is killed; OffsetFetch through a survivor must show
/// at least every commit acknowledged before it asked, and never less than
/// any earlier answer; the killed broker restarts. The next round's
/// consumer (a new member) must start each partition at the committed
/// offset: its first message is the first one at or after it. At the end
/// every produced message was consumed at least once, and no epoch of any
/// partition had two leaders (brokers' logs).
/// `SHARDLOG_OFFSETS_KILLS` (default 3) sets how many leaders are killed.
#[test]
fn committed_offsets_survive_repeated_kills_of_the_offsets_leader() {
    let kills: usize = env_count("SHARDLOG_OFFSETS_KILLS", 3);
    const TOPIC: &str = "work";
    const GROUP: &str = "survivors";
    const PER_ROUND: usize = 600;
    let mut c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], TOPIC, 3, 3);
    kafka::leaders(&brokers[0], TOPIC, &brokers);
    // FindCoordinator creates the offsets topic: three brokers are live,
    // so each of its partitions has three replicas.
    let gp = shardlog::groups::partition_of(GROUP, shardlog::groups::OFFSETS_PARTITIONS) as usize;
    let first = coordinator_of(&brokers[0], GROUP, None);
    let replicas = kafka::replicas_of(&brokers[0], shardlog::groups::OFFSETS_TOPIC);
    assert!(
        replicas.len() == shardlog::groups::OFFSETS_PARTITIONS as usize
            && replicas.iter().all(|r| r.len() == 3),
        "offsets topic replicas: {replicas:?}"
    );
    eprintln!("group {GROUP}: offsets partition {gp}, coordinator {first}");

    let mut produced = 0;
    let mut committed = BTreeMap::<i32, i64>::new();
    let mut consumed = std::collections::BTreeSet::<usize>::new();
    // Per round after the first: the committed offsets it started from
    // and the first offset it read per partition.
    let mut resumes = Vec::<(BTreeMap<i32, i64>, BTreeMap<i32, i64>)>::new();
    let mut fetches = 0;
    for k in 0..=kills {
        kafka::produce_range(&brokers[k % 3], TOPIC, produced..produced + PER_ROUND);
        produced += PER_ROUND;
        let last = k == kills;
        let started_from = committed.clone();
        let run = GroupConsumer::spawn(brokers.join(","), TOPIC, GROUP, !last);
        if !last {
            run.wait_for_commits(3, Duration::from_secs(60));
            let coordinator = coordinator_of(&brokers[(k + 1) % 3], GROUP, None);
            let victim = coordinator as usize - 1;
            c.nodes[victim].kill9();
            let killed = Instant::now();
            let survivor = &brokers[(victim + 1) % 3];
            eprintln!(
                "kill {k}: broker {coordinator}, coordinator of {GROUP}; {} commits acknowledged so far",
                run.commits()
            );
            // Everything acknowledged before OffsetFetch asks is there.
            let acked = run.acked();
            let now = fetch_committed(survivor, TOPIC, GROUP);
            fetches += 1;
            check_committed(&format!("after kill {k}"), &committed, &acked, &now);
            committed = now;
            // The group moved to a survivor, and commits go on there.
            let next = coordinator_of(survivor, GROUP, Some(coordinator));
            let before = run.commits();
            run.wait_for_commits(before + 3, Duration::from_secs(60));
            eprintln!(
                "kill {k}: {GROUP} moved to broker {next}, 3 more commits acknowledged there {:.1} s after the kill",
                killed.elapsed().as_secs_f64()
            );
            c.nodes[victim].restart();
            std::thread::sleep(Duration::from_secs(2));
        } else {
            run.wait_for(produced, &consumed, Duration::from_secs(120));
        }
        let done = run.stop();
        let now = fetch_committed(&brokers[k % 3], TOPIC, GROUP);
        fetches += 1;
        check_committed(&format!("end of round {k}"), &committed, &done.acked, &now);
        committed = now;
        eprintln!(
            "round {k}: {} consumed, {} commits acknowledged, {} refused; committed {committed:?}",
            done.values.len(),
            done.commits,
            done.commit_errors
        );
        consumed.extend(done.values);
        if k > 0 {
            resumes.push((started_from, done.first));
        }
    }
    let missing: Vec<usize> = (0..produced).filter(|v| !consumed.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "produced but never consumed: {} of {produced}: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    // Resumed from the committed offsets: the first offset read per
    // partition is the first message at or after the committed one (a
    // Raft control batch may sit between them).
    let data = offsets_of(&brokers[0], TOPIC, 3, produced);
    assert_eq!(resumes.len(), kills);
    for (round, (from, first)) in resumes.iter().enumerate() {
        let checked = from.keys().filter(|p| first.contains_key(p)).count();
        assert!(
            checked > 0,
            "round {}: no partition read from a committed offset: {from:?} {first:?}",
            round + 1
        );
        for (p, at) in from {
            let Some(got) = first.get(p) else {
                continue; // not read this round
            };
            let want = data[p].range(*at..).next().copied();
            assert_eq!(
                Some(*got),
                want,
                "round {}: partition {p} committed at {at}, first read at {got}",
                round + 1
            );
        }
    }
    let won = assert_one_leader_per_epoch(&c);
    let offsets_epochs = won
        .keys()
        .filter(|(t, p, _)| t == shardlog::groups::OFFSETS_TOPIC && *p as usize == gp)
        .count();
    assert!(
        offsets_epochs > kills,
        "offsets partition {gp}: {offsets_epochs} leaderships logged for {kills} kills"
    );
    eprintln!(
        "{kills} kills of the offsets leader: {produced} produced, all consumed; \
         {fetches} OffsetFetch answers never went back; {offsets_epochs} epochs of partition {gp}"
    );
}

/// The node FindCoordinator (Kafka, v3) names for `group` when asked of
/// `addr`, once it names one (other than `not`) without error: up to 30 s.
fn coordinator_of(addr: &str, group: &str, not: Option<i32>) -> i32 {
    let started = Instant::now();
    loop {
        let (error, node) = find_coordinator_kafka(addr, group);
        if error == 0 && Some(node) != not {
            return node;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{addr}: no coordinator for {group} (error {error}, node {node}, not {not:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One Kafka FindCoordinator (v3) for `group` asked of `addr`: (error, node).
fn find_coordinator_kafka(addr: &str, group: &str) -> (i16, i32) {
    use common::kafka::{s, Conn};
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    let mut conn = Conn::new(addr);
    let r: FindCoordinatorResponse = conn.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default()
            .with_key(s(group))
            .with_key_type(0),
    );
    (r.error_code, r.node_id.0)
}

/// The group's committed offsets of `topic`'s partitions 0..3 (OffsetFetch
/// through librdkafka), retried for up to 60 s while the group's
/// coordinator fails over. A partition without a committed offset is left out.
fn fetch_committed(bootstrap: &str, topic: &str, group: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let log = ClientLog::default();
    let reader: BaseConsumer<ClientLog> = ClientLog::config(bootstrap)
        .set("group.id", group)
        .create_with_context(log.clone())
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(topic, p);
    }
    let started = Instant::now();
    loop {
        match reader.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => {
                return got
                    .elements()
                    .iter()
                    .filter_map(|e| Some((e.partition(), e.offset().to_raw()?)))
                    .filter(|(_, o)| *o >= 0)
                    .collect()
            }
            Err(e) => log.failed_attempt(
                &format!("OffsetFetch through {bootstrap}"),
                started,
                &e,
                || {
                    let _ = reader.poll(Duration::from_millis(100));
                },
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A librdkafka client context that keeps the client's last debug lines
/// (group coordination, brokers, requests), printed when a retry loop
/// gives up: the broker's log alone does not say what the client was
/// waiting for.
#[derive(Clone, Default)]
struct ClientLog(Arc<Mutex<std::collections::VecDeque<String>>>);

impl ClientLog {
    const KEPT: usize = 400;

    /// A client configuration that logs what [`ClientLog`] keeps.
    fn config(bootstrap: &str) -> rdkafka::config::ClientConfig {
        let mut c = rdkafka::config::ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("debug", "cgrp,broker,protocol")
            // The crate passes librdkafka the `log` crate's level, off
            // in a test without a logger.
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        c
    }

    /// Note a failed attempt at `what`, and past 60 s since `started`
    /// fail with the client's last lines. `drain` polls the client:
    /// librdkafka queues its log lines for the client's poll, one per
    /// event, so it polls for a while to take them all.
    fn failed_attempt(
        &self,
        what: &str,
        started: Instant,
        e: &dyn std::fmt::Display,
        drain: impl FnOnce(),
    ) {
        eprintln!("{what} at {:.1?}: {e}", started.elapsed());
        drain();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: {e}\nlibrdkafka's last lines:\n{}",
            self.tail()
        );
    }

    fn tail(&self) -> String {
        let lines = self.0.lock().unwrap();
        lines.iter().map(|l| format!("  {l}\n")).collect()
    }
}

impl rdkafka::ClientContext for ClientLog {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        let mut lines = self.0.lock().unwrap();
        if lines.len() == Self::KEPT {
            lines.pop_front();
        }
        // No time stamp: librdkafka queues its lines for the client's
        // poll, so the time here is the poll's, not the line's.
        lines.push_back(format!("{fac} {line}"));
    }
}

impl rdkafka::consumer::ConsumerContext for ClientLog {}

/// What OffsetFetch answered (`now`) holds every acknowledged commit and
/// went back on no partition since the previous answer.
fn check_committed(
    when: &str,
    before: &BTreeMap<i32, i64>,
    acked: &BTreeMap<i32, i64>,
    now: &BTreeMap<i32, i64>,
) {
    for (p, a) in acked {
        assert!(
            now.get(p).is_some_and(|n| n >= a),
            "{when}: partition {p}: commit of {a} acknowledged, OffsetFetch says {:?} (all: {now:?})",
            now.get(p)
        );
    }
    for (p, b) in before {
        assert!(
            now.get(p).is_some_and(|n| n >= b),
            "{when}: partition {p}: committed offset went back from {b} to {:?} (all: {now:?})",
            now.get(p)
        );
    }
}

/// Every data offset of `topic` per partition, read from the beginning
/// (assigned, no group) until `n` messages were read.
fn offsets_of(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> BTreeMap<i32, std::collections::BTreeSet<i64>> {
    use rdkafka::Message;
    let consumer = kafka::from_beginning(bootstrap, topic, partitions);
    let mut out = BTreeMap::<i32, std::collections::BTreeSet<i64>>::new();
    let mut read = 0;
    let started = Instant::now();
    while read < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "read {read} of {n}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            out.entry(m.partition()).or_default().insert(m.offset());
            read += 1;
        }
    }
    out
}

/// A librdkafka consumer in a group on its own thread: it reads `topic`
/// (throttled to about 100 messages/s if asked, so a round outlasts a
/// failover), and commits its position (each partition's last read + 1,
/// never lowered) every 10 messages, synchronously, recording the
/// commits acknowledged.
struct GroupConsumer {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<GroupRun>>,
    handle: std::thread::JoinHandle<()>,
}

#[derive(Debug, Default, Clone)]
struct GroupRun {
    values: Vec<usize>,
    /// The first offset read per partition.
    first: BTreeMap<i32, i64>,
    /// The highest acknowledged commit per partition.
    acked: BTreeMap<i32, i64>,
    commits: usize,
    commit_errors: usize,
}

impl GroupConsumer {
    fn spawn(bootstrap: String, topic: &'static str, group: &'static str, throttle: bool) -> Self {
        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        use rdkafka::Message;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(GroupRun::default()));
        let (st, shared) = (stop.clone(), state.clone());
        let handle = std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", group)
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("session.timeout.ms", "30000")
                .create()
                .unwrap();
            consumer.subscribe(&[topic]).unwrap();
            let mut next = BTreeMap::<i32, i64>::new();
            let mut since_commit = 0;
            let commit = |next: &BTreeMap<i32, i64>| {
                let mut tpl = rdkafka::TopicPartitionList::new();
                for (p, o) in next {
                    tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o))
                        .unwrap();
                }
                let r = consumer.commit(&tpl, CommitMode::Sync);
                let mut s = shared.lock().unwrap();
                match r {
                    Ok(()) => {
                        s.commits += 1;
                        for (p, o) in next {
                            let a = s.acked.entry(*p).or_insert(*o);
                            *a = (*a).max(*o);
                        }
                        true
                    }
                    Err(_) => {
                        s.commit_errors += 1;
                        false
                    }
                }
            };
            while !st.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let v: usize = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                {
                    let mut s = shared.lock().unwrap();
                    s.values.push(v);
                    s.first.entry(m.partition()).or_insert(m.offset());
                }
                let n = next.entry(m.partition()).or_insert(0);
                *n = (*n).max(m.offset() + 1);
                since_commit += 1;
                if since_commit >= 10 && commit(&next) {
                    since_commit = 0;
                }
                if throttle {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // The last position, committed before leaving (retried while
            // the coordinator moves).
            let started = Instant::now();
            while !next.is_empty() && !commit(&next) {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the final commit was refused for 60 s"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        GroupConsumer {
            stop,
            state,
            handle,
        }
    }

    fn acked(&self) -> BTreeMap<i32, i64> {
        self.state.lock().unwrap().acked.clone()
    }

    fn commits(&self) -> usize {
        self.state.lock().unwrap().commits
    }

    /// Wait until `n` commits were acknowledged in all.
    fn wait_for_commits(&self, n: usize, max: Duration) {
        let started = Instant::now();
        while self.commits() < n {
            assert!(
                !self.handle.is_finished() && started.elapsed() < max,
                "{} of {n} commits acknowledged within {max:?}: {:?}",
                self.commits(),
                self.state.lock().unwrap().commit_errors
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until, with `earlier`, every value below `n` was consumed.
    fn wait_for(&self, n: usize, earlier: &std::collections::BTreeSet<usize>, max: Duration) {
        let started = Instant::now();
        loop {
            let mut all = earlier.clone();
            all.extend(self.state.lock().unwrap().values.iter().copied());
            if all.len() >= n {
                return;
            }
            assert!(
                started.elapsed() < max,
                "{} of {n} consumed within {max:?}",
                all.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop, commit the last position and leave the group.
    fn stop(self) -> GroupRun {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        let s = self.state.lock().unwrap().clone();
        s
    }
}

/// A coordinator that loses its group's offsets partition without dying
/// (cut off from the other brokers, in network namespaces) drops the
/// partition's groups, and when it leads the partition again later, still
/// without a restart, it serves the offsets other leaders took meanwhile,
/// not what it held before. The leader of the offsets partition is cut
/// off and healed, over and over, until the first coordinator leads again
/// (each time one of two brokers wins, so a few rounds); a standalone
/// commit (librdkafka, no membership) goes through each new leader.
#[test]
fn a_coordinator_that_wins_its_offsets_partition_back_serves_what_others_committed_meanwhile() {
    const GROUP: &str = "returning";
    let net = common::netns::Net::new(3);
    let (nodes, _dirs) = netns_cluster(&net);
    let _dump = LogsOnPanic(&nodes);
    let brokers: Vec<String> = nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], "work", 3, 3);
    // The first coordinator takes a commit and serves it (the offsets
    // partitions were just elected: asked again until the same broker
    // coordinated before and after, so it holds the group in memory).
    let offset = 10;
    let first = loop {
        let before = coordinator_of(&brokers[0], GROUP, None);
        commit_standalone(&brokers.join(","), GROUP, "work", offset);
        assert_eq!(
            fetch_committed(&brokers[0], "work", GROUP).get(&0),
            Some(&offset)
        );
        if coordinator_of(&brokers[0], GROUP, None) == before {
            break before;
        }
    };
    let mut offset = offset;
    let mut leader = first;
    for round in 1.. {
        assert!(
            round <= 12,
            "broker {first} never led the offsets partition again"
        );
        // Cut the leader off; one of the other two takes over.
        net.isolate(leader as usize);
        let other = &brokers[leader as usize % 3];
        let next = coordinator_of(other, GROUP, Some(leader));
        // The cut-off broker stops naming itself (check-quorum), so no
        // client is sent to it.
        let started = Instant::now();
        while find_coordinator_kafka(&brokers[leader as usize - 1], GROUP) == (0, leader) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "broker {leader} still leads"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // What the new leader serves is the last commit, whoever took it.
        let got = fetch_committed(other, "work", GROUP);
        assert_eq!(
            got.get(&0),
            Some(&offset),
            "round {round}: broker {next} leads after {leader}, and serves {got:?}"
        );
        eprintln!("round {round}: broker {leader} cut off, broker {next} leads and serves offset {offset}");
        if next == first {
            break;
        }
        offset += 10;
        commit_standalone(other, GROUP, "work", offset);
        net.heal(leader as usize);
        leader = next;
        // The healed broker catches up before the next cut.
        std::thread::sleep(Duration::from_secs(2));
    }
    let log = nodes[first as usize - 1].plain_log();
    let groups_lines: String = log
        .lines()
        .filter(|l| l.contains("kafka:") || l.contains("became leader"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        log.contains("partition no longer led here: its groups are dropped"),
        "broker {first} dropped its groups when it lost the lead:\n{groups_lines}"
    );
    assert!(
        log.matches("partition led here: its groups are loaded")
            .count()
            >= 2,
        "broker {first} loaded its groups in two terms:\n{groups_lines}"
    );
    assert_one_leader_per_epoch_in(&nodes);
}

/// Commit `offset` for partition 0 of `topic` in `group` without joining
/// it (generation -1), through librdkafka; retried for up to 60 s.
fn commit_standalone(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let log = ClientLog::default();
    let c: BaseConsumer<ClientLog> = ClientLog::config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(log.clone())
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    let started = Instant::now();
    while let Err(e) = c.commit(&tpl, CommitMode::Sync) {
        log.failed_attempt(
            &format!("commit of {offset} through {bootstrap}"),
            started,
            &e,
            || {
                let _ = c.poll(Duration::from_millis(100));
            },
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prints the brokers' group, leadership and warning lines if the test
/// fails while it is held (their directories go with the test).
struct LogsOnPanic<'a>(&'a [BrokerProc]);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, n) in self.0.iter().enumerate() {
            // The whole log goes to a file (CI prints only the lines below).
            let whole = std::env::temp_dir().join(format!(
                "shardlog-cluster-{}-node{}.log",
                std::process::id(),
                i + 1
            ));
            let log = n.plain_log();
            if std::fs::write(&whole, &log).is_ok() {
                eprintln!("node {}: whole log in {}", i + 1, whole.display());
            }
            for l in log.lines().filter(|l| {
                l.contains("kafka:")
                    || l.contains("became leader")
                    || l.contains("WARN")
                    || l.contains("ERROR")
            }) {
                eprintln!("node {}: {l}", i + 1);
            }
        }
    }
}

/// Scale-out under load: a fourth broker joins a serving three-broker
/// cluster and `shardlog cluster reassign` moves every partition of an
/// RF=3 topic while an idempotent producer (acks=all) writes without
/// pause. Round 1 moves the partitions off one broker (the leader of
/// partition 0, which hands that leadership over first) and onto broker 4:
/// broker 4's replicas join their Raft groups as learners, catch up from
/// offset 0 and become voters; the leaving broker's replicas leave and
/// their directories are deleted. Each later round takes the next broker
/// out of the set and brings the one left out before back, as a fresh
/// replica. At the end every acknowledged message is read back once and
/// in key order, and each final replica's own files, read offline, hold
/// every acknowledged message once. `SHARDLOG_REASSIGN_ROUNDS` (default 2)
/// sets the rounds.
#[test]
fn reassigning_replicas_to_a_new_broker_under_load_loses_and_duplicates_nothing() {
    let rounds: usize = std::env::var("SHARDLOG_REASSIGN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut c = Cluster::start();
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let mut brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    kafka::create_replicated(&brokers[0], "scale", 3, 3);
    // The first broker to leave leads partition 0: it hands that
    // leadership over before it leaves the group.
    let first_out = kafka::leaders(&brokers[0], "scale", &brokers)[0] as u32;
    let (node4, dir4) = c.start_fourth();
    c.settled_view(0, 4, None, Duration::from_secs(30));
    brokers.push(node4.kafka.clone().unwrap());
    c.nodes.push(node4);
    let (producer, acked, stop) = spawn_idempotent_producer(brokers.join(","), "scale");
    std::thread::sleep(Duration::from_secs(3));
    let mut out_now = first_out;
    let mut target: Vec<u32> = Vec::new();
    for round in 0..rounds {
        target = (1..=4).filter(|n| *n != out_now).collect();
        let target_arg = target
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let before = acked.lock().unwrap().len();
        // The operator's command, as the README gives it; it waits until
        // every partition has moved. Asked through a broker that stays.
        let asked = target[0] as usize - 1;
        let rpc = admin_rpc(&c, asked);
        let out = common::ok(c.nodes[asked.min(2)].cli(
            &[
                "cluster",
                "reassign",
                "scale",
                "--replicas",
                &target_arg,
                "--rpc",
                &rpc,
                "--timeout-secs",
                "120",
            ],
            None,
        ));
        assert!(
            out.contains(&format!("3 partitions now on {target_arg}")),
            "round {round}: {out}"
        );
        eprint!("round {round}: {out}");
        let during = acked.lock().unwrap().len();
        assert!(
            during > before,
            "round {round}: nothing acknowledged during the reassignment"
        );
        let v = admin::view(&c.rpc[0], RPC_TIMEOUT).unwrap();
        for (i, p) in v.state.topics["scale"].partitions.iter().enumerate() {
            let mut r = p.replicas();
            r.sort_unstable();
            assert_eq!(r, target, "round {round}, partition {i}: {p:?}");
            assert!(p.target.is_empty(), "round {round}, partition {i}: {p:?}");
        }
        // The leaving broker's copies are gone (its directories are
        // deleted once it sees the change).
        let gone = c.nodes[out_now as usize - 1].data_dir.clone();
        let started = Instant::now();
        while (0..3).any(|p| gone.join(format!("scale-{p}")).exists()) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "broker {out_now} kept its copies of a partition it no longer holds"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        out_now = out_now % 4 + 1;
    }
    // Each group went through its steps: learners added, then promoted
    // with the leaving broker removed (a joint configuration, left
    // automatically), after a leadership hand-over for partition 0.
    let mut steps = String::new();
    for (i, n) in c.nodes.iter().enumerate() {
        for l in n
            .stderr()
            .lines()
            .filter(|l| l.contains("configuration changed") || l.contains("reassignment"))
        {
            steps.push_str(&format!("node {}: {l}\n", i + 1));
        }
    }
    assert!(steps.contains("learners=[4]"), "{steps}");
    assert!(steps.contains("Transferring"), "{steps}");
    let status = common::ok(c.nodes[0].cli(
        &["cluster", "status", "--partitions", "--rpc", &c.rpc[0]],
        None,
    ));
    assert!(!status.contains("reassigning_to"), "{status}");
    // The producer goes on against the last replica set, then stops.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let reader = target[0] as usize - 1;
    let all = kafka::read_all(&brokers[reader], "scale", 3, acked.len());
    check_exactly_once(&format!("{rounds} reassignments under load"), &acked, &all);
    // Each final replica's own files hold every acknowledged message, once.
    std::thread::sleep(Duration::from_secs(2));
    for n in &target {
        let i = *n as usize - 1;
        assert_eq!(c.nodes[i].stop(), Some(0), "broker {n} stops cleanly");
        let dir = if *n == 4 {
            dir4.path().to_path_buf()
        } else {
            c.nodes[i].data_dir.clone()
        };
        let mut on_disk: Vec<usize> = Vec::new();
        for p in 0..3 {
            on_disk.extend(values_in_partition_dir(&dir.join(format!("scale-{p}"))));
        }
        check_exactly_once(&format!("broker {n}'s copy"), &acked, &on_disk);
    }
}

/// The RPC address of broker `i` (0-based; the fourth broker's is not in
/// `c.rpc`, so its admin calls go through broker 1).
fn admin_rpc(c: &Cluster, i: usize) -> String {
    c.rpc[i.min(c.rpc.len() - 1)].clone()
}

/// Every record value (a decimal number) of the data records in the
/// partition directory `dir`, in log order, read with the broker's own
/// storage code from a stopped broker's files (Raft's control batches are
/// skipped, as Kafka consumers skip them).
fn values_in_partition_dir(dir: &std::path::Path) -> Vec<usize> {
    use shardlog::format::header::attr;
    use shardlog::format::read_records;
    use shardlog::storage::{dma::DmaDisk, CacheBudget, Log, LogConfig, WriteBudget};
    let dir = dir.to_path_buf();
    let run = move || {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let cfg = LogConfig {
                    topic: Default::default(),
                    write_chunk_bytes: 1 << 20,
                    write_behind: 2,
                    flush_interval_ms: 1_000,
                    sync_min_interval: Duration::ZERO,
                    checkpoint_interval_ms: 0,
                    preallocate_bytes: 0,
                };
                let log = Log::open(
                    DmaDisk::new(4096),
                    dir.clone(),
                    cfg,
                    CacheBudget::new(0),
                    WriteBudget::unlimited(),
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                let mut out = Vec::new();
                let mut off = log.log_start_offset();
                let end = log.next_offset();
                while off < end {
                    let r = log.read(off, 1 << 20, end).await.unwrap();
                    assert!(!r.frames.is_empty(), "{}: no frame at {off}", dir.display());
                    for f in r.frames {
                        let (h, recs) = read_records(&f, 64 << 20).unwrap();
                        off = h.last_offset() + 1;
                        if h.attributes & attr::CONTROL != 0 {
                            continue;
                        }
                        for rec in recs {
                            let v = rec.value.expect("a value");
                            out.push(std::str::from_utf8(&v).unwrap().parse().unwrap());
                        }
                    }
                }
                out
            })
    };
    std::thread::spawn(run).join().unwrap()
}

/// Retention on a replicated topic: with one follower down, the leader
/// keeps producing until retention moves its log start past everything
/// the follower has; the follower, restarted, cannot be sent those
/// entries and gets a snapshot instead (a position: it empties its log and
/// starts it at the leader's log start), then replicates the rest. At the
/// end every replica's own files hold an unbroken run of the produced
/// values up to the last, each once, and each replica's log start has
/// moved (retention ran on all three).
#[test]
fn a_follower_behind_the_retained_log_catches_up_from_a_snapshot() {
    let mut c = Cluster::start_with(1, &["--set", "retention_check_interval_ms=200"]);
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    common::ok(c.nodes[0].cli(
        &[
            "topic",
            "create",
            "kept",
            "--replication-factor",
            "3",
            "--config",
            "segment_bytes=16384",
            "--config",
            "retention_bytes=65536",
        ],
        None,
    ));
    let leader = kafka::leaders(&brokers[0], "kept", &brokers)[0] as usize - 1;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    kafka::produce_range(&brokers[leader], "kept", 0..2000);
    c.nodes[follower].kill9();
    // About 20 times what retention keeps, while the follower is down.
    let total = 60_000;
    kafka::produce_range(&brokers[leader], "kept", 2000..total);
    // Moved past everything the follower holds (offsets 0..2000): a first
    // compaction may move the start only part of the way, and the
    // follower, restarted then, is sent entries the leader still has
    // rather than a snapshot (seen in CI).
    let moved = |i: usize| {
        c.nodes[i]
            .plain_log()
            .lines()
            .filter(|l| l.contains("replica: retention moved the log start"))
            .filter_map(|l| {
                l.rsplit("start=")
                    .next()?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .any(|start| start > 2001)
    };
    let started = Instant::now();
    while !(moved(leader) && moved(other)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "retention never moved the replicas' log starts"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.nodes[follower].restart();
    let started = Instant::now();
    while !c.nodes[follower].stderr().contains("installed a snapshot") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the restarted follower never installed a snapshot; logs:\n{}",
            c.nodes[follower].stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kafka::produce_range(&brokers[leader], "kept", total..total + 500);
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(c.nodes[i].stop(), Some(0), "broker {} stops cleanly", i + 1);
    }
    for i in 0..3 {
        let values = values_in_partition_dir(&c.nodes[i].data_dir.join("kept-0"));
        let first = *values.first().expect("some values kept");
        assert!(first > 0, "broker {}: retention kept everything", i + 1);
        let want: Vec<usize> = (first..total + 500).collect();
        assert!(
            values == want,
            "broker {}: {} values from {first}, not the unbroken run {first}..{}",
            i + 1,
            values.len(),
            total + 500
        );
        eprintln!(
            "broker {}: holds {first}..{} ({} values){}",
            i + 1,
            total + 500,
            values.len(),
            if i == follower {
                " (from a snapshot)"
            } else {
                ""
            }
        );
    }
}

/// ListOffsets of `topic`/0 at `timestamp` (-2 earliest, -1 latest)
/// asked of one broker: (error code, offset).
fn list_offset(addr: &str, topic: &str, timestamp: i64) -> (i16, i64) {
    common::kafka::list_offset(&mut common::kafka::Conn::new(addr), topic, timestamp)
}

/// DeleteRecords (v2) of `topic`/0 below `offset`, asked of one broker:
/// (error code, low watermark).
fn delete_records_on(addr: &str, topic: &str, offset: i64) -> (i16, i64) {
    common::kafka::delete_records(&mut common::kafka::Conn::new(addr), 2, topic, 0, offset)
}

/// The value of the first record at or after `offset` of `topic`/0.
fn value_at(bootstrap: &str, topic: &str, offset: i64) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            return std::str::from_utf8(m.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap();
        }
    }
    panic!("nothing read from {topic}/0 at {offset}");
}

#[test]
fn delete_records_on_a_replicated_partition_holds_on_every_replica_and_after_failover() {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    const OFFSET_OUT_OF_RANGE: i16 = 1;
    let mut c = Cluster::start_with(1, &["--set", "retention_check_interval_ms=200"]);
    c.settled_view(0, 3, None, Duration::from_secs(30));
    let brokers: Vec<String> = c.nodes.iter().map(|n| n.kafka.clone().unwrap()).collect();
    common::ok(c.nodes[0].cli(
        &[
            "topic",
            "create",
            "dr",
            "--replication-factor",
            "3",
            "--config",
            "segment_bytes=16384",
        ],
        None,
    ));
    let total = 3000;
    // Batches of at most 100 records, so that segments fall wholly below
    // the new start.
    for from in (0..total).step_by(100) {
        kafka::produce_range(&brokers[0], "dr", from..from + 100);
    }
    // (A leader elected as the replicas open may hand over once more.)
    let leader = leader_answering(&brokers, &[0, 1, 2], "dr");
    let (code, end) = list_offset(&brokers[leader], "dr", -1);
    assert_eq!(code, 0);
    // Inside the log, and (the producer batches) most likely inside a batch.
    let cut = end - 777;
    let first_kept = value_at(&brokers[leader], "dr", cut);
    assert!(first_kept > 0 && first_kept < total, "{first_kept}");

    // A follower refuses: the client asks the leader.
    let follower = (leader + 1) % 3;
    assert_eq!(
        delete_records_on(&brokers[follower], "dr", cut).0,
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        delete_records_on(&brokers[leader], "dr", end + 1).0,
        OFFSET_OUT_OF_RANGE
    );
    let mut leader = leader;
    for attempt in 0.. {
        assert!(attempt < 20, "DeleteRecords never reached a leader");
        match delete_records_on(&brokers[leader], "dr", cut) {
            // Leadership moved meanwhile: ask the new leader.
            (NOT_LEADER_OR_FOLLOWER, _) => leader = leader_answering(&brokers, &[0, 1, 2], "dr"),
            answer => {
                assert_eq!(answer, (0, cut));
                break;
            }
        }
    }
    assert_eq!(list_offset(&brokers[leader], "dr", -2), (0, cut));

    // Every replica applies it, and compaction then deletes the segments
    // wholly below the new start (from the Raft log too).
    let started = Instant::now();
    let compacted = |i: usize| first_segment_base(&c.nodes[i].data_dir.join("dr-0")) > 1;
    for i in 0..3 {
        while !(c.nodes[i]
            .stderr()
            .contains("replica: DeleteRecords applied")
            && compacted(i))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "broker {} never applied the DeleteRecords entry and compacted; log:\n{}",
                i + 1,
                c.nodes[i].stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // The leader dies: the next one hides the same records.
    c.nodes[leader].kill9();
    let next = leader_answering(
        &brokers,
        &(0..3).filter(|i| *i != leader).collect::<Vec<_>>(),
        "dr",
    );
    assert_eq!(list_offset(&brokers[next], "dr", -2), (0, cut));
    kafka::produce_range(&brokers[next], "dr", total..total + 200);
    let want: Vec<usize> = (first_kept..total + 200).collect();
    let mut got = kafka::read_all(&brokers[next], "dr", 1, want.len());
    got.sort();
    assert!(
        got == want,
        "read from the beginning: {} values, not {first_kept}..{}",
        got.len(),
        total + 200
    );

    // The killed broker comes back and agrees; every replica deleted the
    // segments below the start and kept everything above it.
    c.nodes[leader].restart();
    // Time to catch up with the 200 written meanwhile (checked below).
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(c.nodes[i].stop(), Some(0), "broker {} stops cleanly", i + 1);
    }
    for i in 0..3 {
        let dir = c.nodes[i].data_dir.join("dr-0");
        // From the log start: the batch holding it, whole.
        let values = values_in_partition_dir(&dir);
        let first = *values.first().expect("some values kept");
        assert!(
            first > 0 && first <= first_kept,
            "broker {}: the log starts in a batch from {first} (the first kept {first_kept})",
            i + 1
        );
        assert!(
            first_segment_base(&dir) > 1,
            "broker {}: segments below the start deleted",
            i + 1
        );
        let tail: Vec<usize> = (first..total + 200).collect();
        assert!(
            values == tail,
            "broker {}: {} values from {first}",
            i + 1,
            values.len()
        );
    }
}

/// The base offset of a partition directory's first segment file.
fn first_segment_base(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "log").then(|| p.file_stem()?.to_str()?.parse().ok())?
        })
        .min()
        .unwrap_or(0)
}

/// The index (into `brokers`) of the broker among `among` whose replica
/// leads `topic`/0 and answers as its leader (ListOffsets), within 30 s.
fn leader_answering(brokers: &[String], among: &[usize], topic: &str) -> usize {
    let started = Instant::now();
    loop {
        if let Some(&i) = among
            .iter()
            .find(|i| list_offset(&brokers[**i], topic, -1).0 == 0)
        {
            return i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader of {topic}/0 among {among:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
