//! Compression codecs, with Kafka's wire conventions. No I/O.
//!
//! Compression happens in clients, per batch; the broker stores and serves
//! compressed payloads untouched. The encodings match what Kafka clients
//! expect inside a v2 batch:
//! - gzip: a gzip member (RFC 1952);
//! - snappy: xerial framing (what the Java client writes); raw snappy is
//!   also accepted when decompressing (what librdkafka may write);
//! - lz4: the LZ4 frame format with independent 64 KiB blocks;
//! - zstd: a zstd frame.

use std::io::{Read, Write};

/// A batch compression codec; the value is Kafka's attribute code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown compression codec id {0}")]
    UnknownId(u8),
    #[error("unknown compression codec '{0}' (expected none, gzip, snappy, lz4 or zstd)")]
    UnknownName(String),
    #[error("{codec:?} decompression failed: {detail}")]
    Corrupt { codec: Compression, detail: String },
    #[error("decompressed size exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

pub const ALL: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

thread_local! {
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// One zstd decompression context per thread. Creating one per batch
    /// (as `zstd::stream::read::Decoder` does, with a 128 KiB read buffer)
    /// costs more than decoding a small batch.
    static ZSTD_D: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_BLOCK: usize = 32 * 1024;

impl Compression {
    pub fn from_id(id: u8) -> Result<Self, CodecError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(CodecError::UnknownId(other)),
        })
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compress `input`, appending to `out`.
    pub fn compress_into(self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Compression::None => out.extend_from_slice(input),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                enc.write_all(input).expect("writing to a Vec cannot fail");
                enc.finish().expect("writing to a Vec cannot fail");
            }
            Compression::Snappy => {
                out.extend_from_slice(&XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut enc = snap::raw::Encoder::new();
                for chunk in input.chunks(XERIAL_BLOCK) {
                    let len_at = out.len();
                    out.extend_from_slice(&[0u8; 4]);
                    let start = out.len();
                    out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
                    let n = enc
                        .compress(chunk, &mut out[start..])
                        .expect("snappy output buffer is sized by max_compress_len");
                    out.truncate(start + n);
                    out[len_at..len_at + 4].copy_from_slice(&(n as i32).to_be_bytes());
                }
            }
            Compression::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                enc.write_all(input).expect("writing to a Vec cannot fail");
                enc.finish().expect("writing to a Vec cannot fail");
            }
            Compression::Zstd => {
                // One compression context per thread: creating a context per
                // batch made small zstd batches cost a core in the client.
                ZSTD.with(|c| {
                    let mut c = c.borrow_mut();
                    let comp = c.get_or_insert_with(|| {
                        zstd::bulk::Compressor::new(1).expect("zstd context with a valid level")
                    });
                    out.reserve(zstd::zstd_safe::compress_bound(input.len()));
                    comp.compress_to_buffer(input, out)
                        .expect("the buffer is sized by compress_bound");
                });
            }
        }
    }

    pub fn compress(self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        self.compress_into(input, &mut out);
        out
    }

    /// Decompress `input`, refusing output beyond `limit` bytes (a
    /// decompression bomb must not take the process's memory).
    pub fn decompress(self, input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
        let corrupt = |e: &dyn std::fmt::Display| CodecError::Corrupt {
            codec: self,
            detail: e.to_string(),
        };
        let mut out = Vec::new();
        match self {
            Compression::None => {
                if input.len() > limit {
                    return Err(CodecError::TooLarge { limit });
                }
                out.extend_from_slice(input);
            }
            Compression::Gzip => {
                read_limited(flate2::read::MultiGzDecoder::new(input), limit, &mut out)
                    .map_err(|e| corrupt(&e))??;
            }
            Compression::Snappy => {
                if input.len() >= 16 && input[..8] == XERIAL_MAGIC {
                    let mut rest = &input[16..];
                    let mut dec = snap::raw::Decoder::new();
                    while !rest.is_empty() {
                        if rest.len() < 4 {
                            return Err(corrupt(&"truncated xerial block length"));
                        }
                        let n = i32::from_be_bytes(rest[..4].try_into().unwrap());
                        if n < 0 || rest.len() < 4 + n as usize {
                            return Err(corrupt(&"truncated xerial block"));
                        }
                        let block = &rest[4..4 + n as usize];
                        let ulen = snap::raw::decompress_len(block).map_err(|e| corrupt(&e))?;
                        if out.len() + ulen > limit {
                            return Err(CodecError::TooLarge { limit });
                        }
                        let start = out.len();
                        out.resize(start + ulen, 0);
                        dec.decompress(block, &mut out[start..])
                            .map_err(|e| corrupt(&e))?;
                        rest = &rest[4 + n as usize..];
                    }
                } else {
                    let ulen = snap::raw::decompress_len(input).map_err(|e| corrupt(&e))?;
                    if ulen > limit {
                        return Err(CodecError::TooLarge { limit });
                    }
                    out = snap::raw::Decoder::new()
                        .decompress_vec(input)
                        .map_err(|e| corrupt(&e))?;
                }
            }
            Compression::Lz4 => {
                read_limited(lz4_flex::frame::FrameDecoder::new(input), limit, &mut out)
                    .map_err(|e| corrupt(&e))??;
            }
            Compression::Zstd => zstd_decompress(input, limit, &mut out)?,
        }
        Ok(out)
    }
}

/// Why a streaming decompression stopped: the codec refused the input, or
/// the sink that consumes the output did.
#[derive(Debug)]
pub enum StreamError<E> {
    Codec(CodecError),
    Sink(E),
}

/// Where [`Compression::decompress_streaming`] hands its output pieces.
type Emit<'a, E> = dyn FnMut(&[u8]) -> Result<(), StreamError<E>> + 'a;

/// Output piece size of [`Compression::decompress_streaming`]: the fixed
/// scratch the output passes through (per thread, reused).
pub const STREAM_SCRATCH_BYTES: usize = 64 << 10;

/// Largest zstd window the streaming decoder accepts (2^25 = 32 MiB). A
/// zstd frame names its window size and the decoder allocates it, so a
/// hostile frame could otherwise make each shard hold 128 MiB (zstd's
/// default limit). Kafka clients use levels whose window is at most
/// 2^23 (levels 1-19), or 2^25 at level 20; levels 21-22 (windows of
/// 64-128 MiB) are refused.
pub const STREAM_ZSTD_WINDOW_LOG_MAX: u32 = 25;

thread_local! {
    static STREAM_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The streaming validator's own zstd context (with a window limit),
    /// apart from the client's [`ZSTD_D`].
    static ZSTD_STREAM: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

impl Compression {
    /// Decompress `input` in one streaming pass, handing the output to
    /// `sink` piece by piece (pieces of at most [`STREAM_SCRATCH_BYTES`],
    /// in order) and keeping none of it. Output beyond `limit` bytes is
    /// refused as soon as it appears, so a decompression bomb costs at
    /// most `limit` bytes of work and no memory in proportion to it.
    /// Returns the total decompressed size.
    ///
    /// Memory: a 64 KiB scratch per thread; gzip and lz4 decoders keep
    /// their own window (32 KiB; at most 2 x 4 MiB for lz4's largest block
    /// size); zstd at most a 2^[`STREAM_ZSTD_WINDOW_LOG_MAX`] window.
    /// Snappy blocks are decoded whole (the format allows back-references
    /// anywhere in a block): a block of at most 64 KiB (xerial framing
    /// writes 32 KiB) uses the scratch, a larger one (raw snappy, one block
    /// per batch) a zeroed allocation of its declared size, refused above
    /// `limit`, whose pages the kernel only commits as the decoder writes them.
    pub fn decompress_streaming<E>(
        self,
        input: &[u8],
        limit: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, StreamError<E>> {
        STREAM_SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            if scratch.len() != STREAM_SCRATCH_BYTES {
                scratch.resize(STREAM_SCRATCH_BYTES, 0);
            }
            let mut total = 0u64;
            let mut emit = |piece: &[u8]| -> Result<(), StreamError<E>> {
                total += piece.len() as u64;
                if total > limit as u64 {
                    return Err(StreamError::Codec(CodecError::TooLarge { limit }));
                }
                sink(piece).map_err(StreamError::Sink)
            };
            let corrupt = |e: &dyn std::fmt::Display| {
                StreamError::Codec(CodecError::Corrupt {
                    codec: self,
                    detail: e.to_string(),
                })
            };
            match self {
                Compression::None => {
                    for piece in input.chunks(STREAM_SCRATCH_BYTES) {
                        emit(piece)?;
                    }
                }
                Compression::Gzip => {
                    let mut dec = flate2::read::MultiGzDecoder::new(input);
                    read_pieces(&mut dec, &mut scratch, &mut emit, &corrupt)?;
                }
                Compression::Lz4 => {
                    let mut dec = lz4_flex::frame::FrameDecoder::new(input);
                    read_pieces(&mut dec, &mut scratch, &mut emit, &corrupt)?;
                }
                Compression::Snappy => {
                    let mut dec = snap::raw::Decoder::new();
                    let mut block = |b: &[u8]| -> Result<(), StreamError<E>> {
                        let ulen = snap::raw::decompress_len(b).map_err(|e| corrupt(&e))?;
                        if ulen > limit {
                            return Err(StreamError::Codec(CodecError::TooLarge { limit }));
                        }
                        if ulen <= scratch.len() {
                            let n = dec
                                .decompress(b, &mut scratch[..ulen])
                                .map_err(|e| corrupt(&e))?;
                            emit(&scratch[..n])
                        } else {
                            // calloc: pages are committed only as written.
                            let mut big = vec![0u8; ulen];
                            let n = dec.decompress(b, &mut big).map_err(|e| corrupt(&e))?;
                            emit(&big[..n])
                        }
                    };
                    if input.len() >= 16 && input[..8] == XERIAL_MAGIC {
                        let mut rest = &input[16..];
                        while !rest.is_empty() {
                            if rest.len() < 4 {
                                return Err(corrupt(&"truncated xerial block length"));
                            }
                            let n = i32::from_be_bytes(rest[..4].try_into().unwrap());
                            if n < 0 || rest.len() < 4 + n as usize {
                                return Err(corrupt(&"truncated xerial block"));
                            }
                            block(&rest[4..4 + n as usize])?;
                            rest = &rest[4 + n as usize..];
                        }
                    } else {
                        block(input)?;
                    }
                }
                Compression::Zstd => zstd_stream(input, &mut scratch, &mut emit)?,
            }
            Ok(total)
        })
    }
}

/// Pump a `Read` decoder through the scratch into `emit`.
fn read_pieces<R: Read, E>(
    dec: &mut R,
    scratch: &mut [u8],
    emit: &mut Emit<'_, E>,
    corrupt: &dyn Fn(&dyn std::fmt::Display) -> StreamError<E>,
) -> Result<(), StreamError<E>> {
    loop {
        match dec.read(scratch) {
            Ok(0) => return Ok(()),
            Ok(n) => emit(&scratch[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(&e)),
        }
    }
}

/// Stream one or more concatenated zstd frames through `scratch`.
fn zstd_stream<E>(
    input: &[u8],
    scratch: &mut [u8],
    emit: &mut Emit<'_, E>,
) -> Result<(), StreamError<E>> {
    use zstd::zstd_safe::{get_error_name, DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};
    let corrupt = |detail: String| {
        StreamError::Codec(CodecError::Corrupt {
            codec: Compression::Zstd,
            detail,
        })
    };
    let code = |c: usize| corrupt(get_error_name(c).to_string());
    if input.is_empty() {
        return Ok(());
    }
    ZSTD_STREAM.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let mut d = DCtx::create();
            d.set_parameter(DParameter::WindowLogMax(STREAM_ZSTD_WINDOW_LOG_MAX))
                .map_err(code)?;
            *cell = Some(d);
        }
        let dctx = cell.as_mut().expect("created above");
        // The previous call may have stopped mid-frame (corrupt input, limit).
        dctx.reset(ResetDirective::SessionOnly).map_err(code)?;
        let mut src = InBuffer::around(input);
        loop {
            let in_before = src.pos();
            let (hint, produced) = {
                let mut dst = OutBuffer::around(&mut *scratch);
                let hint = dctx.decompress_stream(&mut dst, &mut src).map_err(code)?;
                (hint, dst.pos())
            };
            if produced > 0 {
                emit(&scratch[..produced])?;
            }
            let input_done = src.pos() == input.len();
            if hint == 0 && input_done {
                // The last frame is complete and flushed.
                return Ok(());
            }
            // Room left in the output and nothing more to read: the input
            // ends mid-frame. (No progress at all would loop forever.)
            if (input_done && produced < scratch.len()) || (produced == 0 && src.pos() == in_before)
            {
                return Err(corrupt("truncated zstd frame".to_string()));
            }
        }
    })
}

/// Decompress one or more concatenated zstd frames into `out`, with the
/// thread's reused context, refusing output beyond `limit` bytes.
fn zstd_decompress(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    use zstd::zstd_safe::{get_error_name, DCtx, InBuffer, OutBuffer, ResetDirective};
    let corrupt = |code: usize| CodecError::Corrupt {
        codec: Compression::Zstd,
        detail: get_error_name(code).to_string(),
    };
    if input.is_empty() {
        // No frame at all: nothing, as zstd's own stream reader answers.
        return Ok(());
    }
    ZSTD_D.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dctx = cell.get_or_insert_with(DCtx::create);
        // The previous call may have stopped mid-frame (corrupt input, limit).
        dctx.reset(ResetDirective::SessionOnly).map_err(corrupt)?;
        let mut src = InBuffer::around(input);
        loop {
            // Room for one byte past the limit: producing it proves a bomb.
            if out.len() > limit {
                return Err(CodecError::TooLarge { limit });
            }
            if out.len() == out.capacity() {
                let room = (limit + 1 - out.len()).min(out.len().max(16 << 10));
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (src.pos(), out.len());
            let hint = {
                let mut dst = OutBuffer::around_pos(out, out_before);
                dctx.decompress_stream(&mut dst, &mut src)
                    .map_err(corrupt)?
            };
            let input_done = src.pos() == input.len();
            if hint == 0 && input_done {
                // The last frame is complete and flushed.
                break;
            }
            if src.pos() == in_before && out.len() == out_before && out.len() < out.capacity() {
                // Output space and no progress: the input ends mid-frame.
                return Err(CodecError::Corrupt {
                    codec: Compression::Zstd,
                    detail: "truncated zstd frame".to_string(),
                });
            }
        }
        if out.len() > limit {
            return Err(CodecError::TooLarge { limit });
        }
        Ok(())
    })
}

fn read_limited<R: Read>(
    r: R,
    limit: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<Result<(), CodecError>> {
    let mut taken = r.take(limit as u64 + 1);
    taken.read_to_end(out)?;
    if out.len() > limit {
        return Ok(Err(CodecError::TooLarge { limit }));
    }
    Ok(Ok(()))
}

impl std::str::FromStr for Compression {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| CodecError::UnknownName(s.to_string()))
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let z = c.compress(&input);
            assert_eq!(c.decompress(&z, input.len()).unwrap(), input, "{c}");
            assert!(matches!(
                c.decompress(&z, input.len() - 1),
                Err(CodecError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn zstd_reuses_its_context_across_frames_errors_and_limits() {
        let a = b"first frame ".repeat(500);
        let b = b"second frame ".repeat(700);
        let (za, zb) = (
            Compression::Zstd.compress(&a),
            Compression::Zstd.compress(&b),
        );
        // Concatenated frames decode to the concatenated inputs.
        let both = [za.clone(), zb.clone()].concat();
        assert_eq!(
            Compression::Zstd.decompress(&both, 1 << 20).unwrap(),
            [a.clone(), b.clone()].concat()
        );
        // A truncated frame, garbage and a bomb are refused, and the
        // context then decodes a good frame as if nothing happened.
        for bad in [&za[..za.len() / 2], &b"not zstd at all"[..]] {
            assert!(matches!(
                Compression::Zstd.decompress(bad, 1 << 20),
                Err(CodecError::Corrupt { .. })
            ));
            assert_eq!(Compression::Zstd.decompress(&zb, 1 << 20).unwrap(), b);
        }
        let bomb = Compression::Zstd.compress(&vec![0u8; 4 << 20]);
        assert!(matches!(
            Compression::Zstd.decompress(&bomb, 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
        assert_eq!(Compression::Zstd.decompress(&za, a.len()).unwrap(), a);
        assert_eq!(Compression::Zstd.decompress(&[], 10).unwrap(), b"");
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let input = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(
            Compression::Snappy.decompress(&raw, 1 << 20).unwrap(),
            input
        );
    }
}
