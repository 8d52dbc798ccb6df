//! The simulator runs real topologies over the shared machinery: groupings, acking, timeouts, max spout pending,
//! tick tuples, activation and back pressure, each checked on what the bolts saw.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use egret::simulator::{Finished, Simulator, SimulatorOptions};
use egret::*;

const WAIT: Duration = Duration::from_secs(30);

/// Emits `items` once each (with message ids under at-least-once), replays failed ids if asked.
struct FiniteSpout {
    items: Arc<Vec<(String, i64)>>,
    next: usize,
    replay: bool,
    to_replay: Vec<MessageId>,
    acked: BTreeSet<MessageId>,
    failed: Vec<MessageId>,
    stream: &'static str,
}

impl FiniteSpout {
    fn new(items: Arc<Vec<(String, i64)>>) -> Self {
        FiniteSpout {
            items,
            next: 0,
            replay: false,
            to_replay: vec![],
            acked: BTreeSet::new(),
            failed: vec![],
            stream: "default",
        }
    }
}

impl Spout for FiniteSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
        out.declare_stream("other", ["word", "n"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let id = if let Some(id) = self.to_replay.pop() {
            id
        } else if self.next < self.items.len() {
            self.next += 1;
            (self.next - 1) as MessageId
        } else {
            return;
        };
        let (w, n) = &self.items[id as usize];
        out.emit_on(self.stream, Some(id), (w.as_str(), *n));
    }
    fn ack(&mut self, id: MessageId) {
        self.acked.insert(id);
    }
    fn fail(&mut self, id: MessageId) {
        self.failed.push(id);
        if self.replay {
            self.to_replay.push(id);
        }
    }
}

/// Records every tuple it executes (as owned values), then acks it.
#[derive(Default)]
struct Recorder {
    task: u32,
    seen: Vec<(String, String, Vec<Value>)>,
    ticks: u64,
}

impl Bolt for Recorder {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task = ctx.task_id().0;
        Ok(())
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if t.is_tick() {
            self.ticks += 1;
            return;
        }
        let values = t.values().map(|v| v.unwrap().to_owned_value().unwrap()).collect();
        self.seen
            .push((t.source_component().to_string(), t.source_stream().to_string(), values));
        out.ack(t);
    }
}

fn items(n: usize, distinct: usize) -> Arc<Vec<(String, i64)>> {
    Arc::new((0..n).map(|i| (format!("w{}", i % distinct), i as i64)).collect())
}

fn run_until_executed(topology: Topology, component: &str, n: u64) -> Finished {
    let running = Simulator::start(topology).unwrap();
    running
        .wait_until(WAIT, |m| m.component(component).executed >= n)
        .unwrap();
    let f = running.stop();
    assert!(f.drained, "the topology did not drain");
    assert!(f.errors.is_empty(), "errors: {:?}", f.errors);
    f
}

fn one_spout_one_bolt(grouping: Grouping, bolts: u32, n: usize) -> Topology {
    let data = items(n, 50);
    let mut b = TopologyBuilder::new("t");
    b.set_spout("src", 1, move || FiniteSpout::new(Arc::clone(&data)));
    b.set_bolt("sink", bolts, Recorder::default)
        .grouping("src", "default", grouping);
    b.build().unwrap()
}

#[test]
fn fields_grouping_sends_every_occurrence_of_a_word_to_one_task() {
    let n = 20_000;
    let f = run_until_executed(one_spout_one_bolt(Grouping::fields(["word"]), 3, n), "sink", n as u64);
    let mut owner: HashMap<String, u32> = HashMap::new();
    let mut total = 0;
    let sinks = f.bolts::<Recorder>("sink");
    assert_eq!(sinks.len(), 3);
    for r in &sinks {
        assert!(!r.seen.is_empty(), "task {} saw nothing: keys do not spread", r.task);
        for (_, _, v) in &r.seen {
            let Value::Str(w) = &v[0] else {
                panic!("not a string: {v:?}")
            };
            assert_eq!(
                *owner.entry(w.clone()).or_insert(r.task),
                r.task,
                "{w} reached two tasks"
            );
            total += 1;
        }
    }
    assert_eq!(total, n, "every tuple is executed exactly once");
}

#[test]
fn all_grouping_delivers_every_tuple_to_every_task() {
    let n = 5_000;
    let f = run_until_executed(one_spout_one_bolt(Grouping::All, 3, n), "sink", 3 * n as u64);
    for r in f.bolts::<Recorder>("sink") {
        let ns: BTreeSet<i64> = r
            .seen
            .iter()
            .map(|(_, _, v)| if let Value::I64(i) = v[1] { i } else { -1 })
            .collect();
        assert_eq!(ns.len(), n, "task {} missed tuples", r.task);
    }
}

#[test]
fn global_grouping_delivers_everything_to_the_lowest_task() {
    let n = 5_000;
    let t = one_spout_one_bolt(Grouping::Global, 3, n);
    let lowest = t.tasks_of(t.component_index("sink").unwrap()).min().unwrap().0;
    let f = run_until_executed(t, "sink", n as u64);
    for r in f.bolts::<Recorder>("sink") {
        assert_eq!(r.seen.len(), if r.task == lowest { n } else { 0 }, "task {}", r.task);
    }
}

#[test]
fn shuffle_grouping_spreads_evenly() {
    let n = 9_000;
    let f = run_until_executed(one_spout_one_bolt(Grouping::Shuffle, 3, n), "sink", n as u64);
    for r in f.bolts::<Recorder>("sink") {
        assert_eq!(r.seen.len(), n / 3, "round robin gives each task a third");
    }
}

#[test]
fn direct_and_custom_groupings_and_several_inputs() {
    /// Sends tuple i directly to the consumer task i % parallelism.
    struct DirectSpout {
        targets: Vec<TaskId>,
        next: i64,
    }
    impl Spout for DirectSpout {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare_direct_stream("d", ["n"]);
        }
        fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
            self.targets = ctx.component_tasks("sink");
            Ok(())
        }
        fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
            if self.next < 300 {
                let task = self.targets[self.next as usize % self.targets.len()];
                out.emit_direct(task, "d", None, (self.next,));
                self.next += 1;
            }
        }
    }
    /// Even numbers to the first task, odd to every task.
    struct EvenOdd;
    impl CustomGrouping for EvenOdd {
        fn name(&self) -> &str {
            "even-odd"
        }
        fn choose(&self, t: &Tuple<'_>, targets: &[TaskId], out: &mut Vec<TaskId>) {
            if t.get_i64("n").unwrap() % 2 == 0 {
                out.push(targets[0])
            } else {
                out.extend_from_slice(targets)
            }
        }
    }
    let data = items(100, 10);
    let mut b = TopologyBuilder::new("t");
    b.set_spout("direct", 1, || DirectSpout {
        targets: vec![],
        next: 0,
    });
    b.set_spout("src", 1, move || FiniteSpout::new(Arc::clone(&data)));
    b.set_bolt("sink", 2, Recorder::default)
        .direct_grouping("direct", "d")
        .custom_grouping("src", EvenOdd);
    let f = run_until_executed(b.build().unwrap(), "sink", 300 + 50 + 2 * 50);
    let sinks = f.bolts::<Recorder>("sink");
    for (i, r) in sinks.iter().enumerate() {
        let direct: Vec<i64> = r
            .seen
            .iter()
            .filter(|(c, _, _)| c == "direct")
            .map(|(_, _, v)| if let Value::I64(n) = v[0] { n } else { -1 })
            .collect();
        assert_eq!(direct.len(), 150);
        assert!(
            direct.iter().all(|n| n % 2 == i as i64),
            "task {} got another task's direct tuples",
            r.task
        );
        let from_src = r.seen.iter().filter(|(c, _, _)| c == "src").count();
        assert_eq!(from_src, if i == 0 { 100 } else { 50 });
    }
}

fn at_least_once(b: &mut TopologyBuilder, timeout_secs: u64) {
    b.config()
        .set(keys::RELIABILITY_MODE, "ATLEAST_ONCE")
        .set(keys::MESSAGE_TIMEOUT_SECS, timeout_secs);
}

#[test]
fn at_least_once_completes_a_tree_only_when_every_descendant_is_acked() {
    /// Emits two anchored children per input, on two streams.
    struct Fork;
    impl BasicBolt for Fork {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["word", "n"]);
            out.declare_stream("copy", ["word", "n"]);
        }
        fn execute(&mut self, t: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
            out.emit((t.get_str(0)?, t.get_i64(1)?));
            out.emit_on("copy", (t.get_str(0)?, t.get_i64(1)?));
            Ok(())
        }
    }
    /// Fails the copies of every seventh tuple, acks the rest. The fork has acked the parents long before, so
    /// the spout sees these fails only if the fork's ack left the children's keys in the tree.
    struct FailSevenths(u64);
    impl Bolt for FailSevenths {
        fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
            self.0 += 1;
            if t.source_stream() == "copy" && t.get_i64("n").unwrap() % 7 == 0 {
                out.fail(t)
            } else {
                out.ack(t)
            }
        }
    }
    let n = 10_000;
    let data = items(n, 100);
    let mut b = TopologyBuilder::new("t");
    at_least_once(&mut b, 30);
    b.set_spout("src", 1, move || FiniteSpout::new(Arc::clone(&data)));
    b.set_basic_bolt("fork", 2, || Fork).shuffle_grouping("src");
    b.set_bolt("sink", 2, || FailSevenths(0))
        .fields_grouping("fork", ["word"])
        .grouping("fork", "copy", Grouping::All);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    let m = running
        .wait_until(WAIT, |m| {
            m.component("src").acked + m.component("src").failed >= n as u64
        })
        .unwrap();
    assert_eq!(m.component("sink").executed, 3 * n as u64);
    let f = running.stop();
    let spout = f.spouts::<FiniteSpout>("src")[0];
    let failed: BTreeSet<_> = spout.failed.iter().copied().collect();
    assert_eq!(
        failed,
        (0..n as u64).filter(|i| i % 7 == 0).collect(),
        "exactly the trees with a failed leaf fail"
    );
    assert_eq!(
        spout.acked,
        (0..n as u64).filter(|i| i % 7 != 0).collect(),
        "every other tree completes"
    );
    assert_eq!(f.metrics.component("src").pending_roots, 0);
}

/// Acks everything except the first delivery of every tenth tuple, which it never acks (only a timeout recovers it).
#[derive(Default)]
struct Forgetful {
    seen: BTreeSet<i64>,
    executed: BTreeMap<i64, u32>,
}
impl Bolt for Forgetful {
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let n = t.get_i64("n").unwrap();
        *self.executed.entry(n).or_default() += 1;
        if n % 10 == 0 && self.seen.insert(n) {
            return;
        }
        out.ack(t);
    }
}

#[test]
fn timed_out_trees_fail_and_a_replaying_spout_completes_them() {
    let n = 1_000;
    let data = items(n, 10);
    let mut b = TopologyBuilder::new("t");
    at_least_once(&mut b, 1);
    b.set_spout("src", 1, move || {
        let mut s = FiniteSpout::new(Arc::clone(&data));
        s.replay = true;
        s
    });
    b.set_bolt("sink", 1, Forgetful::default).shuffle_grouping("src");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    running
        .wait_until(WAIT, |m| m.component("src").acked >= n as u64)
        .unwrap();
    let f = running.stop();
    let spout = f.spouts::<FiniteSpout>("src")[0];
    let failed: BTreeSet<_> = spout.failed.iter().copied().collect();
    assert_eq!(
        failed,
        (0..n as u64).filter(|i| i % 10 == 0).collect(),
        "exactly the unacked trees time out"
    );
    assert_eq!(spout.acked.len(), n);
    let sink = f.bolts::<Forgetful>("sink")[0];
    assert!(sink.executed.iter().all(|(n, c)| *c == if n % 10 == 0 { 2 } else { 1 }));
}

#[test]
fn an_explicit_fail_reaches_the_spout_at_once() {
    /// Fails every input.
    struct Refuser;
    impl Bolt for Refuser {
        fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
            out.fail(t);
        }
    }
    let data = items(100, 10);
    let mut b = TopologyBuilder::new("t");
    at_least_once(&mut b, 600);
    b.set_spout("src", 1, move || FiniteSpout::new(Arc::clone(&data)));
    b.set_bolt("sink", 1, || Refuser).shuffle_grouping("src");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    // With a 10-minute timeout, only an explicit fail can end these trees within the wait.
    running
        .wait_until(Duration::from_secs(10), |m| m.component("src").failed >= 100)
        .unwrap();
    let f = running.stop();
    assert!(f.spouts::<FiniteSpout>("src")[0].acked.is_empty());
}

#[test]
fn max_spout_pending_bounds_trees_in_flight() {
    /// Keeps every tuple and acks them all on each tick.
    #[derive(Default)]
    struct Holder {
        held: Vec<OwnedTuple>,
        max_held: usize,
    }
    impl Bolt for Holder {
        fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
            if t.is_tick() {
                for h in self.held.drain(..) {
                    out.ack(&h);
                }
            } else {
                self.held.push(t.to_owned_tuple());
                self.max_held = self.max_held.max(self.held.len());
            }
        }
    }
    let data = items(2_000, 10);
    let mut b = TopologyBuilder::new("t");
    at_least_once(&mut b, 30);
    b.config().set(keys::MAX_SPOUT_PENDING, 50);
    b.set_spout("src", 1, move || FiniteSpout::new(Arc::clone(&data)));
    b.set_bolt("sink", 1, Holder::default)
        .shuffle_grouping("src")
        .config(keys::TICK_TUPLE_FREQ_MS, 5);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    running.wait_until(WAIT, |m| m.component("src").acked >= 2_000).unwrap();
    let f = running.stop();
    let holder = f.bolts::<Holder>("sink")[0];
    assert!(
        holder.max_held <= 50,
        "held {} trees at once with max pending 50",
        holder.max_held
    );
    assert!(
        holder.max_held >= 25,
        "the spout should fill the allowance, held at most {}",
        holder.max_held
    );
}

#[test]
fn tick_tuples_arrive_at_the_configured_frequency() {
    let mut b = TopologyBuilder::new("t");
    let data = items(1, 1);
    b.set_spout("src", 1, move || FiniteSpout::new(Arc::clone(&data)));
    b.set_bolt("sink", 1, Recorder::default)
        .shuffle_grouping("src")
        .config(keys::TICK_TUPLE_FREQ_SECS, "0.05");
    let f = Simulator::start(b.build().unwrap())
        .unwrap()
        .run_for(Duration::from_millis(600));
    let ticks = f.bolts::<Recorder>("sink")[0].ticks;
    assert!((5..=13).contains(&ticks), "{ticks} ticks in 0.6 s at 20 per second");
}

/// Emits forever.
struct Endless(i64);
impl Spout for Endless {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        self.0 += 1;
        out.emit(("x", self.0));
    }
}

#[test]
fn deactivated_spouts_do_not_emit_until_activated() {
    let mut b = TopologyBuilder::new("t");
    b.set_spout("src", 2, || Endless(0));
    b.set_bolt("sink", 1, || Counter(0)).shuffle_grouping("src");
    let running = Simulator::start_with(
        b.build().unwrap(),
        SimulatorOptions {
            start_active: false,
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        running.metrics().component("src").emitted,
        0,
        "emitted while deployed deactivated"
    );
    running.activate();
    running
        .wait_until(WAIT, |m| m.component("sink").executed > 10_000)
        .unwrap();
    running.deactivate();
    running.wait_quiet(WAIT).unwrap();
    let frozen = running.metrics().component("src").emitted;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        running.metrics().component("src").emitted,
        frozen,
        "emitted while deactivated"
    );
    let f = running.stop();
    assert_eq!(f.metrics.component("sink").executed, frozen, "nothing emitted was lost");
}

/// Counts and acks; sleeps per tuple if asked.
struct Counter(u64);
impl Bolt for Counter {
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        self.0 += 1;
        out.ack(t);
    }
}

#[test]
fn a_slow_bolt_holds_back_a_fast_spout_with_bounded_memory() {
    struct Slow;
    impl Bolt for Slow {
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    let mut b = TopologyBuilder::new("t");
    b.config().set(keys::QUEUE_BATCHES, 4).set(keys::BATCH_TUPLES, 100);
    b.set_spout("src", 1, || Endless(0));
    b.set_bolt("sink", 1, || Slow).shuffle_grouping("src");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    let max_backlog = (4 + 2) * 100 + 100;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let m = running.metrics();
        let backlog = m.component("src").emitted - m.component("sink").executed;
        assert!(
            backlog <= max_backlog,
            "{backlog} tuples queued: back pressure does not hold"
        );
    }
    let f = running.stop();
    assert!(f.drained);
    assert_eq!(
        f.metrics.component("src").emitted,
        f.metrics.component("sink").executed,
        "no tuple dropped"
    );
}

#[test]
fn droptuples_drops_and_counts_for_a_slow_bolt_instead_of_clamping_the_spout() {
    struct Slow;
    impl Bolt for Slow {
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let mut b = TopologyBuilder::new("t");
    b.config()
        .set(keys::QUEUE_BATCHES, 4)
        .set(keys::BATCH_TUPLES, 100)
        .set(keys::DROPTUPLES_UPON_BACKPRESSURE, true);
    b.set_spout("src", 1, || Endless(0));
    b.set_bolt("sink", 1, || Slow).shuffle_grouping("src");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    // With back pressure the spout could be at most this far ahead of the bolt (see the test above).
    let clamped_backlog = (4 + 2) * 100 + 100;
    let m = running
        .wait_until(WAIT, |m| {
            m.component("src").emitted > m.component("sink").executed + 20 * clamped_backlog
        })
        .expect("the spout was held back");
    assert!(m.dropped_tuples > 0, "nothing was dropped");
    let f = running.stop();
    let (emitted, executed) = (f.metrics.component("src").emitted, f.metrics.component("sink").executed);
    assert!(f.metrics.dropped_tuples > 0);
    assert_eq!(
        emitted,
        executed + f.metrics.dropped_tuples,
        "every tuple was either executed or counted as dropped"
    );
}

#[test]
fn initial_state_paused_starts_the_spouts_deactivated() {
    let mut b = TopologyBuilder::new("t");
    b.config().set(keys::INITIAL_STATE, "PAUSED");
    b.set_spout("src", 1, || Endless(0));
    b.set_bolt("sink", 1, || Counter(0)).shuffle_grouping("src");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(running.metrics().component("src").emitted, 0, "emitted while paused");
    running.activate();
    running
        .wait_until(WAIT, |m| m.component("sink").executed > 1000)
        .unwrap();
    running.stop();
}

#[test]
fn bad_emits_are_reported_and_dropped() {
    struct Wrong(u32);
    impl Spout for Wrong {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["a"]);
        }
        fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
            if self.0 == 0 {
                out.emit_on("nope", None, (1i64,));
                out.emit((1i64, 2i64));
                out.emit((3i64,));
            }
            self.0 += 1;
        }
    }
    let mut b = TopologyBuilder::new("t");
    b.set_spout("src", 1, || Wrong(0));
    b.set_bolt("sink", 1, || Counter(0)).shuffle_grouping("src");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    let m = running.wait_until(WAIT, |m| m.component("sink").executed == 1).unwrap();
    assert_eq!(m.component("src").errors, 2);
    let errors = running.errors();
    assert!(
        errors[0]
            .1
            .contains("emitted 2 values on stream \"default\", which declares 1 fields"),
        "{errors:?}"
    );
    running.stop();
}

#[test]
fn a_failing_open_stops_the_start_with_the_reason() {
    struct Broken;
    impl Spout for Broken {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["a"]);
        }
        fn open(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
            Err("cannot reach the source".into())
        }
        fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
    }
    let mut b = TopologyBuilder::new("t");
    b.set_spout("src", 1, || Broken);
    b.set_bolt("sink", 1, || Counter(0)).shuffle_grouping("src");
    let err = Simulator::start(b.build().unwrap()).err().expect("start must fail");
    assert!(err.to_string().contains("cannot reach the source"), "{err}");
}

#[test]
fn context_and_config_reach_the_tasks() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    struct Probe;
    impl Bolt for Probe {
        fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
            assert_eq!(ctx.component_id(), "sink");
            assert_eq!(ctx.parallelism(), 2);
            assert_eq!(ctx.config().get("my.key"), Some("component"));
            assert_eq!(ctx.config().get("only.topology"), Some("yes"));
            assert_eq!(ctx.output_fields("default"), None);
            SEEN.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
    }
    let mut b = TopologyBuilder::new("t");
    b.config().set("my.key", "topology").set("only.topology", "yes");
    b.set_spout("src", 1, || Endless(0));
    b.set_bolt("sink", 2, || Probe)
        .shuffle_grouping("src")
        .config("my.key", "component");
    Simulator::start(b.build().unwrap()).unwrap().abort();
    assert_eq!(SEEN.load(Ordering::SeqCst), 2);
}
