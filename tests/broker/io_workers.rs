//! Every shard runs its blocking file operations (the fdatasync of each
//! group commit, fallocate, ftruncate) on a pool of kernel workers of the
//! configured size, read back from the kernel. glommio 0.9 leaves the
//! first shard to start with 2 and the others with 8 (on 2 CPUs), and
//! with 1,000 partitions that one shard's syncs took 6 to 40 times as long
//! (`storage::io_workers`).

use crate::common::BrokerProc;

/// Each shard's `io_workers=N` from its start-up line, in shard order.
fn io_workers_per_shard(b: &BrokerProc) -> Vec<(u32, u32)> {
    let log = b.plain_log();
    let mut found: Vec<(u32, u32)> = log
        .lines()
        .filter(|l| l.contains("io workers for blocking file operations"))
        .map(|l| {
            let f = |k| BrokerProc::log_field(l, k) as u32;
            (f("shard"), f("io_workers"))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn every_shard_has_the_same_number_of_io_workers_by_default() {
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    let mut b = BrokerProc::start(&[]);
    assert_eq!(
        io_workers_per_shard(&b),
        vec![(0, 4 * cpus), (1, 4 * cpus)],
        "4 x {cpus} online CPUs on each of the 2 shards:\n{}",
        b.plain_log()
    );
    b.stop();
}

#[test]
fn io_workers_per_shard_sets_every_shards_pool() {
    let mut b = BrokerProc::start_with_shards(3, &["--set", "io_workers_per_shard=3"]);
    assert_eq!(
        io_workers_per_shard(&b),
        vec![(0, 3), (1, 3), (2, 3)],
        "{}",
        b.plain_log()
    );
    // The shards serve: a topic on all three takes and returns data.
    b.create_topic("t", 3);
    let out = b.cli(&["produce", "t", "--partition", "2"], Some(b"one\ntwo\n"));
    assert!(out.status.success(), "{out:?}");
    b.stop();
}
