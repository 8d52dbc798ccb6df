//! The stream manager (stmgr): one per container, the only router between instances.
//!
//! - It listens on one port for its local instances (`RegisterInstance`) and for peer stmgrs (`StmgrHello`).
//! - Once every instance of its container (from the packing plan) has registered, it registers with the tmanager and
//!   receives the physical plan: which stmgr holds each task. It then opens one outgoing connection to every peer
//!   and forwards the plan (and every later one: activation) to its instances.
//! - Routing (`route`): a DATA frame names its destination task in its header; the stmgr appends the frame's
//!   bytes, unchanged, to the outgoing queue of that task's instance (local) or of that task's stmgr (remote).
//!   Tuples are never decoded here.
//! - One thread, one event loop (a tokio `current_thread` runtime): a reader task per connection routes what it
//!   reads into [`Outgoing`] queues; a writer task per connection writes everything queued with one `write` call.
//!   Frames that arrive together leave together, and nothing crosses a thread on the data path.
//! - Back pressure (`backpressure`): bytes queued for a local instance at the high watermark start it (peers are
//!   told, local spouts are no longer read); once every such queue is at the low watermark it stops. Every queue
//!   also has a hard bound ([`BACKSTOP_BYTES`]): a reader that would exceed it waits, and TCP pushes back on its
//!   sender.
//! - With `topology.droptuples.upon.backpressure=true` there is no back pressure: nothing is announced, spouts are
//!   always read, and a DATA frame for an instance or peer whose queue is congested (reached the high watermark, not
//!   yet drained to the low one: [`egret_runtime::drop_gate`]) is dropped and its tuples counted
//!   (`__dropped-tuples-count`). Their roots are not failed: they time out and replay, as in Heron.
//!
//! A daemon is a function of its listener, its state manager and a shutdown signal ([`serve`]), so tests run it in
//! one process on port 0.

mod backpressure;

pub use backpressure::{BackPressure, Change};

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::io::IoSlice;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret_api::{RootId, TaskId};
use egret_proto::egret::{
    InstanceInfo, InstanceJoined, InstanceLost, Location, PhysicalPlan, RegisterStmgr, StmgrHello, StmgrInfo, control,
};
use egret_runtime::batch::{BatchBuilder, BatchReader, Record};
use egret_runtime::drop_gate::{self, DropGate};
use egret_statemgr::StateManager;
use egret_transport::{FrameError, FrameRef, Next, control_frame, next_frame};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// Bytes one outgoing queue may hold before the readers that feed it wait. The back-pressure watermarks (4 MiB by
/// default) act first for instances; this is the backstop that keeps memory finite for peers and for watermarks
/// set too high.
pub const BACKSTOP_BYTES: u64 = 8 * 1024 * 1024;
/// Size of the chunks an outgoing queue holds frames in.
const CHUNK_BYTES: usize = 64 * 1024;
/// Written chunks each connection keeps for reuse.
const FREE_CHUNKS: usize = 16;
/// Chunks written per `writev` call at most.
const MAX_IOSLICES: usize = 64;
const HEARTBEAT: Duration = Duration::from_secs(egret_api::defaults::STMGR_HEARTBEAT_INTERVAL_SECS);
const READ_CHUNK: usize = 256 * 1024;
const MAX_FRAME: usize = egret_transport::DEFAULT_MAX_FRAME;

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
    /// What every connection to and from this stmgr proves (`egret_transport::auth`).
    pub secret: egret_transport::auth::TopologySecret,
}

/// The component name Heron gives stmgr metrics.
pub const METRICS_COMPONENT: &str = "__stmgr__";

/// Runs the stmgr until its process is killed: binds a port on `opts.host` and serves.
pub fn run(opts: Opts) -> Result<(), StmgrError> {
    let state = egret_statemgr::open(&opts.egret_home, &opts.cluster)?;
    let listener = std::net::TcpListener::bind((opts.host.as_str(), 0))?;
    serve(listener, state, opts, std::future::pending())
}

/// Serves on `listener` until `shutdown` completes: announces the listener's port in the state manager, routes,
/// and follows the tmanager. Runs its own single-threaded runtime on the calling thread.
pub fn serve(
    listener: std::net::TcpListener,
    state: Arc<dyn StateManager>,
    opts: Opts,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StmgrError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve_on_loop(listener, state, opts, shutdown))
}

/// Counters and back-pressure state the metrics thread reads.
struct Stats {
    /// DATA frames and their bytes forwarded.
    routed: AtomicU64,
    routed_bytes: AtomicU64,
    /// DATA frames that could not be delivered (no route, or the destination's connection failed); their roots are
    /// failed at once.
    dropped: AtomicU64,
    /// `topology.droptuples.upon.backpressure`: tuples (DATA records) dropped for a congested instance or peer.
    dropped_tuples: AtomicU64,
    /// Frames refused for what they hold (a destination task that does not exist, a CONTROL frame that does not
    /// decode, a message that has no business on that connection).
    bad: AtomicU64,
    bp: Mutex<BackPressure>,
    /// Per local task: (time its queue spent at or above the high watermark, since when it is above now).
    bp_by_task: Mutex<HashMap<u32, (Duration, Option<Instant>)>>,
    registered: Mutex<Vec<InstanceInfo>>,
    stop: AtomicBool,
}

/// The queue and writer of one outgoing connection (to a local instance or a peer stmgr).
struct Outgoing {
    /// Frames waiting to be written, back to back in chunks of [`CHUNK_BYTES`] (a larger frame gets a chunk of its
    /// own): memory follows the bytes queued, without the doubling of one growing buffer.
    chunks: RefCell<VecDeque<Vec<u8>>>,
    /// Written chunks kept for reuse.
    free: RefCell<Vec<Vec<u8>>>,
    /// Bytes queued and not yet written (including what the writer is writing now).
    queued: Cell<u64>,
    open: Cell<bool>,
    wake_writer: Notify,
    /// Signalled after every write, for readers waiting on the backstop.
    drained: Notify,
    /// The local task this connection serves, if any (back pressure watches only those).
    task: Option<u32>,
    /// `topology.droptuples.upon.backpressure`: whether this destination is congested.
    congestion: Cell<DropGate>,
}

impl Outgoing {
    fn new(task: Option<u32>, congestion: DropGate) -> Rc<Outgoing> {
        Rc::new(Outgoing {
            congestion: Cell::new(congestion),
            chunks: RefCell::new(VecDeque::new()),
            free: RefCell::new(Vec::new()),
            queued: Cell::new(0),
            open: Cell::new(true),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            task,
        })
    }

    /// Queues a whole frame; false if the connection is gone.
    fn push(&self, frame: &[u8]) -> bool {
        if !self.open.get() {
            return false;
        }
        let mut chunks = self.chunks.borrow_mut();
        match chunks.back_mut() {
            Some(last) if last.len() + frame.len() <= last.capacity() => last.extend_from_slice(frame),
            _ => {
                let mut chunk = match self.free.borrow_mut().pop() {
                    Some(c) if frame.len() <= CHUNK_BYTES => c,
                    _ => Vec::with_capacity(frame.len().max(CHUNK_BYTES)),
                };
                chunk.extend_from_slice(frame);
                chunks.push_back(chunk);
            }
        }
        self.queued.set(self.queued.get() + frame.len() as u64);
        self.wake_writer.notify_one();
        true
    }
}

/// Where frames for each task go.
#[derive(Default)]
struct Routes {
    /// Task id -> queue of the local instance's connection.
    local: HashMap<u32, Rc<Outgoing>>,
    /// Task id -> stmgr id holding it (from the physical plan).
    remote: HashMap<u32, String>,
    /// Stmgr id -> (its address, queue of our outgoing connection to it).
    peers: HashMap<String, (String, Rc<Outgoing>)>,
}

struct Stmgr {
    opts: Opts,
    id: String,
    topology_id: String,
    state: Arc<dyn StateManager>,
    /// The local tasks: from the packing plan at start, then from each physical plan (a rescale moves them).
    expected: RefCell<BTreeSet<u32>>,
    /// The largest task id of the topology: a destination above it (or 0) is refused. Grows with a rescale.
    max_task: Cell<u32>,
    /// Components whose instances are spouts: their connections are the ones back pressure stops reading.
    spouts: BTreeSet<String>,
    data_port: u16,
    high_watermark: u64,
    low_watermark: u64,
    /// `topology.droptuples.upon.backpressure`: drop for congested destinations instead of back pressure.
    drop_tuples: bool,
    routes: RefCell<Routes>,
    pplan: RefCell<Option<PhysicalPlan>>,
    /// Signalled when every expected instance has registered.
    all_registered: Notify,
    /// Signalled whenever the clamp on local spouts may have lifted.
    bp_lifted: Notify,
    /// How many times this stmgr started back pressure, and whether the current episode was logged at INFO: a
    /// topology running at its limit starts and stops it many times a second, so only the starts numbered by powers
    /// of two (and their stops) are logged at INFO, every other one at DEBUG.
    bp_starts: Cell<u64>,
    bp_logged: Cell<bool>,
    stats: Arc<Stats>,
    /// Control frames for the tmanager (instances' checkpoint reports, lost instances), written by the tmanager
    /// session; kept while there is none, up to [`MAX_UPSTREAM`].
    upstream: RefCell<VecDeque<Vec<u8>>>,
    upstream_ready: Notify,
}

/// Reports kept for the tmanager while it is unreachable; the oldest are dropped beyond (a checkpoint missing a
/// report is given up and the next one taken).
const MAX_UPSTREAM: usize = 10_000;

impl Stmgr {
    fn to_tmanager(&self, msg: control::Msg) {
        let mut q = self.upstream.borrow_mut();
        if q.len() >= MAX_UPSTREAM {
            q.pop_front();
        }
        q.push_back(control_frame(msg));
        drop(q);
        self.upstream_ready.notify_one();
    }
}

async fn serve_on_loop(
    listener: std::net::TcpListener,
    state: Arc<dyn StateManager>,
    opts: Opts,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StmgrError> {
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
    let definition =
        egret_proto::defn::from_definition(&topology).map_err(|e| StmgrError::Definition(e.to_string()))?;
    let config = definition.topology.config();
    let bad_config = |e: egret_api::ConfigError| StmgrError::Definition(e.to_string());
    let (high, low) = config.backpressure_watermarks().map_err(bad_config)?;
    let drop_tuples = config.drop_tuples_upon_backpressure().map_err(bad_config)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let data_port = listener.local_addr()?.port();
    let id = format!("stmgr-{}", opts.container);
    info!(
        cluster = %opts.cluster,
        egret_home = %opts.egret_home.display(),
        host = %opts.host,
        data_port,
        topology_id = %topology.id,
        tasks = ?expected,
        high_watermark = high,
        low_watermark = low,
        drop_tuples,
        "stmgr started"
    );
    let stats = Arc::new(Stats {
        routed: AtomicU64::new(0),
        routed_bytes: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        dropped_tuples: AtomicU64::new(0),
        bad: AtomicU64::new(0),
        bp: Mutex::new(BackPressure::new(high, low)),
        bp_by_task: Mutex::new(HashMap::new()),
        registered: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let s = Rc::new(Stmgr {
        spouts: topology.spouts.iter().map(|sp| sp.comp.name.clone()).collect(),
        max_task: Cell::new(definition.topology.max_task_id()),
        id: id.clone(),
        topology_id: topology.id.clone(),
        state,
        expected: RefCell::new(expected),
        data_port,
        high_watermark: high,
        low_watermark: low,
        drop_tuples,
        routes: RefCell::new(Routes::default()),
        pplan: RefCell::new(None),
        all_registered: Notify::new(),
        bp_lifted: Notify::new(),
        upstream: RefCell::new(VecDeque::new()),
        upstream_ready: Notify::new(),
        bp_starts: Cell::new(0),
        bp_logged: Cell::new(false),
        stats: Arc::clone(&stats),
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
        let (state, opts, stats) = (s.state.clone(), s.opts.clone(), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || publish_metrics(state, &opts, &stats))?;
    }
    tokio::task::spawn_local(tmanager_client(Rc::clone(&s)));
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((mut stream, peer)) => {
                    let s = Rc::clone(&s);
                    tokio::task::spawn_local(async move {
                        // Only the topology's own processes get in; a stranger learns nothing, not even its id.
                        if let Err(e) = s.opts.secret.accept_async(&mut stream).await {
                            warn!(%peer, error = %e, "connection refused");
                            return;
                        }
                        if let Err(e) = serve_connection(&s, stream).await {
                            warn!(error = %e, "connection from {peer} closed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
    stats.stop.store(true, Relaxed);
    Ok(())
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Refused(String),
}

/// The reading side of a connection: whole frames are parsed in place from one buffer.
struct Inbound {
    stream: Rc<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Inbound {
    fn new(stream: Rc<TcpStream>) -> Inbound {
        Inbound {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// The whole frame at the start of the buffer, if there is one: (its length, its bytes).
    fn frame(&self) -> Result<Option<usize>, FrameError> {
        Ok(match next_frame(&self.buf[self.start..self.end], MAX_FRAME)? {
            Next::Frame { len, .. } => Some(len),
            Next::Incomplete { .. } => None,
        })
    }

    /// Reads more bytes, making room for the frame at the start of the buffer.
    async fn fill(&mut self) -> Result<(), FrameError> {
        let needed = match next_frame(&self.buf[self.start..self.end], MAX_FRAME)? {
            Next::Incomplete { needed } => needed,
            Next::Frame { .. } => return Ok(()),
        };
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < needed {
            self.buf.resize(needed.max(READ_CHUNK), 0);
        }
        let room = &mut self.buf[self.end..];
        let n = read_some(&self.stream, room).await?;
        if n == 0 {
            return Err(FrameError::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// Reads until a whole frame is buffered; returns its length.
    async fn next(&mut self) -> Result<usize, FrameError> {
        loop {
            if let Some(len) = self.frame()? {
                return Ok(len);
            }
            self.fill().await?;
        }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }

    fn consume(&mut self, len: usize) {
        self.start += len;
    }
}

/// Reads what the socket has into `buf` (waiting until it has something); 0 means the peer closed it. A read
/// shorter than `buf` emptied the socket, so it tells the runtime so at once: the next read then waits for
/// readiness instead of costing a system call that would only say "nothing yet".
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let room = buf.len();
    loop {
        stream.readable().await?;
        let mut got = 0;
        let result = stream.try_io(Interest::READABLE, || {
            got = stream.try_read(buf)?;
            if got > 0 && got < room {
                // Clears the readiness (the data is in `got`).
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(got)
        });
        match result {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => return Ok(got),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes some of `slices` (waiting until the socket takes something); returns how many bytes.
async fn write_some(stream: &TcpStream, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
    loop {
        stream.writable().await?;
        match stream.try_write_vectored(slices) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = write_some(stream, &[IoSlice::new(bytes)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Writes everything queued on `out` until the connection fails or `out` is closed by its owner: all the chunks
/// queued so far in one `writev`, as many times as the socket needs.
async fn write_loop(s: Rc<Stmgr>, out: Rc<Outgoing>, stream: Rc<TcpStream>, name: String) {
    let mut result = Ok(());
    while out.open.get() && result.is_ok() {
        let mut taken = std::mem::take(&mut *out.chunks.borrow_mut());
        if taken.is_empty() {
            out.wake_writer.notified().await;
            continue;
        }
        // Bytes of the front chunk already written.
        let mut offset = 0;
        while !taken.is_empty() {
            let slices: Vec<IoSlice<'_>> = taken
                .iter()
                .take(MAX_IOSLICES)
                .enumerate()
                .map(|(i, c)| IoSlice::new(if i == 0 { &c[offset..] } else { c }))
                .collect();
            let mut n = match write_some(&stream, &slices).await {
                Ok(0) => {
                    result = Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            drop(slices);
            out.queued.set(out.queued.get().saturating_sub(n as u64));
            while n > 0 {
                let Some(front) = taken.front() else { break };
                let left = front.len() - offset;
                if n < left {
                    offset += n;
                    break;
                }
                n -= left;
                offset = 0;
                if let Some(mut chunk) = taken.pop_front() {
                    let mut free = out.free.borrow_mut();
                    if chunk.capacity() == CHUNK_BYTES && free.len() < FREE_CHUNKS {
                        chunk.clear();
                        free.push(chunk);
                    }
                }
            }
            out.drained.notify_waiters();
            if out.task.is_some() {
                check_backpressure(&s);
            }
        }
    }
    if let Err(e) = result {
        warn!(to = %name, error = %e, "write failed; closing the connection");
    }
    // Whatever is still queued will never be written.
    out.open.set(false);
    out.chunks.borrow_mut().clear();
    out.queued.set(0);
    out.drained.notify_waiters();
    if out.task.is_some() {
        check_backpressure(&s);
    }
}

fn spawn_writer(s: &Rc<Stmgr>, stream: Rc<TcpStream>, task: Option<u32>, name: String) -> Rc<Outgoing> {
    let out = Outgoing::new(task, DropGate::new(s.high_watermark, s.low_watermark));
    tokio::task::spawn_local(write_loop(Rc::clone(s), Rc::clone(&out), stream, name));
    out
}

async fn serve_connection(s: &Rc<Stmgr>, stream: TcpStream) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let stream = Rc::new(stream);
    let mut inbound = Inbound::new(Rc::clone(&stream));
    let len = inbound.next().await?;
    let first = match next_frame(inbound.bytes(len), MAX_FRAME)? {
        Next::Frame {
            frame: Ok(FrameRef::Control(msg)),
            ..
        } => msg,
        Next::Frame { frame: Err(e), .. } => return Err(e.into()),
        Next::Frame {
            frame: Ok(FrameRef::Data { dest, .. }),
            ..
        } => {
            return Err(ConnError::Refused(format!(
                "the connection opened with a DATA frame for task {dest}"
            )));
        }
        Next::Incomplete { .. } => return Err(ConnError::Refused("a frame cut short".into())),
    };
    inbound.consume(len);
    match first {
        control::Msg::RegisterInstance(r) => {
            let Some(info) = r
                .instance
                .filter(|i| r.topology_id == s.topology_id && s.expected.borrow().contains(&(i.task_id as u32)))
            else {
                let msg = format!("{} does not run that task of topology {}", s.id, s.topology_id);
                write_all(&stream, &status(false, msg)).await?;
                return Ok(());
            };
            write_all(&stream, &status(true, String::new())).await?;
            let task = info.task_id as u32;
            let is_spout = s.spouts.contains(&info.component);
            let out = spawn_writer(s, Rc::clone(&stream), Some(task), format!("task {task}"));
            if let Some(p) = s.pplan.borrow().clone() {
                out.push(&control_frame(control::Msg::PhysicalPlan(p)));
            }
            // A restarted instance replaces the route of its previous incarnation.
            if let Some(old) = s.routes.borrow_mut().local.insert(task, Rc::clone(&out)) {
                old.open.set(false);
                old.wake_writer.notify_one();
            }
            if let Ok(mut reg) = s.stats.registered.lock() {
                reg.retain(|i| i.task_id != info.task_id);
                reg.push(info);
                if reg.len() >= s.expected.borrow().len() {
                    s.all_registered.notify_one();
                }
            }
            info!(task, "instance registered");
            s.to_tmanager(control::Msg::InstanceJoined(InstanceJoined { task_id: task as i32 }));
            let source = if is_spout { Source::Spout } else { Source::Bolt };
            let result = forward(s, &mut inbound, source, Some(task)).await;
            // Under effectively-once the tmanager rolls every task back when one is lost.
            if !s.stats.stop.load(Relaxed) {
                s.to_tmanager(control::Msg::InstanceLost(InstanceLost { task_id: task as i32 }));
            }
            // Remove the route only if it is still ours: the task may already have re-registered on a new connection.
            let mut routes = s.routes.borrow_mut();
            if routes.local.get(&task).is_some_and(|o| Rc::ptr_eq(o, &out)) {
                routes.local.remove(&task);
            }
            drop(routes);
            out.open.set(false);
            out.wake_writer.notify_one();
            result.map_err(ConnError::from)
        }
        control::Msg::StmgrHello(h) if h.topology_id == s.topology_id => {
            info!(peer = %h.stmgr_id, "peer stmgr connected");
            let result = forward(s, &mut inbound, Source::Peer, None).await;
            // A peer that went away no longer holds back pressure.
            with_bp(s, |bp| bp.peer_stop(&h.stmgr_id, Instant::now()));
            s.bp_lifted.notify_waiters();
            result.map_err(ConnError::from)
        }
        control::Msg::StmgrHello(h) => Err(ConnError::Refused(format!(
            "a stmgr ({}) from another topology ({}) tried to connect",
            h.stmgr_id, h.topology_id
        ))),
        other => Err(ConnError::Refused(format!("the connection opened with {other:?}"))),
    }
}

fn status(ok: bool, message: String) -> Vec<u8> {
    control_frame(control::Msg::Status(egret_proto::egret::Status { ok, message }))
}

fn with_bp<T: Default>(s: &Stmgr, f: impl FnOnce(&mut BackPressure) -> T) -> T {
    match s.stats.bp.lock() {
        Ok(mut bp) => f(&mut bp),
        Err(_) => T::default(),
    }
}

/// Who is at the other end of a connection we read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Spout,
    Bolt,
    Peer,
}

/// Reads frames and routes DATA frames until the connection ends. `task` is the local task at the other end, if any:
/// its checkpoint reports go on to the tmanager, in its name.
async fn forward(s: &Rc<Stmgr>, inbound: &mut Inbound, source: Source, task: Option<u32>) -> Result<(), FrameError> {
    loop {
        if source == Source::Spout {
            wait_while_clamped(s).await;
        }
        let len = inbound.next().await?;
        let bytes = inbound.bytes(len);
        match next_frame(bytes, MAX_FRAME)? {
            Next::Frame {
                frame: Ok(FrameRef::Data { dest, .. }),
                ..
            } => route(s, dest, bytes).await,
            Next::Frame {
                frame: Ok(FrameRef::Control(control::Msg::BackPressure(bp))),
                ..
            } if source == Source::Peer => {
                let now = Instant::now();
                with_bp(s, |state| {
                    if bp.start {
                        state.peer_start(&bp.stmgr_id, now)
                    } else {
                        state.peer_stop(&bp.stmgr_id, now)
                    }
                });
                s.bp_lifted.notify_waiters();
            }
            Next::Frame {
                frame: Ok(FrameRef::Control(control::Msg::Heartbeat(_))),
                ..
            } => {}
            Next::Frame {
                frame: Ok(FrameRef::Control(control::Msg::InstanceStateStored(mut m))),
                ..
            } if task.is_some() => {
                m.task_id = task.unwrap_or_default() as i32;
                s.to_tmanager(control::Msg::InstanceStateStored(m));
            }
            Next::Frame {
                frame: Ok(FrameRef::Control(control::Msg::RestoreFailed(mut m))),
                ..
            } if task.is_some() => {
                m.task_id = task.unwrap_or_default() as i32;
                warn!(task = m.task_id, epoch = m.epoch, checkpoint = m.checkpoint, error = %m.error, "a task could not restore");
                s.to_tmanager(control::Msg::RestoreFailed(m));
            }
            Next::Frame {
                frame: Ok(FrameRef::Control(other)),
                ..
            } => {
                // Logged at powers of two only, like the other bad frames, so a hostile peer cannot flood the log.
                let n = s.stats.bad.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(control = ?other, bad_frames = n, "ignored a control message");
                }
            }
            Next::Frame { frame: Err(e), .. } => {
                // The framing holds (the length was fine): count the frame and read on.
                let n = s.stats.bad.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(error = %e, bad_frames = n, "skipped a bad frame");
                }
            }
            // `next` returned the length of a whole frame.
            Next::Incomplete { .. } => {}
        }
        inbound.consume(len);
    }
}

/// Holds a spout connection's reader while back pressure holds: the spout's socket fills and it stops emitting.
async fn wait_while_clamped(s: &Stmgr) {
    loop {
        let lifted = s.bp_lifted.notified();
        if !with_bp(s, |bp| bp.clamped()) {
            return;
        }
        lifted.await;
    }
}

/// Feeds the largest local instance queue to the back-pressure state; on a change tells every peer (and, on stop,
/// the clamped spout readers). Also keeps each local task's time above the high watermark.
fn check_backpressure(s: &Stmgr) {
    let now = Instant::now();
    let mut max = 0;
    {
        let routes = s.routes.borrow();
        let mut by_task = s.stats.bp_by_task.lock().ok();
        for (task, out) in &routes.local {
            let q = out.queued.get();
            max = max.max(q);
            if let Some(by_task) = by_task.as_mut() {
                let entry = by_task.entry(*task).or_default();
                match (q >= s.high_watermark, entry.1) {
                    (true, None) => entry.1 = Some(now),
                    (false, Some(since)) => {
                        entry.0 += now.saturating_duration_since(since);
                        entry.1 = None;
                    }
                    _ => {}
                }
            }
        }
    }
    // Dropping instead: nothing to announce, and spouts are never clamped.
    if s.drop_tuples {
        return;
    }
    let Some(change) = with_bp(s, |bp| bp.observe(max, now)) else {
        return;
    };
    log_backpressure(s, change, max);
    announce(s, change == Change::Start);
    if change == Change::Stop {
        s.bp_lifted.notify_waiters();
    }
}

fn log_backpressure(s: &Stmgr, change: Change, largest_queue: u64) {
    match change {
        Change::Start => {
            let n = s.bp_starts.get() + 1;
            s.bp_starts.set(n);
            s.bp_logged.set(n.is_power_of_two());
            if n.is_power_of_two() {
                info!(
                    largest_instance_queue_bytes = largest_queue,
                    starts = n,
                    "back pressure starts"
                );
            } else {
                debug!(
                    largest_instance_queue_bytes = largest_queue,
                    starts = n,
                    "back pressure starts"
                );
            }
        }
        Change::Stop if s.bp_logged.replace(false) => {
            info!(largest_instance_queue_bytes = largest_queue, "back pressure stops");
        }
        Change::Stop => debug!(largest_instance_queue_bytes = largest_queue, "back pressure stops"),
    }
}

/// Tells every peer that this stmgr starts or stops back pressure.
fn announce(s: &Stmgr, start: bool) {
    let frame = control_frame(control::Msg::BackPressure(egret_proto::egret::BackPressure {
        stmgr_id: s.id.clone(),
        start,
    }));
    for (_, out) in s.routes.borrow().peers.values() {
        out.push(&frame);
    }
}

/// The queue a frame for `dest` goes to, if `dest` has a route.
fn destination(s: &Stmgr, dest: u32) -> Option<Rc<Outgoing>> {
    let r = s.routes.borrow();
    match r.local.get(&dest) {
        Some(out) => Some(Rc::clone(out)),
        None => r
            .remote
            .get(&dest)
            .and_then(|id| r.peers.get(id))
            .map(|(_, out)| Rc::clone(out)),
    }
}

/// Routes one DATA frame. Waits while its destination's queue is over the backstop (TCP then pushes back on this
/// reader's sender); a frame that cannot be delivered is counted and its roots are failed.
async fn route(s: &Stmgr, dest: u32, frame: &[u8]) {
    if dest == 0 || dest > s.max_task.get() {
        let n = s.stats.bad.fetch_add(1, Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(
                task = dest,
                bad_frames = n,
                "a DATA frame for a task that does not exist"
            );
        }
        fail_lost_roots(s, frame);
        return;
    }
    let out = destination(s, dest);
    if s.drop_tuples
        && let Some(out) = &out
        && !admit(out)
    {
        drop_congested(s, dest, frame);
        return;
    }
    if let Some(out) = &out {
        while out.open.get() && out.queued.get() >= BACKSTOP_BYTES {
            out.drained.notified().await;
        }
    }
    deliver(s, dest, frame, out);
}

/// Whether a frame may be queued on `out` now, by its congestion gate.
fn admit(out: &Outgoing) -> bool {
    let mut gate = out.congestion.get();
    let admitted = gate.admit(out.queued.get());
    out.congestion.set(gate);
    admitted
}

/// Drops a DATA frame for a congested destination, counting its tuples. Its roots are not failed: failing them would
/// have the spouts replay at once into the congestion; they time out instead.
fn drop_congested(s: &Stmgr, dest: u32, frame: &[u8]) {
    let tuples = match next_frame(frame, MAX_FRAME) {
        Ok(Next::Frame {
            frame: Ok(FrameRef::Data { records, .. }),
            ..
        }) => drop_gate::data_records(records),
        _ => 0,
    };
    let before = s.stats.dropped_tuples.fetch_add(tuples, Relaxed);
    let after = before + tuples;
    // Logged when the total passes a power of two: a congested topology drops all the time.
    if tuples > 0 && (before == 0 || after.ilog2() > before.ilog2()) {
        warn!(
            task = dest,
            dropped_tuples = after,
            "destination congested; tuples dropped (topology.droptuples.upon.backpressure)"
        );
    }
}

/// Queues a frame on `out`, or counts it as dropped and fails its roots.
fn deliver(s: &Stmgr, dest: u32, frame: &[u8], out: Option<Rc<Outgoing>>) {
    if let Some(out) = out
        && out.push(frame)
    {
        s.stats.routed.fetch_add(1, Relaxed);
        s.stats.routed_bytes.fetch_add(frame.len() as u64, Relaxed);
        if out.task.is_some() && out.queued.get() >= s.high_watermark {
            check_backpressure(s);
        }
        return;
    }
    // No route (the destination is down or not yet known): counted, as Heron's __tuples_to_*_lost.
    let n = s.stats.dropped.fetch_add(1, Relaxed) + 1;
    if n.is_power_of_two() {
        warn!(task = dest, dropped_frames = n, "no route to the task; frame dropped");
    }
    fail_lost_roots(s, frame);
}

/// Fails, at once, the roots of the tuples in a frame that could not be delivered, so their spouts replay them now
/// rather than at the message timeout. Only record headers are read, and only roots owned by tasks that exist are
/// failed. A frame of FAIL records yields nothing, so this cannot loop; lost ACK records are left to the timeout.
fn fail_lost_roots(s: &Stmgr, frame: &[u8]) {
    let Ok(Next::Frame {
        frame: Ok(FrameRef::Data { records, .. }),
        ..
    }) = next_frame(frame, MAX_FRAME)
    else {
        return;
    };
    let mut roots: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for record in BatchReader::new(records) {
        match record {
            Ok(Record::Data(d)) => {
                for r in d.roots.iter().filter(|r| r.task.0 >= 1 && r.task.0 <= s.max_task.get()) {
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
        let fail = egret_transport::data_frame(task, &batch.take());
        deliver(s, task, &fail, destination(s, task));
    }
}

/// Publishes the stmgr's counters to the container's metricsmgr every second.
fn publish_metrics(locator: Arc<dyn StateManager>, opts: &Opts, s: &Stats) {
    use egret_proto::egret::{MetricValue, PublishMetrics};
    let process = format!("metricsmgr-{}", opts.container);
    let id = format!("stmgr-{}", opts.container);
    let topology = opts.topology.clone();
    let mut client = egret_metricsmgr::MetricsClient::new(opts.secret.clone(), move || {
        let l = locator.get_location(&topology, &process).ok()??;
        Some((l.host, l.port as u16))
    });
    while !s.stop.load(Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let value = |name: &str, v: &AtomicU64| MetricValue {
            name: name.to_string(),
            stream: String::new(),
            value: v.load(Relaxed) as f64,
            ..Default::default()
        };
        client.publish(PublishMetrics {
            component: METRICS_COMPONENT.into(),
            task_id: opts.container,
            process: id.clone(),
            metrics: vec![
                value("__frames-routed-count", &s.routed),
                value("__bytes-routed-count", &s.routed_bytes),
                value("__frames-dropped-count", &s.dropped),
                value("__dropped-tuples-count", &s.dropped_tuples),
                value("__frames-bad-count", &s.bad),
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
            ..Default::default()
        };
        client.publish(PublishMetrics {
            component: METRICS_COMPONENT.into(),
            task_id: opts.container,
            process: format!("{id}-bp"),
            metrics: vec![
                ms("__time_spent_back_pressure_initiated", initiated),
                ms("__time_spent_back_pressure", clamped),
                MetricValue {
                    name: "__back_pressure_active".into(),
                    stream: String::new(),
                    value: active as u8 as f64,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let per_task: Vec<(u32, Duration)> = s
            .bp_by_task
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(t, (total, since))| {
                        let current = since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
                        (*t, *total + current)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let registered = s.registered.lock().map(|r| r.clone()).unwrap_or_default();
        for (task, d) in per_task {
            let Some(info) = registered.iter().find(|i| i.task_id as u32 == task) else {
                continue;
            };
            client.publish(PublishMetrics {
                component: info.component.clone(),
                task_id: task as i32,
                process: id.clone(),
                metrics: vec![ms("__time_spent_back_pressure_by_compid", d)],
                ..Default::default()
            });
        }
    }
}

/// Registers with the tmanager once every local instance is here, then follows physical plans.
async fn tmanager_client(s: Rc<Stmgr>) {
    loop {
        let all_here = s.all_registered.notified();
        if s.stats
            .registered
            .lock()
            .is_ok_and(|r| r.len() >= s.expected.borrow().len())
        {
            break;
        }
        all_here.await;
    }
    loop {
        if let Err(e) = tmanager_session(&s).await {
            warn!(error = %e, "tmanager session ended; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The tmanager's location, waiting until there is one on a watch of it (not by polling). State manager calls run
/// on the blocking pool: a slow or unreachable state manager (ZooKeeper during an outage) must not stall this
/// thread, which routes the tuples.
async fn tmanager_location(s: &Rc<Stmgr>) -> Result<Location, String> {
    let (state, topology) = (s.state.clone(), s.opts.topology.clone());
    let mut changes = None;
    loop {
        let (st, t) = (state.clone(), topology.clone());
        let found = tokio::task::spawn_blocking(move || st.get_location(&t, "tmanager"))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(l) = found {
            return Ok(l);
        }
        if changes.is_none() {
            let (st, t) = (state.clone(), topology.clone());
            changes = tokio::task::spawn_blocking(move || st.watch_location(&t, "tmanager"))
                .await
                .ok()
                .and_then(Result::ok);
        }
        match changes.as_mut() {
            // A bound on the wait all the same: a missed change costs at most this.
            Some(c) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.changed()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn tmanager_session(s: &Rc<Stmgr>) -> Result<(), String> {
    let location = tmanager_location(s).await?;
    let mut stream = TcpStream::connect((location.host.as_str(), location.port as u16))
        .await
        .map_err(|e| e.to_string())?;
    s.opts
        .secret
        .connect_async(&mut stream)
        .await
        .map_err(|e| format!("the tmanager at {}:{}: {e}", location.host, location.port))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = Rc::new(stream);
    let instances = s.stats.registered.lock().map(|r| r.clone()).unwrap_or_default();
    let register = control_frame(control::Msg::RegisterStmgr(RegisterStmgr {
        topology_id: s.topology_id.clone(),
        stmgr: Some(StmgrInfo {
            id: s.id.clone(),
            container: s.opts.container,
            host: s.opts.host.clone(),
            data_port: s.data_port as i32,
            pid: std::process::id() as i32,
        }),
        instances,
    }));
    write_all(&stream, &register).await.map_err(|e| e.to_string())?;
    info!(tmanager = %format_args!("{}:{}", location.host, location.port), "registered with the tmanager");
    // Heartbeats go through the same queue as the reports: one writer, so frames never interleave.
    let heartbeats = async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            s.to_tmanager(control::Msg::Heartbeat(egret_proto::egret::Heartbeat { time_ms }));
        }
    };
    let plans = async {
        let mut inbound = Inbound::new(Rc::clone(&stream));
        loop {
            let len = inbound.next().await.map_err(|e| e.to_string())?;
            let msg = match next_frame(inbound.bytes(len), MAX_FRAME) {
                Ok(Next::Frame {
                    frame: Ok(FrameRef::Control(msg)),
                    ..
                }) => Some(msg),
                _ => None,
            };
            inbound.consume(len);
            match msg {
                Some(control::Msg::PhysicalPlan(p)) => apply_plan(s, p).await,
                // Effectively-once: to every local instance (spouts take checkpoints, all commit).
                Some(m @ (control::Msg::StartCheckpoint(_) | control::Msg::CheckpointCommitted(_))) => {
                    let frame = control_frame(m);
                    for out in s.routes.borrow().local.values() {
                        out.push(&frame);
                    }
                }
                Some(control::Msg::Status(st)) if !st.ok => return Err(format!("tmanager refused: {}", st.message)),
                _ => {}
            }
        }
    };
    let writer = Rc::clone(&stream);
    let reports = async move {
        loop {
            let ready = s.upstream_ready.notified();
            let next = s.upstream.borrow_mut().pop_front();
            match next {
                Some(frame) => {
                    if let Err(e) = write_all(&writer, &frame).await {
                        // Not sent: keep it for the next session.
                        s.upstream.borrow_mut().push_front(frame);
                        return format!("report to the tmanager failed: {e}");
                    }
                }
                None => ready.await,
            }
        }
    };
    tokio::select! {
        () = heartbeats => Ok(()),
        e = reports => Err(e),
        r = plans => r,
    }
}

/// Learns where every task lives, connects to new or moved peers, and passes the plan on to the local instances.
async fn apply_plan(s: &Rc<Stmgr>, p: PhysicalPlan) {
    info!(
        state = %p.topology.as_ref().map_or("unknown", |t| t.state().as_str_name()),
        stmgrs = p.stmgrs.len(),
        instances = p.instances.len(),
        "physical plan received"
    );
    let mut remote = HashMap::new();
    let mut local = BTreeSet::new();
    for i in &p.instances {
        if i.stmgr_id != s.id {
            remote.insert(i.task_id as u32, i.stmgr_id.clone());
        } else {
            local.insert(i.task_id as u32);
        }
    }
    // A rescale adds task ids and moves instances: accept the plan's local tasks and route up to its largest id.
    if let Some(max) = p.instances.iter().map(|i| i.task_id as u32).max()
        && max > s.max_task.get()
    {
        s.max_task.set(max);
    }
    if !local.is_empty() && *s.expected.borrow() != local {
        info!(tasks = ?local, "the plan changed this container's tasks");
        *s.expected.borrow_mut() = local;
    }
    for peer in p.stmgrs.iter().filter(|m| m.id != s.id) {
        let addr = format!("{}:{}", peer.host, peer.data_port);
        // A peer needs a (new) connection when it is new, moved (restarted on another port) or its writer died.
        let current = s
            .routes
            .borrow()
            .peers
            .get(&peer.id)
            .is_some_and(|(a, out)| *a == addr && out.open.get());
        if current {
            continue;
        }
        match connect_peer(s, peer).await {
            Ok(out) => {
                // A peer that (re)joins while we hold back pressure must hear about it.
                if with_bp(s, |b| b.holding()) {
                    let start = egret_proto::egret::BackPressure {
                        stmgr_id: s.id.clone(),
                        start: true,
                    };
                    out.push(&control_frame(control::Msg::BackPressure(start)));
                }
                if let Some((_, old)) = s.routes.borrow_mut().peers.insert(peer.id.clone(), (addr, out)) {
                    old.open.set(false);
                    old.wake_writer.notify_one();
                }
            }
            Err(e) => warn!(peer = %peer.id, error = %e, "cannot connect to the peer stmgr"),
        }
    }
    let frame = control_frame(control::Msg::PhysicalPlan(p.clone()));
    {
        let mut routes = s.routes.borrow_mut();
        routes.remote = remote;
        for out in routes.local.values() {
            out.push(&frame);
        }
    }
    *s.pplan.borrow_mut() = Some(p);
}

async fn connect_peer(s: &Rc<Stmgr>, peer: &StmgrInfo) -> Result<Rc<Outgoing>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect((peer.host.as_str(), peer.data_port as u16)).await {
            Ok(st) => break st,
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    s.opts
        .secret
        .connect_async(&mut stream)
        .await
        .map_err(|e| format!("peer {}: {e}", peer.id))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // Peers never write back on this connection: it is only written.
    let stream = Rc::new(stream);
    let hello = control_frame(control::Msg::StmgrHello(StmgrHello {
        topology_id: s.topology_id.clone(),
        stmgr_id: s.id.clone(),
    }));
    write_all(&stream, &hello).await.map_err(|e| e.to_string())?;
    info!(peer = %peer.id, addr = %format_args!("{}:{}", peer.host, peer.data_port), "connected to the peer stmgr");
    Ok(spawn_writer(s, stream, None, peer.id.clone()))
}
