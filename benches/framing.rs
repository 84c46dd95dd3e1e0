//! Batch framing hot paths: building a frame on the client, validating it at
//! broker ingress, stamping offsets at append, and raw CRC-32C throughput.
//!
//! Run: `cargo bench --bench framing` (filter: `cargo bench --bench framing -- crc32c`).
//!
//! - `builder/<records>x<bytes>`: `BatchBuilder::push` for every record, then
//!   `finish(Compression::None)` (record encoding + one CRC + one copy into
//!   the frame). Throughput is record value bytes.
//! - `frame/validate/<size>`: `format::frame::validate` (copy of the header
//!   into an aligned scratch, rkyv `access` with bytecheck, field checks,
//!   CRC-32C of the payload). Throughput is frame bytes.
//! - `frame/parse_header`: the header half of `validate` alone (no CRC).
//! - `frame/stamp`: `format::frame::stamp` (two in-place stores, then the
//!   SLB2 header CRC over the other 60 header bytes).
//! - `crc32c/<impl>/hot/<size>`: CRC-32C on a buffer that stays in cache,
//!   by the `crc32c` crate (SSE4.2) and by `crc-fast` (carry-less multiply
//!   folding), which `shardlog::format::crc` uses.
//! - `crc32c/<impl>/cold/1MiB`: each iteration reads the next 1 MiB of a
//!   256 MiB buffer, so the data comes from DRAM.
//! - `crc32c/combine/<impl>/1MiB`: the CRC of `a ‖ b` from the CRCs of `a`
//!   and of a 1 MiB `b` (`shardlog::format::crc::crc32c_combine`, against
//!   `crc_fast::checksum_combine`).

mod common;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog::format::frame;
use shardlog::format::{BatchBuilder, Compression, ProducerIds};
use std::time::Duration;

/// `count` (key, value) pairs with `value_len`-byte JSON-ish values.
fn records(count: usize, value_len: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = common::Rng::new(7);
    (0..count)
        .map(|i| {
            let mut v = Vec::with_capacity(value_len + 512);
            while v.len() < value_len {
                v.extend_from_slice(common::json_event(&mut rng, i as u64).as_bytes());
            }
            v.truncate(value_len);
            (format!("user-{}", rng.below(100_000)).into_bytes(), v)
        })
        .collect()
}

const SHAPES: [(usize, usize, &str); 2] = [(100, 100, "100x100B"), (1000, 1024, "1000x1KiB")];

fn build_frame(recs: &[(Vec<u8>, Vec<u8>)]) -> bytes::Bytes {
    let mut b = BatchBuilder::new();
    for (i, (k, v)) in recs.iter().enumerate() {
        b.push(1_714_566_896_000 + i as i64, Some(k), Some(v), &[]);
    }
    b.finish(Compression::None, ProducerIds::NONE)
}

fn bench_builder(c: &mut Criterion) {
    let mut g = c.benchmark_group("builder");
    for (count, value_len, name) in SHAPES {
        let recs = records(count, value_len);
        g.throughput(Throughput::Bytes((count * value_len) as u64));
        // One builder reused across batches, as a producer does.
        let mut b = BatchBuilder::new();
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                for (i, (k, v)) in recs.iter().enumerate() {
                    b.push(1_714_566_896_000 + i as i64, Some(k), Some(v), &[]);
                }
                black_box(b.finish(Compression::None, ProducerIds::NONE))
            })
        });
    }
    g.finish();
}

fn bench_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let mut small = None;
    for (count, value_len, name) in SHAPES {
        let f = build_frame(&records(count, value_len));
        g.throughput(Throughput::Bytes(f.len() as u64));
        g.bench_function(BenchmarkId::new("validate", name), |bench| {
            bench.iter(|| black_box(frame::validate(black_box(&f)).unwrap()))
        });
        small.get_or_insert(f);
    }
    let f = small.unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_header", |bench| {
        bench.iter(|| black_box(frame::parse_header(black_box(&f)).unwrap()))
    });
    let mut m = BytesMut::from(&f[..]);
    let mut off = 0u64;
    g.bench_function("stamp", |bench| {
        bench.iter(|| {
            off += 100;
            frame::stamp(black_box(&mut m), off, 0);
        })
    });
    g.finish();
}

fn bench_crc(c: &mut Criterion) {
    // `crc32c` is the crate shardlog used; `crc-fast` the one it uses now
    // (`shardlog::format::crc`, which says why).
    type Crc = fn(&[u8]) -> u32;
    let impls: [(&str, Crc); 2] = [
        ("crc32c", crc32c::crc32c),
        ("crc-fast", shardlog::format::crc::crc32c),
    ];
    let mut g = c.benchmark_group("crc32c");
    for (len, name) in [
        (100, "100B"),
        (4 << 10, "4KiB"),
        (64 << 10, "64KiB"),
        (1 << 20, "1MiB"),
    ] {
        let buf = common::random_bytes(len, 1);
        g.throughput(Throughput::Bytes(len as u64));
        for (imp, f) in impls {
            g.bench_function(BenchmarkId::new(format!("{imp}/hot"), name), |bench| {
                bench.iter(|| black_box(f(black_box(&buf))))
            });
        }
    }
    // Cold: walk a buffer far larger than the last-level cache.
    let window = 1 << 20;
    let total = if common::bench_mode() {
        256 << 20
    } else {
        4 << 20
    };
    let big = common::random_bytes(total, 2);
    g.throughput(Throughput::Bytes(window as u64));
    for (imp, f) in impls {
        let mut at = 0usize;
        g.bench_function(BenchmarkId::new(format!("{imp}/cold"), "1MiB"), |bench| {
            bench.iter(|| {
                let r = f(black_box(&big[at..at + window]));
                at = (at + window) % total;
                black_box(r)
            })
        });
    }
    // Joining two CRCs (the producer's CRC of records taken as pushed, then
    // the header's): ours against `crc-fast`'s, for a 1 MiB second part.
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("combine/shardlog", "1MiB"), |bench| {
        bench.iter(|| {
            black_box(shardlog::format::crc::crc32c_combine(
                black_box(0x1234_5678),
                black_box(0x9abc_def0),
                black_box(1 << 20),
            ))
        })
    });
    g.bench_function(BenchmarkId::new("combine/crc-fast", "1MiB"), |bench| {
        bench.iter(|| {
            black_box(crc_fast::checksum_combine(
                crc_fast::CrcAlgorithm::Crc32Iscsi,
                black_box(0x1234_5678),
                black_box(0x9abc_def0),
                black_box(1 << 20),
            ))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_builder, bench_frame, bench_crc
}
criterion_main!(benches);
