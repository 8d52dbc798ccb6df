//! Word count as a topology binary for `egret submit`: the same topology as `word-count`, run as real processes.
//!
//!     cargo build --release -p egret-cli -p egret-examples
//!     target/release/egret submit local target/release/word-count-topology --containers 2 --spouts 2 --bolts 2
//!
//! Run directly (not through `egret submit`) it runs in the simulator until interrupted.

use std::sync::Arc;

use clap::Parser;
use egret::{Config, ReliabilityMode, keys};
use egret_examples::word_count::{self, WordCountOptions};

/// Heron's word count: random words, fields grouping on the word, counting bolts.
#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1)]
    spouts: u32,
    #[arg(long, default_value_t = 1)]
    bolts: u32,
    /// Containers (stmgrs) to spread the tasks over.
    #[arg(long, default_value_t = 1)]
    containers: u32,
    /// Track every word with acking.
    #[arg(long, conflicts_with = "effectively_once")]
    at_least_once: bool,
    /// Checkpoint the spouts' positions and the counts every second (`topology.stateful.checkpoint.interval.seconds`
    /// overrides it) and roll back after any failure.
    #[arg(long)]
    effectively_once: bool,
    /// Dictionary of N random 20-character words instead of the readable demo dictionary.
    #[arg(long)]
    random_words: Option<usize>,
    /// Written with the Streamlet API (`word_count::streamlet_topology`) instead of spouts and bolts.
    #[arg(long)]
    streamlet: bool,
    /// With `--streamlet`: count per word in tumbling windows of this many milliseconds instead of a running count.
    #[arg(long, requires = "streamlet")]
    window_ms: Option<i64>,
    /// Cap on the spouts' total emit rate (tuples per second).
    #[arg(long)]
    rate: Option<f64>,
    /// The counting bolt also increments the user counter `words-counted` per word.
    #[arg(long, conflicts_with = "streamlet")]
    user_counter: bool,
}

fn main() {
    let a = Args::parse();
    let options = WordCountOptions {
        spouts: a.spouts,
        bolts: a.bolts,
        words: Arc::new(match a.random_words {
            Some(n) => word_count::random_dictionary(n, 0x5eed),
            None => word_count::english_dictionary(),
        }),
        reliability: if a.at_least_once {
            ReliabilityMode::AtLeastOnce
        } else if a.effectively_once {
            ReliabilityMode::EffectivelyOnce
        } else {
            ReliabilityMode::AtMostOnce
        },
        rate: a.rate,
        config: Config::new()
            .with(keys::STMGRS, a.containers)
            .with(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 1),
        user_counter: a.user_counter,
    };
    egret::run(if let Some(ms) = a.window_ms {
        word_count::streamlet_window_topology(&options, ms, |_, _, _| {})
    } else if a.streamlet {
        word_count::streamlet_topology(&options)
    } else {
        word_count::topology(&options)
    })
}
