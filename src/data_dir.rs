//! The data directory: resolved to an absolute path once, and held by
//! exactly one broker at a time.
//!
//! **Why absolute.** glommio opens directories with `openat` on a path it
//! keeps; a relative path fails with EBADF the first time a partition
//! directory is synced (DESIGN.md §8), which made the default
//! `./shardlog-data` refuse every write. Everything below [`DataDir::open`]
//! sees only the absolute, canonical path.
//!
//! **Why a lock.** Two brokers writing the same segment files corrupt each
//! other silently. Like Kafka's `.lock`, the broker takes an exclusive
//! `flock` on `<data-dir>/.lock` before it reads or writes anything else in
//! the directory, and holds it for the life of the process: the kernel drops
//! it when the process dies, however it dies, so a `kill -9` never leaves a
//! stale lock behind. The holder's PID is written into the file so that a
//! refused broker can name it.
//!
//! Lifecycle: created on the main thread by `Broker::start` (or by an
//! offline tool), dropped when the broker has shut down. Not used by shards.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path} (check that its parent is writable)")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} exists but is not a directory; choose another --data-dir")]
    NotADirectory { path: PathBuf },
    #[error("data directory {path} is not usable")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is not writable (a read-only file system, or missing permissions?)"
    )]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another shardlog process{} (lock file {lock}); stop it first, or choose another --data-dir", holder.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    InUse {
        path: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
}

/// An exclusively held data directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Keeps the `flock`; closing the descriptor releases it.
    _lock: File,
}

impl DataDir {
    /// Create the directory if needed (parents too), resolve it to its
    /// canonical absolute path, and take the lock. Fails at once, touching
    /// nothing inside the directory, when a live process holds it.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        Self::open_waiting(path, Duration::ZERO, |_| {})
    }

    /// Like [`DataDir::open`], but when the lock's holder has already died
    /// keep trying for up to `wait`.
    ///
    /// **Why.** After `kill -9`, the kernel tears down a glommio process's
    /// io_uring (and the file references it holds, the lock file's among
    /// them) a few milliseconds after the process is gone, so a broker
    /// restarted at once can find the lock still held by a PID that no
    /// longer runs. A live holder still fails at once; `on_wait` is called
    /// once, with the dead holder's PID, before the first retry.
    pub fn open_waiting(
        path: &Path,
        wait: Duration,
        mut on_wait: impl FnMut(Option<u32>),
    ) -> Result<DataDir, DataDirError> {
        let deadline = Instant::now() + wait;
        let mut waited = false;
        loop {
            match Self::try_open(path) {
                Err(DataDirError::InUse { holder, .. })
                    if Instant::now() < deadline && !holder.is_some_and(process_is_running) =>
                {
                    if !waited {
                        on_wait(holder);
                        waited = true;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path) -> Result<DataDir, DataDirError> {
        std::fs::create_dir_all(path).map_err(|source| {
            // "File exists" under "check that its parent is writable" sent
            // users to the wrong place.
            if path.exists() && !path.is_dir() {
                DataDirError::NotADirectory {
                    path: path.to_path_buf(),
                }
            } else {
                DataDirError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let abs = std::fs::canonicalize(path).map_err(|source| DataDirError::Resolve {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = abs.join(LOCK_FILE);
        // Not truncated on open: the current holder's PID must survive a
        // refused attempt, so the refused broker can report it.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| DataDirError::NotWritable {
                path: abs.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(DataDirError::InUse {
                    path: abs,
                    lock: lock_path,
                    holder: text.trim().parse().ok(),
                });
            }
            return Err(DataDirError::NotWritable {
                path: abs,
                source: err,
            });
        }
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_data()
        };
        write_pid(&mut file).map_err(|source| DataDirError::NotWritable {
            path: abs.clone(),
            source,
        })?;
        Ok(DataDir {
            path: abs,
            _lock: file,
        })
    }

    /// The canonical absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `pid` names a process that is still running, as opposed to one
/// that is gone or on its way out: a zombie (dead, not yet reaped), a
/// process already in its exit path (PF_EXITING), or one with a SIGKILL
/// pending.
///
/// **Why the last two.** `kill -9 %1; shardlog serve ... &` (the README)
/// starts the new broker while the old one may not yet have run at all
/// since the signal: for a few milliseconds (longer on a loaded machine)
/// it still shows as running, holding its lock and sockets. Counting it as
/// alive refused the restart about one time in four on a busy 2-core host.
/// A SIGKILL cannot be caught or blocked, so such a process will exit.
pub(crate) fn process_is_running(pid: u32) -> bool {
    /// PF_EXITING in the flags field of /proc/PID/stat (include/linux/sched.h).
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the parenthesised command name: state, ppid, pgrp, session,
    // tty_nr, tpgid, flags, ...
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let state = fields.first().copied().unwrap_or("X");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if state == "Z" || state == "X" || flags & PF_EXITING != 0 {
        return false;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kill_pending = status.lines().any(|l| {
        ["SigPnd:", "ShdPnd:"].iter().any(|k| {
            l.strip_prefix(k)
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|mask| mask & SIGKILL_BIT != 0)
        })
    });
    !kill_pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_created_and_canonical() {
        // Relative paths are covered by tests/readme.rs, which runs the
        // broker in a fresh working directory (changing this process's cwd
        // would race the other unit tests).
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(&tmp.path().join("a/../b/c/data")).unwrap();
        assert!(d.path().is_absolute());
        assert_eq!(
            d.path(),
            std::fs::canonicalize(tmp.path()).unwrap().join("b/c/data")
        );
    }

    #[test]
    fn a_file_in_the_way_is_named_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("data");
        std::fs::write(&file, b"not a dir").unwrap();
        assert!(matches!(
            DataDir::open(&file),
            Err(DataDirError::NotADirectory { .. })
        ));
        assert!(matches!(
            DataDir::open(&file.join("sub")),
            Err(DataDirError::Create { .. })
        ));
    }

    #[test]
    fn second_open_is_refused_with_the_holders_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::open(tmp.path()).unwrap();
        match DataDir::open(tmp.path()) {
            Err(DataDirError::InUse { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        DataDir::open(tmp.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn a_live_holder_is_not_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path()).unwrap();
        let mut called = false;
        let started = Instant::now();
        let r = DataDir::open_waiting(tmp.path(), Duration::from_secs(5), |_| called = true);
        assert!(matches!(r, Err(DataDirError::InUse { .. })));
        assert!(
            !called,
            "a running holder must fail at once, not be waited for"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_process_sent_sigkill_never_counts_as_running() {
        // Right after kill() returns, the target may not have run yet: it
        // shows as sleeping with SIGKILL pending. That window is short, so
        // this catches a regression only sometimes; the README test and
        // tests/front_door.rs hit it in the real restart flow.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(process_is_running(pid));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        // From here on it is dying, a zombie, or reaped: never running.
        for _ in 0..50 {
            assert!(!process_is_running(pid));
            std::thread::sleep(Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert!(!process_is_running(pid));
    }

    #[test]
    fn process_liveness() {
        assert!(process_is_running(std::process::id()));
        // A child that has exited but is not yet reaped is a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!process_is_running(pid), "zombie counts as gone");
        child.wait().unwrap();
        assert!(!process_is_running(pid));
    }
}
