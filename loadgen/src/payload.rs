//! What a loadgen message carries: a fixed header that makes every message
//! checkable and timeable, followed by filler of a chosen compressibility.
//!
//! Header layout (32 bytes, little endian):
//!
//! ```text
//!  0..4   magic  b"LGN1"
//!  4..8   run id       (messages of other runs on a shared topic are ignored)
//!  8..12  producer id
//! 12..16  partition the producer sent it to (detects misrouting)
//! 16..24  sequence number, per (producer, partition), from 0
//! 24..32  intended send time, ns since the run epoch
//! ```
//!
//! The intended send time rides in the payload (not in the record
//! timestamp, which has ms resolution and wall-clock steps) so that the
//! consumer computes end-to-end latency against the same monotonic epoch.
//!
//! Filler is generated fresh per message by a xorshift PRNG: reusing one
//! buffer would let codecs find matches across messages in a batch and
//! report compression ratios no real workload gets.

use serde::{Deserialize, Serialize};

pub const HEADER_LEN: usize = 32;
pub const MAGIC: [u8; 4] = *b"LGN1";

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub run_id: u32,
    pub producer_id: u32,
    pub partition: u32,
    pub seq: u64,
    pub intended_ns: u64,
}

impl Header {
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.run_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.producer_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.partition.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.intended_ns.to_le_bytes());
    }

    /// None when `bytes` is not a loadgen message (too short or no magic).
    pub fn read(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_LEN || bytes[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        Some(Header {
            run_id: u32_at(4),
            producer_id: u32_at(8),
            partition: u32_at(12),
            seq: u64_at(16),
            intended_ns: u64_at(24),
        })
    }
}

/// How the bytes after the header are filled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum PayloadKind {
    /// Uniform random bytes: no codec can shrink them.
    Random,
    /// Each 64-byte block is `64/ratio` random bytes then zeros, so a
    /// codec gets roughly `ratio`; the achieved ratio is measured and
    /// reported, since codecs differ (lz4 and snappy pay per match).
    Compressible { ratio: f64 },
}

impl PayloadKind {
    pub fn label(&self) -> String {
        match self {
            PayloadKind::Random => "random".into(),
            PayloadKind::Compressible { ratio } => format!("compressible (target {ratio}x)"),
        }
    }
}

const BLOCK: usize = 64;

/// Fills message bodies. One per producer; no allocation per message.
pub struct Filler {
    state: u64,
    kind: PayloadKind,
    random_per_block: usize,
}

impl Filler {
    pub fn new(kind: PayloadKind, seed: u64) -> Filler {
        let random_per_block = match kind {
            PayloadKind::Random => BLOCK,
            PayloadKind::Compressible { ratio } => {
                let r = if ratio.is_finite() && ratio >= 1.0 {
                    ratio
                } else {
                    1.0
                };
                ((BLOCK as f64 / r).ceil() as usize).clamp(1, BLOCK)
            }
        };
        Filler {
            // xorshift must not start at 0.
            state: seed | 1,
            kind,
            random_per_block,
        }
    }

    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*: fast, good enough to defeat codecs.
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Overwrite `body` with fresh filler.
    pub fn fill(&mut self, body: &mut [u8]) {
        for block in body.chunks_mut(BLOCK) {
            let n = self.random_per_block.min(block.len());
            let (rand, zeros) = block.split_at_mut(n);
            let mut chunks = rand.chunks_exact_mut(8);
            for c in &mut chunks {
                c.copy_from_slice(&self.next_u64().to_le_bytes());
            }
            let rest = chunks.into_remainder();
            if !rest.is_empty() {
                let v = self.next_u64().to_le_bytes();
                rest.copy_from_slice(&v[..rest.len()]);
            }
            zeros.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog::format::Compression;

    #[test]
    fn header_round_trips() {
        let h = Header {
            run_id: 7,
            producer_id: 3,
            partition: 11,
            seq: 1 << 40,
            intended_ns: 123_456_789,
        };
        let mut buf = [0u8; 40];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(Header::read(&buf[..31]), None);
        buf[0] = b'X';
        assert_eq!(Header::read(&buf), None);
    }

    fn ratio(kind: PayloadKind, codec: Compression) -> f64 {
        let mut f = Filler::new(kind, 42);
        let mut data = vec![0u8; 256 << 10];
        for msg in data.chunks_mut(1000) {
            f.fill(msg);
        }
        data.len() as f64 / codec.compress(&data).len() as f64
    }

    #[test]
    fn random_does_not_compress() {
        let r = ratio(PayloadKind::Random, Compression::Zstd);
        assert!(r < 1.01, "random payload compressed {r}x");
    }

    #[test]
    fn compressible_lands_near_the_target() {
        for target in [2.0, 4.0] {
            let kind = PayloadKind::Compressible { ratio: target };
            let z = ratio(kind, Compression::Zstd);
            let l = ratio(kind, Compression::Lz4);
            assert!(
                z > target * 0.75 && z < target * 1.3,
                "zstd {z} vs {target}"
            );
            assert!(l > target * 0.6 && l < target * 1.3, "lz4 {l} vs {target}");
        }
    }
}
