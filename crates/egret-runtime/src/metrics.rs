//! Per-task metrics with Heron's names. Tasks count locally and publish into these atomics once per batch or emit
//! cycle, never per tuple.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

/// Heron's metric names.
pub mod names {
    pub const EMIT_COUNT: &str = "__emit-count";
    pub const EXECUTE_COUNT: &str = "__execute-count";
    pub const ACK_COUNT: &str = "__ack-count";
    pub const FAIL_COUNT: &str = "__fail-count";
    pub const EXECUTE_LATENCY: &str = "__execute-latency";
    pub const COMPLETE_LATENCY: &str = "__complete-latency";
    /// Egret: the complete latency as a cumulative histogram in seconds (Prometheus `_bucket`/`_sum`/`_count`), so
    /// that quantiles over any window are exact to a bucket ([`latency_bucket_bounds_micros`]).
    pub const COMPLETE_LATENCY_SECONDS: &str = "__complete-latency-seconds";
    pub const EXCEPTION_COUNT: &str = "__exception-count";
    /// Egret, effectively-once: checkpoints this task saved (snapshots taken), the newest one's id, its state's
    /// size, how long its markers took to align, what alignment holds now, checkpoints abandoned at the bound, and
    /// batches dropped because a rollback undid them.
    pub const CHECKPOINTS_SAVED: &str = "__checkpoints-saved";
    pub const CHECKPOINT_LAST_ID: &str = "__checkpoint-last-id";
    pub const CHECKPOINT_STATE_BYTES: &str = "__checkpoint-state-bytes";
    pub const CHECKPOINT_ALIGNMENT_MS: &str = "__checkpoint-alignment-ms";
    pub const CHECKPOINT_BUFFERED_BYTES: &str = "__checkpoint-buffered-bytes";
    pub const CHECKPOINTS_ABANDONED: &str = "__checkpoints-abandoned";
    pub const DROPPED_STALE: &str = "__dropped-stale-count";
}

/// The live counters of one task.
#[derive(Debug)]
pub struct TaskMetrics {
    /// Emit calls (not copies).
    pub emitted: AtomicU64,
    /// Bolts: tuples executed (tick tuples excluded).
    pub executed: AtomicU64,
    /// Spouts: trees completed (`ack` called). Bolts: tuples acked.
    pub acked: AtomicU64,
    /// Spouts: trees failed or timed out (`fail` called). Bolts: tuples failed.
    pub failed: AtomicU64,
    /// Errors reported by user code, bad emits, corrupt records.
    pub errors: AtomicU64,
    /// Total time spent in `execute`, for the mean execute latency.
    pub execute_nanos: AtomicU64,
    /// Spouts under at-least-once: roots in flight.
    pub pending_roots: AtomicU64,
    /// Tuples emitted but not yet handed to a queue; used to tell when a topology is quiet.
    pub unflushed: AtomicU64,
    /// Effectively-once (see [`names::CHECKPOINTS_SAVED`] and the names after it).
    pub checkpoints_saved: AtomicU64,
    pub checkpoint_last_id: AtomicU64,
    pub checkpoint_state_bytes: AtomicU64,
    pub checkpoint_alignment_micros: AtomicU64,
    pub checkpoint_buffered_bytes: AtomicU64,
    pub checkpoints_abandoned: AtomicU64,
    /// Batches of an older rollback epoch, dropped.
    pub dropped_stale: AtomicU64,
    /// The metrics the task's component registered (`TopologyContext::register_*`).
    pub user: Arc<egret_api::MetricRegistry>,
    /// Per stream, indexed by `StreamIndex`: tuples emitted on it (by this task) and executed from it.
    streams: Mutex<Vec<StreamCount>>,
    /// Spouts: emit-to-complete latency, microseconds.
    complete_latency: Mutex<Histogram<u64>>,
    last_error: Mutex<Option<String>>,
    /// Errors by message: (count, first, last), at most [`MAX_EXCEPTIONS`] distinct messages.
    exceptions: Mutex<BTreeMap<String, ExceptionSummary>>,
}

/// Distinct error messages a task keeps; further new messages are counted in the total only.
pub const MAX_EXCEPTIONS: usize = 64;

/// How often one error message was reported, and when first and last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionSummary {
    pub count: u64,
    pub first: SystemTime,
    pub last: SystemTime,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            emitted: AtomicU64::new(0),
            executed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            execute_nanos: AtomicU64::new(0),
            pending_roots: AtomicU64::new(0),
            unflushed: AtomicU64::new(0),
            checkpoints_saved: AtomicU64::new(0),
            checkpoint_last_id: AtomicU64::new(0),
            checkpoint_state_bytes: AtomicU64::new(0),
            checkpoint_alignment_micros: AtomicU64::new(0),
            checkpoint_buffered_bytes: AtomicU64::new(0),
            checkpoints_abandoned: AtomicU64::new(0),
            dropped_stale: AtomicU64::new(0),
            user: Arc::default(),
            streams: Mutex::new(Vec::new()),
            complete_latency: Mutex::new(new_latency_histogram()),
            last_error: Mutex::new(None),
            exceptions: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Upper bounds (µs) of the exported latency histogram's buckets: 12 per decade from 10 µs to 10 s (steps of
/// 10–25 %, so a quantile interpolated inside a bucket is within a few percent), then 30 s and 60 s.
pub fn latency_bucket_bounds_micros() -> Vec<u64> {
    const STEPS: [u64; 12] = [10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90];
    let mut bounds = Vec::with_capacity(75);
    for decade in 0..6 {
        bounds.extend(STEPS.iter().map(|s| s * 10u64.pow(decade)));
    }
    bounds.extend([10_000_000, 30_000_000, 60_000_000]);
    bounds
}

/// Cumulative counts of a latency histogram (µs) at `bounds` (µs): entry i counts the values at or below
/// `bounds[i]`.
pub fn cumulative_counts(h: &Histogram<u64>, bounds: &[u64]) -> Vec<u64> {
    let mut per_bucket = vec![0u64; bounds.len()];
    for v in h.iter_recorded() {
        // Values are kept to 3 significant digits: a value on a bound counts at or below it.
        let micros = h.lowest_equivalent(v.value_iterated_to());
        let i = bounds.partition_point(|&b| b < micros);
        if let Some(c) = per_bucket.get_mut(i) {
            *c += v.count_at_value();
        }
    }
    let mut total = 0;
    per_bucket
        .into_iter()
        .map(|c| {
            total += c;
            total
        })
        .collect()
}

/// Microseconds from 1 µs to 1 hour, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Emits and executes of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCount {
    pub emitted: u64,
    pub executed: u64,
}

impl TaskMetrics {
    /// Adds a task's local per-stream counts and zeroes them.
    pub fn add_stream_counts(&self, local: &mut [StreamCount]) {
        if let Ok(mut all) = self.streams.lock() {
            if all.len() < local.len() {
                all.resize(local.len(), StreamCount::default());
            }
            for (a, l) in all.iter_mut().zip(local.iter_mut()) {
                a.emitted += l.emitted;
                a.executed += l.executed;
                *l = StreamCount::default();
            }
        }
    }

    /// Totals per stream index.
    pub fn stream_counts(&self) -> Vec<StreamCount> {
        self.streams.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records a task's complete latencies (µs) not yet published and empties `local`. One lock per call; adding a
    /// whole local histogram instead would walk (and then clear) every bucket on every call.
    pub fn add_complete_latencies(&self, local: &mut Vec<u64>) {
        if local.is_empty() {
            return;
        }
        if let Ok(mut h) = self.complete_latency.lock() {
            for &micros in local.iter() {
                h.saturating_record(micros.max(1));
            }
        }
        local.clear();
    }

    /// A copy of the complete-latency histogram (microseconds).
    pub fn complete_latency(&self) -> Histogram<u64> {
        self.complete_latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_latency_histogram())
    }

    pub fn reset_complete_latency(&self) {
        if let Ok(mut h) = self.complete_latency.lock() {
            h.reset();
        }
    }

    pub fn record_error(&self, message: String) {
        self.errors.fetch_add(1, Relaxed);
        let now = SystemTime::now();
        if let Ok(mut all) = self.exceptions.lock() {
            let full = all.len() >= MAX_EXCEPTIONS;
            match all.get_mut(&message) {
                Some(e) => {
                    e.count += 1;
                    e.last = now;
                }
                None if !full => {
                    all.insert(
                        message.clone(),
                        ExceptionSummary {
                            count: 1,
                            first: now,
                            last: now,
                        },
                    );
                }
                None => {}
            }
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    /// Every distinct error message with its count and times.
    pub fn exceptions(&self) -> Vec<(String, ExceptionSummary)> {
        self.exceptions
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn snapshot(&self) -> TaskMetricsSnapshot {
        TaskMetricsSnapshot {
            emitted: self.emitted.load(Relaxed),
            executed: self.executed.load(Relaxed),
            acked: self.acked.load(Relaxed),
            failed: self.failed.load(Relaxed),
            errors: self.errors.load(Relaxed),
            execute_time: Duration::from_nanos(self.execute_nanos.load(Relaxed)),
            pending_roots: self.pending_roots.load(Relaxed),
            checkpoints_saved: self.checkpoints_saved.load(Relaxed),
            dropped_stale: self.dropped_stale.load(Relaxed),
        }
    }
}

/// A point-in-time copy of a task's counters (or a component's sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskMetricsSnapshot {
    pub emitted: u64,
    pub executed: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: u64,
    pub execute_time: Duration,
    pub pending_roots: u64,
    pub checkpoints_saved: u64,
    pub dropped_stale: u64,
}

impl std::ops::AddAssign for TaskMetricsSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.emitted += o.emitted;
        self.executed += o.executed;
        self.acked += o.acked;
        self.failed += o.failed;
        self.errors += o.errors;
        self.execute_time += o.execute_time;
        self.pending_roots += o.pending_roots;
        self.checkpoints_saved += o.checkpoints_saved;
        self.dropped_stale += o.dropped_stale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_place_each_value_in_its_bucket() {
        let bounds = latency_bucket_bounds_micros();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds increase");
        assert_eq!((bounds[0], bounds[11], bounds[12]), (10, 90, 100));
        let mut h = new_latency_histogram();
        h.record(50).unwrap(); // 50 µs
        h.record(900).unwrap(); // 0.9 ms
        h.record(900).unwrap();
        h.record(2_000_000).unwrap(); // 2 s
        let counts = cumulative_counts(&h, &bounds);
        let at = |us: u64| counts[bounds.iter().position(|&b| b == us).unwrap()];
        assert_eq!(at(40), 0);
        assert_eq!(at(50), 1);
        assert_eq!(at(800), 1);
        assert_eq!(at(900), 3);
        assert_eq!(at(1_500_000), 3);
        assert_eq!(at(2_000_000), 4);
        assert_eq!(*counts.last().unwrap(), 4);
    }
}
