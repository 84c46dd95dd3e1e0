//! Simulated storage for tests: an in-memory disk with injected faults and
//! crashes, in the manner of redb's crash-consistency backend and
//! TigerBeetle's storage simulator.
//!
//! Model:
//! - every file has its visible contents and its *durable* image (as of the
//!   last `sync`); writes and truncates after that are pending;
//! - directory entries (creates, removes) become durable on `sync_dir`;
//! - [`SimDisk::crash`] keeps the durable image of each durably-existing
//!   file, then lets each pending write land whole, not at all, or torn
//!   (an arbitrary subset of its 512-byte sectors), as a disk with a volatile
//!   cache and reordering queue may do; pending truncates may or may not land;
//! - faults: fail the Nth write or sync from now, short writes, and a
//!   capacity that makes writes fail with ENOSPC.
//!
//! Single-threaded: a SimDisk lives on one test executor.

use super::file::{Disk, IoBuf, SegmentFile};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const SECTOR: usize = 512;

pub struct SimBuf(Vec<u8>);

impl SimBuf {
    /// `len` bytes of `byte`.
    pub fn filled(byte: u8, len: usize) -> SimBuf {
        SimBuf(vec![byte; len])
    }
}

impl IoBuf for SimBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn trim_to(&mut self, len: usize) {
        self.0.truncate(len)
    }
}

#[derive(Clone)]
enum PendingOp {
    Write { pos: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

#[derive(Default, Clone)]
struct SimFileData {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
}

#[derive(Default)]
struct Faults {
    fail_write_in: Option<u64>,
    fail_sync_in: Option<u64>,
    short_write_percent: u32,
    capacity_bytes: Option<u64>,
}

struct SimState {
    files: BTreeMap<PathBuf, SimFileData>,
    /// Durable directory entries, with the file data they would come back with.
    durable_entries: BTreeSet<PathBuf>,
    /// Files removed since their directory was last synced: a crash brings them back.
    removed: BTreeMap<PathBuf, SimFileData>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    rng: StdRng,
    alignment: usize,
    writes: u64,
    syncs: u64,
    /// Calls of `alloc_chunk`: every other one returns a shorter buffer
    /// (unless `exact_chunks`).
    chunk_allocs: u64,
    exact_chunks: bool,
    /// Lengths of the buffers given back with `recycle`.
    recycled: Vec<usize>,
}

/// An in-memory disk. Cloning shares the same disk.
#[derive(Clone)]
pub struct SimDisk {
    st: Rc<RefCell<SimState>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} fault"))
}

impl SimDisk {
    pub fn new(seed: u64) -> Self {
        SimDisk {
            st: Rc::new(RefCell::new(SimState {
                files: BTreeMap::new(),
                durable_entries: BTreeSet::new(),
                removed: BTreeMap::new(),
                dirs: BTreeSet::new(),
                faults: Faults::default(),
                rng: StdRng::seed_from_u64(seed),
                alignment: 4096,
                writes: 0,
                syncs: 0,
                chunk_allocs: 0,
                exact_chunks: false,
                recycled: Vec::new(),
            })),
        }
    }

    /// Fail the write `n` writes from now (0 = the next one).
    pub fn fail_write_in(&self, n: u64) {
        self.st.borrow_mut().faults.fail_write_in = Some(n);
    }

    /// Fail the sync `n` syncs from now (0 = the next one).
    pub fn fail_sync_in(&self, n: u64) {
        self.st.borrow_mut().faults.fail_sync_in = Some(n);
    }

    /// Make this percentage of writes short (a random aligned prefix lands).
    pub fn short_writes(&self, percent: u32) {
        self.st.borrow_mut().faults.short_write_percent = percent;
    }

    /// Total bytes the disk holds before writes fail with ENOSPC; None = unlimited.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.st.borrow_mut().faults.capacity_bytes = bytes;
    }

    /// Clear every injected fault.
    pub fn heal(&self) {
        self.st.borrow_mut().faults = Faults::default();
    }

    pub fn used_bytes(&self) -> u64 {
        self.st
            .borrow()
            .files
            .values()
            .map(|f| f.data.len() as u64)
            .sum()
    }

    /// Chunk buffers of exactly the length asked (by default every other
    /// one is shorter, as recycled DMA buffers may be).
    pub fn exact_chunks(&self) {
        self.st.borrow_mut().exact_chunks = true;
    }

    /// Lengths of the buffers given back for reuse so far.
    pub fn recycled(&self) -> Vec<usize> {
        self.st.borrow().recycled.clone()
    }

    pub fn write_count(&self) -> u64 {
        self.st.borrow().writes
    }

    pub fn sync_count(&self) -> u64 {
        self.st.borrow().syncs
    }

    /// Raw contents of a file as visible now (for tests that corrupt or inspect).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.st.borrow().files.get(path).map(|f| f.data.clone())
    }

    /// Overwrite a file's contents, durably (tests: corruption, garbage tails).
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut st = self.st.borrow_mut();
        st.durable_entries.insert(path.to_path_buf());
        st.files.insert(
            path.to_path_buf(),
            SimFileData {
                durable: data.clone(),
                data,
                pending: Vec::new(),
            },
        );
    }

    /// Simulate a power cut: see the module doc for what survives.
    pub fn crash(&self) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        // Entries removed but not durably: back with their durable data.
        for (p, f) in std::mem::take(&mut st.removed) {
            if st.durable_entries.contains(&p) {
                st.files.insert(p, f);
            }
        }
        let entries = st.durable_entries.clone();
        st.files.retain(|p, _| entries.contains(p));
        for f in st.files.values_mut() {
            let mut img = std::mem::take(&mut f.durable);
            for op in std::mem::take(&mut f.pending) {
                match op {
                    PendingOp::Truncate { len } => {
                        if st.rng.gen_bool(0.5) {
                            img.resize(len as usize, 0);
                        }
                    }
                    PendingOp::Write { pos, data } => {
                        let mode = st.rng.gen_range(0..3);
                        if mode == 0 {
                            continue;
                        }
                        for (i, sector) in data.chunks(SECTOR).enumerate() {
                            if mode == 2 && st.rng.gen_bool(0.5) {
                                continue;
                            }
                            let at = pos as usize + i * SECTOR;
                            if img.len() < at + sector.len() {
                                img.resize(at + sector.len(), 0);
                            }
                            img[at..at + sector.len()].copy_from_slice(sector);
                        }
                    }
                }
            }
            f.data = img.clone();
            f.durable = img;
        }
    }

    fn with_file<R>(&self, path: &Path, f: impl FnOnce(&mut SimFileData) -> R) -> io::Result<R> {
        let mut st = self.st.borrow_mut();
        match st.files.get_mut(path) {
            Some(d) => Ok(f(d)),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such simulated file", path.display()),
            )),
        }
    }
}

pub struct SimFile {
    disk: SimDisk,
    path: PathBuf,
    writable: bool,
}

impl SegmentFile for SimFile {
    type Buf = SimBuf;

    async fn write_at(&self, buf: Rc<SimBuf>, pos: u64) -> io::Result<usize> {
        assert!(self.writable, "write to a read-only file");
        let mut st = self.disk.st.borrow_mut();
        let align = st.alignment;
        assert_eq!(pos as usize % align, 0, "unaligned write position {pos}");
        assert_eq!(
            buf.0.len() % align,
            0,
            "unaligned write length {}",
            buf.0.len()
        );
        st.writes += 1;
        if let Some(n) = st.faults.fail_write_in {
            if n == 0 {
                st.faults.fail_write_in = None;
                return Err(injected("write"));
            }
            st.faults.fail_write_in = Some(n - 1);
        }
        let used: u64 = st.files.values().map(|f| f.data.len() as u64).sum();
        let cur_len = st
            .files
            .get(&self.path)
            .map(|f| f.data.len() as u64)
            .unwrap_or(0);
        let growth = (pos + buf.0.len() as u64).saturating_sub(cur_len);
        if let Some(cap) = st.faults.capacity_bytes {
            if used + growth > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let mut len = buf.0.len();
        if st.faults.short_write_percent > 0
            && st.rng.gen_range(0..100) < st.faults.short_write_percent
            && len > align
        {
            len = st.rng.gen_range(1..len / align) * align;
        }
        let f = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "simulated file was removed"))?;
        let end = pos as usize + len;
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[pos as usize..end].copy_from_slice(&buf.0[..len]);
        f.pending.push(PendingOp::Write {
            pos,
            data: buf.0[..len].to_vec(),
        });
        Ok(len)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.disk.with_file(&self.path, |f| {
            let start = (pos as usize).min(f.data.len());
            let end = (pos as usize + len).min(f.data.len());
            Bytes::copy_from_slice(&f.data[start..end])
        })
    }

    async fn sync(&self) -> io::Result<()> {
        {
            let mut st = self.disk.st.borrow_mut();
            st.syncs += 1;
            if let Some(n) = st.faults.fail_sync_in {
                if n == 0 {
                    st.faults.fail_sync_in = None;
                    return Err(injected("sync"));
                }
                st.faults.fail_sync_in = Some(n - 1);
            }
        }
        self.disk.with_file(&self.path, |f| {
            f.durable = f.data.clone();
            f.pending.clear();
        })
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.with_file(&self.path, |f| {
            f.data.resize(len as usize, 0);
            f.pending.push(PendingOp::Truncate { len });
        })
    }

    async fn size(&self) -> io::Result<u64> {
        self.disk.with_file(&self.path, |f| f.data.len() as u64)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        {
            let st = self.disk.st.borrow();
            let used: u64 = st.files.values().map(|f| f.data.len() as u64).sum();
            let cur = st
                .files
                .get(&self.path)
                .map(|f| f.data.len() as u64)
                .unwrap_or(0);
            if let Some(cap) = st.faults.capacity_bytes {
                if used + len.saturating_sub(cur) > cap {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
            }
        }
        self.disk.with_file(&self.path, |f| {
            if (f.data.len() as u64) < len {
                f.data.resize(len as usize, 0);
                // Like a size change: durable only after a sync.
                f.pending.push(PendingOp::Truncate { len });
            }
        })
    }

    /// Nothing to release in memory; a closed file's pending writes stay
    /// pending until a sync, as a real file's page cache does.
    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn alignment(&self) -> usize {
        self.st.borrow().alignment
    }

    fn alloc(&self, len: usize) -> SimBuf {
        // Not zeroed, like a pooled DMA buffer: code must not rely on zeros it did not write.
        SimBuf::filled(0xEE, len)
    }

    fn recycle(&self, buf: SimBuf) {
        self.st.borrow_mut().recycled.push(buf.0.len());
    }

    /// Every other chunk buffer is shorter than asked (from one block up),
    /// as recycled DMA buffers may be, so that every simulated test runs
    /// the appender with chunks of varying length.
    fn alloc_chunk(&self, max: usize) -> SimBuf {
        let mut st = self.st.borrow_mut();
        st.chunk_allocs += 1;
        let blocks = max / st.alignment;
        let n = st.chunk_allocs;
        let len = if n.is_multiple_of(2) && blocks > 1 && !st.exact_chunks {
            (1 + (n as usize).wrapping_mul(7919) % blocks) * st.alignment
        } else {
            max
        };
        SimBuf::filled(0xEE, len)
    }

    async fn open_rw(&self, path: &Path) -> io::Result<SimFile> {
        let mut st = self.st.borrow_mut();
        if let Some(parent) = path.parent() {
            if !st.dirs.contains(parent) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: no such simulated directory", parent.display()),
                ));
            }
        }
        st.removed.remove(path);
        st.files.entry(path.to_path_buf()).or_default();
        Ok(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            writable: true,
        })
    }

    async fn open_ro(&self, path: &Path) -> io::Result<SimFile> {
        if !self.exists(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such simulated file", path.display()),
            ));
        }
        Ok(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            writable: false,
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        match st.files.remove(path) {
            Some(mut f) => {
                f.data = f.durable.clone();
                f.pending.clear();
                st.removed.insert(path.to_path_buf(), f);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.st.borrow().files.contains_key(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.st.borrow();
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        for a in dir.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        st.files.retain(|p, _| !p.starts_with(dir));
        st.durable_entries.retain(|p| !p.starts_with(dir));
        st.removed.retain(|p, _| !p.starts_with(dir));
        st.dirs.retain(|p| !p.starts_with(dir));
        Ok(())
    }

    fn free_bytes(&self, _dir: &Path) -> Option<u64> {
        let st = self.st.borrow();
        let used: u64 = st.files.values().map(|f| f.data.len() as u64).sum();
        st.faults.capacity_bytes.map(|c| c.saturating_sub(used))
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        st.removed.retain(|p, _| p.parent() != Some(dir));
        st.durable_entries.retain(|p| p.parent() != Some(dir));
        for p in st.files.keys() {
            if p.parent() == Some(dir) {
                st.durable_entries.insert(p.clone());
            }
        }
        Ok(())
    }
}
