//! `direct_io_alignment`: a real broker started with each setting on one
//! data directory in turn, killed with SIGKILL between them, keeps every
//! acknowledged message. The alignment is chosen at each start and
//! recorded nowhere in the files (docs/segment_format.md), so a segment
//! written 512-byte aligned is resumed 4 KiB aligned and back.

mod common;

use common::{ok, BrokerProc};
use shardlog::storage::dma::write_alignment;
use std::path::Path;

/// The file system block size of `dir` (`stat -f`), as the broker's
/// "filesystem" setting reads it.
fn fs_block(dir: &Path) -> u64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%S"])
        .arg(dir)
        .output()
        .expect("run stat -f");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Shards of the test brokers (`BrokerProc::start_in`).
const SHARDS: usize = 2;

/// The alignment each shard logged at the latest start (the log file
/// gathers every start's lines).
fn logged_alignments(b: &BrokerProc) -> Vec<u64> {
    let all: Vec<u64> = b
        .stderr()
        .lines()
        .filter(|l| l.contains("direct I/O alignment"))
        .map(|l| {
            let v = l.split("alignment=").nth(1).unwrap();
            v.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        all.len() >= SHARDS,
        "shards logged no alignment:\n{}",
        b.stderr()
    );
    all[all.len() - SHARDS..].to_vec()
}

/// Message `i`: odd lengths, so batches end mid-block of either alignment.
fn message(i: u64) -> String {
    format!("m{i}-{}", "x".repeat((i % 97) as usize))
}

fn produce(b: &BrokerProc, from: u64, to: u64) {
    let lines: String = (from..to).map(|i| message(i) + "\n").collect();
    ok(b.cli(&["produce", "aligned"], Some(lines.as_bytes())));
}

#[test]
fn switching_the_alignment_between_kill9_restarts_keeps_every_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = dir.join("filesystem.toml");
    std::fs::write(&cfg, "direct_io_alignment = \"filesystem\"\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let block = fs_block(dir);
    let filesystem: &[&str] = &["--config", &cfg];

    let mut b = BrokerProc::start_in(dir, &[]);
    let device = logged_alignments(&b);
    b.create_topic("aligned", 2);
    produce(&b, 0, 3000);
    b.kill9();
    drop(b);

    let mut b = BrokerProc::start_in(dir, filesystem);
    let fs = logged_alignments(&b);
    for (f, d) in fs.iter().zip(&device) {
        let want = write_alignment(*d as usize, Some(block)) as u64;
        assert_eq!(*f, want, "device {d}, file system block {block}");
    }
    eprintln!("device {device:?}, file system block {block}: filesystem setting {fs:?}");
    produce(&b, 3000, 6000);
    b.kill9();
    drop(b);

    let b = BrokerProc::start_in(dir, &[]);
    assert_eq!(logged_alignments(&b), device);
    produce(&b, 6000, 7000);
    let out = b.cli(&["consume", "aligned", "--from-beginning"], None);
    ok(out.clone());
    let mut got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..7000).map(message).collect();
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "consumed {} of {}",
        got.len(),
        want.len()
    );
    assert_eq!(got, want);
}
