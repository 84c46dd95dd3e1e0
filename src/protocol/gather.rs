//! A response assembled without copying large payloads: small fields are
//! written into owned buffers, large shared payloads (cached or freshly
//! read batches) are referenced as they are, and the connection writes the
//! parts in order.
//!
//! Why: building a Fetch answer by copying every batch into one response
//! buffer was 8% of a shard's CPU on the native fetch path (perf, max-rate
//! produce with a live consumer), and a copy of data the socket then copies
//! again. The connection writes the parts gathered, an `iovec` each
//! (`server::vectored`); payloads up to [`INLINE_MAX`] are still copied,
//! where the copy costs less than a part.
//!
//! Lifecycle: built by one request's handler on the connection's shard,
//! handed to the connection's writer as `Vec<Bytes>`; the shared parts keep
//! their batches alive until written.

use bytes::{Bytes, BytesMut};

/// Shared payloads up to this size are copied into the response instead of
/// being written as parts of their own. It was 16 KiB while each part was a
/// write of its own; gathered, a part costs an `iovec`, and copying a
/// 10 KB batch (100 B records) cost more than that (README, "Against the
/// disk").
pub const INLINE_MAX: usize = 512;

/// Parts of a response, in the order they are written.
#[derive(Debug, Default)]
pub struct Gather {
    done: Vec<Bytes>,
    /// The first owned part, kept mutable until [`Gather::finish`] so that a
    /// length prefix written first can be patched at the end.
    first: Option<BytesMut>,
    cur: BytesMut,
    len: usize,
}

impl Gather {
    pub fn with_capacity(n: usize) -> Gather {
        Gather {
            cur: BytesMut::with_capacity(n),
            ..Gather::default()
        }
    }

    /// The owned buffer that small fields are written into.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.cur
    }

    /// Append `payload`, copied if it is small, else referenced.
    pub fn shared(&mut self, payload: Bytes) {
        if payload.len() <= INLINE_MAX {
            self.cur.extend_from_slice(&payload);
            return;
        }
        self.seal_cur();
        self.len += payload.len();
        self.done.push(payload);
    }

    /// Bytes in the response so far.
    pub fn len(&self) -> usize {
        self.len + self.cur.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn seal_cur(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let part = self.cur.split();
        self.len += part.len();
        if self.first.is_none() && self.done.is_empty() {
            self.first = Some(part);
        } else {
            self.done.push(part.freeze());
        }
    }

    /// The parts, after `patch` has seen the first bytes of the response
    /// (at least the bytes written before the first shared part, or all of
    /// them) and the total length, to fill in a length prefix.
    pub fn finish(mut self, patch: impl FnOnce(&mut [u8], usize)) -> Vec<Bytes> {
        self.seal_cur();
        let total = self.len;
        let mut parts = Vec::with_capacity(self.done.len() + 1);
        if let Some(mut first) = self.first.take() {
            patch(&mut first, total);
            parts.push(first.freeze());
        }
        parts.append(&mut self.done);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), total);
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn concat(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn small_payloads_are_copied_large_ones_referenced() {
        let big = Bytes::from(vec![7u8; INLINE_MAX + 1]);
        let mut g = Gather::with_capacity(64);
        g.buf().put_u32(0); // length prefix, patched below
        g.buf().put_u8(1);
        g.shared(Bytes::from_static(b"small"));
        g.shared(big.clone());
        g.buf().put_u8(2);
        let parts = g.finish(|head, total| {
            head[..4].copy_from_slice(&((total - 4) as u32).to_be_bytes());
        });
        assert_eq!(parts.len(), 3, "head, the large payload, the tail");
        assert_eq!(
            parts[1].as_ptr(),
            big.as_ptr(),
            "the large payload is not copied"
        );
        let all = concat(&parts);
        assert_eq!(all.len(), 4 + 1 + 5 + big.len() + 1);
        assert_eq!(
            u32::from_be_bytes(all[..4].try_into().unwrap()) as usize,
            all.len() - 4
        );
        assert_eq!(&all[4..10], b"\x01small");
        assert_eq!(all[all.len() - 1], 2);
    }

    #[test]
    fn all_owned_is_one_part() {
        let mut g = Gather::with_capacity(8);
        g.buf().put_slice(b"abc");
        g.shared(Bytes::from_static(b"de"));
        let parts = g.finish(|head, total| {
            assert_eq!(total, 5);
            head[0] = b'A';
        });
        assert_eq!(parts.len(), 1);
        assert_eq!(&parts[0][..], b"Abcde");
    }
}
