//! The simulator: a whole topology in one process (Heron's "pure library" mode), for unit-testing topologies and
//! debugging them in an IDE.
//!
//! Each task runs on its own thread with a bounded input queue of batches. Tasks are driven by
//! `egret_runtime::task` — the same emit, routing, batching and acking code the process runtime uses — and batches
//! move through [`egret_runtime::queue`]. A full queue hands the batch back: the sender keeps it and a spout stops
//! calling `next_tuple` until it drains (back pressure). With `topology.droptuples.upon.backpressure=true` a task
//! whose queue filled is congested instead: batches for it are dropped (and their tuples counted in
//! [`TopologyMetrics::dropped_tuples`]) until its queue has drained to half, by the stmgr's rule
//! ([`egret_runtime::drop_gate`]).
//!
//! ```no_run
//! # fn topology() -> egret_api::Topology { unimplemented!() }
//! use std::time::Duration;
//! let running = egret_simulator::Simulator::start(topology()).unwrap();
//! running.wait_until(Duration::from_secs(10), |m| m.component("count").executed >= 1000).unwrap();
//! let finished = running.stop();
//! ```

mod checkpoints;

pub use checkpoints::CheckpointStatus;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_api::{BasicBoltAdapter, Bolt, CheckpointId, ReliabilityMode, Spout, TaskId, Topology};
use egret_checkpoint::{CheckpointStore, MemoryStore};
use egret_runtime::checkpoint::{Snapshot, TaskCommand};
use egret_runtime::coordinator::Coordinator;
use egret_runtime::driver::{self, Link, LoopControl};
use egret_runtime::drop_gate::{self, DropGate};
use egret_runtime::metrics::new_latency_histogram;
use egret_runtime::queue::{self, QueueReceiver, QueueSender, Rejected};
use egret_runtime::{Batch, BoltTask, SpoutTask, TaskError, TaskMetrics, TaskMetricsSnapshot, Transport};
use hdrhistogram::Histogram;

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("could not start the topology:\n  {}", .0.join("\n  "))]
    Start(Vec<String>),
    #[error("could not start a task thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for the condition")]
    Timeout(Duration),
}

/// Options for [`Simulator::start_with`].
#[derive(Clone)]
pub struct SimulatorOptions {
    /// Start with spouts active (Heron's default) or deactivated (`--deploy-deactivated`). A topology whose
    /// `topology.initial.state` is `PAUSED` starts deactivated either way.
    pub start_active: bool,
    /// Effectively-once: where checkpoints are written (default: in memory, checksummed like any store).
    pub checkpoint_store: Option<Arc<dyn CheckpointStore>>,
    /// Effectively-once: start from this complete checkpoint of `checkpoint_store` instead of a clean start.
    pub restore_checkpoint: Option<CheckpointId>,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        SimulatorOptions {
            start_active: true,
            checkpoint_store: None,
            restore_checkpoint: None,
        }
    }
}

impl std::fmt::Debug for SimulatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorOptions")
            .field("start_active", &self.start_active)
            .field(
                "checkpoint_store",
                &self.checkpoint_store.as_ref().map(|s| s.describe()),
            )
            .field("restore_checkpoint", &self.restore_checkpoint)
            .finish()
    }
}

struct Shared {
    stop: AtomicBool,
    active: AtomicBool,
    /// Batches handed to a queue and not yet fully processed.
    in_flight: AtomicI64,
    /// Bumped on every send and every processed batch: a quiet check must see it unchanged.
    epoch: AtomicU64,
    /// `topology.droptuples.upon.backpressure`: tuples dropped for congested tasks.
    dropped_tuples: AtomicU64,
}

struct SimTransport {
    queues: Arc<Vec<Option<QueueSender<Batch>>>>,
    shared: Arc<Shared>,
    /// `topology.droptuples.upon.backpressure`: whether each destination task (by id) is congested, as this sender
    /// sees its queue. `None`: full queues hand batches back.
    drop_gates: Option<Vec<DropGate>>,
}

impl SimTransport {
    /// Drops a batch for a congested task, counting its tuples.
    fn drop_batch(&self, batch: &[u8]) {
        self.shared
            .dropped_tuples
            .fetch_add(drop_gate::data_records(batch), SeqCst);
    }
}

impl Transport for SimTransport {
    fn try_send(&mut self, dest: TaskId, batch: Batch) -> Result<(), Batch> {
        let Some(Some(q)) = self.queues.get(dest.0 as usize) else {
            // No such task: the router never produces one; drop rather than wedge the sender.
            return Ok(());
        };
        if let Some(gate) = self.drop_gates.as_mut().and_then(|g| g.get_mut(dest.0 as usize))
            && !gate.admit(q.len() as u64)
        {
            self.drop_batch(&batch);
            return Ok(());
        }
        self.shared.in_flight.fetch_add(1, SeqCst);
        self.shared.epoch.fetch_add(1, SeqCst);
        match q.try_push(batch) {
            Ok(()) => Ok(()),
            Err(Rejected::Full(b)) => {
                self.shared.in_flight.fetch_sub(1, SeqCst);
                if self.drop_gates.is_some() {
                    // Filled since the gate looked: congested all the same.
                    self.drop_batch(&b);
                    return Ok(());
                }
                Err(b)
            }
            // The destination task ended (stopped or panicked): its tuples are lost, as with a dead process.
            Err(Rejected::Closed(_)) => {
                self.shared.in_flight.fetch_sub(1, SeqCst);
                Ok(())
            }
        }
    }
}

/// A task's link in the simulator: its input queue and the queues of every other task.
struct SimLink {
    rx: QueueReceiver<Batch>,
    /// A batch taken while waiting, handed out by the next `receive`.
    taken: Option<Batch>,
    out: SimTransport,
}

/// The simulator's tasks wait at most this long at a time, so they see `stop` soon.
const SIM_POLL: Duration = Duration::from_millis(2);
/// How often a task whose destination queue is full looks for room (queues do not signal room).
const ROOM_POLL: Duration = Duration::from_micros(100);

impl Transport for SimLink {
    fn try_send(&mut self, dest: TaskId, batch: Batch) -> Result<(), Batch> {
        self.out.try_send(dest, batch)
    }
}

impl Link for SimLink {
    fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some(batch) = self.taken.take().or_else(|| self.rx.try_pop()) else {
                break;
            };
            f(&batch);
            n += 1;
        }
        n
    }

    fn wait(&mut self, timeout: Duration, want_input: bool, want_room: bool) {
        let mut timeout = timeout.min(SIM_POLL);
        if want_room {
            timeout = timeout.min(ROOM_POLL);
        }
        if !want_input {
            std::thread::sleep(timeout);
        } else if self.taken.is_none() {
            self.taken = self.rx.pop_timeout(timeout);
        }
    }
}

/// What a task left behind.
pub enum ComponentInstance {
    Spout(Box<dyn Spout>),
    Bolt(Box<dyn Bolt>),
    /// The task failed to start or panicked.
    Lost,
}

struct TaskOutcome {
    instance: ComponentInstance,
    error: Option<String>,
}

struct TaskHandle {
    task: TaskId,
    component: String,
    is_spout: bool,
    metrics: Arc<TaskMetrics>,
    /// Spouts: whether the task has seen the current activation state.
    active_seen: Arc<AtomicBool>,
    thread: JoinHandle<TaskOutcome>,
}

/// Entry point.
pub struct Simulator;

impl Simulator {
    /// Effectively-once: the coordinator's parts (`None` under other modes).
    fn checkpointing(topology: &Topology, options: &SimulatorOptions) -> Result<Option<Checkpointing>, SimulatorError> {
        let config = topology.config();
        let start_err = |e: &dyn std::fmt::Display| SimulatorError::Start(vec![e.to_string()]);
        if config.reliability_mode().map_err(|e| start_err(&e))? != ReliabilityMode::EffectivelyOnce {
            return Ok(None);
        }
        let interval = config.checkpoint_interval().map_err(|e| start_err(&e))?;
        let kept = config.checkpoints_kept().map_err(|e| start_err(&e))?;
        let clean = config.stateful_start_clean().map_err(|e| start_err(&e))?;
        let store = options
            .checkpoint_store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        // The simulator trusts the checkpoint it is asked to restore to be complete; ids continue above every one in
        // the store.
        // An unreadable store does not stop the topology: it runs, and every checkpoint reports the store's error.
        let (known, mut errors) = match store.checkpoints() {
            Ok(known) => (known, Vec::new()),
            Err(e) => (
                Vec::new(),
                vec![format!("cannot list the checkpoints in {}: {e}", store.describe())],
            ),
        };
        let min_next = known.last().map_or(0, |c| c.0);
        let now = Instant::now();
        let tasks = topology.tasks().map(|(t, _, _)| t);
        let mut coordinator = Coordinator::new(
            tasks,
            interval,
            kept,
            options.restore_checkpoint.into_iter().collect(),
            min_next,
            0,
            now,
        );
        let first = coordinator
            .start(clean, options.restore_checkpoint, now)
            .map_err(|c| start_err(&format!("checkpoint {c} is not in the store")))?;
        let (events, receiver) = mpsc::channel();
        Ok(Some(Checkpointing {
            mailboxes: Arc::new((0..=topology.max_task_id()).map(|_| Default::default()).collect()),
            events,
            receiver,
            store,
            coordinator,
            first,
            errors: std::mem::take(&mut errors),
        }))
    }

    /// Starts every task of the topology, active.
    pub fn start(topology: Topology) -> Result<Running, SimulatorError> {
        Self::start_with(topology, SimulatorOptions::default())
    }

    pub fn start_with(topology: Topology, options: SimulatorOptions) -> Result<Running, SimulatorError> {
        let topology = Arc::new(topology);
        let config = topology.config();
        let start_err = |e: egret_api::ConfigError| SimulatorError::Start(vec![e.to_string()]);
        let capacity = config.queue_batches().map_err(start_err)?;
        // topology.initial.state=PAUSED starts the spouts deactivated, like `egret submit --deploy-deactivated`.
        let paused = config.starts_paused().map_err(start_err)?;
        let drop_tuples = config.drop_tuples_upon_backpressure().map_err(start_err)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            active: AtomicBool::new(options.start_active && !paused),
            in_flight: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            dropped_tuples: AtomicU64::new(0),
        });
        let mut senders: Vec<Option<QueueSender<Batch>>> = vec![None];
        let mut receivers = Vec::new();
        for _ in topology.tasks() {
            let (tx, rx) = queue::bounded(capacity);
            senders.push(Some(tx));
            receivers.push(rx);
        }
        let queues = Arc::new(senders);
        let checkpointing = Self::checkpointing(&topology, &options)?;
        let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
        let mut tasks = Vec::new();
        for ((task, ci, index), rx) in topology.tasks().zip(receivers) {
            let def = &topology.components()[ci];
            let metrics = Arc::new(TaskMetrics::default());
            let active_seen = Arc::new(AtomicBool::new(false));
            let ctx = ThreadCtx {
                topology: Arc::clone(&topology),
                task,
                shared: Arc::clone(&shared),
                metrics: Arc::clone(&metrics),
                active_seen: Arc::clone(&active_seen),
                started: started_tx.clone(),
                checkpointing: checkpointing
                    .as_ref()
                    .map(|c| (Arc::clone(&c.mailboxes), c.events.clone())),
            };
            let is_spout = def.kind.is_spout();
            let transport = SimTransport {
                queues: Arc::clone(&queues),
                shared: Arc::clone(&shared),
                // Congested when full, clear again at half full.
                drop_gates: drop_tuples
                    .then(|| vec![DropGate::new(capacity as u64, capacity as u64 / 2); queues.len()]),
            };
            let link = SimLink {
                rx,
                taken: None,
                out: transport,
            };
            let thread = std::thread::Builder::new()
                .name(format!("{}-{}", def.name, index))
                .spawn(move || {
                    if is_spout {
                        run_spout(ctx, link)
                    } else {
                        run_bolt(ctx, link)
                    }
                })?;
            tasks.push(TaskHandle {
                task,
                component: def.name.clone(),
                is_spout,
                metrics,
                active_seen,
                thread,
            });
        }
        drop(started_tx);
        let mut errors = Vec::new();
        for _ in 0..tasks.len() {
            match started_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => break,
            }
        }
        let coordinator = match checkpointing {
            Some(c) => Some(c.spawn(&topology)?),
            None => None,
        };
        let running = Running {
            topology,
            shared,
            tasks,
            coordinator,
        };
        if !errors.is_empty() {
            running.abort();
            return Err(SimulatorError::Start(errors));
        }
        Ok(running)
    }
}

/// What an effectively-once topology's coordinator thread is started with.
struct Checkpointing {
    mailboxes: Arc<Vec<checkpoints::Mailbox>>,
    events: mpsc::Sender<checkpoints::Event>,
    receiver: mpsc::Receiver<checkpoints::Event>,
    store: Arc<dyn CheckpointStore>,
    coordinator: Coordinator,
    first: egret_runtime::coordinator::Rollback,
    /// Found while setting up, shown in the status.
    errors: Vec<String>,
}

impl Checkpointing {
    fn spawn(self, topology: &Arc<Topology>) -> Result<CoordinatorHandle, SimulatorError> {
        let status = Arc::new(Mutex::new(CheckpointStatus {
            errors: self.errors,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mailboxes = Arc::clone(&self.mailboxes);
        let thread = checkpoints::CoordinatorThread {
            topology: Arc::clone(topology),
            store: self.store,
            mailboxes: self.mailboxes,
            events: self.receiver,
            status: Arc::clone(&status),
            stop: Arc::clone(&stop),
            coordinator: self.coordinator,
            first: self.first,
        };
        let handle = std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || thread.run())?;
        Ok(CoordinatorHandle {
            thread: handle,
            status,
            events: self.events,
            stop,
            mailboxes,
        })
    }
}

/// The running coordinator thread of an effectively-once topology.
struct CoordinatorHandle {
    thread: JoinHandle<()>,
    status: Arc<Mutex<CheckpointStatus>>,
    events: mpsc::Sender<checkpoints::Event>,
    stop: Arc<AtomicBool>,
    mailboxes: Arc<Vec<checkpoints::Mailbox>>,
}

struct ThreadCtx {
    topology: Arc<Topology>,
    task: TaskId,
    shared: Arc<Shared>,
    metrics: Arc<TaskMetrics>,
    active_seen: Arc<AtomicBool>,
    started: mpsc::Sender<Result<(), String>>,
    /// Effectively-once: this task's commands, and where its snapshots and failures go.
    checkpointing: Option<(Arc<Vec<checkpoints::Mailbox>>, mpsc::Sender<checkpoints::Event>)>,
}

impl ThreadCtx {
    fn start_failed(&self, e: TaskError) -> TaskOutcome {
        let msg = e.to_string();
        let _ = self.started.send(Err(msg.clone()));
        TaskOutcome {
            instance: ComponentInstance::Lost,
            error: Some(msg),
        }
    }
}

impl LoopControl for ThreadCtx {
    fn stopping(&self) -> bool {
        self.shared.stop.load(SeqCst)
    }
    fn active(&self) -> bool {
        self.shared.active.load(SeqCst)
    }
    fn processed(&self) {
        self.shared.epoch.fetch_add(1, SeqCst);
        self.shared.in_flight.fetch_sub(1, SeqCst);
    }
    fn active_seen(&self, seen: bool) {
        self.active_seen.store(seen, SeqCst);
    }
    fn command(&self) -> Option<TaskCommand> {
        let (mailboxes, _) = self.checkpointing.as_ref()?;
        mailboxes.get(self.task.0 as usize)?.pop()
    }
    fn save(&self, snapshot: Snapshot) {
        if let Some((_, events)) = &self.checkpointing {
            let _ = events.send(checkpoints::Event::Saved(snapshot));
        }
    }
    fn command_failed(&self, error: TaskError) {
        self.metrics.record_error(error.to_string());
        if let Some((_, events)) = &self.checkpointing {
            let _ = events.send(checkpoints::Event::Failure {
                task: self.task,
                reason: error.to_string(),
            });
        }
    }
}

fn run_spout(cx: ThreadCtx, mut link: SimLink) -> TaskOutcome {
    let mut t = match SpoutTask::new(&cx.topology, cx.task, Arc::clone(&cx.metrics), Instant::now()) {
        Ok(t) => t,
        Err(e) => return cx.start_failed(e),
    };
    if let Err(e) = t.open(cx.shared.active.load(SeqCst)) {
        return cx.start_failed(e);
    }
    cx.active_seen.store(true, SeqCst);
    let _ = cx.started.send(Ok(()));
    driver::run_spout(&mut t, &mut link, &cx);
    TaskOutcome {
        instance: ComponentInstance::Spout(t.close()),
        error: None,
    }
}

fn run_bolt(cx: ThreadCtx, mut link: SimLink) -> TaskOutcome {
    let mut t = match BoltTask::new(&cx.topology, cx.task, Arc::clone(&cx.metrics), Instant::now()) {
        Ok(t) => t,
        Err(e) => return cx.start_failed(e),
    };
    if let Err(e) = t.prepare() {
        return cx.start_failed(e);
    }
    let _ = cx.started.send(Ok(()));
    driver::run_bolt(&mut t, &mut link, &cx);
    TaskOutcome {
        instance: ComponentInstance::Bolt(t.cleanup()),
        error: None,
    }
}

/// A running topology.
pub struct Running {
    topology: Arc<Topology>,
    shared: Arc<Shared>,
    tasks: Vec<TaskHandle>,
    /// Effectively-once only.
    coordinator: Option<CoordinatorHandle>,
}

impl Running {
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Effectively-once: the checkpoints so far (`None` under other modes).
    pub fn checkpoints(&self) -> Option<CheckpointStatus> {
        let c = self.coordinator.as_ref()?;
        c.status.lock().ok().map(|s| s.clone())
    }

    /// Effectively-once: as if `task`'s process died — its state is lost and every task rolls back to the newest
    /// complete checkpoint (a new component, the saved state, spouts replaying from their saved position). Under
    /// other modes it does nothing and returns false.
    /// Returns once the rollback's commands are on their way to the tasks.
    pub fn fail_task(&self, task: TaskId) -> bool {
        let Some(c) = &self.coordinator else { return false };
        let epoch = |c: &CoordinatorHandle| c.status.lock().map_or(0, |s| s.epoch);
        let before = epoch(c);
        let event = checkpoints::Event::Failure {
            task,
            reason: "failure injected".into(),
        };
        if c.events.send(event).is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while epoch(c) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        epoch(c) != before
    }

    /// Waits until `n` more checkpoints than now are complete.
    pub fn wait_for_checkpoints(&self, n: u64, timeout: Duration) -> Result<CheckpointStatus, SimulatorError> {
        let completed = |r: &Self| r.checkpoints().map_or(0, |s| s.stats.completed);
        let target = completed(self) + n;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.checkpoints().filter(|s| s.stats.completed >= target) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(SimulatorError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Current counters of every task.
    pub fn metrics(&self) -> TopologyMetrics {
        TopologyMetrics {
            dropped_tuples: self.shared.dropped_tuples.load(SeqCst),
            tasks: self
                .tasks
                .iter()
                .map(|t| (t.task, (t.component.clone(), t.metrics.snapshot())))
                .collect(),
        }
    }

    /// The user metrics of every task that registered any: their latest samples, each taken at its own interval
    /// (`TopologyContext::register_*`).
    pub fn user_metrics(&self) -> BTreeMap<TaskId, Vec<egret_api::metrics::MetricSample>> {
        let now = Instant::now();
        self.tasks
            .iter()
            .filter(|t| !t.metrics.user.is_empty())
            .map(|t| {
                let mut samples = Vec::new();
                t.metrics.user.collect(now, &mut samples);
                (t.task, samples)
            })
            .collect()
    }

    /// Complete latency (µs) over all spout tasks since start or the last reset.
    pub fn complete_latency(&self) -> Histogram<u64> {
        let mut all = new_latency_histogram();
        for t in self.tasks.iter().filter(|t| t.is_spout) {
            let _ = all.add(t.metrics.complete_latency());
        }
        all
    }

    pub fn reset_complete_latency(&self) {
        for t in &self.tasks {
            t.metrics.reset_complete_latency();
        }
    }

    /// The last error each task reported, if any.
    pub fn errors(&self) -> Vec<(TaskId, String)> {
        self.tasks
            .iter()
            .filter_map(|t| t.metrics.last_error().map(|e| (t.task, e)))
            .collect()
    }

    pub fn activate(&self) {
        self.set_active(true)
    }

    pub fn deactivate(&self) {
        self.set_active(false)
    }

    fn set_active(&self, active: bool) {
        for t in self.tasks.iter().filter(|t| t.is_spout) {
            t.active_seen.store(false, SeqCst);
        }
        self.shared.active.store(active, SeqCst);
    }

    /// Waits until `done` holds for the metrics, checking every millisecond.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&TopologyMetrics) -> bool,
    ) -> Result<TopologyMetrics, SimulatorError> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if done(&m) {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                return Err(SimulatorError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn quiet_once(&self) -> bool {
        self.shared.in_flight.load(SeqCst) == 0
            && self
                .coordinator
                .as_ref()
                .is_none_or(|c| c.mailboxes.iter().all(|m| m.is_empty()))
            && self
                .tasks
                .iter()
                .all(|t| t.metrics.unflushed.load(SeqCst) == 0 && (!t.is_spout || t.active_seen.load(SeqCst)))
    }

    /// Waits until nothing is in flight: every spout saw the current activation state and went idle, every batch was
    /// processed. Deactivate first to drain a topology whose spouts never run dry.
    pub fn wait_quiet(&self, timeout: Duration) -> Result<(), SimulatorError> {
        let deadline = Instant::now() + timeout;
        loop {
            let epoch = self.shared.epoch.load(SeqCst);
            if self.quiet_once() {
                std::thread::sleep(Duration::from_millis(5));
                if self.quiet_once() && self.shared.epoch.load(SeqCst) == epoch {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(SimulatorError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs for `duration`, then stops (see [`Running::stop`]).
    pub fn run_for(self, duration: Duration) -> Finished {
        std::thread::sleep(duration);
        self.stop()
    }

    /// Deactivates the spouts, lets in-flight tuples drain (for at most 10 s), stops every task and returns what
    /// the tasks left behind.
    pub fn stop(self) -> Finished {
        self.deactivate();
        let drained = self.wait_quiet(Duration::from_secs(10)).is_ok();
        self.stop_now(drained)
    }

    /// Stops every task at once, dropping what is in flight.
    pub fn abort(self) -> Finished {
        self.stop_now(false)
    }

    fn stop_now(self, drained: bool) -> Finished {
        self.shared.stop.store(true, SeqCst);

        let metrics = self.metrics();
        let mut errors: Vec<(TaskId, String)> = self.errors();
        let mut instances = BTreeMap::new();
        for t in self.tasks {
            let outcome = match t.thread.join() {
                Ok(o) => o,
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    TaskOutcome {
                        instance: ComponentInstance::Lost,
                        error: Some(format!("task panicked: {msg}")),
                    }
                }
            };
            if let Some(e) = outcome.error {
                errors.push((t.task, e));
            }
            instances.insert(t.task, (t.component, outcome.instance));
        }
        let checkpoints = self.coordinator.and_then(|c| {
            c.stop.store(true, SeqCst);
            drop(c.events);
            let _ = c.thread.join();
            c.status.lock().ok().map(|s| s.clone())
        });
        Finished {
            topology: self.topology,
            instances,
            metrics,
            errors,
            drained,
            checkpoints,
        }
    }
}

/// Counters of every task at one moment.
#[derive(Debug, Clone, Default)]
pub struct TopologyMetrics {
    pub tasks: BTreeMap<TaskId, (String, TaskMetricsSnapshot)>,
    /// `topology.droptuples.upon.backpressure`: tuples dropped because their task's queue was congested.
    pub dropped_tuples: u64,
}

impl TopologyMetrics {
    /// The sum over a component's tasks.
    pub fn component(&self, name: &str) -> TaskMetricsSnapshot {
        let mut sum = TaskMetricsSnapshot::default();
        for (c, m) in self.tasks.values() {
            if c == name {
                sum += *m;
            }
        }
        sum
    }

    pub fn task(&self, task: TaskId) -> TaskMetricsSnapshot {
        self.tasks.get(&task).map(|(_, m)| *m).unwrap_or_default()
    }
}

/// A stopped topology: the components as their tasks left them, for tests to inspect.
pub struct Finished {
    topology: Arc<Topology>,
    instances: BTreeMap<TaskId, (String, ComponentInstance)>,
    pub metrics: TopologyMetrics,
    /// Errors reported by tasks (last one per task), start failures and panics.
    pub errors: Vec<(TaskId, String)>,
    /// Whether everything in flight was processed before the tasks stopped.
    pub drained: bool,
    /// Effectively-once: the checkpoints taken.
    pub checkpoints: Option<CheckpointStatus>,
}

impl Finished {
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn instances_of<'a>(&'a self, component: &str) -> impl Iterator<Item = &'a ComponentInstance> + 'a {
        let component = component.to_string();
        self.instances
            .values()
            .filter(move |(c, _)| *c == component)
            .map(|(_, i)| i)
    }

    /// The bolt instances of a component, in task order, as type `T` (a [`egret_api::BasicBolt`] is found through
    /// its adapter). Tasks that were lost or are of another type are skipped.
    pub fn bolts<T: Any>(&self, component: &str) -> Vec<&T> {
        self.instances_of(component)
            .filter_map(|i| match i {
                ComponentInstance::Bolt(b) => {
                    let any: &dyn Any = &**b;
                    any.downcast_ref::<T>()
                        .or_else(|| any.downcast_ref::<BasicBoltAdapter<T>>().map(|a| &a.0))
                }
                _ => None,
            })
            .collect()
    }

    /// The spout instances of a component, in task order, as type `T`.
    pub fn spouts<T: Any>(&self, component: &str) -> Vec<&T> {
        self.instances_of(component)
            .filter_map(|i| match i {
                ComponentInstance::Spout(s) => {
                    let any: &dyn Any = &**s;
                    any.downcast_ref::<T>()
                }
                _ => None,
            })
            .collect()
    }
}
