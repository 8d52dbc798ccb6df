//! `egret-bench rescale`: live rescaling of a running stateful word count on the local cluster, through the real
//! `egret update` a user runs.
//!
//! 1. `egret submit local rescale-word-count` (built next to this executable: `word` → fields(word) → `count`, the
//!    counts in a `KeyedState`) into a temporary EGRET_HOME, `--from` counting tasks; wait until every process runs,
//!    then warm up.
//! 2. Each round: wait `--gap` seconds, run `egret update local word-count --component-parallelism count:<to>` and
//!    time it from invoking the command to its exit (it exits once every instance of the new plan runs and, under
//!    effectively-once, a checkpoint completed under the new layout); wait `--gap` seconds, then the same back to
//!    `--from`.
//! 3. Throughput: every task object of the topology writes a figure with a timestamp every 20 ms while it works
//!    (`rescale_word_count.rs`), and a thread here reads those files every 20 ms. After the run each object's figure
//!    is interpolated linearly at the edges of `--window-ms` windows. **Net progress** is the spouts' position (words
//!    emitted since the start, rolled back with the checkpointed state; per spout task the newest object's figure):
//!    a rollback throws work away and shows as a drop. **Work** is the tuples the counting objects executed, summed
//!    (executing a tuple again after a rollback counts). The metricsmgrs' `egret_execute_count` is published once a
//!    second per task, too coarse for a dip of a second or two.
//! 4. Per update, from the net progress: `steady` is the median window rate over the `--steady` seconds before it;
//!    the dip is the lowest window from the update's start until `--steady` seconds after `egret update` returned,
//!    as a fraction of `steady`; `below_s` is the time in those windows under `--below` × steady, and `recovered_s`
//!    the time from invoking `egret update` to the end of the last such window. The lag at a time `t` is how far
//!    the position is behind `position(t0) + steady × (t − t0)`, in seconds of steady throughput, up to the next
//!    update's steady period (or the end): `max_lag_s` is its peak, `lost_s` its value at the end (throughput the
//!    rescale cost for good; at a fixed `--rate` with room to catch up it returns to about 0, at full rate it is
//!    within the noise of the machine's throughput over those seconds) and `caught_up_s` the time from invoking
//!    `egret update` until the lag is back within one window after its peak (0 if it never was more than a
//!    window). `work_lowest` is the lowest work window over the steady work rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Parser;

use crate::Semantics;
use crate::local::{self, CLUSTER, LocalCluster, TOPOLOGY};

#[derive(Parser)]
pub struct RescaleArgs {
    #[arg(long, value_enum, default_value = "effectively-once")]
    semantics: Semantics,
    /// The component to rescale: the counter (`count`, its counts a `KeyedState` split and merged by key group).
    #[arg(long, default_value = "count")]
    component: String,
    /// Counting tasks at the start, and after each scale-back.
    #[arg(long, default_value_t = 2)]
    from: u32,
    /// Counting tasks after each scale-out (or -in, if smaller than `--from`).
    #[arg(long, default_value_t = 4)]
    to: u32,
    #[arg(long, default_value_t = 2)]
    spouts: u32,
    /// Containers (stmgrs) at submission.
    #[arg(long, default_value_t = 2)]
    containers: u32,
    /// Rounds of from→to→from.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Cap on the spouts' total emit rate, words per second; without it, full rate.
    #[arg(long)]
    rate: Option<f64>,
    /// Dictionary size (random 20-character words).
    #[arg(long, default_value_t = 10_000)]
    words: usize,
    /// Checkpoint interval under effectively-once.
    #[arg(long, default_value_t = 1.0)]
    checkpoint_secs: f64,
    /// Throughput window.
    #[arg(long, default_value_t = 250)]
    window_ms: u64,
    /// Seconds between one update's return and the next update.
    #[arg(long, default_value_t = 10.0)]
    gap: f64,
    /// Seconds of windows the steady rate is the median of, before an update (and `after`, after it).
    #[arg(long, default_value_t = 4.0)]
    steady: f64,
    /// A window below this fraction of the steady rate counts as the dip.
    #[arg(long, default_value_t = 0.5)]
    below: f64,
    /// Seconds after every process runs before the first gap.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Print every window's rate around each update to stderr.
    #[arg(long)]
    timeline: bool,
    /// Copy the topology's logs to this directory before the temporary EGRET_HOME is removed.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
}

/// One `egret update` and its timing (unix ns).
struct Update {
    round: usize,
    from: u32,
    to: u32,
    started: u128,
    returned: u128,
    /// What `egret update` printed: `rescaled word-count: count 2→4 in X s`.
    says_s: Option<f64>,
}

/// What one update measured (rates in tuples per second; see the module's doc).
struct Figures {
    update_s: f64,
    steady: f64,
    lowest: f64,
    below_s: f64,
    recovered_s: f64,
    max_lag_s: f64,
    lost_s: f64,
    caught_up_s: Option<f64>,
    work_lowest: f64,
}

pub fn run(a: RescaleArgs) -> anyhow::Result<()> {
    if a.component != "count" {
        bail!(
            "--component count only: the spout's position in this word count is state saved its own way, which \
             stays with the task of the same index (a spout could not shrink)"
        );
    }
    if a.from == 0 || a.to == 0 || a.from == a.to || a.rounds == 0 || a.window_ms == 0 || a.steady <= 0.0 {
        bail!("--from and --to must differ and be at least 1; --rounds, --window-ms and --steady positive");
    }
    let egret = local::sibling_binary("egret")?;
    let bin = local::sibling_binary("rescale-word-count")?;
    local::catch_interrupts();
    let mut cluster = LocalCluster::new(egret, a.keep_logs.clone())?;
    let out = cluster.home.join("progress");
    let result = measure(&mut cluster, &bin, &out, &a);
    drop(cluster);
    result
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn measure(cluster: &mut LocalCluster, bin: &Path, out: &Path, a: &RescaleArgs) -> anyhow::Result<()> {
    let mut args: Vec<String> = vec![
        "submit".into(),
        CLUSTER.into(),
        bin.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--spouts".into(),
        a.spouts.to_string(),
        "--bolts".into(),
        a.from.to_string(),
        "--containers".into(),
        a.containers.to_string(),
        "--words".into(),
        a.words.to_string(),
        "--semantics".into(),
        a.semantics.as_str().into(),
        "--checkpoint-secs".into(),
        a.checkpoint_secs.to_string(),
    ];
    if let Some(r) = a.rate {
        args.extend(["--rate".into(), r.to_string()]);
    }
    eprintln!(
        "submitting: {} --home {} {}",
        cluster.egret.display(),
        cluster.home.display(),
        args.join(" ")
    );
    cluster.submitted = true;
    cluster.egret_ok(&args)?;
    local::check_interrupted()?;
    let procs = cluster.wait_ready(a.spouts + a.from)?;
    eprintln!("running: {} processes; warming up for {} s", procs.len(), a.warmup);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (out, stop) = (out.to_path_buf(), Arc::clone(&stop));
        std::thread::spawn(move || sample(&out, &stop))
    };
    let begin = unix_ns() + (a.warmup * 1e9) as u128;
    let run = updates(cluster, a);
    stop.store(true, Ordering::SeqCst);
    let series = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampling thread panicked"))?;
    let updates = run?;
    let end = unix_ns();

    let window = a.window_ms as u128 * 1_000_000;
    let edges: Vec<u128> = (0..).map(|k| begin + k * window).take_while(|&t| t <= end).collect();
    let net: Vec<f64> = edges.iter().map(|&t| position_at(&series, t)).collect();
    let work: Vec<f64> = edges.iter().map(|&t| work_at(&series, t)).collect();
    let per_s = |c: &[f64]| -> Vec<(u128, f64)> {
        edges
            .iter()
            .zip(c.windows(2))
            .map(|(t, c)| (*t, (c[1] - c[0]) / (a.window_ms as f64 / 1000.0)))
            .collect()
    };
    let curves = Curves {
        edges: &edges,
        position: &net,
        net: per_s(&net),
        work: per_s(&work),
        window,
    };

    let mut rows = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        let limit = updates
            .get(i + 1)
            .map_or(end, |next| next.started.saturating_sub((a.steady * 1e9) as u128));
        if a.timeline {
            print_timeline(&curves, u, limit, a);
        }
        rows.push(figures(&curves, u, limit, a));
    }

    let log_sizes = local::log_sizes(&cluster.home);
    let checkpoints = if a.semantics == Semantics::EffectivelyOnce {
        local::checkpoint_figures(&cluster.home)
    } else {
        Vec::new()
    };
    cluster.kill()?;
    local::report_log_problems(&cluster.home, &log_sizes);

    println!(
        "{:>5} {:>6} {:>8} {:>7} {:>10} {:>7} {:>7} {:>11} {:>9} {:>11} {:>7} {:>11}",
        "round",
        "change",
        "update_s",
        "egret_s",
        "steady_M/s",
        "lowest",
        "below_s",
        "recovered_s",
        "max_lag_s",
        "caught_up_s",
        "lost_s",
        "work_lowest"
    );
    let opt = |v: Option<f64>| v.map_or("na".to_string(), |s| format!("{s:.2}"));
    for (u, f) in updates.iter().zip(&rows) {
        println!(
            "{:>5} {:>6} {:>8.2} {:>7} {:>10.3} {:>7.2} {:>7.2} {:>11.2} {:>9.2} {:>11} {:>7.2} {:>11.2}",
            u.round,
            format!("{}→{}", u.from, u.to),
            f.update_s,
            opt(u.says_s),
            f.steady / 1e6,
            f.lowest,
            f.below_s,
            f.recovered_s,
            f.max_lag_s,
            opt(f.caught_up_s),
            f.lost_s,
            f.work_lowest,
        );
    }
    let mut line = format!(
        "RESULT bench=rescale semantics={} component={} from={} to={} spouts={} rounds={} rate={} window_ms={} \
         checkpoint_s={}",
        a.semantics.as_str(),
        a.component,
        a.from,
        a.to,
        a.spouts,
        a.rounds,
        a.rate.map_or("max".to_string(), |r| format!("{r:.0}")),
        a.window_ms,
        a.checkpoint_secs
    );
    for (name, up) in [("out", true), ("back", false)] {
        let mine: Vec<&Figures> = updates
            .iter()
            .zip(&rows)
            .filter(|(u, _)| (u.to == a.to) == up)
            .map(|(_, r)| r)
            .collect();
        let pick = |f: &dyn Fn(&Figures) -> Option<f64>| -> String {
            let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
            if v.is_empty() {
                "na".to_string()
            } else {
                format!("{:.2}", median(v))
            }
        };
        line.push_str(&format!(
            " {name}_update_s={} {name}_steady_m_per_s={} {name}_lowest={} {name}_below_s={} {name}_recovered_s={} \
             {name}_max_lag_s={} {name}_caught_up_s={} {name}_lost_s={} {name}_work_lowest={}",
            pick(&|f| Some(f.update_s)),
            pick(&|f| Some(f.steady / 1e6)),
            pick(&|f| Some(f.lowest)),
            pick(&|f| Some(f.below_s)),
            pick(&|f| Some(f.recovered_s)),
            pick(&|f| Some(f.max_lag_s)),
            pick(&|f| f.caught_up_s),
            pick(&|f| Some(f.lost_s)),
            pick(&|f| Some(f.work_lowest)),
        ));
    }
    for (k, v) in checkpoints {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
    Ok(())
}

/// The rounds of `egret update`, each after a gap; the last is followed by a gap too.
fn updates(cluster: &LocalCluster, a: &RescaleArgs) -> anyhow::Result<Vec<Update>> {
    let gap = Duration::from_secs_f64(a.gap.max(a.steady));
    local::sleep_checked(Duration::from_secs_f64(a.warmup) + gap)?;
    let mut done = Vec::new();
    for round in 1..=a.rounds {
        for (from, to) in [(a.from, a.to), (a.to, a.from)] {
            let parallelism = format!("{}:{to}", a.component);
            let started = unix_ns();
            let clock = Instant::now();
            let said = cluster.egret_ok(&["update", CLUSTER, TOPOLOGY, "--component-parallelism", &parallelism])?;
            let took = clock.elapsed();
            let returned = unix_ns();
            let says_s = said.lines().find_map(egret_says_s);
            eprintln!(
                "round {round}: egret update {parallelism} returned after {:.2} s ({})",
                took.as_secs_f64(),
                said.lines().last().unwrap_or("").trim()
            );
            done.push(Update {
                round,
                from,
                to,
                started,
                returned,
                says_s,
            });
            local::sleep_checked(gap)?;
        }
    }
    Ok(done)
}

/// The seconds in `rescaled <t>: <change> in X s`.
fn egret_says_s(line: &str) -> Option<f64> {
    let rest = line.strip_prefix("rescaled ")?;
    let (_, tail) = rest.rsplit_once(" in ")?;
    tail.strip_suffix(" s")?.trim().parse().ok()
}

/// Each task object's progress points, `(unix ns, figure)`, by file name, as read every 20 ms until `stop`.
type Series = BTreeMap<String, Vec<(u128, u64)>>;

fn sample(dir: &Path, stop: &AtomicBool) -> Series {
    let mut series = Series::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let Some(point) = std::fs::read_to_string(e.path()).ok().as_deref().and_then(parse_point) else {
                    continue;
                };
                let points = series.entry(name).or_default();
                if points.last().is_none_or(|last| last.0 < point.0) {
                    points.push(point);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    series
}

/// `<unix ns> <count>`.
fn parse_point(text: &str) -> Option<(u128, u64)> {
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// A progress file's name: `<component>-<task>-<pid>-<n>.txt`.
fn file_key(name: &str) -> Option<(&str, u32)> {
    let mut parts = name.strip_suffix(".txt")?.rsplitn(4, '-');
    let (_n, _pid, task, component) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((component, task.parse().ok()?))
}

/// Tuples executed by every counting object up to `t`: each object's points interpolated linearly (0 before its
/// first point, its last count after its last one), summed.
fn work_at(series: &Series, t: u128) -> f64 {
    series
        .iter()
        .filter(|(name, _)| file_key(name).is_some_and(|(c, _)| c == "count"))
        .map(|(_, points)| value_at(points, t))
        .sum()
}

/// The spouts' position at `t`: per spout task, the figure of its newest object that had written by then.
fn position_at(series: &Series, t: u128) -> f64 {
    let mut newest: BTreeMap<u32, &Vec<(u128, u64)>> = BTreeMap::new();
    for (name, points) in series {
        let Some(("word", task)) = file_key(name) else { continue };
        let Some(&(first, _)) = points.first() else { continue };
        if first > t {
            continue;
        }
        let e = newest.entry(task).or_insert(points);
        if e[0].0 < first {
            *e = points;
        }
    }
    newest.values().map(|points| value_at(points, t)).sum()
}

fn value_at(points: &[(u128, u64)], t: u128) -> f64 {
    let after = points.partition_point(|p| p.0 <= t);
    match (after.checked_sub(1).map(|i| points[i]), points.get(after)) {
        (None, _) => 0.0,
        (Some((_, c)), None) => c as f64,
        (Some((t0, c0)), Some(&(t1, c1))) => c0 as f64 + (c1 as f64 - c0 as f64) * ((t - t0) as f64 / (t1 - t0) as f64),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The run's progress at window edges and the rates per window `(window start, tuples/s)`.
struct Curves<'a> {
    edges: &'a [u128],
    /// The spouts' position at each edge.
    position: &'a [f64],
    net: Vec<(u128, f64)>,
    work: Vec<(u128, f64)>,
    window: u128,
}

/// The figures of one update; `limit` ends the range its dip and lag are looked for in.
fn figures(c: &Curves, u: &Update, limit: u128, a: &RescaleArgs) -> Figures {
    let (steady_ns, window) = ((a.steady * 1e9) as u128, c.window);
    let before = |rates: &[(u128, f64)]| {
        median(
            rates
                .iter()
                .filter(|(t, _)| *t + window <= u.started && *t + steady_ns >= u.started)
                .map(|r| r.1)
                .collect(),
        )
    };
    // The dip is looked for in the windows that overlap [started, returned + steady) (and end before `limit`): later
    // windows of a noisy machine would count as dips of their own.
    let dip_end = limit.min(u.returned + steady_ns);
    let during = |rates: &[(u128, f64)]| -> Vec<(u128, f64)> {
        rates
            .iter()
            .filter(|(t, _)| *t + window > u.started && *t < dip_end)
            .copied()
            .collect()
    };
    let lowest = |v: &[(u128, f64)]| v.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    let (steady, work_steady) = (before(&c.net), before(&c.work));
    let net = during(&c.net);
    let low: Vec<&(u128, f64)> = net.iter().filter(|r| r.1 < a.below * steady).collect();
    let secs = |ns: u128| ns as f64 / 1e9;

    // The lag behind the steady line from the last edge at or before the update, at every edge up to `limit`.
    let i0 = c.edges.partition_point(|&t| t <= u.started).saturating_sub(1);
    let (t0, p0) = (c.edges[i0], c.position[i0]);
    let lags: Vec<(u128, f64)> = c
        .edges
        .iter()
        .zip(c.position)
        .skip(i0)
        .take_while(|(t, _)| **t <= limit)
        .map(|(t, p)| (*t, (p0 + steady * secs(t - t0) - p) / steady.max(1.0)))
        .collect();
    let peak = lags
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.1.total_cmp(&y.1.1))
        .map_or(0, |(i, _)| i);
    // Never more than a window behind: caught up at once.
    let caught_up_s = if lags.get(peak).is_none_or(|l| l.1 <= secs(window)) {
        Some(0.0)
    } else {
        lags[peak..]
            .iter()
            .find(|(_, lag)| *lag <= secs(window))
            .map(|(t, _)| secs(t.saturating_sub(u.started)))
    };
    Figures {
        update_s: secs(u.returned - u.started),
        steady,
        lowest: lowest(&net) / steady.max(1.0),
        below_s: low.len() as f64 * secs(window),
        recovered_s: low
            .last()
            .map_or(0.0, |r| secs((r.0 + window).saturating_sub(u.started))),
        max_lag_s: lags.get(peak).map_or(0.0, |l| l.1),
        lost_s: lags.last().map_or(0.0, |l| l.1),
        caught_up_s,
        work_lowest: lowest(&during(&c.work)) / work_steady.max(1.0),
    }
}

fn print_timeline(c: &Curves, u: &Update, limit: u128, a: &RescaleArgs) {
    let from = u.started.saturating_sub(1_000_000_000);
    let to = (u.returned + 3_000_000_000).min(limit);
    eprintln!(
        "round {} {}→{} (s from invoking egret update: net/work M tuples/s per {} ms window; egret update returned \
         at {:.2} s):",
        u.round,
        u.from,
        u.to,
        a.window_ms,
        (u.returned - u.started) as f64 / 1e9
    );
    let cells: Vec<String> = c
        .net
        .iter()
        .zip(&c.work)
        .filter(|((t, _), _)| *t >= from && *t < to)
        .map(|((t, n), (_, w))| {
            format!(
                "{:+.2}:{:.2}/{:.2}",
                (*t as f64 - u.started as f64) / 1e9,
                n / 1e6,
                w / 1e6
            )
        })
        .collect();
    for chunk in cells.chunks(6) {
        eprintln!("  {}", chunk.join("  "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_progress_is_interpolated_per_object_and_summed() {
        let mut s = Series::new();
        s.insert("count-3-10-0.txt".into(), vec![(1_000, 100), (2_000, 200)]);
        // An object that started later: nothing before its first point.
        s.insert("count-5-11-0.txt".into(), vec![(1_500, 50)]);
        assert_eq!(work_at(&s, 500), 0.0);
        assert_eq!(work_at(&s, 1_000), 100.0);
        assert_eq!(work_at(&s, 1_250), 125.0);
        assert_eq!(work_at(&s, 1_500), 200.0);
        assert_eq!(work_at(&s, 3_000), 250.0);
        // A spout task's position is its newest object's: a rollback at 1 500 went back from 1 500 to 1 000.
        s.insert("word-1-12-0.txt".into(), vec![(1_000, 1_000), (1_400, 1_400)]);
        s.insert("word-1-12-1.txt".into(), vec![(1_500, 1_000), (2_000, 1_500)]);
        s.insert("word-2-13-0.txt".into(), vec![(1_000, 7)]);
        assert_eq!(position_at(&s, 1_200), 1_207.0);
        assert_eq!(position_at(&s, 1_450), 1_407.0);
        assert_eq!(position_at(&s, 1_750), 1_257.0);
        assert_eq!(file_key("word-1-12-0.txt"), Some(("word", 1)));
        assert_eq!(file_key("my-count-10-12-3.txt"), Some(("my-count", 10)));
        assert_eq!(file_key("count-x.txt"), None);
        assert_eq!(
            parse_point("1700000000000000000 42\n"),
            Some((1_700_000_000_000_000_000, 42))
        );
        assert_eq!(parse_point("x"), None);
    }

    #[test]
    fn rescale_reads_the_seconds_egret_update_printed() {
        assert_eq!(egret_says_s("rescaled word-count: count 2→4 in 3.2 s"), Some(3.2));
        assert_eq!(egret_says_s("topology word-count: update accepted"), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn rescale_dip_figures_come_from_the_windows_around_an_update() {
        let s = 1_000_000_000u128;
        let w = s / 4;
        // 4 M/s steady for 4 s, then 1 s at 1 M/s from the update at 4 s, then 4 M/s again: 0.75 s of throughput
        // lost for good.
        let rate = |k: u128| if (16..20).contains(&k) { 1e6 } else { 4e6 };
        let edges: Vec<u128> = (0..=40u128).map(|k| k * w).collect();
        let position: Vec<f64> = edges.iter().map(|t| (0..t / w).map(|k| rate(k) / 4.0).sum()).collect();
        let net: Vec<(u128, f64)> = (0..40u128).map(|k| (k * w, rate(k))).collect();
        let c = Curves {
            edges: &edges,
            position: &position,
            work: net.clone(),
            net,
            window: w,
        };
        let u = Update {
            round: 1,
            from: 2,
            to: 4,
            started: 4 * s,
            returned: 5 * s + w,
            says_s: None,
        };
        let a = RescaleArgs::parse_from(["x"]);
        let f = figures(&c, &u, 10 * s, &a);
        assert_eq!(f.steady, 4e6);
        assert_eq!(f.lowest, 0.25);
        assert_eq!(f.work_lowest, 0.25);
        assert_eq!(f.below_s, 1.0);
        assert_eq!(f.recovered_s, 1.0);
        assert!((f.max_lag_s - 0.75).abs() < 1e-9, "{}", f.max_lag_s);
        assert!((f.lost_s - 0.75).abs() < 1e-9, "{}", f.lost_s);
        assert_eq!(f.caught_up_s, None);
        assert!((f.update_s - 1.25).abs() < 1e-9);
    }
}
