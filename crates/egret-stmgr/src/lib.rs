//! The stream manager (stmgr): one per container, the only router between instances.
//!
//! - It listens on one port for its local instances (`RegisterInstance`) and for peer stmgrs (`StmgrHello`).
//! - Once every instance of its container (from the packing plan) has registered, it registers with the tmanager and
//!   receives the physical plan: which stmgr holds each task. It then opens one outgoing connection to every peer
//!   and forwards the plan (and every later one: activation) to its instances.
//! - Routing: a DATA frame names its destination task in its header; the stmgr hands the frame's bytes, unchanged,
//!   to the writer of that task's instance (local) or of that task's stmgr (remote). Tuples are never decoded here.
//! - Flow control: every writer has a bounded channel. A full channel blocks the reader that feeds it, which stops
//!   reading its socket, so TCP pushes back on the sender (Heron's TCP back pressure). Explicit watermark-based
//!   back pressure between stmgrs is not built yet.

mod backpressure;

pub use backpressure::{BackPressure, Change};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use egret_api::{RootId, TaskId};
use egret_proto::egret::{InstanceInfo, Location, PhysicalPlan, RegisterStmgr, StmgrHello, StmgrInfo, control};
use egret_runtime::batch::{BatchBuilder, BatchReader, Record};
use egret_statemgr::LocalStateManager;
use egret_transport::{Frame, FrameReader, Writer, control_frame, split};

/// Frames a writer may have queued before its feeders wait. Large enough that the back-pressure watermarks (in
/// bytes) act first; this bound is the backstop that keeps memory finite even if they are set too high.
const WRITER_QUEUE: usize = 4096;
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StmgrError {
    #[error("state manager: {0}")]
    State(#[from] egret_statemgr::StateError),
    #[error("topology {0} has no {1}")]
    Missing(String, &'static str),
    #[error("container {0} is not in the packing plan")]
    UnknownContainer(i32),
    #[error("the stored definition is invalid: {0}")]
    Definition(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub egret_home: PathBuf,
    pub cluster: String,
    pub topology: String,
    pub container: i32,
    /// Host to listen on and advertise.
    pub host: String,
}

/// Where frames for each task go.
#[derive(Default)]
struct Routes {
    /// Task id -> writer of the local instance.
    local: HashMap<u32, Writer>,
    /// Task id -> stmgr id holding it (from the physical plan).
    remote: HashMap<u32, String>,
    /// Stmgr id -> (its address, writer of our outgoing connection to it).
    peers: HashMap<String, (String, Writer)>,
}

struct Stmgr {
    opts: Opts,
    id: String,
    topology_id: String,
    state: LocalStateManager,
    expected: BTreeSet<u32>,
    routes: RwLock<Routes>,
    registered: Mutex<Vec<InstanceInfo>>,
    pplan: Mutex<Option<PhysicalPlan>>,
    data_port: u16,
    /// DATA frames and their bytes forwarded, and frames dropped for want of a route.
    routed: AtomicU64,
    routed_bytes: AtomicU64,
    dropped: AtomicU64,
    /// Components whose instances are spouts: their connections are the ones back pressure stops reading.
    spouts: BTreeSet<String>,
    bp: Mutex<BackPressure>,
    /// Signalled whenever the clamp may have lifted.
    bp_lifted: Condvar,
    /// Per local task: time its queue was above the high watermark (Heron's `__time_spent_back_pressure_by_compid`).
    bp_by_task: Mutex<HashMap<u32, Duration>>,
}

/// The component name Heron gives stmgr metrics.
pub const METRICS_COMPONENT: &str = "__stmgr__";

/// Runs the stmgr until its process is killed.
pub fn run(opts: Opts) -> Result<(), StmgrError> {
    let state = LocalStateManager::new(&opts.egret_home, &opts.cluster)?;
    let name = opts.topology.clone();
    let topology = state
        .get_topology(&name)?
        .ok_or_else(|| StmgrError::Missing(name.clone(), "definition"))?;
    let packing = state
        .get_packing_plan(&name)?
        .ok_or_else(|| StmgrError::Missing(name.clone(), "packing plan"))?;
    let container = packing
        .containers
        .iter()
        .find(|c| c.id == opts.container)
        .ok_or(StmgrError::UnknownContainer(opts.container))?;
    let expected: BTreeSet<u32> = container.instances.iter().map(|i| i.task_id as u32).collect();
    let listener = TcpListener::bind((opts.host.as_str(), 0))?;
    let data_port = listener.local_addr()?.port();
    let id = format!("stmgr-{}", opts.container);
    eprintln!("stmgr: topology={name} id={id} port={data_port} expecting tasks {expected:?}");
    let definition =
        egret_proto::defn::from_definition(&topology).map_err(|e| StmgrError::Definition(e.to_string()))?;
    let (high, low) = definition
        .topology
        .config()
        .backpressure_watermarks()
        .map_err(|e| StmgrError::Definition(e.to_string()))?;
    let spouts = topology.spouts.iter().map(|sp| sp.comp.name.clone()).collect();
    let s = Arc::new(Stmgr {
        spouts,
        bp: Mutex::new(BackPressure::new(high, low)),
        bp_lifted: Condvar::new(),
        bp_by_task: Mutex::new(HashMap::new()),
        id: id.clone(),
        topology_id: topology.id.clone(),
        state,
        expected,
        routes: RwLock::new(Routes::default()),
        registered: Mutex::new(Vec::new()),
        pplan: Mutex::new(None),
        data_port,
        routed: AtomicU64::new(0),
        routed_bytes: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        opts,
    });
    s.state.put_location(
        &name,
        &Location {
            process: id,
            container: s.opts.container,
            host: s.opts.host.clone(),
            port: data_port as i32,
            pid: std::process::id() as i32,
            http_port: 0,
        },
    )?;
    {
        let s = Arc::clone(&s);
        std::thread::Builder::new()
            .name("tmanager-client".into())
            .spawn(move || tmanager_client(&s))?;
    }
    {
        let s = Arc::clone(&s);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || publish_metrics(&s))?;
    }
    {
        let s = Arc::clone(&s);
        std::thread::Builder::new()
            .name("backpressure".into())
            .spawn(move || watch_queues(&s))?;
    }
    egret_transport::accept_loop(listener, "stmgr", move |stream| serve_connection(&s, stream));
    Ok(())
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] egret_transport::FrameError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Refused(String),
}

fn serve_connection(s: &Arc<Stmgr>, stream: TcpStream) -> Result<(), ConnError> {
    let (mut reader, mut writer) = split(stream, egret_transport::DEFAULT_MAX_FRAME)?;
    match reader.read()? {
        Frame::Control(control::Msg::RegisterInstance(r)) => {
            let Some(info) = r
                .instance
                .filter(|i| r.topology_id == s.topology_id && s.expected.contains(&(i.task_id as u32)))
            else {
                let msg = format!("{} does not run that task of topology {}", s.id, s.topology_id);
                writer.send_control(control::Msg::Status(egret_proto::egret::Status {
                    ok: false,
                    message: msg,
                }))?;
                return Ok(());
            };
            writer.send_control(control::Msg::Status(egret_proto::egret::Status {
                ok: true,
                message: String::new(),
            }))?;
            let task = info.task_id as u32;
            let info_component = info.component.clone();
            let tx = egret_transport::spawn_writer(writer, WRITER_QUEUE, format!("task {task}"));
            if let Some(p) = s.pplan.lock().map(|p| p.clone()).unwrap_or(None) {
                let _ = tx.send(control_frame(control::Msg::PhysicalPlan(p)));
            }
            // A restarted instance replaces the route of its previous incarnation.
            s.routes.write().map(|mut r| r.local.insert(task, tx.clone())).ok();
            if let Ok(mut reg) = s.registered.lock() {
                reg.retain(|i| i.task_id != info.task_id);
                reg.push(info);
            }
            eprintln!("stmgr: task {task} registered");
            let is_spout = s.spouts.contains(&info_component);
            let result = forward(s, &mut reader, if is_spout { Source::Spout } else { Source::Bolt });
            // Remove the route only if it is still ours: the task may already have re-registered on a new connection.
            if let Ok(mut r) = s.routes.write()
                && r.local.get(&task).is_some_and(|w| w.same(&tx))
            {
                r.local.remove(&task);
            }
            result.map_err(ConnError::from)
        }
        Frame::Control(control::Msg::StmgrHello(h)) if h.topology_id == s.topology_id => {
            eprintln!("stmgr: peer {} connected", h.stmgr_id);
            let result = forward(s, &mut reader, Source::Peer);
            // A peer that went away no longer holds back pressure.
            if let Ok(mut bp) = s.bp.lock() {
                bp.peer_stop(&h.stmgr_id, Instant::now());
            }
            s.bp_lifted.notify_all();
            result.map_err(ConnError::from)
        }
        Frame::Control(control::Msg::StmgrHello(h)) => Err(ConnError::Refused(format!(
            "a stmgr ({}) from another topology ({}) tried to connect",
            h.stmgr_id, h.topology_id
        ))),
        other => Err(ConnError::Refused(format!("the connection opened with {other:?}"))),
    }
}

/// Reads frames and routes DATA frames until the connection ends.
/// Who is at the other end of a connection we read.
#[derive(Clone, Copy)]
enum Source {
    Spout,
    Bolt,
    Peer,
}

fn forward(s: &Stmgr, reader: &mut FrameReader, source: Source) -> Result<(), egret_transport::FrameError> {
    loop {
        if matches!(source, Source::Spout) {
            wait_while_clamped(s);
        }
        match reader.read()? {
            Frame::Data { dest, raw } => route(s, dest, raw),
            Frame::Control(control::Msg::BackPressure(bp)) if matches!(source, Source::Peer) => {
                if let Ok(mut state) = s.bp.lock() {
                    if bp.start {
                        state.peer_start(&bp.stmgr_id, Instant::now());
                    } else {
                        state.peer_stop(&bp.stmgr_id, Instant::now());
                    }
                }
                s.bp_lifted.notify_all();
            }
            Frame::Control(control::Msg::Heartbeat(_)) => {}
            Frame::Control(other) => eprintln!("stmgr: ignoring control message {other:?}"),
        }
    }
}

/// Blocks a spout connection's reader while back pressure holds: the spout's socket fills and it stops emitting.
fn wait_while_clamped(s: &Stmgr) {
    let Ok(mut bp) = s.bp.lock() else { return };
    while bp.clamped() {
        match s.bp_lifted.wait_timeout(bp, Duration::from_millis(50)) {
            Ok((guard, _)) => bp = guard,
            Err(_) => return,
        }
    }
}

/// How often the stmgr looks at its instance queues.
const BP_CHECK: Duration = Duration::from_millis(2);

/// Watches the queues to local instances and starts or stops back pressure, telling every peer.
fn watch_queues(s: &Stmgr) {
    let (high, _) = s.bp.lock().map(|b| b.watermarks()).unwrap_or((u64::MAX, 0));
    let mut last = Instant::now();
    loop {
        std::thread::sleep(BP_CHECK);
        let now = Instant::now();
        let queues: Vec<(u32, u64)> = s
            .routes
            .read()
            .map(|r| {
                r.local
                    .iter()
                    .filter(|(_, w)| w.is_open())
                    .map(|(t, w)| (*t, w.queued_bytes()))
                    .collect()
            })
            .unwrap_or_default();
        let max = queues.iter().map(|(_, q)| *q).max().unwrap_or(0);
        if let Ok(mut by_task) = s.bp_by_task.lock() {
            for (task, q) in &queues {
                if *q >= high {
                    *by_task.entry(*task).or_default() += now - last;
                }
            }
        }
        last = now;
        let change = s.bp.lock().ok().and_then(|mut b| b.observe(max, now));
        if let Some(change) = change {
            eprintln!("stmgr: back pressure {change:?} (largest instance queue {max} bytes)");
            announce(s, change == Change::Start);
            if change == Change::Stop {
                s.bp_lifted.notify_all();
            }
        }
    }
}

/// Tells every peer that this stmgr starts or stops back pressure.
fn announce(s: &Stmgr, start: bool) {
    let frame = control_frame(control::Msg::BackPressure(egret_proto::egret::BackPressure {
        stmgr_id: s.id.clone(),
        start,
    }));
    let peers: Vec<Writer> = s
        .routes
        .read()
        .map(|r| r.peers.values().map(|(_, w)| w.clone()).collect())
        .unwrap_or_default();
    for w in peers {
        let _ = w.send(frame.clone());
    }
}

fn route(s: &Stmgr, dest: u32, raw: Vec<u8>) {
    let tx = {
        let Ok(r) = s.routes.read() else { return };
        match r.local.get(&dest) {
            Some(tx) => Some(tx.clone()),
            None => r
                .remote
                .get(&dest)
                .and_then(|id| r.peers.get(id))
                .cloned()
                .map(|(_, w)| w),
        }
    };
    // Blocking send: a slow destination stops this reader, and TCP pushes back on its sender.
    let len = raw.len() as u64;
    let lost = match tx {
        Some(tx) => tx.send(raw).err(),
        None => Some(raw),
    };
    match lost {
        None => {
            s.routed.fetch_add(1, SeqCst);
            s.routed_bytes.fetch_add(len, SeqCst);
        }
        Some(raw) => {
            // No route (the destination is down or not yet known): counted, as Heron's __tuples_to_*_lost.
            let n = s.dropped.fetch_add(1, SeqCst) + 1;
            if n.is_power_of_two() {
                eprintln!("stmgr: no route to task {dest}; {n} frames dropped so far");
            }
            fail_lost_roots(s, &raw);
        }
    }
}

/// Fails, at once, the roots of the tuples in a frame that could not be delivered, so their spouts replay them now
/// rather than at the message timeout. Only record headers are read. A frame of FAIL records yields nothing, so
/// this cannot loop; lost ACK records are left to the timeout.
fn fail_lost_roots(s: &Stmgr, raw: &[u8]) {
    let mut roots: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for record in BatchReader::new(Frame::data_records(raw)) {
        match record {
            Ok(Record::Data(d)) => {
                for r in d.roots.iter() {
                    roots.entry(r.task.0).or_default().insert(r.id.0);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let now = Instant::now();
    for (task, ids) in roots {
        let mut batch = BatchBuilder::new();
        for id in ids {
            batch.push_fail(now, TaskId(task), RootId(id));
        }
        route(s, task, egret_transport::data_frame(task, &batch.take()));
    }
}

/// Publishes the stmgr's counters to the container's metricsmgr every second.
fn publish_metrics(s: &Arc<Stmgr>) {
    use egret_proto::egret::{MetricValue, PublishMetrics};
    let process = format!("metricsmgr-{}", s.opts.container);
    let locator = Arc::clone(s);
    let mut client = egret_metricsmgr::MetricsClient::new(move || {
        let l = locator.state.get_location(&locator.opts.topology, &process).ok()??;
        Some((l.host, l.port as u16))
    });
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let value = |name: &str, v: &AtomicU64| MetricValue {
            name: name.to_string(),
            stream: String::new(),
            value: v.load(SeqCst) as f64,
        };
        client.publish(PublishMetrics {
            component: METRICS_COMPONENT.into(),
            task_id: s.opts.container,
            process: s.id.clone(),
            metrics: vec![
                value("__frames-routed-count", &s.routed),
                value("__bytes-routed-count", &s.routed_bytes),
                value("__frames-dropped-count", &s.dropped),
            ],
            ..Default::default()
        });
        // Back-pressure time, in milliseconds since the stmgr started (Heron's names).
        let now = Instant::now();
        let (initiated, clamped, active) =
            s.bp.lock()
                .map(|b| (b.initiated_time(now), b.clamped_time(now), b.clamped()))
                .unwrap_or_default();
        let ms = |name: &str, d: Duration| MetricValue {
            name: name.into(),
            stream: String::new(),
            value: d.as_secs_f64() * 1000.0,
        };
        client.publish(PublishMetrics {
            component: METRICS_COMPONENT.into(),
            task_id: s.opts.container,
            process: format!("{}-bp", s.id),
            metrics: vec![
                ms("__time_spent_back_pressure_initiated", initiated),
                ms("__time_spent_back_pressure", clamped),
                MetricValue {
                    name: "__back_pressure_active".into(),
                    stream: String::new(),
                    value: active as u8 as f64,
                },
            ],
            ..Default::default()
        });
        let per_task: Vec<(u32, Duration)> = s
            .bp_by_task
            .lock()
            .map(|m| m.iter().map(|(t, d)| (*t, *d)).collect())
            .unwrap_or_default();
        let registered = s.registered.lock().map(|r| r.clone()).unwrap_or_default();
        for (task, d) in per_task {
            let Some(info) = registered.iter().find(|i| i.task_id as u32 == task) else {
                continue;
            };
            client.publish(PublishMetrics {
                component: info.component.clone(),
                task_id: task as i32,
                process: s.id.clone(),
                metrics: vec![ms("__time_spent_back_pressure_by_compid", d)],
                ..Default::default()
            });
        }
    }
}

/// Registers with the tmanager once every local instance is here, then follows physical plans.
fn tmanager_client(s: &Arc<Stmgr>) {
    loop {
        let all_here = s
            .registered
            .lock()
            .map(|r| r.len() >= s.expected.len())
            .unwrap_or(false);
        if all_here {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        if let Err(e) = tmanager_session(s) {
            eprintln!("stmgr: tmanager session ended: {e}; reconnecting");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tmanager_session(s: &Arc<Stmgr>) -> Result<(), String> {
    let location = loop {
        match s.state.get_location(&s.opts.topology, "tmanager") {
            Ok(Some(l)) => break l,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let stream = TcpStream::connect((location.host.as_str(), location.port as u16)).map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = split(stream, egret_transport::DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    let instances = s.registered.lock().map(|r| r.clone()).unwrap_or_default();
    writer
        .send_control(control::Msg::RegisterStmgr(RegisterStmgr {
            topology_id: s.topology_id.clone(),
            stmgr: Some(StmgrInfo {
                id: s.id.clone(),
                container: s.opts.container,
                host: s.opts.host.clone(),
                data_port: s.data_port as i32,
                pid: std::process::id() as i32,
            }),
            instances,
        }))
        .map_err(|e| e.to_string())?;
    let hb = Arc::new(Mutex::new(writer));
    {
        let hb = Arc::clone(&hb);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(HEARTBEAT);
                let time_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let sent = hb
                    .lock()
                    .map(|mut w| w.send_control(control::Msg::Heartbeat(egret_proto::egret::Heartbeat { time_ms })));
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        });
    }
    loop {
        match reader.read().map_err(|e| e.to_string())? {
            Frame::Control(control::Msg::PhysicalPlan(p)) => apply_plan(s, p),
            Frame::Control(control::Msg::Status(st)) if !st.ok => {
                return Err(format!("tmanager refused: {}", st.message));
            }
            _ => {}
        }
    }
}

/// Learns where every task lives, connects to new or moved peers, and passes the plan on to the local instances.
fn apply_plan(s: &Stmgr, p: PhysicalPlan) {
    let mut remote = HashMap::new();
    for i in &p.instances {
        if i.stmgr_id != s.id {
            remote.insert(i.task_id as u32, i.stmgr_id.clone());
        }
    }
    // A peer needs a (new) connection when it is new, moved (restarted on another port) or its writer died.
    let current: HashMap<String, (String, bool)> = s
        .routes
        .read()
        .map(|r| {
            r.peers
                .iter()
                .map(|(id, (addr, tx))| (id.clone(), (addr.clone(), tx.is_open())))
                .collect()
        })
        .unwrap_or_default();
    let mut fresh = Vec::new();
    for peer in p.stmgrs.iter().filter(|m| m.id != s.id) {
        let addr = format!("{}:{}", peer.host, peer.data_port);
        if current.get(&peer.id).is_some_and(|(a, open)| *a == addr && *open) {
            continue;
        }
        match connect_peer(s, peer) {
            Ok(tx) => {
                // A peer that (re)joins while we hold back pressure must hear about it.
                if s.bp.lock().is_ok_and(|b| b.holding()) {
                    let start = egret_proto::egret::BackPressure {
                        stmgr_id: s.id.clone(),
                        start: true,
                    };
                    let _ = tx.send(control_frame(control::Msg::BackPressure(start)));
                }
                fresh.push((peer.id.clone(), (addr, tx)))
            }
            Err(e) => eprintln!("stmgr: cannot connect to {}: {e}", peer.id),
        }
    }
    let locals: Vec<Writer> = match s.routes.write() {
        Ok(mut r) => {
            r.remote = remote;
            r.peers.extend(fresh);
            r.local.values().cloned().collect()
        }
        Err(_) => return,
    };
    let frame = control_frame(control::Msg::PhysicalPlan(p.clone()));
    for tx in locals {
        let _ = tx.send(frame.clone());
    }
    if let Ok(mut plan) = s.pplan.lock() {
        *plan = Some(p);
    }
}

fn connect_peer(s: &Stmgr, peer: &StmgrInfo) -> Result<Writer, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect((peer.host.as_str(), peer.data_port as u16)) {
            Ok(st) => break st,
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let (_reader, mut writer) = split(stream, egret_transport::DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    writer
        .send_control(control::Msg::StmgrHello(StmgrHello {
            topology_id: s.topology_id.clone(),
            stmgr_id: s.id.clone(),
        }))
        .map_err(|e| e.to_string())?;
    Ok(egret_transport::spawn_writer(writer, WRITER_QUEUE, peer.id.clone()))
}
