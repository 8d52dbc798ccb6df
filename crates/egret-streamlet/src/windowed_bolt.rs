//! Heron's (Storm's) low-level windowed bolts: the user implements [`WindowedBolt::execute`] over a
//! [`TupleWindow`], and [`WindowedBoltAdapter`] turns it into an ordinary [`Bolt`] (Heron's `WindowedBoltExecutor`).
//! The windows are the Streamlet API's engine, [`KeyedWindows`], with one key and the window's tuples (their
//! sequence numbers) as the aggregate: there is one implementation of windows in Egret. See
//! `docs/windowed-bolts.md`.
//!
//! **Windows.** Count windows (`[k * slide, k * slide + length)` of the bolt task's tuples in arrival order) and
//! duration windows (`[k * slide, k * slide + length)` in ms, aligned to the epoch) as the engine defines them; a
//! window is passed to `execute` once, when it fires, and only if it holds a tuple. Unlike Storm, the first windows
//! of a sliding count window wait until they are full, and a count length cannot slide by a duration or the other
//! way round.
//!
//! **Time.** With [`WindowedBoltAdapter::with_timestamp_field`] or [`WindowedBoltAdapter::with_timestamp_extractor`]
//! duration windows run on event time: every watermark interval (checked on each tuple and tick) the watermark
//! becomes the smallest, over the task's upstream tasks, of the largest timestamp each has sent, minus the lag
//! (none until every upstream task has sent a tuple). A window fires when the watermark reaches its end. A tuple is
//! late when every window it belongs to has already fired: it is emitted on the late-tuple stream (one field,
//! `late_tuple`, a list of its values, anchored on it) if one is configured, otherwise counted and logged; it is
//! acked either way. Without timestamps, duration windows run on processing time: the wall clock is each tuple's
//! timestamp and the watermark, advanced on every tuple and tick. Count windows count arrivals and ignore time.
//!
//! **Acking** (at-least-once). What `execute` emits is anchored on every tuple of the window. A tuple is acked as
//! soon as the last window that can hold it has been passed to `execute` (so after every emit anchored on it); a
//! late tuple at once. If `execute` returns an error, the window's tuples are failed (their roots replay). A
//! tuple that never reaches its last window (the stream stops before a count window fills or before the watermark
//! passes a window) is not acked and times out.
//!
//! **State** (effectively-once). The adapter is [`Stateful`]: the windows, the tuples they hold, the upstream
//! timestamps and the user bolt's own state (if its `stateful` returns one) are checkpointed together.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use egret_api::config::keys as api_keys;
use egret_api::{
    Anchor, Bolt, BoltCollector, CheckpointId, ComponentDeclarer, Config, ConfigError, OutputDeclarer, OwnedTuple,
    ReliabilityMode, Roots, Stateful, StreamSource, TaskId, TopologyBuilder, TopologyContext, Tuple, UserError, Value,
    Values,
};
use serde::{Deserialize, Serialize};

use crate::component::now_ms;
use crate::window::{Added, KeyedWindows, Window, WindowConfig, WindowError};

/// Heron's component config keys of windowed bolts (`org.apache.heron.api.Config`), defined with every other key
/// in `egret_api::config::keys`.
pub mod keys {
    pub use egret_api::keys::{
        LATE_TUPLE_STREAM, TUPLE_TIMESTAMP_MAX_LAG_MS, WATERMARK_EVENT_INTERVAL_MS, WINDOW_LENGTH_COUNT,
        WINDOW_LENGTH_DURATION_MS, WINDOW_SLIDING_INTERVAL_COUNT, WINDOW_SLIDING_INTERVAL_DURATION_MS,
    };

    /// Every key above.
    pub const ALL: &[&str] = &[
        WINDOW_LENGTH_COUNT,
        WINDOW_LENGTH_DURATION_MS,
        WINDOW_SLIDING_INTERVAL_COUNT,
        WINDOW_SLIDING_INTERVAL_DURATION_MS,
        LATE_TUPLE_STREAM,
        TUPLE_TIMESTAMP_MAX_LAG_MS,
        WATERMARK_EVENT_INTERVAL_MS,
    ];
}

/// Heron's default lag: none.
pub const DEFAULT_LAG_MS: u64 = 0;
/// Heron's default watermark interval.
pub const DEFAULT_WATERMARK_INTERVAL_MS: u64 = 1000;
/// The one field of the late-tuple stream.
pub const LATE_TUPLE_FIELD: &str = "late_tuple";
/// The longest tick period of processing-time duration windows (a window fires at most this long after its end).
const PROCESSING_TIME_TICK_MS: u64 = 100;

/// A number of tuples (Heron's `BaseWindowedBolt.Count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

/// A window length or sliding interval: a number of tuples or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSize {
    Count(u64),
    Duration(Duration),
}

impl From<Count> for WindowSize {
    fn from(count: Count) -> Self {
        WindowSize::Count(count.0)
    }
}

impl From<Duration> for WindowSize {
    fn from(duration: Duration) -> Self {
        WindowSize::Duration(duration)
    }
}

/// Why a windowed bolt cannot run with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum WindowedBoltError {
    #[error(
        "windowed bolt has no window length: use with_window / with_tumbling_window or set {} or {}",
        keys::WINDOW_LENGTH_COUNT,
        keys::WINDOW_LENGTH_DURATION_MS
    )]
    NoWindowLength,
    #[error(
        "windowed bolt window {length:?} sliding by {sliding:?}: a count window must slide by a count and a duration \
         window by a duration"
    )]
    MixedUnits { length: WindowSize, sliding: WindowSize },
    #[error("windowed bolt duration {0:?} is too long")]
    DurationTooLong(Duration),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("windowed bolt: {0}")]
    Window(#[from] WindowError),
    #[error(
        "windowed bolt window length plus sliding interval is {window_ms} ms, longer than the message timeout of \
         {timeout_ms} ms: its tuples would time out while still in a window"
    )]
    LongerThanTimeout { window_ms: u128, timeout_ms: u128 },
    #[error(
        "windowed bolt window length plus sliding interval is {count} tuples, more than topology.max.spout.pending \
         ({max_pending}): the window could never fill"
    )]
    LargerThanMaxPending { count: u64, max_pending: u64 },
    #[error(
        "windowed bolt late tuple stream {0:?} is not declared: set it with with_late_tuple_stream, which declares it"
    )]
    UndeclaredLateStream(String),
    #[error("the checkpointed windows are {restored:?}, but the bolt is now configured for {configured:?}")]
    ChangedSinceCheckpoint {
        restored: WindowConfig,
        configured: WindowConfig,
    },
}

/// A windowed bolt's settings, as Heron's `BaseWindowedBolt` builder methods and component config keys give them.
/// Unset fields take Heron's defaults (a count window without a sliding interval slides by 1 tuple).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowedBoltConfig {
    pub length: Option<WindowSize>,
    pub sliding_interval: Option<WindowSize>,
    pub lag: Option<Duration>,
    pub watermark_interval: Option<Duration>,
    pub late_tuple_stream: Option<String>,
}

/// A resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    window: WindowConfig,
    lag_ms: i64,
    watermark_interval_ms: i64,
    late_tuple_stream: Option<String>,
}

fn millis(duration: Duration) -> Result<i64, WindowedBoltError> {
    i64::try_from(duration.as_millis()).map_err(|_| WindowedBoltError::DurationTooLong(duration))
}

impl WindowedBoltConfig {
    /// The settings as Heron's `topology.bolts.*` component config keys (only those set).
    pub fn to_config(&self) -> Config {
        let mut config = Config::new();
        match self.length {
            Some(WindowSize::Count(n)) => config.set(keys::WINDOW_LENGTH_COUNT, n),
            Some(WindowSize::Duration(d)) => config.set(keys::WINDOW_LENGTH_DURATION_MS, d.as_millis()),
            None => &mut config,
        };
        match self.sliding_interval {
            Some(WindowSize::Count(n)) => config.set(keys::WINDOW_SLIDING_INTERVAL_COUNT, n),
            Some(WindowSize::Duration(d)) => config.set(keys::WINDOW_SLIDING_INTERVAL_DURATION_MS, d.as_millis()),
            None => &mut config,
        };
        if let Some(lag) = self.lag {
            config.set(keys::TUPLE_TIMESTAMP_MAX_LAG_MS, lag.as_millis());
        }
        if let Some(interval) = self.watermark_interval {
            config.set(keys::WATERMARK_EVENT_INTERVAL_MS, interval.as_millis());
        }
        if let Some(stream) = &self.late_tuple_stream {
            config.set(keys::LATE_TUPLE_STREAM, stream);
        }
        config
    }

    /// These settings with every `topology.bolts.*` key present in `config` replacing its field: the keys are
    /// authoritative. A count key wins over a duration key for the same field, as in Heron.
    pub fn overlaid_with(&self, config: &Config) -> Result<Self, WindowedBoltError> {
        let mut out = self.clone();
        let size = |count_key: &str, duration_key: &str| -> Result<Option<WindowSize>, WindowedBoltError> {
            if let Some(n) = config.get_u64(count_key)? {
                return Ok(Some(WindowSize::Count(n)));
            }
            Ok(config
                .get_u64(duration_key)?
                .map(|ms| WindowSize::Duration(Duration::from_millis(ms))))
        };
        if let Some(length) = size(keys::WINDOW_LENGTH_COUNT, keys::WINDOW_LENGTH_DURATION_MS)? {
            out.length = Some(length);
        }
        if let Some(sliding) = size(
            keys::WINDOW_SLIDING_INTERVAL_COUNT,
            keys::WINDOW_SLIDING_INTERVAL_DURATION_MS,
        )? {
            out.sliding_interval = Some(sliding);
        }
        if let Some(ms) = config.get_u64(keys::TUPLE_TIMESTAMP_MAX_LAG_MS)? {
            out.lag = Some(Duration::from_millis(ms));
        }
        if let Some(ms) = config.get_u64(keys::WATERMARK_EVENT_INTERVAL_MS)? {
            out.watermark_interval = Some(Duration::from_millis(ms));
        }
        if let Some(stream) = config.get(keys::LATE_TUPLE_STREAM) {
            out.late_tuple_stream = Some(stream.trim().to_string()).filter(|s| !s.is_empty());
        }
        Ok(out)
    }

    fn resolve(&self) -> Result<Settings, WindowedBoltError> {
        let length = self.length.ok_or(WindowedBoltError::NoWindowLength)?;
        // Heron: a window without a sliding interval slides by one tuple.
        let sliding = self.sliding_interval.unwrap_or(WindowSize::Count(1));
        let window = match (length, sliding) {
            (WindowSize::Count(size), WindowSize::Count(slide)) if size == slide => {
                WindowConfig::TumblingCount { size }
            }
            (WindowSize::Count(size), WindowSize::Count(slide)) => WindowConfig::SlidingCount { size, slide },
            (WindowSize::Duration(length), WindowSize::Duration(slide)) => {
                let (length_ms, slide_ms) = (millis(length)?, millis(slide)?);
                if length_ms == slide_ms {
                    WindowConfig::TumblingTime { length_ms }
                } else {
                    WindowConfig::SlidingTime { length_ms, slide_ms }
                }
            }
            (length, sliding) => return Err(WindowedBoltError::MixedUnits { length, sliding }),
        };
        // Checked here so that prepare fails, not the first tuple.
        KeyedWindows::<(), Vec<u64>>::new(window, 0)?;
        let lag = self.lag.unwrap_or(Duration::from_millis(DEFAULT_LAG_MS));
        let interval = self
            .watermark_interval
            .unwrap_or(Duration::from_millis(DEFAULT_WATERMARK_INTERVAL_MS));
        Ok(Settings {
            window,
            lag_ms: millis(lag)?,
            watermark_interval_ms: millis(interval)?.max(1),
            late_tuple_stream: self.late_tuple_stream.clone(),
        })
    }
}

/// Gives a tuple's event time in ms.
pub type TimestampExtractor = Arc<dyn Fn(&Tuple<'_>) -> Result<i64, UserError> + Send + Sync>;

/// What [`WindowedBolt::execute`] sees: the tuples of one window, in arrival order.
pub struct TupleWindow<'a> {
    tuples: Vec<&'a OwnedTuple>,
    new: Vec<&'a OwnedTuple>,
    expired: Vec<&'a OwnedTuple>,
    bounds: Window,
    by_time: bool,
}

impl<'a> TupleWindow<'a> {
    /// The tuples in the window (Heron's `get`).
    pub fn get(&self) -> &[&'a OwnedTuple] {
        &self.tuples
    }
    /// The tuples in this window that were not in the previous one passed to `execute` (`getNew`).
    pub fn get_new(&self) -> &[&'a OwnedTuple] {
        &self.new
    }
    /// The tuples of the previous window that are not in this one: they left every window (`getExpired`).
    pub fn get_expired(&self) -> &[&'a OwnedTuple] {
        &self.expired
    }
    /// A duration window's start, ms, inclusive (`getStartTimestamp`); `None` for count windows.
    pub fn start_timestamp(&self) -> Option<i64> {
        self.by_time.then_some(self.bounds.start)
    }
    /// A duration window's end, ms, exclusive (`getEndTimestamp`); `None` for count windows.
    pub fn end_timestamp(&self) -> Option<i64> {
        self.by_time.then_some(self.bounds.end)
    }
    /// The engine's bounds: ms for duration windows, the task's tuple sequence numbers `[first, last + 1)` for
    /// count windows.
    pub fn bounds(&self) -> Window {
        self.bounds
    }
}

/// The collector of [`WindowedBolt::execute`]: every emit is anchored on every tuple of the window.
pub struct WindowCollector<'a, 'b> {
    inner: &'a mut BoltCollector<'b>,
    anchors: &'a [&'a dyn Anchor],
}

impl WindowCollector<'_, '_> {
    pub fn emit(&mut self, values: impl Values) {
        self.inner.emit_on(egret_api::DEFAULT_STREAM, self.anchors, values)
    }

    pub fn emit_on(&mut self, stream: &str, values: impl Values) {
        self.inner.emit_on(stream, self.anchors, values)
    }

    pub fn emit_direct(&mut self, task: TaskId, stream: &str, values: impl Values) {
        self.inner.emit_direct(task, stream, self.anchors, values)
    }

    pub fn report_error(&mut self, error: &dyn std::error::Error) {
        self.inner.report_error(error)
    }
}

/// A bolt over windows of tuples (Heron's `IWindowedBolt`). Run it with [`WindowedBoltAdapter`].
pub trait WindowedBolt: std::any::Any + Send {
    /// Declares the streams `execute` emits on (the late-tuple stream is declared by the adapter).
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }

    /// One window fired. An error is reported and fails the window's tuples.
    fn execute(&mut self, window: &TupleWindow<'_>, out: &mut WindowCollector<'_, '_>) -> Result<(), UserError>;

    fn cleanup(&mut self) {}

    /// State of the user's own to checkpoint with the windows under effectively-once (Heron's
    /// `IStatefulWindowedBolt`): return `Some(self)`.
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
}

/// A tuple the windows hold.
struct Held {
    tuple: OwnedTuple,
    /// Acked (its last window fired); kept only while it is in the previous window, for `get_expired`.
    acked: bool,
}

/// A prepared adapter's windows and time.
struct Run {
    settings: Settings,
    event_time: bool,
    /// One key; each window's aggregate is the sequence numbers of its tuples, ascending.
    windows: KeyedWindows<(), Vec<u64>>,
    held: BTreeMap<u64, Held>,
    /// (end, start, seq): the last window of each held tuple that is not acked yet, in the order they fire.
    expiry: BTreeSet<(i64, i64, u64)>,
    /// The window last passed to `execute`.
    previous: Vec<u64>,
    next_seq: u64,
    upstream: Vec<TaskId>,
    /// Event time: per upstream task, the largest timestamp it sent.
    upstream_max: BTreeMap<u32, i64>,
    /// Event time: when (processing time) the next watermark is due.
    next_watermark_ms: Option<i64>,
    fired: Vec<((), Window, Vec<u64>)>,
}

impl Run {
    fn new(settings: Settings, event_time: bool, upstream: Vec<TaskId>) -> Result<Self, WindowedBoltError> {
        Ok(Run {
            windows: KeyedWindows::new(settings.window, 0)?,
            settings,
            event_time,
            held: BTreeMap::new(),
            expiry: BTreeSet::new(),
            previous: Vec::new(),
            next_seq: 0,
            upstream,
            upstream_max: BTreeMap::new(),
            next_watermark_ms: None,
            fired: Vec::new(),
        })
    }

    /// Event time: the smallest largest-timestamp of the upstream tasks, minus the lag; `None` until each sent one.
    fn watermark(&self) -> Option<i64> {
        let mut min: Option<i64> = None;
        for task in &self.upstream {
            let max = *self.upstream_max.get(&task.0)?;
            min = Some(min.map_or(max, |m| m.min(max)));
        }
        min.map(|m| m.saturating_sub(self.settings.lag_ms))
    }

    /// Moves time to `now`: processing time advances the watermark to it; event time computes the watermark
    /// when a watermark interval has passed since the last one.
    fn advance(&mut self, now: i64) {
        if !self.event_time {
            self.windows.advance(now, &mut self.fired);
            return;
        }
        match self.next_watermark_ms {
            None => self.next_watermark_ms = Some(now.saturating_add(self.settings.watermark_interval_ms)),
            Some(due) if now >= due => {
                if let Some(watermark) = self.watermark() {
                    self.windows.advance(watermark, &mut self.fired);
                }
                self.next_watermark_ms = Some(now.saturating_add(self.settings.watermark_interval_ms));
            }
            Some(_) => {}
        }
    }

    /// Adds a tuple at `ts` (already checked to be on time or not by the engine itself).
    fn add(&mut self, tuple: &Tuple<'_>, ts: i64) -> Added {
        let last = self.windows.last_window_of(&(), ts);
        let seq = self.next_seq;
        let added = self.windows.add(
            (),
            ts,
            &seq,
            Vec::new,
            |ids, seq| ids.push(*seq),
            |ids, more| ids.extend(more),
            &mut self.fired,
        );
        if added == Added::Accepted {
            self.next_seq += 1;
            self.held.insert(
                seq,
                Held {
                    tuple: tuple.to_owned_tuple(),
                    acked: false,
                },
            );
            if let Some(last) = last {
                self.expiry.insert((last.end, last.start, seq));
            }
        }
        added
    }

    /// Passes each fired window to `execute`, then acks the tuples whose last window fired.
    fn activate<B: WindowedBolt>(&mut self, bolt: &mut B, out: &mut BoltCollector<'_>) {
        let by_time = matches!(
            self.settings.window,
            WindowConfig::TumblingTime { .. } | WindowConfig::SlidingTime { .. }
        );
        for ((), bounds, seqs) in std::mem::take(&mut self.fired) {
            {
                let tuple = |seq: &u64| self.held.get(seq).map(|h| &h.tuple);
                let window = TupleWindow {
                    tuples: seqs.iter().filter_map(tuple).collect(),
                    new: seqs
                        .iter()
                        .filter(|s| self.previous.binary_search(s).is_err())
                        .filter_map(tuple)
                        .collect(),
                    expired: self
                        .previous
                        .iter()
                        .filter(|s| seqs.binary_search(s).is_err())
                        .filter_map(tuple)
                        .collect(),
                    bounds,
                    by_time,
                };
                let anchors: Vec<&dyn Anchor> = window.tuples.iter().map(|t| *t as &dyn Anchor).collect();
                let result = bolt.execute(
                    &window,
                    &mut WindowCollector {
                        inner: out,
                        anchors: &anchors,
                    },
                );
                if let Err(e) = result {
                    out.report_error(&*e);
                    for t in &window.tuples {
                        out.fail(*t);
                    }
                }
            }
            let before = std::mem::replace(&mut self.previous, seqs);
            for seq in before {
                if self.previous.binary_search(&seq).is_err() && self.held.get(&seq).is_some_and(|h| h.acked) {
                    self.held.remove(&seq);
                }
            }
        }
        while let Some(&(end, start, seq)) = self.expiry.first() {
            if !self.windows.window_has_fired(&(), Window { start, end }) {
                break;
            }
            self.expiry.pop_first();
            if let Some(held) = self.held.get_mut(&seq) {
                out.ack(&held.tuple);
                held.acked = true;
                if self.previous.binary_search(&seq).is_err() {
                    self.held.remove(&seq);
                }
            }
        }
    }
}

/// Runs a [`WindowedBolt`] as a [`Bolt`] (Heron's `WindowedBoltExecutor`), configured like Heron's
/// `BaseWindowedBolt`: `WindowedBoltAdapter::new(bolt).with_window(Count(10), Count(5))`. The `topology.bolts.*`
/// keys of the component's config, read at prepare, override what the builder methods set.
pub struct WindowedBoltAdapter<B> {
    bolt: B,
    config: WindowedBoltConfig,
    timestamp: Option<TimestampExtractor>,
    run: Option<Run>,
    /// Windows restored by `init_state`, taken over at prepare.
    restored: Option<SavedRun>,
    late_tuples: u64,
}

impl<B: WindowedBolt> WindowedBoltAdapter<B> {
    pub fn new(bolt: B) -> Self {
        WindowedBoltAdapter {
            bolt,
            config: WindowedBoltConfig::default(),
            timestamp: None,
            run: None,
            restored: None,
            late_tuples: 0,
        }
    }

    /// A window of `length` sliding by `sliding_interval`, both counts or both durations.
    pub fn with_window(mut self, length: impl Into<WindowSize>, sliding_interval: impl Into<WindowSize>) -> Self {
        self.config.length = Some(length.into());
        self.config.sliding_interval = Some(sliding_interval.into());
        self
    }

    /// A count window of `length` sliding by one tuple (Heron's `withWindow(Count)`).
    pub fn with_count_window(self, length: Count) -> Self {
        self.with_window(length, Count(1))
    }

    pub fn with_tumbling_window(self, length: impl Into<WindowSize>) -> Self {
        let length = length.into();
        self.with_window(length, length)
    }

    /// Event time: the tuple's `i64` field `field` is its timestamp in ms.
    pub fn with_timestamp_field(self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.with_timestamp_extractor(move |t: &Tuple<'_>| Ok(t.get_i64(field.as_str())?))
    }

    /// Event time: `extract` gives a tuple's timestamp in ms; a tuple it refuses is reported and failed.
    pub fn with_timestamp_extractor(
        mut self,
        extract: impl Fn(&Tuple<'_>) -> Result<i64, UserError> + Send + Sync + 'static,
    ) -> Self {
        self.timestamp = Some(Arc::new(extract));
        self
    }

    /// Event time: the watermark trails the timestamps by `lag`.
    pub fn with_lag(mut self, lag: Duration) -> Self {
        self.config.lag = Some(lag);
        self
    }

    /// Event time: how often the watermark is computed.
    pub fn with_watermark_interval(mut self, interval: Duration) -> Self {
        self.config.watermark_interval = Some(interval);
        self
    }

    /// Late tuples are emitted on `stream` (declared by the adapter, one field `late_tuple`).
    pub fn with_late_tuple_stream(mut self, stream: impl Into<String>) -> Self {
        self.config.late_tuple_stream = Some(stream.into());
        self
    }

    /// The settings the builder methods gave.
    pub fn window_config(&self) -> &WindowedBoltConfig {
        &self.config
    }

    /// The component config this bolt needs (Heron's `getComponentConfiguration`): its `topology.bolts.*` keys and a
    /// tick frequency, so that windows fire and watermarks advance while no tuple arrives. What
    /// [`WindowedBoltBuilder::set_windowed_bolt`] writes.
    pub fn component_config(&self) -> Config {
        let mut config = self.config.to_config();
        let tick_ms = if self.timestamp.is_some() {
            Some(
                self.config
                    .watermark_interval
                    .map_or(DEFAULT_WATERMARK_INTERVAL_MS, |d| d.as_millis() as u64),
            )
        } else {
            match self.config.sliding_interval {
                Some(WindowSize::Duration(slide)) => Some((slide.as_millis() as u64).min(PROCESSING_TIME_TICK_MS)),
                _ => None,
            }
        };
        if let Some(ms) = tick_ms {
            config.set(api_keys::TICK_TUPLE_FREQ_MS, ms.max(1));
        }
        config
    }

    /// The user's bolt.
    pub fn bolt(&self) -> &B {
        &self.bolt
    }

    /// Late tuples seen (emitted on the late-tuple stream or, without one, dropped).
    pub fn late_tuples(&self) -> u64 {
        self.late_tuples
    }

    /// One input at processing time `now`.
    fn on_input(&mut self, tuple: &Tuple<'_>, now: i64, out: &mut BoltCollector<'_>) {
        let Some(run) = self.run.as_mut() else {
            out.report_error(&*UserError::from("windowed bolt got a tuple before prepare"));
            return out.fail(tuple);
        };
        run.advance(now);
        if tuple.is_tick() {
            return run.activate(&mut self.bolt, out);
        }
        let ts = match &self.timestamp {
            Some(extract) => match extract(tuple) {
                Ok(ts) => ts,
                Err(e) => {
                    out.report_error(&*e);
                    out.fail(tuple);
                    return run.activate(&mut self.bolt, out);
                }
            },
            None => now,
        };
        if run.event_time {
            let max = run.upstream_max.entry(tuple.source_task().0).or_insert(ts);
            *max = (*max).max(ts);
        }
        if run.add(tuple, ts) == Added::Late {
            self.late_tuples += 1;
            match &run.settings.late_tuple_stream {
                Some(stream) => match tuple.values().map(|v| v.and_then(|v| v.to_owned_value())).collect() {
                    Ok(values) => out.emit_on(stream, &[tuple as &dyn Anchor], (Value::List(values),)),
                    Err(e) => out.report_error(&e),
                },
                None if self.late_tuples.is_power_of_two() => tracing::warn!(
                    component = tuple.source_component(),
                    timestamp = ts,
                    late_tuples = self.late_tuples,
                    "windowed bolt dropped a late tuple (no late tuple stream)"
                ),
                None => {}
            }
            out.ack(tuple);
        }
        run.activate(&mut self.bolt, out);
    }
}

impl<B: WindowedBolt> Bolt for WindowedBoltAdapter<B> {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.bolt.declare_outputs(out);
        if let Some(stream) = &self.config.late_tuple_stream {
            out.declare_stream(stream.clone(), [LATE_TUPLE_FIELD]);
        }
    }

    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let config = ctx.config();
        let settings = self.config.overlaid_with(config)?.resolve()?;
        if let Some(stream) = &settings.late_tuple_stream
            && ctx.output_fields(stream).is_none()
        {
            return Err(WindowedBoltError::UndeclaredLateStream(stream.clone()).into());
        }
        // Heron's checks: tuples must be able to stay in their windows without timing out.
        if config.reliability_mode()? == ReliabilityMode::AtLeastOnce {
            match settings.window {
                WindowConfig::TumblingTime { length_ms } | WindowConfig::SlidingTime { length_ms, .. }
                    if config.message_timeouts_enabled()? =>
                {
                    let slide_ms = match settings.window {
                        WindowConfig::SlidingTime { slide_ms, .. } => slide_ms,
                        _ => length_ms,
                    };
                    let window_ms = length_ms as u128 + slide_ms as u128;
                    let timeout_ms = config.message_timeout()?.as_millis();
                    if window_ms > timeout_ms {
                        return Err(WindowedBoltError::LongerThanTimeout { window_ms, timeout_ms }.into());
                    }
                }
                WindowConfig::TumblingCount { size } | WindowConfig::SlidingCount { size, .. } => {
                    let slide = match settings.window {
                        WindowConfig::SlidingCount { slide, .. } => slide,
                        _ => size,
                    };
                    let count = size.saturating_add(slide);
                    let max_pending = config.max_spout_pending()?;
                    if count > max_pending {
                        return Err(WindowedBoltError::LargerThanMaxPending { count, max_pending }.into());
                    }
                }
                _ => {}
            }
        }
        let upstream = ctx.topology().upstream_tasks(ctx.task_id());
        let interval_ms = settings.watermark_interval_ms;
        let mut run = Run::new(settings, self.timestamp.is_some(), upstream)?;
        // The first watermark is due one interval after the task starts.
        run.next_watermark_ms = Some(now_ms().saturating_add(interval_ms));
        if let Some(saved) = self.restored.take() {
            saved.restore_into(&mut run)?;
        }
        self.run = Some(run);
        self.bolt.prepare(ctx)
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        self.on_input(tuple, now_ms(), out)
    }

    fn cleanup(&mut self) {
        self.bolt.cleanup()
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

/// Heron's `TopologyBuilder.setBolt` of a windowed bolt, which also writes the bolt's component config.
pub trait WindowedBoltBuilder {
    /// Adds the windowed bolt and its [`WindowedBoltAdapter::component_config`] (window keys and tick frequency;
    /// `.config(...)` on the result overrides them).
    fn set_windowed_bolt<B, F>(
        &mut self,
        name: impl Into<String>,
        parallelism: u32,
        factory: F,
    ) -> ComponentDeclarer<'_>
    where
        B: WindowedBolt,
        F: Fn() -> WindowedBoltAdapter<B> + Send + Sync + 'static;
}

impl WindowedBoltBuilder for TopologyBuilder {
    fn set_windowed_bolt<B, F>(
        &mut self,
        name: impl Into<String>,
        parallelism: u32,
        factory: F,
    ) -> ComponentDeclarer<'_>
    where
        B: WindowedBolt,
        F: Fn() -> WindowedBoltAdapter<B> + Send + Sync + 'static,
    {
        let config = factory().component_config();
        let mut declarer = self.set_bolt(name, parallelism, factory);
        for (key, value) in config.iter() {
            declarer = declarer.config(key, value);
        }
        declarer
    }
}

// ---- State ------------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct SavedSource {
    component: String,
    stream: String,
    fields: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct SavedTuple {
    seq: u64,
    source: u32,
    task: u32,
    values: Vec<u8>,
    acked: bool,
}

/// What the adapter checkpoints of its windows. Tuples keep their source and values; their ack keys are not
/// kept (there is no acking under effectively-once).
#[derive(Serialize, Deserialize)]
struct SavedRun {
    windows: KeyedWindows<(), Vec<u64>>,
    sources: Vec<SavedSource>,
    held: Vec<SavedTuple>,
    expiry: Vec<(i64, i64, u64)>,
    previous: Vec<u64>,
    next_seq: u64,
    upstream_max: BTreeMap<u32, i64>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    run: Option<SavedRun>,
    user: Option<Vec<u8>>,
}

impl SavedRun {
    fn of(run: &Run) -> SavedRun {
        let mut sources: Vec<SavedSource> = Vec::new();
        let mut held = Vec::new();
        for (&seq, h) in &run.held {
            let view = h.tuple.view();
            let (component, stream) = (view.source_component(), view.source_stream());
            let source = match sources
                .iter()
                .position(|s| s.component == component && s.stream == stream)
            {
                Some(i) => i,
                None => {
                    sources.push(SavedSource {
                        component: component.to_string(),
                        stream: stream.to_string(),
                        fields: view.fields().names().to_vec(),
                    });
                    sources.len() - 1
                }
            };
            held.push(SavedTuple {
                seq,
                source: source as u32,
                task: view.source_task().0,
                values: view.encoded_values().to_vec(),
                acked: h.acked,
            });
        }
        SavedRun {
            windows: run.windows.clone(),
            sources,
            held,
            expiry: run.expiry.iter().copied().collect(),
            previous: run.previous.clone(),
            next_seq: run.next_seq,
            upstream_max: run.upstream_max.clone(),
        }
    }

    fn restore_into(self, run: &mut Run) -> Result<(), WindowedBoltError> {
        if self.windows.config() != run.settings.window {
            return Err(WindowedBoltError::ChangedSinceCheckpoint {
                restored: self.windows.config(),
                configured: run.settings.window,
            });
        }
        let sources: Vec<Arc<StreamSource>> = self
            .sources
            .into_iter()
            .map(|s| {
                Arc::new(StreamSource {
                    component: s.component,
                    stream: s.stream,
                    fields: s.fields.into(),
                })
            })
            .collect();
        run.held.clear();
        for t in self.held {
            // A damaged state naming a source it does not have loses that tuple rather than the task.
            let Some(source) = sources.get(t.source as usize) else {
                continue;
            };
            let tuple = Tuple::new(source, TaskId(t.task), &t.values, 0, Roots::default()).to_owned_tuple();
            run.held.insert(t.seq, Held { tuple, acked: t.acked });
        }
        run.windows = self.windows;
        run.expiry = self.expiry.into_iter().collect();
        run.previous = self.previous;
        run.next_seq = self.next_seq;
        run.upstream_max = self.upstream_max;
        Ok(())
    }
}

impl<B: WindowedBolt> Stateful for WindowedBoltAdapter<B> {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        let saved: Option<Saved> = restored.map(postcard::from_bytes).transpose()?;
        let (run, user) = match saved {
            Some(saved) => (saved.run, saved.user),
            None => (None, None),
        };
        self.restored = run;
        if let Some(state) = self.bolt.stateful() {
            state.init_state(user.as_deref())?;
        }
        Ok(())
    }

    fn pre_save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let user = match self.bolt.stateful() {
            Some(state) => {
                let mut bytes = Vec::new();
                state.pre_save(checkpoint, &mut bytes)?;
                Some(bytes)
            }
            None => None,
        };
        let saved = Saved {
            run: self.run.as_ref().map(SavedRun::of),
            user,
        };
        out.extend_from_slice(&postcard::to_stdvec(&saved)?);
        Ok(())
    }

    fn post_save(&mut self, checkpoint: CheckpointId) {
        if let Some(state) = self.bolt.stateful() {
            state.post_save(checkpoint)
        }
    }

    fn pre_restore(&mut self, checkpoint: Option<CheckpointId>) {
        if let Some(state) = self.bolt.stateful() {
            state.pre_restore(checkpoint)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use egret_api::value::{Encoder, ValuesIter};
    use egret_api::{AckState, EmitRequest, EmitSink, Fields, Spout, SpoutCollector};
    use proptest::prelude::*;

    use super::*;
    use crate::window::testing::{Expected, Step, count_config, fixed_time_config, oracle, run_steps};

    const INTERVAL_MS: i64 = 1000;
    const LATE: &str = "late";

    /// What a bolt did through its collector: emits (stream, values, keys of the anchors), acked and failed keys.
    #[derive(Default)]
    struct Recorder {
        enc: Encoder,
        emitted: Vec<(String, Vec<Value>, Vec<u64>)>,
        acked: Vec<u64>,
        failed: Vec<u64>,
        errors: Vec<String>,
    }

    impl EmitSink for Recorder {
        fn encoder(&mut self) -> &mut Encoder {
            &mut self.enc
        }
        fn emit(&mut self, request: EmitRequest<'_>) {
            let values = ValuesIter::new(self.enc.bytes())
                .map(|v| v.and_then(|v| v.to_owned_value()).unwrap())
                .collect();
            let anchors = request.anchors.iter().map(|a| a.ack_state().key).collect();
            self.emitted.push((request.stream.to_string(), values, anchors));
        }
        fn ack(&mut self, tuple: AckState<'_>) {
            self.acked.push(tuple.key)
        }
        fn fail(&mut self, tuple: AckState<'_>) {
            self.failed.push(tuple.key)
        }
        fn report_error(&mut self, error: &dyn std::error::Error) {
            self.errors.push(error.to_string())
        }
    }

    /// One activation as the user bolt saw it: bounds, and the ids of get / get_new / get_expired.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        bounds: Window,
        ids: Vec<u32>,
        new: Vec<u32>,
        expired: Vec<u32>,
    }

    /// Records every window and emits its size, anchored (by the adapter) on its tuples.
    #[derive(Default)]
    struct Recording {
        seen: Vec<Seen>,
    }

    fn ids(tuples: &[&OwnedTuple]) -> Vec<u32> {
        tuples.iter().map(|t| t.view().get_i64("id").unwrap() as u32).collect()
    }

    impl WindowedBolt for Recording {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["size"]);
        }
        fn execute(&mut self, window: &TupleWindow<'_>, out: &mut WindowCollector<'_, '_>) -> Result<(), UserError> {
            self.seen.push(Seen {
                bounds: window.bounds(),
                ids: ids(window.get()),
                new: ids(window.get_new()),
                expired: ids(window.get_expired()),
            });
            out.emit((window.get().len() as i64,));
            Ok(())
        }
    }

    struct Silent;
    impl Spout for Silent {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["id", "ts"]);
        }
        fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
    }

    fn adapter_for(config: WindowConfig, event_time: bool) -> WindowedBoltAdapter<Recording> {
        let ms = |ms: i64| Duration::from_millis(ms as u64);
        let adapter = WindowedBoltAdapter::new(Recording::default()).with_late_tuple_stream(LATE);
        let adapter = match config {
            WindowConfig::TumblingCount { size } => adapter.with_tumbling_window(Count(size)),
            WindowConfig::SlidingCount { size, slide } => adapter.with_window(Count(size), Count(slide)),
            WindowConfig::TumblingTime { length_ms } => adapter.with_tumbling_window(ms(length_ms)),
            WindowConfig::SlidingTime { length_ms, slide_ms } => adapter.with_window(ms(length_ms), ms(slide_ms)),
            WindowConfig::Session { .. } => unreachable!("windowed bolts have no sessions"),
        };
        if event_time {
            adapter.with_timestamp_field("ts")
        } else {
            adapter
        }
    }

    /// A topology of two upstream tasks (1 and 2) feeding the windowed bolt (task 3), and the bolt's context.
    fn context(component_config: &[(&str, String)]) -> TopologyContext {
        context_with(&[], component_config)
    }

    fn context_with(topology_config: &[(&str, String)], component_config: &[(&str, String)]) -> TopologyContext {
        let mut builder = TopologyBuilder::new("windowed-bolt-test");
        for (key, value) in topology_config {
            builder.config().set(*key, value);
        }
        builder.set_spout("src", 2, || Silent);
        let mut bolt = builder
            .set_bolt("win", 1, || {
                WindowedBoltAdapter::new(Recording::default())
                    .with_tumbling_window(Count(1))
                    .with_late_tuple_stream(LATE)
            })
            .shuffle_grouping("src");
        for (key, value) in component_config {
            bolt = bolt.config(*key, value);
        }
        let topology = builder.build().unwrap();
        TopologyContext::new(Arc::new(topology), TaskId(3)).unwrap()
    }

    fn source() -> Arc<StreamSource> {
        Arc::new(StreamSource {
            component: "src".into(),
            stream: "default".into(),
            fields: Fields::new(["id", "ts"]),
        })
    }

    /// An input of the bolt at processing time `now`: a tuple `id` from upstream task `task`, or a tick.
    #[derive(Debug, Clone, Copy)]
    enum Input {
        Tuple { task: u32, ts: i64, id: u32, now: i64 },
        Tick { now: i64 },
    }

    fn feed(adapter: &mut WindowedBoltAdapter<Recording>, input: Input, rec: &mut Recorder) {
        let source = source();
        let tick = StreamSource::tick();
        match input {
            Input::Tuple { task, ts, id, now } => {
                let mut enc = Encoder::new();
                (i64::from(id), ts).encode_all(&mut enc);
                let tuple = Tuple::new(&source, TaskId(task), enc.bytes(), u64::from(id) + 1, Roots::default());
                adapter.on_input(&tuple, now, &mut BoltCollector::new(rec));
            }
            Input::Tick { now } => {
                let tuple = Tuple::new(&tick, TaskId(0), &[], 0, Roots::default());
                adapter.on_input(&tuple, now, &mut BoltCollector::new(rec));
            }
        }
    }

    fn prepared(config: WindowConfig, event_time: bool, lag_ms: i64) -> WindowedBoltAdapter<Recording> {
        let mut adapter = adapter_for(config, event_time).with_lag(Duration::from_millis(lag_ms as u64));
        adapter.prepare(&context(&[])).unwrap();
        // The test's clock starts at 0: the first watermark is due one interval later.
        adapter.run.as_mut().unwrap().next_watermark_ms = Some(INTERVAL_MS);
        adapter
    }

    /// What the bolt did at one input.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Observed {
        windows: Vec<Seen>,
        late: Vec<u32>,
        acked: Vec<u32>,
    }

    /// Feeds one input; checks that each window's emit is anchored on exactly its tuples (`check_anchors`: tuples
    /// restored from a checkpoint have no ack key).
    fn observe(
        adapter: &mut WindowedBoltAdapter<Recording>,
        input: Input,
        rec: &mut Recorder,
        check_anchors: bool,
    ) -> Observed {
        let (seen_before, emitted_before, acked_before) =
            (adapter.bolt().seen.len(), rec.emitted.len(), rec.acked.len());
        feed(adapter, input, rec);
        let windows = adapter.bolt().seen[seen_before..].to_vec();
        // Each window emitted its size, anchored on exactly its tuples.
        let window_emits: Vec<_> = rec.emitted[emitted_before..]
            .iter()
            .filter(|e| e.0 == "default")
            .collect();
        assert_eq!(window_emits.len(), windows.len());
        for (emit, seen) in window_emits.iter().zip(&windows).filter(|_| check_anchors) {
            let mut anchors: Vec<u64> = emit.2.clone();
            anchors.sort_unstable();
            let expect: Vec<u64> = seen.ids.iter().map(|&id| u64::from(id) + 1).collect();
            assert_eq!(anchors, expect, "the emit of {seen:?} is anchored on its tuples");
        }
        let late = rec.emitted[emitted_before..]
            .iter()
            .filter(|e| e.0 == LATE)
            .map(|e| match &e.1[..] {
                [Value::List(values)] => match values[..] {
                    [Value::I64(id), Value::I64(_)] => id as u32,
                    _ => panic!("late tuple values {values:?}"),
                },
                other => panic!("late tuple {other:?}"),
            })
            .collect();
        let mut acked: Vec<u32> = rec.acked[acked_before..]
            .iter()
            .map(|&key| key.wrapping_sub(1) as u32)
            .collect();
        acked.sort_unstable();
        Observed { windows, late, acked }
    }

    /// Runs the bolt over `inputs`, each with the engine steps it stands for, and checks every input's windows
    /// (contents, new, expired), late tuples and acks against the shared oracle of those steps.
    fn check_bolt_run(
        config: WindowConfig,
        event_time: bool,
        lag_ms: i64,
        inputs: &[(Input, Vec<Step>)],
    ) -> Result<(), TestCaseError> {
        let engine_steps: Vec<Step> = inputs.iter().flat_map(|(_, steps)| steps.iter().copied()).collect();
        let expected: Vec<Expected> = oracle(config, 0, &engine_steps);
        // The step (input index) at which each window fired, per the oracle, to know when tuples are acked.
        let mut fired_at: BTreeMap<Window, usize> = BTreeMap::new();
        let mut per_input: Vec<Vec<&Expected>> = Vec::new();
        let mut next = expected.iter();
        for (i, (_, steps)) in inputs.iter().enumerate() {
            let mine: Vec<&Expected> = next.by_ref().take(steps.len()).collect();
            for e in &mine {
                for (_, w, _) in &e.fired {
                    fired_at.insert(*w, i);
                }
            }
            per_input.push(mine);
        }

        let mut adapter = prepared(config, event_time, lag_ms);
        let mut rec = Recorder::default();
        let mut previous: Vec<u32> = Vec::new();
        let mut acks_due: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        let mut input_index_of_engine_step = Vec::new();
        for (i, (_, steps)) in inputs.iter().enumerate() {
            input_index_of_engine_step.extend(std::iter::repeat_n(i, steps.len()));
        }
        for (engine_index, (step, e)) in engine_steps.iter().zip(&expected).enumerate() {
            if let Step::Element { id, .. } = *step {
                let at = input_index_of_engine_step[engine_index];
                match e.added {
                    Some(Added::Late) => acks_due.entry(at).or_default().push(id),
                    _ => {
                        // Acked when its last window fires, if it ever does.
                        let last = e.joined.iter().max_by_key(|w| w.end).copied();
                        if let Some(when) = last.and_then(|w| fired_at.get(&w)) {
                            acks_due.entry(*when).or_default().push(id);
                        }
                    }
                }
            }
        }

        for (i, ((input, _), expect)) in inputs.iter().zip(&per_input).enumerate() {
            let got = observe(&mut adapter, *input, &mut rec, true);
            let mut windows = Vec::new();
            for (_, bounds, ids) in expect.iter().flat_map(|e| e.fired.iter()) {
                let new = ids.iter().copied().filter(|id| !previous.contains(id)).collect();
                let expired = previous.iter().copied().filter(|id| !ids.contains(id)).collect();
                windows.push(Seen {
                    bounds: *bounds,
                    ids: ids.clone(),
                    new,
                    expired,
                });
                previous = ids.clone();
            }
            let late: Vec<u32> = expect
                .iter()
                .zip(inputs[i].1.iter())
                .filter_map(|(e, step)| match (e.added, step) {
                    (Some(Added::Late), Step::Element { id, .. }) => Some(*id),
                    _ => None,
                })
                .collect();
            let mut acked = acks_due.remove(&i).unwrap_or_default();
            acked.sort_unstable();
            prop_assert_eq!(&got, &Observed { windows, late, acked }, "input {}: {:?}", i, input);
        }
        prop_assert!(rec.failed.is_empty() && rec.errors.is_empty(), "{:?}", rec.errors);
        let mut acked = rec.acked.clone();
        acked.sort_unstable();
        let before = acked.len();
        acked.dedup();
        prop_assert_eq!(acked.len(), before, "a tuple was acked twice");
        Ok(())
    }

    /// Event time: the shared run's elements come from upstream task 1 or 2 (by key), its watermarks become
    /// watermark events (a tick one interval later), and a flush tuple from each upstream task far ahead ends it.
    /// The engine steps of each input: its element, and at a watermark event the watermark the bolt must compute
    /// (the smallest of the two tasks' largest timestamps, minus the lag, once both sent).
    fn event_time_inputs(steps: &[Step], lag_ms: i64) -> Vec<(Input, Vec<Step>)> {
        let mut now = 0;
        let mut max: BTreeMap<u32, i64> = BTreeMap::new();
        let mut inputs = Vec::new();
        let watermark_event = |now: &mut i64, max: &BTreeMap<u32, i64>| {
            *now += INTERVAL_MS;
            let watermark = (max.len() == 2).then(|| max.values().min().unwrap() - lag_ms);
            (
                Input::Tick { now: *now },
                watermark.map(Step::Watermark).into_iter().collect(),
            )
        };
        let element = |task: u32, ts: i64, id: u32, now: i64, max: &mut BTreeMap<u32, i64>| {
            let m = max.entry(task).or_insert(ts);
            *m = (*m).max(ts);
            (
                Input::Tuple { task, ts, id, now },
                vec![Step::Element { key: 0, ts, id }],
            )
        };
        for step in steps {
            match *step {
                Step::Element { key, ts, id } => inputs.push(element(1 + u32::from(key) % 2, ts, id, now, &mut max)),
                Step::Watermark(i64::MAX) => {
                    for task in [1, 2] {
                        inputs.push(element(task, 1 << 40, 100_000 + task, now, &mut max));
                    }
                    inputs.push(watermark_event(&mut now, &max));
                }
                Step::Watermark(_) => inputs.push(watermark_event(&mut now, &max)),
            }
        }
        inputs
    }

    /// Processing time: tuples and ticks at a clock moving forward; each input first moves the watermark to now.
    fn processing_time_inputs(raw: &[(i64, bool)]) -> Vec<(Input, Vec<Step>)> {
        let mut now = 1_000;
        raw.iter()
            .enumerate()
            .map(|(i, &(advance, tick))| {
                now += advance;
                let id = i as u32;
                if tick {
                    (Input::Tick { now }, vec![Step::Watermark(now)])
                } else {
                    let task = 1 + id % 2;
                    let input = Input::Tuple { task, ts: 0, id, now };
                    (input, vec![Step::Watermark(now), Step::Element { key: 0, ts: now, id }])
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 200,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Event-time duration and count windows with a lag: the windows, new and expired tuples, late tuples and
        /// acks the user bolt sees are the oracle's.
        #[test]
        fn windowed_bolt_event_time_matches_window_oracle(
            config in prop_oneof![fixed_time_config(), count_config()],
            lag_ms in 0i64..30,
            steps in run_steps(),
        ) {
            check_bolt_run(config, true, lag_ms, &event_time_inputs(&steps, lag_ms))?;
        }

        /// Processing-time duration and count windows, fired by tuples and ticks.
        #[test]
        fn windowed_bolt_processing_time_matches_window_oracle(
            config in prop_oneof![fixed_time_config(), count_config()],
            raw in proptest::collection::vec((0i64..25, prop::bool::weighted(0.3)), 0..80),
        ) {
            check_bolt_run(config, false, 0, &processing_time_inputs(&raw))?;
        }

        /// A checkpoint (effectively-once) taken at any input and restored into a fresh adapter continues with the
        /// same windows and late tuples as a run without one.
        #[test]
        fn windowed_bolt_state_restored_from_checkpoint_continues_identically(
            config in prop_oneof![fixed_time_config(), count_config()],
            lag_ms in 0i64..30,
            steps in run_steps(),
            cut in any::<prop::sample::Index>(),
        ) {
            let inputs = event_time_inputs(&steps, lag_ms);
            let cut = cut.index(inputs.len() + 1);
            let run = |adapter: &mut WindowedBoltAdapter<Recording>, inputs: &[(Input, Vec<Step>)]| {
                let mut rec = Recorder::default();
                inputs.iter().map(|(input, _)| {
                    let o = observe(adapter, *input, &mut rec, false);
                    (o.windows, o.late)
                }).collect::<Vec<_>>()
            };
            let mut straight = prepared(config, true, lag_ms);
            let expect = run(&mut straight, &inputs);

            let mut before = prepared(config, true, lag_ms);
            let mut got = run(&mut before, &inputs[..cut]);
            let mut bytes = Vec::new();
            before.pre_save(CheckpointId(1), &mut bytes).unwrap();
            let mut restored = adapter_for(config, true).with_lag(Duration::from_millis(lag_ms as u64));
            restored.init_state(Some(&bytes)).unwrap();
            restored.prepare(&context(&[])).unwrap();
            restored.run.as_mut().unwrap().next_watermark_ms = before.run.as_ref().unwrap().next_watermark_ms;
            got.extend(run(&mut restored, &inputs[cut..]));
            prop_assert_eq!(got, expect);
        }
    }

    #[test]
    fn windowed_bolt_config_keys_alone_configure_the_windows() {
        // No builder setting: the component config's keys give a tumbling window of 2 tuples.
        let mut adapter = WindowedBoltAdapter::new(Recording::default());
        let ctx = context(&[
            (keys::WINDOW_LENGTH_COUNT, "2".into()),
            (keys::WINDOW_SLIDING_INTERVAL_COUNT, "2".into()),
        ]);
        adapter.prepare(&ctx).unwrap();
        let mut rec = Recorder::default();
        for id in 0..5 {
            feed(
                &mut adapter,
                Input::Tuple {
                    task: 1,
                    ts: 0,
                    id,
                    now: 0,
                },
                &mut rec,
            );
        }
        let seen: Vec<Vec<u32>> = adapter.bolt().seen.iter().map(|s| s.ids.clone()).collect();
        assert_eq!(seen, [vec![0, 1], vec![2, 3]]);
        assert_eq!(
            rec.acked,
            [1, 2, 3, 4],
            "tuples are acked once their window fired; 4 waits"
        );

        // The keys win over the builder.
        let mut adapter = WindowedBoltAdapter::new(Recording::default()).with_tumbling_window(Count(3));
        adapter.prepare(&ctx).unwrap();
        assert_eq!(
            adapter.run.as_ref().unwrap().settings.window,
            WindowConfig::TumblingCount { size: 2 }
        );
    }

    #[test]
    fn windowed_bolt_config_round_trips_through_heron_keys() {
        let adapter = WindowedBoltAdapter::new(Recording::default())
            .with_window(Duration::from_secs(10), Duration::from_secs(5))
            .with_timestamp_field("ts")
            .with_lag(Duration::from_millis(250))
            .with_watermark_interval(Duration::from_millis(500))
            .with_late_tuple_stream("late");
        let config = adapter.component_config();
        let pairs: Vec<(&str, &str)> = config.iter().collect();
        assert_eq!(
            pairs,
            [
                (keys::LATE_TUPLE_STREAM, "late"),
                (keys::TUPLE_TIMESTAMP_MAX_LAG_MS, "250"),
                (keys::WATERMARK_EVENT_INTERVAL_MS, "500"),
                (keys::WINDOW_LENGTH_DURATION_MS, "10000"),
                (keys::WINDOW_SLIDING_INTERVAL_DURATION_MS, "5000"),
                (api_keys::TICK_TUPLE_FREQ_MS, "500"),
            ]
        );
        let read = WindowedBoltConfig::default().overlaid_with(&config).unwrap();
        assert_eq!(&read, adapter.window_config());
        let settings = read.resolve().unwrap();
        assert_eq!(
            settings.window,
            WindowConfig::SlidingTime {
                length_ms: 10_000,
                slide_ms: 5_000
            }
        );
        assert_eq!((settings.lag_ms, settings.watermark_interval_ms), (250, 500));
        // Processing-time duration windows tick at most every 100 ms; count windows need no tick.
        let processing = WindowedBoltAdapter::new(Recording::default()).with_tumbling_window(Duration::from_secs(1));
        assert_eq!(
            processing.component_config().get(api_keys::TICK_TUPLE_FREQ_MS),
            Some("100")
        );
        let counts = WindowedBoltAdapter::new(Recording::default()).with_count_window(Count(5));
        assert_eq!(counts.component_config().get(api_keys::TICK_TUPLE_FREQ_MS), None);
        assert_eq!(
            counts.window_config().resolve().unwrap().window,
            WindowConfig::SlidingCount { size: 5, slide: 1 }
        );
    }

    #[test]
    fn windowed_bolt_refuses_configurations_that_cannot_work() {
        let refused_with =
            |adapter: WindowedBoltAdapter<Recording>, topology: &[(&str, String)], component: &[(&str, String)]| {
                let mut adapter = adapter;
                adapter
                    .prepare(&context_with(topology, component))
                    .unwrap_err()
                    .to_string()
            };
        let refused = |adapter, component: &[(&str, String)]| refused_with(adapter, &[], component);
        let bolt = || WindowedBoltAdapter::new(Recording::default());
        assert!(refused(bolt(), &[]).contains("no window length"));
        let mixed = refused(bolt().with_window(Duration::from_secs(1), Count(2)), &[]);
        assert!(mixed.contains("must slide by"), "{mixed}");
        let slide = refused(bolt().with_window(Count(2), Count(3)), &[]);
        assert!(slide.contains("slide 3 is larger than its size 2"), "{slide}");
        let bad_key = refused(bolt(), &[(keys::WINDOW_LENGTH_COUNT, "ten".into())]);
        assert!(bad_key.contains(keys::WINDOW_LENGTH_COUNT), "{bad_key}");
        // The stream is named only in config, so it was never declared.
        let late = refused(
            bolt().with_tumbling_window(Count(2)),
            &[(keys::LATE_TUPLE_STREAM, "too-late".into())],
        );
        assert!(late.contains("\"too-late\" is not declared"), "{late}");
        // At-least-once: a window longer than the message timeout, or larger than max spout pending.
        let acking =
            |extra: (&'static str, String)| vec![(api_keys::RELIABILITY_MODE, "ATLEAST_ONCE".to_string()), extra];
        let long = refused_with(
            bolt().with_tumbling_window(Duration::from_secs(20)),
            &acking((api_keys::MESSAGE_TIMEOUT_SECS, "30".into())),
            &[],
        );
        assert!(long.contains("longer than the message timeout"), "{long}");
        let large = refused_with(
            bolt().with_window(Count(60), Count(50)),
            &acking((api_keys::MAX_SPOUT_PENDING, "100".into())),
            &[],
        );
        assert!(large.contains("more than topology.max.spout.pending"), "{large}");
    }

    #[test]
    fn windowed_bolt_late_tuple_without_a_stream_is_counted_and_acked() {
        let mut adapter = WindowedBoltAdapter::new(Recording::default())
            .with_tumbling_window(Duration::from_millis(10))
            .with_timestamp_field("ts");
        adapter.prepare(&context(&[])).unwrap();
        adapter.run.as_mut().unwrap().next_watermark_ms = Some(INTERVAL_MS);
        let mut rec = Recorder::default();
        let inputs = [
            Input::Tuple {
                task: 1,
                ts: 5,
                id: 0,
                now: 0,
            },
            Input::Tuple {
                task: 2,
                ts: 25,
                id: 1,
                now: 0,
            },
            Input::Tick { now: INTERVAL_MS },
            // Watermark 5: nothing fired yet, so ts 3 is still on time...
            Input::Tuple {
                task: 1,
                ts: 3,
                id: 2,
                now: INTERVAL_MS,
            },
            Input::Tuple {
                task: 1,
                ts: 30,
                id: 3,
                now: INTERVAL_MS,
            },
            Input::Tick { now: 2 * INTERVAL_MS },
            // ... watermark 25 fired [0, 10) and [20, 30) is open: ts 4 is late, ts 22 is not.
            Input::Tuple {
                task: 2,
                ts: 4,
                id: 4,
                now: 2 * INTERVAL_MS,
            },
            Input::Tuple {
                task: 2,
                ts: 22,
                id: 5,
                now: 2 * INTERVAL_MS,
            },
        ];
        for input in inputs {
            feed(&mut adapter, input, &mut rec);
        }
        let seen: Vec<(Option<i64>, Vec<u32>)> = adapter
            .bolt()
            .seen
            .iter()
            .map(|s| (Some(s.bounds.start), s.ids.clone()))
            .collect();
        assert_eq!(seen, [(Some(0), vec![0, 2])]);
        assert_eq!(adapter.late_tuples(), 1);
        assert!(
            rec.emitted.iter().all(|e| e.0 == "default"),
            "no late stream: nothing emitted for it"
        );
        assert_eq!(rec.acked, [1, 3, 5], "the window's tuples, then the late one");
    }
}
