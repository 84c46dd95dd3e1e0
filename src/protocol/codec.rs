//! Primitive encodings: little-endian integers, strings (u16 length + UTF-8),
//! byte blobs (u32 length + bytes), with bounds checks on every read.

use super::DecodeError;
use bytes::{Buf, BufMut, BytesMut};

pub struct Reader {
    buf: BytesMut,
}

impl Reader {
    pub fn new(buf: BytesMut) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                what,
                need: n - self.buf.len(),
            });
        }
        Ok(())
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    pub fn i8(&mut self, what: &'static str) -> Result<i8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_i8())
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16_le())
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32_le())
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64_le())
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64_le())
    }

    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(what)? as usize;
        self.need(n, what)?;
        let b = self.buf.split_to(n);
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid {
            what,
            detail: "not UTF-8".into(),
        })
    }

    /// A u32-length blob, split off without copying.
    pub fn blob(&mut self, what: &'static str) -> Result<BytesMut, DecodeError> {
        let n = self.u32(what)? as usize;
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// A count of items each at least `min_item_bytes` long: refuses counts
    /// the remaining bytes cannot hold, so a hostile count cannot make us allocate.
    pub fn count(
        &mut self,
        what: &'static str,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        let max = self.buf.len() / min_item_bytes.max(1);
        if n > max {
            return Err(DecodeError::TooMany {
                what,
                count: n,
                max,
            });
        }
        Ok(n)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        if !self.buf.is_empty() {
            return Err(DecodeError::Trailing(self.buf.len()));
        }
        Ok(())
    }
}

pub fn put_str(b: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len().min(u16::MAX as usize);
    b.put_u16_le(n as u16);
    b.put_slice(&bytes[..n]);
}

/// A per-topic list of per-partition items, the shape of most bodies:
/// `u32 topic_count | { str topic | u32 item_count | item... }...`.
pub type TopicList<T> = Vec<(String, Vec<T>)>;

pub fn put_topics<T>(
    b: &mut BytesMut,
    topics: &[(String, Vec<T>)],
    mut item: impl FnMut(&mut BytesMut, &T),
) {
    b.put_u32_le(topics.len() as u32);
    for (name, items) in topics {
        put_str(b, name);
        b.put_u32_le(items.len() as u32);
        for i in items {
            item(b, i);
        }
    }
}

/// Decode a [`TopicList`]; `item_bytes_min` bounds the count against the
/// bytes present (see [`Reader::count`]).
pub fn get_topics<T>(
    r: &mut Reader,
    item_bytes_min: usize,
    mut item: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
) -> Result<TopicList<T>, DecodeError> {
    let nt = r.count("topics", 6)?;
    let mut topics = Vec::with_capacity(nt);
    for _ in 0..nt {
        let name = r.string("topic")?;
        let n = r.count("partitions", item_bytes_min)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(item(r)?);
        }
        topics.push((name, items));
    }
    Ok(topics)
}
