//! `tuning/check-host.sh`, run as a user would: it reads the host, prints
//! its table and exits 0 (it only reports without --apply).

use std::path::Path;
use std::process::Command;

/// Whether this host's balloon reports free pages, read the way an
/// operator would check it by hand (tuning/README.md §3).
fn host_reports_free_pages() -> bool {
    let balloon = std::fs::read_dir("/sys/bus/virtio/drivers/virtio_balloon")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        })
        .unwrap_or(false);
    balloon && Path::new("/sys/module/page_reporting/parameters/page_reporting_order").exists()
}

#[test]
fn check_host_reports_whether_the_vm_hands_freed_memory_to_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/check-host.sh"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-host.sh failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("free page reporting"))
        .unwrap_or_else(|| panic!("no free page reporting row in:\n{text}"));
    let status = row.rsplit('|').next().unwrap().trim();
    if host_reports_free_pages() {
        assert_eq!(status, "WARN", "{row}");
        assert!(
            text.contains("--warmup 5s"),
            "the note says what to do:\n{text}"
        );
    } else {
        assert_eq!(status, "OK", "{row}");
    }
    assert!(text.contains("Summary: "), "{text}");
}
