//! A full disk, for real: a small ext4 image, loop-mounted, under a real
//! broker. Produce gets "no space", reads keep working, writes resume when
//! space is freed (no restart), and nothing is left corrupt.
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

fn produce(b: &BrokerProc, from: usize, n: usize) -> (bool, String) {
    let input: String = (from..from + n)
        .map(|i| format!("msg-{i:07}-{}\n", "p".repeat(200)))
        .collect();
    let out = b.cli(
        &["produce", "full", "--batch-bytes", "65536"],
        Some(input.as_bytes()),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn consumed(b: &BrokerProc) -> Vec<String> {
    ok(b.cli(&["consume", "full", "--from-beginning"], None))
        .lines()
        .map(|l| l[..11].to_string())
        .collect()
}

#[test]
fn a_full_disk_refuses_produce_keeps_reads_and_recovers_without_restart() {
    if skip() {
        eprintln!("skipped: SHARDLOG_SKIP_ROOT_TESTS is set");
        return;
    }
    let m = LoopMount::new(48);
    let data = m.dir.join("data");
    std::fs::create_dir(&data).unwrap();
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
