//! Windowed operators: `reduce_by_key_and_window` and `count_by_key_and_window` over the window engine
//! ([`crate::window`]), in processing time or event time.
//!
//! **Event time.** A [`WindowSpec::event_time`] function gives each element its timestamp. Each task of the operator
//! keeps, per upstream task, the largest timestamp it knows of (from the elements it receives, and from the watermark
//! tuples every upstream task sends to every task of the operator: `component::Outputs` sends them every 256 elements,
//! when a source is idle or ends, and on ticks); its watermark is the smallest of those minus the bounded
//! out-of-orderness, so a slow upstream task holds it back (no element of it is made late). An upstream task silent
//! for the [`WindowSpec::idle_timeout`] is left out of the minimum until it sends again, so an idle partition does not
//! stop every window (without a timeout it does, as in Flink).
//!
//! **Processing time** (the default): an element's timestamp is the wall clock when it arrives and the watermark is
//! the clock; tick tuples (every 100 ms) fire windows while no element arrives.
//!
//! **Late elements** (every window they belong to closed, lateness included) go to [`Windowed::late`].
//! The windows, the watermark and the upstream timestamps are operator state, checkpointed under effectively-once.

use std::collections::BTreeMap;
use std::sync::Arc;

use egret_api::{CheckpointId, OutputDeclarer, Stateful, TaskId, TopologyContext, UserError};
use serde::{Deserialize, Serialize};

use crate::builder::{Element, Streamlet};
use crate::component::{EmitFn, From, Operator, Outputs, decode, now_ms};
use crate::key_bytes::KeyBytes;
use crate::window::{Added, KeyedWindows, Window, WindowConfig};

/// How often a windowed operator's tasks get a tick (processing time advances, idle upstream tasks are noticed).
pub(crate) const TICK_MS: u64 = 100;

use crate::component::TimestampFn;
/// A join's function of a pair (`None` on the side an outer join found no partner for).
pub(crate) type JoinFn<L, R, J> = Arc<dyn Fn(Option<L>, Option<R>) -> J + Send + Sync>;

/// Which windows, on which time, with how much lateness.
pub struct WindowSpec<T> {
    pub(crate) config: WindowConfig,
    pub(crate) timestamp: Option<TimestampFn<T>>,
    pub(crate) max_out_of_orderness_ms: i64,
    pub(crate) idle_timeout_ms: Option<i64>,
    pub(crate) allowed_lateness_ms: i64,
}

impl<T> Clone for WindowSpec<T> {
    fn clone(&self) -> Self {
        WindowSpec {
            config: self.config,
            timestamp: self.timestamp.clone(),
            max_out_of_orderness_ms: self.max_out_of_orderness_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            allowed_lateness_ms: self.allowed_lateness_ms,
        }
    }
}

impl<T> WindowSpec<T> {
    /// Windows of `config`, on processing time, no lateness.
    pub fn new(config: WindowConfig) -> Self {
        WindowSpec {
            config,
            timestamp: None,
            max_out_of_orderness_ms: 0,
            idle_timeout_ms: None,
            allowed_lateness_ms: 0,
        }
    }

    pub fn tumbling_time(length_ms: i64) -> Self {
        Self::new(WindowConfig::TumblingTime { length_ms })
    }

    pub fn sliding_time(length_ms: i64, slide_ms: i64) -> Self {
        Self::new(WindowConfig::SlidingTime { length_ms, slide_ms })
    }

    pub fn tumbling_count(size: u64) -> Self {
        Self::new(WindowConfig::TumblingCount { size })
    }

    pub fn sliding_count(size: u64, slide: u64) -> Self {
        Self::new(WindowConfig::SlidingCount { size, slide })
    }

    /// Session windows: a key's elements closer than `gap_ms` are one window (Heron has none).
    pub fn session(gap_ms: i64) -> Self {
        Self::new(WindowConfig::Session { gap_ms })
    }

    /// Event time: `timestamp` gives an element's time (ms); elements arrive at most `max_out_of_orderness_ms` out of
    /// order (the watermark trails the largest timestamp by that much).
    pub fn event_time(
        mut self,
        timestamp: impl Fn(&T) -> i64 + Send + Sync + 'static,
        max_out_of_orderness_ms: i64,
    ) -> Self {
        self.timestamp = Some(Arc::new(timestamp));
        self.max_out_of_orderness_ms = max_out_of_orderness_ms.max(0);
        self
    }

    /// Event time: an upstream task silent this long no longer holds the watermark back.
    pub fn idle_timeout(mut self, ms: i64) -> Self {
        self.idle_timeout_ms = Some(ms.max(1));
        self
    }

    /// Elements up to this much behind the watermark still update their (already fired) windows, which fire again.
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        self.allowed_lateness_ms = ms.max(0);
        self
    }
}

/// A windowed operator's two outputs: the results, `(key, window, aggregate)`, each time a window fires (again, if
/// a late element within the lateness updates it), and the elements that came too late for any window.
pub struct Windowed<K, A, T> {
    pub results: Streamlet<(K, Window, A)>,
    pub late: Streamlet<T>,
}

type FoldFn<A, V> = Arc<dyn Fn(&mut A, &V) + Send + Sync>;
type MergeFn<A> = Arc<dyn Fn(&mut A, A) + Send + Sync>;

/// The aggregate functions of a windowed operator over values `V` of elements `T`: `fold` adds a value to a window's
/// aggregate, `merge` combines two (sessions, sliding count panes; associative), `finish` makes the output.
pub(crate) struct Aggregate<T, V, A, O> {
    /// Decodes an input element, given the component it came from (a join's two sides differ).
    pub decode: DecodeFn<T>,
    pub value: Arc<dyn Fn(T) -> V + Send + Sync>,
    /// An aggregate that does not read elements (a count): its value without one. In processing time such an
    /// operator neither receives nor decodes elements.
    pub without_element: Option<Arc<dyn Fn() -> V + Send + Sync>>,
    pub init: Arc<dyn Fn() -> A + Send + Sync>,
    pub fold: FoldFn<A, V>,
    pub merge: MergeFn<A>,
    /// The outputs of a fired window (one for a reduce or a count, a pair per match for a join).
    pub finish: Arc<dyn Fn(A) -> Vec<O> + Send + Sync>,
}

pub(crate) type DecodeFn<T> = Arc<dyn Fn(&[u8], &str) -> Result<T, UserError> + Send + Sync>;

/// The decoder of an operator with one input.
pub(crate) fn decode_fn<T: Element>() -> DecodeFn<T> {
    Arc::new(|bytes, _component| decode::<T>(bytes))
}

impl<T, V, A, O> Clone for Aggregate<T, V, A, O> {
    fn clone(&self) -> Self {
        Aggregate {
            decode: Arc::clone(&self.decode),
            value: Arc::clone(&self.value),
            without_element: self.without_element.clone(),
            init: Arc::clone(&self.init),
            fold: Arc::clone(&self.fold),
            merge: Arc::clone(&self.merge),
            finish: Arc::clone(&self.finish),
        }
    }
}

/// What a windowed operator checkpoints.
#[derive(Serialize, Deserialize)]
struct WindowState<A: Clone> {
    windows: KeyedWindows<KeyBytes, A>,
    /// Event time: per upstream task, the largest timestamp seen.
    upstream_max: BTreeMap<u32, i64>,
}

pub(crate) struct WindowOp<T, K, V, A, O> {
    spec: WindowSpec<T>,
    agg: Aggregate<T, V, A, O>,
    windows: KeyedWindows<KeyBytes, A>,
    upstream: Vec<TaskId>,
    /// Event time: per upstream task, the largest timestamp and when (processing time) it last sent.
    upstream_max: BTreeMap<u32, i64>,
    last_heard: BTreeMap<u32, i64>,
    started_ms: i64,
    results: Outputs<(K, Window, O)>,
    late: Outputs<T>,
    fired: Vec<(KeyBytes, Window, A)>,
}

impl<T, K, V, A: Clone, O> WindowOp<T, K, V, A, O>
where
    K: Element,
    T: Element,
    O: Element,
{
    pub fn new(
        spec: WindowSpec<T>,
        agg: Aggregate<T, V, A, O>,
        results: Outputs<(K, Window, O)>,
        late: Outputs<T>,
    ) -> Result<Self, UserError> {
        let windows = KeyedWindows::new(spec.config, spec.allowed_lateness_ms)?;
        Ok(WindowOp {
            spec,
            agg,
            windows,
            upstream: Vec::new(),
            upstream_max: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            started_ms: now_ms(),
            results,
            late,
            fired: Vec::new(),
        })
    }

    /// The watermark now: processing time, or the smallest largest-timestamp of the upstream tasks that are not
    /// idle, minus the out-of-orderness (`None` while one that is not idle has sent nothing).
    fn current_watermark(&self, now: i64) -> Option<i64> {
        if self.spec.timestamp.is_none() {
            return Some(now);
        }
        let idle = |t: &TaskId| {
            self.spec.idle_timeout_ms.is_some_and(|timeout| {
                let last = self.last_heard.get(&t.0).copied().unwrap_or(self.started_ms);
                now.saturating_sub(last) >= timeout
            })
        };
        let mut wm: Option<i64> = None;
        for t in self.upstream.iter().filter(|t| !idle(t)) {
            let max = self.upstream_max.get(&t.0)?;
            wm = Some(wm.map_or(*max, |w| w.min(*max)));
        }
        wm.map(|w| w.saturating_sub(self.spec.max_out_of_orderness_ms))
    }

    fn emit_fired(&mut self, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        for (key, window, a) in self.fired.drain(..) {
            let outs = (self.agg.finish)(a);
            if outs.is_empty() {
                continue;
            }
            let k = decode::<K>(key.as_slice())?;
            for out in outs {
                self.results.emit(&(k.clone(), window, out), emit)?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, now: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        if let Some(wm) = self.current_watermark(now) {
            self.windows.advance(wm, &mut self.fired);
        }
        self.emit_fired(emit)
    }
}

impl<T, K, V, A, O> Operator for WindowOp<T, K, V, A, O>
where
    T: Element,
    K: Element,
    V: Send + 'static,
    A: Clone + Serialize + for<'de> Deserialize<'de> + Send + 'static,
    O: Element,
{
    fn process(&mut self, key: &[u8], value: &[u8], src: From<'_>, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        let now = now_ms();
        // A count in processing time needs neither the element nor its bytes (its parent sends only the key).
        let (element, ts) = match (&self.spec.timestamp, &self.agg.without_element) {
            (None, Some(_)) => (None, now),
            (timestamp, _) => {
                let element: T = (self.agg.decode)(value, src.component)?;
                let ts = match timestamp {
                    Some(f) => {
                        let ts = f(&element);
                        let max = self.upstream_max.entry(src.task.0).or_insert(ts);
                        *max = (*max).max(ts);
                        self.last_heard.insert(src.task.0, now);
                        ts
                    }
                    None => now,
                };
                (Some(element), ts)
            }
        };
        // The watermark first: an element is late against what is already known.
        if let Some(wm) = self.current_watermark(now) {
            self.windows.advance(wm, &mut self.fired);
        }
        let v = match (&element, &self.agg.without_element) {
            (_, Some(v)) => v(),
            (Some(e), None) => (self.agg.value)(e.clone()),
            (None, None) => return Err("a windowed operator got no element to aggregate".into()),
        };
        let (init, fold, merge) = (&self.agg.init, &self.agg.fold, &self.agg.merge);
        let added = self.windows.add(
            KeyBytes::new(key),
            ts,
            &v,
            || init(),
            |a, v| fold(a, v),
            |a, b| merge(a, b),
            &mut self.fired,
        );
        // (Without the element, in processing time, nothing is late unless the clock went back.)
        if let (Added::Late, Some(e)) = (added, &element) {
            self.late.emit(e, emit)?;
        }
        self.emit_fired(emit)
    }

    fn tick(&mut self, now_ms: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.advance(now_ms, emit)?;
        self.results.flush_watermarks(emit);
        Ok(())
    }

    fn watermark(&mut self, from: From<'_>, ts: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        let max = self.upstream_max.entry(from.task.0).or_insert(ts);
        *max = (*max).max(ts);
        self.last_heard.insert(from.task.0, now_ms());
        self.advance(now_ms(), emit)
    }

    fn declare(&self, out: &mut OutputDeclarer) {
        self.results.declare(out);
        self.late.declare(out);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.upstream = ctx.topology().upstream_tasks(ctx.task_id());
        self.started_ms = now_ms();
        Ok(())
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl<T, K, V, A, O> Stateful for WindowOp<T, K, V, A, O>
where
    T: Element,
    K: Element,
    V: Send + 'static,
    A: Clone + Serialize + for<'de> Deserialize<'de> + Send + 'static,
    O: Element,
{
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        if let Some(b) = restored {
            let s: WindowState<A> = postcard::from_bytes(b)?;
            self.windows = s.windows;
            self.upstream_max = s.upstream_max;
        }
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        #[derive(Serialize)]
        struct Ref<'a, A> {
            windows: &'a KeyedWindows<KeyBytes, A>,
            upstream_max: &'a BTreeMap<u32, i64>,
        }
        let bytes = postcard::to_stdvec(&Ref {
            windows: &self.windows,
            upstream_max: &self.upstream_max,
        })?;
        out.extend_from_slice(&bytes);
        Ok(())
    }
}

/// One element of a join's input: from the streamlet `join` was called on (left) or from the other one (right).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinSide<L, R> {
    Left(L),
    Right(R),
}

/// Which pairs a windowed join emits, per key and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    /// Every (left, right) pair.
    Inner,
    /// Every pair, and each left element alone (`None` right) when the window has no right element.
    LeftOuter,
    /// Every pair, and each right element alone when the window has no left element.
    RightOuter,
    /// Both of the above.
    Outer,
}

/// A join's aggregate over its inputs `JoinSide<L, R>`: the window's elements of each side.
pub(crate) type JoinAggregate<L, R, J> = Aggregate<JoinSide<L, R>, JoinSide<L, R>, (Vec<L>, Vec<R>), J>;

/// The aggregate of a join emitting `f` of its pairs, as `join_type` says.
pub(crate) fn join_aggregate<L: Element, R: Element, J: Element>(
    left_component: Option<String>,
    join_type: JoinType,
    f: JoinFn<L, R, J>,
) -> JoinAggregate<L, R, J> {
    Aggregate {
        decode: Arc::new(move |bytes, component| {
            if left_component.as_deref() == Some(component) {
                decode::<L>(bytes).map(JoinSide::Left)
            } else {
                decode::<R>(bytes).map(JoinSide::Right)
            }
        }),
        value: Arc::new(|x| x),
        without_element: None,
        init: Arc::new(|| (Vec::new(), Vec::new())),
        fold: Arc::new(|a: &mut (Vec<L>, Vec<R>), x: &JoinSide<L, R>| match x {
            JoinSide::Left(l) => a.0.push(l.clone()),
            JoinSide::Right(r) => a.1.push(r.clone()),
        }),
        merge: Arc::new(|a: &mut (Vec<L>, Vec<R>), b: (Vec<L>, Vec<R>)| {
            a.0.extend(b.0);
            a.1.extend(b.1);
        }),
        finish: Arc::new(move |(left, right): (Vec<L>, Vec<R>)| {
            let mut out = Vec::new();
            for l in &left {
                for r in &right {
                    out.push(f(Some(l.clone()), Some(r.clone())));
                }
            }
            let keep_left = matches!(join_type, JoinType::LeftOuter | JoinType::Outer);
            let keep_right = matches!(join_type, JoinType::RightOuter | JoinType::Outer);
            if right.is_empty() && keep_left {
                out.extend(left.into_iter().map(|l| f(Some(l), None)));
            } else if left.is_empty() && keep_right {
                out.extend(right.into_iter().map(|r| f(None, Some(r))));
            }
            out
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (key, timestamp, id) on either side.
    type Event = (u8, i64, u32);
    type Side = JoinSide<Event, Event>;
    /// A join output: the ids of the pair (`None` for an outer join's missing side).
    type Pair = (Option<u32>, Option<u32>);
    /// Every (key, window start, output), sorted.
    type Joined = Vec<(u8, i64, Pair)>;

    /// Feeds `events` (in arrival order, all in time order per side) through the window engine with the join's
    /// aggregate, then closes every window; returns every (key, window start, output).
    fn join_through_engine(events: &[Side], length: i64, join_type: JoinType) -> Joined {
        let f: JoinFn<Event, Event, Pair> =
            Arc::new(|l: Option<Event>, r: Option<Event>| (l.map(|x| x.2), r.map(|x| x.2)));
        let agg = join_aggregate(Some("left".into()), join_type, f);
        let mut windows: KeyedWindows<u8, (Vec<Event>, Vec<Event>)> =
            KeyedWindows::new(WindowConfig::TumblingTime { length_ms: length }, 0).unwrap();
        let mut fired = Vec::new();
        for e in events {
            let (key, ts) = match e {
                JoinSide::Left(x) | JoinSide::Right(x) => (x.0, x.1),
            };
            let added = windows.add(
                key,
                ts,
                e,
                || (agg.init)(),
                |a, v| (agg.fold)(a, v),
                |a, b| (agg.merge)(a, b),
                &mut fired,
            );
            assert_eq!(added, Added::Accepted, "no watermark was given: nothing is late");
        }
        windows.advance(i64::MAX, &mut fired);
        let mut out = Vec::new();
        for (key, window, a) in fired {
            for o in (agg.finish)(a) {
                out.push((key, window.start, o));
            }
        }
        out.sort();
        out
    }

    /// The join computed over the whole input at once.
    fn oracle(events: &[Side], length: i64, join_type: JoinType) -> Joined {
        let mut cells: BTreeMap<(u8, i64), (Vec<u32>, Vec<u32>)> = BTreeMap::new();
        for e in events {
            match e {
                JoinSide::Left((k, ts, id)) => cells
                    .entry((*k, ts.div_euclid(length) * length))
                    .or_default()
                    .0
                    .push(*id),
                JoinSide::Right((k, ts, id)) => cells
                    .entry((*k, ts.div_euclid(length) * length))
                    .or_default()
                    .1
                    .push(*id),
            }
        }
        let mut out = Vec::new();
        for ((k, start), (ls, rs)) in cells {
            for &l in &ls {
                for &r in &rs {
                    out.push((k, start, (Some(l), Some(r))));
                }
            }
            if rs.is_empty() && matches!(join_type, JoinType::LeftOuter | JoinType::Outer) {
                out.extend(ls.iter().map(|&l| (k, start, (Some(l), None))));
            }
            if ls.is_empty() && matches!(join_type, JoinType::RightOuter | JoinType::Outer) {
                out.extend(rs.iter().map(|&r| (k, start, (None, Some(r)))));
            }
        }
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Every join type, over random keys, timestamps and interleavings of the two sides, gives exactly the
        /// brute-force join of the whole input.
        #[test]
        fn a_windowed_join_matches_the_oracle_for_every_join_type(
            left in proptest::collection::vec((0u8..3, -50i64..200), 0..25),
            right in proptest::collection::vec((0u8..3, -50i64..200), 0..25),
            order in proptest::collection::vec(any::<bool>(), 50),
            length in 1i64..60,
        ) {
            let mut events = Vec::new();
            let (mut l, mut r) = (left.iter().enumerate(), right.iter().enumerate());
            for take_left in order.iter().chain(std::iter::repeat_n(&true, 50)).chain(std::iter::repeat_n(&false, 50)) {
                let next = if *take_left { l.next().map(|(i, &(k, t))| JoinSide::Left((k, t, i as u32))) } else { r.next().map(|(i, &(k, t))| JoinSide::Right((k, t, 1000 + i as u32))) };
                events.extend(next);
            }
            for jt in [JoinType::Inner, JoinType::LeftOuter, JoinType::RightOuter, JoinType::Outer] {
                prop_assert_eq!(join_through_engine(&events, length, jt), oracle(&events, length, jt), "{:?}", jt);
            }
        }
    }
}
