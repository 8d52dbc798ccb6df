//! A topology for the user-metrics end-to-end test: one spout emits n = 1..=--count with word = a, b, c by n % 3;
//! two `observe` tasks (fields grouping on the word) register one user metric of each kind and update them so that
//! every value is known from the input alone, whatever the timing:
//!
//! - `tuples-seen` (counter): +1 per tuple; `words` (multi-counter): +1 per tuple under its word;
//! - `distinct-words` (gauge): the words this task has seen;
//! - `weight-mean`, `weight-max`, `weight-min` (reduced): 1.0 and 7.0 per tuple, so 4, 7 and 1 in every interval;
//! - `n-seconds` (histogram, bounds 0.5, 1, 2): n / 1000 per tuple;
//! - `registration-errors` (gauge): how many of two bad registrations (a duplicate, an invalid name) were refused;
//! - the spout's `emitted` (counter).

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use egret::metrics::{Counter, Gauge, Histogram, MetricError, MultiCounter, ReducedMetric};
use egret::*;

#[derive(Parser, Clone)]
struct Args {
    /// Tuples the spout emits in all.
    #[arg(long, default_value_t = 3001)]
    count: u64,
    #[arg(long, default_value_t = 2)]
    containers: u32,
}

const SECOND: Duration = Duration::from_secs(1);

struct Numbers {
    count: u64,
    next: u64,
    emitted: Option<Counter>,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
    }
    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.emitted = Some(ctx.register_counter("emitted", SECOND)?);
        Ok(())
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if self.next >= self.count {
            return;
        }
        self.next += 1;
        let word = ["a", "b", "c"][(self.next % 3) as usize];
        out.emit((word, self.next as i64));
        if let Some(c) = &self.emitted {
            c.incr();
        }
    }
}

struct Metrics {
    seen: Counter,
    words: MultiCounter,
    distinct: Gauge,
    mean: ReducedMetric,
    max: ReducedMetric,
    min: ReducedMetric,
    n_seconds: Histogram,
}

#[derive(Default)]
struct Observe {
    metrics: Option<Metrics>,
    distinct: BTreeSet<String>,
}

impl Bolt for Observe {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let metrics = Metrics {
            seen: ctx.register_counter("tuples-seen", SECOND)?,
            words: ctx.register_multi_counter("words", SECOND)?,
            distinct: ctx.register_gauge("distinct-words", SECOND)?,
            mean: ctx.register_reduced("weight-mean", Reducer::Mean, SECOND)?,
            max: ctx.register_reduced("weight-max", Reducer::Max, SECOND)?,
            min: ctx.register_reduced("weight-min", Reducer::Min, SECOND)?,
            n_seconds: ctx.register_histogram("n-seconds", vec![0.5, 1.0, 2.0], SECOND)?,
        };
        let refused = [
            matches!(
                ctx.register_counter("tuples-seen", SECOND),
                Err(MetricError::Duplicate(_))
            ),
            matches!(
                ctx.register_gauge("__emit-count", SECOND),
                Err(MetricError::InvalidName(_))
            ),
        ];
        ctx.register_gauge("registration-errors", SECOND)?
            .set(refused.iter().filter(|&&r| r).count() as f64);
        self.metrics = Some(metrics);
        Ok(())
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let (word, n) = match (t.get_str("word"), t.get_i64("n")) {
            (Ok(word), Ok(n)) => (word, n),
            (Err(e), _) | (_, Err(e)) => return out.report_error(&e),
        };
        let Some(m) = &mut self.metrics else { return };
        m.seen.incr();
        m.words.incr(word);
        if self.distinct.insert(word.to_string()) {
            m.distinct.set(self.distinct.len() as f64);
        }
        for weight in [1.0, 7.0] {
            m.mean.update(weight);
            m.max.update(weight);
            m.min.update(weight);
        }
        m.n_seconds.observe(n as f64 / 1000.0);
    }
}

fn main() {
    let args = Args::parse();
    let mut b = TopologyBuilder::new("metrics-check");
    b.config().set(keys::STMGRS, args.containers);
    let count = args.count;
    b.set_spout("numbers", 1, move || Numbers {
        count,
        next: 0,
        emitted: None,
    });
    b.set_bolt("observe", 2, Observe::default)
        .fields_grouping("numbers", ["word"]);
    egret::run(b.build())
}
