//! The manager itself: the publisher accept loop and its threads, and the HTTP server (`http`) they share the values
//! with. Behind the `server` feature, so that what publishers link (`MetricsClient`) pulls in no tokio or axum.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::{self};
use std::time::Duration;

use egret_proto::egret::PublishMetrics;
use egret_transport::ThreadPerConnection;
use tokio::sync::oneshot;

use crate::{MAX_SERIES, Snapshot, SnapshotHandle, http, publisher, render};

/// How long the publisher accept loop sleeps when nothing is pending: bounds both the delay before a new publisher
/// is served and the delay before `serve` notices its shutdown flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most publisher connections served at once. A container runs a handful of instances and daemons; the bound only
/// stops a misbehaving peer from exhausting threads.
pub const MAX_PUBLISHERS: usize = 1024;

/// State shared by the accept loop, the publisher threads and the HTTP server.
pub(crate) struct Shared {
    topology: String,
    snapshot: Mutex<Snapshot>,
    publishers: AtomicU64,
    pub(crate) frames_rejected: AtomicU64,
    /// Set once `serve` is stopping, so connection errors caused by its own socket shutdowns are not logged.
    pub(crate) shutdown: AtomicBool,
}

impl Shared {
    /// The lock only guards plain data; a thread that panicked while holding it left a usable snapshot behind.
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn apply(&self, msg: PublishMetrics) {
        let dropped = self.lock().apply(msg);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                max_series = MAX_SERIES,
                "values dropped: already keeping the most series"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = self.lock().clone();
        s.publishers = self.publishers.load(Relaxed);
        s.frames_rejected = self.frames_rejected.load(Relaxed);
        s
    }

    pub(crate) fn render(&self) -> String {
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

/// A metrics manager on its two listeners; [`MetricsManager::serve`] runs it.
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
        Ok(MetricsManager::new(topology, publisher, http))
    }

    /// A manager serving publishers on `publisher` and Prometheus on `http`, listeners its caller bound.
    pub fn new(topology: &str, publisher: TcpListener, http: TcpListener) -> MetricsManager {
        MetricsManager {
            shared: Arc::new(Shared {
                topology: topology.to_string(),
                snapshot: Mutex::new(Snapshot::default()),
                publishers: AtomicU64::new(0),
                frames_rejected: AtomicU64::new(0),
                shutdown: AtomicBool::new(false),
            }),
            publisher,
            http,
        }
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
    /// returns. Errors if the listeners cannot be set up or the HTTP server stops by itself (then the manager stops
    /// too, for its executor to restart it); a failing connection never ends `serve`.
    pub fn serve(self, secret: &egret_transport::auth::TopologySecret, shutdown: Arc<AtomicBool>) -> io::Result<()> {
        let MetricsManager {
            shared,
            publisher,
            http,
        } = self;
        let (stop_http, http_stopped) = oneshot::channel();
        let http_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("metricsmgr-http".into())
                .spawn(move || http::serve(http, shared, http_stopped))?
        };
        let server = ThreadPerConnection {
            role: "metricsmgr-pub",
            max_connections: MAX_PUBLISHERS,
            poll: POLL_INTERVAL,
            keep_serving: &|| !shutdown.load(Acquire) && !http_thread.is_finished(),
            secret,
        };
        let serving = Arc::clone(&shared);
        server.run(
            &publisher,
            move |stream, peer| {
                serving.publishers.fetch_add(1, Relaxed);
                let _guard = PublisherGuard(Arc::clone(&serving));
                publisher::serve_publisher(stream, peer, &serving);
            },
            || {
                shared.shutdown.store(true, Relaxed);
                let _ = stop_http.send(());
            },
        )?;
        let http_result = http_thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the HTTP server panicked")));
        if !shutdown.load(Acquire) {
            return Err(http_result
                .err()
                .unwrap_or_else(|| io::Error::other("the HTTP server stopped")));
        }
        http_result
    }
}
