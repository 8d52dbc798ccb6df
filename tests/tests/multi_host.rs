//! Egret across several hosts on this machine: network namespaces with their own addresses on a bridge
//! (`common::netns`), ZooKeeper on one of them, and each container's executor started on a host of its own exactly
//! as a Kubernetes pod starts it (`common::kube`: `egret executor --container-from-pod-name --host $(POD_IP)`,
//! `POD_IP` being the host's address). The topology runs across the hosts and loses nothing (at-least-once, exact
//! input and acked sets) while a host's processes are killed, a host is cut off for 10 s, ZooKeeper restarts and
//! the tmanager's host is killed. A stranger on another host, without the topology's secret, cannot get in: its
//! connections to the tmanager and a stmgr are closed after the challenge, and what it sends has no effect.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::kube::FakeKubernetes;
use common::netns::Hosts;
use common::*;
use egret_testkit::zookeeper::ZkServer;

const N: u64 = 30_000;
const T: &str = "reliable-check";

/// A cluster `name` (state in `zk`, containers as pods of a fake Kubernetes) whose container `k` runs on host
/// `k + 1` (`on_hosts`), or on this machine's loopback.
fn hosts_cluster(
    hosts: &Hosts,
    zk: &ZkServer,
    name: &str,
    statemgr: &str,
    scheduler: &str,
    on_hosts: bool,
) -> (Cluster, FakeKubernetes) {
    let placement: common::kube::Placement = if on_hosts {
        // Names and addresses only: the fake API server lives until the test binary ends, and must not keep the
        // hosts (whose drop removes them) alive.
        let hosts: Vec<(String, String)> = (1..4).map(|i| (hosts.netns(i), hosts.addr(i))).collect();
        Box::new(move |pod: &str| {
            let k: usize = pod.rsplit_once('-')?.1.parse().ok()?;
            let (ns, addr) = hosts.get(k)?.clone();
            Some((Some(ns), addr))
        })
    } else {
        Box::new(|_| None)
    };
    common::kube::kube_cluster(zk, name, statemgr, scheduler, placement)
}

/// Waits until `more` further inputs are acked (the topology makes progress), or panics naming `after`.
fn progress(out: &std::path::Path, more: usize, after: &str) {
    let from = ids(out, "acked-").0.len();
    let started = Instant::now();
    wait_for(&format!("{more} more inputs acked after {after}"), || {
        (ids(out, "acked-").0.len() >= (from + more).min(N as usize)).then_some(())
    });
    eprintln!(
        "{after}: {} acked, {more} more within {:.1} s",
        ids(out, "acked-").0.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn multi_host_word_count_across_namespace_hosts_survives_host_kills_a_cut_link_and_a_zookeeper_restart() {
    // Host 0 runs ZooKeeper; pod k (container k) runs on host k + 1.
    let hosts = Hosts::new(4);
    let mut zk = ZkServer::start_on(Some(&hosts.netns(0)), &hosts.addr(0));
    let (c, k8s) = hosts_cluster(&hosts, &zk, "hosts", "", "", true);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_reliable-check"));

    let out = c.home.join("out");
    let (out_s, n, bin_s) = (out.display().to_string(), N.to_string(), bin.display().to_string());
    c.ok(&[
        "submit",
        "hosts",
        &bin_s,
        "--out",
        &out_s,
        "--n",
        &n,
        "--pause-micros",
        "500",
    ]);

    // Every daemon listens on its own host's address: stmgr k on host k + 1, the tmanager on host 1.
    let e = c.explain(T);
    let stmgr_hosts: BTreeSet<String> = e["physical_plan"]["stmgrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stmgr_hosts, BTreeSet::from([hosts.addr(2), hosts.addr(3)]), "{e}");
    assert!(c.ok(&["list", "hosts"]).contains(T));
    let tracker = Tracker::start(&c);
    let v = tracker.ok(&format!("/api/v1/topologies/hosts/{T}"));
    assert_eq!(v["topology"], T);
    drop(tracker);

    progress(&out, 3_000, "the start");
    strangers_are_refused(&c, &hosts, &out);
    // A whole host's processes killed (its pod's executor, and with it everything it started), then started again.
    k8s.kill_and_restart_pod(&format!("{T}-1"));
    progress(&out, 2_000, "host 2's processes were killed and started again");
    // A host cut off from the others for 10 s.
    hosts.set_link(3, false);
    std::thread::sleep(Duration::from_secs(10));
    hosts.set_link(3, true);
    progress(&out, 2_000, "host 3 was cut off for 10 s");
    // ZooKeeper restarted.
    zk.stop();
    std::thread::sleep(Duration::from_millis(1_500));
    zk.resume();
    progress(&out, 2_000, "zookeeper restarted");
    // The tmanager's host killed: a new tmanager there takes the claim once the old session ends.
    k8s.kill_and_restart_pod(&format!("{T}-0"));

    let all: BTreeSet<u64> = (0..N).collect();
    let acked = wait_for("every input acked", || {
        let (acked, _) = ids(&out, "acked-");
        (acked == all).then_some(acked)
    });
    let (received, lines) = ids(&out, "sink-");
    assert_eq!(acked, all);
    let missing: Vec<u64> = all.difference(&received).take(10).cloned().collect();
    assert!(missing.is_empty(), "acked but never received: {missing:?}");
    eprintln!("{lines} sink receipts for {N} inputs");
    c.ok(&["kill", "hosts", T]);
    assert!(k8s.running_pods().is_empty());
}

/// The environment variable that turns [`multi_host_stranger_helper`] into a stranger: `host:port`.
const STRANGER_TARGET: &str = "EGRET_STRANGER_TARGET";
/// The topology id the stranger puts in its frames (it may know it: ids are not secrets).
const STRANGER_TOPOLOGY_ID: &str = "EGRET_STRANGER_TOPOLOGY_ID";

/// Not a test of its own: run (by [`strangers_are_refused`]) on another host, it connects to `EGRET_STRANGER_TARGET`
/// without the topology's secret, sends what a stranger would (a deactivation for a tmanager, an instance's
/// registration and a data frame for a stmgr) and prints how many bytes it got back before the connection ended.
#[test]
#[ignore = "a helper process that strangers_are_refused runs on another host"]
fn multi_host_stranger_helper() {
    use egret_proto::egret::{InstanceInfo, RegisterInstance, SetActive, control};
    use std::io::{Read, Write};
    let Ok(target) = std::env::var(STRANGER_TARGET) else {
        return;
    };
    let topology_id = std::env::var(STRANGER_TOPOLOGY_ID).unwrap_or_default();
    let mut s = std::net::TcpStream::connect(&target).expect("the stranger connects");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let frames = [
        egret_transport::control_frame(control::Msg::SetActive(SetActive {
            topology_id: topology_id.clone(),
            active: false,
        })),
        egret_transport::control_frame(control::Msg::RegisterInstance(RegisterInstance {
            topology_id,
            instance: Some(InstanceInfo {
                task_id: 3,
                component: "sink".into(),
                component_index: 0,
                stmgr_id: "stmgr-1".into(),
            }),
        })),
        egret_transport::data_frame(3, &[0u8; 64]),
    ];
    for f in &frames {
        let _ = s.write_all(f);
    }
    let mut got = Vec::new();
    // Closed by the server: a clean end, or a reset (it closes with the stranger's bytes unread), not a timeout.
    let ended = match s.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    println!("STRANGER got={} ended={ended}", got.len());
}

/// Runs the stranger on host 0 (ZooKeeper's, which runs no daemon of the topology) against the tmanager and a
/// stmgr: each closes the connection having sent nothing but its challenge (37 bytes), and the topology keeps
/// running (the stranger's deactivation was not obeyed).
fn strangers_are_refused(c: &Cluster, hosts: &Hosts, out: &std::path::Path) {
    let e = c.explain(T);
    let topology_id = e["id"].as_str().unwrap().to_string();
    let stmgr = &e["physical_plan"]["stmgrs"][0];
    let stmgr = format!("{}:{}", stmgr["host"].as_str().unwrap(), stmgr["data_port"]);
    let tmanager = e["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tmanager")
        .map(|p| format!("{}:{}", hosts.addr(1), p["port"]))
        .unwrap();
    for target in [tmanager, stmgr] {
        let run = std::process::Command::new("ip")
            .args(["netns", "exec", &hosts.netns(0)])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "multi_host_stranger_helper",
                "--include-ignored",
                "--nocapture",
            ])
            .env(STRANGER_TARGET, &target)
            .env(STRANGER_TOPOLOGY_ID, &topology_id)
            .output()
            .expect("run the stranger");
        let said = String::from_utf8_lossy(&run.stdout);
        let line = said.lines().find(|l| l.starts_with("STRANGER")).unwrap_or_else(|| {
            panic!(
                "the stranger said nothing: {said}{}",
                String::from_utf8_lossy(&run.stderr)
            )
        });
        assert_eq!(line, "STRANGER got=37 ended=true", "{target}: {said}");
        eprintln!("a stranger on host 0 was refused by {target}");
    }
    // The deactivation it sent was not obeyed: the topology runs on.
    progress(out, 1_000, "the strangers were refused");
    assert_eq!(c.explain(T)["state"], "RUNNING");
}

/// The throughput of `count` (its tuples executed per second, summed over its tasks) of a running word count, from
/// its metrics managers' `/metrics`, over `seconds`.
fn count_rate(c: &Cluster, zk: &ZkServer, topology: &str, seconds: u64) -> f64 {
    use egret_statemgr::StateManager;
    let state =
        egret_statemgr::ZkStateManager::connect(&zk.connection(), "/egret", &c.cluster, Duration::from_secs(10))
            .expect("zookeeper");
    let endpoints: Vec<(String, u16)> = state
        .locations(topology)
        .unwrap()
        .into_iter()
        .filter(|l| l.process.starts_with("metricsmgr-") && l.http_port > 0)
        .map(|l| (l.host, l.http_port as u16))
        .collect();
    let executed = || -> f64 {
        endpoints
            .iter()
            .flat_map(|(h, p)| egret_metricsmgr::scrape_samples(h, *p).unwrap_or_default())
            .filter(|s| s.name == "egret_execute_count" && s.label("component") == Some("count"))
            .map(|s| s.value)
            .sum()
    };
    let (t0, n0) = (Instant::now(), executed());
    std::thread::sleep(Duration::from_secs(seconds));
    (executed() - n0) / t0.elapsed().as_secs_f64()
}

/// A benchmark, not a test (ignored by default): the word count (2 spouts, 2 counters, 2 containers, at-most-once,
/// full rate) with its containers as pods on this machine's loopback, and as pods on separate namespace hosts whose
/// traffic crosses veth pairs and a bridge, alternately, `EGRET_BENCH_ROUNDS` times (default 2). Prints one line
/// per run. Run it on release binaries:
/// `cargo build --release --workspace --bins && cargo test --release -p egret-e2e --test multi_host -- --ignored --nocapture multi_host_bench`.
#[test]
#[ignore]
fn multi_host_bench_word_count_over_veth_and_loopback() {
    let hosts = Hosts::new(4);
    let zk = ZkServer::start_on(Some(&hosts.netns(0)), &hosts.addr(0));
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_reliable-check"))
        .parent()
        .unwrap()
        .to_path_buf();
    let topology_bin = bin_dir.join("word-count-topology");
    assert!(
        topology_bin.exists(),
        "build it first: cargo build -p egret-examples (--release for figures)"
    );
    let rounds: usize = std::env::var("EGRET_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    for round in 0..rounds {
        for over_veth in [false, true] {
            let name = if over_veth { "veth" } else { "loopback" };
            let (c, _k8s) = hosts_cluster(&hosts, &zk, name, "", "", over_veth);
            let bin = topology_bin.display().to_string();
            c.ok(&[
                "submit",
                &c.cluster,
                &bin,
                "--containers",
                "2",
                "--spouts",
                "2",
                "--bolts",
                "2",
                "--random-words",
                "10000",
            ]);
            std::thread::sleep(Duration::from_secs(3));
            let rate = count_rate(&c, &zk, "word-count", 10);
            println!(
                "BENCH multi_host round={round} network={} tuples_per_s={rate:.0}",
                if over_veth { "veth" } else { "loopback" }
            );
            c.ok(&["kill", &c.cluster, "word-count"]);
        }
    }
}

/// Effectively-once across hosts: the stateful word count (`stateful-check`) with its checkpoints on a directory
/// every host shares (the cluster's `egret.statefulstorage.localfs.root.path`, mounted in every pod from a
/// ReadWriteMany claim), while the processes of one host after another are killed: the counts end exact, each
/// task restored from a checkpoint written on whatever host it ran before.
#[test]
fn multi_host_effectively_once_counts_exactly_when_hosts_are_killed() {
    use egret_examples::reliable_word_count::{expected_counts, sentences};
    const SENTENCES: usize = 60_000;
    let hosts = Hosts::new(4);
    let zk = ZkServer::start_on(Some(&hosts.netns(0)), &hosts.addr(0));
    let shared = std::env::temp_dir().join(format!("egret-e2e-checkpoints-{}", std::process::id()));
    let (c, k8s) = hosts_cluster(
        &hosts,
        &zk,
        "hosts",
        &format!("egret.statefulstorage.localfs.root.path: {}\n", shared.display()),
        "egret.kubernetes.checkpoints.claim: egret-checkpoints\n",
        true,
    );
    let expected = expected_counts(&sentences(SENTENCES, 7));
    let words = total(&expected);
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_stateful-check");
    let (out_s, n) = (out.display().to_string(), SENTENCES.to_string());
    c.ok(&[
        "submit",
        "hosts",
        bin,
        "--out",
        &out_s,
        "--sentences",
        &n,
        "--rate",
        "2000",
    ]);
    let t = "stateful-word-count";
    for pod in [1, 2, 0] {
        std::thread::sleep(Duration::from_secs(3));
        eprintln!("killing host {} ({} words counted)", pod + 1, total(&counts(&out)));
        k8s.kill_and_restart_pod(&format!("{t}-{pod}"));
    }
    let got = settled(&out, words, Duration::from_secs(120));
    assert_eq!(got, expected, "exact counts after every host was killed once");
    let checkpoints: Vec<_> = walk(&shared.join("hosts").join(t));
    assert!(!checkpoints.is_empty(), "the checkpoints are on the shared directory");
    c.ok(&["kill", "hosts", t]);
    let _ = std::fs::remove_dir_all(&shared);
}
