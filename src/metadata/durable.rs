//! Replacing a small metadata file atomically and durably: write a
//! temporary file, fsync it, rename it over the target, fsync the
//! directory. After a crash the target holds either the old or the new
//! bytes, never a mix, and once this returns the new bytes survive power
//! loss.

use super::MetadataError;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `dir/name` through `dir/name.tmp`. On failure the
/// temporary file is removed (so a failed write on a full disk gives back
/// what it took).
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), MetadataError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let write_tmp = || -> Result<(), MetadataError> {
        let mut f = std::fs::File::create(&tmp).map_err(MetadataError::io("create", &tmp))?;
        f.write_all(bytes)
            .map_err(MetadataError::io("write", &tmp))?;
        f.sync_all().map_err(MetadataError::io("fsync", &tmp))
    };
    if let Err(e) = write_tmp() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(MetadataError::io("rename", &path))?;
    sync_dir(dir)
}

/// fsync a directory, making its entries (created, renamed, removed) durable.
pub fn sync_dir(dir: &Path) -> Result<(), MetadataError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(MetadataError::io("fsync", dir))
}
