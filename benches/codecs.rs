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
//!
//! Throughput is always *uncompressed* bytes per second, for both directions.
//!
//! Compression ratios: criterion cannot report them, so this bench prints a
//! table (uncompressed / compressed size per codec and payload) to stdout
//! before the measurements, and writes the same table to
//! `target/criterion/compression_ratios.txt` (or under `$CRITERION_HOME` /
//! `$CARGO_TARGET_DIR`). `cargo bench --bench codecs -- --list` is enough to
//! regenerate the file without measuring anything.

mod common;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog::format::codec::ALL;
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    targets = bench_codecs
}
criterion_main!(benches);
