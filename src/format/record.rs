//! Kafka v2 record encoding, used inside batch payloads. No I/O.
//!
//! ```text
//! length        varint  bytes after this field
//! attributes    i8      unused, 0
//! timestampDelta varlong relative to the batch's base_timestamp
//! offsetDelta   varint  relative to the batch's base_offset
//! keyLength     varint  -1 for a null key
//! key           bytes
//! valueLength   varint  -1 for a null value
//! value         bytes
//! headerCount   varint
//!   headerKeyLength varint, headerKey utf8, headerValueLength varint (-1 null), headerValue
//! ```
//! Varints are zigzag-encoded, as in protobuf. The broker never decodes
//! records with this code (only clients and the CLI do); its ingress check
//! walks the same layout without decoding, in [`super::validate`].

use bytes::{BufMut, Bytes};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    #[error("varint too long at byte {0}")]
    VarintOverflow(usize),
    #[error("invalid length {len} at byte {at}")]
    BadLength { len: i64, at: usize },
    #[error("record header key is not UTF-8")]
    HeaderKeyUtf8,
}

/// One decoded record. Key, value and header values borrow from the
/// (decompressed) payload buffer through `Bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

pub fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_varlong(buf, v as i64)
}

pub fn put_varlong(buf: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

pub fn varlong_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Encoded size of a record body (everything after the length varint).
pub fn body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let opt_len = |b: Option<&[u8]>| match b {
        Some(b) => varlong_len(b.len() as i64) + b.len(),
        None => 1,
    };
    let mut n = 1 + varlong_len(timestamp_delta) + varlong_len(offset_delta as i64);
    n += opt_len(key) + opt_len(value);
    n += varlong_len(headers.len() as i64);
    for (k, v) in headers {
        n += varlong_len(k.len() as i64) + k.len() + opt_len(*v);
    }
    n
}

/// Append one record to `buf`.
pub fn encode(
    buf: &mut impl BufMut,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) {
    let len = body_len(timestamp_delta, offset_delta, key, value, headers);
    put_varlong(buf, len as i64);
    buf.put_u8(0);
    put_varlong(buf, timestamp_delta);
    put_varint(buf, offset_delta);
    let put_opt = |buf: &mut dyn BufMut, b: Option<&[u8]>| match b {
        Some(b) => {
            let mut tmp = [0u8; 10];
            let mut s = &mut tmp[..];
            put_varlong(&mut s, b.len() as i64);
            let used = 10 - s.len();
            buf.put_slice(&tmp[..used]);
            buf.put_slice(b);
        }
        None => buf.put_u8(1), // zigzag(-1)
    };
    put_opt(buf, key);
    put_opt(buf, value);
    put_varint(buf, headers.len() as i32);
    for (k, v) in headers {
        put_varint(buf, k.len() as i32);
        buf.put_slice(k.as_bytes());
        put_opt(buf, *v);
    }
}

/// Why a zigzag varlong could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarlongError {
    /// The buffer ended at this byte, inside the varint.
    Truncated(usize),
    /// Longer than 10 bytes, or bits beyond 64.
    Overflow,
}

/// A zigzag-encoded value back to the signed one.
#[inline(always)]
fn zigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Read the zigzag varlong at `buf[*pos..]` and move `pos` past it.
///
/// Values of one or two bytes (-8,192..=8,191) take branches of their own:
/// nearly every varint of a small record is one (a 100 B record's length,
/// value length and offset deltas past 63 take two), and the loop cost the
/// consumer 15-18% of its CPU with 100 B records (perf).
#[inline(always)]
pub fn decode_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, VarlongError> {
    match buf.get(*pos..*pos + 2) {
        Some(&[b0, _]) if b0 < 0x80 => {
            *pos += 1;
            Ok(zigzag(b0 as u64))
        }
        Some(&[b0, b1]) if b1 < 0x80 => {
            *pos += 2;
            Ok(zigzag((b0 & 0x7f) as u64 | (b1 as u64) << 7))
        }
        _ => decode_varlong_long(buf, pos).map(zigzag),
    }
}

#[inline(never)]
fn decode_varlong_long(buf: &[u8], pos: &mut usize) -> Result<u64, VarlongError> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos).ok_or(VarlongError::Truncated(*pos))?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(VarlongError::Overflow);
        }
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(z);
        }
    }
    Err(VarlongError::Overflow)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varlong(&mut self) -> Result<i64, RecordError> {
        let start = self.pos;
        decode_varlong(self.buf, &mut self.pos).map_err(|e| match e {
            VarlongError::Truncated(at) => RecordError::Truncated(at),
            VarlongError::Overflow => RecordError::VarintOverflow(start),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.pos + n > self.buf.len() {
            return Err(RecordError::Truncated(self.pos));
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let at = self.pos;
        let len = self.varlong()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || len > (self.buf.len() - self.pos) as i64 {
            return Err(RecordError::BadLength { len, at });
        }
        self.take(len as usize).map(Some)
    }

    /// A header: its key (checked to be UTF-8) and value.
    fn header(&mut self) -> Result<(&'a str, Option<&'a [u8]>), RecordError> {
        let k = self.opt_bytes()?.unwrap_or_default();
        let k = std::str::from_utf8(k).map_err(|_| RecordError::HeaderKeyUtf8)?;
        Ok((k, self.opt_bytes()?))
    }
}

/// One record, borrowed from the records section it was read from. Its
/// headers were checked when it was read; [`RecordRef::headers`] reads
/// them again only if asked.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: usize,
    /// The record's bytes from its first header to its end.
    header_bytes: &'a [u8],
}

impl<'a> RecordRef<'a> {
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let mut c = Cursor {
            buf: self.header_bytes,
            pos: 0,
        };
        (0..self.header_count).map(move |_| c.header().expect("checked by for_each_record"))
    }
}

/// Read every record in an (uncompressed) records section, in order,
/// without copying or allocating: `visit` sees each one borrowed from
/// `buf`. Why a walk rather than a `Vec<Record>`: a consumer of 100 B
/// records spent a third of its thread building records, their shared
/// buffers' reference counts and the vectors that held them (loadgen's
/// consumer reads each record's value once and drops it). Every record is
/// checked as [`decode_all`] checks it, before `visit` sees it.
pub fn for_each_record<'a>(
    buf: &'a [u8],
    mut visit: impl FnMut(RecordRef<'a>),
) -> Result<(), RecordError> {
    let mut c = Cursor { buf, pos: 0 };
    while c.pos < buf.len() {
        let at = c.pos;
        let len = c.varlong()?;
        if len < 0 || len > (buf.len() - c.pos) as i64 {
            return Err(RecordError::BadLength { len, at });
        }
        let end = c.pos + len as usize;
        let body = &buf[c.pos..end];
        let mut r = Cursor { buf: body, pos: 0 };
        let _attributes = r.take(1)?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varlong()? as i32;
        let key = r.opt_bytes()?;
        let value = r.opt_bytes()?;
        let n_headers = r.varlong()?;
        if n_headers < 0 || n_headers > body.len() as i64 {
            return Err(RecordError::BadLength {
                len: n_headers,
                at: at + r.pos,
            });
        }
        let header_bytes = &body[r.pos..];
        for _ in 0..n_headers {
            r.header()?;
        }
        visit(RecordRef {
            offset_delta,
            timestamp_delta,
            key,
            value,
            header_count: n_headers as usize,
            header_bytes,
        });
        c.pos = end;
    }
    Ok(())
}

/// Decode every record in an (uncompressed) records section into owned
/// records whose key, value and header values share `buf`.
pub fn decode_all(buf: &Bytes) -> Result<Vec<Record>, RecordError> {
    let mut out = Vec::new();
    for_each_record(buf, |r| out.push(Record::owned(buf, &r)))?;
    Ok(out)
}

impl Record {
    /// `r`, read from `buf`, as a record that shares `buf`'s memory.
    pub fn owned(buf: &Bytes, r: &RecordRef<'_>) -> Record {
        Record {
            offset_delta: r.offset_delta,
            timestamp_delta: r.timestamp_delta,
            key: r.key.map(|k| buf.slice_ref(k)),
            value: r.value.map(|v| buf.slice_ref(v)),
            headers: r
                .headers()
                .map(|(k, v)| (k.to_string(), v.map(|v| buf.slice_ref(v))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    /// The plain loop: what `decode_varlong`'s short paths must agree with.
    fn reference(buf: &[u8], pos: &mut usize) -> Result<i64, VarlongError> {
        decode_varlong_long(buf, pos).map(zigzag)
    }

    proptest! {
        #[test]
        fn varlongs_round_trip(v in any::<i64>(), small in -9000i64..9000) {
            for v in [v, small] {
                let mut b = BytesMut::new();
                put_varlong(&mut b, v);
                let mut pos = 0;
                prop_assert_eq!(decode_varlong(&b, &mut pos), Ok(v));
                prop_assert_eq!(pos, b.len());
            }
        }

        #[test]
        fn varlongs_decode_like_the_plain_loop(bytes in proptest::collection::vec(any::<u8>(), 0..12), at in 0usize..12) {
            let at = at.min(bytes.len());
            let (mut p1, mut p2) = (at, at);
            let (fast, slow) = (decode_varlong(&bytes, &mut p1), reference(&bytes, &mut p2));
            prop_assert_eq!(fast, slow);
            if fast.is_ok() {
                prop_assert_eq!(p1, p2);
            }
        }
    }

    #[test]
    fn round_trip() {
        let mut b = BytesMut::new();
        encode(
            &mut b,
            5,
            0,
            Some(b"k"),
            Some(b"value"),
            &[("h", Some(b"v"))],
        );
        encode(&mut b, -3, 1, None, None, &[]);
        encode(
            &mut b,
            1 << 40,
            2,
            Some(&[]),
            Some(&vec![7u8; 300]),
            &[("x", None)],
        );
        let recs = decode_all(&b.freeze()).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(recs[0].headers[0].1.as_deref(), Some(&b"v"[..]));
        assert_eq!(recs[1].timestamp_delta, -3);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[2].timestamp_delta, 1 << 40);
        assert_eq!(recs[2].value.as_ref().unwrap().len(), 300);
        assert_eq!(recs[2].headers[0], ("x".to_string(), None));
    }

    #[test]
    fn the_borrowed_walk_sees_what_decode_all_decodes() {
        let mut b = BytesMut::new();
        encode(
            &mut b,
            7,
            0,
            Some(b"key"),
            Some(b"v1"),
            &[("a", Some(b"1")), ("b", None)],
        );
        encode(&mut b, 8, 1, None, Some(b""), &[]);
        let buf = b.freeze();
        let owned = decode_all(&buf).unwrap();
        let mut seen = Vec::new();
        for_each_record(&buf, |r| {
            let headers: Vec<(String, Option<Vec<u8>>)> = r
                .headers()
                .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                .collect();
            seen.push((
                r.offset_delta,
                r.timestamp_delta,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
                headers,
            ));
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        for (o, s) in owned.iter().zip(&seen) {
            assert_eq!(o.offset_delta, s.0);
            assert_eq!(o.timestamp_delta, s.1);
            assert_eq!(o.key.as_deref(), s.2.as_deref());
            assert_eq!(o.value.as_deref(), s.3.as_deref());
            let oh: Vec<(String, Option<Vec<u8>>)> = o
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_deref().map(<[u8]>::to_vec)))
                .collect();
            assert_eq!(oh, s.4);
        }
        assert_eq!(
            seen[0].4,
            vec![
                ("a".to_string(), Some(b"1".to_vec())),
                ("b".to_string(), None)
            ]
        );
    }

    #[test]
    fn a_header_key_that_is_not_utf8_is_refused_before_the_record_is_seen() {
        let mut b = BytesMut::new();
        encode(&mut b, 0, 0, None, Some(b"ok"), &[]);
        let good = b.len();
        encode(&mut b, 0, 1, None, Some(b"x"), &[("k", None)]);
        // The second record's only header key is the byte before its
        // value length (-1, a null value): make it invalid UTF-8.
        let at = b.len() - 2;
        assert_eq!(b[at], b'k');
        b[at] = 0xff;
        let buf = b.freeze();
        let mut visited = 0;
        let r = for_each_record(&buf, |_| visited += 1);
        assert_eq!(r.unwrap_err(), RecordError::HeaderKeyUtf8);
        // The first record was whole; the second never reached the visitor.
        assert_eq!(visited, 1);
        assert!(good < buf.len());
        assert_eq!(decode_all(&buf).unwrap_err(), RecordError::HeaderKeyUtf8);
    }
}
