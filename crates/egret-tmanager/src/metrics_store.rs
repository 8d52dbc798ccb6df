//! The tmanager's metrics: a bounded time series per (component, task, metric, stream), fed by the metrics
//! managers' reports, and the latest exception summaries. I/O free; the tracker queries it through the tmanager.

use std::collections::{BTreeMap, VecDeque};

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
}

#[derive(Debug, Default)]
pub struct MetricsStore {
    series: BTreeMap<SeriesId, VecDeque<(i64, f64)>>,
    exceptions: BTreeMap<(String, i32, String), ExceptionInfo>,
}

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
                };
                if !self.series.contains_key(&id) && self.series.len() >= MAX_SERIES {
                    continue;
                }
                let points = self.series.entry(id).or_default();
                // Reports from several metrics managers interleave; keep each series in time order.
                if points.back().is_some_and(|(t, _)| *t >= report.time_ms) {
                    continue;
                }
                points.push_back((report.time_ms, m.value));
                if points.len() > MAX_POINTS {
                    points.pop_front();
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

    /// The series matching the query (empty component, tasks or names match everything), points at or after
    /// `since_ms`, and the exceptions of the matching component and tasks.
    pub fn query(&self, q: &MetricsQuery) -> MetricsQueryResponse {
        let matches = |component: &str, task: i32| {
            (q.component.is_empty() || q.component == component) && (q.tasks.is_empty() || q.tasks.contains(&task))
        };
        let series = self
            .series
            .iter()
            .filter(|(id, _)| matches(&id.component, id.task_id) && (q.names.is_empty() || q.names.contains(&id.name)))
            .map(|(id, points)| MetricSeries {
                component: id.component.clone(),
                task_id: id.task_id,
                name: id.name.clone(),
                stream: id.stream.clone(),
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
    use egret_proto::egret::{MetricValue, PublishMetrics};

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
