//! Issue 12 spike: openraft vs raft-rs on glommio, the same small task.
//!
//! Run: `cargo bench --bench raft` (filter: `cargo bench --bench raft -- idle`).
//!
//! Every scenario is three in-process nodes per group on ONE glommio
//! executor (pinned to CPU 0), in-memory logs, no fsync, in-memory
//! channels: it measures the libraries and their driving code, not disks or
//! networks. See `benches/raft_spike/` and `docs/replication.md`.
//!
//! - `commit/{openraft,raft-rs}`: one 64-byte proposal at a time to a
//!   3-node group, wall time from propose on the leader to "committed and
//!   applied on the leader" (openraft `client_write` returning; raft-rs the
//!   entry in the leader's committed entries). Mean from criterion.
//! - `pipelined/{openraft,raft-rs}`: 256 proposals in flight at a time,
//!   throughput in proposals/s.
//! - `idle_heartbeat/{openraft,raft-rs}/N`: N idle groups (each with three
//!   replicas, all on this core) with heartbeats every
//!   `SHARDLOG_RAFT_HEARTBEAT_MS` (default 100 ms). One criterion iteration is
//!   one heartbeat interval of wall time; the figure returned is the
//!   executor thread's CPU time over it (`CLOCK_THREAD_CPUTIME_ID`), so
//!   criterion's "time" is CPU per heartbeat round for all N groups and the
//!   throughput is group-heartbeats per CPU second. After each, a summary
//!   line gives µs of CPU per group per heartbeat (all three replicas; a
//!   broker holding one replica of each pays about a third) and what 1,000
//!   groups at a 100 ms heartbeat cost in cores, and the heap the N groups
//!   hold (a counting global allocator, live bytes after setup).
//!
//! `SHARDLOG_RAFT_IDLE_GROUPS` changes N (default 1,000). Under `cargo test
//! --all-targets` each runs once with 10 idle groups.

mod common;
mod raft_spike;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_spike::{heartbeats_sent, openraft_spike, raftrs_spike, CountingAlloc, OnExecutor};
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WINDOW: u64 = 256;

fn heartbeat() -> Duration {
    let ms = std::env::var("SHARDLOG_RAFT_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// 1,000 under `cargo bench` unless `SHARDLOG_RAFT_IDLE_GROUPS` says
/// otherwise; 10 in the smoke test.
fn idle_groups() -> usize {
    if !common::bench_mode() {
        return 10;
    }
    std::env::var("SHARDLOG_RAFT_IDLE_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit");
    g.throughput(Throughput::Elements(1));
    let ex = OnExecutor::start("raft-openraft", openraft_spike::Commit::setup);
    g.bench_function("openraft", |b| b.iter_custom(|n| ex.run(n)));
    drop(ex);
    let ex = OnExecutor::start("raft-raftrs", raftrs_spike::Commit::setup);
    g.bench_function("raft-rs", |b| b.iter_custom(|n| ex.run(n)));
    drop(ex);
    g.finish();
}

fn pipelined(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipelined");
    g.throughput(Throughput::Elements(1));
    let ex = OnExecutor::start("raft-openraft", || openraft_spike::Pipelined::setup(WINDOW));
    g.bench_function("openraft", |b| b.iter_custom(|n| ex.run(n)));
    drop(ex);
    let ex = OnExecutor::start("raft-raftrs", || raftrs_spike::Pipelined::setup(WINDOW));
    g.bench_function("raft-rs", |b| b.iter_custom(|n| ex.run(n)));
    drop(ex);
    g.finish();
}

/// A fixed measurement after criterion's: `rounds` heartbeat intervals,
/// CPU per group per heartbeat, printed.
fn summarize(lib: &str, ex: &OnExecutor, groups: usize, hb: Duration) {
    let rounds = if common::bench_mode() { 40 } else { 2 };
    let hb0 = heartbeats_sent();
    let cpu = ex.run(rounds);
    // Each leader sends one heartbeat to each of its two followers a round.
    let rounds_done = (heartbeats_sent() - hb0) as f64 / (2.0 * groups as f64);
    let per_group_us = cpu.as_secs_f64() * 1e6 / (groups as f64 * rounds as f64);
    let per_sent_us = cpu.as_secs_f64() * 1e6 / (groups as f64 * rounds_done.max(1e-9));
    let wall = hb.as_secs_f64() * rounds as f64;
    // 1,000 groups at 100 ms: 10 heartbeats a second each.
    let cores_1000_at_100ms = per_group_us * 1e-6 * 1000.0 * 10.0;
    println!(
        "idle_heartbeat/{lib}/{groups}: {per_group_us:.2} us CPU per group per heartbeat interval \
         (3 replicas; {rounds} intervals of {} ms, executor busy {:.1}% of wall; \
         {rounds_done:.1} heartbeat rounds actually sent => {per_sent_us:.2} us per group per round sent); \
         1,000 groups at 100 ms => {:.3} cores for the cluster, ~{:.3} per broker; \
         heap allocated {:.1} KiB per group (3 replicas), RSS growth {:.1} KiB per group",
        hb.as_millis(),
        100.0 * cpu.as_secs_f64() / wall,
        cores_1000_at_100ms,
        cores_1000_at_100ms / 3.0,
        ex.setup_bytes as f64 / 1024.0 / groups as f64,
        ex.setup_rss as f64 / 1024.0 / groups as f64,
    );
}

fn idle_heartbeat(c: &mut Criterion) {
    let groups = idle_groups();
    let hb = heartbeat();
    let mut g = c.benchmark_group("idle_heartbeat");
    g.throughput(Throughput::Elements(groups as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(200));
    g.measurement_time(Duration::from_millis(300));

    let ex = OnExecutor::start("raft-openraft", move || {
        openraft_spike::Idle::setup(groups, hb)
    });
    g.bench_function(BenchmarkId::new("openraft", groups), |b| {
        b.iter_custom(|n| ex.run(n))
    });
    summarize("openraft", &ex, groups, hb);
    drop(ex);

    let ex = OnExecutor::start("raft-raftrs", move || {
        raftrs_spike::Idle::setup(groups as u32, hb)
    });
    g.bench_function(BenchmarkId::new("raft-rs", groups), |b| {
        b.iter_custom(|n| ex.run(n))
    });
    summarize("raft-rs", &ex, groups, hb);
    drop(ex);
    g.finish();
}

criterion_group! {
    name = raft;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = commit, pipelined, idle_heartbeat
}
criterion_main!(raft);
