//! The tmanager's metrics: a bounded time series per (component, task, metric, stream), fed by the metrics
//! managers' reports, and the latest exception summaries. I/O free; the tracker queries it through the tmanager.

use std::collections::{BTreeMap, VecDeque};

use egret_metricsmgr::quantile::histogram_quantile;
use egret_proto::egret::{ExceptionInfo, MetricPoint, MetricSeries, MetricsQuery, MetricsQueryResponse, MetricsReport};

/// Points kept per series: an hour at the metrics managers' 5 s export interval.
pub const MAX_POINTS: usize = 720;
/// Series kept in all; reports about further series are ignored (names come from peers).
pub const MAX_SERIES: usize = 50_000;
/// Exception summaries kept in all (Heron keeps 256).
pub const MAX_EXCEPTIONS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesId {
    component: String,
    task_id: i32,
    name: String,
    stream: String,
    /// A user multi-counter's key.
    key: String,
    /// `MetricKind` as published.
    kind: i32,
}

#[derive(Debug, Default)]
pub struct MetricsStore {
    series: BTreeMap<SeriesId, VecDeque<(i64, f64)>>,
    exceptions: BTreeMap<(String, i32, String), ExceptionInfo>,
    /// The last cumulative histogram of each series (bucket counts, total), to take the next one's difference.
    histograms: BTreeMap<SeriesId, (Vec<u64>, u64)>,
}

/// Quantiles derived from each histogram between two reports, kept as series named `<histogram>-p50` and `-p99`
/// (a histogram named `...-seconds` gives `...-p50` / `...-p99` in milliseconds, as the other latencies).
const QUANTILES: [(f64, &str); 2] = [(0.50, "-p50"), (0.99, "-p99")];

impl MetricsStore {
    /// Appends one report's values at its time.
    pub fn record(&mut self, report: &MetricsReport) {
        for p in &report.publishers {
            for m in &p.metrics {
                let id = SeriesId {
                    component: p.component.clone(),
                    task_id: p.task_id,
                    name: m.name.clone(),
                    stream: m.stream.clone(),
                    key: m.key.clone(),
                    kind: m.kind,
                };
                self.push(id, report.time_ms, m.value);
            }
            for h in &p.histograms {
                let id = SeriesId {
                    component: p.component.clone(),
                    task_id: p.task_id,
                    name: h.name.clone(),
                    stream: h.stream.clone(),
                    key: String::new(),
                    kind: 0,
                };
                let previous = self
                    .histograms
                    .insert(id.clone(), (h.cumulative_counts.clone(), h.count));
                // A histogram that went down is a restarted publisher's: its counts start again from zero.
                let (before, before_total) = match previous {
                    Some((counts, total))
                        if counts.len() == h.cumulative_counts.len()
                            && total <= h.count
                            && counts.iter().zip(&h.cumulative_counts).all(|(a, b)| a <= b) =>
                    {
                        (counts, total)
                    }
                    _ => (vec![0; h.cumulative_counts.len()], 0),
                };
                let mut window: Vec<(f64, f64)> = h
                    .upper_bounds
                    .iter()
                    .zip(h.cumulative_counts.iter().zip(&before))
                    .map(|(&le, (&now, &then))| (le, (now - then) as f64))
                    .collect();
                window.push((f64::INFINITY, (h.count - before_total) as f64));
                let (base, scale) = match h.name.strip_suffix("-seconds") {
                    Some(base) => (base, 1000.0),
                    None => (h.name.as_str(), 1.0),
                };
                for (q, suffix) in QUANTILES {
                    if let Some(v) = histogram_quantile(&window, q) {
                        let derived = SeriesId {
                            name: format!("{base}{suffix}"),
                            ..id.clone()
                        };
                        self.push(derived, report.time_ms, v * scale);
                    }
                }
            }
            for e in &p.exceptions {
                let key = (e.component.clone(), e.task_id, e.message.clone());
                if self.exceptions.contains_key(&key) || self.exceptions.len() < MAX_EXCEPTIONS {
                    self.exceptions.insert(key, e.clone());
                }
            }
        }
    }

    fn push(&mut self, id: SeriesId, time_ms: i64, value: f64) {
        if !self.series.contains_key(&id) && self.series.len() >= MAX_SERIES {
            return;
        }
        let points = self.series.entry(id).or_default();
        // Reports from several metrics managers interleave; keep each series in time order.
        if points.back().is_some_and(|(t, _)| *t >= time_ms) {
            return;
        }
        points.push_back((time_ms, value));
        if points.len() > MAX_POINTS {
            points.pop_front();
        }
    }

    /// The series matching the query (empty component, tasks or names match everything), points at or after
    /// `since_ms`, and the exceptions of the matching component and tasks.
    pub fn query(&self, q: &MetricsQuery) -> MetricsQueryResponse {
        let matches = |component: &str, task: i32| {
            (q.component.is_empty() || q.component == component) && (q.tasks.is_empty() || q.tasks.contains(&task))
        };
        let series = self
            .series
            .iter()
            .filter(|(id, _)| {
                let wanted = q.names.is_empty()
                    || q.names.contains(&id.name)
                    || (q.user_metrics && egret_metricsmgr::is_user_metric(&id.name));
                matches(&id.component, id.task_id) && wanted
            })
            .map(|(id, points)| MetricSeries {
                component: id.component.clone(),
                task_id: id.task_id,
                name: id.name.clone(),
                stream: id.stream.clone(),
                key: id.key.clone(),
                kind: id.kind,
                points: points
                    .iter()
                    .filter(|(t, _)| *t >= q.since_ms)
                    .map(|&(time_ms, value)| MetricPoint { time_ms, value })
                    .collect(),
            })
            .collect();
        let exceptions = self
            .exceptions
            .values()
            .filter(|e| matches(&e.component, e.task_id))
            .cloned()
            .collect();
        MetricsQueryResponse { series, exceptions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_proto::egret::{HistogramValue, MetricValue, PublishMetrics};

    fn latency_report(time_ms: i64, counts: [u64; 2], count: u64) -> MetricsReport {
        MetricsReport {
            container: 1,
            time_ms,
            publishers: vec![PublishMetrics {
                component: "word".into(),
                task_id: 3,
                process: "instance-3".into(),
                histograms: vec![HistogramValue {
                    name: "__complete-latency-seconds".into(),
                    stream: String::new(),
                    upper_bounds: vec![0.001, 0.002],
                    cumulative_counts: counts.to_vec(),
                    sum: 0.0,
                    count,
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn quantiles_between_two_reports_become_series_in_milliseconds() {
        let mut store = MetricsStore::default();
        store.record(&latency_report(1_000, [10, 10], 10));
        // In the next 5 s: 90 trees at or below 1 ms, 10 between 1 and 2 ms.
        store.record(&latency_report(6_000, [100, 110], 110));
        // A restarted task starts again from zero: its whole histogram is the window.
        store.record(&latency_report(11_000, [0, 4], 4));
        let r = store.query(&MetricsQuery {
            names: vec!["__complete-latency-p99".into()],
            ..Default::default()
        });
        let points: Vec<(i64, f64)> = r.series[0].points.iter().map(|p| (p.time_ms, p.value)).collect();
        assert_eq!(points.len(), 3, "{points:?}");
        assert_eq!(points[0].0, 1_000);
        assert!(
            (points[1].1 - 1.9).abs() < 1e-9,
            "rank 99 of 100: 9 of the 10 above 1 ms: {points:?}"
        );
        assert!(points[2].1 > 1.0 && points[2].1 <= 2.0, "{points:?}");
        let p50 = store.query(&MetricsQuery {
            names: vec!["__complete-latency-p50".into()],
            ..Default::default()
        });
        assert_eq!(p50.series[0].task_id, 3);
    }

    fn report(time_ms: i64, task: i32, emitted: f64, exceptions: Vec<ExceptionInfo>) -> MetricsReport {
        MetricsReport {
            container: 1,
            time_ms,
            publishers: vec![PublishMetrics {
                component: "word".into(),
                task_id: task,
                process: format!("instance-{task}"),
                metrics: vec![MetricValue {
                    name: "__emit-count".into(),
                    stream: "default".into(),
                    value: emitted,
                    ..Default::default()
                }],
                exceptions,
                histograms: Vec::new(),
            }],
        }
    }

    #[test]
    fn series_grow_in_time_order_and_stay_bounded() {
        let mut s = MetricsStore::default();
        for i in 0..(MAX_POINTS as i64 + 10) {
            s.record(&report(i * 5000, 3, i as f64, vec![]));
        }
        s.record(&report(0, 3, 99.0, vec![])); // late report: ignored
        let all = s.query(&MetricsQuery::default());
        assert_eq!(all.series.len(), 1);
        let points = &all.series[0].points;
        assert_eq!(points.len(), MAX_POINTS);
        assert_eq!(points.last().unwrap().value, (MAX_POINTS + 9) as f64);
        assert!(points.windows(2).all(|w| w[0].time_ms < w[1].time_ms));
        let recent = s.query(&MetricsQuery {
            since_ms: (MAX_POINTS as i64 + 8) * 5000,
            ..Default::default()
        });
        assert_eq!(recent.series[0].points.len(), 2);
    }

    #[test]
    fn queries_filter_by_component_task_and_name() {
        let mut s = MetricsStore::default();
        s.record(&report(1, 3, 1.0, vec![]));
        s.record(&report(1, 4, 2.0, vec![]));
        let q = |component: &str, tasks: Vec<i32>, names: Vec<&str>| MetricsQuery {
            component: component.into(),
            tasks,
            names: names.into_iter().map(String::from).collect(),
            ..Default::default()
        };
        assert_eq!(s.query(&q("word", vec![], vec![])).series.len(), 2);
        assert_eq!(s.query(&q("word", vec![4], vec![])).series.len(), 1);
        assert_eq!(s.query(&q("count", vec![], vec![])).series.len(), 0);
        assert_eq!(s.query(&q("", vec![], vec!["__ack-count"])).series.len(), 0);
    }

    #[test]
    fn exceptions_keep_the_latest_summary() {
        let e = |count| ExceptionInfo {
            component: "word".into(),
            task_id: 3,
            message: "boom".into(),
            count,
            first_ms: 1,
            last_ms: count as i64,
        };
        let mut s = MetricsStore::default();
        s.record(&report(1, 3, 1.0, vec![e(1)]));
        s.record(&report(2, 3, 1.0, vec![e(5)]));
        let r = s.query(&MetricsQuery::default());
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.exceptions[0].count, 5);
    }
}
