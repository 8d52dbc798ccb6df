//! The Streamlet API on the local cluster: a streamlet word count (source → flat_map → count_by_key → sink) runs as
//! real processes, under its operators' names, and ends with the exact counts.

mod common;

use std::collections::BTreeMap;

use common::*;
use egret_examples::reliable_word_count::{expected_counts, sentences};

const SENTENCES: usize = 20_000;

#[test]
fn a_streamlet_word_count_runs_on_the_local_cluster_with_exact_counts() {
    let expected = expected_counts(&sentences(SENTENCES, 7));
    let c = Cluster::new();
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_streamlet-check");
    let (out_s, n) = (out.display().to_string(), SENTENCES.to_string());
    c.ok(&["submit", "local", bin, "--out", &out_s, "--sentences", &n]);
    let t = "streamlet-word-count";
    let e = c.explain(t);
    let names: Vec<&str> = e["logical_plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["count", "sentences", "sink", "split"],
        "components carry the streamlets' names"
    );
    // The largest running count of each word is its final count.
    let got = wait_for("the sink to see every word counted", || {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for p in walk(&out) {
            for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                if let Some((w, n)) = line.split_once(' ')
                    && let Ok(n) = n.parse::<u64>()
                {
                    let e = last.entry(w.to_string()).or_default();
                    *e = (*e).max(n);
                }
            }
        }
        (last == expected).then_some(last)
    });
    assert_eq!(got, expected);
}

/// What the `tally` tasks of `window-check` hold: `(page, window start)` → (count, results), merged over tasks.
fn tallies(out: &std::path::Path) -> BTreeMap<(String, i64), (u64, u32)> {
    let mut all = BTreeMap::new();
    for p in walk(out) {
        let name = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        if !(name.starts_with("tally-") && name.ends_with(".txt")) {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if let [page, start, count, results] = f[..]
                && let (Ok(start), Ok(count), Ok(results)) =
                    (start.parse::<i64>(), count.parse::<u64>(), results.parse::<u32>())
            {
                let e: &mut (u64, u32) = all.entry((page.to_string(), start)).or_default();
                e.0 += count;
                e.1 += results;
            }
        }
    }
    all
}

#[test]
fn an_effectively_once_event_time_window_count_is_exact_while_processes_are_killed() {
    use egret_examples::streamlets::{page_view_windows, page_views};
    const VIEWS: usize = 160_000;
    let expected = page_view_windows(&page_views(VIEWS, 5, 200, 7), 1000);
    let c = Cluster::new();
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_window-check");
    let (out_s, n) = (out.display().to_string(), VIEWS.to_string());
    c.ok(&["submit", "local", bin, "--out", &out_s, "--views", &n]);
    let t = "windowed-page-views";
    let killed = kill_randomly(&c, t, &["instance", "stmgr", "tmanager"], 8, || {
        format!("{} windows tallied", tallies(&out).len())
    });
    // Settled: every window of the input tallied, and nothing changed for two seconds (or the deadline passed; what
    // is wrong is then shown below).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut last = (BTreeMap::new(), std::time::Instant::now());
    let got = loop {
        let now = tallies(&out);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if expected.keys().all(|k| last.0.contains_key(k)) && last.1.elapsed().as_secs() >= 2 {
            break last.0;
        }
        if std::time::Instant::now() > deadline {
            eprintln!(
                "the windows did not settle: {} of {} tallied",
                last.0.len(),
                expected.len()
            );
            break last.0;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, n)| got.get(*k) != Some(&(**n, 1)))
        .take(5)
        .map(|(k, n)| format!("{k:?}: {n} once expected, (count, results) {:?}", got.get(k)))
        .collect();
    if !wrong.is_empty() {
        c.print_logs();
    }
    assert!(wrong.is_empty(), "after killing {killed:?}: {wrong:?}");
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.is_empty(), "windows no view fell in: {extra:?}");
}
