//! The exclusive lock on a data directory: `flock(LOCK_EX | LOCK_NB)` on
//! `<data-dir>/.lock`, held as long as the value lives.
//!
//! A broker holds it for its whole life; offline tools that rewrite
//! metadata (`shardlog recover-metadata`) take it too, so the two can never
//! work on one directory at once. flock locks belong to the open file and
//! go away with the process, so a crash never leaves a stale lock behind.

use super::MetadataError;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = ".lock";

#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is locked by another process (a running broker, or another recover-metadata): stop it first")]
    Held { path: PathBuf },
    #[error(transparent)]
    Io(#[from] MetadataError),
}

impl DataDirLock {
    /// Take the lock without waiting, creating the lock file if missing.
    pub fn try_acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(FILE_NAME);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(MetadataError::io("open", &path))?;
        // SAFETY: a valid open file descriptor; flock takes no pointers.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::Held { path }
            } else {
                MetadataError::io("lock", &path)(e).into()
            });
        }
        Ok(DataDirLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DataDirLock::try_acquire(tmp.path()).unwrap();
        // flock locks are per open file: a second open in the same process conflicts too.
        let e = DataDirLock::try_acquire(tmp.path()).unwrap_err();
        assert!(matches!(e, LockError::Held { .. }), "{e}");
        drop(a);
        DataDirLock::try_acquire(tmp.path()).unwrap();
    }
}
