//! The data directory's layout: which of its entries are partition
//! directories.
//!
//! A partition directory is named `<topic>-<partition>`, with a valid topic
//! name and the partition number in canonical decimal (no sign, no leading
//! zero), exactly as [`super::partition_dir`] names it. Everything else in
//! the data directory (`meta/`, `stale/`, `.lock`, `.iopoll-probe`, logs an
//! operator keeps there, `lost+found`) is not a partition directory: none of
//! those names end in `-<digits>`, and nothing that does is created by the
//! broker except partition directories.

use super::validate_name;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Subdirectory that holds partition directories moved out of the way
/// (see [`super::identity::move_aside`]). It is never scanned for partitions.
pub const STALE_DIR: &str = "stale";

/// The topic and partition a directory name stands for, if it is a partition directory name.
pub fn parse_partition_dir(name: &str) -> Option<(String, u32)> {
    let (topic, p) = name.rsplit_once('-')?;
    let canonical =
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
    if !canonical {
        return None;
    }
    let partition: u32 = p.parse().ok()?;
    validate_name(topic).ok()?;
    Some((topic.to_string(), partition))
}

/// Every partition directory in `data_dir`, by topic, partitions ascending.
/// A missing data directory has none.
pub fn partition_dirs(data_dir: &Path) -> io::Result<BTreeMap<String, Vec<u32>>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some((topic, p)) = parse_partition_dir(&name) {
            out.entry(topic).or_default().push(p);
        }
    }
    for ps in out.values_mut() {
        ps.sort_unstable();
    }
    Ok(out)
}

/// `orders-0, orders-1, ... (N more)`: a short list of directory names for messages.
pub fn describe(dirs: &BTreeMap<String, Vec<u32>>, max: usize) -> String {
    let names: Vec<String> = dirs
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| format!("{t}-{p}")))
        .collect();
    let mut s = names
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(", ... ({} more)", names.len() - max));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names() {
        assert_eq!(parse_partition_dir("orders-0"), Some(("orders".into(), 0)));
        assert_eq!(parse_partition_dir("a-b-12"), Some(("a-b".into(), 12)));
        // Topic names may end in '-'.
        assert_eq!(parse_partition_dir("t--1"), Some(("t-".into(), 1)));
        assert_eq!(
            parse_partition_dir("__consumer_offsets-7"),
            Some(("__consumer_offsets".into(), 7))
        );
        for not in [
            "meta",
            "stale",
            "lost+found",
            "orders-",
            "orders-01",
            "-1",
            "orders-1x",
            "orders-99999999999",
            ".iopoll-probe",
        ] {
            assert_eq!(parse_partition_dir(not), None, "{not}");
        }
    }

    #[test]
    fn describe_truncates() {
        let mut m = BTreeMap::new();
        m.insert("t".to_string(), vec![0, 1, 2]);
        assert_eq!(describe(&m, 2), "t-0, t-1, ... (1 more)");
        assert_eq!(describe(&m, 5), "t-0, t-1, t-2");
    }
}
