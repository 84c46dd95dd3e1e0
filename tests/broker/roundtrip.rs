//! Produce and consume through the CLI and the client: partitions on both
//! shards, per-key order, every codec, every acks mode, long polls.

use crate::block_on;
use crate::common::{ok, BrokerProc};
use shardlog::client::{Client, Consumer, ConsumerConfig, Producer, ProducerConfig, StartAt};
use shardlog::format::codec::ALL;
use shardlog::format::BatchBuilder;
use shardlog::protocol::messages::{Acks, FetchPartition, FetchRequest};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn keyed_lines(n: usize, keys: usize) -> String {
    (0..n).map(|i| format!("key{}|{i}\n", i % keys)).collect()
}

/// Parse `key<TAB>value` lines and check every key's values increase.
fn assert_per_key_order(out: &str, expected: usize) {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut count = 0;
    for line in out.lines() {
        let (k, v) = line.split_once('\t').expect("key<TAB>value");
        let n: i64 = v.parse().unwrap();
        if let Some(prev) = last.insert(k, n) {
            assert!(n > prev, "key {k}: {n} after {prev}");
        }
        count += 1;
    }
    assert_eq!(count, expected);
}

#[test]
fn many_partitions_on_both_shards_round_trip_in_key_order() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "orders", "--partitions", "8"], None));
    let describe = ok(b.cli(&["topic", "describe", "orders"], None));
    let shards: BTreeSet<&str> = describe
        .lines()
        .skip_while(|l| !l.starts_with("partition\t"))
        .skip(1)
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(
        shards,
        BTreeSet::from(["0", "1"]),
        "partitions spread over both shards:\n{describe}"
    );
    let input = keyed_lines(20_000, 50);
    ok(b.cli(
        &["produce", "orders", "--key-separator", "|"],
        Some(input.as_bytes()),
    ));
    let out = ok(b.cli(
        &["consume", "orders", "--from-beginning", "--print-key"],
        None,
    ));
    assert_per_key_order(&out, 20_000);
    // Every partition got data, and the high watermarks add up.
    let describe = ok(b.cli(&["topic", "describe", "orders"], None));
    let total: u64 = describe
        .lines()
        .skip_while(|l| !l.starts_with("partition\t"))
        .skip(1)
        .map(|l| {
            let hw: u64 = l.split('\t').nth(3).unwrap().parse().unwrap();
            assert!(hw > 0, "empty partition: {l}");
            hw
        })
        .sum();
    assert_eq!(total, 20_000);
}

#[test]
fn every_codec_round_trips_through_the_broker_untouched() {
    let b = BrokerProc::start(&[]);
    for codec in ALL {
        let topic = format!("codec-{codec}");
        ok(b.cli(&["topic", "create", &topic, "--partitions", "3"], None));
        let input: String = (0..3000)
            .map(|i| format!("k{}|{} {}\n", i % 7, "payload ".repeat(i % 20), i))
            .collect();
        ok(b.cli(
            &[
                "produce",
                &topic,
                "--key-separator",
                "|",
                "--compression",
                codec.name(),
                "--batch-bytes",
                "16384",
            ],
            Some(input.as_bytes()),
        ));
        let out = ok(b.cli(&["consume", &topic, "--from-beginning"], None));
        let mut got: Vec<&str> = out.lines().collect();
        let mut want: Vec<&str> = input
            .lines()
            .map(|l| l.split_once('|').unwrap().1)
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "codec {codec}");
    }
    // The broker stored compressed batches as they came: the zstd topic is
    // smaller on disk. (A clean stop trims preallocated space: exact sizes.)
    let mut b = b;
    assert_eq!(b.stop(), Some(0));
    let size = |t: &str| -> u64 {
        (0..3)
            .map(|p| {
                std::fs::read_dir(b.data_dir.join(format!("{t}-{p}")))
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .map(|e| e.metadata().unwrap().len())
                    .sum::<u64>()
            })
            .sum()
    };
    assert!(
        size("codec-zstd") * 2 < size("codec-none"),
        "zstd batches are stored compressed"
    );
}

#[test]
fn every_acks_mode_delivers() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "acks", "--partitions", "4"], None));
    for acks in ["0", "1", "all"] {
        let input: String = (0..5000).map(|i| format!("{acks}-{i}\n")).collect();
        let out = b.cli(&["produce", "acks", "--acks", acks], Some(input.as_bytes()));
        ok(out);
    }
    // acks=0 gets no replies; its messages still land. Wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ok(b.cli(&["consume", "acks", "--from-beginning"], None));
        let n = out.lines().count();
        if n == 15_000 {
            for acks in ["0", "1", "all"] {
                assert_eq!(
                    out.lines()
                        .filter(|l| l.starts_with(&format!("{acks}-")))
                        .count(),
                    5000
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 15000 messages arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn long_poll_fetch_waits_for_data_and_times_out_without_it() {
    let b = BrokerProc::start(&[]);
    block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("poll", 2, &[]).await.unwrap();
        let req = |max_wait_ms| FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![(
                "poll".to_string(),
                (0..2)
                    .map(|p| FetchPartition {
                        partition: p,
                        offset: 0,
                        max_bytes: 1 << 20,
                    })
                    .collect(),
            )],
        };
        // Nothing there: the fetch waits out max_wait and comes back empty.
        let t = Instant::now();
        let r = c.fetch(&req(400)).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(380),
            "returned after {:?}",
            t.elapsed()
        );
        assert!(r.topics[0]
            .1
            .iter()
            .all(|p| p.frames.iter().all(|f| f.is_empty())));
        // Data arrives while a fetch waits: it returns with the data, before max_wait.
        let fetcher = {
            let c = c.clone();
            let req = req(20_000);
            tokio::spawn(async move {
                let t = Instant::now();
                (c.fetch(&req).await.unwrap(), t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                linger_ms: 0,
                ..Default::default()
            },
        );
        p.send_to("poll", 1, None, Some(b"wake up"), &[], 0, 0)
            .await
            .unwrap();
        p.flush().await.unwrap();
        let (r, waited) = fetcher.await.unwrap();
        let bytes: usize = r.topics[0]
            .1
            .iter()
            .flat_map(|p| &p.frames)
            .map(|f| f.len())
            .sum();
        assert!(bytes > 0, "the waiting fetch saw the new batch");
        assert!(
            waited < Duration::from_secs(10),
            "woken by the append, not by max_wait ({waited:?})"
        );
    });
}

/// A new batch reserves a full batch's room for its records, but all open
/// batches together no more than the producer's buffer budget: 64
/// partitions of 1 MiB batches with a 4 MiB buffer reserve about 4 MiB,
/// not 64. Every record still arrives.
#[test]
fn open_batches_reserve_no_more_than_the_buffer_budget() {
    let b = BrokerProc::start(&[]);
    block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("wide", 64, &[]).await.unwrap();
        let budget = 4 << 20;
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                batch_bytes: 1 << 20,
                buffer_bytes_max: budget,
                // Batches stay open while the test looks.
                linger_ms: 60_000,
                ..Default::default()
            },
        );
        let value = [7u8; 100];
        for part in 0..64 {
            p.send_to("wide", part, None, Some(&value), &[], 0, 0)
                .await
                .unwrap();
        }
        let reserved = p.reserved_bytes();
        // Four full batches' room, then one record's for each of the rest.
        assert!(
            reserved >= budget && reserved <= budget + 64 * 200,
            "64 open batches reserved {reserved} bytes with a {budget}-byte budget"
        );
        p.flush().await.unwrap();
        assert_eq!(p.reserved_bytes(), 0, "sealed batches give their room back");
        let mut consumer = Consumer::new(
            c.clone(),
            "wide",
            None,
            StartAt::Earliest,
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < 64 && Instant::now() < deadline {
            got += consumer.poll().await.unwrap().len();
        }
        assert_eq!(got, 64);
    });
}

/// A burst queues records under one lock while the buffer has room:
/// exactly as many as the budget holds, then none (nothing half-queued),
/// and again once the broker acknowledged them. Every record queued
/// arrives, in order per partition; a closed producer refuses a burst.
#[test]
fn a_burst_queues_within_the_buffer_budget_and_delivers_in_order() {
    let b = BrokerProc::start(&[]);
    block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("burst", 2, &[]).await.unwrap();
        let budget = 64 << 10;
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                batch_bytes: 1 << 20,
                buffer_bytes_max: budget,
                // Nothing is sent (so nothing frees room) until the flush.
                linger_ms: 60_000,
                ..Default::default()
            },
        );
        let value = |i: u32| format!("{i:0100}").into_bytes();
        let size = BatchBuilder::record_size(None, Some(&value(0)), &[]);
        let mut sent = 0u32;
        {
            let mut burst = p.burst("burst").await.unwrap();
            while burst.try_send(sent % 2, None, Some(&value(sent)), &[], 0, 0) {
                sent += 1;
                assert!(sent as usize <= budget / size, "queued past the budget");
            }
        }
        assert_eq!(
            sent as usize,
            budget / size,
            "the budget's worth was queued"
        );
        p.flush().await.unwrap();
        {
            let mut burst = p.burst("burst").await.unwrap();
            for _ in 0..10 {
                assert!(
                    burst.try_send(sent % 2, None, Some(&value(sent)), &[], 0, 0),
                    "acknowledged records gave their room back"
                );
                sent += 1;
            }
        }
        p.close().await.unwrap();
        assert!(
            p.burst("burst").await.is_err(),
            "a closed producer took a burst"
        );
        let mut per_partition: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut consumer = Consumer::new(
            c.clone(),
            "burst",
            None,
            StartAt::Earliest,
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = 0;
        while got < sent && Instant::now() < deadline {
            for m in consumer.poll().await.unwrap() {
                let v: u32 = std::str::from_utf8(m.value.as_deref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                per_partition.entry(m.partition).or_default().push(v);
                got += 1;
            }
        }
        assert_eq!(got, sent);
        for (part, values) in per_partition {
            let expected: Vec<u32> = (0..sent).filter(|i| i % 2 == part).collect();
            assert_eq!(values, expected, "partition {part}");
        }
    });
}

#[test]
fn client_offsets_and_timestamps() {
    let b = BrokerProc::start(&[]);
    block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("ts", 1, &[]).await.unwrap();
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                acks: Acks::All,
                linger_ms: 0,
                batch_bytes: 1,
                ..Default::default()
            },
        );
        for i in 0..100i64 {
            p.send_to(
                "ts",
                0,
                None,
                Some(format!("{i}").as_bytes()),
                &[],
                1_000_000 + i * 10,
                0,
            )
            .await
            .unwrap();
        }
        p.flush().await.unwrap();
        // By timestamp: first batch whose timestamp >= t.
        assert_eq!(c.list_offset("ts", 0, 1_000_000 + 505).await.unwrap(), 51);
        assert_eq!(c.list_offset("ts", 0, 0).await.unwrap(), 0);
        assert_eq!(c.list_offset("ts", 0, 9_000_000).await.unwrap(), 100);
        let mut cons = Consumer::new(
            c.clone(),
            "ts",
            None,
            StartAt::Offset(42),
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
        let msgs = cons.poll().await.unwrap();
        assert_eq!(msgs[0].offset, 42);
        assert_eq!(msgs[0].value.as_deref().unwrap(), b"42");
        assert_eq!(msgs[0].timestamp_ms, 1_000_420);
    });
}
