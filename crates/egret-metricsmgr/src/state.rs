//! What the manager knows: the latest value of every series each publisher sent, and the manager's own counters.

use std::collections::BTreeMap;

use egret_proto::egret::{ExceptionInfo, HistogramValue, PublishMetrics};

/// Most series the manager keeps over all publishers. Publishers are local processes, but their metric names and
/// identities are still bytes from a peer: without a bound, a faulty publisher inventing names would grow the
/// manager's memory (and every scrape) without limit. Updates to series already known are always applied.
pub const MAX_SERIES: usize = 100_000;

/// Who published a set of values. Keyed by the process too, so two processes reporting for the same task (a task
/// and the daemon hosting it, say) do not overwrite each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublisherKey {
    pub component: String,
    pub task_id: i32,
    pub process: String,
}

/// One series of a publisher: a metric name as published (Heron's, e.g. `__emit-count`) and a stream (empty when
/// the metric is not per stream).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub name: String,
    pub stream: String,
    /// A multi-counter's key (user metrics), empty otherwise.
    pub key: String,
    /// `egret_proto::egret::MetricKind` as published (0: inferred from the name).
    pub kind: i32,
}

/// Most buckets a histogram may have. Latency histograms have a few dozen; the bound keeps a faulty publisher from
/// making one histogram render into millions of lines.
pub const MAX_BUCKETS: usize = 256;

/// A histogram's current totals as Prometheus exposes them: `cumulative_counts[i]` observations were at most
/// `upper_bounds[i]`, and `count` in all (the `le="+Inf"` bucket). Built from a published [`HistogramValue`] only
/// once checked, so rendering can trust it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    upper_bounds: Vec<f64>,
    cumulative_counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Why a published histogram was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistogramError {
    #[error("{bounds} upper bounds but {counts} cumulative counts")]
    LengthMismatch { bounds: usize, counts: usize },
    #[error("{0} buckets, more than {MAX_BUCKETS}")]
    TooManyBuckets(usize),
    #[error("upper bounds must be finite and strictly increasing: {0:?}")]
    BadBounds(Vec<f64>),
    #[error("cumulative counts must not decrease nor exceed the count {count}: {counts:?}")]
    BadCounts { counts: Vec<u64>, count: u64 },
}

impl Histogram {
    /// Checks a published histogram: as many counts as bounds, bounds finite and increasing, counts cumulative.
    pub fn new(
        upper_bounds: Vec<f64>,
        cumulative_counts: Vec<u64>,
        sum: f64,
        count: u64,
    ) -> Result<Self, HistogramError> {
        if upper_bounds.len() != cumulative_counts.len() {
            return Err(HistogramError::LengthMismatch {
                bounds: upper_bounds.len(),
                counts: cumulative_counts.len(),
            });
        }
        if upper_bounds.len() > MAX_BUCKETS {
            return Err(HistogramError::TooManyBuckets(upper_bounds.len()));
        }
        if upper_bounds.iter().any(|b| !b.is_finite()) || upper_bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(HistogramError::BadBounds(upper_bounds));
        }
        if cumulative_counts.windows(2).any(|w| w[0] > w[1]) || cumulative_counts.last().is_some_and(|&c| c > count) {
            return Err(HistogramError::BadCounts {
                counts: cumulative_counts,
                count,
            });
        }
        Ok(Histogram {
            upper_bounds,
            cumulative_counts,
            sum,
            count,
        })
    }

    /// The finite buckets: (upper bound, observations at most that bound).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.upper_bounds
            .iter()
            .copied()
            .zip(self.cumulative_counts.iter().copied())
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// All observations: the `le="+Inf"` bucket.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl TryFrom<HistogramValue> for Histogram {
    type Error = HistogramError;

    fn try_from(h: HistogramValue) -> Result<Self, HistogramError> {
        Histogram::new(h.upper_bounds, h.cumulative_counts, h.sum, h.count)
    }
}

/// What became of a publisher's histograms: those dropped for want of room and those refused as malformed.
#[derive(Debug, Default, PartialEq)]
pub struct HistogramsApplied {
    pub dropped: u64,
    pub refused: Vec<(String, HistogramError)>,
}

/// A point-in-time copy of everything the manager serves; [`crate::render`] turns it into the exposition text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Latest value of each series, per publisher. Values stay after a publisher disconnects, so a scrape between
    /// a task's death and its restart still sees its last totals.
    pub series: BTreeMap<PublisherKey, BTreeMap<SeriesKey, f64>>,
    /// Latest histogram of each series, per publisher; each counts as one series towards [`MAX_SERIES`].
    pub histograms: BTreeMap<PublisherKey, BTreeMap<SeriesKey, Histogram>>,
    /// Publisher connections open now.
    pub publishers: u64,
    /// Frames that were not `PublishMetrics` or did not decode; each one ended its connection.
    pub frames_rejected: u64,
    /// Values of new series refused because [`MAX_SERIES`] series were already kept.
    pub series_dropped: u64,
    /// The latest exception summaries of each publisher (forwarded to the tmanager, not rendered for Prometheus).
    pub exceptions: BTreeMap<PublisherKey, Vec<ExceptionInfo>>,
}

/// Exception summaries kept per publisher.
pub const MAX_EXCEPTIONS_PER_PUBLISHER: usize = 64;

impl Snapshot {
    /// Number of series (values and histograms) kept over all publishers.
    pub fn series_count(&self) -> usize {
        self.series.values().map(BTreeMap::len).sum::<usize>()
            + self.histograms.values().map(BTreeMap::len).sum::<usize>()
    }

    /// Records a publisher's current histograms, as [`Snapshot::apply`] does its values: each (name, stream) takes
    /// the latest, within [`MAX_SERIES`]. A malformed histogram is refused and its series keeps its previous totals.
    pub fn apply_histograms(&mut self, publisher: PublisherKey, histograms: Vec<HistogramValue>) -> HistogramsApplied {
        let mut applied = HistogramsApplied::default();
        let mut total = self.series_count();
        for h in histograms {
            if h.name.is_empty() {
                continue;
            }
            let series = SeriesKey {
                name: h.name.clone(),
                stream: h.stream.clone(),
                ..SeriesKey::default()
            };
            let histogram = match Histogram::try_from(h) {
                Ok(histogram) => histogram,
                Err(e) => {
                    applied.refused.push((series.name, e));
                    continue;
                }
            };
            let known = self.histograms.get(&publisher).is_some_and(|m| m.contains_key(&series));
            if !known && total >= MAX_SERIES {
                applied.dropped += 1;
                continue;
            }
            if !known {
                total += 1;
            }
            self.histograms
                .entry(publisher.clone())
                .or_default()
                .insert(series, histogram);
        }
        self.series_dropped += applied.dropped;
        applied
    }

    /// Records a publisher's current values: each (name, stream) takes the latest value. Series the message does
    /// not mention keep their previous value. A value whose name is empty names no metric and is ignored.
    ///
    /// Returns how many values were dropped because they would have created a series beyond [`MAX_SERIES`].
    pub fn apply(&mut self, msg: PublishMetrics) -> u64 {
        let PublishMetrics {
            component,
            task_id,
            process,
            metrics,
            exceptions,
            histograms,
        } = msg;
        let key = PublisherKey {
            component,
            task_id,
            process,
        };
        let mut dropped = 0;
        // Counted in `series_dropped` by `apply_histograms` already.
        let mut histograms_dropped = 0;
        if !histograms.is_empty() {
            let applied = self.apply_histograms(key.clone(), histograms);
            histograms_dropped = applied.dropped;
            for (name, e) in applied.refused {
                tracing::warn!(publisher = %key.process, histogram = %name, error = %e, "refused a histogram");
            }
        }
        let mut total = self.series_count();
        if !exceptions.is_empty() {
            // A publisher sends all its exception summaries each time: keep the latest list, bounded.
            let kept: Vec<ExceptionInfo> = exceptions.into_iter().take(MAX_EXCEPTIONS_PER_PUBLISHER).collect();
            self.exceptions.insert(key.clone(), kept);
        }
        let known = self.series.contains_key(&key);
        if !known && total >= MAX_SERIES {
            // Do not even create an empty entry for a publisher that can keep nothing.
            let new = metrics.iter().filter(|m| !m.name.is_empty()).count() as u64;
            self.series_dropped += new;
            return histograms_dropped + new;
        }
        let entry = self.series.entry(key).or_default();
        for m in metrics {
            if m.name.is_empty() {
                continue;
            }
            let series = SeriesKey {
                name: m.name,
                stream: m.stream,
                key: m.key,
                kind: m.kind,
            };
            if let Some(v) = entry.get_mut(&series) {
                *v = m.value;
            } else if total < MAX_SERIES {
                entry.insert(series, m.value);
                total += 1;
            } else {
                dropped += 1;
            }
        }
        self.series_dropped += dropped;
        histograms_dropped + dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_proto::egret::MetricValue;

    fn value(name: &str, stream: &str, value: f64) -> MetricValue {
        MetricValue {
            name: name.into(),
            stream: stream.into(),
            value,
            ..Default::default()
        }
    }

    fn publish(component: &str, task_id: i32, metrics: Vec<MetricValue>) -> PublishMetrics {
        PublishMetrics {
            component: component.into(),
            task_id,
            process: format!("instance-{task_id}"),
            metrics,
            ..Default::default()
        }
    }

    #[test]
    fn latest_value_wins_and_unmentioned_series_stay() {
        let mut s = Snapshot::default();
        s.apply(publish(
            "word",
            3,
            vec![value("__emit-count", "default", 1.0), value("__ack-count", "", 1.0)],
        ));
        s.apply(publish(
            "word",
            3,
            vec![value("__emit-count", "default", 5.0), value("", "x", 9.0)],
        ));
        let series = &s.series[&PublisherKey {
            component: "word".into(),
            task_id: 3,
            process: "instance-3".into(),
        }];
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[&SeriesKey {
                name: "__emit-count".into(),
                stream: "default".into(),
                ..Default::default()
            }],
            5.0
        );
        assert_eq!(
            series[&SeriesKey {
                name: "__ack-count".into(),
                stream: String::new(),
                ..Default::default()
            }],
            1.0
        );
    }

    #[test]
    fn new_series_beyond_the_bound_are_dropped_but_known_ones_update() {
        let mut s = Snapshot::default();
        let many: Vec<_> = (0..MAX_SERIES).map(|i| value(&format!("m{i}"), "", 1.0)).collect();
        assert_eq!(s.apply(publish("a", 1, many)), 0);
        assert_eq!(
            s.apply(publish("a", 1, vec![value("m0", "", 2.0), value("new", "", 1.0)])),
            1
        );
        assert_eq!(s.apply(publish("b", 2, vec![value("x", "", 1.0)])), 1);
        assert_eq!(s.series_dropped, 2);
        assert_eq!(s.series_count(), MAX_SERIES);
        assert_eq!(s.series.len(), 1);
    }
}
