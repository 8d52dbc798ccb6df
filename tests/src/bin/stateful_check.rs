//! A topology for the effectively-once end-to-end tests: the stateful word count (`sentence` → `split` → `count`)
//! over a finite, replayable input of `--sentences` sentences, in 2 containers.
//!
//! `count` keeps its counts in checkpointed state and, on every tick (200 ms), writes them to
//! `<out>/count-<task>.txt` (`word count` lines, written to a temporary file and renamed), so that a test can read
//! the counts the running processes hold. Under effectively-once they end equal to the input's exact counts whatever
//! was killed meanwhile; under `--at-least-once` replays count some words twice.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use egret::*;
use egret_examples::reliable_word_count::sentences;
use egret_examples::stateful_word_count;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    sentences: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Sentences per second per spout task.
    #[arg(long, default_value_t = 4000.0)]
    rate: f64,
    #[arg(long, default_value_t = 1.0)]
    interval_secs: f64,
    #[arg(long)]
    at_least_once: bool,
    #[arg(long, default_value_t = 2)]
    containers: u32,
    /// The counter saves its counts its own way (a plain postcard map), not per key group: it can grow but not shrink.
    #[arg(long)]
    opaque_state: bool,
}

/// Counts words in checkpointed state and shows them in a file on every tick.
struct Counter {
    out: PathBuf,
    task: u32,
    counts: KeyedState<String, u64>,
    opaque_state: bool,
}

impl Counter {
    fn dump(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (w, n) in self.counts.iter() {
            let _ = writeln!(text, "{w} {n}");
        }
        let path = self.out.join(format!("count-{}.txt", self.task));
        let tmp = self.out.join(format!(".count-{}.tmp", self.task));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }
}

impl Bolt for Counter {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task = ctx.task_id().0;
        std::fs::create_dir_all(&self.out)?;
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if tuple.is_tick() {
            if let Err(e) = self.dump() {
                out.report_error(&e);
            }
            return;
        }
        match tuple.get_str("word") {
            Ok(word) => {
                match self.counts.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        self.counts.insert(word.to_string(), 1);
                    }
                }
                out.ack(tuple);
            }
            Err(e) => {
                out.report_error(&e);
                out.fail(tuple);
            }
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for Counter {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.counts = KeyedState::restore(restored)?;
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        if self.opaque_state {
            let map: std::collections::BTreeMap<&String, &u64> = self.counts.iter().collect();
            out.extend_from_slice(&postcard::to_stdvec(&map)?);
            return Ok(());
        }
        Ok(self.counts.save(out)?)
    }
}

fn main() {
    let a = Args::parse();
    let input = Arc::new(sentences(a.sentences, a.seed));
    let mode = if a.at_least_once {
        ReliabilityMode::AtLeastOnce
    } else {
        ReliabilityMode::EffectivelyOnce
    };
    let mut b = stateful_word_count::builder(input, 2, 2, a.interval_secs, mode, Some(a.rate));
    b.config()
        .set(keys::STMGRS, a.containers)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5);
    let (out, opaque_state) = (a.out.clone(), a.opaque_state);
    b.set_bolt("count", 2, move || Counter {
        out: out.clone(),
        task: 0,
        counts: KeyedState::new(),
        opaque_state,
    })
    .fields_grouping("split", ["word"])
    .config(keys::TICK_TUPLE_FREQ_MS, 200);
    egret::run(b.build())
}
