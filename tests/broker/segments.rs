//! Segment rolling, sparse index lookups at arbitrary offsets, retention.

use crate::common::{ok, BrokerProc};
use std::time::{Duration, Instant};

fn files(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn describe_offsets(b: &BrokerProc, topic: &str) -> Vec<(u64, u64)> {
    ok(b.cli(&["topic", "describe", topic], None))
        .lines()
        .skip_while(|l| !l.starts_with("partition\t"))
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn segments_roll_by_size_and_reads_find_any_offset() {
    let b = BrokerProc::start(&[]);
    ok(b.cli(
        &[
            "topic",
            "create",
            "roll",
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
            "--config",
            "index_interval_bytes=1024",
        ],
        None,
    ));
    let input: String = (0..20_000).map(|i| format!("message-{i:06}\n")).collect();
    ok(b.cli(
        &["produce", "roll", "--batch-bytes", "4096"],
        Some(input.as_bytes()),
    ));
    let dir = b.data_dir.join("roll-0");
    let logs = files(&dir, ".log");
    assert!(logs.len() >= 4, "expected several segments, got {logs:?}");
    // Closed segments have their indexes on disk, named by base offset.
    let idx = files(&dir, ".index");
    for l in &logs[..logs.len() - 1] {
        assert!(
            idx.contains(&l.replace(".log", ".index")),
            "{l} has no index: {idx:?}"
        );
        assert_eq!(l.len(), 24, "20-digit base offset names");
    }
    for offset in [0u64, 1, 777, 4095, 4096, 9_999, 12_345, 19_998, 19_999] {
        let out = ok(b.cli(
            &[
                "consume",
                "roll",
                "--offset",
                &offset.to_string(),
                "--max-messages",
                "1",
                "--print-offset",
            ],
            None,
        ));
        assert_eq!(out.trim(), format!("0:{offset}\tmessage-{offset:06}"));
    }
    // After a restart the same lookups work from the on-disk indexes.
    let mut b = b;
    assert_eq!(b.stop(), Some(0));
    b.restart();
    let out = ok(b.cli(
        &[
            "consume",
            "roll",
            "--offset",
            "15000",
            "--max-messages",
            "2",
        ],
        None,
    ));
    assert_eq!(out, "message-015000\nmessage-015001\n");
}

#[test]
fn retention_by_size_deletes_whole_old_segments() {
    let b = BrokerProc::start(&["--set", "retention_check_interval_ms=100"]);
    ok(b.cli(
        &[
            "topic",
            "create",
            "ret",
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
            "--config",
            "retention_bytes=200000",
        ],
        None,
    ));
    let input: String = (0..40_000).map(|i| format!("retained-{i:06}\n")).collect();
    ok(b.cli(
        &["produce", "ret", "--batch-bytes", "8192"],
        Some(input.as_bytes()),
    ));
    let dir = b.data_dir.join("ret-0");
    let disk_bytes = || -> u64 {
        files(&dir, ".log")
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    // Retention keeps at least retention_bytes, in whole segments; the active
    // segment's file is preallocated up to segment_bytes.
    while disk_bytes() > 200_000 + 2 * 65_536 {
        assert!(
            Instant::now() < deadline,
            "retention left {} bytes",
            disk_bytes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retention runs every few seconds, concurrently with this test: a
    // later pass may still drop a segment that the first left (it ran
    // while the produce was still arriving). Take the log start once it
    // matches the first file on disk.
    let (start, hw) = loop {
        let (start, hw) = describe_offsets(&b, "ret")[0];
        if files(&dir, ".log")[0] == format!("{start:020}.log") {
            break (start, hw);
        }
        assert!(
            Instant::now() < deadline,
            "log start {start} never matched the files"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(start > 0);
    assert_eq!(hw, 40_000);
    assert!(
        disk_bytes() >= 200_000,
        "retention keeps at least retention_bytes"
    );
    // Consumers from the beginning start at the new log start; nothing after it is lost.
    let out = ok(b.cli(
        &["consume", "ret", "--from-beginning", "--print-offset"],
        None,
    ));
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("0:{start}\t")),
        "{first} vs start {start}"
    );
    assert_eq!(out.lines().count() as u64, hw - start);
    assert!(out.ends_with("retained-039999\n"));
    // (The deleted segments' files are gone: the loop above waited until
    // the first remaining one starts at the log start.)
}

#[test]
fn retention_by_time_expires_everything_old() {
    let b = BrokerProc::start(&["--set", "retention_check_interval_ms=100"]);
    ok(b.cli(
        &[
            "topic",
            "create",
            "expire",
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
            "--config",
            "retention_ms=500",
        ],
        None,
    ));
    let input: String = (0..10_000).map(|i| format!("old-{i}\n")).collect();
    ok(b.cli(&["produce", "expire"], Some(input.as_bytes())));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (start, hw) = describe_offsets(&b, "expire")[0];
        if start == hw {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old data never expired: start {start}, hw {hw}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // New data still goes in and comes out.
    ok(b.cli(&["produce", "expire"], Some(b"fresh\n")));
    assert_eq!(
        ok(b.cli(&["consume", "expire", "--from-beginning"], None)),
        "fresh\n"
    );
}

/// Disk space reserved ahead of writes adapts to what a partition writes:
/// 200 partitions holding a small batch each reserve a few MiB apiece, not
/// the full `segment_preallocate_bytes` step (32 MiB at the default, 6.4 GB
/// for 200 partitions before).
#[test]
fn quiet_partitions_reserve_little_disk_ahead() {
    use std::os::unix::fs::MetadataExt;
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "quiet", "--partitions", "200"], None));
    let input: String = (0..2_000).map(|i| format!("key-{i}:value-{i}\n")).collect();
    ok(b.cli(
        &["produce", "quiet", "--key-separator", ":"],
        Some(input.as_bytes()),
    ));
    let (mut written, mut allocated, mut partitions) = (0u64, 0u64, 0u64);
    for p in 0..200 {
        let dir = b.data_dir.join(format!("quiet-{p}"));
        let logs = files(&dir, ".log");
        if logs.is_empty() {
            continue;
        }
        partitions += 1;
        for l in logs {
            let m = std::fs::metadata(dir.join(&l)).unwrap();
            written += m.len();
            allocated += m.blocks() * 512;
        }
    }
    assert!(
        partitions >= 150,
        "keys spread over most partitions: {partitions}"
    );
    let per_partition = allocated / partitions;
    println!(
        "{partitions} partitions: {written} bytes in their segment files, {allocated} bytes allocated ({per_partition} per partition)"
    );
    assert!(
        per_partition <= 2 << 20,
        "each quiet partition reserved {per_partition} bytes (the full step is 32 MiB)"
    );
}
