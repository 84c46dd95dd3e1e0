//! The appender: turns appended frames into aligned direct-I/O chunks.
//!
//! Contract ("appended" means exactly this): [`Appender::append`] copies the
//! frame into the current aligned buffer, in memory. Nothing is on disk yet.
//! A buffer that fills up is *sealed* into a [`Chunk`] for the flusher to
//! write. [`Appender::sync_point`] seals everything appended so far: the
//! whole blocks as a chunk, and the last partial block as a zero-padded
//! *tail* copy. Once the flusher has written the chunks and the tail and
//! synced the file, everything appended before the sync point is durable.
//!
//! The partial last block is written padded with zeros and rewritten later
//! with more data: the new buffer starts at that block, with its bytes
//! copied in, so every rewrite carries identical bytes for the part that was
//! already synced. (Recovery relies on this: see [`super::recovery`].)
//!
//! Owned by one partition's log; single-core.

use super::file::IoBuf;

/// A sealed run of whole blocks, ready to be written at `pos` of segment `segment_base`.
pub struct Chunk<B> {
    pub segment_base: u64,
    pub pos: u64,
    pub buf: B,
    /// Every offset below this is wholly contained in this chunk or earlier ones.
    pub end_offset: u64,
}

pub struct Appender<B> {
    segment_base: u64,
    chunk_bytes: usize,
    alignment: usize,
    /// Current buffer and where it lands in the segment file (aligned).
    buf: Option<B>,
    buf_pos: u64,
    buf_len: usize,
}

impl<B: IoBuf> Appender<B> {
    /// Resume appending segment `segment_base` at byte `len`. `tail` must
    /// hold the file's bytes from `align_down(len)` to `len`.
    pub fn resume(
        segment_base: u64,
        len: u64,
        tail: &[u8],
        chunk_bytes: usize,
        alignment: usize,
        alloc: impl FnOnce(usize) -> B,
    ) -> Self {
        assert!(chunk_bytes.is_multiple_of(alignment) && chunk_bytes >= alignment);
        let buf_pos = len - len % alignment as u64;
        assert_eq!(
            tail.len() as u64,
            len - buf_pos,
            "resume tail must be the partial block"
        );
        let mut a = Appender {
            segment_base,
            chunk_bytes,
            alignment,
            buf: None,
            buf_pos,
            buf_len: 0,
        };
        if !tail.is_empty() {
            let mut b = alloc(chunk_bytes);
            b.as_bytes_mut()[..tail.len()].copy_from_slice(tail);
            a.buf = Some(b);
            a.buf_len = tail.len();
        }
        a
    }

    pub fn segment_base(&self) -> u64 {
        self.segment_base
    }

    /// Logical end of the segment: where the next frame goes.
    pub fn position(&self) -> u64 {
        self.buf_pos + self.buf_len as u64
    }

    /// Copy a frame in. Sealed chunks are pushed to `out`.
    pub fn append(
        &mut self,
        frame: &[u8],
        base_offset: u64,
        next_offset: u64,
        alloc: &mut impl FnMut(usize) -> B,
        out: &mut Vec<Chunk<B>>,
    ) {
        let mut rest = frame;
        while !rest.is_empty() {
            let buf = self.buf.get_or_insert_with(|| alloc(self.chunk_bytes));
            let n = rest.len().min(self.chunk_bytes - self.buf_len);
            buf.as_bytes_mut()[self.buf_len..self.buf_len + n].copy_from_slice(&rest[..n]);
            self.buf_len += n;
            rest = &rest[n..];
            if self.buf_len == self.chunk_bytes {
                // The frame is wholly sealed only if nothing of it is left.
                let end = if rest.is_empty() {
                    next_offset
                } else {
                    base_offset
                };
                self.seal_full(end, out);
            }
        }
    }

    fn seal_full(&mut self, end_offset: u64, out: &mut Vec<Chunk<B>>) {
        let buf = self.buf.take().expect("sealing a missing buffer");
        out.push(Chunk {
            segment_base: self.segment_base,
            pos: self.buf_pos,
            buf,
            end_offset,
        });
        self.buf_pos += self.chunk_bytes as u64;
        self.buf_len = 0;
    }

    /// Seal everything appended so far for a sync. Whole blocks become a
    /// chunk in `out`; the partial last block is returned as a padded copy
    /// (with its position) that the flusher writes after the chunks.
    pub fn sync_point(
        &mut self,
        next_offset: u64,
        alloc: &mut impl FnMut(usize) -> B,
        out: &mut Vec<Chunk<B>>,
    ) -> Option<(u64, B)> {
        if self.buf_len == 0 {
            return None;
        }
        let whole = self.buf_len - self.buf_len % self.alignment;
        let partial = self.buf_len - whole;
        if whole > 0 {
            let mut old = self.buf.take().expect("buffer with data");
            if partial > 0 {
                let mut fresh = alloc(self.chunk_bytes);
                fresh.as_bytes_mut()[..partial]
                    .copy_from_slice(&old.as_bytes()[whole..self.buf_len]);
                self.buf = Some(fresh);
            }
            old.trim_to(whole);
            out.push(Chunk {
                segment_base: self.segment_base,
                pos: self.buf_pos,
                buf: old,
                end_offset: next_offset,
            });
            self.buf_pos += whole as u64;
            self.buf_len = partial;
        }
        if partial == 0 {
            return None;
        }
        let mut tail = alloc(self.alignment);
        let cur = self.buf.as_ref().expect("partial block buffer");
        tail.as_bytes_mut()[..partial].copy_from_slice(&cur.as_bytes()[..partial]);
        tail.as_bytes_mut()[partial..].fill(0);
        Some((self.buf_pos, tail))
    }

    /// Seal the segment for a roll: everything becomes one last (padded)
    /// chunk; the appender then starts `new_base` at position 0.
    pub fn roll(&mut self, new_base: u64, next_offset: u64, out: &mut Vec<Chunk<B>>) {
        if self.buf_len > 0 {
            let padded = self.buf_len.div_ceil(self.alignment) * self.alignment;
            let mut buf = self.buf.take().expect("buffer with data");
            buf.as_bytes_mut()[self.buf_len..padded].fill(0);
            buf.trim_to(padded);
            out.push(Chunk {
                segment_base: self.segment_base,
                pos: self.buf_pos,
                buf,
                end_offset: next_offset,
            });
        }
        self.buf = None;
        self.segment_base = new_base;
        self.buf_pos = 0;
        self.buf_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file::Disk;
    use crate::storage::sim::SimBuf;

    #[test]
    fn chunks_cover_the_stream_and_the_tail_block_repeats_synced_bytes() {
        let disk = crate::storage::sim::SimDisk::new(1);
        let mut alloc = |n| disk.alloc(n);
        let mut a: Appender<SimBuf> = Appender::resume(0, 0, &[], 8192, 4096, &mut alloc);
        let mut out = Vec::new();
        let mut image = vec![0u8; 0];
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        for i in 0..5u64 {
            a.append(&frame, i, i + 1, &mut alloc, &mut out);
            image.extend_from_slice(&frame);
        }
        // 15000 bytes: one full 8 KiB chunk sealed.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].buf.as_bytes(), &image[..8192]);
        assert_eq!(out[0].end_offset, 2); // frame 2 straddles the boundary
        let tail = a.sync_point(5, &mut alloc, &mut out).unwrap();
        // 15000 - 8192 = 6808: one whole block chunk + 2712 tail bytes.
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].pos, out[1].buf.as_bytes().len()), (8192, 4096));
        assert_eq!(tail.0, 12288);
        assert_eq!(&tail.1.as_bytes()[..2712], &image[12288..]);
        assert!(tail.1.as_bytes()[2712..].iter().all(|b| *b == 0));
        a.append(&frame, 5, 6, &mut alloc, &mut out);
        image.extend_from_slice(&frame);
        assert_eq!(a.position(), 18000);
        a.roll(6, 6, &mut out);
        let last = out.last().unwrap();
        assert_eq!(last.pos, 12288);
        assert_eq!(&last.buf.as_bytes()[..18000 - 12288], &image[12288..]);
        assert_eq!(a.position(), 0);
        assert_eq!(a.segment_base(), 6);
    }
}
