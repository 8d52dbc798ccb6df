//! The word count `egret-bench rescale` submits: `word` (random words from a dictionary, `WordSpout`) --fields(word)-->
//! `count`, whose counts are a [`KeyedState`] (saved per key group, so that `egret update` can split or merge them
//! across a new number of tasks under effectively-once). The topology is named `word-count`, as the one
//! `egret-bench wordcount --mode local` runs.
//!
//! For the benchmark's fine-grained throughput, each counting bolt writes `<out>/count-<task>-<pid>-<n>.txt` every
//! 20 ms while it executes tuples: `<unix time in ns> <tuples this bolt object executed>` (a temporary file renamed
//! over it). The instances publish their metrics once a second, too coarse for a dip that lasts a second or two.
//! The count includes tuples executed again after a rollback. One file per bolt object (`n` counts the objects
//! `prepare`d in the process: a rescale's rollback prepares a new one in a running instance), so a restarted
//! process, a task removed and added again or a re-prepared bolt starts a new file instead of resetting one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use egret::*;
use egret_examples::word_count::{Dictionary, WordSpout, random_dictionary};

#[derive(Parser)]
struct Args {
    /// Where the counting processes write their progress.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2)]
    spouts: u32,
    #[arg(long, default_value_t = 2)]
    bolts: u32,
    #[arg(long, default_value_t = 2)]
    containers: u32,
    /// Random 20-character words in the dictionary.
    #[arg(long, default_value_t = 10_000)]
    words: usize,
    /// Cap on the spouts' total emit rate (words per second); none: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// atmost | atleast | effectively-once.
    #[arg(long, default_value = "effectively-once")]
    semantics: String,
    #[arg(long, default_value_t = 1.0)]
    checkpoint_secs: f64,
}

/// How often a counting process writes its progress while it executes tuples.
const PROGRESS_EVERY: Duration = Duration::from_millis(20);

/// Bolt objects prepared in this process so far.
static PREPARED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Counter {
    out: PathBuf,
    file: PathBuf,
    tmp: PathBuf,
    counts: KeyedState<String, u64>,
    executed: u64,
    written: Instant,
}

impl Counter {
    fn write_progress(&mut self) -> std::io::Result<()> {
        let ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        std::fs::write(&self.tmp, format!("{ns} {}\n", self.executed))?;
        std::fs::rename(&self.tmp, &self.file)?;
        self.written = Instant::now();
        Ok(())
    }
}

impl Bolt for Counter {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        std::fs::create_dir_all(&self.out)?;
        let (task, pid) = (ctx.task_id().0, std::process::id());
        let n = PREPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.file = self.out.join(format!("count-{task}-{pid}-{n}.txt"));
        self.tmp = self.out.join(format!(".count-{task}-{pid}-{n}.tmp"));
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        match tuple.get_str(0) {
            Ok(word) => {
                match self.counts.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        self.counts.insert(word.to_string(), 1);
                    }
                }
                self.executed += 1;
                if self.written.elapsed() >= PROGRESS_EVERY
                    && let Err(e) = self.write_progress()
                {
                    out.report_error(&e);
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
        Ok(self.counts.save(out)?)
    }
}

fn main() {
    let a = Args::parse();
    let mode = match a.semantics.as_str() {
        "atmost" => ReliabilityMode::AtMostOnce,
        "atleast" => ReliabilityMode::AtLeastOnce,
        "effectively-once" => ReliabilityMode::EffectivelyOnce,
        other => {
            eprintln!("rescale-word-count: --semantics atmost|atleast|effectively-once, not {other}");
            std::process::exit(2);
        }
    };
    let words = Arc::new(Dictionary::new(&random_dictionary(a.words, 0x5eed)));
    let rate = a.rate.map(|r| r / a.spouts.max(1) as f64);
    let tracked = mode == ReliabilityMode::AtLeastOnce;
    let mut b = TopologyBuilder::new("word-count");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::STMGRS, a.containers)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, a.checkpoint_secs);
    let seed = std::sync::atomic::AtomicU64::new(1);
    b.set_spout("word", a.spouts, move || {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WordSpout::new(Arc::clone(&words), s).with_rate(rate).tracked(tracked)
    });
    let out = a.out.clone();
    b.set_bolt("count", a.bolts, move || Counter {
        out: out.clone(),
        file: PathBuf::new(),
        tmp: PathBuf::new(),
        counts: KeyedState::new(),
        executed: 0,
        written: Instant::now(),
    })
    .fields_grouping("word", ["word"]);
    egret::run(b.build())
}
