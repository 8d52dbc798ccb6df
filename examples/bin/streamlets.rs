//! Runs the streamlet examples (`egret_examples::streamlets`) in the simulator and prints what they found: a word
//! count, a windowed join of ad clicks with impressions, and event-time user sessions with a late action.
//!
//!     cargo run --release -p egret-examples --bin streamlets

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egret::simulator::Simulator;
use egret_examples::streamlets;

/// Runs a topology until its sources (component, elements) have emitted everything, then drains it.
fn run(t: egret::Topology, sources: &[(&str, u64)]) {
    let running = Simulator::start(t).expect("the example starts");
    let emitted = |m: &egret::simulator::TopologyMetrics| sources.iter().all(|&(c, n)| m.component(c).emitted >= n);
    if running.wait_until(Duration::from_secs(30), emitted).is_err() {
        eprintln!("the sources did not finish within 30 s");
    }
    let finished = running.stop();
    for (task, e) in finished.errors {
        eprintln!("task {task}: {e}");
    }
}

fn main() {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let c = Arc::clone(&counts);
    let lines = vec!["the egret and the heron".to_string(), "The heron waits".to_string()];
    run(
        streamlets::word_count(lines, move |w, n| {
            c.lock().unwrap().insert(w, n);
        })
        .expect("a valid topology"),
        &[("lines", 2)],
    );
    println!("word count: {:?}", counts.lock().unwrap());

    let end = (u32::MAX, i64::MAX / 4); // past every window: closes them all
    let clicks = vec![(1, 120), (2, 450), (1, 1300), end];
    let impressions = vec![(1, 100), (1, 900), (2, 400), (1, 1250), (3, 1500), end];
    let pairs = Arc::new(Mutex::new(Vec::new()));
    let p = Arc::clone(&pairs);
    run(
        streamlets::ad_join(clicks, impressions, move |ad, w, click, imp| {
            if ad != u32::MAX {
                p.lock().unwrap().push((ad, w.start, click, imp));
            }
        })
        .expect("a valid topology"),
        &[("clicks", 4), ("impressions", 6)],
    );
    println!(
        "clicks joined with impressions (ad, window, click, impression): {:?}",
        pairs.lock().unwrap()
    );

    let actions: Vec<(String, i64)> = [
        ("ann", 0),
        ("ann", 30),
        ("bob", 10),
        ("ann", 400),
        ("ann", 20),
        ("bob", 600),
    ]
    .into_iter()
    .map(|(u, t)| (u.to_string(), t))
    .chain([("".to_string(), i64::MAX / 4)])
    .collect();
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let (s, l) = (Arc::clone(&sessions), Arc::clone(&late));
    run(
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
        .expect("a valid topology"),
        &[("actions", 7)],
    );
    println!("sessions (user, start, end, actions): {:?}", sessions.lock().unwrap());
    println!("late actions: {:?}", late.lock().unwrap());
}
