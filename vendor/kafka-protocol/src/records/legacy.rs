//! Message sets: the magic 0 and magic 1 record formats of Kafka before
//! 0.11 (shardlog addition; upstream 0.18 refuses them).
//!
//! A message set is a run of messages, each framed on its own:
//!
//! ```text
//!  0 offset         i64   absolute (magic 0, or an uncompressed magic 1
//!                         message); relative 0..n-1 inside a magic 1 wrapper
//!  8 message_size   i32   bytes after this field
//! 12 crc            u32   CRC-32 (IEEE) of every byte after this field
//! 16 magic          i8    0 or 1
//! 17 attributes     i8    bits 0-2 compression (0 none, 1 gzip, 2 snappy,
//!                         3 lz4), bit 3 (magic 1 only) log-append time
//! 18 timestamp      i64   magic 1 only
//!    key_length     i32   -1 for null, then the key bytes
//!    value_length   i32   -1 for null, then the value bytes
//! ```
//!
//! A compressed message (a "wrapper") carries in its value the compressed
//! bytes of an inner message set, whose messages must be uncompressed and of
//! the wrapper's magic (Kafka refuses deeper nesting, and so do we). The
//! wrapper's offset is the absolute offset of the last inner message.
//!
//! Decoding is strict, as a broker must be on produce: every length must fit
//! inside its container exactly, every CRC must match, and a trailing
//! partial message is an error. Decompression is the caller's (it owns the
//! memory budget): `decompress` must refuse output past its limit.

use anyhow::{anyhow, bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;

use super::{
    Compression, Record, RecordSet, TimestampType, IEEE, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, NO_TIMESTAMP,
};

/// Bytes of a magic 0 message around its key and value:
/// offset 8 + size 4 + crc 4 + magic 1 + attributes 1 + key length 4 + value length 4.
pub const MESSAGE_OVERHEAD_V0: usize = 26;
/// Bytes of a magic 1 message around its key and value (v0 plus the timestamp).
pub const MESSAGE_OVERHEAD_V1: usize = MESSAGE_OVERHEAD_V0 + 8;
/// Bytes before `message_size` counts (offset and the size field itself).
pub const LOG_OVERHEAD: usize = 12;
/// Where the magic byte sits, as in a v2 batch.
pub const MAGIC_OFFSET: usize = 16;

const ATTR_COMPRESSION_MASK: i8 = 0x07;
const ATTR_LOG_APPEND_TIME: i8 = 0x08;

/// Bytes of one message holding `key` and `value` at `magic`.
pub fn message_size(magic: i8, key: Option<&[u8]>, value: Option<&[u8]>) -> usize {
    let overhead = if magic == 0 {
        MESSAGE_OVERHEAD_V0
    } else {
        MESSAGE_OVERHEAD_V1
    };
    overhead + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)
}

/// One message as framed, before its value is interpreted.
struct RawMessage {
    offset: i64,
    magic: i8,
    compression: Compression,
    timestamp_type: TimestampType,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A length-prefixed byte string at `*at` inside `body`; `-1` is null.
fn bytes_field(body: &Bytes, at: &mut usize, what: &str) -> Result<Option<Bytes>> {
    if body.len() < *at + 4 {
        bail!("message {what} length truncated");
    }
    let len = be_i32(body, *at);
    *at += 4;
    match len {
        -1 => Ok(None),
        n if n < -1 => bail!("message {what} length {n} is negative"),
        n => {
            let n = n as usize;
            if body.len() - *at < n {
                bail!(
                    "message {what} length {n} runs past the message ({} bytes left)",
                    body.len() - *at
                );
            }
            let v = body.slice(*at..*at + n);
            *at += n;
            Ok(Some(v))
        }
    }
}

/// The message at the start of `buf`, and the bytes it takes.
fn read_message(buf: &Bytes) -> Result<(RawMessage, usize)> {
    if buf.len() < LOG_OVERHEAD {
        bail!(
            "message set truncated: {} bytes, a message header needs {LOG_OVERHEAD}",
            buf.len()
        );
    }
    let offset = be_i64(buf, 0);
    let size = be_i32(buf, 8);
    let min = MESSAGE_OVERHEAD_V0 - LOG_OVERHEAD;
    if size < min as i32 {
        bail!("message size {size} is below the minimum {min}");
    }
    let size = size as usize;
    if buf.len() - LOG_OVERHEAD < size {
        bail!(
            "message truncated: size {size} but {} bytes follow",
            buf.len() - LOG_OVERHEAD
        );
    }
    let body = buf.slice(LOG_OVERHEAD..LOG_OVERHEAD + size);
    let supplied_crc = u32::from_be_bytes(body[0..4].try_into().expect("4 bytes"));
    let actual_crc = IEEE.checksum(&body[4..]);
    if supplied_crc != actual_crc {
        bail!("message CRC mismatch: stored {supplied_crc:#010x}, computed {actual_crc:#010x}");
    }
    let magic = body[4] as i8;
    let attributes = body[5] as i8;
    let compression = match attributes & ATTR_COMPRESSION_MASK {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        other => bail!("compression codec {other} is not valid for message format v{magic}"),
    };
    let mut at = 6;
    let (timestamp, timestamp_type) = match magic {
        0 => (NO_TIMESTAMP, TimestampType::Creation),
        1 => {
            if body.len() < at + 8 {
                bail!("message timestamp truncated");
            }
            let t = be_i64(&body, at);
            at += 8;
            let tt = if attributes & ATTR_LOG_APPEND_TIME != 0 {
                TimestampType::LogAppend
            } else {
                TimestampType::Creation
            };
            (t, tt)
        }
        m => bail!("message magic {m} is not a message set format (0 or 1)"),
    };
    let key = bytes_field(&body, &mut at, "key")?;
    let value = bytes_field(&body, &mut at, "value")?;
    if at != body.len() {
        bail!(
            "message size {size} leaves {} unread bytes after the value",
            body.len() - at
        );
    }
    Ok((
        RawMessage {
            offset,
            magic,
            compression,
            timestamp_type,
            timestamp,
            key,
            value,
        },
        LOG_OVERHEAD + size,
    ))
}

/// A record as a message set holds it: no producer, sequence, epoch or
/// headers.
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    timestamp_type: TimestampType,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type,
        offset,
        sequence: NO_SEQUENCE,
        timestamp,
        key,
        value,
        headers: IndexMap::new(),
    }
}

fn record(m: &RawMessage, offset: i64, timestamp: i64, timestamp_type: TimestampType) -> Record {
    plain_record(offset, timestamp, timestamp_type, m.key.clone(), m.value.clone())
}

/// Decode a whole message set (every message of magic 0 or 1) into
/// records with absolute offsets, unwrapping compressed wrappers through
/// `decompress(compressed, codec)`. The set's `version` is the magic of its
/// first message, `compression` that of its first wrapper (None if none).
pub fn decode_message_set<F>(buf: &Bytes, mut decompress: F) -> Result<RecordSet>
where
    F: FnMut(&Bytes, Compression) -> Result<Bytes>,
{
    if buf.is_empty() {
        bail!("empty message set");
    }
    let mut records = Vec::new();
    let mut version = None;
    let mut compression = Compression::None;
    let mut at = 0;
    while at < buf.len() {
        let (m, used) = read_message(&buf.slice(at..))?;
        at += used;
        version.get_or_insert(m.magic);
        if m.compression == Compression::None {
            records.push(record(&m, m.offset, m.timestamp, m.timestamp_type));
            continue;
        }
        if compression == Compression::None {
            compression = m.compression;
        }
        let compressed = m
            .value
            .as_ref()
            .ok_or_else(|| anyhow!("compressed message has a null value"))?;
        let inner_bytes = decompress(compressed, m.compression)?;
        let mut inner = Vec::new();
        let mut i = 0;
        while i < inner_bytes.len() {
            let (im, used) = read_message(&inner_bytes.slice(i..))?;
            i += used;
            if im.compression != Compression::None {
                bail!("compressed message holds a compressed message (nested compression)");
            }
            if im.magic != m.magic {
                bail!(
                    "compressed message of magic {} holds a message of magic {}",
                    m.magic,
                    im.magic
                );
            }
            inner.push(im);
        }
        let Some(last) = inner.last() else {
            bail!("compressed message holds no messages");
        };
        // Magic 1 inner offsets are relative; the wrapper's is the last
        // inner message's absolute offset. Magic 0 inner offsets are absolute.
        let last_rel = last.offset;
        for im in &inner {
            let offset = if m.magic == 1 {
                m.offset.wrapping_sub(last_rel).wrapping_add(im.offset)
            } else {
                im.offset
            };
            let (timestamp, tt) = if m.magic == 1 && m.timestamp_type == TimestampType::LogAppend
            {
                (m.timestamp, TimestampType::LogAppend)
            } else {
                (im.timestamp, im.timestamp_type)
            };
            records.push(record(im, offset, timestamp, tt));
        }
    }
    Ok(RecordSet {
        compression,
        version: version.expect("at least one message"),
        records,
    })
}

/// Write one message; `write_body` writes what follows the attributes.
fn put_message(
    out: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: i8,
    write_body: impl FnOnce(&mut BytesMut),
) -> Result<()> {
    out.put_i64(offset);
    let size_at = out.len();
    out.put_i32(0);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i8(magic);
    out.put_i8(attributes);
    write_body(out);
    let size = out.len() - crc_at;
    let size = i32::try_from(size).map_err(|_| anyhow!("message too large ({size} bytes)"))?;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    let crc = IEEE.checksum(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn put_bytes(out: &mut BytesMut, v: Option<&Bytes>) {
    match v {
        None => out.put_i32(-1),
        Some(b) => {
            out.put_i32(b.len() as i32);
            out.put_slice(b);
        }
    }
}

fn put_record(out: &mut BytesMut, r: &Record, offset: i64, magic: i8) -> Result<()> {
    if r.transactional || r.control {
        bail!("transactional and control records have no message set form");
    }
    let attributes = if magic == 1 && r.timestamp_type == TimestampType::LogAppend {
        ATTR_LOG_APPEND_TIME
    } else {
        0
    };
    put_message(out, offset, magic, attributes, |out| {
        if magic == 1 {
            out.put_i64(r.timestamp);
        }
        put_bytes(out, r.key.as_ref());
        put_bytes(out, r.value.as_ref());
    })
}

/// Append `records` to `out` as a message set of `magic` (0 or 1), each at
/// its own absolute offset. Headers have no place in a message set and are
/// dropped, as Kafka does when it converts down; magic 0 drops timestamps.
///
/// With `compression` other than None, the records go in one wrapper whose
/// value is `compress(inner message set, codec)` (inner offsets relative
/// for magic 1, absolute for magic 0, as Kafka writes them).
pub fn encode_message_set<F>(
    out: &mut BytesMut,
    records: &[Record],
    magic: i8,
    compression: Compression,
    mut compress: F,
) -> Result<()>
where
    F: FnMut(&[u8], Compression) -> Result<Bytes>,
{
    if !(0..=1).contains(&magic) {
        bail!("message sets have magic 0 or 1, not {magic}");
    }
    if compression == Compression::None {
        for r in records {
            put_record(out, r, r.offset, magic)?;
        }
        return Ok(());
    }
    if compression == Compression::Zstd {
        bail!("zstd is not valid for message format v{magic}");
    }
    let Some(last) = records.last() else {
        return Ok(());
    };
    let mut inner = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        let offset = if magic == 1 { i as i64 } else { r.offset };
        put_record(&mut inner, r, offset, magic)?;
    }
    let value = compress(&inner, compression)?;
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(NO_TIMESTAMP);
    put_message(out, last.offset, magic, compression as i8, |out| {
        if magic == 1 {
            out.put_i64(max_timestamp);
        }
        put_bytes(out, None);
        put_bytes(out, Some(&value));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, ts: i64, key: Option<&'static [u8]>, value: &'static [u8]) -> Record {
        plain_record(
            offset,
            ts,
            TimestampType::Creation,
            key.map(Bytes::from_static),
            Some(Bytes::from_static(value)),
        )
    }

    /// A stand-in codec for the tests: reverses the bytes.
    fn reverse(b: &[u8], _: Compression) -> Result<Bytes> {
        Ok(Bytes::from(b.iter().rev().copied().collect::<Vec<u8>>()))
    }

    fn unreverse(b: &Bytes, c: Compression) -> Result<Bytes> {
        reverse(b, c)
    }

    #[test]
    fn round_trips_both_magics_plain_and_wrapped() {
        let recs = vec![
            rec(10, 1000, Some(b"k1"), b"v1"),
            rec(11, 1001, None, b""),
            rec(12, 999, Some(b"k3"), b"v3"),
        ];
        for magic in [0i8, 1] {
            for c in [Compression::None, Compression::Gzip, Compression::Lz4] {
                let mut out = BytesMut::new();
                encode_message_set(&mut out, &recs, magic, c, reverse).unwrap();
                let set = decode_message_set(&out.freeze(), unreverse).unwrap();
                assert_eq!(set.version, magic);
                assert_eq!(set.compression, c);
                assert_eq!(set.records.len(), 3);
                for (a, b) in recs.iter().zip(&set.records) {
                    assert_eq!((a.offset, &a.key, &a.value), (b.offset, &b.key, &b.value));
                    let want_ts = if magic == 0 { NO_TIMESTAMP } else { a.timestamp };
                    assert_eq!(b.timestamp, want_ts, "magic {magic} {c:?}");
                }
            }
        }
    }

    #[test]
    fn refuses_bad_crc_lying_lengths_and_nesting() {
        let recs = vec![rec(0, 5, Some(b"key"), b"value")];
        let mut good = BytesMut::new();
        encode_message_set(&mut good, &recs, 1, Compression::None, reverse).unwrap();
        let good = good.freeze();
        assert!(decode_message_set(&good, unreverse).is_ok());
        // Any flipped byte after the CRC field fails the CRC.
        for i in 16..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x40;
            assert!(decode_message_set(&Bytes::from(bad), unreverse).is_err(), "byte {i}");
        }
        // Truncated anywhere.
        for n in 0..good.len() {
            assert!(decode_message_set(&good.slice(..n), unreverse).is_err(), "len {n}");
        }
        // A size that claims more than follows.
        let mut long = good.to_vec();
        long[8..12].copy_from_slice(&1000i32.to_be_bytes());
        assert!(decode_message_set(&Bytes::from(long), unreverse).is_err());
        // Nested compression: a wrapper inside a wrapper.
        let mut inner = BytesMut::new();
        encode_message_set(&mut inner, &recs, 1, Compression::Gzip, reverse).unwrap();
        let inner = inner.freeze();
        let mut outer = BytesMut::new();
        put_message(&mut outer, 0, 1, 1, |out| {
            out.put_i64(5);
            put_bytes(out, None);
            put_bytes(out, Some(&reverse(&inner, Compression::Gzip).unwrap()));
        })
        .unwrap();
        let err = decode_message_set(&outer.freeze(), unreverse).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }
}
