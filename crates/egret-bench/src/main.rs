//! `egret-bench`: benchmarks that run Egret's real path and end with one machine-readable line:
//!
//!     RESULT bench=wordcount mode=simulator semantics=atmost spouts=1 bolts=1 tuples_per_s=... cpu_s=... p50_ms=... p99_ms=...
//!
//! `tuples_per_s` counts tuples executed by the counting bolts per second of the measured window (after the
//! warm-up); `cpu_s` is the process's user + system CPU time over that window; latencies are emit-to-ack (complete
//! latency) under at-least-once and `na` otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use egret::simulator::Simulator;
use egret::{Config, ReliabilityMode};
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// All tasks in this process, on threads.
    Simulator,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Semantics {
    Atmost,
    Atleast,
}

#[derive(Parser)]
struct WordcountArgs {
    #[arg(long, value_enum, default_value = "simulator")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "atmost")]
    semantics: Semantics,
    #[arg(long, default_value_t = 1)]
    spouts: u32,
    #[arg(long, default_value_t = 1)]
    bolts: u32,
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
    /// Extra topology config, key=value (repeatable).
    #[arg(long = "config-property", value_parser = parse_kv)]
    config: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
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
    let mut config = Config::new();
    for (k, v) in &a.config {
        config.set(k.clone(), v);
    }
    let reliability = if a.semantics == Semantics::Atleast {
        ReliabilityMode::AtLeastOnce
    } else {
        ReliabilityMode::AtMostOnce
    };
    let options = WordCountOptions {
        spouts: a.spouts,
        bolts: a.bolts,
        words: Arc::new(word_count::random_dictionary(a.words, 0x5eed)),
        reliability,
        rate: a.rate,
        config,
    };
    let topology = word_count::topology(&options)?;
    let running = match a.mode {
        Mode::Simulator => Simulator::start(topology).context("starting the simulator")?,
    };
    eprintln!("warming up for {} s", a.warmup);
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    running.reset_complete_latency();
    let (cpu0, _) = usage();
    let start = Instant::now();
    let count0 = running.metrics().component("count").executed;
    let end = start + Duration::from_secs_f64(a.seconds);
    let mut last = (start, count0);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())));
        let now = Instant::now();
        let c = running.metrics().component("count").executed;
        eprintln!(
            "  {:>5.1} s  {:>8.3} M tuples/s",
            now.duration_since(start).as_secs_f64(),
            (c - last.1) as f64 / now.duration_since(last.0).as_secs_f64() / 1e6
        );
        last = (now, c);
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
    let tuples_per_s = (count1 - count0) as f64 / elapsed.as_secs_f64();
    let (p50, p99) = if reliability == ReliabilityMode::AtLeastOnce && !latency.is_empty() {
        let ms = |q: f64| format!("{:.3}", latency.value_at_quantile(q) as f64 / 1000.0);
        (ms(0.50), ms(0.99))
    } else {
        ("na".to_string(), "na".to_string())
    };
    let semantics = if reliability == ReliabilityMode::AtLeastOnce {
        "atleast"
    } else {
        "atmost"
    };
    println!(
        "RESULT bench=wordcount mode=simulator semantics={semantics} spouts={} bolts={} words={} rate={} \
         tuples_per_s={:.0} cpu_s={:.2} p50_ms={p50} p99_ms={p99} peak_rss_mb={:.1}",
        a.spouts,
        a.bolts,
        a.words,
        a.rate.map_or("max".to_string(), |r| format!("{r:.0}")),
        tuples_per_s,
        (cpu1 - cpu0).as_secs_f64(),
        peak_rss as f64 / (1024.0 * 1024.0),
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Wordcount(a) => wordcount(a),
    };
    if let Err(e) = result {
        eprintln!("egret-bench: {e:#}");
        std::process::exit(1);
    }
}
