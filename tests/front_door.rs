//! The front door: what a newcomer meets when starting a broker, with real
//! `shardlog serve` processes, real sockets and real files.
//!
//! - a second broker on a data directory, or a port, that is in use is
//!   refused at once, naming what is in use and by which PID, and leaves
//!   the first broker and its files alone;
//! - `kill -9` then an immediate restart on the same ports and directory,
//!   six times, loses nothing and never trips on the lock or the ports;
//! - `shardlog serve` with no flags works from an empty directory;
//! - awkward hosts: tmpfs, a read-only file system, a missing parent
//!   directory, a low RLIMIT_MEMLOCK, a non-root user, more shards than
//!   CPUs.
//!
//! Tests that mount file systems or switch users need root and are skipped,
//! with a printed reason, without it (CI runs as root).

mod common;

use common::{bin, free_port, ok, BrokerProc, DefaultPortsLock};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Generous bound for a refusal; the brokers refuse in milliseconds.
const REFUSE_WITHIN: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skip (return true, printing why) when a test needs root.
fn skip_without_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (mount / setuid); CI runs as root");
    true
}

/// A `shardlog serve` that is expected to exit on its own: run it with a
/// bounded wait and return its status, stdout, stderr and how long it took.
struct Exited {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run_serve(args: &[&str], within: Duration, setup: impl FnOnce(&mut Command)) -> Exited {
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start shardlog serve");
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read_all(Box::new(out)), read_all(Box::new(err)));
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve {args:?} did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    Exited {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took,
    }
}

/// Assert a refusal: exit code 1 within the bound, no ready line, no panic.
fn assert_refused(e: &Exited, what: &str) {
    let ctx = format!(
        "{what}: status {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
        e.status, e.took, e.stdout, e.stderr
    );
    assert_eq!(e.status.code(), Some(1), "{ctx}");
    assert!(!e.stdout.contains("shardlog ready"), "{ctx}");
    assert!(!e.stderr.contains("panicked"), "{ctx}");
    assert!(e.took < REFUSE_WITHIN, "{ctx}");
    eprintln!("{what}: refused in {:.3} s", e.took.as_secs_f64());
}

/// Every file and directory under `dir` with its size and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.metadata().unwrap();
            out.insert(
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                (md.len(), md.modified().unwrap()),
            );
            if md.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

/// Create `topic`, produce `n` keyed lines, and check they all come back.
fn produce_consume(b: &BrokerProc, topic: &str, n: usize) {
    ok(b.cli(&["topic", "create", topic, "--partitions", "3"], None));
    let input: String = (0..n).map(|i| format!("k{}|v{i}\n", i % 7)).collect();
    ok(b.cli(
        &["produce", topic, "--key-separator", "|"],
        Some(input.as_bytes()),
    ));
    let out = ok(b.cli(&["consume", topic, "--from-beginning"], None));
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want, "{topic}: every message back");
}

/// Settings that keep an idle broker from touching its files on its own,
/// so that a snapshot taken around a refused start shows only what the
/// refused broker did.
const QUIET: &[&str] = &[
    "--set",
    "recovery_point_interval_ms=3600000",
    "--set",
    "retention_check_interval_ms=3600000",
];

#[test]
fn second_broker_on_the_same_data_dir_is_refused_and_changes_nothing() {
    let first = BrokerProc::start(QUIET);
    produce_consume(&first, "before", 500);
    let dir = std::fs::canonicalize(&first.data_dir).unwrap();
    // Wait until the first broker's own writes (flush, checkpoints) settle.
    let mut before = snapshot(&dir);
    let mut stable = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(300));
        let now = snapshot(&dir);
        if now == before {
            stable = true;
            break;
        }
        before = now;
    }
    assert!(stable, "the idle first broker kept changing its files");

    let (np, kp) = (free_port(), free_port());
    let e = run_serve(
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{np}"),
            "--kafka-listen",
            &format!("127.0.0.1:{kp}"),
            "--shards",
            "2",
        ],
        REFUSE_WITHIN * 2,
        |_| {},
    );
    assert_refused(&e, "second broker on the same data dir");
    assert!(
        e.stderr.contains(&dir.display().to_string()),
        "names the data dir: {}",
        e.stderr
    );
    assert!(
        e.stderr.contains(&format!("PID {}", first.pid())),
        "names the first broker's PID {}: {}",
        first.pid(),
        e.stderr
    );
    assert_eq!(snapshot(&dir), before, "the refused broker touched files");
    assert_eq!(
        std::fs::read_to_string(dir.join(".lock")).unwrap().trim(),
        first.pid().to_string(),
        "the lock file still names the first broker"
    );
    // The refused broker never listened.
    assert!(std::net::TcpStream::connect(("127.0.0.1", np)).is_err());

    produce_consume(&first, "after", 500);
    let out = ok(first.cli(&["consume", "before", "--from-beginning"], None));
    assert_eq!(out.lines().count(), 500);
}

#[test]
fn second_broker_on_a_port_in_use_is_refused() {
    let first = BrokerProc::start(&[]);
    let kafka = first.kafka.clone().expect("kafka listener on");
    for (what, native, kafka) in [
        (
            "native",
            first.native.clone(),
            format!("127.0.0.1:{}", free_port()),
        ),
        ("kafka", format!("127.0.0.1:{}", free_port()), kafka),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let e = run_serve(
            &[
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen",
                &native,
                "--kafka-listen",
                &kafka,
                "--shards",
                "2",
            ],
            REFUSE_WITHIN * 2,
            |_| {},
        );
        assert_refused(&e, &format!("second broker on the same {what} port"));
        let addr = if what == "native" { &native } else { &kafka };
        assert!(
            e.stderr.contains(&format!("{what} listener"))
                && e.stderr.contains(addr.as_str())
                && e.stderr
                    .contains(&format!("PID {} (shardlog)", first.pid())),
            "names the listener, {addr} and PID {}: {}",
            first.pid(),
            e.stderr
        );
        // Refused before anything but the lock was made in the new dir.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".lock"], "a refused broker created files");
    }
    produce_consume(&first, "still-serving", 300);
}

#[test]
fn a_port_held_by_another_program_is_named() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let e = run_serve(
        &[
            "--data-dir",
            tmp.path().join("d").to_str().unwrap(),
            "--listen",
            &addr,
            "--kafka-listen",
            "",
        ],
        REFUSE_WITHIN * 2,
        |_| {},
    );
    assert_refused(&e, "port held by the test process");
    assert!(
        e.stderr.contains(&addr) && e.stderr.contains(&format!("PID {}", std::process::id())),
        "names {addr} and this test's PID {}: {}",
        std::process::id(),
        e.stderr
    );
    drop(held);
}

/// A broker started the way a user does after a crash: at once, not waited
/// for; the CLI waits for it (`Client::connect_retrying`).
struct Serve {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Serve {
    fn spawn(dir: &Path, native: &str, kafka: &str, log: &Path, n: usize) -> Serve {
        let stdout = log.join(format!("serve-{n}.stdout"));
        let stderr = log.join(format!("serve-{n}.stderr"));
        let child = Command::new(bin())
            .args(["serve", "--data-dir", dir.to_str().unwrap()])
            .args(["--listen", native, "--kafka-listen", kafka, "--shards", "2"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Serve {
            child,
            stdout,
            stderr,
        }
    }

    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn cli_at(native: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    ok(common::cli(native, args, stdin))
}

#[test]
fn kill9_and_immediate_restart_on_the_same_ports_six_times() {
    const CYCLES: usize = 6;
    const N: usize = 2_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let native = format!("127.0.0.1:{}", free_port());
    let kafka = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut broker = Serve::spawn(&dir, &native, &kafka, tmp.path(), 0);
    cli_at(
        &native,
        &["topic", "create", "cycles", "--partitions", "4"],
        None,
    );
    let mut want: Vec<String> = Vec::new();
    let mut waited_out = 0;
    for cycle in 1..=CYCLES {
        let t = Instant::now();
        let input: String = (0..N)
            .map(|i| format!("key{}|c{cycle}-m{i}\n", i % 13))
            .collect();
        cli_at(
            &native,
            &["produce", "cycles", "--key-separator", "|"],
            Some(input.as_bytes()),
        );
        want.extend((0..N).map(|i| format!("c{cycle}-m{i}")));
        // As the README's `kill -9 %1; shardlog serve ... &` does: the
        // signal is sent and the new broker started at once, while the old
        // process may still be tearing down (its lock and sockets held).
        // SAFETY: signalling our own child.
        unsafe { libc::kill(broker.child.id() as i32, libc::SIGKILL) };
        let old = std::mem::replace(
            &mut broker,
            Serve::spawn(&dir, &native, &kafka, tmp.path(), cycle),
        );
        drop(old); // reaps it
        let out = common::cli(&native, &["consume", "cycles", "--from-beginning"], None);
        assert!(
            out.status.success(),
            "cycle {cycle}: consume failed: {}\nbroker {}",
            String::from_utf8_lossy(&out.stderr),
            broker.logs()
        );
        let mut got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        got.sort_unstable();
        let mut w = want.clone();
        w.sort_unstable();
        assert!(
            got == w,
            "cycle {cycle}: {} messages back, {} acknowledged; broker {}",
            got.len(),
            w.len(),
            broker.logs()
        );
        // The restarted broker is the one that served: up, ready, on the
        // same ports, with nothing refused.
        assert!(
            broker.child.try_wait().unwrap().is_none(),
            "cycle {cycle}: restarted broker exited; {}",
            broker.logs()
        );
        let logs = broker.logs();
        assert!(
            logs.contains(&format!("shardlog ready: native={native} kafka={kafka}")),
            "cycle {cycle}: {logs}"
        );
        assert!(!logs.contains("error:"), "cycle {cycle}: {logs}");
        if logs.contains("waiting") {
            waited_out += 1;
        }
        eprintln!(
            "cycle {cycle}: {} messages back after kill -9 + restart, {:.2} s",
            got.len(),
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "{CYCLES} cycles passed in {:.1} s; {waited_out} restarts waited out a dying predecessor's lock or port",
        started.elapsed().as_secs_f64()
    );
}

/// A Kafka ApiVersions v0 request; returns the response's error code.
fn kafka_api_versions(addr: &str) -> i16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // api_key 18, version 0, correlation id 7, null client id.
    let body: [u8; 10] = [0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut head = [0u8; 10];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[4..8], &7i32.to_be_bytes(), "correlation id");
    i16::from_be_bytes([head[8], head[9]])
}

#[test]
fn serve_with_no_flags_uses_the_default_dir_and_ports() {
    // The README test uses these ports too; so may another worktree's.
    let _ports = DefaultPortsLock::acquire(Duration::from_secs(600));
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .arg("serve")
        .current_dir(cwd.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(cwd.path().join("serve.stderr")).unwrap())
        .spawn()
        .unwrap();
    struct Kill(Option<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut guard = Kill(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let stderr = || std::fs::read_to_string(cwd.path().join("serve.stderr")).unwrap();
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("not ready; stderr:\n{}", stderr()));
    let data = std::fs::canonicalize(cwd.path())
        .unwrap()
        .join("shardlog-data");
    assert_eq!(
        ready,
        format!(
            "shardlog ready: native=127.0.0.1:9400 kafka=127.0.0.1:9092 shards={} data_dir={}",
            std::thread::available_parallelism().unwrap(),
            data.display()
        )
    );
    // The CLI's defaults find it: no --broker, no SHARDLOG_BROKER.
    let cli = |args: &[&str], input: &str| {
        let mut c = Command::new(bin())
            .args(args)
            .current_dir(cwd.path())
            .env_remove("SHARDLOG_BROKER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        ok(c.wait_with_output().unwrap())
    };
    cli(&["topic", "create", "defaults", "--partitions", "2"], "");
    cli(&["produce", "defaults"], "a\nb\nc\n");
    let out = cli(&["consume", "defaults", "--from-beginning"], "");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["a", "b", "c"]);
    assert_eq!(kafka_api_versions("127.0.0.1:9092"), 0, "Kafka on :9092");
    assert!(data.join(".lock").is_file() && data.join("defaults-0").is_dir());

    let mut child = guard.0.take().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    for _ in 0..300 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("no exit within 30 s of SIGTERM; stderr:\n{}", stderr());
    };
    assert!(status.success(), "{status:?}; stderr:\n{}", stderr());
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs -o {options}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_data_dir_on_tmpfs_serves_and_survives_kill9() {
    if skip_without_root("tmpfs") {
        return;
    }
    let fs = Tmpfs::mount("size=256m");
    let dir = fs.path().join("data");
    let log = tempfile::tempdir().unwrap();
    let mut b = BrokerProc::start_on(
        &dir,
        &log.path().join("broker.stderr"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        2,
        &[],
    );
    produce_consume(&b, "on-tmpfs", 2_000);
    b.kill9();
    b.restart();
    let out = ok(b.cli(&["consume", "on-tmpfs", "--from-beginning"], None));
    assert_eq!(out.lines().count(), 2_000, "after kill -9 on tmpfs");
    assert!(!b.stderr().contains("ERROR"), "{}", b.stderr());
}

#[test]
fn a_read_only_data_dir_is_refused_before_ready() {
    if skip_without_root("read-only mount") {
        return;
    }
    let fs = Tmpfs::mount("ro,size=1m");
    for (dir, says) in [
        (fs.path().to_path_buf(), "is not writable"),
        (fs.path().join("sub/data"), "cannot create data directory"),
    ] {
        let e = run_serve(
            &[
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
            ],
            REFUSE_WITHIN * 2,
            |_| {},
        );
        assert_refused(&e, &format!("read-only {}", dir.display()));
        assert!(
            e.stderr.contains(says) && e.stderr.contains("Read-only file system"),
            "{}",
            e.stderr
        );
    }
}

#[test]
fn missing_parent_directories_are_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/c/data");
    let b = BrokerProc::start_in_logging_to(&dir, &tmp.path().join("broker.stderr"), &[]);
    assert!(dir.join(".lock").is_file());
    produce_consume(&b, "nested", 200);
}

/// Lower RLIMIT_MEMLOCK (soft and hard) in the child before exec.
fn with_memlock(cmd: &mut Command, bytes: u64) {
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_memlock_limit_below_glommios_minimum_is_a_clear_error() {
    // Lowering a limit needs no privilege.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let e = run_serve(
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
        ],
        REFUSE_WITHIN * 2,
        |c| with_memlock(c, 64 * 1024),
    );
    assert_refused(&e, "memlock 64 KiB");
    for needle in [
        "RLIMIT_MEMLOCK",
        "64 KiB",
        "512 KiB",
        "ulimit -l",
        "LimitMEMLOCK",
    ] {
        assert!(e.stderr.contains(needle), "'{needle}' in: {}", e.stderr);
    }
    assert!(!dir.exists(), "nothing created before the check");
}

#[test]
fn a_non_root_user_with_the_default_memlock_serves() {
    if skip_without_root("setuid to nobody") {
        return;
    }
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--data-dir", dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
        .args(["--shards", "2"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("stderr")).unwrap());
    // The kernel's default limit since 5.16 (8 MiB), whatever the test's is.
    with_memlock(&mut cmd, 8 << 20);
    // std clears the supplementary groups when root switches uid.
    cmd.uid(NOBODY).gid(NOBODY);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let stderr = || std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    let ready = rx.recv_timeout(Duration::from_secs(60));
    let ready = match ready {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("not ready as nobody; stderr:\n{}", stderr());
        }
    };
    let native = ready
        .split_whitespace()
        .find_map(|p| p.strip_prefix("native="))
        .unwrap()
        .to_string();
    ok(common::cli(
        &native,
        &["topic", "create", "t", "--partitions", "2"],
        None,
    ));
    let input: String = (0..1000).map(|i| format!("m{i}\n")).collect();
    ok(common::cli(
        &native,
        &["produce", "t"],
        Some(input.as_bytes()),
    ));
    let out = ok(common::cli(
        &native,
        &["consume", "t", "--from-beginning"],
        None,
    ));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.lines().count(), 1000);
    let err = stderr();
    assert!(
        err.contains("locked-memory limit (ulimit -l) is below"),
        "our explanation of glommio's buffer-registration warning: {err}"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("t-0")).unwrap());
    assert_eq!(owner, NOBODY);
}

#[test]
fn more_shards_than_cpus_warns_and_serves() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let shards = cpus * 2 + 1;
    let tmp = tempfile::tempdir().unwrap();
    let b = BrokerProc::start_on(
        &tmp.path().join("data"),
        &tmp.path().join("broker.stderr"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        shards,
        &[],
    );
    assert!(
        b.stderr().contains("more shards than CPUs"),
        "{}",
        b.stderr()
    );
    let desc = ok(b.cli(&["topic", "create", "wide", "--partitions", "12"], None));
    assert!(desc.contains("12 partitions"));
    let input: String = (0..3000).map(|i| format!("k{i}|v{i}\n")).collect();
    ok(b.cli(
        &["produce", "wide", "--key-separator", "|"],
        Some(input.as_bytes()),
    ));
    let out = ok(b.cli(&["consume", "wide", "--from-beginning"], None));
    assert_eq!(out.lines().count(), 3000);
    // Every shard, including those sharing a CPU, owns partitions.
    let desc = ok(b.cli(&["topic", "describe", "wide"], None));
    assert!(desc.contains(&format!("shards: {shards}")), "{desc}");
    let used: std::collections::BTreeSet<&str> = desc
        .lines()
        .skip_while(|l| !l.starts_with("partition\t"))
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    assert_eq!(used.len(), shards.min(12), "{desc}");
}

#[test]
fn a_startup_failure_in_a_shard_ends_in_an_error_never_a_hang() {
    // Too few descriptors for the executors' rings: depending on which
    // open fails first, a shard's executor never runs its code, or a
    // shard fails its probe while another is still starting (which once
    // left `start` waiting forever for a reply queued to a dead shard).
    for nofile in 12..=16u64 {
        let tmp = tempfile::tempdir().unwrap();
        let e = run_serve(
            &[
                "--data-dir",
                tmp.path().join("d").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
                "--shards",
                "2",
            ],
            REFUSE_WITHIN * 2,
            |c| {
                // SAFETY: setrlimit is async-signal-safe.
                unsafe {
                    c.pre_exec(move || {
                        let r = libc::rlimit {
                            rlim_cur: nofile,
                            rlim_max: nofile,
                        };
                        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                        Ok(())
                    });
                }
            },
        );
        // glommio itself panics on some of these paths (reading sysfs);
        // the broker's panic hook turns that into exit 101.
        assert!(
            !e.status.success() && !e.stdout.contains("shardlog ready"),
            "nofile {nofile}: {:?}\n{}",
            e.status,
            e.stderr
        );
        eprintln!(
            "nofile {nofile}: exit {:?} in {:.3} s: {}",
            e.status.code(),
            e.took.as_secs_f64(),
            e.stderr
                .lines()
                .find(|l| l.starts_with("error:") || l.contains("panicked"))
                .unwrap_or("")
        );
    }
}
