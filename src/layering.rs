//! The module layering rule, enforced by a test (see docs/architecture.md,
//! "Layers"). Dependencies point down: a module may name (`crate::x`) only
//! the modules listed for it in [`ALLOWED`], and every listed edge must go
//! to a lower layer, except the few in [`SAME_LAYER`] and [`KNOWN_UPWARD`].

/// Layers, top first. A module may depend on modules in lower layers.
pub const LAYERS: &[&[&str]] = &[
    // Wiring: binds the listeners, starts the shards and plugs the server
    // (and the Kafka listener) into them.
    &["broker"],
    // Connections, listeners, protocol handlers and the services they use.
    &["server", "kafka", "groups", "client", "cluster"],
    &["shard"],
    // The cluster controller: its replicated state machine, placement and
    // Raft replica (sans-IO apart from its own files); and the replicated
    // partitions' Raft pieces.
    &["controller", "replica"],
    &["router"],
    // Topic table and partition identity files.
    &["metadata"],
    // What of a partition's log is visible (high watermark, last stable
    // offset) and the leader epoch its appends carry.
    &["partition"],
    &["storage"],
    // Settings (topic record limits come from `format`).
    &["config"],
    // Leaves: byte formats, wire vocabulary, wake-ups, time, the data
    // directory lock, the binaries' allocator.
    &["format", "protocol", "event", "clock", "data_dir", "alloc"],
];

/// Every edge `module -> crate::other` that may appear in the source.
pub const ALLOWED: &[(&str, &[&str])] = &[
    (
        "broker",
        &[
            "cluster", "config", "data_dir", "kafka", "metadata", "router", "server", "shard",
        ],
    ),
    (
        "server",
        &[
            "clock", "config", "data_dir", "format", "groups", "metadata", "protocol", "router",
            "shard", "storage",
        ],
    ),
    (
        "kafka",
        &[
            "config",
            "event",
            "format",
            "groups",
            "metadata",
            "partition",
            "protocol",
            "router",
            "server",
            "shard",
            "storage",
        ],
    ),
    (
        "groups",
        &[
            "clock",
            "config",
            "format",
            "metadata",
            "partition",
            "protocol",
            "router",
            "shard",
            "storage",
        ],
    ),
    ("client", &["clock", "format", "protocol"]),
    (
        "cluster",
        &[
            "config",
            "controller",
            "metadata",
            "protocol",
            "router",
            "shard",
        ],
    ),
    (
        "shard",
        &[
            "clock",
            "config",
            "controller",
            "event",
            "format",
            "metadata",
            "partition",
            "protocol",
            "replica",
            "router",
            "storage",
        ],
    ),
    (
        "controller",
        &[
            "config", "format", "metadata", "protocol", "replica", "router",
        ],
    ),
    (
        "replica",
        &["format", "metadata", "partition", "protocol", "storage"],
    ),
    ("router", &["metadata", "partition", "protocol", "storage"]),
    ("metadata", &["config", "data_dir", "format", "storage"]),
    ("data_dir", &[]),
    ("partition", &["clock", "config", "event", "storage"]),
    ("storage", &["clock", "config", "event", "format"]),
    ("format", &[]),
    ("protocol", &[]),
    ("config", &["format"]),
    ("event", &[]),
    ("clock", &[]),
    ("alloc", &[]),
];

/// Edges inside one layer that are allowed, never both ways (a test checks
/// that [`ALLOWED`] has no cycle): the Kafka listener implements
/// `server::conn::Protocol` (the broker plugs it into the acceptor), and
/// the protocol handlers of both listeners call the group coordinator.
pub const SAME_LAYER: &[(&str, &str)] = &[
    ("kafka", "server"),
    ("server", "groups"),
    ("kafka", "groups"),
    // The controller's RPC port carries partition groups' batches too
    // (both encode raft-rs messages with `protocol::raft_codec`).
    ("controller", "replica"),
];

/// Upward edges not fixed yet (none today; keep the list so the test says
/// where to record one while it is being fixed).
pub const KNOWN_UPWARD: &[(&str, &str)] = &[];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn layer_of(m: &str) -> usize {
        LAYERS
            .iter()
            .position(|l| l.contains(&m))
            .unwrap_or_else(|| panic!("module `{m}` is in no layer (src/layering.rs LAYERS)"))
    }

    fn rs_files(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                rs_files(&e.unwrap().path(), out);
            }
        } else if p.is_file() && p.extension().is_some_and(|e| e == "rs") {
            out.push(p.to_path_buf());
        }
    }

    /// Modules named as `crate::<name>` in code (comments are skipped).
    fn crate_refs(src: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for line in src.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
                rest = after;
            }
        }
        out
    }

    #[test]
    fn allowed_edges_point_down() {
        for (from, tos) in ALLOWED {
            for to in *tos {
                let (a, b) = (layer_of(from), layer_of(to));
                let ok = b > a
                    || (a == b && SAME_LAYER.contains(&(from, to)))
                    || KNOWN_UPWARD.contains(&(from, to));
                assert!(ok, "allowed edge {from} -> {to} does not point down");
            }
        }
    }

    #[test]
    fn dependencies_point_down() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut violations = Vec::new();
        for (module, allowed) in ALLOWED {
            let mut files = Vec::new();
            rs_files(&src.join(module), &mut files);
            rs_files(&src.join(format!("{module}.rs")), &mut files);
            assert!(!files.is_empty(), "no source for module `{module}`");
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for to in crate_refs(&text) {
                    if to != *module && !allowed.contains(&to.as_str()) {
                        violations.push(format!(
                            "{}: crate::{to} (allowed from {module}: {allowed:?})",
                            f.strip_prefix(&src).unwrap().display()
                        ));
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "layering violations (see docs/architecture.md, Layers):\n{}",
            violations.join("\n")
        );
    }

    #[test]
    fn every_module_is_listed() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            if ["lib", "main", "layering"].contains(&name.as_str()) {
                continue;
            }
            assert!(
                ALLOWED.iter().any(|(m, _)| *m == name),
                "src/{name} is not in src/layering.rs ALLOWED"
            );
        }
    }

    /// No import cycle between modules: the allowed edges form a DAG.
    #[test]
    fn allowed_edges_have_no_cycle() {
        fn visit(m: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
            if done.contains(m) {
                return;
            }
            assert!(
                !path.iter().any(|p| p == m),
                "import cycle: {} -> {m}",
                path.join(" -> ")
            );
            path.push(m.to_string());
            let tos = ALLOWED
                .iter()
                .find(|(f, _)| *f == m)
                .map_or(&[][..], |(_, t)| *t);
            for to in tos {
                visit(to, path, done);
            }
            path.pop();
            done.insert(m.to_string());
        }
        let mut done = BTreeSet::new();
        for (m, _) in ALLOWED {
            visit(m, &mut Vec::new(), &mut done);
        }
    }

    /// docs/architecture.md shows every allowed edge: its
    /// `<!-- layering:edges -->` block lists exactly [`ALLOWED`].
    #[test]
    fn the_architecture_doc_lists_every_edge() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"),
        )
        .unwrap();
        let block = doc
            .split("<!-- layering:edges -->")
            .nth(1)
            .and_then(|rest| rest.split("```text").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("docs/architecture.md has a layering:edges block");
        let mut in_doc: Vec<(String, BTreeSet<String>)> = Vec::new();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let (from, to) = line.split_once('→').expect("`from → to` lines");
            let to: BTreeSet<String> = if to.trim() == "(nothing)" {
                BTreeSet::new()
            } else {
                to.split(',').map(|t| t.trim().to_string()).collect()
            };
            for m in from.split(',') {
                in_doc.push((m.trim().to_string(), to.clone()));
            }
        }
        in_doc.sort();
        let mut in_code: Vec<(String, BTreeSet<String>)> = ALLOWED
            .iter()
            .map(|(m, tos)| (m.to_string(), tos.iter().map(|t| t.to_string()).collect()))
            .collect();
        in_code.sort();
        assert_eq!(
            in_doc, in_code,
            "docs/architecture.md's layering:edges block differs from ALLOWED"
        );
    }

    #[test]
    fn scanner_sees_imports() {
        let refs = crate_refs("use crate::server::acceptor;\n// crate::kafka\nlet x = crate::shard::Shard::current(); // crate::groups");
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            vec!["server".to_string(), "shard".to_string()]
        );
    }
}
