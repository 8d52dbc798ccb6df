//! Streamlet examples (`docs/streamlets.md`): a word count, a windowed join of ad clicks with ad impressions, and
//! event-time sessions with late data. Each builds a topology whose results go to `out`; `bin/streamlets.rs` runs
//! them in the simulator and prints what they found.

use egret::streamlet::{Builder, JoinSide, JoinType, SourceContext, Window, WindowSpec};
use egret::*;

/// Counts the words of `lines` (split over 2 source tasks); every running count goes to `out`.
pub fn word_count(
    lines: Vec<String>,
    out: impl Fn(String, u64) + Send + Sync + Clone + 'static,
) -> Result<Topology, TopologyErrors> {
    let b = Builder::new();
    b.new_source(move |cx: SourceContext| {
        lines
            .clone()
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| i % cx.parallelism as usize == cx.index as usize)
            .map(|(_, l)| l)
    })
    .name("lines")
    .parallelism(2)
    .flat_map(|line: String| line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>())
    .name("words")
    .count_by_key(|w: &String| w.clone())
    .name("count")
    .parallelism(2)
    .consume(move |(w, n)| out(w, n))
    .name("print");
    b.build("streamlet-word-count", Config::new())
}

/// An ad click or impression: (ad id, event time in ms).
pub type AdEvent = (u32, i64);

/// Per ad and 1 s event-time window, how many impressions each click follows (an inner join of clicks with
/// impressions on the ad id), sent to `out` as (ad, window, click time, impression time).
pub fn ad_join(
    clicks: Vec<AdEvent>,
    impressions: Vec<AdEvent>,
    out: impl Fn(u32, Window, i64, i64) + Send + Sync + Clone + 'static,
) -> Result<Topology, TopologyErrors> {
    let b = Builder::new();
    let clicks = b
        .new_source(move |_cx: SourceContext| clicks.clone().into_iter())
        .name("clicks");
    let impressions = b
        .new_source(move |_cx: SourceContext| impressions.clone().into_iter())
        .name("impressions");
    let time = |e: &JoinSide<AdEvent, AdEvent>| match e {
        JoinSide::Left((_, t)) | JoinSide::Right((_, t)) => *t,
    };
    let joined = clicks.join(
        &impressions,
        |c: &AdEvent| c.0,
        |i: &AdEvent| i.0,
        WindowSpec::tumbling_time(1000).event_time(time, 100),
        JoinType::Inner,
        |c: Option<AdEvent>, i: Option<AdEvent>| (c.map_or(0, |c| c.1), i.map_or(0, |i| i.1)),
    );
    joined
        .results
        .name("join")
        .consume(move |(ad, window, (click, impression))| out(ad, window, click, impression))
        .name("print");
    b.build("ad-join", Config::new())
}

/// A user action: (user, event time in ms).
pub type Action = (String, i64);

/// Per user, sessions of actions less than `gap_ms` apart (event time, 50 ms out of order at most, 100 ms of allowed
/// lateness): each session's (user, window, actions) goes to `sessions`, every action too late for its session to
/// `late`.
pub fn user_sessions(
    actions: Vec<Action>,
    gap_ms: i64,
    sessions: impl Fn(String, Window, u64) + Send + Sync + Clone + 'static,
    late: impl Fn(Action) + Send + Sync + Clone + 'static,
) -> Result<Topology, TopologyErrors> {
    let b = Builder::new();
    let windowed = b
        .new_source(move |_cx: SourceContext| actions.clone().into_iter())
        .name("actions")
        .count_by_key_and_window(
            |a: &Action| a.0.clone(),
            WindowSpec::session(gap_ms)
                .event_time(|a: &Action| a.1, 50)
                .allowed_lateness(100),
        );
    windowed
        .results
        .name("sessions")
        .consume(move |(user, window, n)| sessions(user, window, n))
        .name("print");
    windowed.late.consume(late).name("late");
    b.build("user-sessions", Config::new())
}

/// A clicks/impressions event past every window: the last event of each sample source, so every window closes.
pub const AD_END: AdEvent = (u32::MAX, i64::MAX / 4);
/// The same for the actions (an empty user).
pub const ACTIONS_END_TIME: i64 = i64::MAX / 4;

/// The sample input of [`word_count`] that `bin/streamlets.rs` runs and the examples' test checks.
pub fn sample_lines() -> Vec<String> {
    vec!["the egret and the heron".to_string(), "The heron waits".to_string()]
}

/// The sample clicks and impressions of [`ad_join`], each ending with [`AD_END`].
pub fn sample_ad_events() -> (Vec<AdEvent>, Vec<AdEvent>) {
    let clicks = vec![(1, 120), (2, 450), (1, 1300), AD_END];
    let impressions = vec![(1, 100), (1, 900), (2, 400), (1, 1250), (3, 1500), AD_END];
    (clicks, impressions)
}

/// The sample actions of [`user_sessions`]: `ann` at 20 arrives after her session of 0 and 30 has closed (the
/// watermark is at 350 once 400 is seen); they end with an empty user at [`ACTIONS_END_TIME`].
pub fn sample_actions() -> Vec<Action> {
    [
        ("ann", 0),
        ("ann", 30),
        ("bob", 10),
        ("ann", 400),
        ("ann", 20),
        ("bob", 600),
        ("", ACTIONS_END_TIME),
    ]
    .into_iter()
    .map(|(u, t)| (u.to_string(), t))
    .collect()
}

/// Timestamped page views for the windowed end-to-end tests: `n` events `(page, ts)` over `pages` pages, event `i`
/// at about `i / 2` ms, each late by up to `max_delay_ms` (out of order within that bound), from a seed.
pub fn page_views(n: usize, pages: usize, max_delay_ms: i64, seed: u64) -> Vec<(String, i64)> {
    let mut rng = crate::SplitMix(seed);
    (0..n)
        .map(|i| {
            let page = format!("page-{}", rng.below(pages));
            let delay = rng.below(max_delay_ms.max(1) as usize) as i64;
            (page, i as i64 / 2 - delay)
        })
        .collect()
}

/// The count of each `(page, window start)` of [`page_views`] in tumbling windows of `window_ms`.
pub fn page_view_windows(views: &[(String, i64)], window_ms: i64) -> std::collections::BTreeMap<(String, i64), u64> {
    let mut counts = std::collections::BTreeMap::new();
    for (page, ts) in views {
        *counts
            .entry((page.clone(), ts.div_euclid(window_ms) * window_ms))
            .or_default() += 1;
    }
    counts
}
