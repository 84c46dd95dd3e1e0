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

struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn varlong(&mut self) -> Result<i64, RecordError> {
        let start = self.pos;
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(RecordError::Truncated(self.pos))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(RecordError::VarintOverflow(start));
            }
            z |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(RecordError::VarintOverflow(start))
    }

    fn take(&mut self, n: usize) -> Result<Bytes, RecordError> {
        if self.pos + n > self.buf.len() {
            return Err(RecordError::Truncated(self.pos));
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    fn opt_bytes(&mut self) -> Result<Option<Bytes>, RecordError> {
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
}

/// Decode every record in an (uncompressed) records section.
pub fn decode_all(buf: &Bytes) -> Result<Vec<Record>, RecordError> {
    let mut out = Vec::new();
    let mut c = Cursor { buf, pos: 0 };
    while c.pos < buf.len() {
        let at = c.pos;
        let len = c.varlong()?;
        if len < 0 || len > (buf.len() - c.pos) as i64 {
            return Err(RecordError::BadLength { len, at });
        }
        let end = c.pos + len as usize;
        let body = buf.slice(c.pos..end);
        let mut r = Cursor { buf: &body, pos: 0 };
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
        let mut headers = Vec::with_capacity(n_headers as usize);
        for _ in 0..n_headers {
            let k = r.opt_bytes()?.unwrap_or_default();
            let k = String::from_utf8(k.to_vec()).map_err(|_| RecordError::HeaderKeyUtf8)?;
            headers.push((k, r.opt_bytes()?));
        }
        out.push(Record {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers,
        });
        c.pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

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
}
