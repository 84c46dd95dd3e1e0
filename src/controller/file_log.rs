//! [`Persist`] on files: the controller's Raft log, hard state and
//! snapshot in `<data-dir>/controller/`.
//!
//! Files (all integers little-endian; docs/replication.md repeats this):
//! ```text
//! raft.log   u64 magic "SLCLOG01" | record...
//!   record   u32 len (bytes after crc) | u32 crc32c (of the len bytes after it) | u8 kind | payload
//!   kind 1   entry       (raft_codec entry) u64 term | u64 index | u8 entry_type | u32 data_len | data
//!                        | u32 context_len | context
//!   kind 2   hard state  u64 term | u64 vote | u64 commit
//! snapshot   u64 magic "SLCSNP01" | (raft_codec snapshot) u64 index | u64 term | u32 voters | voters x u64
//!            | u32 data_len | data (the encoded ControllerState) | u32 crc32c (of everything before it)
//! ```
//! Rules:
//! - `raft.log` is append-only between snapshots. An entry record at an
//!   index already held replaces it and every later one (Raft's suffix
//!   replacement); the last hard-state record wins. Each write is one
//!   `write` of all its records and one `fdatasync`, before it returns.
//! - A snapshot is written to `snapshot.tmp`, fsynced, renamed over
//!   `snapshot`, and the directory fsynced; then `raft.log` is rewritten
//!   the same way with only the entries after the snapshot and the hard
//!   state. A crash between the two leaves entries the snapshot covers in
//!   the log; they are skipped when read.
//! - Reading stops at the first record that is cut short, too long, or
//!   fails its CRC: that is a torn tail (a write cut by a crash, never
//!   acknowledged, since acknowledgement waits for the fdatasync). The
//!   file is truncated there, with a log line giving the bytes cut.
//! - A snapshot file that fails its magic or CRC is refused (an error
//!   naming the file): it was fsynced before the rename, so it cannot be
//!   torn; damage there is not something to guess around.

use super::persist::{append_entries, Persist, PersistError, Persisted};
use crate::protocol::codec::Reader;
use crate::protocol::raft_codec;
use bytes::{BufMut, BytesMut};
use raft::eraftpb::{Entry, HardState, Snapshot};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tracing::warn;

const LOG_MAGIC: &[u8; 8] = b"SLCLOG01";
const SNAP_MAGIC: &[u8; 8] = b"SLCSNP01";
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// Largest record: a command is at most 256 KiB; anything longer is damage.
const MAX_RECORD_BYTES: u32 = 4 << 20;
/// Largest snapshot file read (the state of a large cluster is a few MiB).
const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// The controller's files in one directory. Lives on the controller shard;
/// blocking file I/O, as the topic table's (small, rare writes).
pub struct FileLog {
    dir: PathBuf,
    log: Option<File>,
}

fn put_entry_record(b: &mut BytesMut, e: &Entry) {
    let start = b.len();
    b.put_u32_le(0);
    b.put_u32_le(0);
    b.put_u8(KIND_ENTRY);
    raft_codec::put_entry(b, e);
    seal(b, start);
}

fn put_hard_state(b: &mut BytesMut, hs: &HardState) {
    let start = b.len();
    b.put_u32_le(0);
    b.put_u32_le(0);
    b.put_u8(KIND_HARD_STATE);
    b.put_u64_le(hs.term);
    b.put_u64_le(hs.vote);
    b.put_u64_le(hs.commit);
    seal(b, start);
}

/// Fill in the length and CRC of the record that starts at `start`.
fn seal(b: &mut BytesMut, start: usize) {
    let len = (b.len() - start - 8) as u32;
    let crc = crate::format::crc::crc32c(&b[start + 8..]);
    b[start..start + 4].copy_from_slice(&len.to_le_bytes());
    b[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record's payload, decoded into `p`. Err: the record is damaged.
fn read_record(body: &[u8], p: &mut Persisted) -> Result<(), &'static str> {
    let mut r = Reader::new(BytesMut::from(body));
    let bad = |_| "record body does not decode";
    match r.u8("kind").map_err(bad)? {
        KIND_ENTRY => {
            let e = raft_codec::get_entry(&mut r).map_err(bad)?;
            r.finish().map_err(bad)?;
            let base = p.snapshot_index();
            if e.index > base + p.entries.len() as u64 + 1 {
                return Err("entry index leaves a gap");
            }
            append_entries(base, &mut p.entries, &[e]);
        }
        KIND_HARD_STATE => {
            let hs = HardState {
                term: r.u64("term").map_err(bad)?,
                vote: r.u64("vote").map_err(bad)?,
                commit: r.u64("commit").map_err(bad)?,
                ..Default::default()
            };
            r.finish().map_err(bad)?;
            p.hard_state = hs;
        }
        _ => return Err("unknown record kind"),
    }
    Ok(())
}

impl FileLog {
    /// The controller files under `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<FileLog, PersistError> {
        std::fs::create_dir_all(dir).map_err(PersistError::io("create", dir))?;
        Ok(FileLog {
            dir: dir.to_path_buf(),
            log: None,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("raft.log")
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>, PersistError> {
        let path = self.snapshot_path();
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PersistError::io("open", &path)(e)),
        };
        let len = f.metadata().map_err(PersistError::io("stat", &path))?.len();
        let corrupt = |offset, problem| PersistError::Corrupt {
            path: path.clone(),
            offset,
            problem,
        };
        if len > MAX_SNAPSHOT_BYTES {
            return Err(corrupt(0, "longer than any snapshot"));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        f.read_to_end(&mut bytes)
            .map_err(PersistError::io("read", &path))?;
        if bytes.len() < 12 || &bytes[..8] != SNAP_MAGIC {
            return Err(corrupt(0, "no snapshot magic"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crate::format::crc::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes"))
        {
            return Err(corrupt(body.len() as u64, "CRC mismatch"));
        }
        let mut r = Reader::new(BytesMut::from(&body[8..]));
        let decode = |source| PersistError::Decode {
            path: path.clone(),
            source,
        };
        let snap = raft_codec::get_snapshot(&mut r).map_err(decode)?;
        r.finish().map_err(decode)?;
        Ok(Some(snap))
    }

    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), PersistError> {
        let mut b = BytesMut::with_capacity(snap.data.len() + 64);
        b.put_slice(SNAP_MAGIC);
        raft_codec::put_snapshot(&mut b, snap);
        let crc = crate::format::crc::crc32c(&b);
        b.put_u32_le(crc);
        self.replace("snapshot", &b)
    }

    /// Atomic, durable replacement of `dir/name`.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
        crate::metadata::durable::replace(&self.dir, name, bytes).map_err(|e| match e {
            crate::metadata::MetadataError::Io { op, path, source } => {
                PersistError::Io { op, path, source }
            }
            other => PersistError::Io {
                op: "replace",
                path: self.dir.join(name),
                source: std::io::Error::other(other.to_string()),
            },
        })
    }

    fn open_for_append(&mut self) -> Result<&mut File, PersistError> {
        if self.log.is_none() {
            let path = self.log_path();
            let mut f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(PersistError::io("open", &path))?;
            f.seek(SeekFrom::End(0))
                .map_err(PersistError::io("seek", &path))?;
            self.log = Some(f);
        }
        Ok(self.log.as_mut().expect("just opened"))
    }
}

impl Persist for FileLog {
    fn write(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), PersistError> {
        let mut b = BytesMut::new();
        for e in entries {
            put_entry_record(&mut b, e);
        }
        if let Some(hs) = hard_state {
            put_hard_state(&mut b, hs);
        }
        if b.is_empty() {
            return Ok(());
        }
        let path = self.log_path();
        let f = self.open_for_append()?;
        f.write_all(&b).map_err(PersistError::io("write", &path))?;
        f.sync_data().map_err(PersistError::io("fdatasync", &path))
    }

    fn save_snapshot(
        &mut self,
        snap: &Snapshot,
        kept: &[Entry],
        hard_state: &HardState,
    ) -> Result<(), PersistError> {
        self.write_snapshot(snap)?;
        let mut b = BytesMut::new();
        b.put_slice(LOG_MAGIC);
        for e in kept {
            put_entry_record(&mut b, e);
        }
        put_hard_state(&mut b, hard_state);
        self.log = None;
        self.replace("raft.log", &b)
    }

    fn load(&mut self) -> Result<Persisted, PersistError> {
        let mut p = Persisted {
            snapshot: self.read_snapshot()?,
            ..Default::default()
        };
        let path = self.log_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.replace("raft.log", LOG_MAGIC)?;
                return Ok(p);
            }
            Err(e) => return Err(PersistError::io("read", &path)(e)),
        };
        if bytes.len() < 8 || &bytes[..8] != LOG_MAGIC {
            if bytes.len() < 8 && LOG_MAGIC.starts_with(&bytes) {
                // Cut while being created: nothing in it was ever acknowledged.
                self.replace("raft.log", LOG_MAGIC)?;
                return Ok(p);
            }
            return Err(PersistError::Corrupt {
                path,
                offset: 0,
                problem: "no controller log magic",
            });
        }
        let mut pos = 8usize;
        let mut problem = None;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if rest.len() < 8 {
                problem = Some("record header cut short");
                break;
            }
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
            if len > MAX_RECORD_BYTES {
                problem = Some("record length beyond any record");
                break;
            }
            if rest.len() < 8 + len as usize {
                problem = Some("record cut short");
                break;
            }
            let body = &rest[8..8 + len as usize];
            if crate::format::crc::crc32c(body) != crc {
                problem = Some("record CRC mismatch");
                break;
            }
            if let Err(why) = read_record(body, &mut p) {
                problem = Some(why);
                break;
            }
            pos += 8 + len as usize;
        }
        if let Some(problem) = problem {
            warn!(
                file = %path.display(),
                offset = pos,
                cut_bytes = bytes.len() - pos,
                problem,
                "controller log: torn tail cut"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(PersistError::io("open", &path))?;
            f.set_len(pos as u64)
                .map_err(PersistError::io("truncate", &path))?;
            f.sync_all().map_err(PersistError::io("fsync", &path))?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            data: bytes::Bytes::copy_from_slice(data),
            ..Default::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    /// (index, term) of each entry.
    fn indexes(p: &Persisted) -> Vec<(u64, u64)> {
        p.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn entries_hard_state_and_snapshot_survive_a_reopen_and_a_suffix_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FileLog::new(dir.path()).unwrap();
        assert!(f.load().unwrap().entries.is_empty());
        f.write(
            &[entry(1, 1, b"a"), entry(1, 2, b"b"), entry(1, 3, b"c")],
            Some(&hs(1, 2, 1)),
        )
        .unwrap();
        f.write(&[entry(2, 2, b"B")], Some(&hs(2, 3, 2))).unwrap();
        let p = FileLog::new(dir.path()).unwrap().load().unwrap();
        assert_eq!(indexes(&p), vec![(1, 1), (2, 2)]);
        assert_eq!(&p.entries[1].data[..], b"B");
        assert_eq!(
            (p.hard_state.term, p.hard_state.vote, p.hard_state.commit),
            (2, 3, 2)
        );

        let mut snap = Snapshot {
            data: bytes::Bytes::from_static(b"state"),
            ..Default::default()
        };
        snap.mut_metadata().index = 1;
        snap.mut_metadata().term = 1;
        snap.mut_metadata()
            .set_conf_state((vec![1, 2, 3], vec![]).into());
        f.save_snapshot(&snap, &[entry(2, 2, b"B")], &hs(2, 3, 2))
            .unwrap();
        f.write(&[entry(2, 3, b"C")], None).unwrap();
        let p = FileLog::new(dir.path()).unwrap().load().unwrap();
        assert_eq!(p.snapshot_index(), 1);
        assert_eq!(&p.snapshot.as_ref().unwrap().data[..], b"state");
        assert_eq!(
            p.snapshot
                .as_ref()
                .unwrap()
                .get_metadata()
                .get_conf_state()
                .voters,
            vec![1, 2, 3]
        );
        assert_eq!(indexes(&p), vec![(2, 2), (3, 2)]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_writes_follow_the_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FileLog::new(dir.path()).unwrap();
        f.load().unwrap();
        f.write(&[entry(1, 1, b"a"), entry(1, 2, b"b")], Some(&hs(1, 1, 2)))
            .unwrap();
        let path = dir.path().join("raft.log");
        let full = std::fs::read(&path).unwrap();
        // Every cut inside the last record (the hard state) loses only it;
        // a flipped byte in it the same.
        let hs_len = 8 + 1 + 24;
        for cut in full.len() - hs_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let p = FileLog::new(dir.path()).unwrap().load().unwrap();
            assert_eq!(indexes(&p), vec![(1, 1), (2, 1)], "cut at {cut}");
            assert_eq!(p.hard_state.commit, 0);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                full.len() - hs_len
            );
        }
        let mut flipped = full.clone();
        let n = flipped.len();
        flipped[n - 3] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let mut f = FileLog::new(dir.path()).unwrap();
        assert_eq!(f.load().unwrap().hard_state.commit, 0);
        f.write(&[entry(1, 3, b"c")], Some(&hs(1, 1, 3))).unwrap();
        let p = FileLog::new(dir.path()).unwrap().load().unwrap();
        assert_eq!(indexes(&p), vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(p.hard_state.commit, 3);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FileLog::new(dir.path()).unwrap();
        f.load().unwrap();
        let mut snap = Snapshot {
            data: bytes::Bytes::from_static(b"state"),
            ..Default::default()
        };
        snap.mut_metadata().index = 4;
        f.save_snapshot(&snap, &[], &hs(1, 1, 4)).unwrap();
        let path = dir.path().join("snapshot");
        let mut b = std::fs::read(&path).unwrap();
        b[20] ^= 1;
        std::fs::write(&path, &b).unwrap();
        let err = FileLog::new(dir.path()).unwrap().load().unwrap_err();
        assert!(err.to_string().contains("snapshot"), "{err}");
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    }
}
