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

use std::collections::{BTreeSet, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use egret_proto::egret::{InstanceInfo, Location, PhysicalPlan, RegisterStmgr, StmgrHello, StmgrInfo, control};
use egret_statemgr::LocalStateManager;
use egret_transport::{Frame, FrameReader, Writer, control_frame, split};

/// Frames a writer may have queued before its feeders wait.
const WRITER_QUEUE: usize = 256;
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StmgrError {
    #[error("state manager: {0}")]
    State(#[from] egret_statemgr::StateError),
    #[error("topology {0} has no {1}")]
    Missing(String, &'static str),
    #[error("container {0} is not in the packing plan")]
    UnknownContainer(i32),
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
    let s = Arc::new(Stmgr {
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
    egret_transport::accept_loop(listener, "stmgr", move |stream| serve_connection(&s, stream));
    Ok(())
}

fn serve_connection(s: &Arc<Stmgr>, stream: TcpStream) -> Result<(), egret_transport::FrameError> {
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
            let result = forward(s, &mut reader);
            // Remove the route only if it is still ours: the task may already have re-registered on a new connection.
            if let Ok(mut r) = s.routes.write()
                && r.local.get(&task).is_some_and(|w| w.same(&tx))
            {
                r.local.remove(&task);
            }
            result
        }
        Frame::Control(control::Msg::StmgrHello(h)) if h.topology_id == s.topology_id => {
            eprintln!("stmgr: peer {} connected", h.stmgr_id);
            forward(s, &mut reader)
        }
        other => {
            eprintln!("stmgr: dropping a connection that opened with {other:?}");
            Ok(())
        }
    }
}

/// Reads frames and routes DATA frames until the connection ends.
fn forward(s: &Stmgr, reader: &mut FrameReader) -> Result<(), egret_transport::FrameError> {
    loop {
        match reader.read()? {
            Frame::Data { dest, raw } => route(s, dest, raw),
            Frame::Control(control::Msg::Heartbeat(_)) => {}
            Frame::Control(other) => eprintln!("stmgr: ignoring control message {other:?}"),
        }
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
    if tx.is_some_and(|tx| tx.send(raw).is_ok()) {
        s.routed.fetch_add(1, SeqCst);
        s.routed_bytes.fetch_add(len, SeqCst);
    } else {
        // No route (the destination is down or not yet known): counted, as Heron's __tuples_to_*_lost.
        let n = s.dropped.fetch_add(1, SeqCst) + 1;
        if n.is_power_of_two() {
            eprintln!("stmgr: no route to task {dest}; {n} frames dropped so far");
        }
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
        });
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
            Ok(tx) => fresh.push((peer.id.clone(), (addr, tx))),
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
