//! Streamlet topologies run in the simulator, compared with what the same functions compute over the whole input.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egret_api::{Config, ReliabilityMode, TaskId, keys};
use egret_checkpoint::MemoryStore;
use egret_simulator::{Simulator, SimulatorOptions};
use egret_streamlet::{Builder, SourceContext, Transformer};

/// Deterministic words: task `i` of `n` gets every n-th of `total`.
fn words(total: usize) -> impl Fn(SourceContext) -> std::vec::IntoIter<String> + Send + Sync + Clone + 'static {
    move |cx: SourceContext| {
        let vocab = ["egret", "heron", "stork", "crane", "ibis", "bittern", "spoonbill"];
        (0..total)
            .filter(|i| i % cx.parallelism as usize == cx.index as usize)
            .map(|i| vocab[(i * 7 + i / 3) % vocab.len()].to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }
}

fn oracle(total: usize) -> BTreeMap<String, u64> {
    let f = words(total);
    let mut m = BTreeMap::new();
    for w in f(SourceContext {
        index: 0,
        parallelism: 1,
    }) {
        *m.entry(w).or_default() += 1;
    }
    m
}

type Seen<T> = Arc<Mutex<Vec<T>>>;

/// Runs the topology until `done` says the collected output is complete (or 30 s), then stops it.
fn run_until<T: Clone>(topology: egret_api::Topology, seen: &Seen<T>, done: impl Fn(&[T]) -> bool) -> Vec<T> {
    let running = Simulator::start(topology).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done(&seen.lock().unwrap()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    seen.lock().unwrap().clone()
}

#[test]
fn a_streamlet_word_count_counts_every_word() {
    let total = 20_000;
    let b = Builder::new();
    let seen: Seen<(String, u64)> = Arc::default();
    let s = seen.clone();
    b.new_source(words(total))
        .parallelism(2)
        .map(|w: String| w.to_uppercase())
        .filter(|w: &String| !w.is_empty())
        .count_by_key(|w: &String| w.clone())
        .parallelism(3)
        .name("count")
        .consume(move |kv: (String, u64)| s.lock().unwrap().push(kv));
    let t = b.build("streamlet-word-count", Config::new()).unwrap();
    assert!(t.component("count").is_some(), "named components keep their names");
    assert!(t.component("map-2").is_some(), "others are named after their operator");
    let out = run_until(t, &seen, |o| o.len() >= total);
    assert_eq!(out.len(), total, "one running count per word");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (w, n) in out {
        let e = last.entry(w).or_default();
        *e = (*e).max(n);
    }
    let expected: BTreeMap<String, u64> = oracle(total).into_iter().map(|(w, n)| (w.to_uppercase(), n)).collect();
    assert_eq!(last, expected);
}

#[test]
fn streamlet_reduce_by_key_union_flat_map_and_key_by_compose() {
    let total = 5_000;
    let b = Builder::new();
    let seen: Seen<(String, u64)> = Arc::default();
    let s = seen.clone();
    let a = b.new_source(words(total));
    let c = b.new_source(words(total)).name("second");
    a.union(&c)
        .flat_map(|w: String| vec![w.clone(), w])
        .key_by(|w: &String| w.len(), |w: String| w)
        .reduce_by_key(
            |kv: &(usize, String)| kv.1.clone(),
            |_kv: (usize, String)| 1u64,
            |x, y| x + y,
        )
        .parallelism(2)
        .consume(move |kv: (String, u64)| s.lock().unwrap().push(kv));
    let t = b.build("compose", Config::new()).unwrap();
    let out = run_until(t, &seen, |o| o.len() >= 4 * total);
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (w, n) in out {
        let e = last.entry(w).or_default();
        *e = (*e).max(n);
    }
    let expected: BTreeMap<String, u64> = oracle(total).into_iter().map(|(w, n)| (w, 4 * n)).collect();
    assert_eq!(last, expected, "two sources, each word twice");
}

#[test]
fn streamlet_repartition_with_sends_each_element_where_the_function_says() {
    let b = Builder::new();
    let seen: Seen<(u32, u64)> = Arc::default();
    let s = seen.clone();
    let numbers =
        b.new_source(|cx: SourceContext| (0..1000u64).filter(move |i| *i % cx.parallelism as u64 == cx.index as u64));
    // Even numbers to partition 0, odd ones to 1 and 2.
    numbers
        .repartition_with(3, |n: &u64, parts| {
            if n.is_multiple_of(2) {
                vec![0]
            } else {
                vec![1 % parts, 2 % parts]
            }
        })
        .transform(TagWithTask::default)
        .parallelism(1)
        .consume(move |x: (u32, u64)| s.lock().unwrap().push(x));
    let t = b.build("repartition", Config::new()).unwrap();
    let out = run_until(t, &seen, |o| o.len() >= 500 + 2 * 500);
    assert_eq!(out.len(), 1500);
}

/// Tags elements with the transformer task's id (only to count them here) and keeps a running total as state.
#[derive(Default)]
struct TagWithTask {
    task: u32,
}

impl Transformer<u64, (u32, u64)> for TagWithTask {
    fn setup(&mut self, ctx: &egret_api::TopologyContext) -> Result<(), egret_api::UserError> {
        self.task = ctx.task_id().0;
        Ok(())
    }
    fn transform(&mut self, input: u64, out: &mut Vec<(u32, u64)>) -> Result<(), egret_api::UserError> {
        out.push((self.task, input));
        Ok(())
    }
}

#[test]
fn an_effectively_once_streamlet_count_is_exact_after_failures() {
    let total = 60_000;
    let b = Builder::new();
    b.new_source(words(total))
        .parallelism(2)
        .count_by_key(|w: &String| w.clone())
        .parallelism(2)
        .name("count");
    let config = Config::new()
        .with(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .with(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.02);
    let t = b.build("eo-count", config).unwrap();
    let store = Arc::new(MemoryStore::new());
    let options = SimulatorOptions {
        checkpoint_store: Some(store.clone()),
        ..Default::default()
    };
    let running = Simulator::start_with(t, options).unwrap();
    for task in [TaskId(1), TaskId(3), TaskId(2)] {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        assert!(running.fail_task(task));
    }
    // The end: a complete checkpoint whose sources have taken all their input (their state is that count).
    let sources: Vec<TaskId> = running
        .topology()
        .tasks()
        .filter(|&(_, c, _)| running.topology().components()[c].name == "source-1")
        .map(|(t, _, _)| t)
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let final_checkpoint = loop {
        let c = running.checkpoints().and_then(|s| s.complete.last().copied());
        let at_end = c.is_some_and(|c| {
            sources
                .iter()
                .map(|&t| {
                    use egret_checkpoint::CheckpointStore;
                    store
                        .load(c, t)
                        .ok()
                        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                })
                .sum::<u64>()
                == total as u64
        });
        if at_end {
            break c.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint holds the whole input"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // The counters' checkpointed state holds the exact counts (counts by encoded key). Read before stopping: newer
    // checkpoints keep coming and the oldest are deleted.
    let mut counts: HashMap<String, u64> = HashMap::new();
    // Components sort by name: `count` (tasks 1 and 2) before `source-1`.
    let counters: Vec<TaskId> = (1..=2).map(TaskId).collect();
    for t in counters {
        use egret_checkpoint::CheckpointStore;
        let bytes = store.load(final_checkpoint, t).unwrap();
        let entries: Vec<(Vec<u8>, u64)> = postcard::from_bytes(&bytes).unwrap();
        for (k, n) in entries {
            let w: String = postcard::from_bytes(&k).unwrap();
            *counts.entry(w).or_default() += n;
        }
    }
    running.stop();
    let expected: HashMap<String, u64> = oracle(total).into_iter().collect();
    assert_eq!(counts, expected);
}

/// Timestamped events: (key, ts). Each source task's events are out of order by at most `ooo` ms; the last event of
/// each task has a timestamp far past the others, so every window closes.
fn events(n: usize, ooo: i64, seed: u64) -> Vec<(String, i64)> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let key = ["a", "b", "c"][(next() % 3) as usize].to_string();
            let jitter = (next() % ooo as u64) as i64;
            (key, (i as i64) * 3 + jitter)
        })
        .collect()
}

#[test]
fn an_event_time_window_count_matches_the_oracle() {
    let (n, ooo) = (3000usize, 50i64);
    let input = Arc::new(events(n, ooo, 42));
    let b = Builder::new();
    let seen: Seen<(String, egret_streamlet::Window, u64)> = Arc::default();
    let s = seen.clone();
    let late: Seen<(String, i64)> = Arc::default();
    let l = late.clone();
    let src = Arc::clone(&input);
    let windowed = b
        .new_source(move |cx: SourceContext| {
            let mine: Vec<(String, i64)> = src
                .iter()
                .enumerate()
                .filter(|(i, _)| i % cx.parallelism as usize == cx.index as usize)
                .map(|(_, e)| e.clone())
                .chain(std::iter::once(("end".to_string(), i64::MAX / 4)))
                .collect();
            mine.into_iter()
        })
        .parallelism(2)
        .count_by_key_and_window(
            |e: &(String, i64)| e.0.clone(),
            egret_streamlet::WindowSpec::tumbling_time(100).event_time(|e: &(String, i64)| e.1, ooo),
        );
    // One window task: it receives from every source task (see the watermark limitation in docs/streamlets.md).
    windowed
        .results
        .parallelism(1)
        .consume(move |r| s.lock().unwrap().push(r));
    windowed.late.consume(move |e| l.lock().unwrap().push(e));
    let t = b.build("windows", Config::new()).unwrap();
    let keys_windows = {
        let mut m: BTreeMap<(String, i64), u64> = BTreeMap::new();
        for (k, ts) in input.iter() {
            *m.entry((k.clone(), ts.div_euclid(100) * 100)).or_default() += 1;
        }
        m
    };
    let out = run_until(t, &seen, |o| {
        let mut last: BTreeMap<(String, i64), u64> = BTreeMap::new();
        for (k, w, c) in o {
            last.insert((k.clone(), w.start), *c);
        }
        keys_windows.iter().all(|(kw, c)| last.get(kw) == Some(c))
    });
    let mut last: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (k, w, c) in out {
        assert_eq!(w.end - w.start, 100);
        if k != "end" {
            last.insert((k, w.start), c);
        }
    }
    assert!(
        late.lock().unwrap().is_empty(),
        "disorder within the bound: nothing is late"
    );
    assert_eq!(last, keys_windows);
}

/// (ad, ts) events of one side: `n` of them over a few ads, timestamps increasing, then an `end` past every window.
fn side(n: usize, ads: u64, seed: u64) -> Vec<(u64, i64)> {
    let mut x = seed | 1;
    let mut events: Vec<(u64, i64)> = (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % ads, i as i64 * 7)
        })
        .collect();
    events.push((u64::MAX, i64::MAX / 4));
    events
}

/// For each (ad, window start): (left count, right count).
type PerWindow = BTreeMap<(u64, i64), (usize, usize)>;

fn per_window(left: &[(u64, i64)], right: &[(u64, i64)]) -> PerWindow {
    let mut m: BTreeMap<(u64, i64), (usize, usize)> = BTreeMap::new();
    for &(ad, ts) in left.iter().filter(|e| e.0 != u64::MAX) {
        m.entry((ad, ts.div_euclid(100) * 100)).or_default().0 += 1;
    }
    for &(ad, ts) in right.iter().filter(|e| e.0 != u64::MAX) {
        m.entry((ad, ts.div_euclid(100) * 100)).or_default().1 += 1;
    }
    m
}

/// The expected counts per window, and how many join outputs each (ad, window) got.
fn run_join(join_type: egret_streamlet::JoinType) -> (PerWindow, BTreeMap<(u64, i64), usize>) {
    use egret_streamlet::{JoinSide, WindowSpec};
    let (clicks, impressions) = (Arc::new(side(600, 5, 3)), Arc::new(side(900, 5, 11)));
    let b = Builder::new();
    let (c, i) = (Arc::clone(&clicks), Arc::clone(&impressions));
    let left = b
        .new_source(move |_cx: SourceContext| Vec::clone(&c).into_iter())
        .name("clicks");
    let right = b
        .new_source(move |_cx: SourceContext| Vec::clone(&i).into_iter())
        .name("impressions");
    let ts = |e: &JoinSide<(u64, i64), (u64, i64)>| match e {
        JoinSide::Left(x) | JoinSide::Right(x) => x.1,
    };
    let joined = left.join(
        &right,
        |c: &(u64, i64)| c.0,
        |i: &(u64, i64)| i.0,
        WindowSpec::tumbling_time(100).event_time(ts, 0),
        join_type,
        |c: Option<(u64, i64)>, i: Option<(u64, i64)>| (c.is_some(), i.is_some()),
    );
    let seen: Seen<(u64, egret_streamlet::Window, (bool, bool))> = Arc::default();
    let s = seen.clone();
    joined.results.name("join").consume(move |r| s.lock().unwrap().push(r));
    let expected = per_window(&clicks, &impressions);
    let outputs = |m: &PerWindow| -> usize {
        m.values()
            .map(|&(l, r)| match join_type {
                egret_streamlet::JoinType::Inner => l * r,
                egret_streamlet::JoinType::LeftOuter => {
                    if r == 0 {
                        l
                    } else {
                        l * r
                    }
                }
                egret_streamlet::JoinType::RightOuter => {
                    if l == 0 {
                        r
                    } else {
                        l * r
                    }
                }
                egret_streamlet::JoinType::Outer => {
                    if r == 0 {
                        l
                    } else if l == 0 {
                        r
                    } else {
                        l * r
                    }
                }
            })
            .sum()
    };
    let want = outputs(&expected);
    let t = b.build("join", Config::new()).unwrap();
    let out = run_until(t, &seen, |o| o.iter().filter(|r| r.0 != u64::MAX).count() >= want);
    let mut got: BTreeMap<(u64, i64), usize> = BTreeMap::new();
    for (ad, w, _) in out.into_iter().filter(|r| r.0 != u64::MAX) {
        *got.entry((ad, w.start)).or_default() += 1;
    }
    (expected, got)
}

#[test]
fn a_windowed_inner_join_pairs_every_click_with_every_impression_of_its_window() {
    let (expected, got) = run_join(egret_streamlet::JoinType::Inner);
    let want: BTreeMap<(u64, i64), usize> = expected
        .into_iter()
        .filter(|(_, (l, r))| l * r > 0)
        .map(|(k, (l, r))| (k, l * r))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_windowed_left_outer_join_keeps_the_clicks_without_impressions() {
    let (expected, got) = run_join(egret_streamlet::JoinType::LeftOuter);
    let want: BTreeMap<(u64, i64), usize> = expected
        .into_iter()
        .map(|(k, (l, r))| (k, if r == 0 { l } else { l * r }))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn event_time_session_windows_close_on_the_gap_and_route_late_elements_aside() {
    use egret_streamlet::WindowSpec;
    let input = vec![
        ("a", 0),
        ("a", 10),
        ("a", 20),
        ("b", 15),
        ("a", 500),
        ("a", 510),
        ("a", 5),
        ("end", i64::MAX / 4),
    ];
    let b = Builder::new();
    let seen: Seen<(String, egret_streamlet::Window, u64)> = Arc::default();
    let late: Seen<(String, i64)> = Arc::default();
    let (s, l) = (seen.clone(), late.clone());
    let sessions = b
        .new_source(move |_cx: SourceContext| input.clone().into_iter().map(|(k, ts)| (k.to_string(), ts)))
        .count_by_key_and_window(
            |e: &(String, i64)| e.0.clone(),
            WindowSpec::session(50).event_time(|e: &(String, i64)| e.1, 0),
        );
    sessions.results.consume(move |r| s.lock().unwrap().push(r));
    sessions.late.consume(move |e| l.lock().unwrap().push(e));
    let out = run_until(b.build("sessions", Config::new()).unwrap(), &seen, |o| {
        o.iter().filter(|r| r.0 != "end").count() >= 3
    });
    let got: Vec<(String, i64, i64, u64)> = out
        .into_iter()
        .filter(|r| r.0 != "end")
        .map(|(k, w, n)| (k, w.start, w.end, n))
        .collect();
    assert_eq!(
        got,
        vec![
            ("b".to_string(), 15, 65, 1),
            ("a".to_string(), 0, 70, 3),
            ("a".to_string(), 500, 560, 2)
        ],
        "sessions end a gap after their last element, in order of end"
    );
    assert_eq!(
        *late.lock().unwrap(),
        vec![("a".to_string(), 5)],
        "the element behind a closed session is late"
    );
}

/// A reliable spout of the numbers `0..n` (message id = the number) that records its acks and fails.
struct Numbers {
    n: u64,
    next: u64,
    acked: Arc<Mutex<Vec<u64>>>,
    failed: Arc<Mutex<Vec<u64>>>,
}

impl egret_api::Spout for Numbers {
    fn declare_outputs(&self, out: &mut egret_api::OutputDeclarer) {
        out.declare(["n", "label"]);
    }
    fn next_tuple(&mut self, out: &mut egret_api::SpoutCollector<'_>) {
        if self.next < self.n {
            // Every 100th number is labelled so that it does not convert.
            let label = if self.next % 100 == 99 { "bad" } else { "ok" };
            out.emit_with_id(self.next, (self.next as i64, label));
            self.next += 1;
        }
    }
    fn ack(&mut self, id: egret_api::MessageId) {
        self.acked.lock().unwrap().push(id);
    }
    fn fail(&mut self, id: egret_api::MessageId) {
        self.failed.lock().unwrap().push(id);
    }
}

#[test]
fn a_streamlet_source_from_a_spout_keeps_its_acks_and_fails() {
    let n = 1000u64;
    let (acked, failed): (Seen<u64>, Seen<u64>) = Default::default();
    let b = Builder::new();
    let (a, f) = (acked.clone(), failed.clone());
    let seen: Seen<i64> = Arc::default();
    let s = seen.clone();
    b.new_spout_source(
        move || Numbers {
            n,
            next: 0,
            acked: a.clone(),
            failed: f.clone(),
        },
        |t: &egret_api::Tuple<'_>| match t.get_str("label")? {
            "ok" => Ok(t.get_i64("n")?),
            other => Err(format!("label {other}").into()),
        },
    )
    .name("numbers")
    .map(|x: i64| x * 2)
    .consume(move |x| s.lock().unwrap().push(x));
    let config = Config::new().with(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce);
    let t = b.build("spout-source", config).unwrap();
    assert!(t.component("numbers").is_some());
    let running = Simulator::start(t).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() + failed.lock().unwrap().len() < n as usize
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    running.stop();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let want: Vec<i64> = (0..n as i64).filter(|x| x % 100 != 99).map(|x| x * 2).collect();
    assert_eq!(got, want, "every converted tuple is an element");
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    assert_eq!(
        acked,
        (0..n).filter(|x| x % 100 != 99).collect::<Vec<_>>(),
        "processed elements are acked"
    );
    let mut failed = failed.lock().unwrap().clone();
    failed.sort();
    assert_eq!(
        failed,
        (0..n).filter(|x| x % 100 == 99).collect::<Vec<_>>(),
        "tuples that do not convert are failed"
    );
}
