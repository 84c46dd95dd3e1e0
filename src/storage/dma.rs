//! Production storage: glommio DMA files (O_DIRECT, io_uring).
//!
//! Lives on one shard: a `DmaDisk` and every file it opens are used only by
//! the executor that created them.

use super::file::{Disk, IoBuf, SegmentFile, CHUNK_MIN_BYTES};
use crate::config::DirectIoAlignment;
use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

impl IoBuf for DmaBuffer {
    fn as_bytes(&self) -> &[u8] {
        DmaBuffer::as_bytes(self)
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        DmaBuffer::as_bytes_mut(self)
    }
    fn trim_to(&mut self, len: usize) {
        self.trim_to_size(len)
    }
}

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

/// A DMA file.
pub struct DmaSegmentFile {
    file: DmaFile,
}

impl SegmentFile for DmaSegmentFile {
    type Buf = DmaBuffer;

    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        self.file.write_rc_at(buf, pos).await.map_err(to_io)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        // One copy: a ReadResult is executor-local, and fetch results may
        // travel to another shard. Up to half a chunk goes as one read:
        // glommio widens it to alignment, and its buddy allocator rounds
        // that up to at most one chunk's size.
        if len <= READ_CHUNK_BYTES / 2 {
            let r = self.file.read_at(pos, len).await.map_err(to_io)?;
            return Ok(Bytes::copy_from_slice(&r));
        }
        // A large read goes in aligned chunks of READ_CHUNK_BYTES, one at a
        // time, so that a chunk's buffer can come from the executor's
        // registered I/O memory (`io_memory_bytes`: faulted in once, read
        // with READ_FIXED) when some is free, and is otherwise a 4 MiB heap
        // block, rather than a fresh 16 MiB one per fetch of a partition.
        // Faulting those in (a huge page zeroed per 2 MiB) was about 7% of
        // a shard thread reading from disk, with as much again for the
        // copy's destination (issue 14). Measured with the registered
        // memory left to reads: broker CPU per GB 0.585 -> 0.554 s in a
        // run where the consumer read from disk (3 runs each).
        let end = pos + len as u64;
        let mut out = bytes::BytesMut::with_capacity(len);
        let mut at = self.file.align_down(pos);
        while at < end {
            let want = (self.file.align_up(end) - at).min(READ_CHUNK_BYTES as u64) as usize;
            let r = self.file.read_at_aligned(at, want).await.map_err(to_io)?;
            let from = (pos.max(at) - at) as usize;
            let to = (end.min(at + r.len() as u64) - at) as usize;
            if from < to {
                out.extend_from_slice(&r[from..to]);
            }
            if r.len() < want {
                break; // end of file
            }
            at += want as u64;
        }
        Ok(out.freeze())
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, false).await.map_err(to_io)
    }

    async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(to_io)
    }
}

/// The data directory's device, seen through glommio, with a pool of
/// write buffers. Shard-local: the pool is shared by the shard's partitions.
#[derive(Clone)]
pub struct DmaDisk {
    alignment: usize,
    pool: Rc<RefCell<Vec<DmaBuffer>>>,
}

/// The largest single disk read: a quarter of the default registered I/O
/// memory per shard (`io_memory_bytes`, 16 MiB), so that what pooled write
/// buffers leave of it can serve a chunk. A power of two: glommio's buddy
/// allocator rounds up to one.
pub const READ_CHUNK_BYTES: usize = 4 << 20;

/// Buffers kept for reuse per shard (of the most common size: full chunks).
/// The pool's size lives in config so the memory bound can count it.
const POOL_BUFFERS_MAX: usize = crate::config::WRITE_POOL_BUFFERS;

impl DmaDisk {
    /// `alignment` is the O_DIRECT alignment learnt from the probe file.
    pub fn new(alignment: usize) -> Self {
        assert!(alignment.is_power_of_two() && alignment >= 512);
        DmaDisk {
            alignment,
            pool: Rc::new(RefCell::new(Vec::new())),
        }
    }
}

impl Disk for DmaDisk {
    type File = DmaSegmentFile;

    fn alignment(&self) -> usize {
        self.alignment
    }

    fn alloc(&self, len: usize) -> DmaBuffer {
        assert!(len.is_multiple_of(self.alignment));
        let mut pool = self.pool.borrow_mut();
        if let Some(i) = pool.iter().position(|b| b.len() == len) {
            return pool.swap_remove(i);
        }
        // From the executor's registered I/O memory while it lasts (then
        // the heap). Pooled write buffers hold it for good, so large disk
        // reads mostly get heap buffers (see `DmaSegmentFile::read_at`).
        // Tried: write buffers always from the heap, leaving that memory
        // to reads. The defaults' acks=1 flood then peaked at 2,463 MiB
        // against its 2,465 MiB bound; with this, 2,334: the bound counts
        // both the pool and the registered memory, so pooled buffers that
        // take heap as well spend its margin.
        glommio::allocate_dma_buffer(len)
    }

    /// A pooled buffer of `max` bytes if there is one, else the longest
    /// pooled one (trimmed to `max` if longer), else a new one.
    ///
    /// Why not only `max`: a sync point hands the appender's buffer over
    /// trimmed to its whole blocks, and a trimmed buffer cannot grow back.
    /// With an exact-length pool those came back, filled the pool and were
    /// never used again, so chunks were fresh memory, faulted in as the
    /// appender copied into it: with 1,000 partitions (a sync point after
    /// nearly every batch) the appender's page faults were 8% of the
    /// broker's samples (124 of 1,552 in 3 s), against 10 of 1,344 with 4.
    fn alloc_chunk(&self, max: usize) -> DmaBuffer {
        if max < CHUNK_MIN_BYTES {
            return self.alloc(max);
        }
        let taken = {
            let mut pool = self.pool.borrow_mut();
            let best = pool
                .iter()
                .enumerate()
                .max_by_key(|(_, b)| (b.len() == max, b.len()))
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        match taken {
            Some(mut b) => {
                if b.len() > max {
                    b.trim_to_size(max);
                }
                b
            }
            None => self.alloc(max),
        }
    }

    /// Keep a buffer of at least `CHUNK_MIN_BYTES`; when the pool is full,
    /// in place of a shorter one.
    fn recycle(&self, buf: DmaBuffer) {
        if buf.len() < CHUNK_MIN_BYTES {
            return;
        }
        let mut pool = self.pool.borrow_mut();
        if pool.len() < POOL_BUFFERS_MAX {
            pool.push(buf);
        } else if let Some(shortest) = pool.iter_mut().min_by_key(|b| b.len()) {
            if shortest.len() < buf.len() {
                *shortest = buf;
            }
        }
    }

    async fn open_rw(&self, path: &Path) -> io::Result<DmaSegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(DmaSegmentFile { file })
    }

    async fn open_ro(&self, path: &Path) -> io::Result<DmaSegmentFile> {
        let file = DmaFile::open(path).await.map_err(to_io)?;
        Ok(DmaSegmentFile { file })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        off_shard(move || std::fs::remove_file(path)).await
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn free_bytes(&self, dir: &Path) -> Option<u64> {
        let st = statvfs(dir)?;
        Some(st.f_bavail * st.f_frsize)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = glommio::io::Directory::open(dir).await.map_err(to_io)?;
        d.sync().await.map_err(to_io)
    }
}

/// Run a blocking file-system call on glommio's blocking thread pool
/// rather than the shard's thread: unlinking (or removing a directory of)
/// large files frees their blocks inline, 100s of ms on a file system
/// mounted with `discard` (docs/architecture.md, "glommio 0.9 notes").
pub async fn off_shard<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Remove a deleted partition's directory off the shard's thread: each
/// file is first emptied (its blocks freed there, even if the shard still
/// holds it open), then the tree is removed.
pub async fn remove_partition_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    off_shard(move || empty_and_remove_dir(&dir)).await
}

fn empty_and_remove_dir(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(entry.path()) {
                let _ = f.set_len(0);
            }
        }
    }
    std::fs::remove_dir_all(dir)
}

/// Name of the probe file kept in each data directory.
pub const PROBE_FILE: &str = ".iopoll-probe";

/// Work around glommio 0.9.0's io-poll probe bug (DESIGN.md §4).
///
/// glommio decides once per executor and device whether the device supports
/// polled I/O, by reading offset 0 of the first DMA file it opens there. On
/// an empty or sparse file that read "succeeds", the device is marked
/// pollable, and every later DMA read fails with EOPNOTSUPP. So before any
/// other DMA open, each executor opens a 4 KiB file whose blocks were really
/// written and synced. Returns the alignment `align` asks for: the
/// device's O_DIRECT unit, or [`write_alignment`]'s.
pub async fn probe_device(data_dir: &Path, align: DirectIoAlignment) -> io::Result<usize> {
    let path: PathBuf = data_dir.join(PROBE_FILE);
    let ok = std::fs::metadata(&path)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            // Real blocks, not a hole: allocated 512-byte blocks cover the length.
            m.len() >= 4096 && m.blocks() * 512 >= 4096
        })
        .unwrap_or(false);
    if !ok {
        use std::io::Write;
        // Every shard may get here at once: each writes its own temporary file.
        let tmp = data_dir.join(format!(
            "{PROBE_FILE}.{}.{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&[0xA5u8; 4096])?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    tracing::debug!(path = %path.display(), "io-poll probe: opening");
    let f = DmaFile::open(&path).await.map_err(to_io)?;
    let device = f.alignment() as usize;
    let r = f.read_at(0, 4096).await.map_err(to_io)?;
    assert_eq!(r.len(), 4096, "probe file read came back short");
    f.close().await.map_err(to_io)?;
    assert_poll_ring_idle();
    let alignment = match align {
        DirectIoAlignment::Device => device,
        DirectIoAlignment::Filesystem => write_alignment(device, fs_block_bytes(data_dir)),
    };
    tracing::debug!(device, alignment, "io-poll probe: done");
    Ok(alignment)
}

/// The alignment of every direct read and write with
/// `direct_io_alignment = "filesystem"`: the device's, raised to the file
/// system's block size. Why: the device accepts 512-byte units,
/// but ext4 takes a direct write that does not cover whole file system
/// blocks as "unaligned" (it may have to zero the rest of a block): it
/// holds the inode's lock exclusively, waits for every other direct I/O on
/// the file, and cannot start without blocking, so io_uring hands each
/// such write to a kernel worker thread. With 512-byte units nearly every
/// chunk and tail write was one: in a 100 B run 80% of the file writes
/// went to workers (`io_uring:io_uring_queue_async_work`), whose threads
/// used 22% of a core in 12,000 context switches a second. Not the
/// default: see `BrokerConfig::direct_io_alignment` for what it cost a
/// live consumer with 1,000 partitions.
/// A block size that is not a power of two from 512 B to 64 KiB (what
/// a file system reports for its preferred I/O size can be a stripe of
/// megabytes) leaves the device's.
pub fn write_alignment(device: usize, fs_block: Option<u64>) -> usize {
    match fs_block {
        Some(b) if b.is_power_of_two() && (512..=64 << 10).contains(&b) => device.max(b as usize),
        _ => device,
    }
}

/// The block size of the file system holding `dir` (`statvfs`'s
/// `f_bsize`), if it can be read.
fn fs_block_bytes(dir: &Path) -> Option<u64> {
    Some(statvfs(dir)?.f_bsize)
}

/// `statvfs(2)` of the file system holding `dir`.
fn statvfs(dir: &Path) -> Option<libc::statvfs> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated and `st` has room for a statvfs, which
    // the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statvfs returned 0, so it filled `st`.
    (rc == 0).then(|| unsafe { st.assume_init() })
}

/// Assert that no I/O went through glommio's poll ring. If the probe bug
/// struck anyway, reads there would fail with EOPNOTSUPP; stop loudly rather
/// than serve errors. Note: reading the stats resets glommio's counters.
pub fn assert_poll_ring_idle() {
    let stats = glommio::executor().io_stats();
    let (reads, _) = stats.poll_ring.file_reads();
    let (writes, _) = stats.poll_ring.file_writes();
    assert!(
        reads == 0 && writes == 0,
        "glommio routed {reads} reads and {writes} writes through the io-poll ring: \
         the device was misdetected as pollable (glommio 0.9 probe bug)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file::{Disk, SegmentFile};

    #[test]
    fn writes_align_to_the_file_system_block_when_it_is_larger_than_the_device_unit() {
        assert_eq!(write_alignment(512, Some(4096)), 4096);
        assert_eq!(write_alignment(4096, Some(1024)), 4096);
        assert_eq!(write_alignment(512, Some(512)), 512);
        // Not a block size: a stripe, an odd number, nothing.
        assert_eq!(write_alignment(512, Some(1 << 20)), 512);
        assert_eq!(write_alignment(512, Some(3000)), 512);
        assert_eq!(write_alignment(512, None), 512);
    }

    /// On the test's own file system the probe answers the device's unit
    /// by default, and with "filesystem" at least the file system's block
    /// size (ext4's 4 KiB here, where the device takes 512-byte units).
    #[test]
    fn the_probe_answers_the_file_system_block_size_at_least() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_path_buf();
        let block = fs_block_bytes(&dir).expect("statvfs of a temp dir");
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let device = probe_device(&dir, DirectIoAlignment::Device).await.unwrap();
                let fs = probe_device(&dir, DirectIoAlignment::Filesystem)
                    .await
                    .unwrap();
                assert!(device.is_power_of_two() && fs.is_power_of_two());
                assert_eq!(fs, write_alignment(device, Some(block)));
                if block.is_power_of_two() && block <= 64 << 10 {
                    assert!(fs as u64 >= block, "{fs} < {block}");
                }
            });
    }

    /// Reads larger than one chunk are assembled from aligned chunk reads:
    /// every byte in place, from unaligned starts, across chunk borders and
    /// up to (and past) the end of the file, where they come back short.
    #[test]
    fn a_large_read_is_the_files_bytes_whatever_its_start_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let alignment = probe_device(&dir, DirectIoAlignment::Device).await.unwrap();
                let disk = DmaDisk::new(alignment);
                let path = dir.join("segment.log");
                // 2.5 chunks plus an odd tail.
                let len = 2 * READ_CHUNK_BYTES + READ_CHUNK_BYTES / 2 + 777;
                let data: Vec<u8> = (0..len as u64)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                let file = disk.open_rw(&path).await.unwrap();
                let padded = len.next_multiple_of(alignment);
                let mut buf = disk.alloc(padded);
                buf.as_bytes_mut()[..len].copy_from_slice(&data);
                let written = file.write_at(Rc::new(buf), 0).await.unwrap();
                assert_eq!(written, padded);
                file.truncate(len as u64).await.unwrap();
                let cases = [
                    (0, len),
                    (1, len - 1),
                    (4095, READ_CHUNK_BYTES + 2),
                    (READ_CHUNK_BYTES - 1, READ_CHUNK_BYTES / 2 + 3),
                    (12_345, 2 * READ_CHUNK_BYTES),
                    (len - 1000, 10 * READ_CHUNK_BYTES), // past the end
                    (READ_CHUNK_BYTES / 2 + 1, 100),     // a small read
                ];
                for (pos, want) in cases {
                    let got = file.read_at(pos as u64, want).await.unwrap();
                    let end = (pos + want).min(len);
                    assert_eq!(got.len(), end - pos, "read of {want} at {pos}");
                    assert!(got[..] == data[pos..end], "bytes of the read at {pos}");
                }
                file.close().await.unwrap();
            });
    }
}
