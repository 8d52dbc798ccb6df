//! End-to-end test of `egret prometheus-config`: a real topology on the local cluster, the configuration the
//! command generates, and a real Prometheus (Debian's `/usr/bin/prometheus`, installed by
//! `scripts/install-test-deps`) scraping the topology's metrics managers with it. Every wait has a deadline;
//! Prometheus is killed on drop, the topology by the `Cluster`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOPOLOGY: &str = "grouping-check";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A `prometheus` child process, killed when dropped; its stderr goes to a file, printed if the test fails.
struct Prometheus {
    child: Child,
    port: u16,
    stderr: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free port with `config`, and waits until it is ready.
    fn start(config: &Path, dir: &Path) -> Prometheus {
        let binary = which_prometheus();
        // Binding port 0 then releasing it leaves a window in which another process can take the port: retry then.
        for attempt in 1..=5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("finding a free port")
                .port();
            let stderr = dir.join(format!("prometheus-{attempt}.stderr"));
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).expect("creating prometheus's stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let mut p = Prometheus { child, port, stderr };
            let ready = wait_for("prometheus to be ready", || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Some(Err(status));
                }
                (get(port, "/-/ready").map(|(status, _)| status) == Some(200)).then_some(Ok(()))
            });
            match ready {
                Ok(()) => return p,
                Err(status) if p.stderr_text().contains("address already in use") => {
                    eprintln!("prometheus lost port {port} to another process ({status}); retrying");
                }
                Err(status) => panic!("prometheus exited early: {status}"),
            }
        }
        panic!("prometheus could not get a free port in 5 attempts");
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// GET an API path that must answer 200 with `{"status": "success", "data": ...}`; the data.
    fn api(&self, path: &str) -> Value {
        let (status, body) = get(self.port, path).unwrap_or_else(|| panic!("GET {path}: prometheus did not answer"));
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {body}"));
        assert_eq!(
            (status, &json["status"]),
            (200, &Value::from("success")),
            "GET {path}: {body}"
        );
        json["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("==== prometheus stderr ====\n{}", self.stderr_text());
        }
    }
}

/// Prometheus's binary, or a failure that says how to install it.
fn which_prometheus() -> PathBuf {
    let path = PathBuf::from(PROMETHEUS);
    assert!(
        path.exists(),
        "{PROMETHEUS} is missing: this test runs a real Prometheus; install it with scripts/install-test-deps"
    );
    path
}

/// A plain HTTP/1.1 GET: the status and the body (de-chunked), or None if nothing answered.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Some((status, if chunked { dechunk(body)? } else { body.to_string() }))
}

/// Go's HTTP server sends larger answers chunked, even with `Connection: close`.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The `127.0.0.1:<port>` of every metrics manager of the topology, once all `containers + 1` have registered
/// (container 0's, the tmanager's, and one per container).
fn metrics_managers(c: &Cluster, containers: usize) -> BTreeSet<String> {
    wait_for("every metrics manager to register its HTTP port", || {
        let ports = c.metrics_urls(TOPOLOGY);
        (ports.len() == containers + 1).then(|| ports.iter().map(|p| format!("127.0.0.1:{p}")).collect())
    })
}

#[test]
fn prometheus_scrapes_a_topology_with_the_generated_config() {
    which_prometheus();
    let c = Cluster::new();
    let dir = c.home.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");

    // Nothing running: still a configuration, with a note on stderr; an unknown topology is an error naming it.
    let empty = c.run(&["prometheus-config", "local"]);
    assert!(empty.status.success(), "{empty:?}");
    assert!(
        String::from_utf8_lossy(&empty.stdout).contains("static_configs: []"),
        "{empty:?}"
    );
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("nothing to scrape"),
        "{empty:?}"
    );
    let unknown = c.run(&["prometheus-config", "local", "--topology", "no-such-topology"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no-such-topology"),
        "{unknown:?}"
    );

    let out = c.home.join("out").display().to_string();
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    c.ok(&["submit", "local", bin, "--out", &out, "--endless", "--containers", "2"]);
    let expected = metrics_managers(&c, 2);

    c.ok(&["prometheus-config", "local", "--output", &config.display().to_string()]);
    let text = std::fs::read_to_string(&config).expect("the generated config");
    for target in &expected {
        assert!(
            text.contains(&format!("[\"{target}\"]")),
            "{target} missing from:\n{text}"
        );
    }
    assert!(
        text.contains("scrape_interval: 5s") && text.contains("metrics_path: /metrics"),
        "{text}"
    );
    // The file_sd variant lists the same targets.
    let sd = dir.join("targets.json");
    c.ok(&["prometheus-config", "local", "--file-sd", &sd.display().to_string()]);
    let groups: Value = serde_json::from_str(&std::fs::read_to_string(&sd).unwrap()).expect("file_sd is JSON");
    let sd_targets: BTreeSet<String> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(sd_targets, expected);

    let p = Prometheus::start(&config, &dir);

    // Every metrics manager is a target of the `egret` job, labelled with its topology and container, and up.
    wait_for("prometheus to scrape every metrics manager successfully", || {
        let data = p.api("/api/v1/targets");
        let up: BTreeSet<String> = data["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["job"] == "egret" && t["labels"]["topology"] == TOPOLOGY)
            .filter(|t| {
                t["labels"]["container"]
                    .as_str()
                    .is_some_and(|c| c.parse::<u32>().is_ok())
            })
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_string))
            .collect();
        (up == expected).then_some(())
    });

    // And the topology's metrics are queryable: the spout `numbers` has emitted.
    let series = wait_for("prometheus to have egret_emit_count > 0 for component numbers", || {
        let data = p.api("/api/v1/query?query=egret_emit_count");
        data["result"]
            .as_array()?
            .iter()
            .find(|s| {
                s["metric"]["component"] == "numbers"
                    && s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
            })
            .cloned()
    });
    assert_eq!(series["metric"]["topology"], TOPOLOGY, "{series}");
    assert_eq!(series["metric"]["job"], "egret", "{series}");
}

/// The spouts' complete latency is a Prometheus histogram: Prometheus itself computes its quantiles.
#[test]
fn prometheus_computes_complete_latency_quantiles_from_the_spouts_histogram() {
    which_prometheus();
    let c = Cluster::new();
    let dir = c.home.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    let out = c.home.join("out").display().to_string();
    // At-least-once over 2 spout tasks: ~10 000 tuples/s each, long enough for a few scrapes.
    let bin = env!("CARGO_BIN_EXE_reliable-check");
    c.ok(&[
        "submit",
        "local",
        bin,
        "--out",
        &out,
        "--n",
        "10000000",
        "--containers",
        "2",
    ]);
    let t = "reliable-check";
    wait_for("every metrics manager to register its HTTP port", || {
        (c.metrics_urls(t).len() == 3).then_some(())
    });
    c.ok(&["prometheus-config", "local", "--output", &config.display().to_string()]);
    let p = Prometheus::start(&config, &dir);

    // The buckets are there, with the `le` label Prometheus expects, and `+Inf` equals `_count`.
    let query = "/api/v1/query?query=egret_complete_latency_seconds_bucket%7Ble%3D%22%2BInf%22%7D";
    let inf = wait_for("prometheus to have the +Inf bucket of the spouts' latency", || {
        let data = p.api(query);
        let first = data["result"].as_array()?.first()?.clone();
        Some(first)
    });
    assert_eq!(inf["metric"]["component"], "source", "{inf}");
    // histogram_quantile over the last 30 s: a finite, positive p99 under a second on an idle machine's loopback.
    let p99 = wait_for("prometheus to compute a p99 of the complete latency", || {
        let q = "/api/v1/query?query=histogram_quantile(0.99%2Csum%20by%20(le)%20(rate(egret_complete_latency_seconds_bucket%5B30s%5D)))";
        let data = p.api(q);
        let value = data["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        value.is_finite().then_some(value)
    });
    assert!(p99 > 0.0 && p99 < 1.0, "p99 of the complete latency: {p99} s");
    let count = p.api("/api/v1/query?query=sum(egret_complete_latency_seconds_count)");
    let acked = p.api("/api/v1/query?query=sum(egret_ack_count%7Bcomponent%3D%22source%22%7D)");
    let value = |d: &Value| d["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
    assert!(
        value(&count).is_some_and(|n| n > 0.0) && value(&acked).is_some_and(|n| n > 0.0),
        "trees counted by the histogram: {count}, acked: {acked}"
    );

    // The tmanager derives the p99 of every report interval from the same histograms (the tracker and the UI show
    // it): a finite, positive number of milliseconds for each spout task.
    let p99s = wait_for("the tmanager to keep p99 points for both spout tasks", || {
        let r = query_tmanager(
            &c,
            t,
            egret_proto::egret::MetricsQuery {
                component: "source".into(),
                names: vec!["__complete-latency-p99".into()],
                ..Default::default()
            },
        );
        let last: Vec<f64> = r
            .series
            .iter()
            .filter_map(|s| s.points.last().map(|p| p.value))
            .collect();
        (last.len() == 2).then_some(last)
    });
    assert!(
        p99s.iter().all(|ms| ms.is_finite() && *ms > 0.0 && *ms < 1000.0),
        "p99 (ms) per spout task: {p99s:?}"
    );
}
