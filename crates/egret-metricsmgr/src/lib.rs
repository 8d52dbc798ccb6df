//! The metrics manager of an Egret container (Heron's metricsmgr): instances and daemons publish their metrics to
//! it, and Prometheus scrapes it.
//!
//! ```text
//! publisher port   Egret frames: CONTROL frames carrying PublishMetrics, one connection (and thread) per publisher
//! http port        GET /metrics: Prometheus text exposition format 0.0.4 (see `render`)
//! ```
//!
//! A publisher sends its *current totals* whenever it likes: counters (`__emit-count`, `__ack-count`, ...) are
//! monotonic, latencies (`__execute-latency`, `__complete-latency`, published in milliseconds) are means, i.e.
//! gauges. The manager keeps, per publisher (component, task, process), the latest value of each (name, stream),
//! and serves them as they are: it sums nothing, so a scrape never depends on when publishers last reported.
//!
//! Values outlive their publisher's connection: a task that dies still shows its last totals. When the task
//! restarts it publishes its counters from zero again; Prometheus treats a counter that goes down as a reset, so
//! `rate()` and `increase()` stay correct across restarts.
//!
//! Publishers are peers: a frame that does not decode, is larger than 1 MiB, or is not `PublishMetrics` is logged
//! with the peer's address and ends that connection only, and is counted in `egret_metricsmgr_frames_rejected`.
//!
//! Blocking std threads throughout: two accept loops polled without blocking (so `serve` sees its shutdown flag
//! within [`POLL_INTERVAL`]), a thread per publisher and per scrape, all joined when `serve` returns.

mod client;
mod forward;
mod http;
mod publisher;
mod render;
mod state;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use egret_proto::egret::PublishMetrics;

pub use client::MetricsClient;
pub use forward::{EXPORT_INTERVAL, SnapshotHandle, forward_reports, report};
pub use http::{CONTENT_TYPE, MAX_HEAD};
pub use publisher::MAX_FRAME;
pub use render::{escape_label_value, metric_name, render};
pub use state::{MAX_SERIES, PublisherKey, SeriesKey, Snapshot};

/// How long the accept loops sleep when nothing is pending: bounds both the delay before a new connection is
/// served and the delay before `serve` notices its shutdown flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Most publisher connections served at once. A container runs a handful of instances and daemons; the bound only
/// stops a misbehaving peer from exhausting threads.
pub const MAX_PUBLISHERS: usize = 1024;
/// Most scrapes served at once, for the same reason.
pub const MAX_SCRAPES: usize = 16;
/// Connections accepted per listener per loop turn, so a flood of connections cannot delay the shutdown check.
const ACCEPT_BURST: usize = 64;

/// State shared by the accept loops and the connection threads.
pub(crate) struct Shared {
    topology: String,
    snapshot: Mutex<Snapshot>,
    publishers: AtomicU64,
    frames_rejected: AtomicU64,
    /// Set once `serve` is stopping, so connection errors caused by its own socket shutdowns are not logged.
    shutdown: AtomicBool,
}

impl Shared {
    /// The lock only guards plain data; a thread that panicked while holding it left a usable snapshot behind.
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn apply(&self, msg: PublishMetrics) {
        let dropped = self.lock().apply(msg);
        if dropped > 0 {
            eprintln!("egret-metricsmgr: {dropped} values dropped: already keeping {MAX_SERIES} series");
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = self.lock().clone();
        s.publishers = self.publishers.load(Relaxed);
        s.frames_rejected = self.frames_rejected.load(Relaxed);
        s
    }

    fn render(&self) -> String {
        render(&self.topology, &self.snapshot())
    }
}

/// Decrements the publisher gauge when a publisher thread ends, however it ends.
struct PublisherGuard(Arc<Shared>);

impl Drop for PublisherGuard {
    fn drop(&mut self) {
        self.0.publishers.fetch_sub(1, Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ConnKind {
    Publisher,
    Scrape,
}

/// A connection's thread and a handle on its socket, so `serve` can unblock the thread at shutdown and join it.
struct Connection {
    kind: ConnKind,
    stream: TcpStream,
    thread: JoinHandle<()>,
}

/// A metrics manager bound to its two ports; [`MetricsManager::serve`] runs it.
pub struct MetricsManager {
    shared: Arc<Shared>,
    publisher: TcpListener,
    http: TcpListener,
}

impl MetricsManager {
    /// Binds the publisher port and the HTTP port on `host`, each on a port the system picks (written into the
    /// state manager by the caller, so nothing needs a fixed port).
    pub fn bind(topology: &str, host: &str) -> io::Result<MetricsManager> {
        let publisher = TcpListener::bind((host, 0))?;
        let http = TcpListener::bind((host, 0))?;
        Ok(MetricsManager {
            shared: Arc::new(Shared {
                topology: topology.to_string(),
                snapshot: Mutex::new(Snapshot::default()),
                publishers: AtomicU64::new(0),
                frames_rejected: AtomicU64::new(0),
                shutdown: AtomicBool::new(false),
            }),
            publisher,
            http,
        })
    }

    /// The port publishers connect to.
    pub fn publisher_port(&self) -> u16 {
        self.publisher.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The port Prometheus scrapes.
    pub fn http_port(&self) -> u16 {
        self.http.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// A handle on the values, for forwarding them while `serve` runs.
    pub fn snapshot_handle(&self) -> SnapshotHandle {
        SnapshotHandle(Arc::clone(&self.shared))
    }

    /// The topology named in every series' `topology` label.
    pub fn topology(&self) -> &str {
        &self.shared.topology
    }

    /// Serves publishers and scrapes until `shutdown` is set, then closes every connection, joins every thread and
    /// returns. Errors only if the listeners cannot be made non-blocking; a failing connection never ends `serve`.
    pub fn serve(self, shutdown: Arc<AtomicBool>) -> io::Result<()> {
        self.publisher.set_nonblocking(true)?;
        self.http.set_nonblocking(true)?;
        let mut conns: Vec<Connection> = Vec::new();
        while !shutdown.load(Acquire) {
            let mut accepted = self.accept(ConnKind::Publisher, &mut conns);
            accepted |= self.accept(ConnKind::Scrape, &mut conns);
            reap(&mut conns);
            if !accepted {
                thread::sleep(POLL_INTERVAL);
            }
        }
        self.shared.shutdown.store(true, Relaxed);
        for c in &conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        for c in conns {
            let _ = c.thread.join();
        }
        Ok(())
    }

    /// Accepts what is pending on one listener (at most [`ACCEPT_BURST`]); returns whether anything was.
    fn accept(&self, kind: ConnKind, conns: &mut Vec<Connection>) -> bool {
        let listener = match kind {
            ConnKind::Publisher => &self.publisher,
            ConnKind::Scrape => &self.http,
        };
        let mut accepted = false;
        for _ in 0..ACCEPT_BURST {
            match listener.accept() {
                Ok((stream, peer)) => {
                    accepted = true;
                    if let Err(e) = self.start(kind, stream, peer, conns) {
                        eprintln!("egret-metricsmgr: cannot serve {peer}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, an aborted handshake...: the listener itself is fine; try again later.
                    eprintln!("egret-metricsmgr: accept failed: {e}");
                    break;
                }
            }
        }
        accepted
    }

    /// Starts the thread of one accepted connection, or turns it away when too many are open.
    fn start(
        &self,
        kind: ConnKind,
        stream: TcpStream,
        peer: SocketAddr,
        conns: &mut Vec<Connection>,
    ) -> io::Result<()> {
        // Some platforms hand out accepted sockets in the listener's non-blocking mode.
        stream.set_nonblocking(false)?;
        let open = conns.iter().filter(|c| c.kind == kind).count();
        let handle = stream.try_clone()?;
        let shared = Arc::clone(&self.shared);
        let thread = match kind {
            ConnKind::Publisher => {
                if open >= MAX_PUBLISHERS {
                    return Err(io::Error::other(format!(
                        "{MAX_PUBLISHERS} publishers already connected"
                    )));
                }
                shared.publishers.fetch_add(1, Relaxed);
                let guard = PublisherGuard(Arc::clone(&shared));
                thread::Builder::new()
                    .name(format!("metricsmgr-pub-{peer}"))
                    .spawn(move || {
                        let _guard = guard;
                        publisher::serve_publisher(stream, peer, &shared);
                    })?
            }
            ConnKind::Scrape => {
                if open >= MAX_SCRAPES {
                    let mut stream = stream;
                    stream.set_write_timeout(Some(POLL_INTERVAL))?;
                    let busy = "text/plain; charset=utf-8";
                    stream.write_all(&http::response(
                        "503 Service Unavailable",
                        busy,
                        "",
                        "too many scrapes\n",
                    ))?;
                    return Err(io::Error::other(format!("{MAX_SCRAPES} scrapes already in progress")));
                }
                thread::Builder::new()
                    .name(format!("metricsmgr-http-{peer}"))
                    .spawn(move || {
                        if let Err(e) = http::serve_connection(stream, || shared.render())
                            && !shared.shutdown.load(Relaxed)
                        {
                            eprintln!("egret-metricsmgr: scrape from {peer}: {e}");
                        }
                    })?
            }
        };
        conns.push(Connection {
            kind,
            stream: handle,
            thread,
        });
        Ok(())
    }
}

/// Joins the threads of connections that ended, so their sockets and handles do not pile up.
fn reap(conns: &mut Vec<Connection>) {
    let mut i = 0;
    while i < conns.len() {
        if conns[i].thread.is_finished() {
            let _ = conns.swap_remove(i).thread.join();
        } else {
            i += 1;
        }
    }
}
