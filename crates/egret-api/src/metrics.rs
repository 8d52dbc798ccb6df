//! User metrics: what a component registers from its [`crate::TopologyContext`] (Heron's
//! `context.registerMetric(name, metric, intervalSecs)`), and what the runtime reads to publish them.
//!
//! A handle ([`Counter`], [`Gauge`], [`MultiCounter`], [`ReducedMetric`], [`Histogram`]) belongs to the task thread that
//! registered it: it is `Send` (it moves with its component) but neither `Clone` nor `Sync`, so exactly one thread
//! writes its cells. That lets an update be a plain relaxed load and store, with no locked instruction: a counter
//! increment costs about a nanosecond (BENCHMARKS.md). The publisher thread only reads.
//!
//! Each metric is sampled once per its export interval ([`MetricRegistry::collect`]); the runtime publishes the
//! latest samples every second. Counters, multi-counters and histograms are cumulative since the task started
//! (Prometheus' convention; a restarted process starts again from zero). A reduced metric's value is the mean
//! (max, min, sum) of the updates of the last interval that had any.
//!
//! Names are the user's: a letter, then letters, digits, `_`, `-` or `.`, at most [`MAX_NAME_LEN`] bytes. System
//! metrics are Heron's `__`-prefixed names, so the two can never meet; on `/metrics` a user metric `name` is the
//! family `egret_user_<name>` (`-` and `.` become `_`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest user metric name, in bytes.
pub const MAX_NAME_LEN: usize = 100;
/// Metrics are published once a second; a shorter interval is refused.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Why a metric could not be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error(
        "metric name {0:?} is invalid: a user metric name starts with a letter and has only letters, digits, '_', \
         '-' and '.', at most {MAX_NAME_LEN} bytes (names starting with '__' are Egret's own)"
    )]
    InvalidName(String),
    #[error("metric {0:?} is registered twice by this task")]
    Duplicate(String),
    #[error("metric {name:?} would be exported as {family}, as metric {other:?} already is")]
    SameFamily {
        name: String,
        other: String,
        family: String,
    },
    #[error("metric {name:?}: export interval {interval:?} is shorter than the minimum, {MIN_INTERVAL:?}")]
    IntervalTooShort { name: String, interval: Duration },
    #[error("histogram {name:?}: bucket bounds must be finite, strictly increasing and at most 256: {bounds:?}")]
    BadBuckets { name: String, bounds: Vec<f64> },
}

/// Makes the handles `!Sync` (and keeps them `Send`): one writer thread per cell.
type SingleWriter = PhantomData<Cell<()>>;

/// Adds to a cell that only its owner thread writes: a relaxed load and store, no locked read-modify-write.
#[inline]
fn add_owned(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A monotonic count (Heron's `CountMetric`, Prometheus' counter).
#[derive(Debug)]
pub struct Counter {
    cell: Arc<AtomicU64>,
    _owner: SingleWriter,
}

impl Counter {
    #[inline]
    pub fn incr(&self) {
        add_owned(&self.cell, 1);
    }
    #[inline]
    pub fn incr_by(&self, n: u64) {
        add_owned(&self.cell, n);
    }
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.cell.load(Relaxed)
    }
}

/// A value that is set (Heron's `AssignableMetric`, Prometheus' gauge).
#[derive(Debug)]
pub struct Gauge {
    bits: Arc<AtomicU64>,
    _owner: SingleWriter,
}

impl Gauge {
    #[inline]
    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Relaxed))
    }
}

/// A counter per key (Heron's `MultiCountMetric`): exported as one series per key, labelled `key`.
#[derive(Debug)]
pub struct MultiCounter {
    keys: Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>,
    /// The cells this handle already looked up, so that counting an already seen key takes no lock.
    cache: std::collections::HashMap<String, Arc<AtomicU64>>,
    _owner: SingleWriter,
}

/// Most keys one multi-counter exports; counts of further keys are dropped (keys are often data: a bound keeps a
/// key per user id from growing the task's memory and every scrape without limit).
pub const MAX_KEYS: usize = 1000;

impl MultiCounter {
    /// Adds `n` to `key`'s count. The first use of a key takes a lock; later ones do not.
    #[inline]
    pub fn incr_by(&mut self, key: &str, n: u64) {
        if let Some(cell) = self.cache.get(key) {
            return add_owned(cell, n);
        }
        if let Some(cell) = self.scope_cell(key) {
            add_owned(&cell, n);
        }
    }
    #[inline]
    pub fn incr(&mut self, key: &str) {
        self.incr_by(key, 1);
    }

    fn scope_cell(&mut self, key: &str) -> Option<Arc<AtomicU64>> {
        let mut keys = self.keys.lock().ok()?;
        let cell = match keys.get(key) {
            Some(c) => Arc::clone(c),
            None if keys.len() >= MAX_KEYS => return None,
            None => Arc::clone(keys.entry(key.to_string()).or_default()),
        };
        self.cache.insert(key.to_string(), Arc::clone(&cell));
        Some(cell)
    }

    /// The count of `key` so far.
    pub fn get(&self, key: &str) -> u64 {
        self.keys
            .lock()
            .ok()
            .and_then(|k| k.get(key).map(|c| c.load(Relaxed)))
            .unwrap_or(0)
    }
}

/// How a [`ReducedMetric`] combines the updates of an interval (Heron's `ReducedMetric` with `MeanReducer`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reducer {
    Mean,
    Max,
    Min,
    Sum,
}

/// Updates reduced once per export interval (Heron's `ReducedMetric`).
#[derive(Debug)]
pub struct ReducedMetric {
    cells: Arc<ReducedCells>,
    reducer: Reducer,
    _owner: SingleWriter,
}

/// Cumulative totals (the sampler takes differences), and the running extreme of the open interval, which the
/// sampler swaps out.
#[derive(Debug, Default)]
struct ReducedCells {
    count: AtomicU64,
    sum_bits: AtomicU64,
    /// An ordered encoding of the extreme (see [`ordered`]); [`NO_EXTREME`] when the interval had no update.
    extreme: AtomicU64,
}

const NO_EXTREME: u64 = u64::MAX;

/// Maps an f64 to a u64 whose unsigned order is the float's total order (so max/min are integer max/min).
fn ordered(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_ordered(o: u64) -> f64 {
    f64::from_bits(if o >> 63 == 1 { o & !(1 << 63) } else { !o })
}

impl ReducedMetric {
    #[inline]
    pub fn update(&self, value: f64) {
        let c = &self.cells;
        add_owned(&c.count, 1);
        c.sum_bits
            .store((f64::from_bits(c.sum_bits.load(Relaxed)) + value).to_bits(), Relaxed);
        let o = ordered(value);
        // The sampler resets `extreme` concurrently: a read-modify-write, which cannot lose that reset.
        let replace = |e: u64| match self.reducer {
            Reducer::Max => (e == NO_EXTREME || o > e).then_some(o),
            Reducer::Min => (e == NO_EXTREME || o < e).then_some(o),
            Reducer::Mean | Reducer::Sum => None,
        };
        if matches!(self.reducer, Reducer::Max | Reducer::Min) {
            let _ = c.extreme.fetch_update(Relaxed, Relaxed, replace);
        }
    }
    /// Records a duration in milliseconds (Heron's latencies are in ms).
    #[inline]
    pub fn update_duration(&self, d: Duration) {
        self.update(d.as_secs_f64() * 1000.0)
    }
}

/// A distribution with fixed buckets, exported as a Prometheus histogram (cumulative).
#[derive(Debug)]
pub struct Histogram {
    cells: Arc<HistogramCells>,
    _owner: SingleWriter,
}

#[derive(Debug)]
struct HistogramCells {
    upper_bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), and one more for those above the last bound.
    buckets: Vec<AtomicU64>,
    sum_bits: AtomicU64,
}

impl Histogram {
    #[inline]
    pub fn observe(&self, value: f64) {
        // A NaN has no bucket and would make the sum NaN for good.
        if value.is_nan() {
            return;
        }
        let c = &self.cells;
        let i = c.upper_bounds.partition_point(|&b| b < value);
        add_owned(&c.buckets[i], 1);
        c.sum_bits
            .store((f64::from_bits(c.sum_bits.load(Relaxed)) + value).to_bits(), Relaxed);
    }
    /// Records a duration in seconds (Prometheus' unit for latencies).
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64())
    }
}

/// Bucket bounds for latencies in seconds: 100 µs to 60 s, about three per decade.
pub fn latency_buckets_seconds() -> Vec<f64> {
    let mut b = Vec::new();
    for decade in [1e-4, 1e-3, 1e-2, 1e-1, 1.0] {
        b.extend([decade, 2.5 * decade, 5.0 * decade]);
    }
    b.extend([10.0, 30.0, 60.0]);
    b
}

/// What a registered metric reads from.
#[derive(Debug, Clone)]
enum Cells {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    Multi(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>),
    Reduced(Arc<ReducedCells>, Reducer),
    Histogram(Arc<HistogramCells>),
}

impl Cells {
    fn same_kind(&self, other: &Cells) -> bool {
        match (self, other) {
            (Cells::Reduced(_, a), Cells::Reduced(_, b)) => a == b,
            (Cells::Histogram(a), Cells::Histogram(b)) => a.upper_bounds == b.upper_bounds,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// What a metric's sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Counter,
    Gauge,
}

/// One exported value of a user metric.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSample {
    /// A counter (`key` set for a multi-counter's keys) or a gauge (a gauge's or a reduced metric's value).
    Value {
        name: String,
        key: Option<String>,
        kind: SampleKind,
        value: f64,
    },
    /// Cumulative buckets: `cumulative_counts[i]` observations were at most `upper_bounds[i]`, `count` in all.
    Histogram {
        name: String,
        upper_bounds: Vec<f64>,
        cumulative_counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Entry {
    name: String,
    family: String,
    interval: Duration,
    cells: Cells,
    /// Registered by the component that runs now (see [`MetricRegistry::reopen`]).
    claimed: bool,
    next_due: Option<Instant>,
    /// The samples of the last interval, re-published until the next one is due.
    latest: Vec<MetricSample>,
    /// Reduced metrics: the cumulative count and sum at the previous sample.
    last_count: u64,
    last_sum: f64,
}

/// A task's user metrics. The task's [`crate::TopologyContext`] registers into it; the runtime's publisher reads it.
#[derive(Debug, Default)]
pub struct MetricRegistry {
    entries: Mutex<Vec<Entry>>,
}

/// The name a user metric is exported under on `/metrics`.
pub fn prometheus_family(name: &str) -> String {
    let mut out = String::with_capacity(11 + name.len());
    out.push_str("egret_user_");
    out.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    out
}

fn check_name(name: &str) -> Result<(), MetricError> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(MetricError::InvalidName(name.to_string()))
    }
}

impl MetricRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh component replaces the old one (a rollback under effectively-once): its metrics may be registered
    /// again, and a re-registered metric keeps counting where the old one was (so counters stay monotonic).
    pub fn reopen(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            for e in entries.iter_mut() {
                e.claimed = false;
            }
        }
    }

    fn register(&self, name: &str, interval: Duration, cells: Cells) -> Result<Cells, MetricError> {
        check_name(name)?;
        if interval < MIN_INTERVAL {
            return Err(MetricError::IntervalTooShort {
                name: name.to_string(),
                interval,
            });
        }
        let family = prometheus_family(name);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.iter_mut().find(|e| e.name == name) {
            if e.claimed || !e.cells.same_kind(&cells) {
                return Err(MetricError::Duplicate(name.to_string()));
            }
            e.claimed = true;
            e.interval = interval;
            return Ok(e.cells.clone());
        }
        if let Some(other) = entries.iter().find(|e| e.family == family) {
            return Err(MetricError::SameFamily {
                name: name.to_string(),
                other: other.name.clone(),
                family,
            });
        }
        entries.push(Entry {
            name: name.to_string(),
            family,
            interval,
            cells: cells.clone(),
            claimed: true,
            next_due: None,
            latest: Vec::new(),
            last_count: 0,
            last_sum: 0.0,
        });
        Ok(cells)
    }

    pub fn counter(&self, name: &str, interval: Duration) -> Result<Counter, MetricError> {
        match self.register(name, interval, Cells::Counter(Arc::default()))? {
            Cells::Counter(cell) => Ok(Counter {
                cell,
                _owner: PhantomData,
            }),
            _ => Err(MetricError::Duplicate(name.to_string())),
        }
    }

    pub fn gauge(&self, name: &str, interval: Duration) -> Result<Gauge, MetricError> {
        match self.register(name, interval, Cells::Gauge(Arc::default()))? {
            Cells::Gauge(bits) => Ok(Gauge {
                bits,
                _owner: PhantomData,
            }),
            _ => Err(MetricError::Duplicate(name.to_string())),
        }
    }

    pub fn multi_counter(&self, name: &str, interval: Duration) -> Result<MultiCounter, MetricError> {
        match self.register(name, interval, Cells::Multi(Arc::default()))? {
            Cells::Multi(keys) => Ok(MultiCounter {
                keys,
                cache: Default::default(),
                _owner: PhantomData,
            }),
            _ => Err(MetricError::Duplicate(name.to_string())),
        }
    }

    pub fn reduced(&self, name: &str, reducer: Reducer, interval: Duration) -> Result<ReducedMetric, MetricError> {
        let fresh = Arc::new(ReducedCells {
            extreme: AtomicU64::new(NO_EXTREME),
            ..Default::default()
        });
        match self.register(name, interval, Cells::Reduced(fresh, reducer))? {
            Cells::Reduced(cells, reducer) => Ok(ReducedMetric {
                cells,
                reducer,
                _owner: PhantomData,
            }),
            _ => Err(MetricError::Duplicate(name.to_string())),
        }
    }

    /// A histogram with the given bucket upper bounds (finite, strictly increasing, at most 256).
    pub fn histogram(&self, name: &str, upper_bounds: Vec<f64>, interval: Duration) -> Result<Histogram, MetricError> {
        if upper_bounds.len() > 256
            || upper_bounds.iter().any(|b| !b.is_finite())
            || upper_bounds.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(MetricError::BadBuckets {
                name: name.to_string(),
                bounds: upper_bounds,
            });
        }
        let fresh = Arc::new(HistogramCells {
            buckets: (0..=upper_bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            upper_bounds,
            sum_bits: AtomicU64::new(0),
        });
        match self.register(name, interval, Cells::Histogram(fresh))? {
            Cells::Histogram(cells) => Ok(Histogram {
                cells,
                _owner: PhantomData,
            }),
            _ => Err(MetricError::Duplicate(name.to_string())),
        }
    }

    /// Whether any metric is registered (the publisher skips the work when none is).
    pub fn is_empty(&self) -> bool {
        self.entries.lock().map(|e| e.is_empty()).unwrap_or(true)
    }

    /// The latest samples of every metric, taking a new sample of each whose interval has come round at `now`.
    pub fn collect(&self, now: Instant, out: &mut Vec<MetricSample>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        for e in entries.iter_mut() {
            if e.next_due.is_none_or(|due| now >= due) {
                e.next_due = Some(now + e.interval);
                sample(e);
            }
            out.extend(e.latest.iter().cloned());
        }
    }
}

/// Takes `e`'s sample now.
fn sample(e: &mut Entry) {
    let name = &e.name;
    let value = |kind, key, value| MetricSample::Value {
        name: name.clone(),
        key,
        kind,
        value,
    };
    match &e.cells {
        Cells::Counter(c) => e.latest = vec![value(SampleKind::Counter, None, c.load(Relaxed) as f64)],
        Cells::Gauge(b) => e.latest = vec![value(SampleKind::Gauge, None, f64::from_bits(b.load(Relaxed)))],
        Cells::Multi(keys) => {
            if let Ok(keys) = keys.lock() {
                e.latest = keys
                    .iter()
                    .map(|(k, c)| value(SampleKind::Counter, Some(k.clone()), c.load(Relaxed) as f64))
                    .collect();
            }
        }
        Cells::Reduced(c, reducer) => {
            let count = c.count.load(Relaxed);
            let sum = f64::from_bits(c.sum_bits.load(Relaxed));
            let extreme = c.extreme.swap(NO_EXTREME, Relaxed);
            let (n, s) = (count.wrapping_sub(e.last_count), sum - e.last_sum);
            e.last_count = count;
            e.last_sum = sum;
            // An interval without updates keeps the previous value (Heron publishes nothing then).
            let reduced = match reducer {
                _ if n == 0 => None,
                Reducer::Mean => Some(s / n as f64),
                Reducer::Sum => Some(s),
                Reducer::Max | Reducer::Min => (extreme != NO_EXTREME).then(|| from_ordered(extreme)),
            };
            if let Some(v) = reduced {
                e.latest = vec![value(SampleKind::Gauge, None, v)];
            }
        }
        Cells::Histogram(h) => {
            let mut total = 0;
            let mut cumulative: Vec<u64> = h
                .buckets
                .iter()
                .map(|b| {
                    total += b.load(Relaxed);
                    total
                })
                .collect();
            // The last cell counts the observations above every bound: only the total has them.
            cumulative.pop();
            e.latest = vec![MetricSample::Histogram {
                name: name.clone(),
                upper_bounds: h.upper_bounds.clone(),
                cumulative_counts: cumulative,
                sum: f64::from_bits(h.sum_bits.load(Relaxed)),
                count: total,
            }];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn values(r: &MetricRegistry, now: Instant) -> Vec<MetricSample> {
        let mut out = Vec::new();
        r.collect(now, &mut out);
        out
    }

    #[test]
    fn user_metric_names_are_checked_and_unique() {
        let r = MetricRegistry::new();
        let _c = r.counter("words", SEC).unwrap();
        assert_eq!(
            r.counter("words", SEC).unwrap_err(),
            MetricError::Duplicate("words".into())
        );
        assert_eq!(
            r.gauge("words", SEC).unwrap_err(),
            MetricError::Duplicate("words".into())
        );
        for bad in ["", "__emit-count", "9lives", "a b", "a/b", "é", &"x".repeat(101)] {
            assert!(
                matches!(r.counter(bad, SEC), Err(MetricError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(r.counter("word-s", SEC).is_ok());
        assert!(matches!(r.counter("word.s", SEC), Err(MetricError::SameFamily { .. })));
        assert!(matches!(
            r.counter("fast", Duration::from_millis(10)),
            Err(MetricError::IntervalTooShort { .. })
        ));
        assert!(matches!(
            r.histogram("h", vec![1.0, 1.0], SEC),
            Err(MetricError::BadBuckets { .. })
        ));
    }

    #[test]
    fn user_metric_values_are_sampled_per_interval() {
        let r = MetricRegistry::new();
        let t0 = Instant::now();
        let c = r.counter("c", 2 * SEC).unwrap();
        let g = r.gauge("g", SEC).unwrap();
        let mut m = r.multi_counter("m", SEC).unwrap();
        let mean = r.reduced("mean", Reducer::Mean, SEC).unwrap();
        let max = r.reduced("max", Reducer::Max, SEC).unwrap();
        let min = r.reduced("min", Reducer::Min, SEC).unwrap();
        let h = r.histogram("h", vec![1.0, 10.0], SEC).unwrap();
        c.incr_by(5);
        g.set(2.5);
        m.incr("a");
        m.incr("a");
        m.incr_by("b", 3);
        for v in [1.0, 2.0, 6.0] {
            mean.update(v);
            max.update(v);
            min.update(-v);
            h.observe(v * 2.0);
        }
        let s = values(&r, t0);
        let find = |s: &[MetricSample], n: &str, k: Option<&str>| {
            s.iter()
                .find_map(|x| match x {
                    MetricSample::Value { name, key, value, .. } if name == n && key.as_deref() == k => Some(*value),
                    _ => None,
                })
                .unwrap_or(f64::NAN)
        };
        assert_eq!(find(&s, "c", None), 5.0);
        assert_eq!(find(&s, "g", None), 2.5);
        assert_eq!(find(&s, "m", Some("a")), 2.0);
        assert_eq!(find(&s, "m", Some("b")), 3.0);
        assert_eq!(find(&s, "mean", None), 3.0);
        assert_eq!(find(&s, "max", None), 6.0);
        assert_eq!(find(&s, "min", None), -6.0);
        assert!(s.contains(&MetricSample::Histogram {
            name: "h".into(),
            upper_bounds: vec![1.0, 10.0],
            cumulative_counts: vec![0, 2],
            sum: 18.0,
            count: 3,
        }));
        // One second on: the counter (2 s interval) keeps its old sample; the reduced metrics had no update and keep
        // their values; the mean of the next interval is its own.
        c.incr();
        mean.update(10.0);
        let s = values(&r, t0 + SEC);
        assert_eq!(find(&s, "c", None), 5.0);
        assert_eq!(find(&s, "mean", None), 10.0);
        assert_eq!(find(&s, "max", None), 6.0);
        let s = values(&r, t0 + 2 * SEC);
        assert_eq!(find(&s, "c", None), 6.0);
    }

    #[test]
    fn a_reopened_registry_hands_back_the_same_cells() {
        let r = MetricRegistry::new();
        let c = r.counter("c", SEC).unwrap();
        c.incr_by(7);
        drop(c);
        r.reopen();
        let c = r.counter("c", SEC).unwrap();
        c.incr();
        assert_eq!(c.get(), 8);
        assert!(r.counter("c", SEC).is_err());
    }

    #[test]
    fn ordered_floats_keep_their_order() {
        let xs = [-1e9, -2.5, -0.0, 0.0, 1e-9, 3.0, 1e300];
        for w in xs.windows(2) {
            assert!(ordered(w[0]) <= ordered(w[1]), "{w:?}");
            assert_eq!(from_ordered(ordered(w[0])), w[0]);
        }
    }
}
