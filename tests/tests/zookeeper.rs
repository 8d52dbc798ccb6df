//! The ZooKeeper state manager under a running topology: a cluster configured with
//! `conf/<cluster>/statemgr.yaml` keeps every topology's state in a real ZooKeeper (Debian's, started by the test),
//! `egret list/explain` and the tracker see it there, and an at-least-once topology loses nothing while ZooKeeper is
//! restarted under it and while its tmanager is killed (the new one takes the claim once the dead one's session
//! ends).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use egret_statemgr::{StateManager, ZkStateManager};
use egret_testkit::zookeeper::ZkServer;

const N: u64 = 30_000;
/// Short, so that a killed tmanager's claim ends soon; long enough for a 2-core machine under load.
const SESSION_TIMEOUT_MS: u64 = 4_000;

fn configure(c: &Cluster, zk: &ZkServer) {
    let dir = c.home.join("conf").join(&c.cluster);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("statemgr.yaml"),
        format!(
            "egret.statemgr.kind: zookeeper\negret.statemgr.connection.string: {}\negret.statemgr.root.path: /egret\n\
             egret.statemgr.zookeeper.session.timeout.ms: {SESSION_TIMEOUT_MS}\n",
            zk.connection()
        ),
    )
    .unwrap();
    // The cluster's defaults: for what the topology does not set (reliable-check sets its message timeout to 3 s).
    std::fs::write(
        dir.join("defaults.yaml"),
        "topology.stateful.checkpoint.interval.seconds: 7\ntopology.message.timeout.secs: 60\n",
    )
    .unwrap();
}

/// The running tmanager's pid, from `egret explain`.
fn tmanager_pid(c: &Cluster, topology: &str) -> Option<i64> {
    c.explain(topology)["processes"].as_array()?.iter().find_map(|p| {
        (p["name"] == "tmanager" && p["state"] == "running")
            .then(|| p["pid"].as_i64())
            .flatten()
    })
}

#[test]
fn zookeeper_state_manager_keeps_a_topology_through_a_zookeeper_restart_and_a_tmanager_failover() {
    let mut zk = ZkServer::start();
    let c = Cluster::on("zk");
    configure(&c, &zk);
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_reliable-check");
    let (out_s, n) = (out.display().to_string(), N.to_string());
    c.ok(&["submit", "zk", bin, "--out", &out_s, "--n", &n, "--pause-micros", "500"]);
    let t = "reliable-check";

    // The state is in ZooKeeper, not in local files; the CLI and the tracker read it there.
    assert!(
        !c.home.join("state").join("zk").exists(),
        "no local state for a zookeeper cluster"
    );
    let list = c.ok(&["list", "zk"]);
    assert!(list.contains(t), "{list}");
    let config = &c.explain(t)["config"];
    assert_eq!(
        config["topology.stateful.checkpoint.interval.seconds"], "7",
        "a cluster default: {config}"
    );
    assert_eq!(
        config["topology.message.timeout.secs"], "3",
        "the topology's own value wins: {config}"
    );
    let tracker = Tracker::start(&c);
    let clusters = tracker.ok("/api/v1/clusters");
    assert_eq!(clusters, serde_json::json!(["local", "zk"]));
    let rows = tracker.ok("/api/v1/topologies");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == t && r["cluster"] == "zk"),
        "{rows}"
    );
    let v = tracker.ok(&format!("/api/v1/topologies/zk/{t}"));
    assert_eq!(v["topology"], t, "{v}");
    drop(tracker);

    // ZooKeeper restarted under the running topology (down for less than a session timeout: sessions survive).
    wait_for("some progress", || (ids(&out, "acked-").0.len() > 2_000).then_some(()));
    zk.stop();
    let down_at = ids(&out, "acked-").0.len();
    std::thread::sleep(Duration::from_millis(1_500));
    zk.resume();
    eprintln!("zookeeper restarted with {down_at} of {N} acked");

    // The tmanager killed: its executor starts a new one at once, which takes the claim when the dead one's
    // session ends (within the session timeout) and the stmgrs find it through ZooKeeper.
    let old = tmanager_pid(&c, t).expect("a running tmanager");
    // SAFETY: SIGKILL to a process of this test's own topology.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    eprintln!(
        "killed the tmanager (pid {old}) with {} of {N} acked",
        ids(&out, "acked-").0.len()
    );
    let new = wait_for("a new tmanager", || tmanager_pid(&c, t).filter(|&p| p != old));
    // It holds the claim (the ephemeral location is its own) once the dead one's session has ended.
    let reader = ZkStateManager::connect(&zk.connection(), "/egret", "zk", Duration::from_secs(10)).unwrap();
    let holder = |reader: &ZkStateManager| reader.get_location(t, "tmanager").ok().flatten().map(|l| l.pid as i64);
    wait_for("the new tmanager to hold the claim", || {
        (holder(&reader) == Some(new)).then_some(())
    });
    eprintln!(
        "the new tmanager holds the claim {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    drop(reader);

    // ZooKeeper down for longer than a session timeout: every session expires. The data path does not need
    // ZooKeeper and goes on; the tmanager loses its claim and is started again, and claims anew.
    zk.stop();
    let long = Duration::from_millis(SESSION_TIMEOUT_MS + 3_000);
    eprintln!(
        "zookeeper down for {long:?} with {} of {N} acked",
        ids(&out, "acked-").0.len()
    );
    std::thread::sleep(long);
    zk.resume();
    let reader = ZkStateManager::connect(&zk.connection(), "/egret", "zk", Duration::from_secs(10)).unwrap();
    // The old session ends a session timeout after the server is back (it restores sessions at start); then a new
    // tmanager process holds the claim.
    let after = wait_for("a new tmanager to hold the claim after the outage", || {
        holder(&reader).filter(|&p| p != new && tmanager_pid(&c, t) == Some(p))
    });
    eprintln!("after the outage the claim is held by a new tmanager, pid {after}");
    let all: BTreeSet<u64> = (0..N).collect();
    let acked = wait_for("every input to be acked", || {
        let (acked, _) = ids(&out, "acked-");
        (acked == all).then_some(acked)
    });
    eprintln!(
        "tmanager {old} -> {new} -> {after}; every input acked {:.1} s after the first kill",
        killed_at.elapsed().as_secs_f64()
    );
    let (received, _) = ids(&out, "sink-");
    assert_eq!(acked, all);
    let missing: Vec<u64> = all.difference(&received).take(10).cloned().collect();
    assert!(missing.is_empty(), "acked but never received: {missing:?}");

    // Kill removes the topology's nodes from ZooKeeper.
    c.ok(&["kill", "zk", t]);
    let list = c.ok(&["list", "zk"]);
    assert!(!list.contains(t), "{list}");
}
