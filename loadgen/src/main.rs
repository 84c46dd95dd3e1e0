//! The `loadgen` command: parses flags, starts an embedded broker when no
//! address is given, runs a workload or a sweep, prints the table and
//! writes the report. The library does the work.

use anyhow::{bail, Context, Result};
use clap::Parser;
use loadgen::cli::{BrokerArgs, Cli, Cmd, RunArgs, SweepArgs};
use loadgen::cpu::BrokerCpuSource;
use loadgen::embedded::{BrokerInfo, EmbeddedBroker};
use loadgen::machine::{MachineInfo, Versions};
use loadgen::profile::Profile;
use loadgen::report::{self, table, ReportMeta};
use loadgen::result::RunResult;
use loadgen::runner::{self, RunEnv};
use loadgen::sweep::{self, Matrix};
use loadgen::transport::Target;
use loadgen::units::{format_duration, format_size};
use loadgen::workload::WorkloadSpec;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by the first SIGINT (130) or SIGTERM (143): the report is written,
/// but the exit status says the benchmark did not run to the end.
static INTERRUPTED: AtomicU8 = AtomicU8::new(0);

/// Exit at once (second signal): nothing unwinds, so the embedded broker's
/// data directory is removed here or never.
fn abort(code: u8) -> ! {
    loadgen::embedded::remove_data_dirs();
    std::process::exit(code as i32)
}

/// First SIGINT or SIGTERM: finish the current point early and still
/// report; a second one of either exits at once. Installed before the
/// embedded broker starts, so no signal can end the process with the
/// default action (which would leave the data directory behind).
fn spawn_signal_handler(rt: &tokio::runtime::Runtime, interrupt: Arc<AtomicBool>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _guard = rt.enter();
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    rt.spawn(async move {
        let (name, code) = tokio::select! {
            _ = int.recv() => ("interrupted", 130),
            _ = term.recv() => ("terminated", 143),
        };
        eprintln!("loadgen: {name}; finishing the current point (Ctrl-C again to abort)");
        INTERRUPTED.store(code, Ordering::Relaxed);
        interrupt.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("loadgen: aborted; removing the embedded broker's data");
        abort(code);
    });
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    loadgen::cpu::register_current_thread();
    let result = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Sweep(a) => cmd_sweep(a),
    };
    match result {
        Ok(_) if INTERRUPTED.load(Ordering::Relaxed) != 0 => {
            ExitCode::from(INTERRUPTED.load(Ordering::Relaxed))
        }
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// The runtime, the broker (embedded or not) and how to reach it.
struct Setup {
    rt: tokio::runtime::Runtime,
    embedded: Option<EmbeddedBroker>,
    env: RunEnv,
    broker: BrokerInfo,
}

impl Setup {
    fn new(b: &BrokerArgs) -> Result<Setup> {
        let rt = loadgen::build_runtime(b.threads).context("cannot start the tokio runtime")?;
        let progress = (!b.quiet).then(String::new);
        let interrupt = Arc::new(AtomicBool::new(false));
        spawn_signal_handler(&rt, interrupt.clone())?;
        let (embedded, target, cpu_source, broker) = match &b.broker {
            Some(addr) => {
                let info = BrokerInfo {
                    embedded: false,
                    addr: addr.clone(),
                    shards: None,
                    data_dir: None,
                    data_dir_fs: None,
                    broker_pid: b.broker_pid,
                };
                let cpu = b
                    .broker_pid
                    .map(BrokerCpuSource::Pid)
                    .unwrap_or(BrokerCpuSource::Unknown);
                println!(
                    "loadgen: broker at {addr} ({} protocol{})",
                    b.protocol.name(),
                    match b.broker_pid {
                        Some(p) => format!(", CPU of pid {p}"),
                        None => ", broker CPU not measured (no --broker-pid)".into(),
                    }
                );
                (None, addr.clone(), cpu, info)
            }
            None => {
                let e = EmbeddedBroker::start(b.data_dir.as_deref(), b.shards, b.protocol)
                    .context("no --broker given, and the embedded broker did not start")?;
                let info = e.info();
                println!(
                    "loadgen: started an embedded broker at {} ({} protocol, {} shards, data in {} on {}); it is stopped at the end",
                    info.addr,
                    b.protocol.name(),
                    info.shards.unwrap_or(0),
                    info.data_dir.as_deref().unwrap_or("?"),
                    info.data_dir_fs.as_deref().unwrap_or("?")
                );
                let addr = e.addr();
                (Some(e), addr, BrokerCpuSource::Embedded, info)
            }
        };
        if cfg!(debug_assertions) {
            eprintln!("loadgen: warning: this is a debug build; figures are not representative (use --release)");
        }
        Ok(Setup {
            rt,
            embedded,
            env: RunEnv {
                target: Target {
                    protocol: b.protocol,
                    addr: target,
                },
                cpu_source,
                progress,
                interrupt,
            },
            broker,
        })
    }

    /// Close client connections first, then stop the broker durably.
    fn finish(self) {
        self.rt.shutdown_timeout(Duration::from_secs(2));
        if let Some(e) = self.embedded {
            e.shutdown();
            println!("loadgen: embedded broker stopped");
        }
    }
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn meta(kind: &'static str, title: String, setup: &Setup, wall: Duration) -> ReportMeta {
    ReportMeta {
        kind,
        title,
        description: None,
        created_unix_ms: now_unix_ms(),
        wall_s: wall.as_secs_f64(),
        command: std::env::args().collect(),
        profile: None,
        machine: MachineInfo::collect(),
        versions: Versions::current(),
        broker: setup.broker.clone(),
        protocol: setup.env.target.protocol.name().to_string(),
        matrix: None,
    }
}

fn print_failures(results: &[RunResult]) -> bool {
    let mut ok = true;
    for r in results.iter().filter(|r| !r.passed()) {
        ok = false;
        println!("FAILED {}: {}", r.label, r.failures().join("; "));
        for e in &r.errors {
            println!("  {e}");
        }
    }
    ok
}

fn cmd_run(args: RunArgs) -> Result<bool> {
    let mut spec = WorkloadSpec::default();
    args.overrides().apply(&mut spec);
    spec.fault_drop_every = args.workload.fault_drop_every.unwrap_or(0);
    spec.validate()?;
    let setup = Setup::new(&args.broker)?;
    let label = format!(
        "{} {} acks={}",
        format_size(spec.batch_bytes as u64),
        spec.compression,
        spec.acks
    );
    println!(
        "loadgen run: {label}, {} warm-up + {} measured",
        format_duration(spec.warmup()),
        format_duration(spec.duration())
    );
    let t0 = Instant::now();
    let result = setup
        .rt
        .block_on(runner::run(&label, &spec, &setup.env))
        .context("the run could not complete")?;
    let results = vec![result];
    println!();
    print!("{}", table::render(&results));
    println!();
    print!("{}", table::render_summary(&results[0]));
    if let Some(dir) = &args.report_dir {
        let m = meta("run", format!("loadgen run: {label}"), &setup, t0.elapsed());
        let w = report::write(dir, &m, &results)?;
        println!("report: {}", display_path(&w.index_html));
    }
    let ok = print_failures(&results);
    setup.finish();
    Ok(ok)
}

fn display_path(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn cmd_sweep(args: SweepArgs) -> Result<bool> {
    let profile = args.profile.as_deref().map(Profile::load).transpose()?;
    let mut base = sweep::default_base();
    if let Some(p) = &profile {
        p.workload.apply(&mut base);
    }
    args.workload.overrides().apply(&mut base);
    base.fault_drop_every = args.workload.fault_drop_every.unwrap_or(0);
    base.validate()?;
    let cli_matrix = args.matrix_overrides();
    let mut layers = Vec::new();
    if let Some(p) = &profile {
        layers.push(&p.matrix);
    }
    layers.push(&cli_matrix);
    let matrix = Matrix::resolve(&base, &layers);
    if matrix.is_empty() {
        bail!("the sweep matrix is empty: every axis needs at least one value");
    }
    let points = sweep::points(&base, &matrix);
    let setup = Setup::new(&args.broker)?;
    println!(
        "loadgen sweep: {} points = {} batch sizes x {} codecs x {} acks x {} linger; {} messages of {} at {}; {} warm-up + {} measured per point; about {:.0} s",
        points.len(),
        matrix.batch_bytes.len(),
        matrix.compression.len(),
        matrix.acks.len(),
        matrix.linger_ms.len(),
        base.payload.label(),
        format_size(base.message_size as u64),
        if base.rate == 0 {
            "max rate (closed loop)".to_string()
        } else {
            format!("{} msg/s", base.rate)
        },
        format_duration(base.warmup()),
        format_duration(base.duration()),
        sweep::estimate_secs(&points)
    );
    if let Some(p) = &profile {
        if let Some(d) = &p.description {
            println!("profile: {d}");
        }
    }
    let t0 = Instant::now();
    let results = setup
        .rt
        .block_on(sweep::run(&points, &setup.env))
        .context("the sweep could not complete")?;
    let wall = t0.elapsed();
    let mut m = meta(
        "sweep",
        "loadgen sweep: latency and throughput vs batch size and compression".into(),
        &setup,
        wall,
    );
    m.profile = args.profile.as_ref().map(|p| p.display().to_string());
    m.description = profile.as_ref().and_then(|p| p.description.clone());
    m.matrix = Some(matrix.info());
    let written = report::write(&args.report_dir, &m, &results)?;
    println!();
    print!("{}", table::render(&results));
    println!();
    let ok = print_failures(&results);
    println!(
        "sweep finished in {:.0} s; report in {}: index.html, report.json, {} .hgrm files, {} charts",
        wall.as_secs_f64(),
        display_path(&written.dir),
        written.hgrm.len(),
        written.charts.len()
    );
    println!("open {}", display_path(&written.index_html));
    setup.finish();
    Ok(ok)
}
