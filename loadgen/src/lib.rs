//! loadgen: the shardlog benchmark.
//!
//! Three layers, kept apart:
//! - **actors** ([`producer`], [`consumer`]) generate load through a
//!   protocol backend ([`transport`]) and only *record* what happened;
//! - **analytics** ([`stats`], [`checks`], [`timeseries`], [`cpu`]) merge
//!   recordings into histograms, series, verdicts and CPU figures;
//! - **reports** ([`report`]) render finished results as a table, JSON,
//!   `.hgrm` files, SVG charts and HTML.
//!
//! [`runner`] wires one workload together; [`sweep`] runs a matrix of them.
//! The binary (`main.rs`) parses flags ([`cli`], [`profile`]) and starts an
//! [`embedded`] broker when no address is given, or a local [`cluster`] of
//! `shardlog serve` processes for `--cluster N`.

pub mod checks;
pub mod cli;
pub mod cluster;
pub mod consumer;
pub mod cpu;
pub mod embedded;
pub mod knee;
pub mod machine;
pub mod payload;
pub mod priority;
pub mod producer;
pub mod profile;
pub mod report;
pub mod result;
pub mod runner;
pub mod stats;
pub mod sweep;
pub mod target;
pub mod timeseries;
pub mod transport;
pub mod units;
pub mod workload;

/// The tokio runtime loadgen runs on: multi-threaded (producers drive the
/// client from their own threads with `block_on`), with every worker
/// registered as a loadgen thread for CPU accounting.
///
/// Its workers carry the producers' client I/O, so they run `producer_nice`
/// levels below the process (see [`priority`]); consumers get their own
/// runtime per run ([`runner`]).
pub fn build_runtime(
    threads: Option<usize>,
    producer_nice: i32,
) -> std::io::Result<tokio::runtime::Runtime> {
    priority::record_base();
    let n = threads.unwrap_or_else(cpus).max(1);
    loadgen_runtime("lg-worker", n, producer_nice)
}

/// The consumers' runtime for one run: `consumers` worker threads (at most
/// one per CPU, at least one), registered as loadgen threads and at the
/// process's priority, apart from the producers' I/O.
pub fn build_consumer_runtime(consumers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    loadgen_runtime("lg-consumer", consumers.clamp(1, cpus()), 0)
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A multi-threaded runtime of `threads` workers named `name`, each
/// registered for CPU accounting and running `nice` levels below the
/// process (0: at its priority, restored if the creating thread was lower).
fn loadgen_runtime(
    name: &str,
    threads: usize,
    nice: i32,
) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .on_thread_start(move || {
            cpu::register_current_thread();
            priority::lower_current_thread(nice);
        })
        .on_thread_stop(cpu::unregister_current_thread)
        .enable_all()
        .build()
}
