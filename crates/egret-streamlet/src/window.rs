//! Windows: the engine behind the Streamlet API's windowed operators (`reduce_by_key_and_window`,
//! `count_by_key_and_window`, windowed joins).
//!
//! [`KeyedWindows`] owns, per key, the aggregates of the windows that can still change, and decides when each
//! window fires. It is I/O-free: it never reads a clock, starts a thread or touches a socket. The caller passes
//! each element's timestamp and every watermark, so the bolt, the simulator and the tests drive the same code,
//! and a run restored from a checkpoint (the engine is serde state) repeats its output exactly.
//! Processing-time windows are the same engine given the processing time as the timestamp and the watermark.
//!
//! # Semantics (and why)
//! - **Time windows** are `[start, end)`. Tumbling: `ts` falls in `[floor(ts / length) * length, + length)`,
//!   with Euclidean division so that `-1` falls in `[-length, 0)`, not in `[0, length)`. Sliding: `ts` falls in
//!   every `[k * slide, k * slide + length)` that contains it. Bounds that would leave the `i64` range saturate
//!   at `i64::MIN` / `i64::MAX` rather than wrap.
//! - **Firing**: a time window or session fires once when the watermark reaches its end (`end <= watermark`),
//!   with its whole aggregate. Fired windows are pushed in order of end, then key, then start, so tests and
//!   replays see one order whatever the maps' history.
//! - **Lateness** (Flink's model): a window is *closed* once `end + allowed_lateness <= watermark`. Between
//!   firing and closing it is kept; an element for it updates it and it fires again at once, with the whole
//!   updated aggregate (downstream sees a newer result for the same window). An element joins each of its
//!   windows that is not closed and skips the closed ones; it is [`Added::Late`] only when all of them are
//!   closed. A closed window is dropped, since nothing may change it any more.
//! - **Sessions** (per key): an element at `ts` forms `[ts, ts + gap)`; sessions that overlap or touch
//!   (`start <= other.end`, as Flink's `TimeWindow::intersects`) merge, so elements at most `gap` apart share a
//!   session, and an element that bridges sessions merges them all (earlier first) with `merge`. An element is
//!   Late when its own would-be session is closed (`ts + gap + allowed_lateness <= watermark`). This depends on
//!   the element and the watermark alone, never on what else arrived, so a late-tuple stream can explain every
//!   drop; Flink instead tests the merged session, and may accept an element far behind the watermark because
//!   an open session happens to reach it.
//! - **A session is kept `gap` longer than its lateness.** An element that is not late (`ts + gap + lateness >
//!   watermark`) can still start before the end of a closed session (`ts <= end`). Kept, that session merges with
//!   it into a session that ends after `ts + gap` and so is open again; dropped, the key would get a second,
//!   overlapping session. With the extra `gap`, a key's sessions are always exactly the merge of its accepted
//!   elements. A merge that includes a fired session fires at once when the merged end is at or before the
//!   watermark, and otherwise when the watermark reaches it; either way downstream then sees a larger session
//!   that supersedes the fired one.
//! - **Count windows** number each key's elements `0, 1, 2, ...` and ignore timestamps and watermarks (they are
//!   never Late). Window `k` holds elements `[k * slide, k * slide + size)` and fires as soon as its last element
//!   arrives: tumbling every `size` elements; sliding first when `size` elements are in, then every `slide`
//!   elements, always over the last `size`. Its [`Window`] bounds are those sequence numbers.
//! - **Memory**: time windows and sessions hold one folded aggregate each (never the elements), only while open
//!   or within lateness (plus `gap` for sessions, above). A sliding count window cannot un-fold the elements
//!   that slide out, so each key keeps the partial aggregates of its panes of `gcd(size, slide)` elements, at most
//!   `size / gcd(size, slide)`, and a firing window combines its panes with `merge`. Each key of a count window
//!   also keeps its element counter for as long as the engine lives, since its windows are numbered by it.
//! - **`merge` must be associative** (sessions and count panes are combined in time order, earlier first, so
//!   it need not be commutative). It is not called for tumbling and sliding time windows, which fold directly.
//!
//! Configurations are checked by [`KeyedWindows::new`] and again when state is deserialized, so no later
//! arithmetic divides by zero; nothing here panics on any timestamp, watermark or value.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// The most windows one element of a sliding time window falls in (`length / slide`, rounded up) and the most
/// pane aggregates a sliding count window keeps per key (`size / gcd(size, slide)`). Finer configurations are
/// refused: each element would be folded, or each firing merged, that many times.
pub const MAX_PANES: u64 = 10_000;

/// How elements are grouped into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowConfig {
    /// Every `size` elements of a key.
    TumblingCount { size: u64 },
    /// A window of `size` elements every `slide` elements (per key).
    SlidingCount { size: u64, slide: u64 },
    /// Windows `[k * length, (k + 1) * length)`.
    TumblingTime { length_ms: i64 },
    /// Windows `[k * slide, k * slide + length)`.
    SlidingTime { length_ms: i64, slide_ms: i64 },
    /// Per key: elements closer than `gap` are one session (exactly `gap` apart too: their `[ts, ts + gap)`
    /// touch, and touching sessions merge, as in Flink).
    Session { gap_ms: i64 },
}

/// A window's bounds: time windows `[start_ms, end_ms)`; count windows: the per-key sequence numbers of their
/// first and one past their last element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// What `add` did with an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Accepted,
    /// Every window it belongs to was already closed (end + allowed lateness <= watermark).
    Late,
}

/// A window configuration that cannot work; each names the offending values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("count window {field} must be at least 1")]
    ZeroCount { field: &'static str },
    #[error("time window {field} must be positive, got {value_ms} ms")]
    NonPositiveDuration { field: &'static str, value_ms: i64 },
    #[error("count window slide {slide} is larger than its size {size}")]
    SlideExceedsSize { size: u64, slide: u64 },
    #[error("time window slide {slide_ms} ms is longer than its length {length_ms} ms")]
    SlideExceedsLength { length_ms: i64, slide_ms: i64 },
    #[error("allowed lateness must not be negative, got {allowed_lateness_ms} ms")]
    NegativeLateness { allowed_lateness_ms: i64 },
    #[error("window {config:?} needs {panes} panes, more than the {max} allowed")]
    TooManyPanes { config: WindowConfig, panes: u64, max: u64 },
}

/// A checked configuration. `KeyedWindows::new` and deserialization both build it with `Settings::new`, so
/// state restored from bytes cannot smuggle in a zero slide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(WindowConfig, i64)", into = "(WindowConfig, i64)")]
struct Settings {
    config: WindowConfig,
    allowed_lateness_ms: i64,
}

impl Settings {
    fn new(config: WindowConfig, allowed_lateness_ms: i64) -> Result<Self, WindowError> {
        if allowed_lateness_ms < 0 {
            return Err(WindowError::NegativeLateness { allowed_lateness_ms });
        }
        let panes = match config {
            WindowConfig::TumblingCount { size } => {
                positive_count("size", size)?;
                1
            }
            WindowConfig::SlidingCount { size, slide } => {
                positive_count("size", size)?;
                positive_count("slide", slide)?;
                if slide > size {
                    return Err(WindowError::SlideExceedsSize { size, slide });
                }
                size / gcd(size, slide)
            }
            WindowConfig::TumblingTime { length_ms } => {
                positive_duration("length", length_ms)?;
                1
            }
            WindowConfig::SlidingTime { length_ms, slide_ms } => {
                positive_duration("length", length_ms)?;
                positive_duration("slide", slide_ms)?;
                if slide_ms > length_ms {
                    return Err(WindowError::SlideExceedsLength { length_ms, slide_ms });
                }
                // Both are positive here, so the casts are exact and the division cannot overflow.
                (length_ms as u64 - 1) / slide_ms as u64 + 1
            }
            WindowConfig::Session { gap_ms } => {
                positive_duration("gap", gap_ms)?;
                1
            }
        };
        if panes > MAX_PANES {
            return Err(WindowError::TooManyPanes {
                config,
                panes,
                max: MAX_PANES,
            });
        }
        Ok(Settings {
            config,
            allowed_lateness_ms,
        })
    }

    /// How long after its end a fired window is kept: its lateness, plus `gap` for sessions (see the module doc).
    fn retention_ms(&self) -> i64 {
        match self.config {
            WindowConfig::Session { gap_ms } => self.allowed_lateness_ms.saturating_add(gap_ms),
            _ => self.allowed_lateness_ms,
        }
    }
}

impl TryFrom<(WindowConfig, i64)> for Settings {
    type Error = WindowError;

    fn try_from((config, allowed_lateness_ms): (WindowConfig, i64)) -> Result<Self, WindowError> {
        Settings::new(config, allowed_lateness_ms)
    }
}

impl From<Settings> for (WindowConfig, i64) {
    fn from(settings: Settings) -> Self {
        (settings.config, settings.allowed_lateness_ms)
    }
}

fn positive_count(field: &'static str, value: u64) -> Result<(), WindowError> {
    if value == 0 {
        Err(WindowError::ZeroCount { field })
    } else {
        Ok(())
    }
}

fn positive_duration(field: &'static str, value_ms: i64) -> Result<(), WindowError> {
    if value_ms <= 0 {
        Err(WindowError::NonPositiveDuration { field, value_ms })
    } else {
        Ok(())
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The time windows `[k * slide, k * slide + length)` that contain `ts`, in order of start (and so of end).
/// The arithmetic is in `i128`, where it cannot overflow, and the bounds saturate into `i64`.
fn time_windows(ts: i64, length_ms: i64, slide_ms: i64) -> impl Iterator<Item = Window> {
    let (ts, length, slide) = (i128::from(ts), i128::from(length_ms), i128::from(slide_ms));
    // k * slide <= ts < k * slide + length  <=>  (ts - length) / slide < k <= ts / slide, dividing with floor.
    let first = (ts - length).div_euclid(slide) + 1;
    let last = ts.div_euclid(slide);
    (first..=last).map(move |k| Window {
        start: saturate(k * slide),
        end: saturate(k * slide + length),
    })
}

fn saturate(x: i128) -> i64 {
    i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX })
}

fn seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One key's count windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CountKey<A> {
    /// The elements of this key so far, which is the sequence number of the next one.
    seen: u64,
    /// The aggregates of the complete panes the next window still needs, oldest first.
    panes: VecDeque<A>,
    /// The aggregate of the incomplete pane, if it has elements.
    partial: Option<A>,
}

impl<A> CountKey<A> {
    /// Windows that have elements and have not fired: `k * slide < seen < k * slide + size`.
    fn open_windows(&self, size: u64, slide: u64) -> u64 {
        if self.seen == 0 {
            return 0;
        }
        let last_started = (self.seen - 1) / slide;
        let first_unfired = if self.seen >= size {
            (self.seen - size) / slide + 1
        } else {
            0
        };
        (last_started + 1).saturating_sub(first_unfired)
    }
}

/// Per-key windows of aggregates `A`. Serialize/Deserialize (it is checkpointed operator state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedWindows<K: Ord, A> {
    settings: Settings,
    watermark: Option<i64>,
    /// Time windows and sessions that have not fired, by `(end, key, start)`: the order they fire in.
    pending: BTreeMap<(i64, K, i64), A>,
    /// Time windows and sessions that fired and are kept for late elements, by `(end, key, start)`, which is
    /// also the order they are dropped in.
    kept: BTreeMap<(i64, K, i64), A>,
    /// Sessions only: each key's sessions, start to end, to find the ones an element touches. A key's sessions
    /// never overlap or touch, so ordered by start they are ordered by end too.
    sessions: BTreeMap<K, BTreeMap<i64, i64>>,
    /// Count windows only.
    counts: BTreeMap<K, CountKey<A>>,
}

impl<K: Ord + Clone, A: Clone> KeyedWindows<K, A> {
    /// Refuses sizes, slides, lengths and gaps `<= 0`, a slide larger than its window, a negative lateness, and
    /// configurations finer than [`MAX_PANES`].
    pub fn new(config: WindowConfig, allowed_lateness_ms: i64) -> Result<Self, WindowError> {
        Ok(KeyedWindows {
            settings: Settings::new(config, allowed_lateness_ms)?,
            watermark: None,
            pending: BTreeMap::new(),
            kept: BTreeMap::new(),
            sessions: BTreeMap::new(),
            counts: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> WindowConfig {
        self.settings.config
    }

    pub fn allowed_lateness_ms(&self) -> i64 {
        self.settings.allowed_lateness_ms
    }

    /// Adds an element with timestamp `ts` (event time, or the processing time for processing-time windows) to
    /// every window of its key it belongs to: new windows start from `init()`, and `fold(&mut aggregate,
    /// &value)` adds the element. Count windows fire as soon as they fill: their results are pushed to `fired`.
    /// Sessions merge: an element that bridges two sessions of a key merges them with `merge(&mut first,
    /// second)`. A window the watermark already passed (within the lateness) fires again at once.
    #[expect(clippy::too_many_arguments, reason = "the Streamlet operators' agreed signature")]
    pub fn add<V>(
        &mut self,
        key: K,
        ts: i64,
        value: &V,
        init: impl Fn() -> A,
        fold: impl Fn(&mut A, &V),
        merge: impl Fn(&mut A, A),
        fired: &mut Vec<(K, Window, A)>,
    ) -> Added {
        let fold_in = |aggregate: &mut A| fold(aggregate, value);
        match self.settings.config {
            WindowConfig::TumblingCount { size } => {
                self.add_count((size, size), key, init, fold_in, merge, fired);
                Added::Accepted
            }
            WindowConfig::SlidingCount { size, slide } => {
                self.add_count((size, slide), key, init, fold_in, merge, fired);
                Added::Accepted
            }
            WindowConfig::TumblingTime { length_ms } => {
                self.add_time((length_ms, length_ms), key, ts, init, fold_in, fired)
            }
            WindowConfig::SlidingTime { length_ms, slide_ms } => {
                self.add_time((length_ms, slide_ms), key, ts, init, fold_in, fired)
            }
            WindowConfig::Session { gap_ms } => match self.add_session(gap_ms, &key, ts, init, fold_in, merge) {
                Some((session, aggregate)) => {
                    self.store(key, session, aggregate, fired);
                    Added::Accepted
                }
                None => Added::Late,
            },
        }
    }

    /// The watermark moved to `watermark` (it never goes back; a smaller value is ignored): every time window
    /// (or session) with `end <= watermark` fires once (pushed to `fired`, in order of end, then key, then
    /// start), and is then kept until `end + allowed_lateness <= watermark` so that a late element within the
    /// lateness updates it and fires it again; after that it is dropped. Count windows ignore watermarks.
    pub fn advance(&mut self, watermark: i64, fired: &mut Vec<(K, Window, A)>) {
        if self.watermark.is_some_and(|current| watermark <= current) {
            return;
        }
        self.watermark = Some(watermark);
        let retention_ms = self.settings.retention_ms();
        // `pending` is ordered by (end, key, start), so popping its front fires in the documented order.
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let ((end, key, start), aggregate) = entry.remove_entry();
            let window = Window { start, end };
            if end.saturating_add(retention_ms) <= watermark {
                // Already past its lateness too: nothing can update it, so it leaves without a copy.
                self.forget_session(&key, start);
                fired.push((key, window, aggregate));
            } else {
                fired.push((key.clone(), window, aggregate.clone()));
                self.kept.insert((end, key, start), aggregate);
            }
        }
        while let Some(entry) = self.kept.first_entry() {
            if entry.key().0.saturating_add(retention_ms) > watermark {
                break;
            }
            let ((_, key, start), _) = entry.remove_entry();
            self.forget_session(&key, start);
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The window of `key`, among those an element at `ts` added now would join, that fires last: the one that
    /// must have fired before nothing can hold the element any more (the windowed bolt acks its tuples then).
    /// `None` when it would join none (a late element), and for sessions, which later elements can extend.
    pub fn last_window_of(&self, key: &K, ts: i64) -> Option<Window> {
        let (size, slide) = match self.settings.config {
            WindowConfig::TumblingTime { length_ms } => {
                return time_windows(ts, length_ms, length_ms)
                    .last()
                    .filter(|w| !self.is_closed(w.end));
            }
            WindowConfig::SlidingTime { length_ms, slide_ms } => {
                return time_windows(ts, length_ms, slide_ms)
                    .last()
                    .filter(|w| !self.is_closed(w.end));
            }
            WindowConfig::Session { .. } => return None,
            WindowConfig::TumblingCount { size } => (size, size),
            WindowConfig::SlidingCount { size, slide } => (size, slide),
        };
        // The next element's sequence number; its last window starts at the last multiple of slide by it.
        let next = self.counts.get(key).map_or(0, |state| state.seen);
        let start = next - next % slide;
        Some(Window {
            start: seq(start),
            end: seq(start.saturating_add(size)),
        })
    }

    /// Whether `window` of `key` has fired: a time window or session once the watermark reached its end, a count
    /// window once its last element arrived.
    pub fn window_has_fired(&self, key: &K, window: Window) -> bool {
        match self.settings.config {
            WindowConfig::TumblingCount { .. } | WindowConfig::SlidingCount { .. } => {
                self.counts.get(key).is_some_and(|state| seq(state.seen) >= window.end)
            }
            _ => self.has_fired(window.end),
        }
    }

    /// Windows held: time windows and sessions not yet dropped, or count windows that have elements and have
    /// not fired. (Count windows also keep one counter per key ever seen, which this does not count.)
    pub fn open_windows(&self) -> usize {
        match self.settings.config {
            WindowConfig::TumblingCount { size } => self.open_count_windows(size, size),
            WindowConfig::SlidingCount { size, slide } => self.open_count_windows(size, slide),
            _ => self.pending.len() + self.kept.len(),
        }
    }

    /// No window is held (see [`Self::open_windows`]).
    pub fn is_empty(&self) -> bool {
        self.open_windows() == 0
    }

    fn add_time(
        &mut self,
        (length_ms, slide_ms): (i64, i64),
        key: K,
        ts: i64,
        init: impl Fn() -> A,
        fold_in: impl Fn(&mut A),
        fired: &mut Vec<(K, Window, A)>,
    ) -> Added {
        let mut added = Added::Late;
        for window in time_windows(ts, length_ms, slide_ms) {
            if self.is_closed(window.end) {
                continue;
            }
            added = Added::Accepted;
            let mut aggregate = self.take(&key, window).unwrap_or_else(&init);
            fold_in(&mut aggregate);
            self.store(key.clone(), window, aggregate, fired);
        }
        added
    }

    /// Merges the element into its key's sessions; returns the session that now holds it, taken out of
    /// `pending` and `kept` (but already in the key's index) for the caller to store, or None when it is late.
    fn add_session(
        &mut self,
        gap_ms: i64,
        key: &K,
        ts: i64,
        init: impl Fn() -> A,
        fold_in: impl Fn(&mut A),
        merge: impl Fn(&mut A, A),
    ) -> Option<(Window, A)> {
        let own = Window {
            start: ts,
            end: ts.saturating_add(gap_ms),
        };
        if self.is_closed(own.end) {
            return None;
        }
        let index = self.sessions.entry(key.clone()).or_default();
        // The sessions it touches (start <= own.end and end >= own.start) are consecutive, and end where a
        // session, walking back from the last one starting by own.end, ends before own.start.
        let mut touched: Vec<Window> = index
            .range(..=own.end)
            .rev()
            .map(|(&start, &end)| Window { start, end })
            .take_while(|session| session.end >= own.start)
            .collect();
        touched.reverse();
        let mut merged = own;
        for session in &touched {
            index.remove(&session.start);
            merged = Window {
                start: merged.start.min(session.start),
                end: merged.end.max(session.end),
            };
        }
        index.insert(merged.start, merged.end);
        let mut aggregate: Option<A> = None;
        for session in touched {
            if let Some(next) = self.take(key, session) {
                match aggregate.as_mut() {
                    Some(first) => merge(first, next),
                    None => aggregate = Some(next),
                }
            }
        }
        let mut aggregate = aggregate.unwrap_or_else(&init);
        fold_in(&mut aggregate);
        Some((merged, aggregate))
    }

    fn add_count(
        &mut self,
        (size, slide): (u64, u64),
        key: K,
        init: impl Fn() -> A,
        fold_in: impl Fn(&mut A),
        merge: impl Fn(&mut A, A),
        fired: &mut Vec<(K, Window, A)>,
    ) {
        // Window starts (multiples of slide) and ends (size past them) all fall on pane boundaries.
        let pane = gcd(size, slide);
        let state = self.counts.entry(key.clone()).or_insert_with(|| CountKey {
            seen: 0,
            panes: VecDeque::new(),
            partial: None,
        });
        let mut partial = state.partial.take().unwrap_or_else(&init);
        fold_in(&mut partial);
        state.seen = state.seen.saturating_add(1);
        if state.seen.is_multiple_of(pane) {
            state.panes.push_back(partial);
        } else {
            state.partial = Some(partial);
        }
        if state.seen < size || !(state.seen - size).is_multiple_of(slide) {
            return;
        }
        // Window [seen - size, seen) just filled. Its panes are the last size / pane held: exactly all of them,
        // since each firing drops the panes the next window does not need; counting from the back keeps a
        // damaged restored state from mixing in older panes.
        let needed = usize::try_from(size / pane).unwrap_or(usize::MAX);
        let older = state.panes.len().saturating_sub(needed);
        let mut panes = state.panes.iter().skip(older).cloned();
        if let Some(mut aggregate) = panes.next() {
            for next in panes {
                merge(&mut aggregate, next);
            }
            let window = Window {
                start: seq(state.seen - size),
                end: seq(state.seen),
            };
            fired.push((key, window, aggregate));
        }
        // The next window starts `slide` elements later.
        let drop = older.saturating_add(usize::try_from(slide / pane).unwrap_or(usize::MAX));
        state.panes.drain(..drop.min(state.panes.len()));
    }

    fn open_count_windows(&self, size: u64, slide: u64) -> usize {
        let open: u64 = self
            .counts
            .values()
            .map(|state| state.open_windows(size, slide))
            .fold(0, u64::saturating_add);
        usize::try_from(open).unwrap_or(usize::MAX)
    }

    /// The watermark passed the window's end: it has fired.
    fn has_fired(&self, end: i64) -> bool {
        self.watermark.is_some_and(|watermark| end <= watermark)
    }

    /// The watermark passed the window's end and its lateness: no element may join it.
    fn is_closed(&self, end: i64) -> bool {
        self.watermark
            .is_some_and(|watermark| end.saturating_add(self.settings.allowed_lateness_ms) <= watermark)
    }

    /// Takes a window's aggregate out of `pending` or `kept`.
    fn take(&mut self, key: &K, window: Window) -> Option<A> {
        let id = (window.end, key.clone(), window.start);
        self.pending.remove(&id).or_else(|| self.kept.remove(&id))
    }

    /// Puts back a window that just changed: one the watermark already passed fires again now and is kept for
    /// its lateness; any other waits in `pending` for the watermark.
    fn store(&mut self, key: K, window: Window, aggregate: A, fired: &mut Vec<(K, Window, A)>) {
        let id = (window.end, key, window.start);
        if self.has_fired(window.end) {
            fired.push((id.1.clone(), window, aggregate.clone()));
            self.kept.insert(id, aggregate);
        } else {
            self.pending.insert(id, aggregate);
        }
    }

    fn forget_session(&mut self, key: &K, start: i64) {
        if let Some(index) = self.sessions.get_mut(key) {
            index.remove(&start);
            if index.is_empty() {
                self.sessions.remove(key);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    // ---- Hand-computed runs -------------------------------------------------------------------------------

    /// Runs `steps` ("a@5" adds an element of key `a` at ts 5, whose value is 5; "wm 10" advances the watermark)
    /// and returns a transcript: each step as given (elements refused as late get " late"), followed by the
    /// windows it fired as "-> a [0,10) [1, 5]" (key, window, the values folded in).
    fn transcript(config: WindowConfig, lateness: i64, steps: &[&str]) -> Vec<String> {
        let mut windows = KeyedWindows::<char, Vec<i64>>::new(config, lateness).unwrap();
        let mut out = Vec::new();
        for step in steps {
            let mut fired = Vec::new();
            if let Some(watermark) = step.strip_prefix("wm ") {
                windows.advance(watermark.parse().unwrap(), &mut fired);
                out.push(step.to_string());
            } else {
                let (key, ts) = step.split_once('@').unwrap();
                let (key, ts) = (key.chars().next().unwrap(), ts.parse::<i64>().unwrap());
                let added = windows.add(
                    key,
                    ts,
                    &ts,
                    Vec::new,
                    |a, v| a.push(*v),
                    |a, b| a.extend(b),
                    &mut fired,
                );
                out.push(if added == Added::Late {
                    format!("{step} late")
                } else {
                    step.to_string()
                });
            }
            for (key, window, values) in fired {
                out.push(format!("-> {key} [{},{}) {values:?}", window.start, window.end));
            }
        }
        out
    }

    fn check(config: WindowConfig, lateness: i64, steps: &[&str], expect: &[&str]) {
        assert_eq!(
            transcript(config, lateness, steps),
            expect,
            "{config:?}, lateness {lateness}"
        );
    }

    #[test]
    fn tumbling_time_window_fires_at_watermark_with_negative_timestamps() {
        check(
            WindowConfig::TumblingTime { length_ms: 10 },
            0,
            &[
                "a@-15",
                "a@-1",
                "b@-10",
                "a@0",
                "a@9",
                "a@10",
                "wm -10",
                "wm 0",
                "wm 5",
                "wm 10",
                "wm 9223372036854775807",
            ],
            &[
                "a@-15",
                "a@-1",
                "b@-10",
                "a@0",
                "a@9",
                "a@10",
                "wm -10",
                "-> a [-20,-10) [-15]",
                // Same end: by key.
                "wm 0",
                "-> a [-10,0) [-1]",
                "-> b [-10,0) [-10]",
                "wm 5",
                "wm 10",
                "-> a [0,10) [0, 9]",
                "wm 9223372036854775807",
                "-> a [10,20) [10]",
            ],
        );
    }

    #[test]
    fn sliding_time_window_assigns_every_overlapping_window() {
        check(
            WindowConfig::SlidingTime {
                length_ms: 10,
                slide_ms: 5,
            },
            0,
            &["a@7", "a@-3", "b@5", "wm 5", "wm 15"],
            &[
                "a@7",
                "a@-3",
                "b@5",
                "wm 5",
                "-> a [-10,0) [-3]",
                "-> a [-5,5) [-3]",
                "wm 15",
                "-> a [0,10) [7]",
                "-> b [0,10) [5]",
                "-> a [5,15) [7]",
                "-> b [5,15) [5]",
            ],
        );
    }

    #[test]
    fn time_window_late_element_within_lateness_refires_and_beyond_is_late() {
        check(
            WindowConfig::TumblingTime { length_ms: 10 },
            5,
            &["a@1", "wm 10", "a@2", "b@5", "wm 14", "a@3", "wm 15", "a@4", "a@15"],
            &[
                "a@1",
                "wm 10",
                "-> a [0,10) [1]",
                // Within lateness: the window fires again at once, with everything in it.
                "a@2",
                "-> a [0,10) [1, 2]",
                // A window that had no element yet fires at once too.
                "b@5",
                "-> b [0,10) [5]",
                "wm 14",
                "a@3",
                "-> a [0,10) [1, 2, 3]",
                // 10 + 5 <= 15: closed and dropped.
                "wm 15",
                "a@4 late",
                "a@15",
            ],
        );
    }

    #[test]
    fn sliding_time_window_element_skips_closed_windows_only() {
        // At watermark 10 with no lateness, [0,10) is closed but [5,15) is open: 7 joins [5,15) alone.
        check(
            WindowConfig::SlidingTime {
                length_ms: 10,
                slide_ms: 5,
            },
            0,
            &["a@3", "wm 10", "a@7", "a@4", "wm 20"],
            &[
                "a@3",
                "wm 10",
                "-> a [-5,5) [3]",
                "-> a [0,10) [3]",
                "a@7",
                "a@4 late",
                "wm 20",
                "-> a [5,15) [7]",
            ],
        );
    }

    #[test]
    fn session_window_merges_sessions_a_bridging_element_touches() {
        check(
            WindowConfig::Session { gap_ms: 10 },
            0,
            &["a@0", "a@20", "b@5", "a@10", "wm 29", "wm 30"],
            &[
                "a@0",
                "a@20",
                "b@5",
                // [10,20) touches [0,10) and [20,30): one session, merged earlier first, then the element.
                "a@10",
                "wm 29",
                "-> b [5,15) [5]",
                "wm 30",
                "-> a [0,30) [0, 20, 10]",
            ],
        );
    }

    #[test]
    fn session_window_lateness_and_merging_a_fired_session() {
        check(
            WindowConfig::Session { gap_ms: 10 },
            5,
            &[
                "a@0", "wm 10", "a@5", "wm 15", "a@2", "wm 21", "a@6", "a@7", "wm 100", "a@80", "a@84",
            ],
            &[
                "a@0",
                "wm 10",
                "-> a [0,10) [0]",
                // Merged with the fired session: [0,15) ends after the watermark, so it waits for it.
                "a@5",
                "wm 15",
                "-> a [0,15) [0, 5]",
                // Within lateness: merged session [0,15) fires again at once.
                "a@2",
                "-> a [0,15) [0, 5, 2]",
                // 6 + 10 + 5 <= 21: its own session is closed.
                "wm 21",
                "a@6 late",
                // 7 + 10 + 5 > 21: accepted; [0,15) is closed (15 + 5 <= 21) but still kept, so they merge.
                "a@7",
                "-> a [0,17) [0, 5, 2, 7]",
                "wm 100",
                "a@80 late",
                "a@84 late",
            ],
        );
    }

    #[test]
    fn session_window_kept_gap_longer_so_sessions_never_overlap() {
        check(
            WindowConfig::Session { gap_ms: 10 },
            0,
            &[
                "a@100", "wm 110", "a@105", "wm 115", "a@110", "wm 125", "a@114", "a@116", "wm 126",
            ],
            &[
                "a@100",
                "wm 110",
                "-> a [100,110) [100]",
                // [100,110) is closed, yet 105's own session [105,115) is not: they merge rather than overlap.
                "a@105",
                "wm 115",
                "-> a [100,115) [100, 105]",
                // The merged [100,120) ends after the watermark: it waits for it.
                "a@110",
                "wm 125",
                "-> a [100,120) [100, 105, 110]",
                "a@114 late",
                // [100,120) is closed at 125 but kept until 130, and [116,126) touches it.
                "a@116",
                "wm 126",
                "-> a [100,126) [100, 105, 110, 116]",
            ],
        );
    }

    #[test]
    fn tumbling_count_window_fires_every_size_elements_per_key() {
        check(
            WindowConfig::TumblingCount { size: 3 },
            0,
            &[
                "a@1",
                "a@2",
                "b@1",
                "wm 100",
                "a@3",
                "a@-4",
                "b@2",
                "wm 9223372036854775807",
                "a@-5",
                "a@6",
            ],
            &[
                "a@1",
                "a@2",
                "b@1",
                "wm 100",
                "a@3",
                "-> a [0,3) [1, 2, 3]",
                // Count windows ignore the watermark and are never late.
                "a@-4",
                "b@2",
                "wm 9223372036854775807",
                "a@-5",
                "a@6",
                "-> a [3,6) [-4, -5, 6]",
            ],
        );
    }

    #[test]
    fn sliding_count_window_fires_every_slide_over_the_last_size() {
        let steps = ["a@1", "a@2", "a@3", "a@4", "a@5", "a@6", "a@7", "a@8"];
        check(
            WindowConfig::SlidingCount { size: 4, slide: 2 },
            0,
            &steps,
            &[
                "a@1",
                "a@2",
                "a@3",
                "a@4",
                "-> a [0,4) [1, 2, 3, 4]",
                "a@5",
                "a@6",
                "-> a [2,6) [3, 4, 5, 6]",
                "a@7",
                "a@8",
                "-> a [4,8) [5, 6, 7, 8]",
            ],
        );
        // gcd(3, 2) = 1: panes of one element, merged in order.
        check(
            WindowConfig::SlidingCount { size: 3, slide: 2 },
            0,
            &steps,
            &[
                "a@1",
                "a@2",
                "a@3",
                "-> a [0,3) [1, 2, 3]",
                "a@4",
                "a@5",
                "-> a [2,5) [3, 4, 5]",
                "a@6",
                "a@7",
                "-> a [4,7) [5, 6, 7]",
                "a@8",
            ],
        );
    }

    #[test]
    fn window_config_refused_when_it_cannot_work() {
        use WindowConfig::*;
        let cases = [
            (TumblingCount { size: 0 }, 0, WindowError::ZeroCount { field: "size" }),
            (
                SlidingCount { size: 3, slide: 0 },
                0,
                WindowError::ZeroCount { field: "slide" },
            ),
            (
                SlidingCount { size: 2, slide: 3 },
                0,
                WindowError::SlideExceedsSize { size: 2, slide: 3 },
            ),
            (
                TumblingTime { length_ms: 0 },
                0,
                WindowError::NonPositiveDuration {
                    field: "length",
                    value_ms: 0,
                },
            ),
            (
                SlidingTime {
                    length_ms: 10,
                    slide_ms: -1,
                },
                0,
                WindowError::NonPositiveDuration {
                    field: "slide",
                    value_ms: -1,
                },
            ),
            (
                SlidingTime {
                    length_ms: 5,
                    slide_ms: 6,
                },
                0,
                WindowError::SlideExceedsLength {
                    length_ms: 5,
                    slide_ms: 6,
                },
            ),
            (
                Session { gap_ms: i64::MIN },
                0,
                WindowError::NonPositiveDuration {
                    field: "gap",
                    value_ms: i64::MIN,
                },
            ),
            (
                Session { gap_ms: 1 },
                -1,
                WindowError::NegativeLateness {
                    allowed_lateness_ms: -1,
                },
            ),
            (
                SlidingTime {
                    length_ms: i64::MAX,
                    slide_ms: 1,
                },
                0,
                WindowError::TooManyPanes {
                    config: SlidingTime {
                        length_ms: i64::MAX,
                        slide_ms: 1,
                    },
                    panes: i64::MAX as u64,
                    max: MAX_PANES,
                },
            ),
            (
                SlidingCount {
                    size: 10_001,
                    slide: 10_000,
                },
                0,
                WindowError::TooManyPanes {
                    config: SlidingCount {
                        size: 10_001,
                        slide: 10_000,
                    },
                    panes: 10_001,
                    max: MAX_PANES,
                },
            ),
        ];
        for (config, lateness, expect) in cases {
            assert_eq!(
                KeyedWindows::<u8, u64>::new(config, lateness).err(),
                Some(expect),
                "{config:?}"
            );
        }
        for config in [
            TumblingCount { size: u64::MAX },
            SlidingCount { size: 10_000, slide: 1 },
            SlidingTime {
                length_ms: i64::MAX,
                slide_ms: i64::MAX / 2 + 1,
            },
            Session { gap_ms: i64::MAX },
        ] {
            assert!(KeyedWindows::<u8, u64>::new(config, i64::MAX).is_ok(), "{config:?}");
        }
    }

    #[test]
    fn window_state_with_a_bad_config_is_refused_when_restored() {
        let good = KeyedWindows::<u8, u64>::new(
            WindowConfig::SlidingTime {
                length_ms: 10,
                slide_ms: 5,
            },
            0,
        )
        .unwrap();
        let mut bad = good.clone();
        // Struct literal, not `new`: the only way to hold a zero slide, as corrupt bytes might.
        bad.settings = Settings {
            config: WindowConfig::SlidingTime {
                length_ms: 10,
                slide_ms: 0,
            },
            allowed_lateness_ms: 0,
        };
        let bytes = postcard::to_stdvec(&bad).unwrap();
        assert!(postcard::from_bytes::<KeyedWindows<u8, u64>>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<KeyedWindows<u8, u64>>(&bytes).unwrap(), good);
        // Random bytes: an error or some state, never a panic.
        for len in 0..64u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(len)).collect();
            let _ = postcard::from_bytes::<KeyedWindows<u8, u64>>(&bytes);
        }
    }

    #[test]
    fn window_bounds_saturate_at_extreme_timestamps() {
        let (min, max) = (i64::MIN, i64::MAX);
        check(
            WindowConfig::TumblingTime { length_ms: 10 },
            max,
            &[
                &format!("a@{min}"),
                &format!("a@{max}"),
                &format!("wm {min}"),
                &format!("wm {max}"),
                "a@0",
            ],
            &[
                &format!("a@{min}"),
                &format!("a@{max}"),
                &format!("wm {min}"),
                &format!("wm {max}"),
                &format!("-> a [{min},{}) [{min}]", min + 8),
                &format!("-> a [{},{max}) [{max}]", max - 7),
                "a@0 late",
            ],
        );
        check(
            WindowConfig::SlidingTime {
                length_ms: max,
                slide_ms: max / 2 + 1,
            },
            0,
            &[&format!("a@{min}"), &format!("a@{max}"), &format!("wm {max}")],
            &[
                &format!("a@{min}"),
                &format!("a@{max}"),
                &format!("wm {max}"),
                // k = -3 and k = -2: both starts clamp to i64::MIN, the ends tell the windows apart.
                &format!("-> a [{min},{}) [{min}]", -(max / 2 + 1) - 1),
                &format!("-> a [{min},-1) [{min}]"),
                &format!("-> a [{},{max}) [{max}]", max / 2 + 1),
            ],
        );
        check(
            WindowConfig::Session { gap_ms: max },
            max,
            &[
                &format!("a@{min}"),
                "a@1",
                &format!("a@{max}"),
                &format!("wm {}", max - 1),
                &format!("wm {max}"),
            ],
            &[
                &format!("a@{min}"),
                "a@1",
                &format!("a@{max}"),
                &format!("wm {}", max - 1),
                "-> a [-9223372036854775808,-1) [-9223372036854775808]",
                &format!("wm {max}"),
                &format!("-> a [1,{max}) [1, {max}]"),
            ],
        );
    }

    #[test]
    fn window_watermark_never_goes_back_and_open_windows_are_counted() {
        let mut windows = KeyedWindows::<u8, u64>::new(WindowConfig::TumblingTime { length_ms: 10 }, 10).unwrap();
        let mut fired = Vec::new();
        assert_eq!(windows.watermark(), None);
        assert!(windows.is_empty());
        let count = |windows: &mut KeyedWindows<u8, u64>, key, ts, fired: &mut Vec<_>| {
            windows.add(key, ts, &(), || 0, |n, _| *n += 1, |n, m| *n += m, fired)
        };
        count(&mut windows, 1, 5, &mut fired);
        count(&mut windows, 2, 15, &mut fired);
        assert_eq!(windows.open_windows(), 2);
        windows.advance(10, &mut fired);
        windows.advance(5, &mut fired);
        assert_eq!(windows.watermark(), Some(10));
        assert_eq!(fired, [(1, Window { start: 0, end: 10 }, 1)]);
        // Fired but kept for lateness: still held.
        assert_eq!(windows.open_windows(), 2);
        windows.advance(20, &mut fired);
        assert_eq!(windows.open_windows(), 1);
        windows.advance(30, &mut fired);
        assert!(windows.is_empty());

        let mut windows = KeyedWindows::<u8, u64>::new(WindowConfig::SlidingCount { size: 4, slide: 2 }, 0).unwrap();
        let expect_open = [1, 1, 2, 1, 2, 1, 2];
        for (n, expect) in expect_open.into_iter().enumerate() {
            count(&mut windows, 7, n as i64, &mut fired);
            assert_eq!(windows.open_windows(), expect, "after {} elements", n + 1);
        }
    }

    // ---- Properties against brute-force oracles (shared with the windowed bolt: `super::testing`) ---------

    use super::testing::{Fired, Step, count_config, fixed_time_config, oracle, oracle_closed, run_steps, time_config};

    /// What one step did: for an element, the watermark it arrived at and whether it was accepted; the windows
    /// it fired; the watermark after it.
    #[derive(Debug, Clone, PartialEq)]
    struct Outcome {
        arrived_at: Option<i64>,
        added: Option<Added>,
        fired: Fired,
        watermark_after: Option<i64>,
    }

    /// Runs `steps` on `windows` with element ids as values, collected into lists.
    fn drive(windows: &mut KeyedWindows<u8, Vec<u32>>, steps: &[Step]) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for step in steps {
            let mut fired = Vec::new();
            let arrived_at = windows.watermark();
            let added = match *step {
                Step::Element { key, ts, id } => Some(windows.add(
                    key,
                    ts,
                    &id,
                    Vec::new,
                    |a, v| a.push(*v),
                    |a, b| a.extend(b),
                    &mut fired,
                )),
                Step::Watermark(watermark) => {
                    windows.advance(watermark, &mut fired);
                    None
                }
            };
            outcomes.push(Outcome {
                arrived_at,
                added,
                fired,
                watermark_after: windows.watermark(),
            });
        }
        outcomes
    }

    fn sorted(mut ids: Vec<u32>) -> Vec<u32> {
        ids.sort_unstable();
        ids
    }

    /// Checks a tumbling, sliding or count run step by step against the shared oracle: what each element was
    /// (accepted or late) and which windows each step fired, with what inside, in which order.
    fn check_run_against_oracle(config: WindowConfig, lateness: i64, steps: &[Step]) -> Result<(), TestCaseError> {
        let mut windows = KeyedWindows::new(config, lateness).unwrap();
        let expected = oracle(config, lateness, steps);
        let (size, slide) = match config {
            WindowConfig::TumblingCount { size } => (size, size),
            WindowConfig::SlidingCount { size, slide } => (size, slide),
            _ => (1, 1),
        };
        for (i, (step, expect)) in steps.iter().zip(&expected).enumerate() {
            let last_window = match *step {
                Step::Element { key, ts, .. } => windows.last_window_of(&key, ts),
                Step::Watermark(_) => None,
            };
            prop_assert_eq!(
                last_window,
                expect.joined.iter().max_by_key(|w| w.end).copied(),
                "step {}",
                i
            );
            let outcome = drive(&mut windows, std::slice::from_ref(step)).remove(0);
            if let (Step::Element { key, .. }, Some(last)) = (*step, last_window) {
                // It fired now iff the oracle fired it now.
                let fired_now = expect.fired.iter().any(|(k, w, _)| *k == key && *w == last);
                prop_assert_eq!(windows.window_has_fired(&key, last), fired_now, "step {}", i);
            }
            prop_assert_eq!(outcome.added, expect.added, "step {}: {:?}", i, step);
            prop_assert_eq!(&outcome.fired, &expect.fired, "step {}: {:?}", i, step);
            for (key, window, _) in &outcome.fired {
                prop_assert!(
                    outcome.watermark_after.is_some_and(|watermark| window.end <= watermark)
                        || matches!(
                            config,
                            WindowConfig::TumblingCount { .. } | WindowConfig::SlidingCount { .. }
                        ),
                    "{:?} of key {} fired at watermark {:?}",
                    window,
                    key,
                    outcome.watermark_after
                );
            }
            // Memory: between steps a count key holds only the complete panes of the next window, which is not full.
            let panes = (size / gcd(size, slide)) as usize;
            for state in windows.counts.values() {
                prop_assert!(
                    state.panes.len() < panes,
                    "{} panes held, a window has {}",
                    state.panes.len(),
                    panes
                );
            }
        }
        if !matches!(
            config,
            WindowConfig::TumblingCount { .. } | WindowConfig::SlidingCount { .. }
        ) {
            prop_assert!(
                windows.is_empty(),
                "held after the final watermark: {}",
                windows.open_windows()
            );
        }
        Ok(())
    }

    /// Checks a session run against oracles that see the whole input at once (sessions merge, so their oracle
    /// checks the final sessions rather than every step; tumbling, sliding and count windows use `oracle`).
    fn check_session_run(config: WindowConfig, lateness: i64, steps: &[Step]) -> Result<(), TestCaseError> {
        let WindowConfig::Session { gap_ms } = config else {
            unreachable!("sessions only")
        };
        let mut windows = KeyedWindows::new(config, lateness).unwrap();
        // Step by step, noting for each accepted element the session that holds it after.
        let mut outcomes = Vec::new();
        let mut holding: Vec<Option<Window>> = Vec::new();
        for step in steps {
            outcomes.extend(drive(&mut windows, std::slice::from_ref(step)));
            holding.push(match *step {
                Step::Element { key, ts, .. } => windows.sessions.get(&key).and_then(|index| {
                    let (&start, &end) = index.range(..=ts).next_back()?;
                    (ts <= end).then_some(Window { start, end })
                }),
                Step::Watermark(_) => None,
            });
        }

        // Lateness: decided from the element and the watermark it arrived at alone.
        let mut accepted: Vec<(u8, i64, u32, Option<i64>)> = Vec::new();
        for (step, outcome) in steps.iter().zip(&outcomes) {
            if let Step::Element { key, ts, id } = *step {
                let late = oracle_closed(ts + gap_ms, lateness, outcome.arrived_at);
                prop_assert_eq!(
                    outcome.added,
                    Some(if late { Added::Late } else { Added::Accepted }),
                    "element {}",
                    id
                );
                if !late {
                    accepted.push((key, ts, id, outcome.arrived_at));
                }
            }
        }

        // When and in which order windows fire.
        let mut last: BTreeMap<(u8, Window), Vec<u32>> = BTreeMap::new();
        for ((step, outcome), holding) in steps.iter().zip(&outcomes).zip(&holding) {
            let fired: Vec<Window> = outcome.fired.iter().map(|(_, w, _)| *w).collect();
            match *step {
                // A watermark fires each window once: those it is the first to pass.
                Step::Watermark(_) => {
                    for w in &fired {
                        prop_assert!(
                            outcome.arrived_at.is_none_or(|before| w.end > before),
                            "{:?} fired twice",
                            w
                        );
                    }
                }
                // An element fires, at once, exactly the windows it changed that the watermark already passed.
                Step::Element { .. } => {
                    let expect: Vec<Window> = match (outcome.added, holding) {
                        (Some(Added::Accepted), Some(session))
                            if outcome.arrived_at.is_some_and(|wm| session.end <= wm) =>
                        {
                            vec![*session]
                        }
                        (Some(Added::Accepted), Some(_)) => vec![],
                        (Some(Added::Late), _) => vec![],
                        other => return Err(TestCaseError::fail(format!("accepted but in no session: {other:?}"))),
                    };
                    prop_assert_eq!(&fired, &expect);
                }
            }
            for (key, window, _) in &outcome.fired {
                prop_assert!(
                    outcome.watermark_after.is_some_and(|watermark| window.end <= watermark),
                    "{:?} of key {} fired at watermark {:?}",
                    window,
                    key,
                    outcome.watermark_after
                );
            }
            let order: Vec<_> = outcome.fired.iter().map(|(key, w, _)| (w.end, *key, w.start)).collect();
            prop_assert!(
                order.windows(2).all(|pair| pair[0] < pair[1]),
                "out of order: {:?}",
                order
            );
            for (key, window, ids) in &outcome.fired {
                last.insert((*key, *window), ids.clone());
            }
        }
        prop_assert!(
            windows.is_empty(),
            "held after the final watermark: {}",
            windows.open_windows()
        );

        // What the last result of each session holds: a key's sessions are its accepted elements' [ts, ts + gap),
        // merged where they overlap or touch.
        // A key's sessions: its accepted elements' [ts, ts + gap), merged where they overlap or touch.
        let mut by_key: BTreeMap<u8, Vec<(i64, u32)>> = BTreeMap::new();
        for &(key, ts, id, _) in &accepted {
            by_key.entry(key).or_default().push((ts, id));
        }
        let mut expect: BTreeMap<(u8, Window), Vec<u32>> = BTreeMap::new();
        for (key, mut elements) in by_key {
            elements.sort_unstable();
            let mut sessions: Vec<(Window, Vec<u32>)> = Vec::new();
            for (ts, id) in elements {
                match sessions.last_mut() {
                    Some((w, ids)) if ts <= w.end => {
                        w.end = w.end.max(ts + gap_ms);
                        ids.push(id);
                    }
                    _ => sessions.push((
                        Window {
                            start: ts,
                            end: ts + gap_ms,
                        },
                        vec![id],
                    )),
                }
            }
            for (w, ids) in sessions {
                expect.insert((key, w), sorted(ids));
            }
        }
        for (id, ids) in &expect {
            let got = last.get(id).cloned().map(sorted);
            prop_assert_eq!(got.as_ref(), Some(ids), "session {:?}", id);
        }
        // Any other fired session was later merged into one of them.
        for (key, w) in last.keys() {
            prop_assert!(
                expect
                    .keys()
                    .any(|(k, s)| k == key && s.start <= w.start && w.end <= s.end),
                "session {:?} of key {} is in no final session",
                w,
                key
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            // Failures print their minimal input; they are not written into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn time_window_results_match_oracle(config in fixed_time_config(), lateness in 0i64..30, steps in run_steps()) {
            check_run_against_oracle(config, lateness, &steps)?;
        }

        #[test]
        fn session_window_results_match_oracle(gap_ms in 1i64..=30, lateness in 0i64..30, steps in run_steps()) {
            check_session_run(WindowConfig::Session { gap_ms }, lateness, &steps)?;
        }

        #[test]
        fn count_window_results_match_oracle(config in count_config(), steps in run_steps()) {
            check_run_against_oracle(config, 0, &steps)?;
        }

        /// A checkpoint taken at any step and restored continues exactly as if nothing happened.
        #[test]
        fn window_state_restored_from_checkpoint_continues_identically(
            config in prop_oneof![time_config(), count_config()],
            lateness in 0i64..30,
            steps in run_steps(),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(steps.len() + 1);
            let mut straight = KeyedWindows::new(config, lateness).unwrap();
            let expect = drive(&mut straight, &steps);

            let mut before = KeyedWindows::new(config, lateness).unwrap();
            let mut got = drive(&mut before, &steps[..cut]);
            let bytes = postcard::to_stdvec(&before).unwrap();
            let mut restored: KeyedWindows<u8, Vec<u32>> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&restored, &before);
            got.extend(drive(&mut restored, &steps[cut..]));
            prop_assert_eq!(got, expect);
            prop_assert_eq!(restored, straight);
        }
    }
}
