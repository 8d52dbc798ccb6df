//! An instance: the process that runs one task. It is the user's topology binary started by an executor with
//! `EGRET_INSTANCE=1` (see [`InstanceEnv`]), so user code is ordinary Rust linked into one binary.
//!
//! Threads: the **task thread** runs the spout or bolt through `egret_runtime::driver` (the same loop the simulator
//! runs) over its [`link`] to the stmgr, a non-blocking socket it reads and writes itself; a **metrics thread**
//! publishes the task's counters to the container's metricsmgr every second. Back pressure: a full socket makes the
//! link hand batches back (the spout stops emitting), and a bolt whose outputs wait reads no input, so TCP carries
//! the pressure to the stmgr.
//!
//! Effectively-once (`docs/checkpoints.md`) adds a **checkpoint writer thread** (module `checkpointing`): the
//! tmanager's commands (a physical plan's rollback, `StartCheckpoint`, `CheckpointCommitted`) arrive on the stmgr
//! connection and wait in a queue the task loop checks once per iteration (`Control`'s `LoopControl::command`); the
//! task's snapshots go to the writer thread, which writes them to a `LocalStore` under
//! `$EGRET_HOME/checkpoints/<cluster>/<topology>` and reports each one (`InstanceStateStored`) back through the
//! task thread, which alone writes to the socket. A rollback whose state cannot be read, or that the task cannot
//! carry out, is reported as `RestoreFailed`. The metrics thread adds the checkpoint counters (`__checkpoints-saved`,
//! `__dropped-stale-count`, ...). Under the other modes none of this exists, a plan's rollback is ignored and the
//! checkpoint messages are counted as errors like any unexpected control message.

mod checkpointing;
mod link;
pub use link::set_around_wait;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret_api::{ReliabilityMode, TaskId, Topology};
use egret_checkpoint::LocalStore;
use egret_proto::defn;
use egret_proto::egret::{
    ExceptionInfo, HistogramValue, InstanceInfo, MetricValue, PublishMetrics, RegisterInstance, control,
};
use egret_runtime::checkpoint::{Snapshot, TaskCommand};
use egret_runtime::driver::{self, LoopControl};
use egret_runtime::metrics::{cumulative_counts, latency_bucket_bounds_micros, names};
use egret_runtime::{BoltTask, SpoutTask, TaskError, TaskMetrics};
use egret_statemgr::StateManager;
use egret_transport::FrameError;

use checkpointing::Checkpointing;
use link::StmgrLink;

/// Environment variables an executor sets for an instance.
pub mod env {
    pub const INSTANCE: &str = "EGRET_INSTANCE";
    pub const HOME: &str = "EGRET_HOME";
    pub const CLUSTER: &str = "EGRET_CLUSTER";
    pub const TOPOLOGY: &str = "EGRET_TOPOLOGY";
    pub const TASK: &str = "EGRET_TASK";
    pub const CONTAINER: &str = "EGRET_CONTAINER";
    /// Set by `egret submit`: write the topology definition to this path and exit.
    pub const DEFINITION_OUT: &str = "EGRET_DEFINITION_OUT";
    /// Set by `egret submit --name`: the topology's name.
    pub const TOPOLOGY_NAME: &str = "EGRET_TOPOLOGY_NAME";
}

/// How long an instance waits for its stmgr to appear.
const STMGR_WAIT: Duration = Duration::from_secs(60);
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// How long an instance whose task a rescale removed waits for its executor to stop it.
const REMOVED_WAIT: Duration = Duration::from_secs(60);
/// How long an instance waits for its stmgr to answer the registration.
const REPLY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("environment variable {0} is missing or invalid")]
    Env(&'static str),
    #[error("state manager: {0}")]
    State(#[from] egret_statemgr::StateError),
    #[error("topology {0} has no stored definition")]
    NoDefinition(String),
    #[error("stored definition: {0}")]
    Definition(#[from] defn::DefnError),
    #[error("this binary builds another topology than the one submitted: {0}")]
    ShapeMismatch(String),
    #[error("task {0} is not in the topology")]
    UnknownTask(TaskId),
    #[error("no stmgr for container {container} appeared within {STMGR_WAIT:?}")]
    NoStmgr { container: i32 },
    #[error("stmgr connection: {0}")]
    Connection(#[from] std::io::Error),
    #[error("stmgr connection: {0}")]
    Frame(#[from] FrameError),
    #[error("the stmgr refused the registration: {0}")]
    Refused(String),
    #[error("task failed to start: {0}")]
    Task(#[from] egret_runtime::TaskError),
    #[error("topology config: {0}")]
    Config(#[from] egret_api::ConfigError),
    #[error("cannot start the checkpoint writer: {0}")]
    CheckpointWriter(std::io::Error),
    #[error("lost the connection to the stmgr")]
    LostStmgr,
    #[error("{0}")]
    Auth(#[from] egret_transport::auth::AuthError),
}

/// Who this instance is, from the executor's environment.
#[derive(Debug, Clone)]
pub struct InstanceEnv {
    pub egret_home: PathBuf,
    pub cluster: String,
    pub topology: String,
    pub task: TaskId,
    pub container: i32,
}

impl InstanceEnv {
    /// `None` when this process was not started as an instance.
    pub fn from_env() -> Option<Result<InstanceEnv, InstanceError>> {
        std::env::var_os(env::INSTANCE)?;
        let var = |k: &'static str| std::env::var(k).map_err(|_| InstanceError::Env(k));
        Some((|| {
            Ok(InstanceEnv {
                egret_home: PathBuf::from(var(env::HOME)?),
                cluster: var(env::CLUSTER)?,
                topology: var(env::TOPOLOGY)?,
                task: TaskId(var(env::TASK)?.parse().map_err(|_| InstanceError::Env(env::TASK))?),
                container: var(env::CONTAINER)?
                    .parse()
                    .map_err(|_| InstanceError::Env(env::CONTAINER))?,
            })
        })())
    }
}

/// Shared by the task thread (through its link) and the metrics thread.
struct Control {
    /// The stmgr connection is gone: the task stops and the process exits (its executor restarts it).
    stop: AtomicBool,
    /// The topology is activated (from the physical plan the stmgr forwards).
    active: AtomicBool,
    /// Effectively-once only: commands for the task loop, the writer of its snapshots, reports for the stmgr.
    checkpointing: Option<Checkpointing>,
    /// The task layout the task runs with, and a rescale for the task loop to carry out.
    layout: Mutex<Layout>,
    /// `layout.rescale` is set (one atomic load per loop when it is not).
    rescale_waiting: AtomicBool,
    /// A rescale removed this task: it stopped, and the process waits for its executor to stop it.
    removed: AtomicBool,
    task: TaskId,
}

/// The topology as this binary built it (with code) and as the last physical plan lays out its tasks.
struct Layout {
    code: Topology,
    current: Arc<Topology>,
    rescale: Option<Arc<Topology>>,
}

impl Control {
    /// A physical plan's topology: if its task layout differs from the current one (`egret update` rescaled a
    /// component), the task loop gets a `Rescale` before anything else. Returns the topology to run under, and
    /// whether this task is still in it.
    fn plan_topology(&self, definition: Option<&egret_proto::api::Topology>) -> (Arc<Topology>, bool) {
        let mut layout = self.layout.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stored = definition.and_then(|d| match defn::from_definition(d) {
            Ok(d) => Some(d.topology),
            Err(e) => {
                tracing::error!(error = %e, "the physical plan's topology does not read; keeping the current one");
                None
            }
        });
        if let Some(stored) = stored
            && stored.task_ids() != layout.current.task_ids()
        {
            match layout.code.with_layout_of(&stored) {
                Ok(t) => {
                    let t = Arc::new(t);
                    tracing::info!(
                        tasks = t.task_count(),
                        "the topology was rescaled; routing to its new tasks"
                    );
                    layout.current = Arc::clone(&t);
                    layout.rescale = Some(t);
                    self.rescale_waiting.store(true, SeqCst);
                }
                Err(e) => tracing::error!(error = %e, "the physical plan's task layout does not fit this topology"),
            }
        }
        let present = layout.current.task_component(self.task).is_some();
        (Arc::clone(&layout.current), present)
    }

    fn take_rescale(&self) -> Option<TaskCommand> {
        if !self.rescale_waiting.swap(false, SeqCst) {
            return None;
        }
        let topology = self.layout.lock().ok()?.rescale.take()?;
        Some(TaskCommand::Rescale { topology })
    }

    fn commands_waiting(&self) -> bool {
        self.rescale_waiting.load(SeqCst) || self.checkpointing.as_ref().is_some_and(|c| c.has_commands())
    }
}

impl LoopControl for Control {
    fn stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }
    fn active(&self) -> bool {
        self.active.load(SeqCst)
    }
    fn command(&self) -> Option<TaskCommand> {
        // A rescale first: a rollback queued with it restores under the new layout.
        self.take_rescale()
            .or_else(|| self.checkpointing.as_ref()?.next_command())
    }
    fn save(&self, snapshot: Snapshot) {
        if let Some(c) = &self.checkpointing {
            c.save(snapshot);
        }
    }
    fn command_failed(&self, error: TaskError) {
        // Commands come only from `checkpointing`, so it is there whenever one fails.
        if let Some(c) = &self.checkpointing {
            c.command_failed(error);
        }
    }
}

/// Runs the task until the stmgr connection is lost (then the executor restarts the process).
pub fn run(topology: Topology, env: InstanceEnv) -> Result<(), InstanceError> {
    let state = egret_statemgr::open(&env.egret_home, &env.cluster)?;
    let stored = state
        .get_topology(&env.topology)?
        .ok_or_else(|| InstanceError::NoDefinition(env.topology.clone()))?;
    let stored = defn::from_definition(&stored)?;
    defn::same_shape(&topology, &stored.topology).map_err(InstanceError::ShapeMismatch)?;
    // Config given at submit time (--config-property) is in the stored definition, and so is the task layout of a
    // rescaled topology.
    let code = topology.with_config(stored.topology.config().clone());
    let topology = Arc::new(
        code.with_layout_of(&stored.topology)
            .map_err(|e| InstanceError::ShapeMismatch(e.to_string()))?,
    );
    let (ci, index) = topology
        .task_component(env.task)
        .ok_or(InstanceError::UnknownTask(env.task))?;
    let component = topology.components()[ci].name.clone();
    let is_spout = topology.components()[ci].kind.is_spout();
    tracing::info!(
        cluster = %env.cluster,
        egret_home = %env.egret_home.display(),
        kind = %if is_spout { "spout" } else { "bolt" },
        pid = std::process::id(),
        "instance started"
    );

    let metrics = Arc::new(TaskMetrics::default());
    // The mode is the topology's, as in the simulator. Under effectively-once the task waits for a restore, which
    // only `checkpointing` gives it.
    let checkpointing = if topology.config().reliability_mode()? == ReliabilityMode::EffectivelyOnce {
        let store = LocalStore::new(state.checkpoints_dir(&env.topology)?);
        Some(Checkpointing::start(env.task, store, Arc::clone(&metrics)).map_err(InstanceError::CheckpointWriter)?)
    } else {
        None
    };

    let secret = egret_transport::auth::TopologySecret::load(&env.egret_home, &env.cluster, &env.topology)?;
    let stmgr_process = format!("stmgr-{}", env.container);
    let deadline = Instant::now() + STMGR_WAIT;
    // Re-read the location on every attempt: a restarted stmgr listens on a new port, and until it writes its
    // location the old (dead) one is still on file.
    let stream = loop {
        if let Some(l) = state.get_location(&env.topology, &stmgr_process)?
            && let Ok(stream) = secret.connect_to(&l.host, l.port as u16)
        {
            break stream;
        }
        if Instant::now() > deadline {
            return Err(InstanceError::NoStmgr {
                container: env.container,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let register = egret_transport::control_frame(control::Msg::RegisterInstance(RegisterInstance {
        topology_id: stored.id.clone(),
        instance: Some(InstanceInfo {
            task_id: env.task.0 as i32,
            component: component.clone(),
            component_index: index as i32,
            stmgr_id: stmgr_process.clone(),
        }),
    }));
    (&stream).write_all(&register)?;

    let config = topology.config();
    let capacity = config.queue_batches().unwrap_or(32);
    let ctl = Arc::new(Control {
        stop: AtomicBool::new(false),
        active: AtomicBool::new(false),
        checkpointing,
        layout: Mutex::new(Layout {
            code,
            current: Arc::clone(&topology),
            rescale: None,
        }),
        rescale_waiting: AtomicBool::new(false),
        removed: AtomicBool::new(false),
        task: env.task,
    });
    let mut link = StmgrLink::new(stream, env.task, capacity, Arc::clone(&ctl), Arc::clone(&metrics))?;
    match link.first_control(REPLY_WAIT)? {
        control::Msg::Status(s) if s.ok => tracing::info!(stmgr = %stmgr_process, "registered with the stmgr"),
        control::Msg::Status(s) => return Err(InstanceError::Refused(s.message)),
        other => return Err(InstanceError::Refused(format!("unexpected first reply {other:?}"))),
    }

    {
        let (ctl, metrics, state, env, component, topology) = (
            Arc::clone(&ctl),
            Arc::clone(&metrics),
            state.clone(),
            env.clone(),
            component.clone(),
            Arc::clone(&topology),
        );
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || publish_metrics(state, secret, &env, &topology, &component, &metrics, &ctl))?;
    }

    let now = Instant::now();
    if is_spout {
        let mut t = SpoutTask::new(&topology, env.task, metrics, now)?;
        t.open(ctl.active.load(SeqCst))?;
        driver::run_spout(&mut t, &mut link, &*ctl);
        t.close();
    } else {
        let mut t = BoltTask::new(&topology, env.task, metrics, now)?;
        t.prepare()?;
        driver::run_bolt(&mut t, &mut link, &*ctl);
        t.cleanup();
    }
    // The connection closes now: a removed task's stmgr must not keep queueing frames for it while it waits.
    drop(link);
    if ctl.removed.load(SeqCst) {
        // Exiting would have the executor start it again (only to find its task gone) if the executor has not seen
        // the new packing plan yet: wait for it to stop this process instead.
        tracing::info!("the task was removed by a rescale; waiting for the executor to stop this process");
        std::thread::sleep(REMOVED_WAIT);
        return Ok(());
    }
    Err(InstanceError::LostStmgr)
}

/// Publishes the task's totals to the container's metricsmgr every second; reconnects as needed.
fn publish_metrics(
    state: Arc<dyn StateManager>,
    secret: egret_transport::auth::TopologySecret,
    env: &InstanceEnv,
    topology: &Topology,
    component: &str,
    m: &TaskMetrics,
    ctl: &Control,
) {
    let process = format!("metricsmgr-{}", env.container);
    let name = env.topology.clone();
    let mut client = egret_metricsmgr::MetricsClient::new(secret, move || {
        let l = state.get_location(&name, &process).ok()??;
        Some((l.host, l.port as u16))
    });
    let bounds_micros = latency_bucket_bounds_micros();
    while !ctl.stop.load(SeqCst) {
        std::thread::sleep(METRICS_INTERVAL);
        let s = m.snapshot();
        let mut metrics = vec![
            value(names::ACK_COUNT, "", s.acked as f64),
            value(names::FAIL_COUNT, "", s.failed as f64),
            value(names::EXCEPTION_COUNT, "", s.errors as f64),
        ];
        // Emits are labelled by output stream, executes by source "component/stream" (Heron's keys).
        for (i, c) in m.stream_counts().iter().enumerate() {
            let Some(info) = topology.streams().get(i) else {
                continue;
            };
            if c.emitted > 0 {
                metrics.push(value(names::EMIT_COUNT, &info.source.stream, c.emitted as f64));
            }
            if c.executed > 0 {
                let source = format!("{}/{}", info.source.component, info.source.stream);
                metrics.push(value(names::EXECUTE_COUNT, &source, c.executed as f64));
            }
        }
        if s.executed > 0 {
            let avg_ms = s.execute_time.as_secs_f64() * 1000.0 / s.executed as f64;
            metrics.push(value(names::EXECUTE_LATENCY, "", avg_ms));
        }
        if ctl.checkpointing.is_some() {
            let load = |a: &AtomicU64| a.load(Relaxed) as f64;
            metrics.extend([
                value(names::CHECKPOINTS_SAVED, "", load(&m.checkpoints_saved)),
                value(names::CHECKPOINT_LAST_ID, "", load(&m.checkpoint_last_id)),
                value(names::CHECKPOINT_STATE_BYTES, "", load(&m.checkpoint_state_bytes)),
                value(
                    names::CHECKPOINT_ALIGNMENT_MS,
                    "",
                    load(&m.checkpoint_alignment_micros) / 1000.0,
                ),
                value(names::CHECKPOINT_BUFFERED_BYTES, "", load(&m.checkpoint_buffered_bytes)),
                value(names::CHECKPOINTS_ABANDONED, "", load(&m.checkpoints_abandoned)),
                value(names::DROPPED_STALE, "", load(&m.dropped_stale)),
            ]);
        }
        let mut histograms = Vec::new();
        add_user_metrics(&m.user, &mut metrics, &mut histograms);
        let latency = m.complete_latency();
        if !latency.is_empty() {
            metrics.push(value(names::COMPLETE_LATENCY, "", latency.mean() / 1000.0));
            // The whole distribution since start, cumulative: a reader takes the difference of two scrapes for the
            // quantiles of any window.
            histograms.push(HistogramValue {
                name: names::COMPLETE_LATENCY_SECONDS.into(),
                stream: String::new(),
                upper_bounds: bounds_micros.iter().map(|&us| us as f64 / 1e6).collect(),
                cumulative_counts: cumulative_counts(&latency, &bounds_micros),
                sum: latency.mean() * latency.len() as f64 / 1e6,
                count: latency.len(),
            });
        }
        let ms_since_epoch = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let exceptions = m
            .exceptions()
            .into_iter()
            .map(|(message, e)| ExceptionInfo {
                component: component.to_string(),
                task_id: env.task.0 as i32,
                message,
                count: e.count,
                first_ms: ms_since_epoch(e.first),
                last_ms: ms_since_epoch(e.last),
            })
            .collect();
        client.publish(PublishMetrics {
            component: component.to_string(),
            task_id: env.task.0 as i32,
            process: format!("instance-{}", env.task),
            metrics,
            exceptions,
            histograms,
        });
    }
}

/// The component's user metrics (sampled at their own intervals) as published values and histograms.
fn add_user_metrics(
    registry: &egret_api::MetricRegistry,
    metrics: &mut Vec<MetricValue>,
    histograms: &mut Vec<HistogramValue>,
) {
    use egret_api::metrics::{MetricSample, SampleKind};
    use egret_proto::egret::MetricKind;
    let mut samples = Vec::new();
    registry.collect(std::time::Instant::now(), &mut samples);
    for s in samples {
        match s {
            MetricSample::Value { name, key, kind, value } => metrics.push(MetricValue {
                name,
                stream: String::new(),
                value,
                kind: match kind {
                    SampleKind::Counter => MetricKind::Counter,
                    SampleKind::Gauge => MetricKind::Gauge,
                } as i32,
                key: key.unwrap_or_default(),
            }),
            MetricSample::Histogram {
                name,
                upper_bounds,
                cumulative_counts,
                sum,
                count,
            } => histograms.push(HistogramValue {
                name,
                stream: String::new(),
                upper_bounds,
                cumulative_counts,
                sum,
                count,
            }),
        }
    }
}

fn value(name: &str, stream: &str, v: f64) -> MetricValue {
    MetricValue {
        name: name.to_string(),
        stream: stream.to_string(),
        value: v,
        ..Default::default()
    }
}
