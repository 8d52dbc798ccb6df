//! A topology for the connectors' end-to-end tests: files or Kafka → word count → PostgreSQL.
//!
//! Effectively-once (the default): `lines` (a following file source over `--input`, or a Kafka source over `--kafka`
//! and `--topic`) → `split` → `count` (a running count in checkpointed state, emitting `(word, count)` at each word)
//! → `counts` (a two-phase PostgreSQL sink upserting `word_counts(word, count)`) and `history` (a two-phase
//! PostgreSQL sink appending each `(word, count)` to `count_history`). Whatever is killed, `word_counts` ends with the
//! input's exact counts and `count_history` with each word's counts 1..n exactly once.
//!
//! `--at-least-once`: `lines` → `split` (each word with its place in the input, `<partition or file>:<offset>:<i>`)
//! → `occurrences` (upserting `word_occurrences(id, word)` on `id`, so a replayed word is absorbed: the table counts
//! each input word once) and `deliveries` (appending every `(id, word)` it receives to `word_deliveries`: replays
//! show there as duplicates).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use egret::*;
use egret_connect_files::{FileSource, FileSourceConfig};
use egret_connect_kafka::{KafkaSource, KafkaSourceConfig, StartAt};
use egret_connect_postgres::{PostgresSink, PostgresSinkConfig};
use egret_examples::stateful_word_count::{RunningCountBolt, SplitField};

#[derive(Parser, Clone)]
struct Args {
    /// The directory of input files (followed: lines appended later are read).
    #[arg(long, conflicts_with = "kafka", required_unless_present = "kafka")]
    input: Option<PathBuf>,
    /// A Kafka broker, `host:port`, to read `--topic` from (every partition, from the earliest record).
    #[arg(long, requires = "topic")]
    kafka: Option<String>,
    #[arg(long)]
    topic: Option<String>,
    /// The PostgreSQL connection string.
    #[arg(long)]
    connection: String,
    /// At-least-once instead of effectively-once (see the module documentation).
    #[arg(long)]
    at_least_once: bool,
    #[arg(long, default_value_t = 1.0)]
    interval_secs: f64,
    #[arg(long, default_value_t = 2)]
    containers: u32,
    /// Under at-least-once: seconds before an unacked tuple is failed and replayed.
    #[arg(long, default_value_t = 10)]
    message_timeout_secs: u64,
}

/// Splits a source's text (`line` of a file source, `value` of a Kafka source) into words, each with its place in
/// the input: `<file or partition>:<offset>:<index in the line>`, the same every time the line is read again.
struct SplitWithPlace;

impl BasicBolt for SplitWithPlace {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "id"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let (place, text) = match tuple.get_str("value") {
            Ok(value) => (tuple.get_i64("partition")?.to_string(), value),
            Err(_) => (tuple.get_str("file")?.to_string(), tuple.get_str("line")?),
        };
        let offset = tuple.get_i64("offset")?;
        for (i, word) in text.split_whitespace().enumerate() {
            out.emit((word, format!("{place}:{offset}:{i}")));
        }
        Ok(())
    }
}

fn main() {
    let a = Args::parse();
    let mut b = TopologyBuilder::new("connectors-word-count");
    let mode = if a.at_least_once {
        ReliabilityMode::AtLeastOnce
    } else {
        ReliabilityMode::EffectivelyOnce
    };
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, a.interval_secs)
        .set(keys::MESSAGE_TIMEOUT_SECS, a.message_timeout_secs)
        .set(keys::STMGRS, a.containers);
    let text_field = match (&a.input, &a.kafka, &a.topic) {
        (_, Some(broker), Some(topic)) => {
            let source = KafkaSourceConfig::new([broker.clone()], topic.clone())
                .start(StartAt::Earliest)
                .retry_max(Duration::from_secs(1));
            b.set_spout("lines", 2, move || KafkaSource::new(source.clone()));
            "value"
        }
        (Some(input), _, _) => {
            let source = FileSourceConfig::new(input)
                .follow(true)
                .poll_interval(Duration::from_millis(50));
            b.set_spout("lines", 2, move || FileSource::new(source.clone()));
            "line"
        }
        _ => {
            eprintln!("connectors-check: give --input, or --kafka and --topic");
            std::process::exit(2);
        }
    };
    if a.at_least_once {
        b.set_basic_bolt("split", 2, || SplitWithPlace)
            .shuffle_grouping("lines");
        let occurrences =
            PostgresSinkConfig::upsert(a.connection.clone(), "word_occurrences", &["id", "word"], &["id"])
                .batch(500, Duration::from_millis(100));
        b.set_bolt("occurrences", 1, move || PostgresSink::new(occurrences.clone()))
            .fields_grouping("split", ["id"])
            .config(keys::TICK_TUPLE_FREQ_MS, 200);
        let deliveries = PostgresSinkConfig::append(a.connection, "word_deliveries", &["id", "word"])
            .batch(500, Duration::from_millis(100));
        b.set_bolt("deliveries", 1, move || PostgresSink::new(deliveries.clone()))
            .shuffle_grouping("split")
            .config(keys::TICK_TUPLE_FREQ_MS, 200);
        egret::run(b.build());
    }
    b.set_basic_bolt("split", 1, move || SplitField(text_field))
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
