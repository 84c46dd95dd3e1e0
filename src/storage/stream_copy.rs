//! Copying a frame into a direct-I/O buffer with non-temporal stores.
//!
//! The appender's copy of each produced frame into its aligned write
//! buffer is the one copy the produce path makes (13% of the broker's
//! samples in the 1 KB acks=1 benchmark, separate broker, 4 partitions).
//! Only the disk's DMA reads that buffer again, never the CPU. A plain
//! `memcpy` (glibc's `rep movsb` below its non-temporal threshold, three
//! quarters of the last-level cache: hundreds of MiB on a server) reads
//! every destination line into the cache to write it, and fills the cache
//! with lines nobody reads; the likely cost (not measured apart) is the
//! frames the shard is about to send to consumers, evicted. Non-temporal
//! stores write whole lines to memory.
//!
//! Measured, both ways: alone (`cargo bench --bench appender -- copy`,
//! destination buffers that stay in the 480 MiB last-level cache of the
//! Xeon VM it ran on) the plain copy is faster, 10.6 against 8.5 GiB/s.
//! In the broker it is the other way: 5 interleaved pairs of the 1 KB
//! benchmark (separate broker, 4 partitions, 2 producers, 1 consumer)
//! produced 842-1,005 MiB/s (median 937) with the plain copy and 945-1,009
//! (median 988) with this one, at 0.46-0.52 against 0.53-0.54 broker
//! CPU s/GB where the consumer kept up.
//!
//! Called on the shard that owns the partition; no state.

/// Below this many bytes a plain copy: the stores' fence and the unaligned
/// head and tail cost more than they save, and a small frame's lines are
/// likely in cache anyway.
pub const STREAM_MIN_BYTES: usize = 16 << 10;

/// `dst.copy_from_slice(src)`, with non-temporal stores for the bulk of a
/// large copy on x86-64. Ends with a store fence, so the bytes are in
/// memory, in order, before the caller hands the buffer to the kernel.
pub fn copy_to_dma(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_to_dma: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= STREAM_MIN_BYTES {
        stream_x86_64(dst, src);
        return;
    }
    dst.copy_from_slice(src);
}

#[cfg(target_arch = "x86_64")]
fn stream_x86_64(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    let n = dst.len();
    // Plain stores up to the first 16-byte-aligned destination address.
    let head = dst.as_ptr().align_offset(16).min(n);
    dst[..head].copy_from_slice(&src[..head]);
    let lanes = (n - head) / 16;
    let body = lanes * 16;
    // SAFETY: SSE2 is part of the x86-64 baseline. `d` is 16-byte aligned
    // (`align_offset`) and `d..d + lanes` and `s..s + lanes` lie inside
    // `dst[head..head + body]` and `src[head..head + body]`, which do not
    // overlap (a `&mut` and a `&` slice). Loads are unaligned (`loadu`).
    unsafe {
        let d = dst.as_mut_ptr().add(head) as *mut __m128i;
        let s = src.as_ptr().add(head) as *const __m128i;
        // Four 16-byte stores per step, consecutive, so that the core's
        // write-combining buffers send whole lines to memory.
        let mut i = 0;
        while i + 4 <= lanes {
            let a = _mm_loadu_si128(s.add(i));
            let b = _mm_loadu_si128(s.add(i + 1));
            let c = _mm_loadu_si128(s.add(i + 2));
            let e = _mm_loadu_si128(s.add(i + 3));
            _mm_stream_si128(d.add(i), a);
            _mm_stream_si128(d.add(i + 1), b);
            _mm_stream_si128(d.add(i + 2), c);
            _mm_stream_si128(d.add(i + 3), e);
            i += 4;
        }
        while i < lanes {
            _mm_stream_si128(d.add(i), _mm_loadu_si128(s.add(i)));
            i += 1;
        }
        // Non-temporal stores are weakly ordered: fence them before the
        // plain tail stores and before anything that publishes the buffer.
        _mm_sfence();
    }
    dst[head + body..].copy_from_slice(&src[head + body..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the thresholds, at every destination and source
    /// misalignment: the copy is exact and touches nothing outside `dst`.
    #[test]
    fn it_copies_exactly_at_every_length_and_alignment() {
        let src: Vec<u8> = (0..(STREAM_MIN_BYTES + 300) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let mut dst = vec![0xEEu8; src.len() + 64];
        for len in [
            0,
            1,
            15,
            16,
            17,
            1000,
            STREAM_MIN_BYTES - 1,
            STREAM_MIN_BYTES,
            STREAM_MIN_BYTES + 1,
            STREAM_MIN_BYTES + 200,
        ] {
            for d_off in [0, 1, 7, 15, 16, 33] {
                for s_off in [0, 3, 16] {
                    let len = len.min(src.len() - s_off);
                    dst.fill(0xEE);
                    copy_to_dma(&mut dst[d_off..d_off + len], &src[s_off..s_off + len]);
                    assert_eq!(
                        &dst[d_off..d_off + len],
                        &src[s_off..s_off + len],
                        "len {len} d {d_off} s {s_off}"
                    );
                    assert!(
                        dst[..d_off].iter().all(|b| *b == 0xEE),
                        "before, len {len} d {d_off}"
                    );
                    assert!(
                        dst[d_off + len..].iter().all(|b| *b == 0xEE),
                        "after, len {len} d {d_off}"
                    );
                }
            }
        }
    }
}
