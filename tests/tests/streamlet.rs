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
