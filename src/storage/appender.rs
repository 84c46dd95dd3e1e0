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

use super::file::{Disk, IoBuf, SegmentFile, CHUNK_MIN_BYTES};

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
    /// Bytes appended at `buf_pos`: in `buf`, or in `carry` while `buf` is
    /// `None`.
    buf_len: usize,
    /// The partial last block after a sync point (fewer than `alignment`
    /// bytes), copied into the next buffer when the next frame comes.
    ///
    /// Why not that next buffer at once: a partition would then hold a
    /// chunk-sized buffer between its batches with a few bytes in it, and
    /// with 1,000 partitions each followed by a sync after every batch,
    /// those buffers were taken from the shard's pool all together, before
    /// the writes that give buffers back had ended: the pool ran dry, and
    /// the appender copied into fresh memory, faulting it in (8% of the
    /// broker's samples; 1,000 partitions held ~1 GB of nearly empty
    /// buffers). Allocated when data comes, a buffer comes back to the pool
    /// by the partition's next batch.
    carry: Vec<u8>,
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
    ) -> Self {
        assert!(chunk_bytes.is_multiple_of(alignment) && chunk_bytes >= alignment);
        let buf_pos = len - len % alignment as u64;
        assert_eq!(
            tail.len() as u64,
            len - buf_pos,
            "resume tail must be the partial block"
        );
        let mut carry = Vec::with_capacity(alignment);
        carry.extend_from_slice(tail);
        Appender {
            segment_base,
            chunk_bytes,
            alignment,
            buf: None,
            buf_pos,
            buf_len: tail.len(),
            carry,
        }
    }

    pub fn segment_base(&self) -> u64 {
        self.segment_base
    }

    /// Logical end of the segment: where the next frame goes.
    pub fn position(&self) -> u64 {
        self.buf_pos + self.buf_len as u64
    }

    /// The current buffer: a new one (holding the carried partial block,
    /// if any) when there is none.
    fn current<D: Disk>(&mut self, disk: &D) -> &mut B
    where
        D::File: SegmentFile<Buf = B>,
    {
        if self.buf.is_none() {
            assert_eq!(
                self.carry.len(),
                self.buf_len,
                "carry holds the partial block"
            );
            let mut b = disk.alloc_chunk(self.chunk_bytes);
            b.as_bytes_mut()[..self.carry.len()].copy_from_slice(&self.carry);
            self.carry.clear();
            self.buf = Some(b);
        }
        self.buf.as_mut().expect("just set")
    }

    /// Copy a frame in. Sealed chunks are pushed to `out`.
    pub fn append<D: Disk>(
        &mut self,
        frame: &[u8],
        base_offset: u64,
        next_offset: u64,
        disk: &D,
        out: &mut Vec<Chunk<B>>,
    ) where
        D::File: SegmentFile<Buf = B>,
    {
        let mut rest = frame;
        while !rest.is_empty() {
            let buf_len = self.buf_len;
            let buf = self.current(disk);
            // The buffer's own length is the chunk's: a recycled buffer may
            // be shorter than `chunk_bytes` (see `Disk::alloc_chunk`).
            let cap = buf.as_bytes().len();
            assert!(cap > buf_len, "a buffer longer than its partial block");
            let n = rest.len().min(cap - buf_len);
            // Non-temporal for large frames: only the disk reads this
            // buffer again (see `stream_copy`).
            super::stream_copy::copy_to_dma(
                &mut buf.as_bytes_mut()[buf_len..buf_len + n],
                &rest[..n],
            );
            self.buf_len += n;
            rest = &rest[n..];
            if self.buf_len == cap {
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
        let len = buf.as_bytes().len();
        assert!(
            len.is_multiple_of(self.alignment),
            "a chunk of whole blocks"
        );
        out.push(self.chunk_at(buf, end_offset));
        self.buf_pos += len as u64;
        self.buf_len = 0;
    }

    /// Seal everything appended so far for a sync. Whole blocks become a
    /// chunk in `out`; the partial last block is returned as a padded copy
    /// (with its position) that the flusher writes after the chunks, and
    /// is carried into the next buffer. The appender holds no buffer after
    /// a sync point (see `carry`).
    ///
    /// Fewer whole blocks than `CHUNK_MIN_BYTES` are copied into a buffer
    /// of their own, and the current buffer goes back to the disk's pool
    /// whole: trimmed that short it would be too short to keep (the pool
    /// takes no less), and one buffer per sync point was lost that way,
    /// to be replaced by fresh memory.
    pub fn sync_point<D: Disk>(
        &mut self,
        next_offset: u64,
        disk: &D,
        out: &mut Vec<Chunk<B>>,
    ) -> Option<(u64, B)>
    where
        D::File: SegmentFile<Buf = B>,
    {
        if self.buf_len == 0 {
            return None;
        }
        let whole = self.buf_len - self.buf_len % self.alignment;
        let partial = self.buf_len - whole;
        match self.buf.take() {
            Some(mut old) => {
                assert!(self.carry.is_empty());
                self.carry
                    .extend_from_slice(&old.as_bytes()[whole..self.buf_len]);
                if whole >= CHUNK_MIN_BYTES {
                    old.trim_to(whole);
                    out.push(self.chunk_at(old, next_offset));
                } else {
                    if whole > 0 {
                        let mut copy = disk.alloc(whole);
                        copy.as_bytes_mut()
                            .copy_from_slice(&old.as_bytes()[..whole]);
                        out.push(self.chunk_at(copy, next_offset));
                    }
                    disk.recycle(old);
                }
                self.buf_pos += whole as u64;
                self.buf_len = partial;
            }
            None => assert_eq!(whole, 0, "only a carried partial block without a buffer"),
        }
        if partial == 0 {
            return None;
        }
        let mut tail = disk.alloc(self.alignment);
        tail.as_bytes_mut()[..partial].copy_from_slice(&self.carry);
        tail.as_bytes_mut()[partial..].fill(0);
        Some((self.buf_pos, tail))
    }

    /// `buf` as the chunk at the current position.
    fn chunk_at(&self, buf: B, end_offset: u64) -> Chunk<B> {
        Chunk {
            segment_base: self.segment_base,
            pos: self.buf_pos,
            buf,
            end_offset,
        }
    }

    /// Seal the segment for a roll: everything becomes one last (padded)
    /// chunk; the appender then starts `new_base` at position 0.
    pub fn roll<D: Disk>(
        &mut self,
        new_base: u64,
        next_offset: u64,
        disk: &D,
        out: &mut Vec<Chunk<B>>,
    ) where
        D::File: SegmentFile<Buf = B>,
    {
        if self.buf_len > 0 {
            let padded = self.buf_len.div_ceil(self.alignment) * self.alignment;
            let mut buf = match self.buf.take() {
                Some(b) => b,
                None => {
                    // Only the carried partial block: one block to write.
                    let mut b = disk.alloc(self.alignment);
                    b.as_bytes_mut()[..self.carry.len()].copy_from_slice(&self.carry);
                    b
                }
            };
            buf.as_bytes_mut()[self.buf_len..padded].fill(0);
            buf.trim_to(padded);
            out.push(self.chunk_at(buf, next_offset));
        }
        self.buf = None;
        self.carry.clear();
        self.segment_base = new_base;
        self.buf_pos = 0;
        self.buf_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{SimBuf, SimDisk};

    #[test]
    fn chunks_cover_the_stream_and_the_tail_block_repeats_synced_bytes() {
        let disk = SimDisk::new(1);
        disk.exact_chunks();
        let mut a: Appender<SimBuf> = Appender::resume(0, 0, &[], 8192, 4096);
        let mut out = Vec::new();
        let mut image = vec![0u8; 0];
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        for i in 0..5u64 {
            a.append(&frame, i, i + 1, &disk, &mut out);
            image.extend_from_slice(&frame);
        }
        // 15000 bytes: one full 8 KiB chunk sealed.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].buf.as_bytes(), &image[..8192]);
        assert_eq!(out[0].end_offset, 2); // frame 2 straddles the boundary
        let tail = a.sync_point(5, &disk, &mut out).unwrap();
        // 15000 - 8192 = 6808: one whole block chunk + 2712 tail bytes.
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].pos, out[1].buf.as_bytes().len()), (8192, 4096));
        assert_eq!(out[1].buf.as_bytes(), &image[8192..12288]);
        assert_eq!(tail.0, 12288);
        assert_eq!(&tail.1.as_bytes()[..2712], &image[12288..]);
        assert!(tail.1.as_bytes()[2712..].iter().all(|b| *b == 0));
        // The one block was copied out; the 8 KiB buffer went back whole.
        assert_eq!(disk.recycled(), vec![8192]);
        a.append(&frame, 5, 6, &disk, &mut out);
        image.extend_from_slice(&frame);
        assert_eq!(a.position(), 18000);
        a.roll(6, 6, &disk, &mut out);
        let last = out.last().unwrap();
        assert_eq!(last.pos, 12288);
        assert_eq!(&last.buf.as_bytes()[..18000 - 12288], &image[12288..]);
        assert_eq!(a.position(), 0);
        assert_eq!(a.segment_base(), 6);
    }

    /// At least `CHUNK_MIN_BYTES` of whole blocks at a sync point go to
    /// disk in the buffer they were appended to (no copy), trimmed; the
    /// appender then holds no buffer, only the partial block, until the
    /// next frame.
    #[test]
    fn a_sync_point_hands_over_a_long_buffer_and_carries_the_partial_block() {
        let disk = SimDisk::new(1);
        disk.exact_chunks();
        let chunk = 4 * CHUNK_MIN_BYTES;
        let mut a: Appender<SimBuf> = Appender::resume(0, 0, &[], chunk, 4096);
        let mut out = Vec::new();
        let frame: Vec<u8> = (0..CHUNK_MIN_BYTES as u32 + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        a.append(&frame, 0, 1, &disk, &mut out);
        let (pos, tail) = a.sync_point(1, &disk, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].buf.as_bytes().len(),
            CHUNK_MIN_BYTES,
            "trimmed to its whole blocks"
        );
        assert_eq!(out[0].buf.as_bytes(), &frame[..CHUNK_MIN_BYTES]);
        assert!(
            disk.recycled().is_empty(),
            "nothing copied, nothing given back"
        );
        assert_eq!(
            (pos, &tail.as_bytes()[..100]),
            (CHUNK_MIN_BYTES as u64, &frame[CHUNK_MIN_BYTES..])
        );
        assert!(a.buf.is_none(), "no buffer held between batches");
        // The next frame's buffer starts with the carried bytes.
        a.append(&frame, 1, 2, &disk, &mut out);
        a.roll(2, 2, &disk, &mut out);
        let last = out.last().unwrap();
        assert_eq!(last.pos, CHUNK_MIN_BYTES as u64);
        assert_eq!(&last.buf.as_bytes()[..100], &frame[CHUNK_MIN_BYTES..]);
        assert_eq!(&last.buf.as_bytes()[100..100 + frame.len()], &frame[..]);
    }

    /// Buffers shorter than the chunk size (recycled ones: the sim hands
    /// out every other one shorter) make shorter chunks; the chunks still
    /// follow each other and hold the stream.
    #[test]
    fn buffers_of_any_whole_block_length_make_contiguous_chunks() {
        let disk = SimDisk::new(1);
        let mut a: Appender<SimBuf> = Appender::resume(0, 0, &[], 12 * 4096, 4096);
        let mut out = Vec::new();
        let mut image = Vec::new();
        for i in 0..60u64 {
            let frame: Vec<u8> = (0..1000 + 937 * i as u32)
                .map(|b| (b + i as u32) as u8)
                .collect();
            a.append(&frame, i, i + 1, &disk, &mut out);
            image.extend_from_slice(&frame);
            if i % 7 == 6 {
                if let Some((pos, tail)) = a.sync_point(i + 1, &disk, &mut out) {
                    let partial = image.len() - pos as usize;
                    assert_eq!(&tail.as_bytes()[..partial], &image[pos as usize..]);
                }
            }
        }
        a.roll(60, 60, &disk, &mut out);
        let mut pos = 0u64;
        let mut lens_seen = std::collections::BTreeSet::new();
        for c in &out {
            assert_eq!(c.pos, pos, "chunks follow each other");
            let len = c.buf.as_bytes().len();
            assert!(len > 0 && len % 4096 == 0, "whole blocks: {len}");
            let data_end = image.len().min(pos as usize + len);
            assert_eq!(
                &c.buf.as_bytes()[..data_end - pos as usize],
                &image[pos as usize..data_end]
            );
            lens_seen.insert(len);
            pos += len as u64;
        }
        assert!(
            pos as usize >= image.len(),
            "the chunks hold the whole stream"
        );
        assert!(
            lens_seen.len() > 2,
            "chunks of several lengths: {lens_seen:?}"
        );
    }
}
