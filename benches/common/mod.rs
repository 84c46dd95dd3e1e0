//! Helpers shared by the bench files: deterministic synthetic data and run
//! mode detection. Not a bench target itself (cargo only discovers
//! `benches/*.rs` and `benches/*/main.rs`).
#![allow(dead_code)]

use bytes::BytesMut;
use std::path::PathBuf;

/// SplitMix64: a tiny deterministic PRNG, so every run benches the same bytes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `len` bytes of PRNG output: incompressible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

const SERVICES: [&str; 8] = [
    "checkout", "payments", "catalog", "search", "auth", "cart", "shipping", "reviews",
];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const PATHS: [&str; 6] = [
    "/api/v1/orders/",
    "/api/v1/users/",
    "/api/v2/products/",
    "/api/v1/cart/",
    "/api/v1/sessions/",
    "/healthz?probe=",
];
const MESSAGES: [&str; 6] = [
    "request completed",
    "order placed",
    "cache miss, loaded from database",
    "retrying upstream call after timeout",
    "user authenticated",
    "inventory reserved",
];

/// One synthetic JSON log event (about 300 bytes): repeated keys, a few
/// low-cardinality fields, and some high-entropy ones (trace id, ids,
/// latencies), like a structured application log.
pub fn json_event(rng: &mut Rng, seq: u64) -> String {
    let ts_ms = 1_714_566_896_000u64 + seq * 3 + rng.below(3);
    let level = match rng.below(100) {
        0..=79 => "INFO",
        80..=91 => "DEBUG",
        92..=97 => "WARN",
        _ => "ERROR",
    };
    let status = match rng.below(100) {
        0..=89 => 200,
        90..=94 => 201,
        95..=97 => 404,
        _ => 503,
    };
    format!(
        concat!(
            "{{\"ts\":\"2024-05-01T12:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",",
            "\"service\":\"{}\",\"host\":\"web-{:02}\",\"trace_id\":\"{:016x}\",",
            "\"span_id\":\"{:08x}\",\"user_id\":{},\"method\":\"{}\",\"path\":\"{}{}\",",
            "\"status\":{},\"latency_ms\":{},\"bytes\":{},\"msg\":\"{}\"}}"
        ),
        (ts_ms / 60_000) % 60,
        (ts_ms / 1000) % 60,
        ts_ms % 1000,
        level,
        rng.pick(&SERVICES),
        rng.below(32),
        rng.next_u64(),
        rng.next_u64() as u32,
        rng.below(1_000_000),
        rng.pick(&METHODS),
        rng.pick(&PATHS),
        rng.below(100_000),
        status,
        rng.below(250),
        rng.below(64 * 1024),
        rng.pick(&MESSAGES),
    )
}

/// A Kafka v2 records section (what `BatchBuilder` compresses) of at least
/// `min_len` bytes: records keyed `user-<id>` with JSON event values.
pub fn json_records_section(min_len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut buf = BytesMut::with_capacity(min_len + 1024);
    let mut i = 0u64;
    while buf.len() < min_len {
        let key = format!("user-{}", rng.below(100_000));
        let value = json_event(&mut rng, i);
        shardlog::format::record::encode(
            &mut buf,
            (i * 3) as i64,
            i as i32,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
        i += 1;
    }
    buf.to_vec()
}

/// A records section like loadgen's 100 B workload: unkeyed records of
/// `value_len` bytes, timestamp deltas of 0-2 ms, as many as fit in
/// `min_len` (10,000 B batches: 92 records, offset deltas past 63 take two
/// bytes).
pub fn small_records_section(min_len: usize, value_len: usize) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(min_len + 1024);
    let value = vec![0x5a; value_len];
    let mut i = 0u64;
    while buf.len() < min_len {
        shardlog::format::record::encode(
            &mut buf,
            (i / 40) as i64,
            i as i32,
            None,
            Some(&value),
            &[],
        );
        i += 1;
    }
    buf.to_vec()
}

/// True under `cargo bench` (cargo passes `--bench`). Under `cargo test
/// --all-targets` criterion runs every bench once as a smoke test, and the
/// benches use small sizes so that stays quick.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Where criterion writes its results: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` (benches run with
/// the package root as their working directory).
pub fn criterion_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("criterion"),
        None => PathBuf::from("target").join("criterion"),
    }
}
