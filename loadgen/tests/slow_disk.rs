//! loadgen's embedded broker on a disk that stands still for a few seconds
//! (the kernel throttles the process's writes; see tests/common/blkio.rs):
//! the run's output must say so without being asked (no RUST_LOG), in
//! plain text, since a benchmark's figure taken while the disk stood
//! still is a figure of the disk, not of the broker (issue 14: a
//! side-by-side round stood still for 4 s and nothing said why).
//!
//! Needs root (cgroups). Set SHARDLOG_SKIP_ROOT_TESTS=1 to skip it knowingly.

mod common;

use common::blkio::ThrottledGroup;
use common::Loadgen;
use std::time::Duration;

#[test]
fn a_run_on_a_disk_that_stands_still_says_so_on_stderr() {
    if std::env::var_os("SHARDLOG_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipped: SHARDLOG_SKIP_ROOT_TESTS is set");
        return;
    }
    // The embedded broker keeps its data under TMPDIR.
    let tmp = tempfile::tempdir().unwrap();
    let group = ThrottledGroup::new(tmp.path());
    let lg = Loadgen::spawn_with(
        &group.wrapper(),
        tmp,
        &[
            "run",
            "--quiet",
            "--rate",
            "0",
            "--producers",
            "1",
            "--consumers",
            "1",
            "--partitions",
            "1",
            "--batch-bytes",
            "256k",
            "--warmup",
            "500ms",
            "--duration",
            "6s",
        ],
    );
    lg.wait_started(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // 4 KiB/s: a write chunk takes minutes, so the disk stands still
    // until the limit is lifted 3 s later.
    group.limit_writes(4 << 10);
    let held = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    group.limit_writes(0);
    let held = held.elapsed();
    let done = lg.wait(Duration::from_secs(120));
    assert_eq!(done.code, Some(0), "the run itself is sound: {done}");
    let warning = done
        .stderr
        .lines()
        .find(|l| l.contains("slow disk: one "))
        .unwrap_or_else(|| panic!("no slow-disk warning on stderr: {done}"));
    println!("measurement: {warning}");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        !done.stderr.contains('\x1b'),
        "colour codes in a piped stderr: {done}"
    );
    let took_ms: u64 = warning
        .split("took_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no took_ms in {warning}"));
    // A write submitted while the limit held waited for its lifting.
    let most = held.as_millis() as u64 + 500;
    assert!((1000..=most).contains(&took_ms), "held {held:?}: {warning}");
    // Only storage warnings are shown by default: no INFO lines.
    assert!(!done.stderr.contains(" INFO "), "{done}");
    done.assert_no_data_dir_left();
}
