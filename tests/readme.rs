//! The README's "Try it" block, run as written: a newcomer's first minutes;
//! and its "Cluster" block: three brokers on one machine.
//!
//! The block is read from README.md (so any later change to it is what gets
//! tested) and run by bash in a fresh, empty working directory, with the
//! same commands, flags and relative paths (`./shardlog-data`, the default
//! ports 9400 and 9092). Two lines of the block need the repository and are
//! adapted, nothing else: `cargo build --release` is skipped (the test
//! harness has already built the binary), and `./target/release/shardlog`
//! is a symlink, in the temporary directory, to that binary.
//!
//! Needs kcat (the block's last line); as root the test installs it from
//! Debian when it is missing, otherwise it fails saying so.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first ```sh block after the "## Try it" heading.
fn try_it_block() -> String {
    block_after("## Try it")
}

/// The first ```sh block after `heading`.
fn block_after(heading: &str) -> String {
    nth_block_after(heading, 0)
}

/// The `n`th (from 0) ```sh block after `heading`.
fn nth_block_after(heading: &str, n: usize) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut after = readme
        .split_once(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("README has a '{heading}' section"))
        .1;
    for _ in 0..n {
        after = after
            .split_once("```sh\n")
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .unwrap_or_else(|| panic!("README has {} sh blocks after '{heading}'", n + 1))
            .1;
    }
    let body = after
        .split_once("```sh\n")
        .unwrap_or_else(|| panic!("a ```sh block under '{heading}'"))
        .1;
    body.split_once("\n```")
        .expect("the block is closed")
        .0
        .to_string()
}

fn ensure_kcat() {
    let have = || {
        Command::new("sh")
            .args(["-c", "command -v kcat"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if have() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the README's Try-it block uses kcat: install it (apt-get install kcat)"
    );
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let st = Command::new("apt-get")
        .args(["install", "-y", "-qq", "kcat"])
        .status()
        .expect("apt-get");
    assert!(st.success() && have(), "could not install kcat");
}

/// Kills the whole process group of the script (the brokers it left in
/// the background) when the test ends, however it ends.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: signalling a process group we created.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn readme_try_it_block_works_as_written() {
    // The block uses the default ports; so do tests/front_door.rs and
    // maybe another worktree's tests running now.
    let _ports = common::DefaultPortsLock::acquire(Duration::from_secs(600));
    ensure_kcat();
    let block = try_it_block();
    let mut lines = block.lines();
    let first = lines.next().unwrap_or_default();
    assert_eq!(
        first.trim(),
        "cargo build --release",
        "the block starts by building; this test skips only that line"
    );
    let script: String = lines.map(|l| format!("{l}\n")).collect();
    assert!(script.contains("./target/release/shardlog serve --data-dir ./shardlog-data"));

    let (dir, status, out, err) = run_in_fresh_dir(&script);
    let ctx = format!("exit {status}\n--- stdout\n{out}\n--- stderr\n{err}");
    assert!(status.success(), "{ctx}");

    // Two brokers started (before and after kill -9), on the default ports,
    // with the relative data dir resolved.
    let ready: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("shardlog ready:"))
        .collect();
    assert_eq!(ready.len(), 2, "{ctx}");
    let data_dir = std::fs::canonicalize(dir.path().join("shardlog-data")).unwrap();
    for r in &ready {
        assert!(r.contains("native=127.0.0.1:9400"), "{ctx}");
        assert!(r.contains("kafka=127.0.0.1:9092"), "{ctx}");
        assert!(
            r.contains(&format!("data_dir={}", data_dir.display())),
            "{ctx}"
        );
    }
    // `consume --print-key | head`: ten KEY<TAB>VALUE lines.
    let keyed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("user") && l.contains("\torder-"))
        .collect();
    assert_eq!(keyed.len(), 10, "{ctx}");
    for l in &keyed {
        let (k, v) = l.split_once('\t').unwrap();
        let n: u64 = v.trim_start_matches("order-").parse().unwrap();
        assert_eq!(k, format!("user{}", n % 100), "{ctx}");
    }
    // `consume | wc -l` after kill -9 and restart: every message.
    assert!(
        out.lines().any(|l| l.trim() == "100000"),
        "expected 100000 messages after the restart; {ctx}"
    );
    // kcat over Kafka: three plain values.
    let plain = out
        .lines()
        .filter(|l| l.starts_with("order-") && l[6..].parse::<u64>().is_ok())
        .count();
    assert_eq!(plain, 3, "{ctx}");
    // Nothing a newcomer would read as trouble.
    for bad in ["panicked", "ERROR", "refuses writes", "Broken pipe"] {
        assert!(!err.contains(bad), "stderr mentions '{bad}': {ctx}");
    }
    // The partitions live under the relative data dir.
    for p in 0..8 {
        assert!(data_dir.join(format!("orders-{p}")).is_dir(), "{ctx}");
    }
}

/// Run `script` with bash in a fresh temporary directory holding
/// `target/release/shardlog` (a link to the binary under test), in its own
/// process group, killed when this returns. Returns the directory (kept
/// while the caller looks at it), the exit status, stdout and stderr.
fn run_in_fresh_dir(script: &str) -> (tempfile::TempDir, std::process::ExitStatus, String, String) {
    let dir = tempfile::Builder::new()
        .prefix("shardlog-readme-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_shardlog"),
        dir.path().join("target/release/shardlog"),
    )
    .unwrap();
    let out_path = dir.path().join("stdout.txt");
    let err_path = dir.path().join("stderr.txt");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env_remove("SHARDLOG_BROKER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let _group = Group(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the block did not finish in 180 s; stderr:\n{}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    (dir, status, out, err)
}

#[test]
fn readme_cluster_block_works_as_written() {
    // Node 2's Kafka port is the default 9092.
    let _ports = common::DefaultPortsLock::acquire(Duration::from_secs(600));
    ensure_kcat();
    // The first block starts three brokers and writes; the second, which
    // continues it, adds a fourth and moves the topic's replicas onto it.
    let script = format!(
        "{}\n{}",
        block_after("## Cluster"),
        nth_block_after("## Cluster", 1)
    );
    assert!(script.contains("--controller-voters $V"), "{script}");
    assert!(script.contains("cluster reassign clicks"), "{script}");
    let (_dir, status, out, err) = run_in_fresh_dir(&script);
    let ctx = format!("exit {status}\n--- stdout\n{out}\n--- stderr\n{err}");
    assert!(status.success(), "{ctx}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("shardlog ready:"))
            .count(),
        4,
        "{ctx}"
    );
    for id in 1..=4 {
        assert!(out.contains(&format!("broker {id}\tlive\t")), "{ctx}");
    }
    // `kcat ... | wc -l` through node 3, then (after the reassignment)
    // through node 4: every message produced through node 1, both times.
    assert_eq!(
        out.lines().filter(|l| l.trim() == "1000").count(),
        2,
        "{ctx}"
    );
    assert!(out.contains("clicks: 6 partitions now on 2,3,4"), "{ctx}");
    // `ls cluster-node1`: its copies of clicks were deleted.
    assert!(!out.lines().any(|l| l.starts_with("clicks-")), "{ctx}");
    // The six partitions are led by all three nodes.
    for id in 1..=3 {
        assert!(
            out.lines()
                .any(|l| l.starts_with("clicks\t") && l.contains(&format!("leader={id}\t"))),
            "no clicks partition led by {id}: {ctx}"
        );
    }
    for bad in ["panicked", "ERROR"] {
        assert!(!err.contains(bad), "stderr mentions '{bad}': {ctx}");
    }
}
