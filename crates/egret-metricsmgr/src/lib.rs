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
//! Publishers are served by blocking std threads: an accept loop polled without blocking (so `serve` sees its
//! shutdown flag within [`POLL_INTERVAL`]) and a thread per publisher. Scrapes are served by axum, as the tracker
//! is, on a single-threaded tokio runtime of its own thread (`http`). Every thread is joined when `serve` returns.
//!
//! The manager (`MetricsManager`, its publisher threads and its HTTP server) is the `server` feature, on by default.
//! Without it the crate is what a publisher needs (`MetricsClient`) and the exposition format (`render`,
//! `exposition`, `scrape`): instances link that, and no tokio or axum.
//!
//! [`exposition::parse`] reads the text back: it is the one parser of this format in Egret (the tracker, the
//! benchmark and the tests use it); [`scrape`] fetches it.

mod client;
pub mod exposition;
#[cfg(feature = "server")]
mod forward;
#[cfg(feature = "server")]
mod http;
#[cfg(feature = "server")]
mod publisher;
pub mod quantile;
mod render;
mod scrape;
#[cfg(feature = "server")]
mod server;
mod state;

pub use client::MetricsClient;
#[cfg(feature = "server")]
pub use forward::{EXPORT_INTERVAL, SnapshotHandle, forward_reports, report};
#[cfg(feature = "server")]
pub use http::CONTENT_TYPE;
#[cfg(feature = "server")]
pub use publisher::MAX_FRAME;
pub use render::{escape_label_value, is_user_metric, metric_name, render};
pub use scrape::{SCRAPE_TIMEOUT, ScrapeError, scrape, scrape_samples};
#[cfg(feature = "server")]
pub use server::{MAX_PUBLISHERS, MetricsManager, POLL_INTERVAL};
pub use state::{
    Histogram, HistogramError, HistogramsApplied, MAX_BUCKETS, MAX_SERIES, PublisherKey, SeriesKey, Snapshot,
};
