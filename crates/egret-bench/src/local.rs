//! `--mode local`: the word count as real processes on the local cluster, driven through the `egret` CLI the way
//! a user runs it.
//!
//! 1. `egret` and `word-count-topology` are taken from the directory of this executable (all three are built by
//!    [`BUILD`]).
//! 2. A fresh EGRET_HOME under the system's temp dir holds the topology's state, package and logs; [`LocalCluster`]
//!    kills the topology and removes the directory when dropped, on errors and on Ctrl-C too.
//! 3. `egret --home <tmp> submit local <word-count-topology> ...` starts it; `egret explain local word-count --json`
//!    gives every process (executors, tmanager, stmgrs, metricsmgrs, instances) with its pid, and the metricsmgrs'
//!    HTTP ports.
//! 4. After the warm-up, the measured window starts and ends with a scrape of every metricsmgr's `/metrics`:
//!    `tuples_per_s` is the increase of `egret_execute_count` over the `count` component's series, summed over
//!    the metricsmgrs, divided by the time between the two scrapes. `cpu_s` is the increase of utime + stime
//!    (`/proc/<pid>/stat`) summed over every process of the topology, read right after each of the two scrapes.
//! 5. After the window: peak RSS (`VmHWM`) of every process, the largest per kind; then `egret kill`, which must
//!    exit 0 and leave no process running. Log lines that look like trouble are printed to stderr (split into
//!    those written during the run and while stopping); `--keep-logs DIR` keeps a copy of the logs.
//!
//! Latency: each spout instance exports its complete latency as a cumulative Prometheus histogram
//! (`egret_complete_latency_seconds_bucket{le=...}`, 12 buckets per decade). The window's distribution is the
//! difference of the two boundary scrapes, summed over the spout tasks; at-least-once runs report its `p50_ms`,
//! `p99_ms` and `p999_ms`, interpolated inside the bucket that holds each quantile (as Prometheus'
//! `histogram_quantile` does), so they are true window quantiles to within a bucket's width. They also add
//! `mean_complete_ms` (that gauge at the end of the window, averaged over the spout tasks) and
//! `window_mean_complete_ms` (the mean over the trees completed within the window: gauge × `egret_ack_count` is a
//! task's total latency so far, and the window's share is the difference between its two boundary scrapes).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use egret_metricsmgr::exposition::{self, Sample};
use egret_metricsmgr::quantile::histogram_quantile;
use serde_json::Value;

use crate::{Api, Language, Outcome, Progress, Semantics, WordcountArgs};

/// Builds the binaries local mode runs.
const BUILD: &str = "cargo build --release -p egret-cli -p egret-examples -p egret-bench";
pub(crate) const CLUSTER: &str = "local";
/// The name `word-count-topology` gives its topology.
pub(crate) const TOPOLOGY: &str = "word-count";
/// Process kinds, in the order of the RESULT line's `peak_rss_mb_<kind>` fields.
const KINDS: [&str; 5] = ["executor", "tmanager", "stmgr", "metricsmgr", "instance"];
/// How long the topology may take to show every process and metrics series.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Heron's Python word count, in the repository (`--language python`).
const PYTHON_WORD_COUNT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python/word_count_topology.py");

/// Runs the benchmark; the topology is killed and the temporary EGRET_HOME removed before this returns.
pub fn run(a: &WordcountArgs) -> anyhow::Result<Outcome> {
    let egret = sibling_binary("egret")?;
    let topology_bin = match a.language {
        Language::Rust => sibling_binary("word-count-topology")?,
        Language::Python => std::fs::canonicalize(PYTHON_WORD_COUNT)
            .with_context(|| format!("no Python word count at {PYTHON_WORD_COUNT}"))?,
    };
    catch_interrupts();
    let mut cluster = LocalCluster::new(egret, a.keep_logs.clone())?;
    let outcome = measure(&mut cluster, &topology_bin, a);
    drop(cluster);
    outcome
}

fn measure(cluster: &mut LocalCluster, topology_bin: &Path, a: &WordcountArgs) -> anyhow::Result<Outcome> {
    let containers = a.containers.unwrap_or(2);
    if containers == 0 {
        bail!("--containers must be at least 1");
    }
    let atleast = a.semantics == Semantics::Atleast;

    // egret's own options (--home, --config-property) go before the binary; the topology's options after it.
    let mut args: Vec<String> = vec!["submit".into(), CLUSTER.into()];
    for (k, v) in &a.config {
        args.push("--config-property".into());
        args.push(format!("{k}={v}"));
    }
    args.push(topology_bin.display().to_string());
    if a.language == Language::Python {
        // The heronpy word count, its components and topology named as the Rust one's (this module reads them by
        // those names); scripts/install-python installs what runs it.
        args.extend([
            TOPOLOGY.to_string(),
            "--containers".into(),
            containers.to_string(),
            "--spouts".into(),
            a.spouts.to_string(),
            "--bolts".into(),
            a.bolts.to_string(),
            "--spout-name".into(),
            "word".into(),
            "--bolt-name".into(),
            "count".into(),
            "--reliability".into(),
            if atleast { "ATLEAST_ONCE" } else { "ATMOST_ONCE" }.into(),
        ]);
    } else {
        args.extend(rust_topology_args(a, containers));
    }
    eprintln!(
        "submitting: {} --home {} {}",
        cluster.egret.display(),
        cluster.home.display(),
        args.join(" ")
    );
    cluster.submitted = true;
    cluster.egret_ok(&args)?;
    check_interrupted()?;
    measure_running(cluster, a, containers)
}

/// The options of `word-count-topology` for this run.
fn rust_topology_args(a: &WordcountArgs, containers: u32) -> Vec<String> {
    let atleast = a.semantics == Semantics::Atleast;
    let mut args = Vec::new();
    args.extend([
        "--containers".to_string(),
        containers.to_string(),
        "--spouts".into(),
        a.spouts.to_string(),
        "--bolts".into(),
        a.bolts.to_string(),
        "--random-words".into(),
        a.words.to_string(),
    ]);
    if atleast {
        args.push("--at-least-once".into());
    }
    if a.semantics == Semantics::EffectivelyOnce {
        args.push("--effectively-once".into());
    }
    if a.api == Api::Streamlet {
        args.push("--streamlet".into());
    }
    if a.user_counter {
        args.push("--user-counter".into());
    }
    if let Some(ms) = a.window_ms {
        args.push("--window-ms".into());
        args.push(ms.to_string());
    }
    if let Some(r) = a.rate {
        args.push("--rate".into());
        args.push(r.to_string());
    }
    args
}

/// Measures the submitted topology's window.
fn measure_running(cluster: &mut LocalCluster, a: &WordcountArgs, containers: u32) -> anyhow::Result<Outcome> {
    let atleast = a.semantics == Semantics::Atleast;

    // The windowed streamlet word count has a sink of `--bolts` tasks beside the counting ones.
    let tasks = a.spouts + a.bolts + if a.window_ms.is_some() { a.bolts } else { 0 };
    let procs = cluster.wait_ready(tasks)?;
    let ports: Vec<u16> = procs.iter().filter_map(|p| p.http_port).collect();
    let stmgrs = procs.iter().filter(|p| p.kind == "stmgr").count() as u32;
    if stmgrs != containers {
        eprintln!("note: asked for {containers} containers, the packing made {stmgrs}");
    }
    eprintln!("running: {} processes, metrics on ports {ports:?}", procs.len());
    for p in &procs {
        if p.restarts > 0 {
            eprintln!("warning: {} restarted {} time(s) while starting", p.name, p.restarts);
        }
    }

    eprintln!("warming up for {} s", a.warmup);
    sleep_checked(Duration::from_secs_f64(a.warmup))?;
    // Every task publishes its first values a second after it starts: do not open the window before each counting
    // (and, at-least-once, spout) task has been seen, or a late first value would count as throughput.
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut first = scrape(&ports)?;
    while tasks_with(&first, "egret_execute_count", "count") < a.bolts as usize
        || (atleast && tasks_with(&first, "egret_complete_latency", "word") < a.spouts as usize)
    {
        if Instant::now() > deadline {
            bail!("not every task published metrics within {READY_TIMEOUT:?} after the warm-up");
        }
        sleep_checked(Duration::from_millis(200))?;
        first = scrape(&ports)?;
    }

    // The window starts and ends with a scrape, and is scraped every whole second in between for the progress
    // lines. Each instance publishes its totals every second (it sleeps 1 s, then publishes, so its period is 1 s
    // plus a little), on a phase of its own, and a scrape sees each task's count as of its latest publish, 0 to 1 s
    // old. The window therefore counts the publishes that fell inside it: over a whole number of seconds that is
    // exactly `--seconds` publishes per task, unless a task's phase drifts across a window boundary, so the error is
    // that drift (milliseconds) and at worst one publish: ±1 s of counting, ±10 % of the default 10 s window. A
    // fractional `--seconds` adds up to one publish per task at random; each progress line is one publish per task.
    let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
    let start = first;
    let ticks0 = cpu_ticks(&pids)?;
    let count0 = executed(&start);
    let end = start.at + Duration::from_secs_f64(a.seconds);
    let mut progress = Progress::new(start.at, count0);
    let mut last = None;
    for k in 1.. {
        let next = (start.at + Duration::from_secs(k)).min(end);
        sleep_checked(next.saturating_duration_since(Instant::now()))?;
        let s = scrape(&ports)?;
        progress.update(s.at, executed(&s));
        last = Some(s);
        if next >= end {
            break;
        }
    }
    let last = last.context("the window ended before its first scrape")?;
    let ticks1 = cpu_ticks(&pids)?;
    let elapsed = last.at.duration_since(start.at).as_secs_f64();
    let tuples_per_s = (executed(&last) - count0) / elapsed;
    let hwm: Vec<u64> = pids.iter().map(|&p| peak_rss_kb(p)).collect::<anyhow::Result<_>>()?;

    // The same processes must have run the whole window, or the CPU and memory figures miss some of it.
    let after = cluster.processes()?;
    for p in &procs {
        match after.iter().find(|q| q.name == p.name) {
            Some(q) if q.pid == p.pid => {}
            Some(q) => bail!(
                "{} restarted during the measurement (pid {} -> {})",
                p.name,
                p.pid,
                q.pid
            ),
            None => bail!("{} disappeared during the measurement", p.name),
        }
    }

    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    let cpu: Vec<f64> = ticks0
        .iter()
        .zip(&ticks1)
        .map(|(t0, t1)| t1.saturating_sub(*t0) as f64 / tck)
        .collect();
    eprintln!("{:<28} {:>8} {:>8} {:>12}", "process", "pid", "cpu_s", "peak_rss_mb");
    for ((p, c), h) in procs.iter().zip(&cpu).zip(&hwm) {
        eprintln!("{:<28} {:>8} {:>8.2} {:>12.1}", p.name, p.pid, c, *h as f64 / 1024.0);
    }

    let window = window_latency_buckets(&start, &last, "egret_complete_latency_seconds_bucket", "word");
    let quantile_ms = |q: f64| {
        atleast
            .then(|| histogram_quantile(&window, q))
            .flatten()
            .map(|s| s * 1000.0)
    };
    let mut extra = Vec::new();
    if atleast {
        let fmt = |v: Option<f64>| v.map_or("na".to_string(), |v| format!("{v:.3}"));
        extra.push(("p999_ms".to_string(), fmt(quantile_ms(0.999))));
        extra.push(("mean_complete_ms".to_string(), fmt(mean_complete_ms(&last))));
        extra.push((
            "window_mean_complete_ms".to_string(),
            fmt(window_mean_complete_ms(&start, &last)),
        ));
    }
    if a.window_ms.is_some() {
        // The windowed word count's sink records how long after its window's end each result arrived
        // (`word_count::WINDOW_RESULT_LATENCY`, seconds, wall clock).
        let results = window_latency_buckets(&start, &last, "egret_user_window_result_latency_bucket", "results");
        let fmt = |q: f64| histogram_quantile(&results, q).map_or("na".to_string(), |s| format!("{:.1}", s * 1000.0));
        let count = results.last().map_or(0.0, |(_, c)| *c);
        extra.push(("window_results".to_string(), format!("{count:.0}")));
        extra.push(("window_p50_ms".to_string(), fmt(0.5)));
        extra.push(("window_p99_ms".to_string(), fmt(0.99)));
    }
    let mut kinds: Vec<&str> = KINDS.to_vec();
    for p in &procs {
        if !kinds.contains(&p.kind.as_str()) {
            kinds.push(&p.kind);
        }
    }
    for kind in kinds {
        let peak = procs
            .iter()
            .zip(&hwm)
            .filter(|(p, _)| p.kind == kind)
            .map(|(_, h)| *h)
            .max();
        if let Some(kb) = peak {
            extra.push((format!("peak_rss_mb_{kind}"), format!("{:.1}", kb as f64 / 1024.0)));
        }
    }

    if a.semantics == Semantics::EffectivelyOnce {
        extra.extend(checkpoint_figures(&cluster.home));
    }
    let log_sizes = log_sizes(&cluster.home);
    cluster.kill()?;
    report_log_problems(&cluster.home, &log_sizes);

    Ok(Outcome {
        mode: "local",
        containers: Some(stmgrs),
        tuples_per_s,
        cpu_s: cpu.iter().sum(),
        p50_ms: quantile_ms(0.50),
        p99_ms: quantile_ms(0.99),
        extra,
    })
}

/// The spouts' complete-latency histogram, summed over their tasks: (upper bound in seconds, cumulative count),
/// by increasing bound, `+Inf` last.
fn latency_buckets(s: &Scrape, metric: &str, component: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for x in s
        .samples
        .iter()
        .filter(|x| x.name == metric && x.label("component") == Some(component))
    {
        let Some(le) = x.label("le").and_then(exposition::parse_value) else {
            continue;
        };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += x.value,
            None => buckets.push((le, x.value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// What a histogram (`metric`, summed over `component`'s tasks) counted between two scrapes, as a cumulative
/// histogram (the later one minus the earlier).
fn window_latency_buckets(start: &Scrape, end: &Scrape, metric: &str, component: &str) -> Vec<(f64, f64)> {
    let before = latency_buckets(start, metric, component);
    latency_buckets(end, metric, component)
        .into_iter()
        .map(|(le, c)| {
            let earlier = before.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
            (le, (c - earlier).max(0.0))
        })
        .collect()
}

/// A binary built next to this one.
pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the egret-bench executable")?;
    let path = exe
        .parent()
        .context("the egret-bench executable has no directory")?
        .join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist: --mode local runs the binaries built next to egret-bench; build them with `{BUILD}`",
            path.display()
        );
    }
    Ok(path)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The executors run in process groups of their own, which a Ctrl-C does not reach: turn SIGINT and SIGTERM into
/// an error at the next check, so that the topology is killed on the way out.
pub(crate) fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub(crate) fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `d`, failing early when interrupted.
pub(crate) fn sleep_checked(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// One process of the topology, as `egret explain --json` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    name: String,
    kind: String,
    pid: i32,
    state: String,
    restarts: i64,
    http_port: Option<u16>,
}

/// The kind of a process: its name without the `-<n>` suffix (`stmgr-1` -> `stmgr`); `instance-<task>-<component>`
/// -> `instance`.
fn kind_of(name: &str) -> String {
    if name.starts_with("instance-") {
        return "instance".into();
    }
    match name.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base.into(),
        _ => name.into(),
    }
}

/// A private EGRET_HOME with (once submitted) the word count in it. Dropping it kills the topology — `egret kill`,
/// then SIGKILL to any process still running from this EGRET_HOME — copies the logs if asked, and removes the
/// directory.
pub(crate) struct LocalCluster {
    pub(crate) egret: PathBuf,
    pub(crate) home: PathBuf,
    keep_logs: Option<PathBuf>,
    pub(crate) submitted: bool,
    killed: bool,
}

impl LocalCluster {
    pub(crate) fn new(egret: PathBuf, keep_logs: Option<PathBuf>) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let home = std::env::temp_dir().join(format!("egret-bench-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&home).with_context(|| format!("cannot create {}", home.display()))?;
        Ok(LocalCluster {
            egret,
            home,
            keep_logs,
            submitted: false,
            killed: false,
        })
    }

    fn egret(&self, args: &[impl AsRef<OsStr>]) -> anyhow::Result<Output> {
        Command::new(&self.egret)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.egret.display()))
    }

    /// Runs an egret command that must exit 0; returns its stdout.
    pub(crate) fn egret_ok(&self, args: &[impl AsRef<OsStr>]) -> anyhow::Result<String> {
        let out = self.egret(args)?;
        if !out.status.success() {
            let words: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            bail!(
                "`egret {}` failed ({}):\n{}{}",
                words.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every process of the topology, from `egret explain --json`.
    fn processes(&self) -> anyhow::Result<Vec<Proc>> {
        let text = self.egret_ok(&["explain", CLUSTER, TOPOLOGY, "--json"])?;
        let v: Value = serde_json::from_str(&text).context("`egret explain --json` did not print JSON")?;
        let list = v["processes"]
            .as_array()
            .context("`egret explain --json` lists no processes")?;
        list.iter()
            .map(|p| {
                let name = p["name"].as_str().context("a process without a name")?.to_string();
                Ok(Proc {
                    kind: kind_of(&name),
                    pid: p["pid"].as_i64().unwrap_or(0) as i32,
                    state: p["state"].as_str().unwrap_or("").to_string(),
                    restarts: p["restarts"].as_i64().unwrap_or(0),
                    http_port: p["http_port"].as_u64().and_then(|p| u16::try_from(p).ok()),
                    name,
                })
            })
            .collect()
    }

    /// Waits until every process runs (with a pid) and every metricsmgr has an HTTP port.
    pub(crate) fn wait_ready(&self, tasks: u32) -> anyhow::Result<Vec<Proc>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let procs = self.processes()?;
            let instances = procs.iter().filter(|p| p.kind == "instance").count();
            let ready = instances == tasks as usize
                && procs
                    .iter()
                    .all(|p| p.pid > 0 && (p.kind == "executor" || p.state == "running"))
                && procs
                    .iter()
                    .filter(|p| p.kind == "metricsmgr")
                    .all(|p| p.http_port.is_some())
                && procs.iter().any(|p| p.kind == "metricsmgr");
            if ready {
                return Ok(procs);
            }
            if Instant::now() > deadline {
                let states: Vec<String> = procs
                    .iter()
                    .map(|p| format!("{} pid {} {} port {:?}", p.name, p.pid, p.state, p.http_port))
                    .collect();
                bail!(
                    "the topology was not fully up after {READY_TIMEOUT:?}:\n  {}",
                    states.join("\n  ")
                );
            }
            sleep_checked(Duration::from_millis(200))?;
        }
    }

    /// `egret kill`, which must exit 0 and leave no process of this EGRET_HOME running.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.killed = true;
        self.egret_ok(&["kill", CLUSTER, TOPOLOGY])?;
        let left = processes_under(&self.home);
        if !left.is_empty() {
            sigkill(&left);
            bail!("`egret kill` exited 0 but left processes {left:?} running (now sent SIGKILL)");
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.submitted && !self.killed {
            match self.egret(&["kill", CLUSTER, TOPOLOGY]) {
                Ok(out) if out.status.success() => {}
                // Submit failed and cleaned up after itself: nothing to kill.
                Ok(out) if String::from_utf8_lossy(&out.stderr).contains("no topology") => {}
                Ok(out) => eprintln!(
                    "egret-bench: egret kill failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ),
                Err(e) => eprintln!("egret-bench: {e:#}"),
            }
        }
        let left = processes_under(&self.home);
        if !left.is_empty() {
            eprintln!(
                "egret-bench: sending SIGKILL to processes {left:?} still running from {}",
                self.home.display()
            );
            sigkill(&left);
        }
        if let Some(dest) = &self.keep_logs {
            match copy_dir(&self.home.join("logs"), dest) {
                Ok(()) => eprintln!("logs copied to {}", dest.display()),
                Err(e) => eprintln!("egret-bench: could not copy the logs to {}: {e:#}", dest.display()),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.home) {
            eprintln!("egret-bench: could not remove {}: {e}", self.home.display());
        }
    }
}

/// Processes whose command line mentions `home`: every daemon gets `--home <home>` and every instance runs the
/// package uploaded under it. Never this process.
fn processes_under(home: &Path) -> Vec<i32> {
    let needle = home.as_os_str().as_bytes();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| !needle.is_empty() && cmd.windows(needle.len()).any(|w| w == needle))
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn sigkill(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: kill has no memory effects; these pids run from our private EGRET_HOME.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| format!("cannot copy to {}", target.display()))?;
        }
    }
    Ok(())
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The length of every log file now, to tell what was logged during the run from what was logged while stopping.
/// Effectively-once: the checkpoints the tmanager completed (its log's `checkpoint N complete duration_ms=.. bytes=..`
/// lines, the one place that sees every task's save): how many, their duration p50/p99 and the newest one's state
/// size.
pub(crate) fn checkpoint_figures(home: &Path) -> Vec<(String, String)> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let at = line.find(key)? + key.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()?
            .parse()
            .ok()
    };
    let mut durations = Vec::new();
    let mut bytes = None;
    for p in walk(&home.join("logs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("tmanager"))
    {
        for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
            if line.contains("complete") && line.contains("duration_ms=") {
                durations.extend(field(line, "duration_ms="));
                bytes = field(line, "bytes=").or(bytes);
            }
        }
    }
    durations.sort_by(f64::total_cmp);
    let q = |q: f64| {
        durations
            .get(((durations.len() as f64 - 1.0) * q).round() as usize)
            .map_or("na".to_string(), |v| format!("{v:.0}"))
    };
    vec![
        ("checkpoints".to_string(), durations.len().to_string()),
        ("checkpoint_p50_ms".to_string(), q(0.5)),
        ("checkpoint_p99_ms".to_string(), q(0.99)),
        (
            "state_bytes".to_string(),
            bytes.map_or("na".to_string(), |b| format!("{b:.0}")),
        ),
    ]
}

pub(crate) fn log_sizes(home: &Path) -> BTreeMap<PathBuf, usize> {
    walk(&home.join("logs"))
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len() as usize);
            (p, len)
        })
        .collect()
}

/// Whether a log line looks like trouble. The daemons and instances log through `tracing` (`<time> <LEVEL>
/// <who>: <message> <fields>`, see `egret_scheduler::logging`): those lines are trouble at WARN and ERROR, whatever
/// their words. Anything else in a log (a panic message, a process that still writes plain lines) is judged by a few
/// telling words.
fn looks_like_trouble(line: &str) -> bool {
    const WORDS: [&str; 5] = ["error", "panic", "fail", "restarting", "refused"];
    let mut words = line.split_whitespace();
    if let (Some(time), Some(level)) = (words.next(), words.next())
        && time.contains('T')
        && time.ends_with('Z')
        && matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
    {
        return matches!(level, "WARN" | "ERROR");
    }
    let lower = line.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
}

/// Prints the log lines that look like trouble (warnings, errors, panics, failures, restarts), split into those
/// written during the run and those written while the topology was being killed.
pub(crate) fn report_log_problems(home: &Path, sizes_at_kill: &BTreeMap<PathBuf, usize>) {
    let logs = home.join("logs");
    let mut during = Vec::new();
    let mut stopping = Vec::new();
    for path in walk(&logs) {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let split = sizes_at_kill.get(&path).copied().unwrap_or(0).min(bytes.len());
        let name = path.strip_prefix(&logs).unwrap_or(&path).display().to_string();
        for (part, out) in [(&bytes[..split], &mut during), (&bytes[split..], &mut stopping)] {
            for line in String::from_utf8_lossy(part).lines() {
                if looks_like_trouble(line) {
                    out.push(format!("{name}: {line}"));
                }
            }
        }
    }
    for (what, lines) in [("during the run", during), ("while stopping", stopping)] {
        if lines.is_empty() {
            continue;
        }
        eprintln!("log lines that look like trouble, {what} ({}):", lines.len());
        for l in lines.iter().take(20) {
            eprintln!("  {l}");
        }
        if lines.len() > 20 {
            eprintln!("  ... and {} more", lines.len() - 20);
        }
    }
}

/// Every metricsmgr's samples at one moment.
struct Scrape {
    at: Instant,
    samples: Vec<Sample>,
}

fn scrape(ports: &[u16]) -> anyhow::Result<Scrape> {
    let at = Instant::now();
    let mut samples = Vec::new();
    for &port in ports {
        let text = http_get_metrics(port)?;
        samples.extend(exposition::parse(&text).with_context(|| format!("parsing the metrics from port {port}"))?);
    }
    Ok(Scrape { at, samples })
}

/// `GET /metrics` over a plain TCP connection (the metricsmgr answers with Content-Length and closes).
fn http_get_metrics(port: u16) -> anyhow::Result<String> {
    let what = || format!("scraping http://127.0.0.1:{port}/metrics");
    let mut s = TcpStream::connect(("127.0.0.1", port)).with_context(what)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .with_context(what)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).with_context(what)?;
    let text = String::from_utf8(response).with_context(what)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{}: no end of headers", what()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        bail!("{}: {status}", what());
    }
    Ok(body.to_string())
}

/// Series of `name` for `component`, summed over streams, per task.
fn per_task(s: &Scrape, name: &str, component: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for x in s
        .samples
        .iter()
        .filter(|x| x.name == name && x.label("component") == Some(component))
    {
        *out.entry(x.label("task").unwrap_or("").to_string()).or_insert(0.0) += x.value;
    }
    out
}

fn tasks_with(s: &Scrape, name: &str, component: &str) -> usize {
    per_task(s, name, component).len()
}

/// Tuples executed by the counting bolts (all tasks, all input streams).
fn executed(s: &Scrape) -> f64 {
    per_task(s, "egret_execute_count", "count").values().sum()
}

/// The spouts' exported complete latency: a mean in ms since each spout task started, averaged over the tasks.
fn mean_complete_ms(s: &Scrape) -> Option<f64> {
    let means = per_task(s, "egret_complete_latency", "word");
    (!means.is_empty()).then(|| means.values().sum::<f64>() / means.len() as f64)
}

/// The mean complete latency of the trees completed between two scrapes: a spout task's gauge times its ack count
/// is the total latency of its completed trees, so the window's total is the difference of those products.
fn window_mean_complete_ms(start: &Scrape, end: &Scrape) -> Option<f64> {
    let (m0, n0) = (
        per_task(start, "egret_complete_latency", "word"),
        per_task(start, "egret_ack_count", "word"),
    );
    let (m1, n1) = (
        per_task(end, "egret_complete_latency", "word"),
        per_task(end, "egret_ack_count", "word"),
    );
    let (mut total_ms, mut trees) = (0.0, 0.0);
    for (task, mean1) in &m1 {
        let acked1 = n1.get(task).copied().unwrap_or(0.0);
        let (mean0, acked0) = (
            m0.get(task).copied().unwrap_or(0.0),
            n0.get(task).copied().unwrap_or(0.0),
        );
        total_ms += mean1 * acked1 - mean0 * acked0;
        trees += acked1 - acked0;
    }
    (trees > 0.0).then(|| total_ms / trees)
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`), in clock ticks.
fn cpu_ticks_of(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces; the fields after it start at field 3.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_ticks(pids: &[i32]) -> anyhow::Result<Vec<u64>> {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("process {pid} of the topology is gone"))?;
            cpu_ticks_of(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
        })
        .collect()
}

/// VmHWM (peak resident set) in kB from the text of `/proc/<pid>/status`.
fn vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..].split_whitespace().next()?.parse().ok()
}

fn peak_rss_kb(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} of the topology is gone"))?;
    vm_hwm_kb(&status).with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_of(text: &str) -> Scrape {
        Scrape {
            at: Instant::now(),
            samples: exposition::parse(text).unwrap(),
        }
    }

    #[test]
    fn window_quantiles_come_from_the_difference_of_two_histograms() {
        let start = scrape_of(
            r#"egret_complete_latency_seconds_bucket{component="word",task="3",le="0.001"} 10
egret_complete_latency_seconds_bucket{component="word",task="3",le="0.002"} 10
egret_complete_latency_seconds_bucket{component="word",task="3",le="+Inf"} 10"#,
        );
        // In the window: task 3 completes 90 trees at or below 1 ms and 10 between 1 and 2 ms; task 4 completes 100
        // at or below 1 ms.
        let end = scrape_of(
            r#"egret_complete_latency_seconds_bucket{component="word",task="3",le="0.001"} 100
egret_complete_latency_seconds_bucket{component="word",task="3",le="0.002"} 110
egret_complete_latency_seconds_bucket{component="word",task="3",le="+Inf"} 110
egret_complete_latency_seconds_bucket{component="word",task="4",le="0.001"} 100
egret_complete_latency_seconds_bucket{component="word",task="4",le="0.002"} 100
egret_complete_latency_seconds_bucket{component="word",task="4",le="+Inf"} 100
egret_complete_latency_seconds_bucket{component="count",task="1",le="+Inf"} 9999"#,
        );
        let w = window_latency_buckets(&start, &end, "egret_complete_latency_seconds_bucket", "word");
        assert_eq!(w, vec![(0.001, 190.0), (0.002, 200.0), (f64::INFINITY, 200.0)]);
        assert_eq!(histogram_quantile(&w, 0.5), Some(0.0005263157894736842));
        // rank 198 of 200: 8 of the 10 trees between 1 and 2 ms.
        let p99 = histogram_quantile(&w, 0.99).unwrap();
        assert!((p99 - 0.0018).abs() < 1e-12, "{p99}");
        assert_eq!(histogram_quantile(&[], 0.5), None);
        assert_eq!(histogram_quantile(&[(f64::INFINITY, 3.0)], 0.5), Some(0.0));
    }

    #[test]
    fn executed_sums_the_count_component_over_tasks_and_streams() {
        let s = scrape_of(
            r#"# HELP egret_execute_count x
egret_execute_count{topology="t",component="count",task="1",stream="word/default"} 10
egret_execute_count{topology="t",component="count",task="1",stream="other/default"} 5
egret_execute_count{topology="t",component="count",task="2"} 20
egret_execute_count{topology="t",component="counter",task="4"} 1000
egret_emit_count{topology="t",component="count",task="1"} 1000"#,
        );
        assert_eq!(executed(&s), 35.0);
        assert_eq!(tasks_with(&s, "egret_execute_count", "count"), 2);
    }

    #[test]
    fn window_mean_latency_comes_from_gauge_times_acks() {
        let start = scrape_of(
            r#"egret_complete_latency{component="word",task="3"} 2
egret_ack_count{component="word",task="3"} 100
egret_complete_latency{component="word",task="4"} 1
egret_ack_count{component="word",task="4"} 100"#,
        );
        // Task 3: 100 more trees at 1 ms (mean 1.5 over 200); task 4: 300 more at 3 ms (mean 2.5 over 400).
        let end = scrape_of(
            r#"egret_complete_latency{component="word",task="3"} 1.5
egret_ack_count{component="word",task="3"} 200
egret_complete_latency{component="word",task="4"} 2.5
egret_ack_count{component="word",task="4"} 400
egret_ack_count{component="count",task="1"} 99999"#,
        );
        assert_eq!(mean_complete_ms(&end), Some(2.0));
        let w = window_mean_complete_ms(&start, &end).unwrap();
        assert!((w - 2.5).abs() < 1e-9, "{w}");
        assert_eq!(window_mean_complete_ms(&end, &end), None);
        assert_eq!(mean_complete_ms(&scrape_of("")), None);
    }

    #[test]
    fn kinds_drop_the_number_and_instances_their_task() {
        assert_eq!(kind_of("executor-0"), "executor");
        assert_eq!(kind_of("tmanager"), "tmanager");
        assert_eq!(kind_of("stmgr-12"), "stmgr");
        assert_eq!(kind_of("metricsmgr-1"), "metricsmgr");
        assert_eq!(kind_of("instance-3-count"), "instance");
        assert_eq!(kind_of("instance-10-word-2"), "instance");
        assert_eq!(kind_of("odd-"), "odd-");
    }

    #[test]
    fn trouble_is_a_warning_an_error_or_a_telling_word_outside_tracing() {
        let who = "topology=word-count container=1 process=stmgr-1";
        for (line, trouble) in [
            (
                format!("2026-05-03T10:11:12.123456Z  INFO {who}: instance registered task=3"),
                false,
            ),
            // An error field in an INFO line is not trouble; the level says what the event is.
            (
                format!("2026-05-03T10:11:12.123456Z  INFO {who}: retried error_count=0"),
                false,
            ),
            (
                format!("2026-05-03T10:11:12.123456Z  WARN {who}: connection from 1.2.3.4:5 closed error=x"),
                true,
            ),
            (
                format!("2026-05-03T10:11:12.123456Z ERROR {who}: exiting error=x"),
                true,
            ),
            ("thread 'main' panicked at src/lib.rs:1:1:".to_string(), true),
            ("tmanager: stmgr-1 declared dead; refused".to_string(), true),
            ("all is well".to_string(), false),
        ] {
            assert_eq!(looks_like_trouble(&line), trouble, "{line}");
        }
    }

    #[test]
    fn proc_stat_and_status_parse() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 4 0 5 1000 200";
        assert_eq!(cpu_ticks_of(stat), Some(287));
        assert_eq!(cpu_ticks_of("1234 (x) S 1"), None);
        let status = "Name:\tegret\nVmPeak:\t  20000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(vm_hwm_kb(status), Some(5120));
        assert_eq!(vm_hwm_kb("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_cpu_and_memory_figures() {
        let me = std::process::id() as i32;
        assert_eq!(cpu_ticks(&[me]).unwrap().len(), 1);
        assert!(peak_rss_kb(me).unwrap() > 0);
    }
}
