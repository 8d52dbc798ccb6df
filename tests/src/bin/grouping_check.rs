//! A topology for the end-to-end tests: two spout tasks emit a finite (or endless) sequence of words; three bolts
//! subscribe with fields, all and global grouping, and every task writes what it saw to `<out>/<component>-<task>.json`
//! a few times a second, so a test can check routing across containers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use egret::*;

#[derive(Parser, Clone)]
struct Args {
    /// Directory the tasks write their observations to.
    #[arg(long)]
    out: PathBuf,
    /// Tuples per spout task (ignored with --endless).
    #[arg(long, default_value_t = 5000)]
    per_spout: u64,
    #[arg(long)]
    endless: bool,
    #[arg(long, default_value_t = 2)]
    containers: u32,
    /// Declare a fields grouping on a field the spout does not declare.
    #[arg(long)]
    broken: bool,
    /// With --endless: emit as fast as possible (no pause between tuples).
    #[arg(long)]
    fast: bool,
    /// While this file exists, the by-word bolt sleeps 50 µs per tuple (a slow consumer for back pressure).
    #[arg(long)]
    slow_file: Option<PathBuf>,
    /// The global bolt reports an error for every 100th tuple it executes.
    #[arg(long)]
    report_errors: bool,
}

struct Numbers {
    args: Args,
    task: u32,
    next: u64,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
    }
    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task = ctx.task_id().0;
        Ok(())
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if !self.args.endless && self.next >= self.args.per_spout {
            return;
        }
        let word = format!("w{}", self.next % 50);
        out.emit((word.as_str(), self.next as i64));
        self.next += 1;
        if self.next.is_multiple_of(1000) || self.next == self.args.per_spout {
            write(
                &self.args.out,
                "numbers",
                self.task,
                &serde_json::json!({ "emitted": self.next }),
            );
        }
        if self.args.endless && !self.args.fast {
            // Keep the endless mode gentle on a 2-core machine.
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }
}

/// Records words (fields grouping) or a count, and writes them out on every tick.
/// Reported by the global bolt with --report-errors.
#[derive(Debug)]
struct SampleError;

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sample error (every 100th tuple)")
    }
}

impl std::error::Error for SampleError {}

struct Recorder {
    report_errors: bool,
    slow_file: Option<PathBuf>,
    slow: bool,
    out: PathBuf,
    component: String,
    task: u32,
    words: BTreeMap<String, u64>,
    total: u64,
}

impl Bolt for Recorder {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task = ctx.task_id().0;
        self.component = ctx.component_id().to_string();
        Ok(())
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if t.is_tick() {
            self.slow = self.component == "by-word" && self.slow_file.as_ref().is_some_and(|f| f.exists());
            let summary = serde_json::json!({ "total": self.total, "words": self.words });
            write(&self.out, &self.component, self.task, &summary);
            return;
        }
        self.total += 1;
        if self.report_errors && self.component == "global" && self.total.is_multiple_of(100) {
            out.report_error(&SampleError);
        }
        if self.slow {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        if self.component == "by-word" {
            match t.get_str("word") {
                Ok(w) => *self.words.entry(w.to_string()).or_default() += 1,
                Err(e) => out.report_error(&e),
            }
        }
    }
}

fn write(dir: &std::path::Path, component: &str, task: u32, value: &serde_json::Value) {
    let tmp = dir.join(format!(".{component}-{task}.tmp"));
    if std::fs::write(&tmp, value.to_string()).is_ok() {
        let _ = std::fs::rename(tmp, dir.join(format!("{component}-{task}.json")));
    }
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::create_dir_all(&args.out);
    let mut b = TopologyBuilder::new("grouping-check");
    b.config()
        .set(keys::STMGRS, args.containers)
        .set(keys::TICK_TUPLE_FREQ_MS, 200);
    let a = args.clone();
    b.set_spout("numbers", 2, move || Numbers {
        args: a.clone(),
        task: 0,
        next: 0,
    });
    let recorder = {
        let (out, slow_file, report_errors) = (args.out.clone(), args.slow_file.clone(), args.report_errors);
        move || Recorder {
            report_errors,
            slow_file: slow_file.clone(),
            slow: false,
            out: out.clone(),
            component: String::new(),
            task: 0,
            words: BTreeMap::new(),
            total: 0,
        }
    };
    let field = if args.broken { "wrod" } else { "word" };
    b.set_bolt("by-word", 2, recorder.clone())
        .fields_grouping("numbers", [field]);
    b.set_bolt("to-all", 2, recorder.clone()).all_grouping("numbers");
    b.set_bolt("global", 2, recorder).global_grouping("numbers");
    egret::run(b.build())
}
