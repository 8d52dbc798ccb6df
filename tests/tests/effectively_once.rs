//! Effectively-once on the local cluster: the stateful word count over a finite, replayable input (200 000 sentences,
//! 1.1 million words) in 2 containers, while processes of every kind are killed with SIGKILL at random moments. When
//! the input is exhausted the counts the counters hold equal the input's exact counts; the same run under
//! at-least-once counts words twice.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use egret_examples::reliable_word_count::{expected_counts, sentences};

const SENTENCES: usize = 200_000;
const SEED: u64 = 7;

fn submit(c: &Cluster, out: &Path, sentences: usize, extra: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_stateful-check");
    let out = out.display().to_string();
    let sentences = sentences.to_string();
    let seed = SEED.to_string();
    let mut args = vec![
        "submit",
        "local",
        bin,
        "--out",
        &out,
        "--sentences",
        &sentences,
        "--seed",
        &seed,
    ];
    args.extend_from_slice(extra);
    c.ok(&args);
}

#[test]
fn effectively_once_counts_exactly_while_processes_are_killed() {
    let expected = expected_counts(&sentences(SENTENCES, SEED));
    let words = total(&expected);
    let c = Cluster::new();
    let out = c.home.join("out");
    submit(&c, &out, SENTENCES, &[]);
    let t = "stateful-word-count";
    let killed = kill_randomly(&c, t, &["instance", "stmgr", "tmanager"], 10, || {
        format!("{} words counted", total(&counts(&out)))
    });
    let got = settled(&out, words, Duration::from_secs(150));
    if got != expected {
        c.print_logs();
    }
    let diff: Vec<_> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .take(5)
        .map(|(w, n)| format!("{w}: {n} expected, {:?} counted", got.get(w)))
        .collect();
    assert!(diff.is_empty(), "after killing {killed:?}: {diff:?}");
    assert_eq!(total(&got), words);
}

#[test]
fn at_least_once_over_counts_where_effectively_once_is_exact() {
    let expected = expected_counts(&sentences(SENTENCES / 4, SEED));
    let words = total(&expected);
    let c = Cluster::new();
    let out = c.home.join("out");
    submit(&c, &out, SENTENCES / 4, &["--at-least-once"]);
    let t = "stateful-word-count";
    wait_for("some words counted", || {
        (total(&counts(&out)) > words / 4).then_some(())
    });
    // A spout task that restarts has no saved position: it emits its share again from the start.
    let (pid, name) = victims(&c, t, &["sentence"])[0].clone();
    // SAFETY: SIGKILL to a process of this test's own topology.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    eprintln!("killed {name}");
    let got = settled(&out, words, Duration::from_secs(90));
    assert!(
        total(&got) > words,
        "at-least-once replays count twice: {} of {words}",
        total(&got)
    );
}

/// The newest checkpoint `egret checkpoints` marks complete, if any.
fn newest_complete(c: &Cluster, topology: &str) -> Option<u64> {
    c.ok(&["checkpoints", "local", topology])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.parse::<u64>().ok()?;
            (f.next()? == "yes").then_some(id)
        })
        .max()
}

#[test]
fn effectively_once_a_new_run_restores_a_kept_checkpoint() {
    let sentences_n = SENTENCES / 4;
    let expected = expected_counts(&sentences(sentences_n, SEED));
    let words = total(&expected);
    let c = Cluster::new();
    let t = "stateful-word-count";
    let out = c.home.join("out");
    // A slow first run, killed part way: its checkpoints stay in the store.
    submit(&c, &out, sentences_n, &["--rate", "1000"]);
    let kept = wait_for("a complete checkpoint part way through", || {
        newest_complete(&c, t).filter(|_| total(&counts(&out)) > words / 10)
    });
    c.ok(&["kill", "local", t]);
    let listing = c.ok(&["checkpoints", "local", t]);
    assert!(listing.contains(&kept.to_string()), "kept after kill: {listing}");
    assert!(
        newest_complete(&c, t).is_none(),
        "a killed topology records none as complete: {listing}"
    );
    // A second run from that checkpoint, at full speed, into a fresh output: it finishes the input exactly once.
    let out2 = c.home.join("out2");
    let id = kept.to_string();
    let bin = env!("CARGO_BIN_EXE_stateful-check");
    let (out2_s, n, seed) = (out2.display().to_string(), sentences_n.to_string(), SEED.to_string());
    let refused = c.run(&[
        "submit",
        "local",
        "--restore-checkpoint",
        "999999999",
        bin,
        "--out",
        &out2_s,
    ]);
    assert!(!refused.status.success(), "an unknown checkpoint is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("999999999 is not in"));
    c.ok(&[
        "submit",
        "local",
        "--restore-checkpoint",
        &id,
        bin,
        "--out",
        &out2_s,
        "--sentences",
        &n,
        "--seed",
        &seed,
        "--rate",
        "20000",
    ]);
    let got = settled(&out2, words, Duration::from_secs(90));
    assert_eq!(got, expected, "restored from checkpoint {kept}, the counts end exact");
    // The tracker shows the new run's checkpoints: newer than the one it started from, and each instance's series.
    let tracker = Tracker::start(&c);
    let v = tracker.ok(&format!("/api/v1/topologies/local/{t}/checkpoints"));
    assert!(v["epoch"].as_u64().is_some_and(|e| e >= 1), "{v}");
    let newest = v["complete"].as_array().and_then(|a| a.last()).and_then(|c| c.as_u64());
    assert!(newest.is_some_and(|n| n > kept), "{v}");
    let saved = v["instances"].as_array().map(|a| {
        a.iter()
            .filter(|i| i["metrics"]["checkpoints_saved"].as_f64() > Some(0.0))
            .count()
    });
    assert_eq!(saved, Some(6), "every instance publishes its saves: {v}");
}
