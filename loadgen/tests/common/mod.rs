//! Helpers shared by loadgen's integration tests (each test file is its own
//! crate, so not every file uses every helper).
#![allow(dead_code)]

#[path = "../../../tests/common/threads.rs"]
mod threads;

#[path = "../../../tests/common/blkio.rs"]
pub mod blkio;

use loadgen::cpu::BrokerCpuSource;
use loadgen::embedded::EmbeddedBroker;
use loadgen::knee::SustainRule;
use loadgen::result::RunResult;
use loadgen::runner::RunEnv;
use loadgen::transport::{Protocol, Target};
use loadgen::workload::WorkloadSpec;

/// Run against the embedded broker `b` over `protocol`, quietly.
pub fn env_for(b: &EmbeddedBroker, protocol: Protocol) -> RunEnv {
    RunEnv {
        target_name: protocol.name().into(),
        rule: SustainRule::default(),
        target: Target {
            protocol,
            addr: b.addr(),
        },
        cpu_source: BrokerCpuSource::Embedded,
        progress: None,
        interrupt: Default::default(),
        producer_nice: loadgen::priority::PRODUCER_NICE_DEFAULT,
    }
}

/// A short, low-rate workload: about 1 s measured at 2000 msg/s.
pub fn small(topic: &str) -> WorkloadSpec {
    WorkloadSpec {
        topic: topic.into(),
        partitions: 2,
        message_size: 256,
        rate: 2000,
        warmup_ms: 300,
        duration_ms: 1000,
        drain_timeout_ms: 5000,
        buffer_bytes: Some(4 << 20),
        ..WorkloadSpec::default()
    }
}

/// Every message scheduled in the measured window was sent, acknowledged
/// and received exactly once, and each histogram holds exactly those.
pub fn assert_counts_match(r: &RunResult) {
    assert!(r.window_sent > 0, "{}: nothing measured", r.label);
    assert_eq!(r.publish.count, r.window_sent, "{}", r.label);
    assert_eq!(r.publish.count, r.window_acked, "{}", r.label);
    assert_eq!(r.publish_delay.count, r.window_sent, "{}", r.label);
    assert_eq!(r.e2e.count, r.window_received, "{}", r.label);
    assert_eq!(r.e2e.count, r.window_sent, "{}", r.label);
    // A sweep releases a run's histograms once its .hgrm files are written
    // (the sweep test checks the files' counts instead).
    if !r.histograms.released() {
        assert_eq!(r.histograms.e2e.len(), r.window_sent, "{}", r.label);
    }
}

/// A consumer that drops every 50th message must fail the run, with the
/// losses counted and nothing else wrong, over `protocol`.
pub fn assert_a_lossy_consumer_fails_the_run(protocol: Protocol, topic: &str) {
    let broker = EmbeddedBroker::start(None, None, protocol).expect("embedded broker");
    let rt = loadgen::build_runtime(Some(2), loadgen::priority::PRODUCER_NICE_DEFAULT).unwrap();
    let spec = WorkloadSpec {
        fault_drop_every: 50,
        ..small(topic)
    };
    let r = rt
        .block_on(loadgen::runner::run(
            "loss",
            &spec,
            &env_for(&broker, protocol),
        ))
        .unwrap();
    assert!(!r.passed());
    // Every 50th of the delivered messages was dropped: about 2%.
    let sent = r.checks.delivered + r.checks.lost;
    assert!(sent >= 2000, "{:?}", r.checks);
    assert!(r.checks.lost >= sent / 50 - 1, "{:?}", r.checks);
    assert!(r.failures().iter().any(|f| f.contains("lost")));
    assert_eq!(r.checks.duplicated, 0);
    assert_eq!(r.ack_errors, 0);
    // The consumer saw it was caught up and stopped, rather than waiting
    // out the drain deadline.
    assert!(
        !r.notes.iter().any(|n| n.contains("drain deadline")),
        "{:?}",
        r.notes
    );
    drop(rt);
    broker.shutdown();
}

/// Run the `loadgen` binary with `args` and `--report-dir report_dir`,
/// assert its exit code and that it left no embedded data directory
/// behind, and return what it printed on stdout.
pub fn run_binary(args: &[&str], report_dir: &std::path::Path, expect_code: i32) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let dir = report_dir.display().to_string();
    all.extend(["--report-dir", &dir]);
    let lg = Loadgen::spawn(&all);
    let done = lg.wait(std::time::Duration::from_secs(120));
    assert_eq!(done.code, Some(expect_code), "{done}");
    done.assert_no_data_dir_left();
    done.stdout
}

/// A `loadgen` process with its own TMPDIR, so that where the embedded
/// broker keeps its data (a `loadgen-broker-*` directory under the system
/// temp dir) is a directory the test can inspect.
pub struct Loadgen {
    child: std::process::Child,
    tmp: tempfile::TempDir,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
    /// Receives `()` once stdout printed "loadgen run:" (signal handlers
    /// and the embedded broker are up).
    started: std::sync::mpsc::Receiver<()>,
    /// Receives `()` at each per-second progress line on stderr
    /// ("[   1s warmup ] ..."): the run's clock is going, so its setup
    /// (connections, topic, positions) is over.
    ticking: std::sync::mpsc::Receiver<()>,
}

/// How a [`Loadgen`] ended.
pub struct Finished {
    /// Exit status, or None when killed by a signal.
    pub code: Option<i32>,
    /// Peak resident set size (getrusage's ru_maxrss), in KiB.
    pub peak_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
    pub tmp: tempfile::TempDir,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}, peak RSS {} KiB\nstdout: {}\nstderr: {}",
            self.code, self.peak_rss_kib, self.stdout, self.stderr
        )
    }
}

impl Finished {
    /// The embedded broker's data directory is gone: TMPDIR is empty.
    pub fn assert_no_data_dir_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}\n{self}");
    }
}

impl Loadgen {
    pub fn spawn(args: &[&str]) -> Loadgen {
        Self::spawn_with(&[], tempfile::tempdir().unwrap(), args)
    }

    /// As [`Self::spawn`] with TMPDIR `tmp`, run under `wrapper` (a
    /// command that execs the rest of its arguments).
    pub fn spawn_with(wrapper: &[String], tmp: tempfile::TempDir, args: &[&str]) -> Loadgen {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let bin = env!("CARGO_BIN_EXE_loadgen");
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(args)
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Both pipes are drained from threads so the child never blocks on them.
        let out = child.stdout.take().unwrap();
        let (tx, started) = std::sync::mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("loadgen run:") || line.starts_with("loadgen sweep:") {
                    let _ = tx.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let err = child.stderr.take().unwrap();
        let (tick, ticking) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if line.starts_with('[') && line.contains("s warmup ]") {
                    let _ = tick.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        Loadgen {
            child,
            tmp,
            stdout,
            stderr,
            started,
            ticking,
        }
    }

    /// The process id (for reading /proc while it runs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the run has started (panics after `timeout`).
    pub fn wait_started(&self, timeout: std::time::Duration) {
        self.started
            .recv_timeout(timeout)
            .expect("loadgen did not start its run in time");
    }

    /// Wait for the first progress line of the warm-up (panics after
    /// `timeout`).
    pub fn wait_warming_up(&self, timeout: std::time::Duration) {
        self.ticking
            .recv_timeout(timeout)
            .expect("loadgen printed no warm-up progress line in time");
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Wait for the exit (SIGKILL and panic after `timeout`), with the
    /// peak RSS from wait4's rusage: exact, however short the peak.
    pub fn wait(self, timeout: std::time::Duration) -> Finished {
        let pid = self.child.id() as libc::pid_t;
        let t0 = std::time::Instant::now();
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value to be overwritten.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: pointers to live locals; reaps only our own child
            // (std's Child is never waited on afterwards).
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
            if r == pid {
                break;
            }
            if t0.elapsed() > timeout {
                // Where each thread waits, for the report: a hang here has
                // been seen only under CI's load, so it must explain itself.
                let stacks = threads::thread_report(pid as u32);
                self.signal(libc::SIGKILL);
                // SAFETY: as above; the child is dead, this reaps it.
                unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
                let stdout = self.stdout.join().unwrap_or_default();
                let stderr = self.stderr.join().unwrap_or_default();
                panic!(
                    "loadgen still running after {timeout:?}; killed\n\
                     --- threads ---\n{stacks}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Finished {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            peak_rss_kib: ru.ru_maxrss as u64,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
            tmp: self.tmp,
        }
    }
}

/// Build the shardlog binary into the same target directory as loadgen's.
pub fn build_shardlog() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("shardlog");
    // The same profile as loadgen's (target/debug or target/release).
    let release = bin.parent().is_some_and(|d| d.ends_with("release"));
    let mut args = vec!["build", "-p", "shardlog", "--bin", "shardlog"];
    if release {
        args.push("--release");
    }
    let status = std::process::Command::new(cargo)
        .args(&args)
        .status()
        .expect("running cargo build -p shardlog");
    assert!(status.success(), "cargo build -p shardlog failed");
    assert!(bin.is_file(), "no {}", bin.display());
    bin
}

/// A JSON file (a report.json).
pub fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
