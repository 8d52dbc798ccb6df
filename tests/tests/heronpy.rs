//! heronpy topologies on the local cluster: Python files under `tests/python/`, written only against heronpy 0.20.5's
//! API, submitted unchanged with `egret submit local <file>.py` and run by Egret's Python instance (the
//! `egret_python` wheel, which `scripts/install-python` builds and installs; `scripts/test` runs it first). The
//! components write what they saw to files under a directory given on the topology's command line.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    // heronpy's metrics, registered by CountBolt with `context.register_metric`, are Egret user metrics.
    wait_for("the heronpy metrics to reach /metrics", || {
        (c.metric_sum(name, "egret_user_words_counted", "") == 12_000.0).then_some(())
    });
    assert_eq!(c.metric_sum(name, "egret_user_by_word", "key=\"heron\""), 20_000.0);
    assert_eq!(c.metric_sum(name, "egret_user_by_word", "key=\"storm\""), 2000.0);
    // The mean increment of the last interval with any: 1, or 10 for "heron", or a mix; it is a gauge in [1, 10].
    let means = c.metric_sum(name, "egret_user_mean_increment", "");
    assert!((1.0..=20.0).contains(&means), "two tasks' mean increments: {means}");
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

/// Lines of the files `<out>/<prefix>-<task>.txt`, by task.
fn lines_by_task(out: &Path, prefix: &str) -> BTreeMap<u32, Vec<String>> {
    let mut all = BTreeMap::new();
    for p in walk(out) {
        let name = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        let Some(task) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".txt"))
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        all.insert(task, text.lines().map(String::from).collect());
    }
    all
}

/// The numbers of `<out>/<prefix>-*.txt` (one per line) with how often each was written.
fn numbers(out: &Path, prefix: &str) -> BTreeMap<u64, usize> {
    let mut all = BTreeMap::new();
    for line in lines_by_task(out, prefix).into_values().flatten() {
        if let Ok(n) = line.trim().parse() {
            *all.entry(n).or_insert(0) += 1;
        }
    }
    all
}

fn once_each(range: std::ops::Range<u64>) -> BTreeMap<u64, usize> {
    range.map(|n| (n, 1)).collect()
}

#[test]
fn heronpy_streams_and_groupings_deliver_exactly() {
    require_egret_python();
    let c = Cluster::new();
    let out = out_dir(&c);
    let out_s = out.display().to_string();
    const PER_TASK: u64 = 500;
    const ALL: u64 = 2 * PER_TASK;
    // A heronpy Topology class: its name is the class's.
    c.ok(&[
        "submit",
        "local",
        &topology("multi_stream_topology.py"),
        &out_s,
        &PER_TASK.to_string(),
    ]);
    let name = "MultiStreamTopology";
    let total = |prefix: &str| lines_by_task(&out, prefix).values().map(Vec::len).sum::<usize>() as u64;
    wait_for("every tuple to be recorded", || {
        (total("shuffled") == ALL
            && total("by_parity") == ALL
            && total("global_sink") == ALL
            && total("everyone") == 2 * ALL)
            .then_some(())
    });
    // Let anything extra arrive before checking that nothing did.
    std::thread::sleep(Duration::from_secs(2));
    let ns = |lines: &[String], source: &str| -> BTreeMap<u64, usize> {
        let mut m = BTreeMap::new();
        for l in lines {
            let mut parts = l.split(' ');
            assert_eq!(parts.next(), Some(source), "{l}");
            *m.entry(parts.next().unwrap().parse::<u64>().unwrap()).or_insert(0) += 1;
        }
        m
    };
    // Shuffle: every number once, over both tasks.
    let shuffled: Vec<String> = lines_by_task(&out, "shuffled").into_values().flatten().collect();
    assert_eq!(ns(&shuffled, "numbers/default"), once_each(0..ALL));
    // Fields on parity: every number once, and each parity at one task only (Egret's fields hash of the str).
    let by_parity = lines_by_task(&out, "by_parity");
    let mut parity_task = BTreeMap::new();
    for (task, lines) in &by_parity {
        for l in lines {
            let parity = l.rsplit(' ').next().unwrap().to_string();
            let n: u64 = l.split(' ').nth(1).unwrap().parse().unwrap();
            assert_eq!(parity, if n.is_multiple_of(2) { "even" } else { "odd" }, "{l}");
            assert_eq!(
                *parity_task.entry(parity).or_insert(*task),
                *task,
                "a parity went to two tasks"
            );
        }
    }
    let all_parity: Vec<String> = by_parity.into_values().flatten().collect();
    assert_eq!(ns(&all_parity, "numbers/default"), once_each(0..ALL));
    // Global: everything at the lowest task of global_sink (tasks are dealt by component name: by_parity 1-2,
    // everyone 3-4, global_sink 5-6).
    let global = lines_by_task(&out, "global_sink");
    assert_eq!(global.keys().copied().collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(ns(&global[&5], "by_parity/checked"), once_each(0..ALL));
    assert!(
        global[&6].is_empty(),
        "the other global_sink task received {:?}",
        &global[&6][..3.min(global[&6].len())]
    );
    // All: each everyone task got every word, with the Python tuple value intact.
    let everyone = lines_by_task(&out, "everyone");
    assert_eq!(everyone.len(), 2);
    let expected: BTreeSet<String> = (0..ALL).map(|n| format!("numbers/words w{n} tuple:{n},meta")).collect();
    for (task, lines) in &everyone {
        assert_eq!(lines.len() as u64, ALL, "task {task}");
        assert_eq!(lines.iter().cloned().collect::<BTreeSet<_>>(), expected, "task {task}");
    }
    assert!(c.ok(&["list", "local"]).contains(name));
}

/// The reliable topology in `mode` (`fail` or `raise`): every number acked exactly once in the end, exactly the
/// numbers ending in 3 failed once each and replayed, every number reaching the sink.
fn reliable(mode: &str) -> Cluster {
    require_egret_python();
    let c = Cluster::new();
    let out = out_dir(&c);
    let out_s = out.display().to_string();
    const N: u64 = 2000;
    let name = format!("heronpy-reliable-{mode}");
    c.ok(&[
        "submit",
        "local",
        &topology("reliable_topology.py"),
        &name,
        &out_s,
        &N.to_string(),
        mode,
    ]);
    let acked = wait_for("every number to be acked", || {
        let acked = numbers(&out, "acked");
        (acked.len() as u64 == N).then_some(acked)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(numbers(&out, "acked"), acked, "late acks");
    assert_eq!(acked, once_each(0..N), "each number acked exactly once");
    let refused: BTreeMap<u64, usize> = (0..N).filter(|n| n % 10 == 3).map(|n| (n, 1)).collect();
    assert_eq!(
        numbers(&out, "failed"),
        refused,
        "exactly the refused numbers failed, once each"
    );
    let sunk = numbers(&out, "sink");
    assert_eq!(
        sunk.keys().copied().collect::<BTreeSet<_>>(),
        (0..N).collect::<BTreeSet<_>>()
    );
    let spout_acks = c.metric_sum(&name, "egret_ack_count", "component=\"numbers\"");
    assert!(spout_acks <= N as f64, "{spout_acks}");
    c
}

#[test]
fn heronpy_reliable_topology_acks_fails_and_replays_exactly() {
    reliable("fail");
}

#[test]
fn heronpy_bolt_exceptions_are_reported_failed_and_replayed() {
    let c = reliable("raise");
    let name = "heronpy-reliable-raise";
    let t = Tracker::start(&c);
    // Each refused number raised once in `process`: 200 exceptions, summarised by message per task.
    let exceptions = wait_for("the exceptions to reach the tracker", || {
        let e = t.ok(&format!("/api/v1/topologies/local/{name}/exceptions"));
        let judge: Vec<serde_json::Value> = e
            .as_array()?
            .iter()
            .filter(|x| x["component"] == "judge")
            .cloned()
            .collect();
        let count: i64 = judge.iter().map(|x| x["count"].as_i64().unwrap_or(0)).sum();
        (count == 200).then_some(judge)
    });
    for e in &exceptions {
        assert_eq!(
            e["message"], "process raised ValueError: the judge refuses a number ending in 3 the first time",
            "{e}"
        );
    }
    // The traceback is in the instance's log; the instance kept running.
    let logs = walk(&c.home.join("logs"));
    let judge_logs: Vec<String> = logs
        .iter()
        .filter(|p| p.to_string_lossy().contains("-judge.log"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        judge_logs
            .iter()
            .any(|l| l.contains("Traceback (most recent call last)") && l.contains("in process")),
        "no traceback in the judge's logs"
    );
    let explain = c.explain(name);
    for p in explain["processes"].as_array().unwrap() {
        assert_eq!(p["restarts"].as_i64().unwrap_or(0), 0, "{p}");
    }
}

#[test]
fn heronpy_stateful_word_count_is_exact_under_effectively_once_while_processes_are_killed() {
    require_egret_python();
    let c = Cluster::new();
    let out = out_dir(&c);
    let out_s = out.display().to_string();
    let name = "heronpy-stateful";
    // 2 spouts of 12 000 words at 2000 words/s each (6 s of input), 2 counters, 2 containers, checkpoints every
    // second; heronpy StatefulComponents keep their position and counts in heronpy's State.
    c.ok(&[
        "submit",
        "local",
        &topology("stateful_word_count_topology.py"),
        name,
        "--out",
        &out_s,
        "--words-per-task",
        "12000",
        "--words-per-sec",
        "2000",
    ]);
    wait_for("the first counts", || (total(&counts(&out)) > 0).then_some(()));
    let killed = kill_randomly(&c, name, &["instance", "stmgr"], 3, || {
        format!("{} words counted", total(&counts(&out)))
    });
    let got = settled(&out, 24_000, Duration::from_secs(120));
    let expected: BTreeMap<String, u64> = ["bad", "bye", "good", "hello", "heron", "storm"]
        .into_iter()
        .map(|w| (w.to_string(), 4000))
        .collect();
    assert_eq!(got, expected, "after killing {killed:?}");
    assert!(
        c.metric_sum(name, "egret_checkpoints_saved", "") > 0.0,
        "no checkpoint was saved"
    );
}
