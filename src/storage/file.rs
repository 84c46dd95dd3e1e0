//! The storage seam: the few file operations the log needs.
//!
//! Production implements them with glommio DMA files ([`super::dma`]):
//! O_DIRECT, aligned buffers, io_uring. Tests implement them in memory
//! ([`super::sim`]) with injected faults and simulated crashes. Everything
//! above this seam (appender, recovery, log) is generic over [`Disk`], so the
//! exact code that runs in production is what the fault tests exercise.
//!
//! All futures are executor-local (`!Send`): a file belongs to the shard
//! that opened it and never leaves that core.

use bytes::Bytes;
use std::io;
use std::path::Path;
use std::rc::Rc;

/// The shortest buffer [`Disk::alloc_chunk`] returns for a larger `max`:
/// shorter chunks would cost a write each for little data.
pub const CHUNK_MIN_BYTES: usize = 64 << 10;

/// An aligned, owned I/O buffer.
pub trait IoBuf: 'static {
    fn as_bytes(&self) -> &[u8];
    fn as_bytes_mut(&mut self) -> &mut [u8];
    /// Shrink the valid length (the allocation stays).
    fn trim_to(&mut self, len: usize);
}

/// One open file, read or read-write.
#[allow(async_fn_in_trait)]
pub trait SegmentFile: 'static {
    type Buf: IoBuf;
    /// Write `buf` at `pos`. `pos` and `buf.len()` are multiples of the disk
    /// alignment. Returns the bytes written, which may be fewer (a short write).
    /// The buffer is shared so that a failed write can be retried from it.
    async fn write_at(&self, buf: Rc<Self::Buf>, pos: u64) -> io::Result<usize>;
    /// Read up to `len` bytes at any `pos`; fewer at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// fdatasync.
    async fn sync(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    /// Reserve blocks so that the file is at least `len` bytes (the size
    /// grows to `len`; the new range reads as zeros). Writes into reserved
    /// space do not extend the file, which on ext4 keeps direct writes on the
    /// asynchronous io_uring path instead of a blocking worker thread.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Close the file now (dropping it closes it later, at the executor's
    /// next I/O cycle).
    async fn close(self) -> io::Result<()>;
}

/// A directory tree of files on one device.
#[allow(async_fn_in_trait)]
pub trait Disk: Clone + 'static {
    type File: SegmentFile;
    /// O_DIRECT alignment of positions and lengths, in bytes.
    fn alignment(&self) -> usize;
    /// An aligned buffer of `len` bytes (a multiple of the alignment). Its
    /// contents are unspecified: callers write every byte they send to disk.
    fn alloc(&self, len: usize) -> <Self::File as SegmentFile>::Buf;
    /// A buffer for the appender to fill: `max` bytes, or fewer (a
    /// recycled buffer). Its length is a multiple of the alignment, at
    /// least one block and at most `max` (production's pool never hands out
    /// fewer than `min(max, CHUNK_MIN_BYTES)`). The appender writes a chunk
    /// as long as the buffer it got.
    fn alloc_chunk(&self, max: usize) -> <Self::File as SegmentFile>::Buf {
        self.alloc(max)
    }
    /// Give a buffer back for reuse (allocating and faulting in fresh 1 MiB
    /// buffers showed up at ~10% of append time).
    fn recycle(&self, _buf: <Self::File as SegmentFile>::Buf) {}
    /// Open for reading and writing, creating it empty if missing. Never truncates.
    async fn open_rw(&self, path: &Path) -> io::Result<Self::File>;
    /// Open an existing file read-only.
    async fn open_ro(&self, path: &Path) -> io::Result<Self::File>;
    /// Unlink a file. Production unlinks off the shard's thread: freeing a
    /// large file's blocks (discarding them, on a file system mounted with
    /// `discard`) takes 100s of ms, and happens in the unlink when the
    /// file is no longer open.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// File names (not paths) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Make a directory's entries (new and removed files) durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Free bytes on the device holding `dir`, if known.
    fn free_bytes(&self, dir: &Path) -> Option<u64>;
}

/// True for the errors that mean "the device is full": retryable once space frees.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Write a whole small file (index, checkpoint) through the seam: padded to
/// the alignment, written, truncated to its exact length, synced.
pub async fn write_small_file<D: Disk>(disk: &D, path: &Path, data: &[u8]) -> io::Result<()> {
    let align = disk.alignment();
    let padded = data.len().div_ceil(align).max(1) * align;
    let mut buf = disk.alloc(padded);
    buf.as_bytes_mut()[..data.len()].copy_from_slice(data);
    buf.as_bytes_mut()[data.len()..].fill(0);
    let f = disk.open_rw(path).await?;
    let n = f.write_at(Rc::new(buf), 0).await?;
    if n < padded {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write of {n} of {padded} bytes to {}", path.display()),
        ));
    }
    f.truncate(data.len() as u64).await?;
    f.sync().await
}

/// Read a whole small file through the seam.
pub async fn read_small_file<D: Disk>(disk: &D, path: &Path) -> io::Result<Bytes> {
    let f = disk.open_ro(path).await?;
    let len = f.size().await? as usize;
    f.read_at(0, len).await
}
