//! Task hooks and user metrics in the simulator: hooks named by `topology.auto.task.hooks` and hooks a component
//! adds in code see every emit, spout ack and fail, and bolt execute, ack and fail exactly once; user metrics are
//! readable while the topology runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egret::hooks::{BoltAckInfo, BoltExecuteInfo, BoltFailInfo, EmitInfo, SpoutAckInfo, SpoutFailInfo};
use egret::metrics::{Counter, MetricSample};
use egret::simulator::Simulator;
use egret::*;

const WAIT: Duration = Duration::from_secs(30);
const PER_TASK: i64 = 500;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Prepare(u32),
    Cleanup(u32),
    Emit { n: i64, out_tasks: usize },
    SpoutAck(u64),
    SpoutFail(u64),
    Execute(i64),
    BoltAck(i64),
    BoltFail(i64),
}

type Log = Arc<Mutex<Vec<(&'static str, Event)>>>;

struct Recorder {
    name: &'static str,
    task: u32,
    log: Log,
}

impl Recorder {
    fn record(&self, e: Event) {
        self.log.lock().unwrap().push((self.name, e));
    }
}

fn n_of(t: &Tuple<'_>) -> i64 {
    t.get_i64("n").unwrap_or(-1)
}

impl TaskHook for Recorder {
    fn prepare(&mut self, ctx: &TopologyContext) {
        self.task = ctx.task_id().0;
        self.record(Event::Prepare(self.task));
    }
    fn cleanup(&mut self) {
        self.record(Event::Cleanup(self.task));
    }
    fn emit(&mut self, info: &EmitInfo<'_>) {
        let n = match info.values().first() {
            Some(Some(Value::I64(n))) => *n,
            _ => -1,
        };
        self.record(Event::Emit {
            n,
            out_tasks: info.out_tasks.len(),
        });
    }
    fn spout_ack(&mut self, info: &SpoutAckInfo) {
        assert!(info.complete_latency.is_some(), "a tracked tree has a complete latency");
        self.record(Event::SpoutAck(info.message_id));
    }
    fn spout_fail(&mut self, info: &SpoutFailInfo) {
        self.record(Event::SpoutFail(info.message_id));
    }
    fn bolt_execute(&mut self, info: &BoltExecuteInfo<'_, '_>) {
        self.record(Event::Execute(n_of(info.tuple)));
    }
    fn bolt_ack(&mut self, info: &BoltAckInfo<'_>) {
        self.record(Event::BoltAck(n_of(&info.tuple)));
    }
    fn bolt_fail(&mut self, info: &BoltFailInfo<'_>) {
        self.record(Event::BoltFail(n_of(&info.tuple)));
    }
}

/// Emits `PER_TASK` numbers per task, each with its number as message id; never replays.
struct Numbers {
    next: i64,
    end: i64,
    emitted: Option<Counter>,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.next = i64::from(ctx.component_index()) * 10_000;
        self.end = self.next + PER_TASK;
        self.emitted = Some(ctx.register_counter("emitted", Duration::from_secs(1))?);
        Ok(())
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if self.next < self.end {
            out.emit_with_id(self.next as u64, (self.next,));
            self.next += 1;
            if let Some(c) = &self.emitted {
                c.incr();
            }
        }
    }
}

/// Acks even numbers, fails odd ones; adds a hook of its own in `prepare`.
struct Judge {
    log: Log,
}

impl Bolt for Judge {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        ctx.add_task_hook(Box::new(Recorder {
            name: "code",
            task: 0,
            log: Arc::clone(&self.log),
        }));
        Ok(())
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if n_of(t) % 2 == 0 { out.ack(t) } else { out.fail(t) }
    }
}

/// How many times each event was seen by the hook `name`.
fn seen(log: &[(&'static str, Event)], name: &str) -> BTreeMap<Event, usize> {
    let mut m = BTreeMap::new();
    for (_, e) in log.iter().filter(|(n, _)| *n == name) {
        *m.entry(e.clone()).or_default() += 1;
    }
    m
}

#[test]
fn task_hooks_from_config_and_code_see_every_emit_ack_fail_and_execute_exactly_once() {
    let log: Log = Arc::default();
    let mut b = TopologyBuilder::new("hooks");
    b.config()
        .set(keys::RELIABILITY_MODE, "ATLEAST_ONCE")
        .set(keys::AUTO_TASK_HOOKS, "audit");
    let l = Arc::clone(&log);
    b.task_hook("audit", move || Recorder {
        name: "audit",
        task: 0,
        log: Arc::clone(&l),
    });
    b.set_spout("numbers", 2, || Numbers {
        next: 0,
        end: 0,
        emitted: None,
    });
    let l = Arc::clone(&log);
    b.set_bolt("judge", 2, move || Judge { log: Arc::clone(&l) })
        .shuffle_grouping("numbers");
    let running = Simulator::start(b.build().expect("a valid topology")).expect("started");
    let total = 2 * PER_TASK as u64;
    running
        .wait_until(WAIT, |m| {
            let s = m.component("numbers");
            s.acked + s.failed == total
        })
        .expect("every tree completes or fails");
    let user = running.user_metrics();
    let emitted: f64 = user
        .values()
        .flatten()
        .filter_map(|s| match s {
            MetricSample::Value { name, value, .. } if name == "emitted" => Some(*value),
            _ => None,
        })
        .sum();
    assert_eq!(emitted, total as f64, "the spouts' user counters: {user:?}");
    running.stop();

    let log = log.lock().unwrap().clone();
    let numbers: Vec<i64> = (0..PER_TASK).chain(10_000..10_000 + PER_TASK).collect();
    let mut audit = BTreeMap::new();
    let mut code = BTreeMap::new();
    for task in 1..=4u32 {
        // Tasks 1-2 are judge (components sort by name), 3-4 numbers; each runs the audit hook.
        audit.insert(Event::Prepare(task), 1);
        audit.insert(Event::Cleanup(task), 1);
    }
    for task in 1..=2u32 {
        code.insert(Event::Prepare(task), 1);
        code.insert(Event::Cleanup(task), 1);
    }
    for &n in &numbers {
        audit.insert(Event::Emit { n, out_tasks: 1 }, 1);
        audit.insert(Event::Execute(n), 1);
        code.insert(Event::Execute(n), 1);
        let (spout, bolt) = if n % 2 == 0 {
            (Event::SpoutAck(n as u64), Event::BoltAck(n))
        } else {
            (Event::SpoutFail(n as u64), Event::BoltFail(n))
        };
        audit.insert(spout, 1);
        audit.insert(bolt.clone(), 1);
        code.insert(bolt, 1);
    }
    assert_eq!(seen(&log, "audit"), audit);
    assert_eq!(seen(&log, "code"), code);
}

#[test]
fn a_task_hook_named_in_config_but_not_declared_is_refused() {
    let mut b = TopologyBuilder::new("hooks");
    b.config().set(keys::AUTO_TASK_HOOKS, "audit, missing");
    b.task_hook("audit", || Recorder {
        name: "audit",
        task: 0,
        log: Arc::default(),
    });
    b.set_spout("numbers", 1, || Numbers {
        next: 0,
        end: 0,
        emitted: None,
    });
    let errors = b.build().expect_err("an undeclared hook").to_string();
    assert!(
        errors.contains("\"missing\"") && !errors.contains("\"audit\""),
        "{errors}"
    );
}
