//! The batch CRC.
//!
//! shardlog's CRC-32C is defined to equal Kafka's RecordBatch v2 CRC: CRC-32C
//! (Castagnoli) over the big-endian Kafka encoding of
//! `attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32`
//! (40 bytes) followed by the payload. It covers every header field except the
//! ones the broker stamps (base offset, leader epoch) and the framing fields
//! (magic, payload length, the CRC itself).
//!
//! Why Kafka's definition rather than a CRC over our own little-endian header:
//! one checksum then serves both protocols. A batch produced through the Kafka
//! listener is checked once and stored with its CRC as is; a Fetch over Kafka
//! copies the stored CRC into the rebuilt Kafka header with no recompute; a
//! batch produced natively passes the CRC check of every Kafka client.

use super::header::BatchHeader;

/// Length of the big-endian prefix the CRC covers before the payload.
pub const CRC_PREFIX_LEN: usize = 40;

/// The 40 CRC'd header bytes in Kafka's big-endian order.
pub fn crc_prefix(h: &BatchHeader) -> [u8; CRC_PREFIX_LEN] {
    let mut b = [0u8; CRC_PREFIX_LEN];
    b[0..2].copy_from_slice(&h.attributes.to_be_bytes());
    b[2..6].copy_from_slice(&h.last_offset_delta.to_be_bytes());
    b[6..14].copy_from_slice(&h.base_timestamp.to_be_bytes());
    b[14..22].copy_from_slice(&h.max_timestamp.to_be_bytes());
    b[22..30].copy_from_slice(&h.producer_id.to_be_bytes());
    b[30..32].copy_from_slice(&h.producer_epoch.to_be_bytes());
    b[32..36].copy_from_slice(&h.base_sequence.to_be_bytes());
    b[36..40].copy_from_slice(&h.record_count.to_be_bytes());
    b
}

/// CRC-32C of a batch: the Kafka v2 batch CRC.
pub fn batch_crc(h: &BatchHeader, payload: &[u8]) -> u32 {
    let prefix = crc_prefix(h);
    crc32c_append(crc32c(&prefix), payload)
}

/// [`batch_crc`] from the CRC of the payload, taken apart (a producer
/// checksums records as it writes them): the prefix's CRC joined to it.
pub fn batch_crc_of_payload_crc(h: &BatchHeader, payload_crc: u32, payload_len: usize) -> u32 {
    crc32c_combine(crc32c(&crc_prefix(h)), payload_crc, payload_len)
}

/// CRC-32C (Castagnoli) of `data`: every checksum shardlog writes or checks
/// (batches, headers, index and checkpoint files, hard state) goes
/// through here or [`crc32c_append`].
///
/// Why `crc-fast` rather than the `crc32c` crate: each produced byte is
/// checksummed three times on one machine under a benchmark (the client's
/// batch, the broker's check, the consumer's check; a fourth time when a
/// read comes from disk), 11.6% of all samples in a 2-core run of the
/// 1 KB acks=1 benchmark. `crc32c` uses the SSE4.2 `crc32` instruction;
/// `crc-fast` folds with carry-less multiplies (AVX-512 VPCLMULQDQ where the
/// CPU has it, PCLMULQDQ otherwise, chosen at run time): 15 → 26 GB/s on a
/// 1 MiB buffer read from memory on this project's machines (`cargo bench
/// --bench framing -- crc32c`, README "Micro-benchmarks"). Both compute the
/// same function; a test below holds them equal.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// Continue the CRC-32C `crc` (of some bytes before) over `data`: equal to
/// [`crc32c`] of the two parts joined.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    // The digest's state is the register before the final inversion.
    let mut d =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    d.update(data);
    d.finalize() as u32
}

/// CRC-32C of `a ‖ b` from `crc_a`, `crc_b` and `b`'s length (CRC-32C is
/// linear): `crc_a` times x^(8·len_b) modulo the polynomial, plus `crc_b`.
/// Lets a producer checksum records as it writes them and the header
/// prefix at the end.
///
/// Why not `crc_fast::checksum_combine`: it builds the shift operator by
/// squaring 64×64 bit matrices on every call: 40 µs for a 1 MiB second
/// part (`cargo bench --bench framing -- combine`; ours 59 ns). With
/// 100 B messages in 10 KB batches it took 40% of loadgen's CPU. Here the powers x^(2^k)
/// are a table computed at compile time, and a call multiplies at most
/// one per bit of the length (zlib's `crc32_combine`, Mark Adler): well
/// under a microsecond. A test holds it equal to `crc_fast`'s.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    mul_mod_p(x_pow_8n(len_b as u64), crc_a) ^ crc_b
}

/// CRC-32C's polynomial, bit-reflected (bit 31 is x^0), as the CRC is.
const POLY_REFLECTED: u32 = 0x82F6_3B78;

/// `a · b` modulo the polynomial, both reflected. `a` must not be zero
/// (no power of x is).
const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 {
            (b >> 1) ^ POLY_REFLECTED
        } else {
            b >> 1
        };
    }
}

/// `X_POW_2K[k]` = x^(2^k) modulo the polynomial, for every k that
/// `x_pow_8n` reaches with a 64-bit length (3 + 63).
const X_POW_2K: [u32; 67] = {
    let mut t = [0u32; 67];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 67 {
        t[k] = p;
        p = mul_mod_p(p, p);
        k += 1;
    }
    t
};

/// x^(8·n) modulo the polynomial: the shift past `n` zero bytes.
fn x_pow_8n(mut n: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut k = 3; // 8 = 2^3
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(X_POW_2K[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_value_of_crc32c_is_met() {
        // The catalogue's check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// A CRC joined from two parts' CRCs equals the CRC of the whole, at
    /// every split (the producer's CRC of records as pushed rests on it).
    #[test]
    fn crcs_of_two_parts_combine_into_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for split in [0, 1, 40, 41, 4096, 32 << 10, 65_537, 69_999, 70_000] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                crc32c_combine(crc32c(a), crc32c(b), b.len()),
                crc32c(&data),
                "split {split}"
            );
            let theirs = crc_fast::checksum_combine(
                crc_fast::CrcAlgorithm::Crc32Iscsi,
                u64::from(crc32c(a)),
                u64::from(crc32c(b)),
                b.len() as u64,
            );
            assert_eq!(
                u64::from(crc32c_combine(crc32c(a), crc32c(b), b.len())),
                theirs
            );
        }
    }

    /// Lengths no batch has, up to the largest a `usize` holds, shift as
    /// `crc_fast`'s combine does (the power table covers every bit).
    #[test]
    fn a_combine_over_any_length_agrees_with_crc_fast() {
        for len in [1usize << 32, (1 << 40) + 12_345, usize::MAX] {
            let theirs = crc_fast::checksum_combine(
                crc_fast::CrcAlgorithm::Crc32Iscsi,
                0xdead_beef,
                0x1234_5678,
                len as u64,
            );
            assert_eq!(
                u64::from(crc32c_combine(0xdead_beef, 0x1234_5678, len)),
                theirs,
                "len {len}"
            );
        }
    }

    /// The same function as the `crc32c` crate this replaced, whole and
    /// continued at every split, across the lengths where the fast paths
    /// change (under 16, 64, 128, 256 bytes and above).
    #[test]
    fn it_equals_the_crc32c_crate_whole_and_continued() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in (0..300).chain([511, 512, 513, 1024, 4095, 4096, 4999]) {
            let d = &data[..len];
            assert_eq!(crc32c(d), ::crc32c::crc32c(d), "len {len}");
            for split in [0, 1, 7, len / 3, len / 2, len.saturating_sub(1), len] {
                let split = split.min(len);
                assert_eq!(
                    crc32c_append(crc32c(&d[..split]), &d[split..]),
                    ::crc32c::crc32c(d),
                    "len {len} split {split}"
                );
            }
        }
    }
}
