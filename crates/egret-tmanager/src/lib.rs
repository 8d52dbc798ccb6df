//! The topology manager (tmanager), in container 0. It does not place anything (the packing plan did): it waits
//! until the stmgr of every container has registered with its instances, stitches the **physical plan** (which
//! task runs behind which stmgr, on which port, and whether the topology is active), stores it in the state
//! manager and pushes it to every stmgr. `activate` / `deactivate` from the CLI change the plan's state and push it
//! again; a stmgr that registers again (restarted) gets the current plan.
//!
//! A stmgr is alive while it sends something: it sends a heartbeat every
//! `egret_api::defaults::STMGR_HEARTBEAT_INTERVAL_SECS`, and a stmgr silent for
//! `topology.egret.stmgr.heartbeat.timeout.secs` (a stopped or wedged process, a half-open connection) is declared
//! dead: logged, its connection dropped, and from then on treated like a stmgr that disconnected (it gets no plan
//! until it registers again).
//!
//! A daemon is a function of its listener, its state manager and a shutdown signal ([`serve`]), so tests run it in
//! one process on port 0. A control plane carries a handful of connections, so each is served by a blocking std
//! thread; the accept loop polls without blocking (every [`POLL_INTERVAL`]) so that it sees the shutdown flag, and
//! at shutdown closes every connection it serves and joins their threads.

mod checkpoints;
mod metrics_store;

pub use metrics_store::MetricsStore;

use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egret_proto::api::TopologyState;
use egret_proto::egret::{
    Location, PackingPlan, PhysicalPlan, RegisterStmgr, Status, StmgrInfo, UpdateTopology, control,
};
use egret_statemgr::StateManager;
use egret_transport::auth::TopologySecret;
use egret_transport::{Frame, FrameError, FrameWriter, ThreadPerConnection, Writer, control_frame, split};

#[derive(Debug, thiserror::Error)]
pub enum TmanagerError {
    #[error("state manager: {0}")]
    State(#[from] egret_statemgr::StateError),
    #[error("topology {0} has no {1}")]
    Missing(String, &'static str),
    #[error("topology definition: {0}")]
    Definition(#[from] egret_proto::defn::DefnError),
    #[error("{0}")]
    Config(#[from] egret_api::ConfigError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("lost the claim on topology {0} (its state manager session ended): another tmanager may act now")]
    LostClaim(String),
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub egret_home: PathBuf,
    pub cluster: String,
    pub topology: String,
    pub host: String,
    /// What every connection must prove (`egret_transport::auth`).
    pub secret: TopologySecret,
}

struct Registered {
    info: StmgrInfo,
    writer: Option<Writer>,
}

struct Tm {
    topology: egret_proto::api::Topology,
    /// Where every task runs (the plan's instances come from it).
    packing: PackingPlan,
    expected: Vec<String>,
    stmgrs: BTreeMap<String, Registered>,
    plan: Option<PhysicalPlan>,
    /// Effectively-once only.
    ckpt: Option<checkpoints::Checkpoints>,
}

struct Tmanager {
    opts: Opts,
    state: Arc<dyn StateManager>,
    /// How long a registered stmgr may stay silent before it is declared dead.
    heartbeat_timeout: Duration,
    /// Set once [`serve`] is stopping, so the connection errors its own socket shutdowns cause are not logged.
    stopping: AtomicBool,
    inner: Mutex<Tm>,
    metrics: Mutex<MetricsStore>,
}

/// How long the accept loop sleeps when no connection is pending: bounds both the delay before a new connection is
/// served and the delay before [`serve`] notices its shutdown flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a starting tmanager waits for a previous one's claim to end (a killed tmanager's ZooKeeper session
/// lasts until its timeout) before it gives up and its executor starts it again.
const CLAIM_WAIT: Duration = Duration::from_secs(60);
/// Connections served at once at most (stmgrs, metrics managers, CLI and tracker requests).
const MAX_CONNECTIONS: usize = 4096;

/// Runs the tmanager until its process is killed: binds a port on `opts.host` and serves.
pub fn run(opts: Opts) -> Result<(), TmanagerError> {
    let state = egret_statemgr::open(&opts.egret_home, &opts.cluster)?;
    let listener = TcpListener::bind((opts.host.as_str(), 0))?;
    serve(listener, state, opts, Arc::new(AtomicBool::new(false)))
}

/// Serves on `listener` until `shutdown` is set: announces the listener's port in the state manager as the
/// tmanager's `Location`, waits for the stmgrs, publishes the physical plan and answers the CLI and the metrics
/// managers. When `shutdown` is set it stops accepting, closes every connection it serves, joins their threads and
/// returns. Errors only if the topology cannot be read or the listener cannot be set up; a failing connection never
/// ends `serve`.
pub fn serve(
    listener: TcpListener,
    state: Arc<dyn StateManager>,
    opts: Opts,
    shutdown: Arc<AtomicBool>,
) -> Result<(), TmanagerError> {
    let name = opts.topology.clone();
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    // First the claim: only the tmanager that holds it reads the state and acts on it.
    let lease = state.claim_tmanager(
        &name,
        &Location {
            process: "tmanager".into(),
            container: 0,
            host: opts.host.clone(),
            port: port as i32,
            pid: std::process::id() as i32,
            http_port: 0,
        },
        CLAIM_WAIT,
    )?;
    let topology = state
        .get_topology(&name)?
        .ok_or_else(|| TmanagerError::Missing(name.clone(), "definition"))?;
    let packing = state
        .get_packing_plan(&name)?
        .ok_or_else(|| TmanagerError::Missing(name.clone(), "packing plan"))?;
    let expected: Vec<String> = packing.containers.iter().map(|c| format!("stmgr-{}", c.id)).collect();
    let config = egret_proto::defn::from_definition(&topology)?.topology.config().clone();
    let heartbeat_timeout = config.stmgr_heartbeat_timeout()?;
    let parsed = egret_proto::defn::from_definition(&topology)?.topology;
    let mut ckpt = checkpoints::Checkpoints::new(&*state, &name, &parsed, &packing)?;
    // A rescale requested of the tmanager before this one, still waiting for its checkpoint: carried out at the
    // first checkpoint this tmanager completes (one of another definition, after a kill and a new submit, is not).
    if let Some(c) = ckpt.as_mut()
        && let Some(u) = &c.pending_update
    {
        if u.topology_id == topology.id {
            tracing::info!(topology = %name, "a rescale requested of the previous tmanager waits for the next checkpoint");
            checkpoints::checkpoint_soon(c);
        } else {
            c.pending_update = None;
        }
    }
    // A restarted tmanager keeps the activation state it had published.
    let mut topology = topology;
    if let Some(old) = state.get_physical_plan(&name)?.and_then(|p| p.topology) {
        topology.state = old.state;
    }
    tracing::info!(
        topology = %name,
        cluster = %opts.cluster,
        egret_home = %opts.egret_home.display(),
        host = %opts.host,
        port,
        stmgr_heartbeat_timeout = ?heartbeat_timeout,
        expected = ?expected,
        "tmanager started; waiting for every stmgr to register"
    );
    let tm = Arc::new(Tmanager {
        opts,
        state,
        heartbeat_timeout,
        stopping: AtomicBool::new(false),
        inner: Mutex::new(Tm {
            topology,
            packing,
            expected,
            stmgrs: BTreeMap::new(),
            plan: None,
            ckpt,
        }),
        metrics: Mutex::new(MetricsStore::default()),
    });
    let secret = tm.opts.secret.clone();
    let server = ThreadPerConnection {
        role: "tmanager",
        max_connections: MAX_CONNECTIONS,
        poll: POLL_INTERVAL,
        keep_serving: &|| !shutdown.load(Ordering::Acquire) && !lease.is_lost(),
        secret: &secret,
    };
    // Effectively-once: the checkpoint timer.
    let timer = {
        let (tm, shutdown, lease) = (Arc::clone(&tm), Arc::clone(&shutdown), lease.clone());
        let has_checkpoints = tm.inner.lock().is_ok_and(|i| i.ckpt.is_some());
        has_checkpoints
            .then(|| {
                std::thread::Builder::new().name("checkpoints".into()).spawn(move || {
                    while !shutdown.load(Ordering::Acquire) && !lease.is_lost() {
                        checkpoints::tick(&tm);
                        let now = std::time::Instant::now();
                        let wait =
                            checkpoints::next_tick(&tm).map_or(POLL_INTERVAL, |at| at.saturating_duration_since(now));
                        std::thread::sleep(wait.clamp(Duration::from_millis(1), POLL_INTERVAL));
                    }
                })
            })
            .transpose()?
    };
    let serving = Arc::clone(&tm);
    server.run(
        &listener,
        move |stream, peer| {
            if let Err(e) = serve_connection(&serving, stream)
                && !serving.stopping.load(Ordering::Relaxed)
            {
                tracing::info!(%peer, error = %e, "tmanager connection closed");
            }
        },
        || {
            tm.stopping.store(true, Ordering::Relaxed);
            tracing::info!(topology = %name, "tmanager shutting down");
        },
    )?;
    if let Some(t) = timer {
        let _ = t.join();
    }
    if lease.is_lost() {
        return Err(TmanagerError::LostClaim(name));
    }
    Ok(())
}

fn status(ok: bool, message: impl Into<String>) -> control::Msg {
    control::Msg::Status(Status {
        ok,
        message: message.into(),
    })
}

fn serve_connection(tm: &Tmanager, stream: TcpStream) -> Result<(), FrameError> {
    // A second handle on the same socket, to arm a registered stmgr's heartbeat timeout and to drop a stmgr that is
    // declared dead (socket options and shutdown act on the socket, whichever handle sets them).
    let socket = stream.try_clone()?;
    let (mut reader, mut writer) = split(stream, egret_transport::DEFAULT_MAX_FRAME)?;
    match reader.read()? {
        Frame::Control(control::Msg::RegisterStmgr(r)) => {
            let id = register(tm, r, &mut writer)?;
            let Some(id) = id else { return Ok(()) };
            // A read that waits longer than the timeout fails: that is a missed heartbeat deadline.
            socket.set_read_timeout(Some(tm.heartbeat_timeout))?;
            let tx = egret_transport::spawn_writer(writer, 64, id.clone());
            let plan = {
                let Ok(mut inner) = tm.inner.lock() else { return Ok(()) };
                if let Some(s) = inner.stmgrs.get_mut(&id) {
                    s.writer = Some(tx.clone());
                }
                inner.plan.clone()
            };
            match plan {
                // A stmgr that (re)joins a running topology gets the current plan at once.
                Some(p) => {
                    let _ = tx.send(control_frame(control::Msg::PhysicalPlan(p)));
                }
                None => publish_if_complete(tm),
            }
            // Heartbeats (and, under effectively-once, the instances' checkpoint reports) until the stmgr goes away
            // or falls silent.
            let result = loop {
                match reader.read() {
                    Ok(Frame::Control(control::Msg::InstanceStateStored(m))) => checkpoints::stored(tm, m),
                    Ok(Frame::Control(control::Msg::RestoreFailed(m))) => checkpoints::restore_failed(tm, m),
                    Ok(Frame::Control(control::Msg::InstanceLost(m))) => {
                        checkpoints::lost(tm, &[m.task_id as u32], None)
                    }
                    Ok(Frame::Control(control::Msg::InstanceJoined(m))) => {
                        checkpoints::joined(tm, &[m.task_id as u32], None)
                    }
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };

            if missed_deadline(&result) {
                // The stmgr's id stays in the message: the end-to-end tests look for "<id> declared dead".
                tracing::warn!(
                    stmgr = %id,
                    timeout = ?tm.heartbeat_timeout,
                    "{id} declared dead: no heartbeat for {:?}; dropping its connection",
                    tm.heartbeat_timeout
                );
                // Closing it tells the stmgr too, if it ever runs again: it reconnects and registers anew.
                let _ = socket.shutdown(Shutdown::Both);
            }
            // Like a disconnected stmgr: no plan is pushed to it until it registers again. Only this connection's
            // writer is cleared: the stmgr may have registered again on a new connection meanwhile.
            let mut current = false;
            if let Ok(mut inner) = tm.inner.lock()
                && let Some(s) = inner.stmgrs.get_mut(&id)
                && s.writer.as_ref().is_some_and(|w| w.same(&tx))
            {
                s.writer = None;
                current = true;
            }
            if current {
                // Its tasks are gone with it (effectively-once: no checkpoint until they are back).
                checkpoints::lost(tm, &[], Some(&id));
            }
            Err(result)
        }
        Frame::Control(control::Msg::MetricsReport(first)) => {
            // A metrics manager: one report now and then every export interval, until it goes away.
            let mut report = first;
            loop {
                if let Ok(mut m) = tm.metrics.lock() {
                    m.record(&report);
                }
                match reader.read()? {
                    Frame::Control(control::Msg::MetricsReport(r)) => report = r,
                    other => {
                        tracing::warn!(frame = ?other, "a metrics manager sent something else; closing its connection");
                        return Ok(());
                    }
                }
            }
        }
        Frame::Control(control::Msg::MetricsQuery(q)) => {
            let topology_id = tm.inner.lock().map(|i| i.topology.id.clone()).unwrap_or_default();
            if !q.topology_id.is_empty() && q.topology_id != topology_id {
                writer.send_control(status(
                    false,
                    format!("topology id {} is not {topology_id}", q.topology_id),
                ))?;
                return Ok(());
            }
            let response = tm.metrics.lock().map(|m| m.query(&q)).unwrap_or_default();
            writer.send_control(control::Msg::MetricsQueryResponse(response))?;
            Ok(())
        }
        Frame::Control(control::Msg::SetActive(a)) => {
            let reply = set_active(tm, &a.topology_id, a.active);
            writer.send_control(reply)?;
            Ok(())
        }
        Frame::Control(control::Msg::UpdateTopology(u)) => {
            let reply = update_topology(tm, *u);
            writer.send_control(reply)?;
            Ok(())
        }
        other => {
            tracing::warn!(frame = ?other, "dropping a connection that did not open with a known request");
            Ok(())
        }
    }
}

/// Whether a read failed because nothing arrived within the socket's read timeout (Linux reports `WouldBlock`,
/// other systems `TimedOut`).
fn missed_deadline(e: &FrameError) -> bool {
    matches!(e, FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Records a stmgr's registration; `None` if it was refused.
fn register(tm: &Tmanager, r: RegisterStmgr, writer: &mut FrameWriter) -> Result<Option<String>, FrameError> {
    let Ok(mut inner) = tm.inner.lock() else {
        return Ok(None);
    };
    let Some(info) = r
        .stmgr
        .filter(|s| r.topology_id == inner.topology.id && inner.expected.contains(&s.id))
    else {
        drop(inner);
        writer.send_control(status(false, format!("not a stmgr of topology {}", tm.opts.topology)))?;
        return Ok(None);
    };
    let id = info.id.clone();
    let rejoin = inner.plan.is_some();
    tracing::info!(stmgr = %id, instances = r.instances.len(), rejoin, "{id} registered");
    inner.stmgrs.insert(id.clone(), Registered { info, writer: None });
    if rejoin {
        // Its address changed: rebuild the plan and tell everyone.
        let plan = build_plan(&inner);
        inner.plan = Some(plan);
    }
    drop(inner);
    writer.send_control(status(true, ""))?;
    if rejoin {
        store_and_push(tm);
    }
    // Its tasks are back: under effectively-once, every task rolls back once none is missing.
    checkpoints::joined(tm, &[], Some(&id));
    Ok(Some(id))
}

fn build_plan(inner: &Tm) -> PhysicalPlan {
    // Every task where the packing plan puts it (what each stmgr registered with, until a rescale moves tasks), for
    // the stmgrs registered now: the tasks of a stmgr that is away are nowhere, so their peers fail what they would
    // send them at once rather than queue it for a peer that is not there.
    let mut instances = inner.packing.instance_infos();
    instances.retain(|i| inner.stmgrs.contains_key(&i.stmgr_id));
    PhysicalPlan {
        topology: Some(inner.topology.clone()),
        stmgrs: inner.stmgrs.values().map(|s| s.info.clone()).collect(),
        instances,
        rollback: inner.ckpt.as_ref().map(|c| c.rollback_msg()),
    }
}

fn publish_if_complete(tm: &Tmanager) {
    {
        let Ok(mut inner) = tm.inner.lock() else { return };
        if inner.plan.is_some() || !inner.expected.iter().all(|id| inner.stmgrs.contains_key(id)) {
            return;
        }
        let plan = build_plan(&inner);
        tracing::info!(
            topology = %tm.opts.topology,
            stmgrs = plan.stmgrs.len(),
            instances = plan.instances.len(),
            "every stmgr registered; publishing the physical plan"
        );
        inner.plan = Some(plan);
        push_locked(tm, &inner);
    }
}

/// Stores the plan and queues it for every stmgr, under the lock: whatever is sent to the stmgrs after (a checkpoint
/// of the plan's epoch) is queued after it.
fn store_and_push(tm: &Tmanager) {
    let Ok(inner) = tm.inner.lock() else { return };
    push_locked(tm, &inner);
}

pub(crate) fn push_locked(tm: &Tmanager, inner: &Tm) {
    let Some(plan) = inner.plan.clone() else { return };
    if let Err(e) = tm.state.put_physical_plan(&tm.opts.topology, &plan) {
        tracing::error!(topology = %tm.opts.topology, error = %e, "cannot store the physical plan");
    }
    let frame = control_frame(control::Msg::PhysicalPlan(plan));
    for w in inner.stmgrs.values().filter_map(|s| s.writer.as_ref()) {
        let _ = w.send(frame.clone());
    }
}

/// `egret update`: checks the new definition and packing plan against the running topology; under
/// effectively-once asks for a checkpoint now and applies the change when it completes
/// ([`apply_pending_update`]), otherwise applies it at once.
fn update_topology(tm: &Tmanager, u: UpdateTopology) -> control::Msg {
    let (Some(definition), Some(packing)) = (u.topology.as_ref(), u.packing_plan.as_ref()) else {
        return status(false, "an update needs the new definition and packing plan");
    };
    let new = match egret_proto::defn::from_definition(definition) {
        Ok(d) => d.topology,
        Err(e) => return status(false, format!("the new definition does not read: {e}")),
    };
    let mut placed: Vec<u32> = packing
        .containers
        .iter()
        .flat_map(|c| c.instances.iter().map(|i| i.task_id as u32))
        .collect();
    placed.sort_unstable();
    let mut tasks: Vec<u32> = new.tasks().map(|(t, _, _)| t.0).collect();
    tasks.sort_unstable();
    if placed != tasks {
        return status(
            false,
            "the packing plan does not place exactly the new definition's tasks",
        );
    }
    let mut inner = match tm.inner.lock() {
        Ok(i) => i,
        Err(_) => return status(false, "tmanager state is poisoned"),
    };
    if u.topology_id != inner.topology.id {
        return status(
            false,
            format!("topology id {} is not {}", u.topology_id, inner.topology.id),
        );
    }
    let current = match egret_proto::defn::from_definition(&inner.topology) {
        Ok(d) => d.topology,
        Err(e) => return status(false, format!("the running definition does not read: {e}")),
    };
    let names = |t: &egret_api::Topology| t.components().iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(&current) != names(&new) {
        return status(false, "an update may change parallelism only, not the components");
    }
    if inner.ckpt.as_ref().is_some_and(|c| c.pending_update.is_some()) {
        return status(false, "a rescale is already under way; wait for it to finish");
    }
    if inner.plan.is_none() {
        return status(
            false,
            "the topology is still starting (no physical plan yet); try again",
        );
    }
    tracing::info!(
        topology = %tm.opts.topology,
        tasks = new.task_count(),
        containers = packing.containers.len(),
        "rescale requested"
    );
    match inner.ckpt.as_mut() {
        Some(c) => {
            // Checked against the newest complete checkpoint now (a component's kind of state does not change), and
            // again against the rescale's own checkpoint when it completes.
            if let Some(why) = c.cannot_rescale_to(&new) {
                return status(false, format!("cannot rescale: {why}"));
            }
            checkpoints::checkpoint_soon(c);
            // Recorded with the checkpoints: a tmanager restarted before the checkpoint completes carries it out.
            c.pending_update = Some(u);
            c.record(&*tm.state, &tm.opts.topology);
            status(true, "rescaling at the next complete checkpoint")
        }
        None => {
            apply_update(tm, &mut inner, u);
            status(true, "rescaled")
        }
    }
}

/// Carries out the rescale that waited for the checkpoint just completed (effectively-once), if there is one.
pub(crate) fn apply_pending_update(tm: &Tmanager) {
    let Ok(mut inner) = tm.inner.lock() else { return };
    let Some(c) = inner.ckpt.as_mut() else { return };
    let Some(u) = c.pending_update.take() else { return };
    // Carried out now or abandoned in `apply_update`: either way no longer pending.
    c.record(&*tm.state, &tm.opts.topology);
    apply_update(tm, &mut inner, u);
}

/// Carries out a rescale: stores the new definition and packing plan (executors and the supervisor follow the
/// packing plan: they start the new instances and stop the removed ones), rolls every task back to the newest complete
/// checkpoint under the new layout (effectively-once), and pushes the plan.
fn apply_update(tm: &Tmanager, inner: &mut Tm, u: UpdateTopology) {
    let (Some(mut definition), Some(packing)) = (u.topology, u.packing_plan) else {
        return;
    };
    definition.state = inner.topology.state;
    let new = match egret_proto::defn::from_definition(&definition) {
        Ok(d) => d.topology,
        Err(e) => {
            tracing::error!(error = %e, "the rescale's definition does not read; not applied");
            return;
        }
    };
    if let Some(why) = inner.ckpt.as_ref().and_then(|c| c.cannot_rescale_to(&new)) {
        tracing::error!(topology = %tm.opts.topology, reason = %why, "rescale abandoned: the state cannot follow it");
        return;
    }
    // The definition first: a new instance reads it when it starts, which it does once the packing plan names it.
    if let Err(e) = tm
        .state
        .put_topology(&tm.opts.topology, &definition)
        .and_then(|()| tm.state.put_packing_plan(&tm.opts.topology, &packing))
    {
        tracing::error!(error = %e, "cannot store the rescaled topology; not applied");
        return;
    }
    match tm.state.get_execution_state(&tm.opts.topology) {
        Ok(Some(mut e)) if e.containers != packing.containers.len() as i32 + 1 => {
            e.containers = packing.containers.len() as i32 + 1;
            if let Err(err) = tm.state.put_execution_state(&tm.opts.topology, &e) {
                tracing::warn!(error = %err, "cannot record the rescaled container count");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot read the execution state"),
    }
    inner.expected = packing.containers.iter().map(|c| format!("stmgr-{}", c.id)).collect();
    let expected = inner.expected.clone();
    inner.stmgrs.retain(|id, _| expected.contains(id));
    inner.topology = definition;
    inner.packing = packing;
    let Tm { ckpt, packing, .. } = &mut *inner;
    if let Some(c) = ckpt.as_mut() {
        let r = c.rescale(&new, packing, std::time::Instant::now());
        c.record(&*tm.state, &tm.opts.topology);
        tracing::info!(
            epoch = r.epoch,
            checkpoint = ?r.checkpoint.map(|c| c.0),
            "rescale: every task rolls back under the new layout"
        );
    }
    let plan = build_plan(inner);
    inner.plan = Some(plan);
    push_locked(tm, inner);
    tracing::info!(topology = %tm.opts.topology, tasks = new.task_count(), "rescaled; the new plan is pushed");
}

fn set_active(tm: &Tmanager, topology_id: &str, active: bool) -> control::Msg {
    let want = if active {
        TopologyState::Running
    } else {
        TopologyState::Paused
    };
    {
        let Ok(mut inner) = tm.inner.lock() else {
            return status(false, "tmanager state is poisoned");
        };
        if topology_id != inner.topology.id {
            return status(false, format!("topology id {topology_id} is not {}", inner.topology.id));
        }
        if inner.topology.state == want as i32 {
            return status(
                true,
                if active {
                    "already active"
                } else {
                    "already deactivated"
                },
            );
        }
        inner.topology.state = want as i32;
        if let Some(plan) = inner.plan.as_mut()
            && let Some(t) = plan.topology.as_mut()
        {
            t.state = want as i32;
        }
    }
    tracing::info!(topology = %tm.opts.topology, active, "activation changed; pushing the plan");
    store_and_push(tm);
    status(true, if active { "activated" } else { "deactivated" })
}
