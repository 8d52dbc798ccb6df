//! Reliable word count: at-least-once with a replaying spout and a bolt that fails 10 % of its inputs and drops
//! 2 % on purpose; ends with exact counts.
//!
//!     cargo run --release -p egret-examples --bin reliable-word-count

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use egret::simulator::Simulator;
use egret_examples::reliable_word_count::{self, FlakyCountBolt, SentenceSpout};

fn main() -> anyhow::Result<()> {
    let sentences = Arc::new(reliable_word_count::sentences(20_000, 42));
    let expected = reliable_word_count::expected_counts(&sentences);
    let topology = reliable_word_count::topology(Arc::clone(&sentences), 2, 0.10, 0.02, 2)?;
    let started = Instant::now();
    let running = Simulator::start(topology)?;
    let n = sentences.len() as u64;
    running.wait_until(Duration::from_secs(120), |m| m.component("sentence").acked >= n)?;
    let finished = running.stop();
    let spout = finished.spouts::<SentenceSpout>("sentence")[0];
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let (mut failed, mut dropped) = (0, 0);
    for bolt in finished.bolts::<FlakyCountBolt>("count") {
        failed += bolt.failed_on_purpose;
        dropped += bolt.dropped_on_purpose;
        for (w, c) in &bolt.counts {
            *counts.entry(w.clone()).or_default() += c;
        }
    }
    println!(
        "{} sentences acked in {:.1} s after {} emits ({} replays); the counter failed {} and dropped {} word tuples",
        spout.acked.len(),
        started.elapsed().as_secs_f64(),
        spout.emits,
        spout.fails,
        failed,
        dropped
    );
    if counts != expected {
        bail!("counts differ from the input's word counts");
    }
    println!(
        "counts are exact: {} words over {} distinct",
        counts.values().sum::<u64>(),
        counts.len()
    );
    Ok(())
}
