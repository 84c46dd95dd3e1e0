//! Test harness: a real `shardlog serve` process on real files and sockets.
#![allow(dead_code)]

pub mod blkio;
pub mod kafka;
pub mod netns;

pub mod threads;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The broker binary: this build's, or `SHARDLOG_TEST_BIN` (for figures
/// measured on a release build).
pub fn bin() -> PathBuf {
    match std::env::var_os("SHARDLOG_TEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_shardlog")),
    }
}

/// A broker process. Its data directory outlives restarts; it is removed on drop.
pub struct BrokerProc {
    child: Option<Child>,
    pub native: String,
    pub kafka: Option<String>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub args: Vec<String>,
    pub stderr_path: PathBuf,
    /// A command the broker runs under (`ip netns exec NS`), if any.
    wrapper: Vec<String>,
}

impl BrokerProc {
    /// Start a broker with 2 shards on free ports in a fresh temporary directory.
    pub fn start(extra: &[&str]) -> BrokerProc {
        Self::start_with_shards(2, extra)
    }

    /// As [`Self::start`], with `shards` shards.
    pub fn start_with_shards(shards: usize, extra: &[&str]) -> BrokerProc {
        let tmp = tempfile::Builder::new()
            .prefix("shardlog-test-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let mut b = Self::start_on(
            dir,
            &dir.join("broker.stderr"),
            "127.0.0.1:0",
            "127.0.0.1:0",
            shards,
            extra,
        );
        b._tmp = Some(tmp);
        b
    }

    /// Start a broker on an existing data directory.
    pub fn start_in(dir: &Path, extra: &[&str]) -> BrokerProc {
        Self::start_in_logging_to(dir, &dir.join("broker.stderr"), extra)
    }

    /// Start a broker whose log goes to `stderr_path` (e.g. off a full disk).
    pub fn start_in_logging_to(dir: &Path, stderr_path: &Path, extra: &[&str]) -> BrokerProc {
        Self::start_on(dir, stderr_path, "127.0.0.1:0", "127.0.0.1:0", 2, extra)
    }

    /// Start a broker on given listen addresses (fixed ports survive
    /// restarts as they are) and shard count.
    pub fn start_on(
        dir: &Path,
        stderr_path: &Path,
        native: &str,
        kafka: &str,
        shards: usize,
        extra: &[&str],
    ) -> BrokerProc {
        Self::start_wrapped(&[], dir, stderr_path, native, kafka, shards, extra)
    }

    /// As [`Self::start_on`], run under `wrapper` (e.g. `ip netns exec
    /// NS`, which execs the broker: the child's pid is the broker's).
    pub fn start_wrapped(
        wrapper: &[&str],
        dir: &Path,
        stderr_path: &Path,
        native: &str,
        kafka: &str,
        shards: usize,
        extra: &[&str],
    ) -> BrokerProc {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            native.into(),
            "--kafka-listen".into(),
            kafka.into(),
            "--shards".into(),
            shards.to_string(),
            // Groups form at once unless a test is about the initial
            // rebalance delay (Kafka's 3 s default would slow every group
            // test); a test's own `--set` comes later and wins.
            "--set".into(),
            "group_initial_rebalance_delay_ms=0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut b = BrokerProc {
            child: None,
            native: String::new(),
            kafka: None,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            args,
            stderr_path: stderr_path.to_path_buf(),
            wrapper: wrapper.iter().map(|w| w.to_string()).collect(),
        };
        b.spawn();
        b
    }

    /// Start the process. A listener asked for as `127.0.0.1:0` gets a
    /// port the harness picks below the kernel's ephemeral range (see
    /// [`free_port`]), kept across restarts; if another test takes it
    /// before the broker binds, the broker is started on other ports.
    fn spawn(&mut self) {
        let picked: Vec<usize> = ["--listen", "--kafka-listen"]
            .iter()
            .filter_map(|flag| self.args.iter().position(|a| a == flag))
            .map(|i| i + 1)
            .filter(|&i| self.args.get(i).is_some_and(|a| a == "127.0.0.1:0"))
            .collect();
        for attempt in 0.. {
            for &i in &picked {
                self.args[i] = format!("127.0.0.1:{}", free_port());
            }
            let logged = std::fs::metadata(&self.stderr_path).map_or(0, |m| m.len());
            match self.try_spawn() {
                Ok(()) => return,
                Err(e) if !picked.is_empty() && attempt < 3 && e.contains("already in use") => {
                    // The failed start's log is not the test's business.
                    if let Ok(f) = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&self.stderr_path)
                    {
                        let _ = f.set_len(logged);
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Start the process and wait until it is ready; on failure, the reason
    /// with the thread report and the log.
    fn try_spawn(&mut self) -> Result<(), String> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start shardlog serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("shardlog ready:") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let threads = threads::thread_report(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "broker did not become ready; threads:\n{threads}\nstderr:\n{}",
                    self.stderr()
                ));
            }
        };
        for part in line.split_whitespace() {
            if let Some(a) = part.strip_prefix("native=") {
                self.native = a.to_string();
            }
            if let Some(a) = part.strip_prefix("kafka=") {
                self.kafka = (a != "off").then(|| a.to_string());
            }
        }
        // Keep the ports across restarts, as a real deployment does: clients
        // that outlive a kill -9 (the soak's, a Kafka consumer closing) must
        // find the broker again at the address they bootstrapped from.
        for (flag, addr) in [
            ("--listen", Some(self.native.clone())),
            ("--kafka-listen", self.kafka.clone()),
        ] {
            let Some(addr) = addr else { continue };
            if let Some(i) = self.args.iter().position(|a| a == flag) {
                if self.args[i + 1].ends_with(":0") {
                    self.args[i + 1] = addr;
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The broker's log without ANSI colour codes (tracing colours field names).
    pub fn plain_log(&self) -> String {
        let raw = self.stderr();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The number after ` key=` in a line of [`BrokerProc::plain_log`].
    pub fn log_field(line: &str, key: &str) -> u64 {
        let at = line
            .find(&format!(" {key}="))
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        line[at + key.len() + 2..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {line}: {e}"))
    }

    /// SIGKILL: no flush, no sync, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        for _ in 0..600 {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let threads = threads::thread_report(c.id());
        let _ = c.kill();
        panic!("broker did not stop within 30 s after SIGTERM; threads:\n{threads}");
    }

    /// Start again on the same directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.spawn();
    }

    /// Create a topic through the CLI (asserting success).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        ok(self.cli(
            &[
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ],
            None,
        ));
    }

    /// Run a CLI command against this broker.
    pub fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        cli(&self.native, args, stdin)
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Run `shardlog ARGS --broker ADDR`, feeding `stdin`.
pub fn cli(broker: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("SHARDLOG_BROKER", broker)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardlog");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(|s| s.to_vec()).unwrap_or_default();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Assert success and return stdout as text.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every message value of `topic`, per partition in offset order, read from
/// the earliest offset until the consumer has caught up with the high
/// watermark of every partition.
pub async fn read_topic(
    addr: &str,
    topic: &str,
) -> std::collections::BTreeMap<u32, Vec<bytes::Bytes>> {
    use shardlog::client::{Client, Consumer, ConsumerConfig, StartAt};
    let c = Client::connect(addr).await.unwrap();
    let mut cons = Consumer::new(
        c,
        topic,
        None,
        StartAt::Earliest,
        ConsumerConfig {
            max_wait_ms: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut out = std::collections::BTreeMap::<u32, Vec<bytes::Bytes>>::new();
    while !cons.caught_up() {
        for m in cons.poll().await.unwrap() {
            out.entry(m.partition)
                .or_default()
                .push(m.value.expect("a value"));
        }
    }
    out
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick).
/// A port free on 127.0.0.1 now, below the kernel's ephemeral range.
///
/// Why not port 0's pick: that comes from the ephemeral range, which the
/// kernel also hands out as the local port of outgoing connections. A
/// broker that keeps its port across a restart (as tests do) left it free
/// for a moment, and another test's client connection took it: the restart
/// failed with "address already in use by PID … (shardlog)".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u64, u64::from(ephemeral_low.max(12_000)));
    // Start somewhere different in each test process; walk from there.
    let seed = u64::from(std::process::id()).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    let _ = NEXT.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(7, Ordering::Relaxed);
        let port = (lo + n % (hi - lo)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Holds an exclusive `flock` on a machine-wide file for tests that use the
/// broker's default ports (9400, 9092): test binaries of this and other
/// worktrees may run at the same time, and two such tests would refuse each
/// other's broker. Waits up to `max` for the holder to finish.
pub struct DefaultPortsLock(std::fs::File);

impl DefaultPortsLock {
    pub fn acquire(max: Duration) -> DefaultPortsLock {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("shardlog-default-ports.lock"))
            .unwrap();
        let deadline = std::time::Instant::now() + max;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return DefaultPortsLock(f);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "another test held the default ports for {max:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Run `shardlog serve` on `dir` expecting it to exit on its own (within
/// 30 s): its exit code and stderr. A broker that starts serving instead is
/// killed, and the exit code is None. `extra`: more flags.
pub fn serve_expecting_exit(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
            "--shards",
            "2",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}
