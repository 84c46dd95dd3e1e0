//! Message sets (magic 0 and 1, Kafka before 0.11) <-> our frames, for
//! Produce v0-2 and Fetch v0-3. No I/O. The wire format is decoded and
//! encoded by the vendored crate (`kafka_protocol::records::legacy`, layout
//! in docs/kafka.md); this file only maps records to frames and back.
//!
//! - In (Produce v0-2): the whole partition's message set is decoded
//!   strictly (every message's CRC, every length, wrappers of gzip, snappy
//!   or lz4 unwrapped once; nested compression, zstd and trailing partial
//!   messages refused), then its records become one uncompressed v2 frame
//!   that goes through the same validation as a v2 batch. Decompressed
//!   bytes across all wrappers are bounded by the topic's
//!   `max_records_bytes`, enforced by the decompressor before it allocates
//!   past it. Magic 0 messages carry no timestamp: they get the append
//!   time (`now_ms`), so time retention and ListOffsets by time see them
//!   as new, where a -1 would make retention drop them at once.
//! - Out (Fetch v0-3): each stored frame's records are written as
//!   uncompressed messages of the asked magic at their absolute offsets
//!   (Kafka keeps the codec when it converts down; we do not: old clients
//!   read both). Headers have no place in a message set and are dropped,
//!   as Kafka does; magic 0 drops timestamps.

use super::batch::BatchError;
use crate::format::validate::{RecordLimits, DECOMPRESSED_CAP};
use crate::format::{read_records, BatchBuilder, BatchHeader, Compression, ProducerIds};
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::legacy::{decode_message_set, encode_message_set, plain_record};
use kafka_protocol::records::{Compression as KCompression, Record, TimestampType};

/// Magic of the message set a Fetch version answers with: 0 for v0-1,
/// 1 for v2-3 (as Kafka's down-conversion picks).
pub fn fetch_magic(version: i16) -> i8 {
    assert!((0..=3).contains(&version), "Fetch v{version} uses batches");
    if version <= 1 {
        0
    } else {
        1
    }
}

fn our_codec(c: KCompression) -> Result<Compression, String> {
    match c {
        KCompression::None => Ok(Compression::None),
        KCompression::Gzip => Ok(Compression::Gzip),
        KCompression::Snappy => Ok(Compression::Snappy),
        KCompression::Lz4 => Ok(Compression::Lz4),
        KCompression::Zstd => Err("zstd is not valid in a message set".to_string()),
    }
}

/// A Produce v0-2 partition's message set, as one validated frame (see the
/// module doc). Every failure refuses the whole partition.
pub fn to_frames(
    records: &[u8],
    limits: &RecordLimits,
    now_ms: i64,
) -> Result<Vec<BytesMut>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut budget = limits.max_records_bytes;
    let set = decode_message_set(&Bytes::copy_from_slice(records), |compressed, codec| {
        let codec = our_codec(codec).map_err(anyhow::Error::msg)?;
        let plain = codec.decompress(compressed, budget)?;
        budget -= plain.len();
        Ok(Bytes::from(plain))
    })
    .map_err(|e| BatchError::MessageSet(format!("{e:#}")))?;
    let mut b = BatchBuilder::new();
    for r in &set.records {
        // Magic 0 has no timestamp (-1); a magic 1 client may send -1 too.
        let ts = if r.timestamp < 0 { now_ms } else { r.timestamp };
        b.push(ts, r.key.as_deref(), r.value.as_deref(), &[]);
    }
    let frame = b.finish(Compression::None, ProducerIds::NONE);
    super::batch::validated(BytesMut::from(&frame[..]), limits, 0).map(|f| vec![f])
}

/// Append one stored (validated) frame's records to `out` as a message set
/// of `magic` (0 or 1). Stored frames passed validation on the way in, so a
/// failure here is a damaged log, reported to the caller.
pub fn append_frame(
    h: &BatchHeader,
    frame: &Bytes,
    magic: i8,
    out: &mut BytesMut,
) -> Result<(), BatchError> {
    // Control batches (a replicated partition's Raft entries) have no
    // message-set form: dropped, as Kafka drops them when down-converting.
    if h.attributes & crate::format::header::attr::CONTROL != 0 {
        return Ok(());
    }
    let (_, recs) =
        read_records(frame, DECOMPRESSED_CAP).map_err(|e| BatchError::MessageSet(e.to_string()))?;
    let tt = if h.attributes & crate::format::header::attr::LOG_APPEND_TIME != 0 {
        TimestampType::LogAppend
    } else {
        TimestampType::Creation
    };
    let records: Vec<Record> = recs
        .into_iter()
        .map(|r| plain_record(r.offset as i64, r.timestamp_ms, tt, r.key, r.value))
        .collect();
    encode_message_set(out, &records, magic, KCompression::None, |_, _| {
        unreachable!("uncompressed")
    })
    .map_err(|e| BatchError::MessageSet(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame;
    use kafka_protocol::records::legacy::{decode_message_set, message_size};
    use proptest::prelude::*;

    const LIMITS: RecordLimits = RecordLimits {
        keys_required: false,
        max_records_bytes: 1 << 20,
        check_compressed: true,
    };

    fn krec(offset: i64, ts: i64, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Record {
        let (key, value) = (key.map(Bytes::from), value.map(Bytes::from));
        plain_record(offset, ts, TimestampType::Creation, key, value)
    }

    fn compress(b: &[u8], c: KCompression) -> anyhow::Result<Bytes> {
        Ok(Bytes::from(our_codec(c).unwrap().compress(b)))
    }

    fn message_set(recs: &[Record], magic: i8, c: KCompression) -> Bytes {
        let mut out = BytesMut::new();
        encode_message_set(&mut out, recs, magic, c, compress).unwrap();
        out.freeze()
    }

    /// Produce side then fetch side: message set -> frame -> message set.
    fn round_trip(input: &[u8], fetch_magic: i8, base: u64) -> Vec<Record> {
        let frames = to_frames(input, &LIMITS, 5_000).unwrap();
        assert_eq!(frames.len(), 1);
        let mut f = frames.into_iter().next().unwrap();
        frame::stamp(&mut f, base, 0);
        let f = f.freeze();
        let h = frame::parse_header(&f).unwrap();
        let mut out = BytesMut::new();
        append_frame(&h, &f, fetch_magic, &mut out).unwrap();
        let out_len = out.len();
        let recs = decode_message_set(&out.freeze(), |_, _| unreachable!())
            .unwrap()
            .records;
        let size: usize = recs
            .iter()
            .map(|r| message_size(fetch_magic, r.key.as_deref(), r.value.as_deref()))
            .sum();
        assert_eq!(out_len, size, "message_size counts what is written");
        recs
    }

    proptest! {
        #[test]
        fn round_trips_through_a_v2_frame(
            kvs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                 0i64..2_000_000_000_000),
                1..30),
            magic in 0i8..=1,
            codec in prop_oneof![Just(KCompression::None), Just(KCompression::Gzip),
                                 Just(KCompression::Snappy), Just(KCompression::Lz4)],
            base in 0u64..1_000_000,
        ) {
            let recs: Vec<Record> = kvs.iter().enumerate()
                .map(|(i, (k, v, ts))| krec(i as i64, *ts, k.clone(), v.clone()))
                .collect();
            let input = message_set(&recs, magic, codec);
            for fetch_magic in [0i8, 1] {
                let back = round_trip(&input, fetch_magic, base);
                prop_assert_eq!(back.len(), recs.len());
                for (i, (a, b)) in recs.iter().zip(&back).enumerate() {
                    prop_assert_eq!(&a.key, &b.key);
                    prop_assert_eq!(&a.value, &b.value);
                    prop_assert_eq!(b.offset, base as i64 + i as i64);
                    let want_ts = match (fetch_magic, magic) {
                        (0, _) => -1,
                        (_, 0) => 5_000, // stamped with the append time
                        _ => a.timestamp,
                    };
                    prop_assert_eq!(b.timestamp, want_ts);
                }
            }
        }

        /// Arbitrary bytes after a plausible header never panic, and are
        /// either refused or converted into a frame that validates.
        #[test]
        fn garbage_is_refused_not_panicked(tail in proptest::collection::vec(any::<u8>(), 0..300),
                                           magic in 0u8..=1) {
            let mut input = vec![0u8; 16];
            input.push(magic);
            input.extend_from_slice(&tail);
            let _ = to_frames(&input, &LIMITS, 0);
        }
    }

    #[test]
    fn refuses_bad_crc_lying_lengths_nesting_and_bombs() {
        let recs = vec![krec(0, 10, Some(b"k".to_vec()), Some(b"v".to_vec()))];
        let good = message_set(&recs, 1, KCompression::None);
        assert!(to_frames(&good, &LIMITS, 0).is_ok());
        let mut bad_crc = good.to_vec();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        let e = to_frames(&bad_crc, &LIMITS, 0).unwrap_err();
        assert!(e.to_string().contains("CRC"), "{e}");
        assert_eq!(
            super::super::errors::batch(&e),
            kafka_protocol::error::ResponseError::CorruptMessage.code()
        );
        // The size field claims one byte more / less than the message has.
        for delta in [1i32, -1] {
            let mut lying = good.to_vec();
            let size = i32::from_be_bytes(lying[8..12].try_into().unwrap()) + delta;
            lying[8..12].copy_from_slice(&size.to_be_bytes());
            assert!(to_frames(&lying, &LIMITS, 0).is_err(), "size {delta:+}");
        }
        // Nested compression: a gzip wrapper around a gzip wrapper.
        let inner = message_set(&recs, 1, KCompression::Gzip);
        let mut outer_inner = BytesMut::new();
        outer_inner.extend_from_slice(&inner);
        let wrapper = krec(0, 10, None, Some(Compression::Gzip.compress(&outer_inner)));
        let mut nested = BytesMut::new();
        // Hand-built wrapper: attributes = gzip over an already-wrapped set.
        encode_message_set(&mut nested, &[wrapper], 1, KCompression::None, compress).unwrap();
        nested[17] = 1; // attributes: gzip
        let crc = kafka_protocol::records::IEEE.checksum(&nested[16..]);
        nested[12..16].copy_from_slice(&crc.to_be_bytes());
        let e = to_frames(&nested, &LIMITS, 0).unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
        // A wrapper that inflates past the budget is refused before it is held.
        let big: Vec<Record> = (0..64)
            .map(|i| krec(i, 10, None, Some(vec![0u8; 64 << 10])))
            .collect();
        let bomb = message_set(&big, 1, KCompression::Gzip);
        assert!(bomb.len() < 1 << 20, "compresses well");
        let e = to_frames(&bomb, &LIMITS, 0).unwrap_err();
        assert!(matches!(e, BatchError::MessageSet(_)), "{e}");
        // zstd does not exist in message sets.
        let mut zstd = good.to_vec();
        zstd[17] = 4;
        let crc = kafka_protocol::records::IEEE.checksum(&zstd[16..]);
        zstd[12..16].copy_from_slice(&crc.to_be_bytes());
        assert!(to_frames(&zstd, &LIMITS, 0).is_err());
    }
}
