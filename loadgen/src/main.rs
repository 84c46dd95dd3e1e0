//! The `loadgen` command: parses flags, starts an embedded broker when no
//! address is given, runs a workload or a sweep, prints the table and
//! writes the report. The library does the work.

use anyhow::{bail, Context, Result};
use clap::Parser;
use loadgen::cli::{BrokerArgs, Cli, Cmd, CompareArgs, RunArgs, SweepArgs};
use loadgen::cluster::{ClusterOptions, LocalCluster};
use loadgen::cpu::BrokerCpuSource;
use loadgen::embedded::{BrokerInfo, EmbeddedBroker};
use loadgen::knee::{KneeSettings, SustainRule};
use loadgen::machine::{MachineInfo, Versions};
use loadgen::profile::Profile;
use loadgen::report::{self, table, ReportMeta, TargetInfo, Writer};
use loadgen::result::RunResult;
use loadgen::runner::{self, RunEnv};
use loadgen::sweep::{self, Matrix, Mode};
use loadgen::target::{Address, TargetSpec};
use loadgen::transport::{version, Protocol, Target, TransportError};
use loadgen::units::{format_duration, format_size};
use loadgen::workload::WorkloadSpec;
use shardlog::client::ClientError;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

shardlog::use_jemalloc!();

/// Set by the first SIGINT (130) or SIGTERM (143): the report is written,
/// but the exit status says the benchmark did not run to the end.
static INTERRUPTED: AtomicU8 = AtomicU8::new(0);

/// Exit at once (second signal): nothing unwinds, so the embedded broker's
/// data directory is removed here or never.
fn abort(code: u8) -> ! {
    loadgen::cluster::kill_all();
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
        eprintln!(
            "loadgen: aborted; stopping the cluster's brokers (if any), removing the broker data"
        );
        abort(code);
    });
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs of the client library and of an embedded broker at RUST_LOG's
    // levels. Without it, only the embedded broker's storage warnings (a
    // disk that stood still or filled up, a partition that failed): a
    // benchmark's output is its table, and a broker's INFO lines would
    // interleave with the per-second progress, but a figure taken while
    // the disk stood still must say so.
    let filter = match std::env::var_os("RUST_LOG") {
        Some(_) => tracing_subscriber::EnvFilter::from_default_env(),
        None => tracing_subscriber::EnvFilter::new("shardlog::storage=warn"),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        // No colour codes in a log file (side-by-side.sh keeps one per run).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    loadgen::cpu::register_current_thread();
    // Freed pages kept for reuse stay within their budget (shardlog's
    // src/alloc.rs), the embedded broker's and loadgen's alike.
    if let Err(e) = shardlog::alloc::govern_kept_pages(shardlog::alloc::KEPT_BYTES_MAX) {
        eprintln!(
            "warning: freed memory is not governed; jemalloc decays it over 10 s instead: {e}"
        );
    }
    let result = match cli.cmd {
        Cmd::Run(a) => cmd_run(*a),
        Cmd::Sweep(a) => cmd_sweep(*a),
        Cmd::Compare(a) => cmd_compare(a),
    };
    match result {
        Ok(_) if INTERRUPTED.load(Ordering::Relaxed) != 0 => {
            ExitCode::from(INTERRUPTED.load(Ordering::Relaxed))
        }
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            // A workload that contradicts itself is bad usage (2), as the
            // help promises, like an argument clap refused.
            let usage = e.chain().any(|c| {
                c.downcast_ref::<loadgen::workload::SpecError>().is_some()
                    || matches!(
                        c.downcast_ref::<loadgen::runner::RunError>(),
                        Some(loadgen::runner::RunError::Spec(_))
                    )
            });
            ExitCode::from(if usage { 2 } else { 3 })
        }
    }
}

/// The runtime, the broker (embedded or not) and how to reach each target.
struct Setup {
    rt: tokio::runtime::Runtime,
    embedded: Option<EmbeddedBroker>,
    cluster: Option<LocalCluster>,
    /// One per target, in the order given.
    envs: Vec<RunEnv>,
    targets: Vec<TargetInfo>,
}

/// The single target of `--broker`/`--protocol` (or the embedded broker).
fn default_target(b: &BrokerArgs) -> TargetSpec {
    TargetSpec {
        name: b.protocol.name().to_string(),
        address: match (&b.broker, b.cluster) {
            (Some(a), _) => Address::Remote(a.clone()),
            (None, Some(_)) => Address::Cluster,
            (None, None) => Address::Embedded,
        },
        protocol: b.protocol,
        pid: b.broker_pid,
    }
}

impl Setup {
    fn new(b: &BrokerArgs, specs: &[TargetSpec], rule: SustainRule) -> Result<Setup> {
        assert!(!specs.is_empty());
        let rt = loadgen::build_runtime(b.threads, b.producer_nice)
            .context("cannot start the tokio runtime")?;
        let progress = (!b.quiet).then(String::new);
        let interrupt = Arc::new(AtomicBool::new(false));
        spawn_signal_handler(&rt, interrupt.clone())?;
        // One embedded broker serves every embedded target; its Kafka
        // listener is on when one of them speaks Kafka.
        let embedded = if specs.iter().any(|t| t.address == Address::Embedded) {
            let kafka = specs
                .iter()
                .any(|t| t.address == Address::Embedded && t.protocol == Protocol::Kafka);
            let e = EmbeddedBroker::start(
                b.data_dir.as_deref(),
                b.shards,
                if kafka {
                    Protocol::Kafka
                } else {
                    Protocol::Native
                },
            )
            .context("the embedded broker did not start")?;
            let info = e.info();
            println!(
                "loadgen: started an embedded broker (native {}{}, {} shards, data in {} on {}); it is stopped at the end",
                e.native_addr(),
                e.kafka_addr().map(|a| format!(", kafka {a}")).unwrap_or_default(),
                info.shards.unwrap_or(0),
                info.data_dir.as_deref().unwrap_or("?"),
                info.data_dir_fs.as_deref().unwrap_or("?")
            );
            Some(e)
        } else {
            None
        };
        let cluster = match b.cluster {
            Some(n) if specs.iter().any(|t| t.address == Address::Cluster) => {
                let c = LocalCluster::start(&ClusterOptions {
                    brokers: n,
                    bin: b.shardlog_bin.clone(),
                    parent: b.data_dir.clone(),
                    shards: b.shards,
                })
                .context("the local cluster did not start")?;
                println!(
                    "loadgen: started a local cluster of {n} brokers ({}, {} shard(s) each, unpinned; data in {}); loadgen talks to broker 1; they are stopped at the end",
                    c.nodes()
                        .iter()
                        .map(|n| format!("{}: native {} kafka {} pid {}", n.id, n.native_addr, n.kafka_addr, n.pid))
                        .collect::<Vec<_>>()
                        .join("; "),
                    c.shards,
                    c.data_dir().display()
                );
                Some(c)
            }
            _ => None,
        };
        let mut envs = Vec::new();
        let mut targets = Vec::new();
        for t in specs {
            let (addr, cpu_source, broker) = match (&t.address, &embedded) {
                (Address::Embedded, Some(e)) => {
                    let addr = match t.protocol {
                        Protocol::Native => e.native_addr(),
                        Protocol::Kafka => e.kafka_addr().context("no Kafka listener")?,
                    };
                    let info = BrokerInfo {
                        addr: addr.clone(),
                        ..e.info()
                    };
                    (addr, BrokerCpuSource::Embedded, info)
                }
                (Address::Embedded, None) => unreachable!("started above"),
                (Address::Cluster, _) => {
                    let c = cluster.as_ref().expect("started above");
                    let first = &c.nodes()[0];
                    let addr = match t.protocol {
                        Protocol::Native => first.native_addr.clone(),
                        Protocol::Kafka => first.kafka_addr.clone(),
                    };
                    let info = BrokerInfo {
                        embedded: false,
                        addr: addr.clone(),
                        shards: Some(c.shards),
                        data_dir: Some(c.data_dir().display().to_string()),
                        data_dir_fs: loadgen::embedded::fs_type(c.data_dir()),
                        broker_pid: Some(first.pid),
                        cluster_brokers: Some(c.nodes().len() as u32),
                    };
                    // Every broker's CPU: followers replicate, so they work too.
                    let pids: &'static [u32] = Box::leak(c.pids().into_boxed_slice());
                    (addr, BrokerCpuSource::Pids(pids), info)
                }
                (Address::Remote(addr), _) => {
                    println!(
                        "loadgen: target {} at {addr} ({} protocol{})",
                        t.name,
                        t.protocol.name(),
                        match t.pid {
                            Some(p) => format!(", CPU of pid {p}"),
                            None => ", broker CPU not measured (no pid)".into(),
                        }
                    );
                    let info = BrokerInfo {
                        embedded: false,
                        addr: addr.clone(),
                        shards: None,
                        data_dir: None,
                        data_dir_fs: None,
                        broker_pid: t.pid,
                        cluster_brokers: None,
                    };
                    let cpu = t
                        .pid
                        .map(BrokerCpuSource::Pid)
                        .unwrap_or(BrokerCpuSource::Unknown);
                    (addr.clone(), cpu, info)
                }
            };
            let target = Target {
                protocol: t.protocol,
                addr,
            };
            // What the broker says it is, recorded in the report.
            let (version, version_error) = match rt.block_on(version::probe(&target)) {
                Ok(v) => {
                    println!("loadgen: target {}: {}", t.name, v.summary);
                    (Some(v), None)
                }
                // A broker that answers nothing would fail the run's setup
                // too, after another request timeout: stop here.
                Err(e @ TransportError::Native(ClientError::Timeout { .. })) => {
                    bail!("target {}: the broker does not answer: {e}", t.name)
                }
                Err(e) => {
                    eprintln!("loadgen: target {}: version unknown: {e}", t.name);
                    (None, Some(e.to_string()))
                }
            };
            targets.push(TargetInfo {
                name: t.name.clone(),
                protocol: t.protocol.name().into(),
                broker,
                version,
                version_error,
            });
            envs.push(RunEnv {
                target_name: t.name.clone(),
                target,
                rule,
                cpu_source,
                progress: progress.clone(),
                interrupt: interrupt.clone(),
                producer_nice: b.producer_nice,
            });
        }
        if cfg!(debug_assertions) {
            eprintln!("loadgen: warning: this is a debug build; figures are not representative (use --release)");
        }
        Ok(Setup {
            rt,
            embedded,
            cluster,
            envs,
            targets,
        })
    }

    /// Close client connections first, then stop the broker durably.
    fn finish(self) {
        self.rt.shutdown_timeout(Duration::from_secs(2));
        if let Some(e) = self.embedded {
            e.shutdown();
            println!("loadgen: embedded broker stopped");
        }
        if let Some(c) = self.cluster {
            let n = c.nodes().len();
            c.shutdown();
            println!("loadgen: the local cluster's {n} brokers stopped, their data removed");
        }
    }
}

/// A replication factor the brokers cannot give is refused before anything
/// starts: the embedded broker is a single node, and a local cluster has
/// `--cluster` brokers.
fn check_replication(rf: Option<u16>, b: &BrokerArgs, specs: &[TargetSpec]) -> Result<()> {
    let Some(rf) = rf.filter(|rf| *rf > 1) else {
        return Ok(());
    };
    if specs.iter().any(|t| t.address == Address::Embedded) {
        bail!(
            "--replication-factor {rf} needs {rf} brokers, and the embedded broker is a single node: add --cluster {rf} (a local cluster of shardlog processes) or --broker ADDR of a cluster"
        );
    }
    match b.cluster {
        Some(n) if (n as u64) < rf as u64 => {
            bail!("--replication-factor {rf} needs {rf} brokers; --cluster {n} starts {n}")
        }
        _ => Ok(()),
    }
}

fn rf_text(rf: Option<u16>) -> String {
    match rf {
        Some(rf) => format!("replication factor {rf}"),
        None => "the broker's default replication factor".into(),
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
        profile_text: None,
        machine: MachineInfo::collect(),
        versions: Versions::current(),
        targets: setup.targets.clone(),
        matrix: None,
        mode: None,
        knee: None,
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
    spec.catch_up = args.catch_up;
    spec.validate()?;
    let target = default_target(&args.broker);
    check_replication(
        spec.replication_factor,
        &args.broker,
        std::slice::from_ref(&target),
    )?;
    let setup = Setup::new(&args.broker, &[target], SustainRule::default())?;
    if let Some(e) = &setup.embedded {
        e.keep_freed_pages_for(spec.memory_budget());
    }
    let label = format!(
        "{} {} acks={}",
        format_size(spec.batch_bytes as u64),
        spec.compression,
        spec.acks
    );
    println!(
        "loadgen run: {label}, {}, {} warm-up + {} measured",
        rf_text(spec.replication_factor),
        format_duration(spec.warmup()),
        format_duration(spec.duration())
    );
    let t0 = Instant::now();
    let result = setup
        .rt
        .block_on(runner::run(&label, &spec, &setup.envs[0]))
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
    let profile_text = args
        .profile
        .as_deref()
        .map(std::fs::read_to_string)
        .transpose()?;
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
    let mut knee = KneeSettings::default();
    let mut fixed = false;
    if let Some(p) = &profile {
        p.knee.overrides().apply(&mut knee, &mut fixed);
    }
    args.knee.overrides().apply(&mut knee, &mut fixed);
    knee.validate().map_err(anyhow::Error::msg)?;
    if !fixed && base.rate == 0 {
        bail!(
            "--rate 0 (closed loop) needs --fixed-rate: a knee search sets its own open-loop rates"
        );
    }
    let mode = if fixed {
        Mode::Fixed
    } else {
        Mode::Knee(knee.clone())
    };
    let target_args = if args.targets.is_empty() {
        profile
            .as_ref()
            .map(|p| p.targets.clone())
            .unwrap_or_default()
    } else {
        args.targets.clone()
    };
    let specs = if target_args.is_empty() {
        vec![default_target(&args.broker)]
    } else if args.broker.cluster.is_some() {
        bail!("--cluster replaces the embedded broker of a single target; it cannot be combined with --target (a profile's targets included)");
    } else {
        TargetSpec::parse_all(&target_args)?
    };
    check_replication(base.replication_factor, &args.broker, &specs)?;
    let points = sweep::points(&base, &matrix);
    let setup = Setup::new(&args.broker, &specs, knee.rule)?;
    if let Some(e) = &setup.embedded {
        let loadgen_bytes = points.iter().map(|p| p.spec.memory_budget()).max();
        e.keep_freed_pages_for(loadgen_bytes.unwrap_or(0));
    }
    println!(
        "loadgen sweep: {} points = {} batch sizes x {} codecs x {} acks x {} linger, on {} target(s) ({}); {} messages of {}; {}; {}; about {:.0} s",
        points.len(),
        matrix.batch_bytes.len(),
        matrix.compression.len(),
        matrix.acks.len(),
        matrix.linger_ms.len(),
        specs.len(),
        specs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
        base.payload.label(),
        format_size(base.message_size as u64),
        rf_text(base.replication_factor),
        match &mode {
            Mode::Fixed => format!(
                "fixed rate {}; {} warm-up + {} measured per point",
                if base.rate == 0 {
                    "max (closed loop)".to_string()
                } else {
                    format!("{} msg/s", base.rate)
                },
                format_duration(base.warmup()),
                format_duration(base.duration())
            ),
            Mode::Knee(k) => format!(
                "per point: closed-loop probe, {} search steps, then levels {} of the max sustainable rate ({} warm-up + {} measured each)",
                k.search_steps,
                k.levels
                    .iter()
                    .map(|l| format!("{:.0}%", l * 100.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                format_duration(base.warmup()),
                format_duration(base.duration())
            ),
        },
        sweep::estimate_secs(&points, &mode, specs.len())
    );
    if let Some(p) = &profile {
        if let Some(d) = &p.description {
            println!("profile: {d}");
        }
    }
    let t0 = Instant::now();
    let mut writer = Writer::create(&args.report_dir)?;
    let outcome = setup
        .rt
        .block_on(sweep::run(&points, &setup.envs, &mode, Some(&mut writer)))
        .context("the sweep could not complete")?;
    let wall = t0.elapsed();
    let mut m = meta(
        "sweep",
        "loadgen sweep: throughput against latency, per batch size and codec".into(),
        &setup,
        wall,
    );
    m.profile = args.profile.as_ref().map(|p| p.display().to_string());
    m.profile_text = profile_text;
    m.description = profile.as_ref().and_then(|p| p.description.clone());
    m.matrix = Some(matrix.info());
    m.mode = Some(if fixed { "fixed" } else { "knee" });
    m.knee = (!fixed).then_some(knee);
    let written = writer.finish(&m, &outcome.points, &outcome.runs)?;
    println!();
    if !fixed {
        print!("{}", table::render_knees(&outcome.points));
        println!();
    }
    print!("{}", table::render_levels(&outcome.runs));
    println!();
    let ok = print_failures(&outcome.runs);
    let unsustained = outcome
        .points
        .iter()
        .filter(|p| !p.sustained || p.knee.is_none() && p.mode == "knee")
        .count();
    if unsustained > 0 {
        println!(
            "{unsustained} point(s) have a level that did NOT hold its rate or no sustainable rate: marked in every table and chart"
        );
    }
    println!(
        "sweep finished in {:.0} s; report in {}: index.html, report.json, {} .hgrm files, {} charts",
        wall.as_secs_f64(),
        display_path(&written.dir),
        written.hgrm.len(),
        written.charts.len()
    );
    println!("open {}", display_path(&written.index_html));
    setup.finish();
    if let Some(e) = &outcome.error {
        bail!("the sweep stopped early, the report holds what ran before: {e}");
    }
    // A knee search's steps fail their own checks too: any failed run fails the sweep.
    Ok(ok && outcome.points.iter().all(|p| p.passed))
}

fn cmd_compare(args: CompareArgs) -> Result<bool> {
    let read = |p: &Path| -> Result<serde_json::Value> {
        let file = if p.is_dir() {
            p.join("report.json")
        } else {
            p.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
    };
    let (a, b) = (read(&args.a)?, read(&args.b)?);
    println!("A = {}\nB = {}", args.a.display(), args.b.display());
    print!(
        "{}",
        report::compare::compare(&a, &b, args.threshold / 100.0)?
    );
    Ok(true)
}
