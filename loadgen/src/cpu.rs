//! CPU accounting from /proc: how much the broker and loadgen itself used.
//!
//! What is measured, and how:
//! - **Embedded broker** (same process): broker = whole process CPU
//!   (`CLOCK_PROCESS_CPUTIME_ID`, which keeps the time of exited threads)
//!   minus loadgen's own threads. Loadgen's threads register themselves
//!   ([`register_current_thread`]: the tokio workers, the main thread,
//!   producers and the Kafka backend's polling threads); threads a client
//!   library starts on its own are recognised by name
//!   ([`CLIENT_THREAD_PREFIXES`]: librdkafka's `rdk:*`). Every other
//!   thread — the `shard-N` executors, glommio's helper threads — counts as
//!   broker. The `shard-N` threads are also summed on their own as a
//!   cross-check. Library threads are only seen while alive, so the runner
//!   keeps clients open until the measured window's CPU has been read.
//! - **Remote broker with `--broker-pid`**: that process's utime+stime from
//!   `/proc/PID/stat` (clock-tick resolution, 10 ms), and the whole loadgen
//!   process as loadgen.
//! - **Remote broker without a pid**: broker CPU is unknown, and said so.
//!
//! Per-thread times come from `/proc/self/task/TID/schedstat` (ns), falling
//! back to `stat` ticks when the kernel lacks schedstat.

use serde::Serialize;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: String, detail: String },
}

struct Registry {
    tids: Vec<i32>,
    /// CPU of loadgen threads that have exited, in ns.
    exited_ns: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    tids: Vec::new(),
    exited_ns: 0,
});

pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Count the calling thread as loadgen's (call from tokio's on_thread_start
/// and from the main thread).
pub fn register_current_thread() {
    let tid = gettid();
    let mut r = REGISTRY.lock().unwrap();
    if !r.tids.contains(&tid) {
        r.tids.push(tid);
    }
}

/// Call as a registered thread exits (tokio's on_thread_stop), so its CPU
/// is not later mistaken for the broker's.
pub fn unregister_current_thread() {
    let tid = gettid();
    let own = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    let mut r = REGISTRY.lock().unwrap();
    if let Some(i) = r.tids.iter().position(|t| *t == tid) {
        r.tids.swap_remove(i);
        r.exited_ns += own;
    }
}

fn read(path: &str) -> Result<String, CpuError> {
    std::fs::read_to_string(path).map_err(|source| CpuError::Read {
        path: path.to_string(),
        source,
    })
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        1_000_000_000 / t as u64
    } else {
        10_000_000
    }
}

/// utime+stime of a `stat` file, in ns. The comm field may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn stat_cpu_ns(path: &str) -> Result<u64, CpuError> {
    let text = read(path)?;
    let bad = |d: &str| CpuError::Parse {
        path: path.to_string(),
        detail: d.to_string(),
    };
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| bad("no ')'"))?;
    // After ')' come fields 3.. ; utime is field 14, stime 15.
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| -> Result<u64, CpuError> {
        f.get(i - 3)
            .ok_or_else(|| bad("too few fields"))?
            .parse::<u64>()
            .map_err(|_| bad("field is not a number"))
    };
    Ok((get(14)? + get(15)?) * tick_ns())
}

fn thread_cpu_ns(tid: i32) -> Option<u64> {
    let sched = format!("/proc/self/task/{tid}/schedstat");
    if let Ok(s) = std::fs::read_to_string(&sched) {
        if let Some(Ok(v)) = s.split_whitespace().next().map(str::parse::<u64>) {
            return Some(v);
        }
    }
    stat_cpu_ns(&format!("/proc/self/task/{tid}/stat")).ok()
}

/// Names (`comm`, at most 15 bytes) of threads that client libraries start
/// without telling loadgen: librdkafka's `rdk:main`, `rdk:brokerN`,
/// `rdk:bg`, and the rdkafka crate's admin polling thread.
pub const CLIENT_THREAD_PREFIXES: [&str; 2] = ["rdk:", "admin client po"];

/// CPU of the live `shard-N` threads and of the live client-library
/// threads, from one pass over /proc/self/task.
fn named_threads_ns() -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    let (mut shards, mut clients) = (0, 0);
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let comm =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            shards += thread_cpu_ns(tid).unwrap_or(0);
        } else if CLIENT_THREAD_PREFIXES.iter().any(|p| comm.starts_with(p)) {
            clients += thread_cpu_ns(tid).unwrap_or(0);
        }
    }
    (shards, clients)
}

/// Where the broker's CPU figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerCpuSource {
    /// The broker runs inside this process.
    Embedded,
    /// A broker process on this host.
    Pid(u32),
    /// Several broker processes on this host (`--cluster`), summed.
    Pids(&'static [u32]),
    /// Remote, no pid: unknown.
    Unknown,
}

impl BrokerCpuSource {
    pub fn describe(&self) -> String {
        match self {
            BrokerCpuSource::Embedded => "embedded broker: process CPU minus loadgen's threads and its client library's (shard-N executors and their helper threads)".into(),
            BrokerCpuSource::Pid(p) => format!("broker process {p}: utime+stime from /proc/{p}/stat"),
            BrokerCpuSource::Pids(ps) => format!("{} broker processes ({ps:?}): utime+stime from /proc/PID/stat, summed", ps.len()),
            BrokerCpuSource::Unknown => "remote broker without --broker-pid: broker CPU not measured".into(),
        }
    }
}

/// Bytes the broker's process(es) have read from storage so far
/// (`read_bytes` of `/proc/PID/io`; direct I/O counts, the page cache does
/// not). Embedded: this process. None for a remote broker or when `/proc`
/// cannot be read.
pub fn disk_read_bytes(source: BrokerCpuSource) -> Option<u64> {
    let of = |path: &str| -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("read_bytes:"))?
            .trim()
            .parse()
            .ok()
    };
    match source {
        BrokerCpuSource::Embedded => of("/proc/self/io"),
        BrokerCpuSource::Pid(p) => of(&format!("/proc/{p}/io")),
        BrokerCpuSource::Pids(ps) => ps
            .iter()
            .map(|p| of(&format!("/proc/{p}/io")))
            .sum::<Option<u64>>(),
        BrokerCpuSource::Unknown => None,
    }
}

/// CPU used so far, ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub broker_ns: Option<u64>,
    pub shard_threads_ns: Option<u64>,
    pub loadgen_ns: u64,
}

impl CpuSnapshot {
    pub fn take(source: BrokerCpuSource) -> CpuSnapshot {
        let process = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
        match source {
            BrokerCpuSource::Embedded => {
                // Read the live threads under the registry lock: a thread
                // that is exiting blocks in `unregister_current_thread` until
                // we are done, so it is counted either live or exited, never
                // neither (producers exit right at the window's end, when
                // the closing snapshot is taken).
                let (process, loadgen, shards) = {
                    let r = REGISTRY.lock().unwrap();
                    let live: u64 = r.tids.iter().filter_map(|t| thread_cpu_ns(*t)).sum();
                    let (shards, clients) = named_threads_ns();
                    (
                        clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
                        r.exited_ns + live + clients,
                        shards,
                    )
                };
                CpuSnapshot {
                    broker_ns: Some(process.saturating_sub(loadgen)),
                    shard_threads_ns: Some(shards),
                    loadgen_ns: loadgen,
                }
            }
            BrokerCpuSource::Pid(pid) => CpuSnapshot::of_processes(&[pid], process),
            BrokerCpuSource::Pids(pids) => CpuSnapshot::of_processes(pids, process),
            BrokerCpuSource::Unknown => CpuSnapshot {
                broker_ns: None,
                shard_threads_ns: None,
                loadgen_ns: process,
            },
        }
    }

    /// Broker processes on this host: their CPU summed (None if one of
    /// them cannot be read).
    fn of_processes(pids: &[u32], loadgen_ns: u64) -> CpuSnapshot {
        CpuSnapshot {
            broker_ns: pids
                .iter()
                .map(|p| stat_cpu_ns(&format!("/proc/{p}/stat")).ok())
                .sum(),
            shard_threads_ns: None,
            loadgen_ns,
        }
    }

    /// CPU used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        let d = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        CpuSnapshot {
            broker_ns: d(self.broker_ns, earlier.broker_ns),
            shard_threads_ns: d(self.shard_threads_ns, earlier.shard_threads_ns),
            loadgen_ns: self.loadgen_ns.saturating_sub(earlier.loadgen_ns),
        }
    }
}

/// CPU over the measured window, for the report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CpuReport {
    /// How the broker figure was obtained.
    pub broker_source: String,
    pub broker_cpu_s: Option<f64>,
    pub shard_threads_cpu_s: Option<f64>,
    pub loadgen_cpu_s: f64,
    pub wall_s: f64,
    /// Average cores busy: cpu_s / wall_s.
    pub broker_cores: Option<f64>,
    pub loadgen_cores: f64,
    /// Payload bytes in (produced) plus out (consumed), in GB (10^9 bytes).
    pub gb_moved: f64,
    /// Broker CPU seconds per GB moved (in + out).
    pub broker_cpu_s_per_gb: Option<f64>,
    pub loadgen_cpu_s_per_gb: Option<f64>,
    pub online_cpus: usize,
}

impl CpuReport {
    pub fn new(
        source: BrokerCpuSource,
        used: &CpuSnapshot,
        wall_s: f64,
        bytes_moved: u64,
    ) -> CpuReport {
        let s = |ns: u64| ns as f64 / 1e9;
        let gb = bytes_moved as f64 / 1e9;
        let broker = used.broker_ns.map(s);
        let loadgen = s(used.loadgen_ns);
        let per_gb = |cpu: f64| if gb > 0.0 { Some(cpu / gb) } else { None };
        CpuReport {
            broker_source: source.describe(),
            broker_cpu_s: broker,
            shard_threads_cpu_s: used.shard_threads_ns.map(s),
            loadgen_cpu_s: loadgen,
            wall_s,
            broker_cores: broker.map(|b| b / wall_s.max(1e-9)),
            loadgen_cores: loadgen / wall_s.max(1e-9),
            gb_moved: gb,
            broker_cpu_s_per_gb: broker.and_then(per_gb),
            loadgen_cpu_s_per_gb: per_gb(loadgen),
            online_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_parses() {
        let ns = stat_cpu_ns("/proc/self/stat").unwrap();
        // Some CPU has been used by the time tests run; mostly this checks parsing.
        let _ = ns;
        assert!(thread_cpu_ns(gettid()).is_some());
    }

    #[test]
    fn registered_threads_count_as_loadgen() {
        let h = std::thread::spawn(|| {
            register_current_thread();
            // Burn 30 ms of this thread's CPU (not of wall time: on a
            // busy machine 30 ms of wall time can be 4 ms on a CPU).
            let t = std::time::Instant::now();
            let tid = gettid();
            let mut x = 0u64;
            while thread_cpu_ns(tid).unwrap_or(0) < 30_000_000 && t.elapsed().as_secs() < 20 {
                for _ in 0..10_000 {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
            }
            let s = CpuSnapshot::take(BrokerCpuSource::Embedded);
            unregister_current_thread();
            (s, x)
        });
        let (s, _) = h.join().unwrap();
        assert!(s.loadgen_ns >= 10_000_000, "{s:?}");
        assert!(REGISTRY.lock().unwrap().exited_ns >= 10_000_000);
    }
}
