//! Windowed bolts in real topologies in the simulator: exact windows downstream, and at-least-once acking of the
//! window tuples (the spout sees every ack).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret_api::{
    BasicBolt, BasicCollector, Config, MessageId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector,
    TopologyBuilder, Tuple, UserError, keys,
};
use egret_simulator::Simulator;
use egret_streamlet::windowed_bolt::{
    Count, LATE_TUPLE_FIELD, TupleWindow, WindowCollector, WindowedBolt, WindowedBoltAdapter, WindowedBoltBuilder,
};

/// What the numbers spout knows: ids acked and failed.
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<u64>,
    failed: BTreeSet<u64>,
}

/// Emits ids `0..total` (tracked, `ts = 10 * id`). With `late_after`, once those ids are acked (their window fired)
/// it emits a tracked tuple behind the watermark (id 1000, ts 5) and an untracked one far ahead (id 2000) that moves
/// the watermark past every window.
struct Numbers {
    next: u64,
    total: u64,
    late_after: Option<u64>,
    sent_late: bool,
    ledger: Arc<Mutex<Ledger>>,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "ts"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if self.next < self.total {
            out.emit_with_id(self.next, (self.next as i64, self.next as i64 * 10));
            self.next += 1;
            return;
        }
        let Some(first) = self.late_after else { return };
        let fired = self.ledger.lock().unwrap().acked.range(..first).count() as u64 == first;
        if fired && !self.sent_late {
            self.sent_late = true;
            out.emit_with_id(1000, (1000i64, 5i64));
            out.emit((2000i64, 1_000_000i64));
        }
    }
    fn ack(&mut self, id: MessageId) {
        self.ledger.lock().unwrap().acked.insert(id);
    }
    fn fail(&mut self, id: MessageId) {
        self.ledger.lock().unwrap().failed.insert(id);
    }
}

/// Emits (start, end, sum of ids, count, new, expired) per window.
struct Sums;

impl WindowedBolt for Sums {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["start", "end", "sum", "count", "new", "expired"]);
    }
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut WindowCollector<'_, '_>) -> Result<(), UserError> {
        let mut sum = 0;
        for t in window.get() {
            sum += t.view().get_i64("id")?;
        }
        let bounds = window.bounds();
        out.emit((
            window.start_timestamp().unwrap_or(bounds.start),
            window.end_timestamp().unwrap_or(bounds.end),
            sum,
            window.get().len() as i64,
            window.get_new().len() as i64,
            window.get_expired().len() as i64,
        ));
        Ok(())
    }
}

type Row = (i64, i64, i64, i64, i64, i64);

/// Keeps what reaches it (and acks it, so the trees complete).
#[derive(Clone)]
struct Collect {
    windows: Arc<Mutex<Vec<Row>>>,
    late: Arc<Mutex<Vec<Vec<egret_api::Value>>>>,
}

impl BasicBolt for Collect {
    fn execute(&mut self, t: &Tuple<'_>, _out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        if t.source_stream() == "late" {
            match t.get_value(LATE_TUPLE_FIELD)? {
                egret_api::Value::List(values) => self.late.lock().unwrap().push(values),
                other => return Err(format!("late tuple {other:?}").into()),
            }
            return Ok(());
        }
        let row = (
            t.get_i64("start")?,
            t.get_i64("end")?,
            t.get_i64("sum")?,
            t.get_i64("count")?,
            t.get_i64("new")?,
            t.get_i64("expired")?,
        );
        self.windows.lock().unwrap().push(row);
        Ok(())
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn windowed_bolt_sliding_count_window_in_simulator_acks_every_tuple() {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let collect = Collect {
        windows: Arc::default(),
        late: Arc::default(),
    };
    let mut builder = TopologyBuilder::new("windowed-bolt-count");
    builder
        .config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce);
    let l = ledger.clone();
    builder.set_spout("numbers", 1, move || Numbers {
        next: 0,
        total: 100,
        late_after: None,
        sent_late: false,
        ledger: l.clone(),
    });
    // A window of 10 tuples every 5.
    builder
        .set_windowed_bolt("sums", 1, || {
            WindowedBoltAdapter::new(Sums).with_window(Count(10), Count(5))
        })
        .global_grouping("numbers");
    let c = collect.clone();
    builder
        .set_basic_bolt("collect", 1, move || c.clone())
        .global_grouping("sums");
    let running = Simulator::start(builder.build().unwrap()).unwrap();
    // The last 5 tuples' last window ([95, 105)) never fills: they are never acked.
    wait_for("95 acks", || ledger.lock().unwrap().acked.len() >= 95);
    running.wait_quiet(Duration::from_secs(10)).unwrap();
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);

    let expect: Vec<Row> = (0..19)
        .map(|k| {
            let start = k * 5;
            let sum = (start..start + 10).sum();
            let (new, expired) = if k == 0 { (10, 0) } else { (5, 5) };
            (start, start + 10, sum, 10, new, expired)
        })
        .collect();
    assert_eq!(*collect.windows.lock().unwrap(), expect);
    let ledger = ledger.lock().unwrap();
    assert_eq!(
        ledger.acked,
        (0..95).collect(),
        "every tuple whose last window fired, once"
    );
    assert!(ledger.failed.is_empty());
}

#[test]
fn windowed_bolt_event_time_tumbling_window_in_simulator_with_late_tuple_stream() {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let collect = Collect {
        windows: Arc::default(),
        late: Arc::default(),
    };
    let mut builder = TopologyBuilder::new("windowed-bolt-event-time");
    builder.set_config(Config::new().with(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce));
    let l = ledger.clone();
    builder.set_spout("numbers", 1, move || Numbers {
        next: 0,
        total: 50,
        late_after: Some(10),
        sent_late: false,
        ledger: l.clone(),
    });
    // Tumbling windows of 100 ms of event time ([0, 100) holds ids 0..10), a watermark every 20 ms.
    builder
        .set_windowed_bolt("sums", 1, || {
            WindowedBoltAdapter::new(Sums)
                .with_tumbling_window(Duration::from_millis(100))
                .with_timestamp_field("ts")
                .with_watermark_interval(Duration::from_millis(20))
                .with_late_tuple_stream("late")
        })
        .global_grouping("numbers");
    let c = collect.clone();
    builder
        .set_basic_bolt("collect", 1, move || c.clone())
        .global_grouping("sums")
        .grouping("sums", "late", egret_api::Grouping::Global);
    let running = Simulator::start(builder.build().unwrap()).unwrap();
    wait_for("51 acks", || ledger.lock().unwrap().acked.len() >= 51);
    running.wait_quiet(Duration::from_secs(10)).unwrap();
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);

    let expect: Vec<Row> = (0..5)
        .map(|k| {
            let sum = (k * 10..k * 10 + 10).sum();
            (k * 100, k * 100 + 100, sum, 10, 10, if k == 0 { 0 } else { 10 })
        })
        .collect();
    assert_eq!(
        *collect.windows.lock().unwrap(),
        expect,
        "the flush tuple's window never fires"
    );
    assert_eq!(
        *collect.late.lock().unwrap(),
        [vec![egret_api::Value::I64(1000), egret_api::Value::I64(5)]]
    );
    let ledger = ledger.lock().unwrap();
    let mut expect_acked: BTreeSet<u64> = (0..50).collect();
    expect_acked.insert(1000);
    assert_eq!(
        ledger.acked, expect_acked,
        "window tuples as their window fired, the late one at once"
    );
    assert!(ledger.failed.is_empty());
}
