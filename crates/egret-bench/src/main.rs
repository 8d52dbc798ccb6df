//! `egret-bench`: benchmarks that run Egret's real path and end with one machine-readable line:
//!
//!     RESULT bench=wordcount mode=simulator semantics=atmost spouts=1 bolts=1 tuples_per_s=... cpu_s=... p50_ms=... p99_ms=...
//!
//! `tuples_per_s` counts tuples executed by the counting bolts per second of the measured window (after the
//! warm-up); `cpu_s` is the CPU time (user + system) the topology used over that window; latencies are emit-to-ack
//! (complete latency) under at-least-once and `na` otherwise.
//!
//! Two modes run the same word count topology:
//!
//! - `--mode simulator`: every task on a thread of this process. `cpu_s` is this process's CPU time, `peak_rss_mb`
//!   its peak RSS, and p50/p99 come from the spouts' complete-latency histograms, reset at the start of the window.
//! - `--mode local`: real processes on the local cluster (`egret submit local` into a temporary EGRET_HOME; see
//!   [`local`]). Counts come from the metrics managers, `cpu_s` is summed over every process of the topology from
//!   `/proc`, and `peak_rss_mb_<kind>` is the largest peak RSS (VmHWM) of each kind of process. The instances export
//!   the complete latency as a histogram; at-least-once runs report the window's p50, p99 and `p999_ms` (from the
//!   difference of the histograms scraped at the window's two ends), and add
//!   `mean_complete_ms` (the exported gauge, a mean since each spout task started, averaged over the spout tasks)
//!   and `window_mean_complete_ms` (the mean over the trees completed in the measured window, derived from the
//!   gauge and the spouts' ack counters).
//!
//! `egret-bench rescale` runs `egret update` on a stateful word count on the local cluster and reports how long it
//! takes and the throughput dip around it (see [`rescale`]).

mod kafka;
mod local;
mod rescale;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use egret::simulator::Simulator;
use egret::{Config, ReliabilityMode, keys};
use egret_examples::word_count::{self, WordCountOptions};

#[derive(Parser)]
#[command(about = "Egret benchmarks; each prints a RESULT line last")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Heron's word count: random words, fields grouping on the word, a counting bolt.
    Wordcount(WordcountArgs),
    /// The cost of one update of each kind of user metric on the task thread (ns per update), beside a locked
    /// atomic add.
    UserMetrics(UserMetricsArgs),
    /// A Kafka source feeding a word count in the simulator, against a real broker: throughput of records read and
    /// counted, or end-to-end latency at a fixed production rate (`--rate`).
    Kafka(kafka::KafkaArgs),
    /// Live rescaling on the local cluster: `egret update --component-parallelism count:<to>` and back on a running
    /// stateful word count; the time `egret update` takes and the throughput dip around it, per window.
    Rescale(rescale::RescaleArgs),
}

#[derive(Parser)]
struct UserMetricsArgs {
    /// Updates per kind and round.
    #[arg(long, default_value_t = 100_000_000)]
    updates: u64,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// Nanoseconds per call of `update` over `n` calls: the median of `rounds` runs.
fn ns_per_update(n: u64, rounds: usize, mut update: impl FnMut(u64)) -> f64 {
    let mut runs: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let started = Instant::now();
            for i in 0..n {
                update(std::hint::black_box(i));
            }
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn user_metrics(a: UserMetricsArgs) -> anyhow::Result<()> {
    use egret::metrics::{MetricRegistry, Reducer, latency_buckets_seconds};
    use std::hint::black_box;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let r = MetricRegistry::new();
    let second = Duration::from_secs(1);
    let counter = r.counter("counter", second)?;
    let mut multi = r.multi_counter("multi", second)?;
    let mean = r.reduced("mean", Reducer::Mean, second)?;
    let max = r.reduced("max", Reducer::Max, second)?;
    let histogram = r.histogram("histogram", latency_buckets_seconds(), second)?;
    let atomic = AtomicU64::new(0);
    let keys = ["alpha", "beta", "gamma", "delta"];
    let (n, rounds) = (a.updates, a.rounds);
    let figures = [
        ("counter_ns", ns_per_update(n, rounds, |_| black_box(&counter).incr())),
        (
            "fetch_add_ns",
            ns_per_update(n, rounds, |_| {
                black_box(&atomic).fetch_add(1, Relaxed);
            }),
        ),
        (
            "multi_counter_ns",
            ns_per_update(n, rounds, |i| black_box(&mut multi).incr(keys[(i & 3) as usize])),
        ),
        (
            "reduced_mean_ns",
            ns_per_update(n, rounds, |i| black_box(&mean).update(i as f64)),
        ),
        (
            "reduced_max_ns",
            ns_per_update(n, rounds, |i| black_box(&max).update(i as f64)),
        ),
        (
            "histogram_ns",
            ns_per_update(n, rounds, |i| black_box(&histogram).observe((i & 1023) as f64 * 1e-3)),
        ),
    ];
    // Keep the cells observable, so the loops cannot be dropped; each update goes through a `black_box`ed reference,
    // so none is merged with the next or hoisted out of its loop.
    black_box((counter.get(), atomic.load(Relaxed), multi.get("alpha")));
    let mut line = format!("RESULT bench=user-metrics updates={n} rounds={rounds}");
    for (name, ns) in figures {
        line.push_str(&format!(" {name}={ns:.2}"));
    }
    println!("{line}");
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// All tasks in this process, on threads.
    Simulator,
    /// Real processes on the local cluster: `egret submit local word-count-topology` into a temporary EGRET_HOME.
    Local,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Semantics {
    Atmost,
    Atleast,
    /// Checkpoints every second (`topology.stateful.checkpoint.interval.seconds`, overridable with
    /// `--config-property`); the spouts' position and the counts are the checkpointed state.
    EffectivelyOnce,
}

impl Semantics {
    fn as_str(self) -> &'static str {
        match self {
            Semantics::Atmost => "atmost",
            Semantics::Atleast => "atleast",
            Semantics::EffectivelyOnce => "effectively-once",
        }
    }

    fn reliability(self) -> ReliabilityMode {
        match self {
            Semantics::Atmost => ReliabilityMode::AtMostOnce,
            Semantics::Atleast => ReliabilityMode::AtLeastOnce,
            Semantics::EffectivelyOnce => ReliabilityMode::EffectivelyOnce,
        }
    }
}

/// Which API the word count is written with.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Api {
    /// Spouts and bolts (`WordSpout`, `CountBolt`).
    Topology,
    /// The Streamlet API: a source and `count_by_key`.
    Streamlet,
}

/// Which language the word count's components are written in.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Language {
    /// `word_count::topology` (examples/src/word_count.rs).
    Rust,
    /// Heron's Python word count on heronpy (`tests/python/word_count_topology.py`, its `WordSpout` of 6 words and
    /// `CountBolt`), run by Egret's Python instance; `--mode local` only, `--words` does not apply.
    Python,
}

impl Language {
    fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
        }
    }
}

#[derive(Parser)]
struct WordcountArgs {
    #[arg(long, value_enum, default_value = "simulator")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "rust")]
    language: Language,
    #[arg(long, value_enum, default_value = "topology")]
    api: Api,
    #[arg(long, value_enum, default_value = "atmost")]
    semantics: Semantics,
    #[arg(long, default_value_t = 1)]
    spouts: u32,
    #[arg(long, default_value_t = 1)]
    bolts: u32,
    /// Containers (stmgrs) to spread the tasks over; local mode only [default: 2].
    #[arg(long)]
    containers: Option<u32>,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Cap on the spouts' total emit rate, tuples per second (for latency runs).
    #[arg(long)]
    rate: Option<f64>,
    /// Dictionary size: random 20-character words, as in Heron's example (128 Ki words there).
    #[arg(long, default_value_t = 10_000)]
    words: usize,
    /// With `--api streamlet`: count per word in tumbling processing-time windows of this many milliseconds
    /// (`count_by_key_and_window`) instead of a running count; also reports the latency from a window's end to its
    /// result reaching the sink (`window_p50_ms`, `window_p99_ms`; exact in the simulator, from the sink's histogram
    /// on the local cluster).
    #[arg(long)]
    window_ms: Option<i64>,
    /// The counting bolt increments a user counter (`words-counted`) per word, as production topologies do;
    /// `--api topology` only.
    #[arg(long)]
    user_counter: bool,
    /// Extra topology config, key=value (repeatable).
    #[arg(long = "config-property", value_parser = parse_kv)]
    config: Vec<(String, String)>,
    /// Local mode: copy the topology's logs to this directory before the temporary EGRET_HOME is removed.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// What a run measured, for the RESULT line.
struct Outcome {
    mode: &'static str,
    /// Containers the topology ran in (local mode).
    containers: Option<u32>,
    tuples_per_s: f64,
    cpu_s: f64,
    /// Complete latency percentiles in ms, when measured.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Mode-specific `key=value` fields, written after the latencies in this order.
    extra: Vec<(String, String)>,
}

/// The RESULT line: the run's parameters, then what it measured.
fn result_line(a: &WordcountArgs, o: &Outcome) -> String {
    let ms = |v: Option<f64>| v.map_or("na".to_string(), |v| format!("{v:.3}"));
    let mut line = format!(
        "RESULT bench=wordcount mode={} language={} api={} semantics={} spouts={} bolts={}",
        o.mode,
        a.language.as_str(),
        match a.api {
            Api::Topology => "topology",
            Api::Streamlet => "streamlet",
        },
        a.semantics.as_str(),
        a.spouts,
        a.bolts
    );
    if let Some(c) = o.containers {
        line.push_str(&format!(" containers={c}"));
    }
    line.push_str(&format!(
        " words={} rate={} tuples_per_s={:.0} cpu_s={:.2} p50_ms={} p99_ms={}",
        match a.language {
            Language::Rust => a.words,
            // Heron's Python WordSpout cycles through its 6 words.
            Language::Python => 6,
        },
        a.rate.map_or("max".to_string(), |r| format!("{r:.0}")),
        o.tuples_per_s,
        o.cpu_s,
        ms(o.p50_ms),
        ms(o.p99_ms),
    ));
    for (k, v) in &o.extra {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}

/// Prints one line per measured interval to stderr: seconds into the window and the rate over the interval.
struct Progress {
    start: Instant,
    last: (Instant, f64),
}

impl Progress {
    fn new(start: Instant, count: f64) -> Self {
        Progress {
            start,
            last: (start, count),
        }
    }

    fn update(&mut self, now: Instant, count: f64) {
        eprintln!(
            "  {:>5.1} s  {:>8.3} M tuples/s",
            now.duration_since(self.start).as_secs_f64(),
            (count - self.last.1) / now.duration_since(self.last.0).as_secs_f64() / 1e6
        );
        self.last = (now, count);
    }
}

/// User + system CPU time and peak RSS of this process.
fn usage() -> (Duration, u64) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64 * 1024)
}

fn wordcount(a: WordcountArgs) -> anyhow::Result<()> {
    if a.seconds <= 0.0 || a.warmup < 0.0 {
        bail!("--seconds must be positive and --warmup not negative");
    }
    if a.words == 0 {
        bail!("--words must be at least 1");
    }
    if a.window_ms.is_some() && a.api != Api::Streamlet {
        bail!("--window-ms needs --api streamlet");
    }
    if a.window_ms.is_some_and(|ms| ms <= 0) {
        bail!("--window-ms must be positive");
    }
    if a.language == Language::Python
        && (a.api != Api::Topology
            || a.semantics == Semantics::EffectivelyOnce
            || a.rate.is_some()
            || a.user_counter
            || !matches!(a.mode, Mode::Local))
    {
        bail!(
            "--language python runs Heron's Python word count on the local cluster: --mode local, --api topology, \
             --semantics atmost or atleast, no --rate or --user-counter"
        );
    }
    let outcome = match a.mode {
        Mode::Simulator => {
            if a.containers.is_some() || a.keep_logs.is_some() {
                bail!("--containers and --keep-logs apply to --mode local only");
            }
            simulator(&a)?
        }
        Mode::Local => local::run(&a)?,
    };
    println!("{}", result_line(&a, &outcome));
    Ok(())
}

fn simulator(a: &WordcountArgs) -> anyhow::Result<Outcome> {
    let mut config = Config::new();
    if a.semantics == Semantics::EffectivelyOnce {
        config.set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 1);
    }
    for (k, v) in &a.config {
        config.set(k.clone(), v);
    }
    let reliability = a.semantics.reliability();
    let options = WordCountOptions {
        spouts: a.spouts,
        bolts: a.bolts,
        words: Arc::new(word_count::random_dictionary(a.words, 0x5eed)),
        reliability,
        rate: a.rate,
        config,
        user_counter: a.user_counter,
    };
    // Window results: microseconds from each window's end to its result reaching the sink, and how many.
    let window_latency = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let topology = match (a.api, a.window_ms) {
        (Api::Topology, _) => word_count::topology(&options)?,
        (Api::Streamlet, None) => word_count::streamlet_topology(&options)?,
        (Api::Streamlet, Some(ms)) => {
            let latency = Arc::clone(&window_latency);
            word_count::streamlet_window_topology(&options, ms, move |_, window, _| {
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                if let Ok(mut l) = latency.lock() {
                    l.push(now_us - window.end * 1000);
                }
            })?
        }
    };
    let running = Simulator::start(topology).context("starting the simulator")?;
    eprintln!("warming up for {} s", a.warmup);
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    running.reset_complete_latency();
    let (cpu0, _) = usage();
    let start = Instant::now();
    let count0 = running.metrics().component("count").executed;
    let end = start + Duration::from_secs_f64(a.seconds);
    let mut progress = Progress::new(start, count0 as f64);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())));
        let now = Instant::now();
        let c = running.metrics().component("count").executed;
        progress.update(now, c as f64);
    }
    let elapsed = start.elapsed();
    let count1 = running.metrics().component("count").executed;
    let (cpu1, peak_rss) = usage();
    let latency = running.complete_latency();
    let errors = running.errors();
    let finished = running.abort();
    if let Some((task, e)) = errors.first().or(finished.errors.first()) {
        bail!("task {task} reported an error: {e}");
    }
    let mut extra = vec![(
        "peak_rss_mb".to_string(),
        format!("{:.1}", peak_rss as f64 / (1024.0 * 1024.0)),
    )];
    if a.window_ms.is_some() {
        let mut l = window_latency.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_unstable();
        let q = |q: f64| {
            l.get(((l.len() as f64 - 1.0) * q).round() as usize)
                .map_or("na".to_string(), |us| format!("{:.1}", *us as f64 / 1000.0))
        };
        extra.extend([
            ("window_results".to_string(), l.len().to_string()),
            ("window_p50_ms".to_string(), q(0.5)),
            ("window_p99_ms".to_string(), q(0.99)),
        ]);
    }
    if let Some(c) = &finished.checkpoints {
        if let Some(e) = c.errors.first() {
            bail!("checkpoints: {e}");
        }
        let mut ms: Vec<f64> = c.durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let q = |q: f64| {
            ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
                .map_or("na".into(), |v| format!("{v:.1}"))
        };
        extra.extend([
            ("checkpoints".to_string(), c.stats.completed.to_string()),
            ("checkpoint_p50_ms".to_string(), q(0.5)),
            ("checkpoint_p99_ms".to_string(), q(0.99)),
            ("state_bytes".to_string(), c.last_bytes.to_string()),
        ]);
    }
    let (p50_ms, p99_ms) = if reliability == ReliabilityMode::AtLeastOnce && !latency.is_empty() {
        let ms = |q: f64| Some(latency.value_at_quantile(q) as f64 / 1000.0);
        (ms(0.50), ms(0.99))
    } else {
        (None, None)
    };
    Ok(Outcome {
        mode: "simulator",
        containers: None,
        tuples_per_s: (count1 - count0) as f64 / elapsed.as_secs_f64(),
        cpu_s: (cpu1 - cpu0).as_secs_f64(),
        p50_ms,
        p99_ms,
        extra,
    })
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Wordcount(a) => wordcount(a),
        Bench::UserMetrics(a) => user_metrics(a),
        Bench::Kafka(a) => kafka::run(a),
        Bench::Rescale(a) => rescale::run(a),
    };
    if let Err(e) = result {
        eprintln!("egret-bench: {e:#}");
        std::process::exit(1);
    }
}
