//! Forwarding to the tmanager: every export interval the manager sends the latest values of all its publishers
//! (and their exception summaries) as one `MetricsReport`, so the tmanager can keep time series for the tracker.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use egret_proto::egret::{HistogramValue, MetricValue, MetricsReport, PublishMetrics, control};

use crate::Snapshot;
use crate::server::Shared;

/// How often reports go to the tmanager (Heron's `heron.metrics.export.interval.sec` is 60; the UI wants fresher).
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A handle on a running manager's values, usable from another thread while [`crate::MetricsManager::serve`] runs.
#[derive(Clone)]
pub struct SnapshotHandle(pub(crate) Arc<Shared>);

impl SnapshotHandle {
    pub fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }
}

/// Builds the report of one container from a snapshot.
pub fn report(container: i32, snapshot: &Snapshot, time_ms: i64) -> MetricsReport {
    let publishers = snapshot
        .series
        .iter()
        .map(|(key, series)| PublishMetrics {
            component: key.component.clone(),
            task_id: key.task_id,
            process: key.process.clone(),
            metrics: series
                .iter()
                .map(|(s, v)| MetricValue {
                    name: s.name.clone(),
                    stream: s.stream.clone(),
                    value: *v,
                    kind: s.kind,
                    key: s.key.clone(),
                })
                .collect(),
            exceptions: snapshot.exceptions.get(key).cloned().unwrap_or_default(),
            // The tmanager derives quantiles between two reports from these cumulative histograms.
            histograms: snapshot
                .histograms
                .get(key)
                .map(|hs| {
                    hs.iter()
                        .map(|(s, h)| HistogramValue {
                            name: s.name.clone(),
                            stream: s.stream.clone(),
                            upper_bounds: h.buckets().map(|(b, _)| b).collect(),
                            cumulative_counts: h.buckets().map(|(_, c)| c).collect(),
                            sum: h.sum(),
                            count: h.count(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    MetricsReport {
        container,
        time_ms,
        publishers,
    }
}

/// Sends a report every `interval` to wherever `locate` says the tmanager is, reconnecting as needed, until
/// `shutdown` is set. A tmanager that is down misses reports; the next one carries the totals again.
pub fn forward_reports(
    secret: &egret_transport::auth::TopologySecret,
    handle: SnapshotHandle,
    container: i32,
    locate: impl Fn() -> Option<(String, u16)>,
    interval: Duration,
    shutdown: Arc<AtomicBool>,
) {
    let mut conn: Option<TcpStream> = None;
    while !shutdown.load(Relaxed) {
        std::thread::sleep(interval);
        if conn.is_none() {
            conn = locate().and_then(|(host, port)| secret.connect_to(&host, port).ok());
        }
        let Some(stream) = conn.as_mut() else { continue };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let frame =
            egret_transport::control_frame(control::Msg::MetricsReport(report(container, &handle.snapshot(), now)));
        if stream.write_all(&frame).is_err() {
            conn = None;
        }
    }
}
