//! Test support shared by every property test of windows: the window engine's own ([`super::tests`]) and the
//! windowed bolt's (`crate::windowed_bolt::tests`). Random runs of elements and watermarks, and a brute-force
//! oracle that, given the whole run, says what each step must do. One oracle, so the engine and the bolt built on
//! it are held to the same semantics.

use proptest::prelude::*;

use super::{Added, Window, WindowConfig};

/// One step of a random run: element `id` of `key` at `ts`, or a watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Element { key: u8, ts: i64, id: u32 },
    Watermark(i64),
}

/// The windows fired by one step: (key, window, the ids folded in, in arrival order).
pub(crate) type Fired = Vec<(u8, Window, Vec<u32>)>;

/// A run from a bounded out-of-orderness source: an event clock that moves forward by `advance` ms per
/// element, elements stamped up to `ooo + extra` ms behind it (so those more than `ooo` behind can be late),
/// the watermark `max ts seen - ooo` every `every` elements, and a final watermark at `i64::MAX`.
pub(crate) fn run_steps() -> impl Strategy<Value = Vec<Step>> {
    (
        -300i64..300,
        0i64..40,
        0i64..100,
        1usize..6,
        proptest::collection::vec((0u8..3, 0i64..15, 0u32..1000), 0..80),
    )
        .prop_map(|(start, ooo, extra, every, raw)| {
            let mut steps = Vec::new();
            let (mut clock, mut max_ts) = (start, i64::MIN);
            for (i, (key, advance, delay)) in raw.into_iter().enumerate() {
                clock += advance;
                let ts = clock - i64::from(delay) % (ooo + extra + 1);
                max_ts = max_ts.max(ts);
                steps.push(Step::Element { key, ts, id: i as u32 });
                if (i + 1) % every == 0 {
                    steps.push(Step::Watermark(max_ts - ooo));
                }
            }
            steps.push(Step::Watermark(i64::MAX));
            steps
        })
}

/// Tumbling and sliding time windows.
pub(crate) fn fixed_time_config() -> impl Strategy<Value = WindowConfig> {
    prop_oneof![
        (1i64..=40).prop_map(|length_ms| WindowConfig::TumblingTime { length_ms }),
        (1i64..=40).prop_flat_map(|length_ms| {
            (1..=length_ms).prop_map(move |slide_ms| WindowConfig::SlidingTime { length_ms, slide_ms })
        }),
    ]
}

/// Tumbling and sliding time windows, and sessions.
pub(crate) fn time_config() -> impl Strategy<Value = WindowConfig> {
    prop_oneof![
        fixed_time_config(),
        (1i64..=30).prop_map(|gap_ms| WindowConfig::Session { gap_ms }),
    ]
}

pub(crate) fn count_config() -> impl Strategy<Value = WindowConfig> {
    prop_oneof![
        (1u64..=10).prop_map(|size| WindowConfig::TumblingCount { size }),
        (1u64..=10).prop_flat_map(|size| (1..=size).prop_map(move |slide| WindowConfig::SlidingCount { size, slide })),
    ]
}

/// The windows `[k * slide, k * slide + length)` holding `ts`, by trying every `k` near `ts / slide`.
pub(crate) fn oracle_time_windows(ts: i64, length: i64, slide: i64) -> Vec<Window> {
    (ts / slide - length / slide - 2..=ts / slide + 2)
        .map(|k| Window {
            start: k * slide,
            end: k * slide + length,
        })
        .filter(|w| w.start <= ts && ts < w.end)
        .collect()
}

/// A window is closed once the watermark passed its end and its lateness.
pub(crate) fn oracle_closed(end: i64, lateness: i64, watermark: Option<i64>) -> bool {
    watermark.is_some_and(|watermark| end + lateness <= watermark)
}

/// What one step must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// For an element: accepted or late.
    pub added: Option<Added>,
    /// For an accepted element: the windows it joined (each fires, now or later, with it inside), in order of end.
    pub joined: Vec<Window>,
    /// The windows the step fires, in order of end, then key, then start, with every element they hold.
    pub fired: Fired,
}

/// The brute-force oracle of tumbling and sliding time windows (with `lateness`) and of count windows: what each
/// step of `steps` must do, worked out from the elements themselves rather than from any window state.
///
/// - Time: an element is late iff every window holding `ts` is closed at the watermark it arrives at; otherwise
///   it joins those that are not, and those the watermark already passed fire again at once. A watermark above
///   the last one fires every window with an element whose end it is the first to pass.
/// - Count: a key's `n`-th element (from 1) fires window `[n - size, n)` when `n >= size` and `n - size` is a
///   multiple of `slide`; elements are never late and watermarks do nothing.
pub(crate) fn oracle(config: WindowConfig, lateness: i64, steps: &[Step]) -> Vec<Expected> {
    match config {
        WindowConfig::TumblingTime { length_ms } => oracle_time(length_ms, length_ms, lateness, steps),
        WindowConfig::SlidingTime { length_ms, slide_ms } => oracle_time(length_ms, slide_ms, lateness, steps),
        WindowConfig::TumblingCount { size } => oracle_count(size, size, steps),
        WindowConfig::SlidingCount { size, slide } => oracle_count(size, slide, steps),
        WindowConfig::Session { .. } => panic!("the oracle covers time and count windows, not sessions"),
    }
}

fn oracle_time(length: i64, slide: i64, lateness: i64, steps: &[Step]) -> Vec<Expected> {
    let mut watermark: Option<i64> = None;
    // Every accepted element with the windows it joined.
    let mut accepted: Vec<(u8, u32, Vec<Window>)> = Vec::new();
    let contents = |accepted: &[(u8, u32, Vec<Window>)], key: u8, w: Window| -> Vec<u32> {
        accepted
            .iter()
            .filter(|(k, _, joined)| *k == key && joined.contains(&w))
            .map(|(_, id, _)| *id)
            .collect()
    };
    let mut expected = Vec::new();
    for step in steps {
        match *step {
            Step::Element { key, ts, id } => {
                let joined: Vec<Window> = oracle_time_windows(ts, length, slide)
                    .into_iter()
                    .filter(|w| !oracle_closed(w.end, lateness, watermark))
                    .collect();
                if joined.is_empty() {
                    expected.push(Expected {
                        added: Some(Added::Late),
                        joined,
                        fired: Vec::new(),
                    });
                    continue;
                }
                accepted.push((key, id, joined.clone()));
                let fired = joined
                    .iter()
                    .filter(|w| watermark.is_some_and(|wm| w.end <= wm))
                    .map(|&w| (key, w, contents(&accepted, key, w)))
                    .collect();
                expected.push(Expected {
                    added: Some(Added::Accepted),
                    joined,
                    fired,
                });
            }
            Step::Watermark(wm) => {
                let mut fired: Fired = Vec::new();
                if watermark.is_none_or(|current| wm > current) {
                    let mut due: Vec<(i64, u8, i64)> = accepted
                        .iter()
                        .flat_map(|(key, _, joined)| joined.iter().map(move |w| (w.end, *key, w.start)))
                        .filter(|&(end, _, _)| end <= wm && watermark.is_none_or(|current| end > current))
                        .collect();
                    due.sort_unstable();
                    due.dedup();
                    for (end, key, start) in due {
                        let w = Window { start, end };
                        fired.push((key, w, contents(&accepted, key, w)));
                    }
                    watermark = Some(wm);
                }
                expected.push(Expected {
                    added: None,
                    joined: Vec::new(),
                    fired,
                });
            }
        }
    }
    expected
}

fn oracle_count(size: u64, slide: u64, steps: &[Step]) -> Vec<Expected> {
    let (size, slide) = (size as usize, slide as usize);
    let mut sequences: std::collections::BTreeMap<u8, Vec<u32>> = Default::default();
    let mut expected = Vec::new();
    for step in steps {
        match *step {
            Step::Element { key, id, .. } => {
                let ids = sequences.entry(key).or_default();
                let seq = ids.len();
                ids.push(id);
                let n = ids.len();
                // Windows k with k * slide <= seq < k * slide + size.
                let joined = (0..=seq / slide)
                    .filter(|k| seq < k * slide + size)
                    .map(|k| Window {
                        start: (k * slide) as i64,
                        end: (k * slide + size) as i64,
                    })
                    .collect();
                let mut fired = Vec::new();
                if n >= size && (n - size).is_multiple_of(slide) {
                    let w = Window {
                        start: (n - size) as i64,
                        end: n as i64,
                    };
                    fired.push((key, w, ids[n - size..].to_vec()));
                }
                expected.push(Expected {
                    added: Some(Added::Accepted),
                    joined,
                    fired,
                });
            }
            Step::Watermark(_) => expected.push(Expected {
                added: None,
                joined: Vec::new(),
                fired: Vec::new(),
            }),
        }
    }
    expected
}
