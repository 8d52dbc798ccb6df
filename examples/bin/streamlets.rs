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
    let lines = streamlets::sample_lines();
    run(
        streamlets::word_count(lines, move |w, n| {
            c.lock().unwrap().insert(w, n);
        })
        .expect("a valid topology"),
        &[("lines", 2)],
    );
    println!("word count: {:?}", counts.lock().unwrap());

    let (clicks, impressions) = streamlets::sample_ad_events();
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

    let actions = streamlets::sample_actions();
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
