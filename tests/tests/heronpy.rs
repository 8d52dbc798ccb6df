//! heronpy topologies on the local cluster: Python files under `tests/python/`, written only against heronpy 0.20.5's
//! API, submitted unchanged with `egret submit local <file>.py` and run by Egret's Python instance (the
//! `egret_python` wheel, which `scripts/install-python` builds and installs; `scripts/test` runs it first). The
//! components write what they saw to files under a directory given on the topology's command line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A topology file of `tests/python/`.
fn topology(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(file)
        .display()
        .to_string()
}

/// The Python `egret submit` uses must have the egret_python package: say how to get it rather than fail later.
fn require_egret_python() {
    let python = std::env::var("EGRET_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import egret_python._native, heronpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} lacks egret_python or heronpy: run scripts/install-python (scripts/test does)"
    );
}

fn out_dir(c: &Cluster) -> PathBuf {
    let out = c.home.join("out");
    std::fs::create_dir_all(&out).unwrap();
    out
}

#[test]
fn heronpy_word_count_counts_exactly() {
    require_egret_python();
    let c = Cluster::new();
    let out = out_dir(&c);
    let out_s = out.display().to_string();
    let name = "heronpy-word-count";
    // Heron's Python word count: 2 spouts of 6000 words each (6 words in turn), 2 counters by fields grouping, at
    // least once, 2 containers.
    c.ok(&[
        "submit",
        "local",
        &topology("word_count_topology.py"),
        name,
        "--out",
        &out_s,
        "--words-per-task",
        "6000",
        "--containers",
        "2",
    ]);
    let counts = settled(&out, 30_000, DEADLINE);
    let expected: BTreeMap<String, u64> = [
        ("bad", 2000),
        ("bye", 2000),
        ("good", 2000),
        ("hello", 2000),
        ("heron", 20_000), // CountBolt counts "heron" ten times
        ("storm", 2000),
    ]
    .into_iter()
    .map(|(w, n)| (w.to_string(), n))
    .collect();
    assert_eq!(counts, expected);
    // Fields grouping: each word is counted by exactly one task.
    let mut seen = BTreeMap::new();
    for p in walk(&out) {
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let word = line.split(' ').next().unwrap().to_string();
            assert!(
                seen.insert(word.clone(), file.clone()).is_none(),
                "{word} counted by two tasks"
            );
        }
    }
    // Every emit was tracked (tup_id given) and acked by the Rust ledger; Python's `ack` was called for each.
    wait_for("every word to be acked", || {
        let acked = c.metric_sum(name, "egret_ack_count", "component=\"word_spout\"");
        (acked == 12_000.0).then_some(())
    });
    assert_eq!(c.metric_sum(name, "egret_fail_count", "component=\"word_spout\""), 0.0);
}

#[test]
fn heronpy_submit_refuses_what_does_not_import() {
    require_egret_python();
    let c = Cluster::new();
    // The file itself raises on import.
    let r = c.run(&["submit", "local", &topology("bad_import_topology.py"), "bad-import"]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{stderr}");
    assert!(stderr.contains("ModuleNotFoundError"), "{stderr}");
    assert!(stderr.contains("no_such_module_for_egret"), "{stderr}");
    assert!(stderr.contains("Traceback"), "{stderr}");
    // The definition names a class its module does not have: refused by the class check, before anything starts.
    let r = c.run(&[
        "submit",
        "local",
        &topology("missing_class_topology.py"),
        "missing-class",
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{stderr}");
    assert!(stderr.contains("cannot load class"), "{stderr}");
    assert!(stderr.contains("has no class 'VanishedBolt'"), "{stderr}");
    let listed = c.ok(&["list", "local", "--json"]);
    assert_eq!(listed.trim(), "[]", "nothing was started: {listed}");
}
