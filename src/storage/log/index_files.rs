//! A segment's sparse index files (offset index and time index) on disk:
//! loading them at open, and writing them when a segment is sealed or the
//! log closes. The byte layout is in docs/segment_format.md; the encoding
//! lives in [`SegmentIndex`].
//!
//! Why a missing or broken index is not an error: an index only speeds up
//! reads, and the segment it describes is the truth. The replayer rebuilds
//! it by scanning the segment instead.
//!
//! Runs on the partition's shard, from the replayer (load) and the
//! flusher/writer (write).

use super::super::file::{read_small_file, write_small_file, Disk};
use super::super::index::SegmentIndex;
use super::super::segment;
use super::super::StorageError;
use super::io_err;
use std::path::Path;
use tracing::{info, warn};

/// The segment at `base`'s index, if both files are there and decode
/// against the segment's `size`; None (and a log line) otherwise.
pub(super) async fn load<D: Disk>(
    disk: &D,
    dir: &Path,
    base: u64,
    size: u64,
) -> Option<SegmentIndex> {
    let ip = segment::index_path(dir, base);
    let tp = segment::time_index_path(dir, base);
    if !disk.exists(&ip) || !disk.exists(&tp) {
        info!(segment = base, dir = %dir.display(), "index missing; rebuilding");
        return None;
    }
    let (o, t) = match (
        read_small_file(disk, &ip).await,
        read_small_file(disk, &tp).await,
    ) {
        (Ok(o), Ok(t)) => (o, t),
        _ => return None,
    };
    match SegmentIndex::decode(&o, &t, size) {
        Ok(i) => Some(i),
        Err(e) => {
            warn!(segment = base, dir = %dir.display(), "broken index ({e}); rebuilding");
            None
        }
    }
}

pub(super) async fn write<D: Disk>(
    disk: &D,
    dir: &Path,
    base: u64,
    index: &SegmentIndex,
) -> Result<(), StorageError> {
    let ip = segment::index_path(dir, base);
    let tp = segment::time_index_path(dir, base);
    write_small_file(disk, &ip, &index.encode_offsets())
        .await
        .map_err(io_err("write index", &ip))?;
    write_small_file(disk, &tp, &index.encode_times())
        .await
        .map_err(io_err("write time index", &tp))?;
    Ok(())
}
