//! A cgroup (v1 blkio) whose writes to one disk the kernel throttles: a
//! real disk that stands still, for the broker (tests/slow_disk.rs) and
//! for loadgen's embedded broker (loadgen/tests/slow_broker.rs). The
//! throttle holds O_DIRECT and io_uring writes alike; writeback of the
//! page cache escapes it, so the processes' logs are not slowed.
//!
//! Needs root and cgroup v1's blkio controller; panics with how to skip
//! (SHARDLOG_SKIP_ROOT_TESTS=1) otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const BLKIO: &str = "/sys/fs/cgroup/blkio";

/// A blkio cgroup of our own, removed on drop (after its processes died).
pub struct ThrottledGroup {
    dir: PathBuf,
    /// The whole disk under the data directory, as `MAJ:MIN`.
    device: String,
}

impl ThrottledGroup {
    /// A group throttling nothing yet, for the disk that holds `data_dir`.
    pub fn new(data_dir: &Path) -> ThrottledGroup {
        let control = Path::new(BLKIO).join("blkio.throttle.write_bps_device");
        assert!(
            control.exists(),
            "{} is missing: this test needs cgroup v1's blkio controller with throttling \
             (set SHARDLOG_SKIP_ROOT_TESTS=1 to skip it)",
            control.display()
        );
        static GROUPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = GROUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("shardlog-slow-disk-{}-{n}", std::process::id());
        let dir = Path::new(BLKIO).join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "create {}: {e} (this test needs root; set SHARDLOG_SKIP_ROOT_TESTS=1 to skip it)",
                dir.display()
            )
        });
        ThrottledGroup {
            dir,
            device: whole_disk(data_dir),
        }
    }

    /// Limit the group's writes to the device to `bytes_per_s` (0: no limit).
    pub fn limit_writes(&self, bytes_per_s: u64) {
        let rule = format!("{} {bytes_per_s}", self.device);
        std::fs::write(self.dir.join("blkio.throttle.write_bps_device"), &rule)
            .unwrap_or_else(|e| panic!("set {rule}: {e}"));
    }

    /// Run the broker inside the group: the shell joins it, then becomes
    /// the broker, so every thread the broker starts (shards, io_uring
    /// workers) is born in it.
    pub fn wrapper(&self) -> Vec<String> {
        let procs = self.dir.join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$0\" \"$@\"", procs.display()),
        ]
    }
}

impl Drop for ThrottledGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `MAJ:MIN` of the disk holding `dir` (the parent disk of a partition:
/// throttling rules name whole disks).
fn whole_disk(dir: &Path) -> String {
    let dev = std::fs::metadata(dir).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    assert!(
        major != 0,
        "{} is on a device without a block device ({major}:{minor}: tmpfs, overlay?); \
         run the test with TMPDIR on a disk",
        dir.display()
    );
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.join("partition").exists() {
        let parent = sys.canonicalize().unwrap().parent().unwrap().join("dev");
        return std::fs::read_to_string(parent).unwrap().trim().to_string();
    }
    format!("{major}:{minor}")
}
