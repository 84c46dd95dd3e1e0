//! The space reserve: `<data-dir>/meta/reserve`, a few MiB of allocated
//! blocks that only metadata may use.
//!
//! Why: on a full disk the way out is to delete a topic, and deleting a
//! topic first writes the topic table (temporary file, fsync, rename),
//! which needs a few free blocks. Without them the delete is refused and
//! the disk stays full for good. So the broker keeps blocks aside while
//! there is space ([`refill`]: at startup, after every metadata change, and
//! periodically on the controller), and a metadata write that hits ENOSPC
//! gives them back ([`release`]) and tries once more.
//!
//! The reserve is at least [`MIN_BYTES`] and at least twice the table, so
//! the temporary copy of the table always fits. It is plain data nobody
//! reads: losing it in a crash costs nothing, it is made again.

use super::{durable, meta_path, MetadataError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tracing::debug;

pub const FILE_NAME: &str = "reserve";
pub const MIN_BYTES: u64 = 4 << 20;

pub fn path(data_dir: &Path) -> PathBuf {
    meta_path(data_dir).with_file_name(FILE_NAME)
}

/// The size the reserve should have for the current table.
pub fn target_bytes(data_dir: &Path) -> u64 {
    let table = std::fs::metadata(meta_path(data_dir))
        .map(|m| m.len())
        .unwrap_or(0);
    (2 * table).max(MIN_BYTES).next_multiple_of(1 << 20)
}

/// Bytes actually allocated to the reserve (0 if it is missing).
pub fn allocated_bytes(data_dir: &Path) -> u64 {
    std::fs::metadata(path(data_dir))
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Make sure the reserve holds [`target_bytes`] of allocated blocks.
/// Returns true if it had to allocate. On a full disk this fails with an
/// ENOSPC I/O error (see [`MetadataError::is_no_space`]) and keeps what it
/// got: callers retry later.
pub fn refill(data_dir: &Path) -> Result<bool, MetadataError> {
    let target = target_bytes(data_dir);
    if allocated_bytes(data_dir) >= target {
        return Ok(false);
    }
    let p = path(data_dir);
    let dir = p.parent().expect("reserve lives in meta/");
    std::fs::create_dir_all(dir).map_err(MetadataError::io("create", dir))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&p)
        .map_err(MetadataError::io("create", &p))?;
    allocate(&f, target).map_err(MetadataError::io("allocate", &p))?;
    f.sync_all().map_err(MetadataError::io("fsync", &p))?;
    durable::sync_dir(dir)?;
    debug!(path = %p.display(), bytes = target, "metadata space reserve allocated");
    Ok(true)
}

/// Really allocate `len` bytes: fallocate, or writing zeros where the file
/// system has no fallocate (a sparse file would reserve nothing).
fn allocate(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid open file descriptor; fallocate has no memory arguments.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = zeros.len().min((len - pos) as usize);
        f.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Give the reserve's blocks back to the file system. Returns whether
/// there was anything to give. The directory fsync commits the file
/// system's journal, so the freed blocks can be allocated right away
/// (ext4 does not reuse blocks freed in a transaction still open).
pub fn release(data_dir: &Path) -> Result<bool, MetadataError> {
    let p = path(data_dir);
    match std::fs::remove_file(&p) {
        Ok(()) => {
            durable::sync_dir(p.parent().expect("reserve lives in meta/"))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MetadataError::io("remove", &p)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_allocates_release_frees() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(allocated_bytes(d), 0);
        assert!(refill(d).unwrap());
        assert!(allocated_bytes(d) >= MIN_BYTES);
        assert!(!refill(d).unwrap(), "a full reserve is left alone");
        assert!(release(d).unwrap());
        assert_eq!(allocated_bytes(d), 0);
        assert!(!release(d).unwrap());
    }
}
