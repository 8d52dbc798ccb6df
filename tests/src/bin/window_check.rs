//! A windowed streamlet topology for the effectively-once end-to-end tests: page views (`--views` events from a
//! seed, event time, out of order by up to 200 ms, from a stateful spout made a source with `new_spout_source`) → a count per page in 1 s event-time tumbling windows → `tally`,
//! a stateful transform that keeps, per `(page, window)`, the sum of the counts it received and how many results
//! came. Each `tally` task rewrites `<out>/tally-<task>.txt` (`page start count results` lines, temporary file and
//! rename) after every result, so a test reads what the running processes hold. Under effectively-once every window
//! is counted exactly and delivered once, whatever was killed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use egret::streamlet::{Builder, Transformer, Window, WindowSpec};
use egret::*;
use egret_examples::streamlets::page_views;

/// The largest delay of a view, and the watermark's out-of-orderness bound.
const MAX_DELAY_MS: i64 = 200;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    views: usize,
    #[arg(long, default_value_t = 5)]
    pages: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Views per second per source task.
    #[arg(long, default_value_t = 4000.0)]
    rate: f64,
    #[arg(long, default_value_t = 1.0)]
    interval_secs: f64,
}

/// Per `(page, window start)`: the counts received, summed, and how many results brought them.
struct Tally {
    out: PathBuf,
    task: u32,
    windows: KeyedState<(String, i64), (u64, u32)>,
}

impl Tally {
    fn dump(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for ((page, start), (count, results)) in self.windows.iter() {
            let _ = writeln!(text, "{page} {start} {count} {results}");
        }
        let path = self.out.join(format!("tally-{}.txt", self.task));
        let tmp = self.out.join(format!(".tally-{}.tmp", self.task));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }
}

impl Transformer<(String, Window, u64), ()> for Tally {
    fn setup(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task = ctx.task_id().0;
        std::fs::create_dir_all(&self.out)?;
        Ok(())
    }

    fn transform(&mut self, (page, window, count): (String, Window, u64), _out: &mut Vec<()>) -> Result<(), UserError> {
        let key = (page, window.start);
        match self.windows.get_mut(&key) {
            Some((c, r)) => {
                *c += count;
                *r += 1;
            }
            None => {
                self.windows.insert(key, (count, 1));
            }
        }
        Ok(self.dump()?)
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for Tally {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.windows = KeyedState::restore(restored)?;
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.windows.save(out)?)
    }
}

/// A spout of this task's share of the views (then one view far past every window, so that all of them close), at
/// `rate` views per second. Its state is its position: a restored task seeks there at once.
struct PageViewSpout {
    views: Arc<Vec<(String, i64)>>,
    mine: Vec<usize>,
    position: usize,
    rate: f64,
    started: Instant,
    emitted: u64,
}

impl Spout for PageViewSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["page", "ts"]);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let (index, n) = (ctx.component_index() as usize, ctx.parallelism() as usize);
        self.mine = (0..self.views.len()).filter(|i| i % n == index).collect();
        self.started = Instant::now();
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        while (self.emitted as f64) < self.started.elapsed().as_secs_f64() * self.rate {
            match self.mine.get(self.position) {
                Some(&i) => out.emit((self.views[i].0.as_str(), self.views[i].1)),
                None if self.position == self.mine.len() => out.emit(("~end", i64::MAX / 4)),
                None => return,
            }
            self.position += 1;
            self.emitted += 1;
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for PageViewSpout {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.position = match restored {
            Some(b) => usize::try_from(u64::from_le_bytes(b.try_into()?))?,
            None => 0,
        };
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&(self.position as u64).to_le_bytes());
        Ok(())
    }
}

fn main() {
    let a = Args::parse();
    let views = Arc::new(page_views(a.views, a.pages, MAX_DELAY_MS, a.seed));
    let rate = a.rate;
    let b = Builder::new();
    let windowed = b
        .new_spout_source(
            move || PageViewSpout {
                views: Arc::clone(&views),
                mine: Vec::new(),
                position: 0,
                rate,
                started: Instant::now(),
                emitted: 0,
            },
            |t: &Tuple<'_>| Ok((t.get_str("page")?.to_string(), t.get_i64("ts")?)),
        )
        .name("views")
        .parallelism(2)
        .count_by_key_and_window(
            |v: &(String, i64)| v.0.clone(),
            WindowSpec::tumbling_time(1000).event_time(|v: &(String, i64)| v.1, MAX_DELAY_MS),
        );
    let out = a.out.clone();
    windowed
        .results
        .name("per-window")
        .parallelism(2)
        .transform(move || Tally {
            out: out.clone(),
            task: 0,
            windows: KeyedState::new(),
        })
        .name("tally")
        .parallelism(2);
    let config = Config::new()
        .with(keys::STMGRS, 2)
        .with(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .with(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, a.interval_secs);
    egret::run(b.build("windowed-page-views", config))
}
