//! Crashes and damaged files: kill -9 loops, garbage tails, torn tails,
//! lost indexes, corruption in the middle of a log.

use crate::block_on;
use crate::common::{ok, BrokerProc};
use rand::{Rng, SeedableRng};
use shardlog::client::{Client, Producer, ProducerConfig};
use shardlog::format::frame;
use shardlog::protocol::messages::Acks;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn only_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

/// Every message of a topic, per partition, in offset order.
fn read_all(addr: &str, topic: &str) -> BTreeMap<u32, Vec<String>> {
    block_on(crate::common::read_topic(addr, topic))
        .into_iter()
        .map(|(p, vs)| {
            let vs = vs
                .into_iter()
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .collect();
            (p, vs)
        })
        .collect()
}

#[test]
fn kill9_loop_loses_no_acknowledged_message() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "crash", "--partitions", "4"], None));
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut next_seq = 0u64;
    let cycles = 20;
    for _cycle in 0..cycles {
        let kill_after = Duration::from_millis(rng.gen_range(30..250));
        let pid = b.pid() as i32;
        let addr = b.native.clone();
        let a2 = acked.clone();
        next_seq = block_on(async move {
            let c = Client::connect(&addr).await.unwrap();
            let cb_acked = a2.clone();
            let p = Producer::new(
                c,
                ProducerConfig {
                    acks: Acks::All,
                    linger_ms: 1,
                    batch_bytes: 4096,
                    request_timeout_ms: 5000,
                    on_batch_acked: Some(Arc::new(move |b| {
                        if b.error.is_none() {
                            cb_acked.lock().unwrap().extend(b.tokens.iter().copied());
                        }
                    })),
                    ..Default::default()
                },
            );
            let killer = tokio::spawn(async move {
                tokio::time::sleep(kill_after).await;
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            });
            let mut seq = next_seq;
            let t = Instant::now();
            while t.elapsed() < kill_after + Duration::from_millis(100) {
                let key = format!("k{}", seq % 16);
                let v = seq.to_string();
                if p.send_to(
                    "crash",
                    (seq % 4) as u32,
                    Some(key.as_bytes()),
                    Some(v.as_bytes()),
                    &[],
                    0,
                    seq,
                )
                .await
                .is_err()
                {
                    break;
                }
                seq += 1;
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            killer.await.unwrap();
            // Let every outstanding batch resolve (acknowledged or failed).
            let _ = tokio::time::timeout(Duration::from_secs(10), p.flush()).await;
            seq
        });
        b.kill9();
        b.restart();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "the loop acknowledged only {} messages",
        acked.len()
    );
    let got = read_all(&b.native, "crash");
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (p, values) in &got {
        let mut last = None;
        for v in values {
            let seq: u64 = v.parse().unwrap();
            assert_eq!(seq % 4, *p as u64, "message in the wrong partition");
            *seen.entry(seq).or_default() += 1;
            if let Some(l) = last {
                assert!(seq > l, "partition {p}: {seq} after {l}");
            }
            last = Some(seq);
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    let lost: Vec<_> = acked.iter().filter(|s| !seen.contains_key(s)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "{cycles} kill -9 cycles: {next_seq} sent, {} acknowledged, {} recovered, 0 lost, 0 duplicated",
        acked.len(),
        seen.len()
    );
}

#[test]
fn garbage_appended_to_a_segment_tail_is_cut_and_the_log_goes_on() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "g", "--partitions", "1"], None));
    let input: String = (0..1000).map(|i| format!("m{i}\n")).collect();
    ok(b.cli(&["produce", "g"], Some(input.as_bytes())));
    assert_eq!(b.stop(), Some(0));
    let seg = only_log(&b.data_dir.join("g-0"));
    let mut garbage = vec![0u8; 1000];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut garbage[..]);
    let mut data = std::fs::read(&seg).unwrap();
    let len = data.len();
    data.extend_from_slice(&garbage);
    std::fs::write(&seg, &data).unwrap();
    b.restart();
    assert!(
        b.stderr()
            .contains("recovery cut a torn tail of 1000 bytes"),
        "{}",
        b.stderr()
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len as u64);
    ok(b.cli(&["produce", "g"], Some(b"after\n")));
    let out = ok(b.cli(&["consume", "g", "--from-beginning"], None));
    assert_eq!(out, format!("{input}after\n"));
}

/// Frame start positions of a segment file.
fn frame_starts(seg: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(seg).unwrap();
    let mut pos = 0;
    let mut out = Vec::new();
    while let Ok(h) = frame::validate(&data[pos..]) {
        out.push((pos, h.record_count as usize));
        pos += h.frame_len();
    }
    out
}

#[test]
fn a_tail_cut_mid_batch_after_a_crash_is_cut_back_to_the_last_whole_batch() {
    // A long checkpoint interval: after the first sync, the tail is untrusted (as after a real crash).
    let mut b = BrokerProc::start(&["--set", "recovery_point_interval_ms=3600000"]);
    ok(b.cli(&["topic", "create", "torn", "--partitions", "1"], None));
    for round in 0..5 {
        let input: String = (0..200).map(|i| format!("r{round}-{i}\n")).collect();
        ok(b.cli(
            &["produce", "torn", "--batch-bytes", "1024"],
            Some(input.as_bytes()),
        ));
    }
    b.kill9();
    let seg = only_log(&b.data_dir.join("torn-0"));
    let frames = frame_starts(&seg);
    let (last_pos, last_records) = *frames.last().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(last_pos as u64 + 30).unwrap();
    drop(f);
    b.restart();
    assert!(
        b.stderr().contains("recovery cut a torn tail of 30 bytes"),
        "{}",
        b.stderr()
    );
    let out = ok(b.cli(&["consume", "torn", "--from-beginning"], None));
    assert_eq!(out.lines().count(), 1000 - last_records);
    assert!(out.starts_with("r0-0\nr0-1\n"));
}

#[test]
fn a_deleted_index_is_rebuilt() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(
        &[
            "topic",
            "create",
            "ix",
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
        ],
        None,
    ));
    let input: String = (0..20_000).map(|i| format!("ix-{i}\n")).collect();
    ok(b.cli(
        &["produce", "ix", "--batch-bytes", "4096"],
        Some(input.as_bytes()),
    ));
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.join("ix-0");
    let first_index = dir.join(format!("{:020}.index", 0));
    assert!(first_index.exists());
    std::fs::remove_file(&first_index).unwrap();
    // And break another one.
    let second = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "index") && *p != first_index)
        .min()
        .unwrap();
    std::fs::write(&second, b"not an index").unwrap();
    b.restart();
    let err = b.stderr();
    assert!(err.contains("index missing; rebuilding"), "{err}");
    assert!(err.contains("broken index"), "{err}");
    assert!(first_index.exists(), "the rebuilt index is written back");
    for offset in [5u64, 3000, 19_999] {
        let out = ok(b.cli(
            &[
                "consume",
                "ix",
                "--offset",
                &offset.to_string(),
                "--max-messages",
                "1",
            ],
            None,
        ));
        assert_eq!(out, format!("ix-{offset}\n"));
    }
}

#[test]
fn corruption_in_the_middle_of_a_log_is_refused_and_other_partitions_go_on() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "mid", "--partitions", "2"], None));
    let input: String = (0..4000)
        .map(|i| format!("k{}|value-{i}\n", i % 10))
        .collect();
    ok(b.cli(
        &[
            "produce",
            "mid",
            "--key-separator",
            "|",
            "--batch-bytes",
            "2048",
        ],
        Some(input.as_bytes()),
    ));
    assert_eq!(b.stop(), Some(0));
    // Flip a byte in the middle of partition 0's durable data.
    let seg = only_log(&b.data_dir.join("mid-0"));
    let mut data = std::fs::read(&seg).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    b.restart();
    let err = b.stderr();
    assert!(err.contains("is corrupt") && err.contains("mid-0"), "{err}");
    // Partition 0 refuses with a clear error; partition 1 works.
    let out = b.cli(&["produce", "mid", "--partition", "0"], Some(b"x\n"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(b.cli(
        &["produce", "mid", "--partition", "1"],
        Some(b"still fine\n"),
    ));
    let out = ok(b.cli(
        &["consume", "mid", "--partition", "1", "--from-beginning"],
        None,
    ));
    assert!(out.ends_with("still fine\n"));
    // The damaged file was not touched.
    assert_eq!(std::fs::read(&seg).unwrap(), data);
}
