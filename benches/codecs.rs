//! Compression codecs as the producer and consumer use them:
//! `format::Compression::compress` / `decompress` (gzip = flate2 level
//! "fast", snappy = xerial framing, lz4 = LZ4 frame with 64 KiB independent
//! blocks, zstd = level 1; see src/format/codec.rs).
//!
//! Run: `cargo bench --bench codecs` (filter: `cargo bench --bench codecs -- zstd`).
//!
//! Payloads (deterministic, generated at start-up):
//! - `json_16KiB`, `json_1MiB`: a Kafka v2 records section (what
//!   `BatchBuilder::finish` compresses) of records keyed `user-<id>` whose
//!   values are ~300-byte JSON log events: repeated keys, low-cardinality
//!   fields (level, service, path), high-entropy ones (trace ids, latencies).
//!   16 KiB is Kafka's default `batch.size`; 1 MiB a large batch.
//! - `random_1MiB`: PRNG bytes (incompressible: the worst case).
//! - `100B_10KB` (validation and record reading only): loadgen's 100 B
//!   workload, a 10,000 B section of 92 unkeyed 100 B records.
//!
//! Group `records/<payload>/for_each_record`: the consumer reading every
//! record of an uncompressed section.
//!
//! Throughput is always *uncompressed* bytes per second, for both directions.
//!
//! Compression ratios: criterion cannot report them, so this bench prints a
//! table (uncompressed / compressed size per codec and payload) to stdout
//! before the measurements, and writes the same table to
//! `target/criterion/compression_ratios.txt` (or under `$CRITERION_HOME` /
//! `$CARGO_TARGET_DIR`). `cargo bench --bench codecs -- --list` is enough to
//! regenerate the file without measuring anything.
//!
//! Group `validate/<payload>/<codec>`: the broker's ingress record
//! validation, `format::validate::check_records` with the default topic
//! limits, on the same payloads compressed by each codec: one streaming
//! decompression through a 64 KiB scratch (output discarded) plus the
//! varint walk of every record (count, offset deltas, lengths). `none` is
//! the walk alone. Throughput is uncompressed bytes/s, so 1/throughput is
//! the CPU cost per GB of records produced. (`random_1MiB` is not a
//! records section, so it is not in this group.)

mod common;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog::format::codec::ALL;
use shardlog::format::header::BatchHeader;
use shardlog::format::validate::{check_records, Checked};
use std::fmt::Write as _;
use std::time::Duration;

const DECOMPRESS_LIMIT: usize = 64 << 20;

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("json_16KiB", common::json_records_section(16 << 10, 11)),
        ("json_1MiB", common::json_records_section(1 << 20, 12)),
        ("random_1MiB", common::random_bytes(1 << 20, 13)),
    ]
}

/// Print the compression ratio table and save it next to criterion's results.
fn report_ratios(payloads: &[(&'static str, Vec<u8>)]) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# shardlog codec compression ratios (uncompressed / compressed), from benches/codecs.rs"
    );
    let _ = writeln!(
        t,
        "{:<12} {:>10} {:>8} {:>12} {:>8}",
        "payload", "bytes", "codec", "compressed", "ratio"
    );
    for (name, input) in payloads {
        for codec in ALL {
            let out = codec.compress(input);
            let back = codec
                .decompress(&out, DECOMPRESS_LIMIT)
                .expect("round trip");
            assert_eq!(&back, input, "{} round trip", codec.name());
            let _ = writeln!(
                t,
                "{:<12} {:>10} {:>8} {:>12} {:>8.2}",
                name,
                input.len(),
                codec.name(),
                out.len(),
                input.len() as f64 / out.len() as f64
            );
        }
    }
    println!("{t}");
    let dir = common::criterion_dir();
    let path = dir.join("compression_ratios.txt");
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &t)) {
        Ok(()) => println!("(compression ratios written to {})\n", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn bench_codecs(c: &mut Criterion) {
    let payloads = payloads();
    report_ratios(&payloads);
    for (name, input) in &payloads {
        let mut g = c.benchmark_group(format!("compress/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        for codec in ALL {
            g.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
                b.iter(|| black_box(codec.compress(black_box(input))))
            });
        }
        g.finish();
        let mut g = c.benchmark_group(format!("decompress/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        for codec in ALL {
            let compressed = codec.compress(input);
            g.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
                b.iter(|| {
                    black_box(
                        codec
                            .decompress(black_box(&compressed), DECOMPRESS_LIMIT)
                            .unwrap(),
                    )
                })
            });
        }
        g.finish();
    }
}

/// A batch header for `count` records compressed with `codec`: what
/// `check_records` reads (count, last offset delta, codec).
fn header(count: i32, codec: shardlog::format::Compression) -> BatchHeader {
    BatchHeader {
        base_offset: 0,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        header_crc: 0,
        payload_len: 0,
        crc: 0,
        partition_leader_epoch: -1,
        last_offset_delta: count - 1,
        base_sequence: -1,
        record_count: count,
        producer_epoch: -1,
        attributes: codec.id() as i16,
    }
}

fn bench_validate(c: &mut Criterion) {
    let limits = shardlog::config::TopicConfig::default().record_limits();
    assert!(limits.check_compressed, "on by default");
    let payloads = [
        ("json_16KiB", common::json_records_section(16 << 10, 11)),
        ("json_1MiB", common::json_records_section(1 << 20, 12)),
        ("100B_10KB", common::small_records_section(10_000, 100)),
    ];
    for (name, input) in &payloads {
        let count = shardlog::format::record::decode_all(&bytes::Bytes::from(input.clone()))
            .expect("a records section")
            .len() as i32;
        let mut g = c.benchmark_group(format!("validate/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        for codec in ALL {
            let h = header(count, codec);
            let compressed = codec.compress(input);
            assert_eq!(
                check_records(&h, &compressed, &limits),
                Ok(Checked::Walked {
                    records: count as u32,
                    records_bytes: input.len() as u64
                })
            );
            g.bench_function(BenchmarkId::from_parameter(codec.name()), |b| {
                b.iter(|| black_box(check_records(&h, black_box(&compressed), &limits)))
            });
        }
        g.finish();
    }
}

/// Group `records/<payload>`: the consumer's side, `for_each_record` over
/// an uncompressed records section (what loadgen's consumer does per
/// batch; its varint reads were 15-18% of that thread at 100 B).
fn bench_read_records(c: &mut Criterion) {
    let payloads = [
        ("json_16KiB", common::json_records_section(16 << 10, 11)),
        ("100B_10KB", common::small_records_section(10_000, 100)),
    ];
    for (name, input) in &payloads {
        let mut g = c.benchmark_group(format!("records/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function("for_each_record", |b| {
            b.iter(|| {
                let mut n = 0usize;
                shardlog::format::record::for_each_record(black_box(input), |r| {
                    n += r.value.map_or(0, |v| v.len())
                })
                .unwrap();
                black_box(n)
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    targets = bench_codecs, bench_validate, bench_read_records
}
criterion_main!(benches);
