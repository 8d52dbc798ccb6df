//! The word count `egret-bench rescale` submits: `word` (random words from a dictionary) --fields(word)--> `count`,
//! whose counts are a [`KeyedState`] (saved per key group, so that `egret update` can split or merge them across a new
//! number of tasks under effectively-once). The topology is named `word-count`, as the one
//! `egret-bench wordcount --mode local` runs.
//!
//! The spout's checkpointed position is its generator and the number of words it emitted; with `--rate` the input
//! arrives at a fixed rate from the topology's start (the start is part of the state), so that after a stall or a
//! rollback the spout works through the backlog at full speed, as a reader of a queue would.
//!
//! For the benchmark's fine-grained throughput, every task object writes `<out>/<component>-<task>-<pid>-<n>.txt`
//! every 20 ms while it works: `<unix time in ns> <figure>` (a temporary file renamed over it), where the figure is
//! the spout's position (it goes back at a rollback: net progress) or the number of tuples a counting bolt executed
//! (tuples executed again after a rollback count: work done). The instances publish their metrics once a second, too
//! coarse for a dip that lasts a second or two. `n` counts the task objects created in the process (a rescale's
//! rollback creates new ones in running instances), so a restarted process, a task removed and added again or a new
//! object starts a new file.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use egret::*;
use egret_examples::SplitMix;
use egret_examples::word_count::{Dictionary, random_dictionary};

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

/// How often a task writes its progress while it works.
const PROGRESS_EVERY: Duration = Duration::from_millis(20);

/// Task objects prepared (or opened) in this process so far.
static PREPARED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A task's progress file.
struct Progress {
    file: PathBuf,
    tmp: PathBuf,
    written: Instant,
}

impl Progress {
    fn new(out: &std::path::Path, ctx: &TopologyContext) -> std::io::Result<Self> {
        std::fs::create_dir_all(out)?;
        let (component, task, pid) = (ctx.component_id(), ctx.task_id().0, std::process::id());
        let n = PREPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Progress {
            file: out.join(format!("{component}-{task}-{pid}-{n}.txt")),
            tmp: out.join(format!(".{component}-{task}-{pid}-{n}.tmp")),
            written: Instant::now() - PROGRESS_EVERY,
        })
    }

    /// Writes `figure` if the last write is `PROGRESS_EVERY` old.
    fn note(&mut self, figure: u64) -> std::io::Result<()> {
        if self.written.elapsed() < PROGRESS_EVERY {
            return Ok(());
        }
        std::fs::write(&self.tmp, format!("{} {figure}\n", unix_ns()))?;
        std::fs::rename(&self.tmp, &self.file)?;
        self.written = Instant::now();
        Ok(())
    }
}

/// Random words; its state is its generator, its position and when its input started.
struct Source {
    words: Arc<Dictionary>,
    out: PathBuf,
    rng: SplitMix,
    /// Words emitted since the topology started (rolled back with the state).
    position: u64,
    /// With `rate`: input arrives at `rate` words per second from `epoch` (unix ns).
    rate: Option<f64>,
    epoch: u64,
    tracked: bool,
    restored: bool,
    progress: Option<Progress>,
}

impl Spout for Source {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        // `init_state` (effectively-once) comes before `open`: a restored source goes on from its state.
        if !self.restored {
            self.rng = SplitMix(0x5eed ^ u64::from(ctx.task_id().0));
            self.epoch = unix_ns();
        }
        self.progress = Some(Progress::new(&self.out, ctx)?);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        for _ in 0..16 {
            if let Some(rate) = self.rate
                && self.position as f64 >= unix_ns().saturating_sub(self.epoch) as f64 * 1e-9 * rate
            {
                break;
            }
            let word = self.words.word(self.rng.below(self.words.len()));
            if self.tracked {
                out.emit_with_id(self.position, (word,));
            } else {
                out.emit((word,));
            }
            self.position += 1;
        }
        if let Some(p) = self.progress.as_mut() {
            let _ = p.note(self.position);
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for Source {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        if let Some(b) = restored {
            let field = |i: usize| -> Result<u64, UserError> {
                let bytes = b.get(i * 8..i * 8 + 8).ok_or("a word source's state is 24 bytes")?;
                Ok(u64::from_le_bytes(bytes.try_into()?))
            };
            self.rng = SplitMix(field(0)?);
            self.position = field(1)?;
            self.epoch = field(2)?;
            self.restored = true;
        }
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        for v in [self.rng.0, self.position, self.epoch] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
}

struct Counter {
    out: PathBuf,
    counts: KeyedState<String, u64>,
    executed: u64,
    progress: Option<Progress>,
}

impl Bolt for Counter {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.progress = Some(Progress::new(&self.out, ctx)?);
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
                if let Some(p) = self.progress.as_mut()
                    && let Err(e) = p.note(self.executed)
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
    let out = a.out.clone();
    b.set_spout("word", a.spouts, move || Source {
        words: Arc::clone(&words),
        out: out.clone(),
        rng: SplitMix(0),
        position: 0,
        rate,
        epoch: 0,
        tracked,
        restored: false,
        progress: None,
    });
    let out = a.out.clone();
    b.set_bolt("count", a.bolts, move || Counter {
        out: out.clone(),
        counts: KeyedState::new(),
        executed: 0,
        progress: None,
    })
    .fields_grouping("word", ["word"]);
    egret::run(b.build())
}
