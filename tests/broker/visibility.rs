//! What consumers see: only durable data, and promptly: a consumer waiting
//! at the end makes an acks=1 append durable (one group commit) instead of
//! waiting out its long poll or the flush interval.

use crate::block_on;
use crate::common::BrokerProc;
use shardlog::client::{Client, Producer, ProducerConfig};
use shardlog::protocol::messages::{Acks, FetchPartition, FetchRequest};
use std::time::{Duration, Instant};

#[test]
fn a_waiting_consumer_sees_an_acks1_append_promptly() {
    let b = BrokerProc::start(&["--flush-interval-ms", "60000"]);
    block_on(async {
        let c = Client::connect(&b.native).await.unwrap();
        c.create_topic("vis", 4, &[]).await.unwrap();
        let p = Producer::new(
            c.clone(),
            ProducerConfig {
                acks: Acks::Leader,
                linger_ms: 0,
                ..Default::default()
            },
        );
        for round in 0..5u64 {
            // Wait at the end of every partition (both shards own some).
            let mut parts = Vec::new();
            for p in 0..4 {
                parts.push(FetchPartition {
                    partition: p,
                    offset: c.list_offset("vis", p, -1).await.unwrap(),
                    max_bytes: 1 << 20,
                });
            }
            let req = FetchRequest {
                max_wait_ms: 10_000,
                min_bytes: 1,
                max_bytes: 1 << 20,
                topics: vec![("vis".to_string(), parts)],
            };
            let fetcher = {
                let c = c.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = c.fetch(&req).await.unwrap();
                    (r, t.elapsed())
                })
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent = Instant::now();
            p.send_to("vis", (round % 4) as u32, None, Some(b"x"), &[], 0, 0)
                .await
                .unwrap();
            p.flush().await.unwrap();
            let (r, _) = fetcher.await.unwrap();
            let seen_after = sent.elapsed();
            let bytes: usize = r
                .topics
                .iter()
                .flat_map(|(_, ps)| ps)
                .flat_map(|p| &p.frames)
                .map(|f| f.len())
                .sum();
            assert!(bytes > 0, "round {round}: the fetch came back empty");
            assert!(seen_after < Duration::from_secs(2), "round {round}: visible only after {seen_after:?} (long poll 10 s, flush interval 60 s)");
        }
    });
}
