//! A topology for the failure tests, at-least-once over a replayable input.
//!
//! - `source` (2 tasks) owns ids `0..n` split by `id % 2`. It appends every acked id to `<out>/acked-<index>.log`
//!   and, when (re)started, emits every id of its share not in that log: the log plays the role of a source's
//!   committed offsets, so a killed spout loses nothing. Failed or timed-out ids are emitted again.
//! - `relay` (2 tasks, shuffle) re-emits each tuple anchored on it (a `BasicBolt`).
//! - `sink` (2 tasks, fields on the word) appends each id it receives to `<out>/sink-<task>-<pid>.log`, then acks.
//!
//! A test kills processes while it runs and checks that every id ends up acked and received.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use egret::*;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    n: u64,
    /// Pause between emits, microseconds (keeps the run long enough to kill things in the middle).
    #[arg(long, default_value_t = 100)]
    pause_micros: u64,
    #[arg(long, default_value_t = 2)]
    containers: u32,
}

struct Source {
    args: Args,
    todo: VecDeque<u64>,
    log: Option<File>,
}

impl Spout for Source {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "word"]);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let (index, parallelism) = (ctx.component_index() as u64, ctx.parallelism() as u64);
        let path = self.args.out.join(format!("acked-{index}.log"));
        let mut acked = BTreeSet::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(id) = line.trim().parse::<u64>() {
                    acked.insert(id);
                }
            }
        }
        self.todo = (0..self.args.n)
            .filter(|id| id % parallelism == index && !acked.contains(id))
            .collect();
        eprintln!(
            "source {index}: {} ids acked before, {} to emit",
            acked.len(),
            self.todo.len()
        );
        self.log = Some(OpenOptions::new().create(true).append(true).open(path)?);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let Some(id) = self.todo.pop_front() else { return };
        out.emit_with_id(id, (id as i64, format!("w{}", id % 50).as_str()));
        std::thread::sleep(Duration::from_micros(self.args.pause_micros));
    }

    fn ack(&mut self, id: MessageId) {
        if let Some(log) = self.log.as_mut() {
            // One line per id, flushed at once: a kill -9 may lose at most the id being written (replayed, never
            // skipped).
            let _ = writeln!(log, "{id}");
        }
    }

    fn fail(&mut self, id: MessageId) {
        self.todo.push_back(id);
    }
}

struct Relay;

impl BasicBolt for Relay {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "word"]);
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        out.emit((t.get_i64("id")?, t.get_str("word")?));
        Ok(())
    }
}

struct Sink {
    out: PathBuf,
    log: Option<File>,
}

impl Bolt for Sink {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let path = self
            .out
            .join(format!("sink-{}-{}.log", ctx.task_id(), std::process::id()));
        self.log = Some(OpenOptions::new().create(true).append(true).open(path)?);
        Ok(())
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let written = match (t.get_i64("id"), self.log.as_mut()) {
            (Ok(id), Some(log)) => writeln!(log, "{id}").is_ok(),
            _ => false,
        };
        if written { out.ack(t) } else { out.fail(t) }
    }
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::create_dir_all(&args.out);
    let mut b = TopologyBuilder::new("reliable-check");
    b.config()
        .set(keys::STMGRS, args.containers)
        .set(keys::RELIABILITY_MODE, "ATLEAST_ONCE")
        .set(keys::MESSAGE_TIMEOUT_SECS, 3)
        .set(keys::MAX_SPOUT_PENDING, 500);
    let a = args.clone();
    b.set_spout("source", 2, move || Source {
        args: a.clone(),
        todo: VecDeque::new(),
        log: None,
    });
    b.set_basic_bolt("relay", 2, || Relay).shuffle_grouping("source");
    let out = args.out.clone();
    b.set_bolt("sink", 2, move || Sink {
        out: out.clone(),
        log: None,
    })
    .fields_grouping("relay", ["word"]);
    egret::run(b.build())
}
