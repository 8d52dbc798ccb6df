//! Live rescaling on the local cluster (`egret update --component-parallelism`): the stateful word count's counter
//! goes from 2 tasks to 5 and back to 1 while sentences flow, once with an instance killed just before, and the
//! counts end exact: every word's count moved with its key group to the task its tuples now go to.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use egret_examples::reliable_word_count::{expected_counts, sentences};

const SENTENCES: usize = 60_000;
const SEED: u64 = 11;
const TOPOLOGY: &str = "stateful-word-count";

/// The counter's task ids in the stored definition (a rescale changes them).
fn counter_tasks(c: &Cluster) -> Vec<u32> {
    let state = egret_statemgr::open(&c.home, "local").expect("state manager");
    let stored = state.get_topology(TOPOLOGY).expect("read").expect("stored");
    let t = egret_proto::defn::from_definition(&stored)
        .expect("definition")
        .topology;
    let ci = t.component_index("count").expect("count");
    t.tasks_of(ci).map(|t| t.0).collect()
}

/// The counts the counter's current tasks show (files of removed tasks are stale and left out).
fn live_counts(c: &Cluster, out: &Path) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for task in counter_tasks(c) {
        let text = std::fs::read_to_string(out.join(format!("count-{task}.txt"))).unwrap_or_default();
        for line in text.lines() {
            if let Some((w, n)) = line.split_once(' ')
                && let Ok(n) = n.parse::<u64>()
            {
                *all.entry(w.to_string()).or_default() += n;
            }
        }
    }
    all
}

fn settled_live(c: &Cluster, out: &Path, want: u64, limit: Duration) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + limit;
    let mut last = (BTreeMap::new(), Instant::now());
    loop {
        let now = live_counts(c, out);
        if now != last.0 {
            last = (now, Instant::now());
        } else if total(&last.0) >= want && last.1.elapsed() > Duration::from_secs(3) {
            return last.0;
        }
        if Instant::now() > deadline {
            c.print_logs();
            panic!(
                "the counts did not settle at {want} words within {limit:?}: {} counted",
                total(&last.0)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Submits the stateful word count over `n` sentences at `rate` sentences/s per spout task, into `out`.
fn submit(c: &Cluster, out: &Path, n: usize, rate: &str, extra: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_stateful-check");
    let (out_s, n, seed) = (out.display().to_string(), n.to_string(), SEED.to_string());
    let mut args = vec![
        "submit",
        "local",
        bin,
        "--out",
        &out_s,
        "--sentences",
        &n,
        "--seed",
        &seed,
        "--rate",
        rate,
    ];
    args.extend_from_slice(extra);
    c.ok(&args);
}

/// Waits for the live counters to settle and checks they hold the input's exact counts.
fn assert_exact(c: &Cluster, out: &Path, n: usize) {
    let expected = expected_counts(&sentences(n, SEED));
    let words = total(&expected);
    let got = settled_live(c, out, words, Duration::from_secs(150));
    let diff: Vec<_> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .take(5)
        .map(|(w, n)| format!("{w}: {n} expected, {:?} counted", got.get(w)))
        .collect();
    if !diff.is_empty() {
        c.print_logs();
    }
    assert!(diff.is_empty(), "{diff:?}");
    assert_eq!(total(&got), words);
}

/// Waits until the live counters hold more than `words` words.
fn counted_past(c: &Cluster, out: &Path, words: u64, what: &str) {
    wait_for(what, || (total(&live_counts(c, out)) > words).then_some(()));
}

fn update(c: &Cluster, parallelism: &str) -> Duration {
    let started = Instant::now();
    let out = c.ok(&["update", "local", TOPOLOGY, "--component-parallelism", parallelism]);
    eprintln!("egret update {parallelism}: {} in {:?}", out.trim(), started.elapsed());
    started.elapsed()
}

#[test]
fn rescale_the_stateful_counter_2_to_5_to_1_while_input_flows_keeps_counts_exact() {
    let words = total(&expected_counts(&sentences(SENTENCES, SEED)));
    let c = Cluster::new();
    let out = c.home.join("out");
    // 2 spouts × 1000 sentences/s: the input lasts ~30 s, across both rescales.
    submit(&c, &out, SENTENCES, "1000", &[]);
    assert_eq!(counter_tasks(&c).len(), 2);
    counted_past(&c, &out, words / 10, "some words counted");

    // The dry run changes nothing.
    let dry = c.ok(&[
        "update",
        "local",
        TOPOLOGY,
        "--component-parallelism",
        "count:5",
        "--dry-run",
    ]);
    assert!(dry.contains("count"), "{dry}");
    assert_eq!(counter_tasks(&c).len(), 2, "a dry run changes nothing");

    update(&c, "count:5");
    assert_eq!(counter_tasks(&c).len(), 5);
    counted_past(&c, &out, total(&live_counts(&c, &out)), "counting goes on at 5 tasks");

    // Once while a process is being killed: an instance of the counter dies just before the second rescale.
    let (pid, name) = victims(&c, TOPOLOGY, &["instance"])
        .into_iter()
        .find(|(_, n)| n.contains("count"))
        .expect("a counter instance");
    // SAFETY: SIGKILL to a process of this test's own topology.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    eprintln!("killed {name} (pid {pid})");
    update(&c, "count:1");
    assert_eq!(counter_tasks(&c).len(), 1);
    assert_exact(&c, &out, SENTENCES);
}

#[test]
fn rescale_the_sentence_spout_2_to_3_to_1_processes_every_sentence_once() {
    // The spout's partitions (and their positions) move to their new owners at the rescale's checkpoint: no
    // sentence skipped, none counted twice.
    let n = SENTENCES / 2;
    let words = total(&expected_counts(&sentences(n, SEED)));
    let c = Cluster::new();
    let out = c.home.join("out");
    submit(&c, &out, n, "700", &[]);
    counted_past(&c, &out, words / 10, "some words counted");
    update(&c, "sentence:3");
    counted_past(
        &c,
        &out,
        total(&live_counts(&c, &out)),
        "reading goes on at 3 spout tasks",
    );
    update(&c, "sentence:1");
    assert_exact(&c, &out, n);
}

#[test]
fn rescale_at_least_once_bolts_while_input_flows_loses_nothing() {
    // No state to move: routing changes when the plan arrives; tuples in flight to a removed task are lost and
    // replayed from the spout (their roots fail or time out), so every id is acked and reaches a sink.
    const N: u64 = 20_000;
    let c = Cluster::new();
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_reliable-check");
    let out_s = out.display().to_string();
    c.ok(&[
        "submit",
        "local",
        bin,
        "--out",
        &out_s,
        "--n",
        &N.to_string(),
        "--pause-micros",
        "300",
    ]);
    let t = "reliable-check";
    wait_for("some progress", || (ids(&out, "acked-").0.len() > 2_000).then_some(()));
    let up = c.ok(&[
        "update",
        "local",
        t,
        "--component-parallelism",
        "sink:4",
        "--component-parallelism",
        "relay:3",
    ]);
    eprintln!("{}", up.trim());
    let acked_then = ids(&out, "acked-").0.len();
    wait_for("progress at the new parallelism", || {
        (ids(&out, "acked-").0.len() > acked_then + 1_000).then_some(())
    });
    c.ok(&["update", "local", t, "--component-parallelism", "sink:1"]);
    let lines = every_id_acked_and_received(&out, N);
    eprintln!("{lines} sink receipts for {N} inputs ({} replayed)", lines - N);
}

#[test]
fn rescale_refuses_to_shrink_a_component_whose_state_is_not_keyed() {
    // The counter saves its counts as one opaque blob: growing it leaves each count where it is (new tasks start
    // empty and get only new words), shrinking it would drop a removed task's counts, so it is refused.
    let c = Cluster::new();
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_stateful-check");
    let out_s = out.display().to_string();
    c.ok(&[
        "submit",
        "local",
        bin,
        "--out",
        &out_s,
        "--sentences",
        "20000",
        "--rate",
        "500",
        "--opaque-state",
    ]);
    wait_for("a complete checkpoint", || {
        c.ok(&["checkpoints", "local", TOPOLOGY])
            .lines()
            .any(|l| l.contains(" yes"))
            .then_some(())
    });
    let refused = c.run(&["update", "local", TOPOLOGY, "--component-parallelism", "count:1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "shrinking opaque state is refused");
    assert!(stderr.contains("not keyed"), "{stderr}");
    assert_eq!(counter_tasks(&c).len(), 2, "nothing changed");
}
