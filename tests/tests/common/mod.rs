//! Helpers shared by the end-to-end test binaries: a private cluster home, the egret binary, bounded waits.
#![allow(dead_code)]

pub mod chromium;
pub mod kube;
pub mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(90);

/// The `egret` binary, built next to this package's binaries (built here if missing).
pub fn egret_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_grouping-check"))
        .parent()
        .expect("binary dir")
        .to_path_buf();
    let bin = dir.join("egret");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "egret-cli", "--bin", "egret"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the egret binary");
        assert!(status.success(), "could not build the egret binary");
    }
    bin
}

/// A private EGRET_HOME; kills every topology in it and removes it on drop.
pub struct Cluster {
    pub home: PathBuf,
    /// The cluster its commands name: `local` unless made with [`Cluster::on`].
    pub cluster: String,
    /// Environment variables of its `egret` commands (e.g. `KUBECONFIG`).
    pub env: std::cell::RefCell<Vec<(String, String)>>,
    pub egret: PathBuf,
    /// Held for the cluster's life: the tests of a binary run one at a time, since each runs a dozen processes on
    /// a 2-core machine and several at once would starve each other past their deadlines.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::on("local")
    }

    /// A private home whose topologies run on `cluster` (configure it under `home/conf/<cluster>/`).
    pub fn on(cluster: &str) -> Cluster {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        static N: AtomicU32 = AtomicU32::new(0);
        let home = std::env::temp_dir().join(format!(
            "egret-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        Cluster {
            home,
            cluster: cluster.to_string(),
            env: Default::default(),
            egret: egret_bin(),
            _serial: serial,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.egret)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .envs(self.env.borrow().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("running egret")
    }

    /// Runs an egret command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "egret {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The topology's secret, as `egret submit` stored it in this home.
    pub fn secret(&self, topology: &str) -> egret_transport::auth::TopologySecret {
        egret_transport::auth::TopologySecret::load(&self.home, &self.cluster, topology).expect("the topology's secret")
    }

    pub fn explain(&self, topology: &str) -> Value {
        serde_json::from_str(&self.ok(&["explain", &self.cluster, topology, "--json"])).expect("explain --json is JSON")
    }

    pub fn pids(&self, topology: &str) -> Vec<i32> {
        self.explain(topology)["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["pid"].as_i64())
            .map(|p| p as i32)
            .filter(|&p| p > 0)
            .collect()
    }

    pub fn metrics_urls(&self, topology: &str) -> Vec<u16> {
        self.explain(topology)["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["http_port"].as_i64())
            .map(|p| p as u16)
            .collect()
    }

    /// Sum of a metric over every metricsmgr, for the series with the label `label_filter` (`key="value"`, or
    /// empty for every series). A metricsmgr that does not answer (restarting, say) counts as having none.
    pub fn metric_sum(&self, topology: &str, name: &str, label_filter: &str) -> f64 {
        let wanted = (!label_filter.is_empty()).then(|| {
            let (key, value) = label_filter
                .split_once('=')
                .unwrap_or_else(|| panic!("the filter {label_filter:?} is not key=\"value\""));
            (key, value.trim_matches('"'))
        });
        let mut sum = 0.0;
        for port in self.metrics_urls(topology) {
            let samples = match egret_metricsmgr::scrape_samples("127.0.0.1", port) {
                Ok(samples) => samples,
                Err(e @ egret_metricsmgr::ScrapeError::Parse { .. }) => panic!("{e}"),
                Err(_) => continue,
            };
            sum += samples
                .iter()
                .filter(|s| s.name == name && wanted.is_none_or(|(key, value)| s.label(key) == Some(value)))
                .map(|s| s.value)
                .sum::<f64>();
        }
        sum
    }

    pub fn print_logs(&self) {
        let dir = self.home.join("logs");
        for entry in walk(&dir) {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            let tail: Vec<&str> = text
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("==== {} ====\n{}", entry.display(), tail.join("\n"));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        let list = self.run(&["list", &self.cluster, "--json"]);
        if let Ok(Value::Array(ts)) = serde_json::from_slice::<Value>(&list.stdout) {
            for t in ts {
                if let Some(name) = t["name"].as_str() {
                    let _ = self.run(&["kill", &self.cluster, name]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Whether a process exists and has not exited: unlike [`alive`], a zombie (exited, not yet reaped by its new
/// parent, which can take a while when that is the machine's init) does not count.
pub fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may itself contain spaces or parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// The running processes (other than this one) whose command line or environment names `home`, with their
/// command lines: whatever a cluster in `home` started and left behind.
pub fn processes_naming(home: &Path) -> Vec<(i32, String)> {
    let needle = home.as_os_str().as_encoded_bytes();
    // `home` itself or a path under it, but not a sibling whose name merely starts the same (`...-1` vs `...-10`):
    // arguments and variables end with a NUL byte.
    let contains = |haystack: &[u8]| {
        haystack
            .windows(needle.len() + 1)
            .any(|w| w.starts_with(needle) && matches!(w[needle.len()], 0 | b'/'))
    };
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !running(pid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if contains(&cmdline) || contains(&environ) {
            let printable = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, printable));
        }
    }
    found
}

/// Polls `f` every 100 ms until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the grouping-check tasks wrote: component -> task -> JSON.
pub fn observations(out: &Path) -> BTreeMap<String, BTreeMap<u32, Value>> {
    let mut m: BTreeMap<String, BTreeMap<u32, Value>> = BTreeMap::new();
    for p in walk(out) {
        let Some(name) = p.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let Some((component, task)) = stem.rsplit_once('-') else {
            continue;
        };
        let (Ok(task), Ok(text)) = (task.parse::<u32>(), std::fs::read_to_string(&p)) else {
            continue;
        };
        if let Ok(v) = serde_json::from_str(&text) {
            m.entry(component.to_string()).or_default().insert(task, v);
        }
    }
    m
}

/// Pids of the running processes of one container whose name starts with `prefix`.
pub fn container_pids(c: &Cluster, topology: &str, container: i64, prefix: &str) -> Vec<i64> {
    c.explain(topology)["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["container"].as_i64() == Some(container) && p["name"].as_str().unwrap_or("").starts_with(prefix))
        .filter(|p| p["state"] == "running")
        .filter_map(|p| p["pid"].as_i64())
        .collect()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An `egret tracker` child process, killed when dropped.
pub struct Tracker {
    pub child: Child,
    pub port: u16,
}

impl Tracker {
    pub fn start(c: &Cluster) -> Tracker {
        let port_file = c.home.join("tracker.port");
        let child = Command::new(&c.egret)
            .arg("--home")
            .arg(&c.home)
            .args(["tracker", "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting egret tracker");
        let mut t = Tracker { child, port: 0 };
        t.port = wait_for("the tracker to write its port", || {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("the tracker exited early: {status}");
            }
            std::fs::read_to_string(&port_file).ok()?.trim().parse().ok()
        });
        t
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tracker {
    /// GET `path`; the status and the JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to the tracker");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("reading the tracker's answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {body}"));
        (status, json)
    }

    pub fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Asks the topology's tmanager for metrics, as the tracker does.
pub fn query_tmanager(
    c: &Cluster,
    topology: &str,
    q: egret_proto::egret::MetricsQuery,
) -> egret_proto::egret::MetricsQueryResponse {
    use egret_proto::egret::control;
    let plan = c.explain(topology);
    let tm = plan["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tmanager")
        .expect("a tmanager");
    let port = tm["port"].as_i64().expect("the tmanager's port") as u16;
    let stream = c.secret(topology).connect_to("127.0.0.1", port).unwrap();
    let (mut reader, mut writer) = egret_transport::split(stream, 16 << 20).unwrap();
    writer.send_control(control::Msg::MetricsQuery(q)).unwrap();
    match reader.read().unwrap() {
        egret_transport::Frame::Control(control::Msg::MetricsQueryResponse(r)) => r,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Running processes of `topology` whose names contain one of `kinds`: (pid, name).
pub fn victims(c: &Cluster, topology: &str, kinds: &[&str]) -> Vec<(i32, String)> {
    let e = c.explain(topology);
    e["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["state"] == "running")
                .filter_map(|p| Some((p["pid"].as_i64()? as i32, p["name"].as_str()?.to_string())))
                .filter(|(_, name)| kinds.iter().any(|k| name.contains(k)))
                .collect()
        })
        .unwrap_or_default()
}

/// A seed for a test's random schedule, printed so that a failure can be replayed with `EGRET_TEST_SEED`.
pub fn test_seed() -> u64 {
    let seed = std::env::var("EGRET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("seed {seed} (replay with EGRET_TEST_SEED={seed})");
    seed
}

/// Kills `n` processes of `topology` whose names contain one of `kinds` with SIGKILL, one every 1 to 2.5 s, chosen
/// at random; `progress` says how far the topology got at each kill (printed). Returns the names killed.
pub fn kill_randomly(
    c: &Cluster,
    topology: &str,
    kinds: &[&str],
    n: usize,
    progress: impl Fn() -> String,
) -> Vec<String> {
    let mut rng = egret_examples::SplitMix(test_seed());
    let mut killed = Vec::new();
    while killed.len() < n {
        std::thread::sleep(Duration::from_millis(1000 + rng.below(1500) as u64));
        let candidates = victims(c, topology, kinds);
        if candidates.is_empty() {
            continue;
        }
        let (pid, name) = candidates[rng.below(candidates.len())].clone();
        // SAFETY: SIGKILL to a process of this test's own topology.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        eprintln!("killed {name} (pid {pid}) with {}", progress());
        killed.push(name);
    }
    killed
}

/// Ids in `<out>/<prefix>*.log`, one per line.
pub fn ids(out: &Path, prefix: &str) -> (BTreeSet<u64>, u64) {
    let mut set = BTreeSet::new();
    let mut lines = 0;
    for p in walk(out) {
        if p.file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with(prefix))
        {
            for l in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                if let Ok(id) = l.trim().parse() {
                    set.insert(id);
                    lines += 1;
                }
            }
        }
    }
    (set, lines)
}

/// Waits until `reliable-check`'s spouts have acked every id of `0..n`, and checks that each reached a sink;
/// returns how many sink receipts there were (replays counted).
pub fn every_id_acked_and_received(out: &Path, n: u64) -> u64 {
    let all: BTreeSet<u64> = (0..n).collect();
    let acked = wait_for("every input to be acked", || {
        let (acked, _) = ids(out, "acked-");
        (acked == all).then_some(acked)
    });
    let (received, lines) = ids(out, "sink-");
    assert_eq!(acked, all, "acked ids are exactly the inputs");
    let missing: Vec<u64> = all.difference(&received).take(10).cloned().collect();
    assert!(
        missing.is_empty(),
        "inputs acked but never received by the sink: {missing:?}"
    );
    assert!(
        received.is_subset(&all),
        "the sink received ids that were never emitted"
    );
    lines
}

/// The counts the counter tasks last wrote (`count-<task>.txt`), summed.
pub fn counts(out: &Path) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for p in walk(out) {
        let name = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        if !(name.starts_with("count-") && name.ends_with(".txt")) {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
            if let Some((w, n)) = line.split_once(' ')
                && let Ok(n) = n.parse::<u64>()
            {
                *all.entry(w.to_string()).or_default() += n;
            }
        }
    }
    all
}

pub fn total(c: &BTreeMap<String, u64>) -> u64 {
    c.values().sum()
}

/// Waits until the counters' total reaches `want` and stays unchanged for two seconds; returns the counts.
pub fn settled(out: &Path, want: u64, limit: Duration) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + limit;
    let mut last = (BTreeMap::new(), Instant::now());
    loop {
        let now = counts(out);
        if now != last.0 {
            last = (now, Instant::now());
        } else if total(&last.0) >= want && last.1.elapsed() > Duration::from_secs(2) {
            return last.0;
        }
        assert!(
            Instant::now() < deadline,
            "the counts did not settle at {want} words within {limit:?}: {} counted",
            total(&last.0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
