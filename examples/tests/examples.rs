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

/// Runs a streamlet example until its sources (component, elements) have emitted everything, then drains it.
fn run_streamlet_example(t: egret::Topology, sources: &[(&str, u64)]) {
    let running = Simulator::start(t).unwrap();
    running
        .wait_until(Duration::from_secs(30), |m| {
            sources.iter().all(|&(c, n)| m.component(c).emitted >= n)
        })
        .unwrap();
    let finished = running.stop();
    assert!(finished.drained && finished.errors.is_empty(), "{:?}", finished.errors);
}

#[test]
fn streamlet_examples_count_join_and_sessionize() {
    use egret_examples::streamlets;
    use std::sync::Mutex;

    let counts = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let c = Arc::clone(&counts);
    let lines = streamlets::sample_lines();
    run_streamlet_example(
        streamlets::word_count(lines, move |w, n| {
            let mut m = c.lock().unwrap();
            let e = m.entry(w).or_insert(0);
            *e = n.max(*e);
        })
        .unwrap(),
        &[("lines", 2)],
    );
    let counts: Vec<(String, u64)> = counts.lock().unwrap().clone().into_iter().collect();
    let expected = [("and", 1), ("egret", 1), ("heron", 2), ("the", 3), ("waits", 1)];
    assert_eq!(counts, expected.map(|(w, n)| (w.to_string(), n)));

    let (clicks, impressions) = streamlets::sample_ad_events();
    let pairs = Arc::new(Mutex::new(Vec::new()));
    let p = Arc::clone(&pairs);
    run_streamlet_example(
        streamlets::ad_join(clicks, impressions, move |ad, w, click, imp| {
            if ad != u32::MAX {
                p.lock().unwrap().push((ad, w.start, click, imp));
            }
        })
        .unwrap(),
        &[("clicks", 4), ("impressions", 6)],
    );
    let mut pairs = pairs.lock().unwrap().clone();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            (1, 0, 120, 100),
            (1, 0, 120, 900),
            (1, 1000, 1300, 1250),
            (2, 0, 450, 400)
        ]
    );

    let actions = streamlets::sample_actions();
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let (s, l) = (Arc::clone(&sessions), Arc::clone(&late));
    run_streamlet_example(
        streamlets::user_sessions(
            actions,
            100,
            move |user, w, n| {
                if !user.is_empty() {
                    s.lock().unwrap().push((user, w.start, w.end, n));
                }
            },
            move |a| l.lock().unwrap().push(a),
        )
        .unwrap(),
        &[("actions", 7)],
    );
    let mut sessions = sessions.lock().unwrap().clone();
    sessions.sort();
    let expected = [
        ("ann", 0, 130, 2),
        ("ann", 400, 500, 1),
        ("bob", 10, 110, 1),
        ("bob", 600, 700, 1),
    ];
    assert_eq!(sessions, expected.map(|(u, a, b, n)| (u.to_string(), a, b, n)));
    assert_eq!(
        *late.lock().unwrap(),
        vec![("ann".to_string(), 20)],
        "an action behind its closed session is late"
    );
}

#[test]
fn windowed_sums_sum_every_sliding_event_time_window_and_ack_its_tuples() {
    use egret::windowed::WindowedBoltAdapter;
    use egret_examples::windowed_sums::{self, Numbers, Sums};

    let running = Simulator::start(windowed_sums::topology(1000).unwrap()).unwrap();
    // Event times reach 9990 ms, so the watermark stops at 9940: the windows ending by 9500 fire, and the numbers
    // below 900 (whose last window ends by 9500) are acked.
    running
        .wait_until(Duration::from_secs(60), |m| m.component("numbers").acked >= 900)
        .unwrap();
    running.wait_quiet(Duration::from_secs(10)).unwrap();
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let windows = &finished.bolts::<WindowedBoltAdapter<Sums>>("sums")[0].bolt().windows;
    let expect: Vec<(i64, i64, i64, usize)> = (-1..18)
        .map(|k| {
            let (start, end) = (k * 500, k * 500 + 1000);
            let count = (0..1000).filter(|n| (start..end).contains(&(n * 10))).count();
            (start, end, windowed_sums::expected_sum(start, end, 1000), count)
        })
        .collect();
    assert_eq!(windows, &expect);
    assert_eq!(finished.spouts::<Numbers>("numbers")[0].acked, 900);
}
