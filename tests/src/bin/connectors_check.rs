//! A topology for the connectors' end-to-end test: files → word count → PostgreSQL, under effectively-once.
//!
//! `lines` (a following file source over `--input`) → `split` → `count` (a running count in checkpointed state,
//! emitting `(word, count)` at each word) → `counts` (a two-phase PostgreSQL sink upserting `word_counts(word, count)`)
//! and `history` (a two-phase PostgreSQL sink appending each `(word, count)` to `count_history`). Whatever is killed,
//! `word_counts` ends with the input's exact counts and `count_history` with each word's counts 1..n exactly once.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use egret::*;
use egret_connect_files::{FileSource, FileSourceConfig};
use egret_connect_postgres::{PostgresSink, PostgresSinkConfig};
use egret_examples::stateful_word_count::{RunningCountBolt, SplitField};

#[derive(Parser, Clone)]
struct Args {
    /// The directory of input files (followed: lines appended later are read).
    #[arg(long)]
    input: PathBuf,
    /// The PostgreSQL connection string.
    #[arg(long)]
    connection: String,
    #[arg(long, default_value_t = 1.0)]
    interval_secs: f64,
    #[arg(long, default_value_t = 2)]
    containers: u32,
}

fn main() {
    let a = Args::parse();
    let mut b = TopologyBuilder::new("connectors-word-count");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, a.interval_secs)
        .set(keys::STMGRS, a.containers);
    let source = FileSourceConfig::new(&a.input)
        .follow(true)
        .poll_interval(Duration::from_millis(50));
    b.set_spout("lines", 2, move || FileSource::new(source.clone()));
    b.set_basic_bolt("split", 1, || SplitField("line"))
        .shuffle_grouping("lines");
    b.set_basic_bolt("count", 2, RunningCountBolt::default)
        .fields_grouping("split", ["word"]);
    let counts = PostgresSinkConfig::upsert(a.connection.clone(), "word_counts", &["word", "count"], &["word"]);
    b.set_bolt("counts", 1, move || PostgresSink::new(counts.clone()))
        .fields_grouping("count", ["word"])
        .config(keys::TICK_TUPLE_FREQ_MS, 200);
    let history = PostgresSinkConfig::append(a.connection, "count_history", &["word", "count"]);
    b.set_bolt("history", 1, move || PostgresSink::new(history.clone()))
        .shuffle_grouping("count")
        .config(keys::TICK_TUPLE_FREQ_MS, 200);
    egret::run(b.build())
}
