//! The examples end with the results they promise.

use std::sync::Arc;
use std::time::Duration;

use egret::simulator::Simulator;
use egret_examples::exclamation::{self, ExclamationBolt, TestWordSpout};
use egret_examples::reliable_word_count::{self, FlakyCountBolt, SentenceSpout};
use egret_examples::word_count::{self, CountBolt, WordCountOptions};

#[test]
fn reliable_word_count_ends_with_exact_counts_despite_failures_and_drops() {
    let sentences = Arc::new(reliable_word_count::sentences(2_000, 7));
    let expected = reliable_word_count::expected_counts(&sentences);
    let topology = reliable_word_count::topology(Arc::clone(&sentences), 3, 0.10, 0.02, 1).unwrap();
    let running = Simulator::start(topology).unwrap();
    running
        .wait_until(Duration::from_secs(60), |m| m.component("sentence").acked >= 2_000)
        .unwrap();
    let f = running.stop();
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    let spout = f.spouts::<SentenceSpout>("sentence")[0];
    assert_eq!(spout.acked.len(), 2_000);
    assert!(spout.fails > 0, "the bolt's failures must have caused replays");
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let mut dropped = 0;
    for b in f.bolts::<FlakyCountBolt>("count") {
        dropped += b.dropped_on_purpose;
        for (w, c) in &b.counts {
            *counts.entry(w.clone()).or_default() += c;
        }
    }
    assert!(dropped > 0, "some tuples must have been recovered by the timeout alone");
    assert_eq!(counts, expected);
}

#[test]
fn exclamation_chains_two_bolts() {
    let f = Simulator::start(exclamation::topology(2).unwrap())
        .unwrap()
        .run_for(Duration::from_millis(300));
    let bolts = f.bolts::<ExclamationBolt>("exclaim2");
    assert_eq!(bolts.len(), 2);
    for b in bolts {
        assert!(b.executed > 0);
        for w in &b.recent {
            let stem = w.strip_suffix("!!!!!!").expect("two exclamations");
            assert!(TestWordSpout::WORDS.contains(&stem), "{w}");
        }
    }
}

#[test]
fn word_count_counts_every_emitted_word() {
    let options = WordCountOptions {
        spouts: 2,
        bolts: 3,
        ..Default::default()
    };
    let running = Simulator::start(word_count::topology(&options).unwrap()).unwrap();
    running
        .wait_until(Duration::from_secs(30), |m| m.component("count").executed > 100_000)
        .unwrap();
    let f = running.stop();
    assert!(f.drained);
    let emitted = f.metrics.component("word").emitted;
    let bolts = f.bolts::<CountBolt>("count");
    let counted: u64 = bolts.iter().flat_map(|b| b.counts.iter().map(|(_, n)| n)).sum();
    assert_eq!(counted, emitted, "every emitted word is counted once");
    // Fields grouping: no word is counted by two tasks.
    let mut words = std::collections::HashSet::new();
    for b in &bolts {
        for (w, _) in b.counts.iter() {
            assert!(words.insert(w.to_string()), "{w} counted by two tasks");
        }
    }
}
