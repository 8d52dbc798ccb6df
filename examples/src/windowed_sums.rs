//! Windowed sums: Heron's windowed bolt (`egret::windowed`, `docs/windowed-bolts.md`). `numbers` emits `n` with the
//! event time `10 * n` ms; `sums` adds them up over sliding windows of 1 s of event time every 500 ms (a lag of
//! 50 ms, a watermark every 100 ms), under at-least-once: each window tuple is acked once its last window fired.

use std::time::Duration;

use egret::windowed::{TupleWindow, WindowCollector, WindowedBolt, WindowedBoltAdapter, WindowedBoltBuilder};
use egret::*;

/// Emits `n, 10 * n` with message id `n`, up to `limit`.
pub struct Numbers {
    pub next: i64,
    pub limit: i64,
    pub acked: u64,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n", "ts"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if self.next < self.limit {
            out.emit_with_id(self.next as MessageId, (self.next, self.next * 10));
            self.next += 1;
        }
    }
    fn ack(&mut self, _id: MessageId) {
        self.acked += 1;
    }
}

/// Sums each window and keeps (start ms, end ms, sum, count) of every window it saw.
#[derive(Default)]
pub struct Sums {
    pub windows: Vec<(i64, i64, i64, usize)>,
}

impl WindowedBolt for Sums {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["start", "sum"]);
    }
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut WindowCollector<'_, '_>) -> Result<(), UserError> {
        let mut sum = 0;
        for t in window.get() {
            sum += t.view().get_i64("n")?;
        }
        let (start, end) = (
            window.start_timestamp().unwrap_or(0),
            window.end_timestamp().unwrap_or(0),
        );
        self.windows.push((start, end, sum, window.get().len()));
        out.emit((start, sum));
        Ok(())
    }
}

/// Acks what it gets (so the trees of the window tuples complete).
pub struct Drain;

impl BasicBolt for Drain {
    fn execute(&mut self, _tuple: &Tuple<'_>, _out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        Ok(())
    }
}

pub fn topology(limit: i64) -> Result<Topology, TopologyErrors> {
    let mut builder = TopologyBuilder::new("windowed-sums");
    builder
        .config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce);
    builder.set_spout("numbers", 1, move || Numbers {
        next: 0,
        limit,
        acked: 0,
    });
    builder
        .set_windowed_bolt("sums", 1, || {
            WindowedBoltAdapter::new(Sums::default())
                .with_window(Duration::from_secs(1), Duration::from_millis(500))
                .with_timestamp_field("ts")
                .with_lag(Duration::from_millis(50))
                .with_watermark_interval(Duration::from_millis(100))
        })
        .global_grouping("numbers");
    builder.set_basic_bolt("drain", 1, || Drain).global_grouping("sums");
    builder.build()
}

/// The sum of the `n` whose event time `10 * n` falls in `[start, end)`, among `0..limit`.
pub fn expected_sum(start: i64, end: i64, limit: i64) -> i64 {
    (0..limit).filter(|n| (start..end).contains(&(n * 10))).sum()
}
