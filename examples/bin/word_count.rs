//! Word count in the simulator: random words, fields grouping on the word, counts printed at the end.
//!
//!     cargo run --release -p egret-examples --bin word-count -- --seconds 5

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use egret::simulator::Simulator;
use egret::*;
use egret_examples::word_count::{self, CountBolt, WordCountOptions};

/// Runs Heron's word count topology in the in-process simulator and prints the counts.
#[derive(Parser)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Spout tasks.
    #[arg(long, default_value_t = 1)]
    spouts: u32,
    /// Counting bolt tasks.
    #[arg(long, default_value_t = 2)]
    bolts: u32,
    /// Track every word with acking (at-least-once).
    #[arg(long)]
    at_least_once: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = WordCountOptions {
        spouts: args.spouts,
        bolts: args.bolts,
        reliability: if args.at_least_once {
            ReliabilityMode::AtLeastOnce
        } else {
            ReliabilityMode::AtMostOnce
        },
        ..Default::default()
    };
    let topology = word_count::topology(&options)?;
    println!(
        "word-count: {} spout task(s) -> fields(word) -> {} counting task(s), {}, for {} s",
        args.spouts, args.bolts, options.reliability, args.seconds
    );
    let running = Simulator::start(topology).context("starting the simulator")?;
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let counted = running.metrics().component("count").executed;
        println!(
            "  {:>4.1} s: {:>12} words counted ({:>6.2} M/s)",
            start.elapsed().as_secs_f64(),
            counted,
            (counted - last) as f64 / 1e6
        );
        last = counted;
    }
    let finished = running.stop();
    for (task, e) in &finished.errors {
        eprintln!("task {task}: {e}");
    }
    let mut totals: Vec<(String, u64)> = Vec::new();
    for bolt in finished.bolts::<CountBolt>("count") {
        totals.extend(bolt.counts.iter().map(|(w, n)| (w.to_string(), n)));
    }
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let sum: u64 = totals.iter().map(|(_, n)| n).sum();
    println!(
        "{} distinct words, {} counted in total; the most frequent:",
        totals.len(),
        sum
    );
    for (word, n) in totals.iter().take(10) {
        println!("  {word:<10} {n:>10}");
    }
    Ok(())
}
