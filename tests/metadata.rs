//! Metadata losses are loud, through real broker processes and real files:
//! a lost topic table stops the broker, `recover-metadata` rebuilds it, a
//! partition directory carries its topic's identity so a new topic never
//! adopts an old one's data, old data directories are migrated, and a
//! delete interrupted by a stop is finished at the next start.

mod common;

use common::{bin, ok, BrokerProc};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn table_path(dir: &Path) -> PathBuf {
    dir.join("meta").join("topics.json")
}

fn read_table(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(table_path(dir)).unwrap()).unwrap()
}

fn write_table(dir: &Path, v: &serde_json::Value) {
    std::fs::write(table_path(dir), serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn topic_id(dir: &Path, topic: &str) -> String {
    read_table(dir)["topics"][topic]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn produce(b: &BrokerProc, topic: &str, prefix: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let input = lines.join("\n") + "\n";
    ok(b.cli(&["produce", topic], Some(input.as_bytes())));
    lines
}

fn consume(b: &BrokerProc, topic: &str) -> Vec<String> {
    let mut v: Vec<String> = ok(b.cli(&["consume", topic, "--from-beginning"], None))
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn recover_metadata(dir: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .args(["recover-metadata", "--data-dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_lost_topic_table_with_partition_dirs_stops_the_broker_with_the_recovery_command() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "orders", "--partitions", "3"], None));
    produce(&b, "orders", "m", 50);
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.clone();

    std::fs::remove_file(table_path(&dir)).unwrap();
    let (code, err) = common::serve_expecting_exit(&dir, &[]);
    assert_eq!(
        code,
        Some(1),
        "the broker must refuse to start; stderr:\n{err}"
    );
    for want in [
        "refusing to start".to_string(),
        "missing".to_string(),
        dir.display().to_string(),
        "orders-0, orders-1, orders-2".to_string(),
        format!("shardlog recover-metadata --data-dir {}", dir.display()),
    ] {
        assert!(err.contains(&want), "stderr lacks '{want}':\n{err}");
    }
    assert!(
        !table_path(&dir).exists(),
        "a refused start writes no table"
    );

    // An unreadable table: the same refusal, saying why.
    std::fs::write(table_path(&dir), b"{\"version\": 3, \"topi").unwrap();
    let (code, err) = common::serve_expecting_exit(&dir, &[]);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(
        err.contains("unreadable") && err.contains("recover-metadata"),
        "{err}"
    );
}

#[test]
fn recover_metadata_rebuilds_the_table_and_the_data_is_served_again() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "orders", "--partitions", "3"], None));
    ok(b.cli(&["topic", "create", "events", "--partitions", "1"], None));
    let mut orders = produce(&b, "orders", "order", 300);
    let events = produce(&b, "events", "event", 40);
    orders.sort();
    assert_eq!(consume(&b, "orders"), orders);
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.clone();
    let (orders_id, events_id) = (topic_id(&dir, "orders"), topic_id(&dir, "events"));

    std::fs::remove_file(table_path(&dir)).unwrap();
    let (code, err) = common::serve_expecting_exit(&dir, &[]);
    assert_eq!(code, Some(1), "no start without the table: {err}");
    let out = recover_metadata(&dir, &[]);
    let text = ok(out);
    for want in [
        format!("topic orders: 3 partitions, id {orders_id} (from the identity files)"),
        format!("topic events: 1 partitions, id {events_id} (from the identity files)"),
        "could not recover".to_string(),
        "per-topic configs".to_string(),
    ] {
        assert!(text.contains(&want), "output lacks '{want}':\n{text}");
    }
    assert_eq!(topic_id(&dir, "orders"), orders_id, "topic id recovered");
    assert_eq!(read_table(&dir)["topics"]["orders"]["partitions"], 3);

    b.restart();
    assert_eq!(consume(&b, "orders"), orders, "every message served again");
    assert_eq!(consume(&b, "events"), events);
    let more = produce(&b, "orders", "after", 10);
    assert_eq!(consume(&b, "orders").len(), orders.len() + more.len());
    assert_eq!(b.stop(), Some(0));

    // A readable table is not replaced unless forced.
    let out = recover_metadata(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("present and readable"), "{err}");
}

#[test]
fn recover_metadata_refuses_while_the_data_dir_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("orders-0")).unwrap();
    // Hold the lock the way a running broker does.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .unwrap();
    use std::os::unix::io::AsRawFd;
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let out = recover_metadata(dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another shardlog process"), "{err}");
    assert!(!table_path(dir).exists());
    drop(f);
    ok(recover_metadata(dir, &[]));
    assert!(table_path(dir).exists());

    // And next to a real broker, which holds the lock for its whole life.
    let b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "t", "--partitions", "1"], None));
    std::fs::remove_file(table_path(&b.data_dir)).unwrap();
    let out = recover_metadata(&b.data_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another shardlog process") && err.contains(&b.pid().to_string()),
        "{err}"
    );
    assert!(!table_path(&b.data_dir).exists(), "nothing written");
}

#[test]
fn a_new_topic_does_not_adopt_a_leftover_directory_of_the_same_name() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "t", "--partitions", "2"], None));
    produce(&b, "t", "old", 100);
    ok(b.cli(&["topic", "create", "other", "--partitions", "1"], None));
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.clone();
    let old_id = topic_id(&dir, "t");
    // The table forgets the topic but its directories stay (a table put
    // back from an older copy, say).
    let mut table = read_table(&dir);
    table["topics"].as_object_mut().unwrap().remove("t");
    write_table(&dir, &table);

    b.restart();
    assert!(
        b.stderr()
            .contains("partition directory t-0 belongs to no topic"),
        "{}",
        b.stderr()
    );
    ok(b.cli(&["topic", "create", "t", "--partitions", "2"], None));
    assert_eq!(
        consume(&b, "t"),
        Vec::<String>::new(),
        "the new topic must not serve the old one's messages"
    );
    let new = produce(&b, "t", "new", 20);
    assert_eq!(consume(&b, "t"), new);
    assert_ne!(topic_id(&dir, "t"), old_id);
    // The old data is kept, aside.
    let stale: Vec<String> = std::fs::read_dir(dir.join("stale"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(stale.len(), 2, "{stale:?}");
    assert!(
        stale.iter().all(|n| n.contains(&old_id)),
        "named after the old topic id: {stale:?}"
    );
    assert!(b.stderr().contains("it is not adopted: moved aside"));
}

#[test]
fn a_partition_dir_with_another_topics_identity_is_refused_and_left_untouched() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "a", "--partitions", "2"], None));
    for p in ["0", "1"] {
        ok(b.cli(
            &["produce", "a", "--partition", p],
            Some(format!("a{p}-x\na{p}-y\n").as_bytes()),
        ));
    }
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.clone();
    let ident = dir.join("a-0").join("identity.json");
    let foreign = format!(
        "{{\"topic\":\"a\",\"partition\":0,\"topic_id\":\"{}\"}}",
        "f".repeat(32)
    );
    std::fs::write(&ident, &foreign).unwrap();
    let segments_before = std::fs::read_dir(dir.join("a-0")).unwrap().count();

    b.restart();
    let log = b.stderr();
    assert!(
        log.contains("partition directory") && log.contains("is not served"),
        "{log}"
    );
    let out = b.cli(
        &["consume", "a", "--partition", "0", "--from-beginning"],
        None,
    );
    assert!(!out.status.success(), "partition 0 is offline");
    let p1 = ok(b.cli(
        &["consume", "a", "--partition", "1", "--from-beginning"],
        None,
    ));
    assert_eq!(p1, "a1-x\na1-y\n", "the other partition serves");
    assert_eq!(b.stop(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&ident).unwrap(),
        foreign,
        "untouched"
    );
    assert_eq!(
        std::fs::read_dir(dir.join("a-0")).unwrap().count(),
        segments_before
    );
}

#[test]
fn a_data_dir_from_before_identity_files_is_migrated_on_first_start() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "legacy", "--partitions", "2"], None));
    let mut msgs = produce(&b, "legacy", "m", 60);
    msgs.sort();
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.clone();
    for p in 0..2 {
        std::fs::remove_file(dir.join(format!("legacy-{p}")).join("identity.json")).unwrap();
    }

    b.restart();
    assert!(b.stderr().contains("migration: wrote an identity file"));
    let id = topic_id(&dir, "legacy");
    for p in 0..2 {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("legacy-{p}")).join("identity.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(v["topic_id"], id.as_str());
        assert_eq!(v["partition"], p);
    }
    assert_eq!(consume(&b, "legacy"), msgs);
}

#[test]
fn a_delete_interrupted_by_a_stop_is_finished_at_the_next_start() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "gone", "--partitions", "2"], None));
    ok(b.cli(&["topic", "create", "kept", "--partitions", "1"], None));
    produce(&b, "gone", "g", 30);
    let kept = produce(&b, "kept", "k", 30);
    assert_eq!(b.stop(), Some(0));
    let dir = b.data_dir.clone();
    // The table as a delete leaves it just before the crash: the topic is
    // gone from it and listed as being deleted; its directories are still there.
    let mut table = read_table(&dir);
    let meta = table["topics"]
        .as_object_mut()
        .unwrap()
        .remove("gone")
        .unwrap();
    table["deleting"] = serde_json::json!([
        {"name": "gone", "id": meta["id"], "partitions": 2}
    ]);
    write_table(&dir, &table);
    assert!(dir.join("gone-0").exists() && dir.join("gone-1").exists());

    b.restart();
    assert!(
        b.stderr()
            .contains("deleted topic 'gone': removed 2 leftover partition directories"),
        "{}",
        b.stderr()
    );
    assert!(!dir.join("gone-0").exists() && !dir.join("gone-1").exists());
    assert!(read_table(&dir).get("deleting").is_none());
    assert_eq!(ok(b.cli(&["topic", "list"], None)), "kept\t1\n");
    assert_eq!(consume(&b, "kept"), kept);
    ok(b.cli(&["topic", "create", "gone", "--partitions", "2"], None));
    assert_eq!(consume(&b, "gone"), Vec::<String>::new());
}

#[test]
fn a_deleted_topic_leaves_no_directory_and_no_deleting_entry() {
    let mut b = BrokerProc::start(&[]);
    ok(b.cli(&["topic", "create", "d", "--partitions", "3"], None));
    produce(&b, "d", "x", 30);
    ok(b.cli(&["topic", "delete", "d"], None));
    let dir = b.data_dir.clone();
    for p in 0..3 {
        assert!(!dir.join(format!("d-{p}")).exists());
    }
    assert!(read_table(&dir).get("deleting").is_none());
    assert!(
        dir.join("meta").join("reserve").exists(),
        "space reserve kept"
    );
    assert_eq!(b.stop(), Some(0));
}
