//! A full disk, for real: a small ext4 image, loop-mounted, under a real
//! broker. Produce gets "no space", reads keep working, writes resume when
//! space is freed (no restart), and nothing is left corrupt. Deleting a
//! topic on a full disk works and gives its space back.
//!
//! Needs root (mount). Set SHARDLOG_SKIP_ROOT_TESTS=1 to skip it knowingly.

mod common;

use common::{ok, BrokerProc};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct LoopMount {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl LoopMount {
    fn new(mib: u64) -> LoopMount {
        let tmp = tempfile::Builder::new()
            .prefix("shardlog-diskfull-")
            .tempdir()
            .unwrap();
        let img = tmp.path().join("fs.img");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(mib << 20).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?} failed: {} (this test needs root to loop-mount a file system; \
                 set SHARDLOG_SKIP_ROOT_TESTS=1 to skip it)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir));
        LoopMount { dir, _tmp: tmp }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn skip() -> bool {
    std::env::var_os("SHARDLOG_SKIP_ROOT_TESTS").is_some()
}

/// A fresh 48 MiB file system with an empty `data` directory on it; None
/// (after saying so) when root-only tests are skipped.
fn mounted_data_dir() -> Option<(LoopMount, PathBuf)> {
    if skip() {
        eprintln!("skipped: SHARDLOG_SKIP_ROOT_TESTS is set");
        return None;
    }
    let m = LoopMount::new(48);
    let data = m.dir.join("data");
    std::fs::create_dir(&data).unwrap();
    Some((m, data))
}

fn produce(b: &BrokerProc, from: usize, n: usize) -> (bool, String) {
    produce_to(b, "full", from, n)
}

fn produce_to(b: &BrokerProc, topic: &str, from: usize, n: usize) -> (bool, String) {
    let input: String = (from..from + n)
        .map(|i| format!("msg-{i:07}-{}\n", "p".repeat(200)))
        .collect();
    let out = b.cli(
        &["produce", topic, "--batch-bytes", "65536"],
        Some(input.as_bytes()),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn consumed(b: &BrokerProc) -> Vec<String> {
    consumed_from(b, "full")
}

fn consumed_from(b: &BrokerProc, topic: &str) -> Vec<String> {
    ok(b.cli(&["consume", topic, "--from-beginning"], None))
        .lines()
        .map(|l| l[..11].to_string())
        .collect()
}

#[test]
fn a_full_disk_refuses_produce_keeps_reads_and_recovers_without_restart() {
    let Some((m, data)) = mounted_data_dir() else {
        return;
    };
    // Ballast to free later.
    let ballast = m.dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 12 << 20]).unwrap();
    // The broker's log must not live on the disk being filled.
    let log = m._tmp.path().join("broker.stderr");
    let mut b =
        BrokerProc::start_in_logging_to(&data, &log, &["--set", "write_chunk_bytes=131072"]);
    let _keep = KeepLog(b.stderr_path.clone());
    ok(b.cli(&["topic", "create", "full", "--partitions", "2"], None));
    // Fill the disk, keeping track of what was acknowledged (whole CLI runs that exited 0).
    let mut acked: HashSet<String> = HashSet::new();
    let mut next = 0;
    let chunk = 5000;
    let err = loop {
        let (ok_run, stderr) = produce(&b, next, chunk);
        if ok_run {
            acked.extend((next..next + chunk).map(|i| format!("msg-{i:07}")));
            next += chunk;
            assert!(next < 2_000_000, "the disk never filled up");
        } else {
            next += chunk;
            break stderr;
        }
    };
    assert!(
        err.to_lowercase().contains("no space"),
        "produce fails with a no-space error: {err}"
    );
    // Reads keep working: everything acknowledged is there.
    let got: HashSet<String> = consumed(&b).into_iter().collect();
    assert!(
        acked.iter().all(|m| got.contains(m)),
        "acknowledged messages readable on a full disk"
    );
    ok(b.cli(&["topic", "describe", "full"], None));
    // Free space: produce resumes, no restart.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok_run, stderr) = produce(&b, next, 100);
        if ok_run {
            acked.extend((next..next + 100).map(|i| format!("msg-{i:07}")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after space was freed: {stderr}"
        );
        next += 100;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing corrupt: a clean restart recovers every acknowledged message, once.
    assert_eq!(b.stop(), Some(0));
    b.restart();
    assert!(!b.stderr().contains("is corrupt"), "{}", b.stderr());
    let all = consumed(&b);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no duplicates");
    let missing: Vec<_> = acked
        .iter()
        .filter(|m| !unique.contains(m))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages lost: {missing:?}"
    );
    let _ = Path::new(&data);
}

/// Free bytes of the file system holding `p`: (all free blocks, what `df`
/// shows as available to non-root users).
fn free_bytes(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (
        st.f_bfree as u64 * st.f_frsize as u64,
        st.f_bavail as u64 * st.f_frsize as u64,
    )
}

/// Bytes of blocks allocated to the files under `dir`.
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

/// Take every block left: append to a file 4 KiB, then one file system
/// block, at a time until ENOSPC, then make one-block files until even
/// that fails (a small file can still get a block its own when appending
/// no longer can).
fn fill_up(dir: &Path) {
    use std::io::Write;
    let full = |r: std::io::Result<()>| match r {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => true,
        Err(e) => panic!("filling the disk: {e}"),
    };
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let fs_block = 1024; // the smallest ext4 block: finer is harmless
    for chunk in [4096, fs_block] {
        while !full(f.write_all(&vec![7u8; chunk]).and_then(|_| f.sync_data())) {}
    }
    for i in 0.. {
        let r = std::fs::File::create(dir.join(format!("filler-{i}")))
            .and_then(|mut g| g.write_all(b"x").and_then(|_| g.sync_all()));
        if full(r) {
            break;
        }
    }
}

#[test]
fn deleting_a_topic_on_a_full_disk_gives_its_space_back_and_produce_resumes() {
    let Some((m, data)) = mounted_data_dir() else {
        return;
    };
    let log = m._tmp.path().join("broker.stderr");
    // No preallocation: every partition then needs new blocks for its next
    // write, so a full disk stops every topic, not just the one filling it.
    let mut b = BrokerProc::start_in_logging_to(
        &data,
        &log,
        &[
            "--set",
            "write_chunk_bytes=131072",
            "--set",
            "segment_preallocate_bytes=0",
        ],
    );
    let _keep = KeepLog(b.stderr_path.clone());
    ok(b.cli(&["topic", "create", "full", "--partitions", "2"], None));
    ok(b.cli(&["topic", "create", "other", "--partitions", "1"], None));
    let (ok_run, err) = produce_to(&b, "other", 0, 100);
    assert!(ok_run, "{err}");
    let mut next = 0;
    let err = loop {
        let (ok_run, stderr) = produce(&b, next, 5000);
        next += 5000;
        assert!(next < 2_000_000, "the disk never filled up");
        if !ok_run {
            break stderr;
        }
    };
    assert!(err.to_lowercase().contains("no space"), "{err}");
    // Whatever the broker's writes left over, take it too: the disk is
    // full to the last block, as in the field.
    fill_up(&m.dir);
    let (ok_run, err) = produce_to(&b, "other", 100, 100);
    assert!(
        !ok_run,
        "produce to another topic is refused on the full disk"
    );
    assert!(err.to_lowercase().contains("no space"), "{err}");

    let topic_bytes = du(&data.join("full-0")) + du(&data.join("full-1"));
    let (free_before, avail_before) = free_bytes(&m.dir);
    let reserve = data.join("meta").join("reserve");
    assert!(
        reserve.exists(),
        "the broker keeps a metadata space reserve"
    );
    let out = b.cli(&["topic", "delete", "full"], None);
    ok(out);
    assert!(!data.join("full-0").exists() && !data.join("full-1").exists());
    assert!(
        b.stderr().contains("released the metadata space reserve"),
        "the delete needed the reserve (the disk really was full)"
    );
    // The reserve used for the delete is made again from the freed space
    // (once the shards have closed the deleted files; housekeeping retries).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reserve.exists() || std::fs::metadata(&reserve).unwrap().len() < (4 << 20) {
        assert!(
            Instant::now() < deadline,
            "the metadata space reserve was not made again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (free_after, avail_after) = free_bytes(&m.dir);
    eprintln!(
        "topic 'full' held {} KiB; free {} -> {} KiB, df available {} -> {} KiB",
        topic_bytes >> 10,
        free_before >> 10,
        free_after >> 10,
        avail_before >> 10,
        avail_after >> 10
    );
    assert!(
        free_after >= free_before + topic_bytes * 9 / 10,
        "deleting the topic gave back {} of its {} bytes",
        free_after.saturating_sub(free_before),
        topic_bytes
    );
    assert!(
        avail_after > avail_before + (8 << 20),
        "df shows the space back"
    );

    // Produce to the other topic resumes by itself, no restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok_run, err) = produce_to(&b, "other", 200, 100);
        if ok_run {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "produce did not resume after the delete: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(consumed_from(&b, "other").contains(&"msg-0000250".to_string()));
    // And a clean restart: the deleted topic stays deleted, nothing pending.
    assert_eq!(b.stop(), Some(0));
    b.restart();
    assert_eq!(ok(b.cli(&["topic", "list"], None)), "other\t1\n");
    let table = std::fs::read_to_string(data.join("meta").join("topics.json")).unwrap();
    assert!(!table.contains("deleting"), "{table}");
}

#[test]
fn retention_on_a_full_disk_frees_space_and_produce_resumes() {
    let Some((m, data)) = mounted_data_dir() else {
        return;
    };
    let log = m._tmp.path().join("broker.stderr");
    let mut b = BrokerProc::start_in_logging_to(
        &data,
        &log,
        &[
            "--set",
            "write_chunk_bytes=131072",
            "--set",
            "segment_preallocate_bytes=0",
            "--set",
            "retention_check_interval_ms=500",
        ],
    );
    let _keep = KeepLog(b.stderr_path.clone());
    // Time-based retention, long enough that nothing expires while the
    // disk fills (a few seconds: the test process takes most of it first).
    let retention_ms = 15_000;
    ok(b.cli(
        &[
            "topic",
            "create",
            "full",
            "--partitions",
            "1",
            "--config",
            "segment_bytes=1048576",
            "--config",
            &format!("retention_ms={retention_ms}"),
        ],
        None,
    ));
    let (free, _) = free_bytes(&m.dir);
    std::fs::write(
        m.dir.join("ballast"),
        vec![1u8; (free - (14 << 20)) as usize],
    )
    .unwrap();
    let started = Instant::now();
    let mut next = 0;
    let err = loop {
        let (ok_run, stderr) = produce(&b, next, 2000);
        next += 2000;
        assert!(next < 400_000, "the disk never filled up");
        if !ok_run {
            break stderr;
        }
    };
    fill_up(&m.dir);
    let filled_in = started.elapsed();
    assert!(
        filled_in < Duration::from_millis(retention_ms as u64 - 3000),
        "filling took {filled_in:?}: too slow for this test's retention"
    );
    assert!(err.to_lowercase().contains("no space"), "{err}");
    let (free_before, _) = free_bytes(&m.dir);
    // Retention deletes the expired closed segments (no metadata write
    // needed), and produce resumes by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok_run, err) = produce(&b, next, 100);
        next += 100;
        if ok_run {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "produce did not resume after retention: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (free_after, _) = free_bytes(&m.dir);
    eprintln!(
        "disk filled in {filled_in:?}; free {} -> {} KiB after retention",
        free_before >> 10,
        free_after >> 10
    );
    assert!(b.stderr().contains("retention deleted segments"));
    // What retention freed is partly taken again at once (the queued
    // writes, the resumed produce), so only a floor is checked here.
    assert!(free_after > free_before + (1 << 20));
    assert_eq!(b.stop(), Some(0), "a clean stop on the nearly full disk");
}

/// On failure, show the broker's log.
struct KeepLog(PathBuf);
impl Drop for KeepLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- broker log ---\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

/// DeleteRecords over the Kafka listener on a full disk: the new log start
/// needs a block of its own, which the metadata space reserve gives; the
/// whole segments below it go, and produce resumes with no restart.
#[test]
fn delete_records_on_a_full_disk_frees_space_and_produce_resumes() {
    use common::kafka::{tn, Conn};
    use kafka_protocol::messages::*;
    let Some((m, data)) = mounted_data_dir() else {
        return;
    };
    let log = m._tmp.path().join("broker.stderr");
    let b = BrokerProc::start_in_logging_to(
        &data,
        &log,
        &[
            "--set",
            "write_chunk_bytes=131072",
            "--set",
            "segment_preallocate_bytes=0",
        ],
    );
    let _keep = KeepLog(b.stderr_path.clone());
    ok(b.cli(
        &[
            "topic",
            "create",
            "full",
            "--partitions",
            "1",
            "--config",
            "segment_bytes=1048576",
            "--config",
            "retention_ms=-1",
        ],
        None,
    ));
    let mut next = 0;
    loop {
        let (ok_run, _) = produce(&b, next, 5000);
        next += 5000;
        assert!(next < 2_000_000, "the disk never filled up");
        if !ok_run {
            break;
        }
    }
    fill_up(&m.dir);
    let (ok_run, err) = produce(&b, next, 100);
    assert!(!ok_run && err.to_lowercase().contains("no space"), "{err}");
    let (_, avail_before) = free_bytes(&m.dir);
    let mut c = Conn::new(b.kafka.as_ref().unwrap());
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(tn("full"))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(-1),
            ])]);
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "DeleteRecords on a full disk");
    assert!(p.low_watermark > 0);
    // The reply comes once the new log start is durable; the segments below
    // it are closed when no read holds them and unlinked off the shard's
    // thread (as Kafka deletes them after the fact), so the space comes back
    // shortly after, not necessarily before the reply.
    let deadline = Instant::now() + Duration::from_secs(20);
    let avail_after = loop {
        let (_, avail_after) = free_bytes(&m.dir);
        if avail_after > avail_before + (16 << 20) {
            break avail_after;
        }
        assert!(
            Instant::now() < deadline,
            "whole segments below the new start were not deleted: df available {} -> {} KiB",
            avail_before >> 10,
            avail_after >> 10
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "log start {}; df available {} -> {} KiB",
        p.low_watermark,
        avail_before >> 10,
        avail_after >> 10
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok_run, err) = produce(&b, next + 1000, 100);
        if ok_run {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "produce did not resume after DeleteRecords: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
