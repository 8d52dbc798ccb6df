//! End-to-end tests on the local cluster: real `egret` commands start real processes. Every wait has a deadline;
//! every test kills what it started, even when it fails, and prints the process logs on failure.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn submit_grouping_check(c: &Cluster, out: &Path, extra: &[&str]) -> String {
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    let out = out.display().to_string();
    let mut args = vec!["submit", "local", bin, "--out", out.as_str()];
    args.extend_from_slice(extra);
    c.ok(&args)
}

#[test]
fn every_grouping_routes_correctly_across_two_containers() {
    let c = Cluster::new();
    let out = c.home.join("out");
    let per_spout = 5000u64;
    let printed = submit_grouping_check(&c, &out, &["--per-spout", &per_spout.to_string(), "--containers", "2"]);
    assert!(printed.contains("is running"), "{printed}");
    let plan = c.explain("grouping-check");
    let containers = plan["packing_plan"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "two containers: {plan}");
    for container in containers {
        assert_eq!(
            container["instances"].as_array().unwrap().len(),
            4,
            "round robin spreads 8 tasks: {plan}"
        );
    }
    let total = 2 * per_spout;
    let seen = wait_for("every bolt task to report every tuple", || {
        let o = observations(&out);
        let sum = |comp: &str| {
            o.get(comp).map_or(0, |ts| {
                ts.values().map(|v| v["total"].as_u64().unwrap_or(0)).sum::<u64>()
            })
        };
        (sum("by-word") == total && sum("to-all") == 2 * total && sum("global") == total).then_some(o)
    });
    // Fields: every occurrence of a word was counted by one task, and keys spread over both tasks.
    let mut owner: BTreeMap<String, u32> = BTreeMap::new();
    for (task, v) in &seen["by-word"] {
        let words = v["words"].as_object().unwrap();
        assert!(!words.is_empty(), "by-word task {task} got no key");
        for w in words.keys() {
            assert!(owner.insert(w.clone(), *task).is_none(), "word {w} reached two tasks");
        }
    }
    assert_eq!(owner.len(), 50);
    // All: every task saw every tuple.
    for (task, v) in &seen["to-all"] {
        assert_eq!(v["total"].as_u64(), Some(total), "to-all task {task}");
    }
    // Global: the lowest task saw everything.
    let global = &seen["global"];
    let lowest = global.keys().min().unwrap();
    assert_eq!(global[lowest]["total"].as_u64(), Some(total));
    assert!(
        global
            .iter()
            .all(|(t, v)| t == lowest || v["total"].as_u64() == Some(0))
    );
    // The metrics manager saw the same tuples.
    let executed = wait_for("metrics to catch up", || {
        let n = c.metric_sum("grouping-check", "egret_execute_count", "component=\"by-word\"");
        (n as u64 == total).then_some(n)
    });
    assert_eq!(executed as u64, total);
    // Series are labelled by stream: emits by output stream, executes by source component/stream.
    wait_for("per-stream series", || {
        let emitted = c.metric_sum("grouping-check", "egret_emit_count", "stream=\"default\"");
        let from_numbers = c.metric_sum("grouping-check", "egret_execute_count", "stream=\"numbers/default\"");
        (emitted as u64 == total && from_numbers as u64 == 4 * total).then_some(())
    });
    // The stmgrs publish their own counters: frames crossed between the two containers.
    wait_for("stmgr metrics", || {
        (c.metric_sum("grouping-check", "egret_frames_routed_count", "component=\"__stmgr__\"") > 0.0).then_some(())
    });
}

#[test]
fn deactivate_stops_the_spouts_and_kill_leaves_nothing_behind() {
    let c = Cluster::new();
    let out = c.home.join("out");
    submit_grouping_check(&c, &out, &["--endless", "--containers", "2"]);
    let emitted = || c.metric_sum("grouping-check", "egret_emit_count", "component=\"numbers\"");
    wait_for("the spouts to emit", || (emitted() > 0.0).then_some(()));
    c.ok(&["deactivate", "local", "grouping-check"]);
    assert!(c.ok(&["list", "local"]).contains("PAUSED"));
    // Metrics are published every second: let the last emits arrive, then the count must stand still.
    std::thread::sleep(Duration::from_millis(2500));
    let frozen = emitted();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(emitted(), frozen, "spouts emitted while deactivated");
    c.ok(&["activate", "local", "grouping-check"]);
    wait_for("the spouts to emit again", || (emitted() > frozen).then_some(()));

    let pids = c.pids("grouping-check");
    assert!(
        pids.len() >= 3 + 2 * 2 + 8,
        "executors, daemons and instances: {pids:?}"
    );
    c.ok(&["kill", "local", "grouping-check"]);
    let left: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left after kill: {left:?}");
    let state: Vec<PathBuf> = walk(&c.home.join("state"))
        .into_iter()
        .chain(walk(&c.home.join("packages")))
        .collect();
    assert!(state.is_empty(), "state left after kill: {state:?}");
    assert!(c.ok(&["list", "local"]).contains("no topologies"));
}

#[test]
fn a_broken_topology_is_refused_with_the_reason_and_nothing_starts() {
    let c = Cluster::new();
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    let out = c.home.join("out").display().to_string();
    let r = c.run(&["submit", "local", bin, "--out", &out, "--broken"]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("by-word") && err.contains("\"wrod\""),
        "the error names the component and field:\n{err}"
    );
    assert!(
        walk(&c.home.join("state")).is_empty(),
        "state written for a broken topology"
    );
    assert!(
        walk(&c.home.join("logs")).is_empty(),
        "processes started for a broken topology"
    );

    let r = c.run(&[
        "submit",
        "--config-property",
        "topology.max.spout.pendng=5",
        "local",
        bin,
        "--out",
        &out,
    ]);
    let text = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && text.contains("topology.max.spout.pendng"),
        "a misspelt key is named:\n{text}"
    );
    assert!(walk(&c.home.join("state")).is_empty(), "state written for a bad config");

    let dry = c.ok(&["submit", "--dry-run", "local", bin, "--out", &out]);
    assert!(dry.contains("dry run"), "{dry}");
    assert!(walk(&c.home.join("state")).is_empty(), "a dry run wrote state");

    let bad_cluster = c.run(&["submit", "mars", bin]);
    assert!(String::from_utf8_lossy(&bad_cluster.stderr).contains("unknown cluster \"mars\""));
}

#[test]
fn restarted_containers_rejoin_and_the_topology_keeps_running() {
    let c = Cluster::new();
    let out = c.home.join("out");
    submit_grouping_check(&c, &out, &["--endless", "--containers", "2"]);
    let executed = |filter: &str| c.metric_sum("grouping-check", "egret_execute_count", filter);
    wait_for("tuples to flow", || {
        (executed("component=\"to-all\"") > 0.0).then_some(())
    });

    // A worker container: its stmgr comes back on a new port, the other stmgr reconnects, tuples flow to it again.
    let before = container_pids(&c, "grouping-check", 1, "instance-");
    assert_eq!(before.len(), 4);
    c.ok(&["restart", "local", "grouping-check", "--container", "1"]);
    let after = wait_for("container 1 to run again", || {
        let now = container_pids(&c, "grouping-check", 1, "instance-");
        (now.len() == 4 && now.iter().all(|p| !before.contains(p))).then_some(now)
    });
    assert!(after.iter().all(|&p| alive(p as i32)));
    // The to-all bolt has a task in each container; both must execute again (fresh counters in container 1).
    let tasks_of_container_1: Vec<String> = c.explain("grouping-check")["packing_plan"]["containers"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["component"] == "to-all")
        .map(|i| format!("task=\"{}\"", i["task"]))
        .collect();
    assert_eq!(tasks_of_container_1.len(), 1);
    wait_for("the restarted to-all task to execute", || {
        (executed(&tasks_of_container_1[0]) > 100.0).then_some(())
    });

    // The tmanager's container: the stmgrs register again and the CLI reaches the new tmanager.
    let tm = container_pids(&c, "grouping-check", 0, "tmanager");
    c.ok(&["restart", "local", "grouping-check", "--container", "0"]);
    wait_for("a new tmanager", || {
        let now = container_pids(&c, "grouping-check", 0, "tmanager");
        (now.len() == 1 && now != tm).then_some(())
    });
    wait_for("the new tmanager to take commands", || {
        c.run(&["deactivate", "local", "grouping-check"])
            .status
            .success()
            .then_some(())
    });
    wait_for("the new tmanager to publish PAUSED", || {
        c.ok(&["list", "local"]).contains("PAUSED").then_some(())
    });
}

#[test]
fn two_topologies_run_side_by_side() {
    let c = Cluster::new();
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    let (out_a, out_b) = (
        c.home.join("a").display().to_string(),
        c.home.join("b").display().to_string(),
    );
    c.ok(&[
        "submit",
        "--name",
        "first",
        "local",
        bin,
        "--out",
        &out_a,
        "--per-spout",
        "1000",
        "--containers",
        "1",
    ]);
    c.ok(&[
        "submit",
        "--name",
        "second",
        "local",
        bin,
        "--out",
        &out_b,
        "--per-spout",
        "2000",
        "--containers",
        "1",
    ]);
    let again = c.run(&["submit", "--name", "first", "local", bin, "--out", &out_a]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "a duplicate name is refused"
    );
    for (out, n) in [(&out_a, 2000u64), (&out_b, 4000u64)] {
        wait_for("both topologies to finish their input", || {
            let o = observations(Path::new(out));
            let sum = o.get("by-word").map_or(0, |ts| {
                ts.values().map(|v| v["total"].as_u64().unwrap_or(0)).sum::<u64>()
            });
            (sum == n).then_some(())
        });
    }
    let list = c.ok(&["list", "local"]);
    assert!(list.contains("first") && list.contains("second"), "{list}");
    c.ok(&["kill", "local", "first"]);
    assert!(
        c.ok(&["list", "local"]).contains("second"),
        "killing one leaves the other"
    );
}

/// Submits grouping-check (endless, fast, 2 containers, 256/128 KiB back-pressure watermarks, `properties` on top)
/// with its by-word bolt slow while the returned file exists.
fn submit_with_a_slow_bolt(c: &Cluster, properties: &[&str]) -> std::path::PathBuf {
    let out = c.home.join("out");
    let slow = c.home.join("slow");
    std::fs::write(&slow, "").unwrap();
    let (out_s, slow_s) = (out.display().to_string(), slow.display().to_string());
    let mut args = vec!["submit"];
    let watermarks = [
        "topology.egret.backpressure.high.bytes=262144",
        "topology.egret.backpressure.low.bytes=131072",
    ];
    for p in watermarks.iter().chain(properties) {
        args.extend(["--config-property", p]);
    }
    args.extend([
        "local",
        env!("CARGO_BIN_EXE_grouping-check"),
        "--out",
        &out_s,
        "--endless",
        "--fast",
    ]);
    args.extend(["--slow-file", &slow_s, "--containers", "2"]);
    c.ok(&args);
    slow
}

#[test]
fn a_slow_bolt_holds_back_the_spouts_without_loss_and_releases_them() {
    let c = Cluster::new();
    let slow = submit_with_a_slow_bolt(&c, &[]);
    let t = "grouping-check";
    let active = || c.metric_sum(t, "egret_back_pressure_active", "");
    wait_for("back pressure to start", || (active() > 0.0).then_some(()));
    let stmgrs = container_pids(&c, t, 1, "stmgr")
        .into_iter()
        .chain(container_pids(&c, t, 2, "stmgr"));
    let stmgrs: Vec<i32> = stmgrs.map(|p| p as i32).collect();
    // While it holds: the spouts go at the slow bolt's pace, the backlog and the stmgrs' memory stay bounded, and
    // nothing is dropped.
    let mut backlogs = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let emitted = c.metric_sum(t, "egret_emit_count", "component=\"numbers\"");
        let executed = c.metric_sum(t, "egret_execute_count", "component=\"by-word\"");
        backlogs.push(emitted - executed);
        assert_eq!(
            c.metric_sum(t, "egret_frames_dropped_count", ""),
            0.0,
            "a stmgr dropped frames"
        );
        for &p in &stmgrs {
            assert!(
                rss_kib(p) < 64 * 1024,
                "stmgr {p} uses {} KiB while holding back pressure",
                rss_kib(p)
            );
        }
    }
    let max_backlog = backlogs.iter().cloned().fold(0.0, f64::max);
    assert!(
        max_backlog < 1_500_000.0,
        "backlog grew to {max_backlog} tuples: {backlogs:?}"
    );
    assert!(
        backlogs.last().unwrap() <= &(backlogs[0] + 300_000.0),
        "the backlog keeps growing under back pressure: {backlogs:?}"
    );
    assert!(c.metric_sum(t, "egret_time_spent_back_pressure_initiated", "") > 1000.0);
    assert!(
        c.metric_sum(t, "egret_time_spent_back_pressure_by_compid", "component=\"by-word\"") > 1000.0,
        "the slow instance is named as the cause"
    );
    // Removing the slowness lifts it, and the spouts speed up.
    let before = c.metric_sum(t, "egret_execute_count", "component=\"by-word\"");
    std::fs::remove_file(&slow).unwrap();
    wait_for("back pressure to lift", || (active() == 0.0).then_some(()));
    wait_for("the topology to speed up", || {
        (c.metric_sum(t, "egret_execute_count", "component=\"by-word\"") > before + 1_000_000.0).then_some(())
    });
}

#[test]
fn droptuples_upon_backpressure_drops_and_counts_on_the_local_cluster_and_never_clamps_the_spouts() {
    let c = Cluster::new();
    submit_with_a_slow_bolt(&c, &["topology.droptuples.upon.backpressure=true"]);
    let t = "grouping-check";
    let dropped = || c.metric_sum(t, "egret_dropped_tuples_count", "");
    wait_for("the stmgrs to drop tuples for the slow bolt", || {
        (dropped() > 0.0).then_some(())
    });
    // The spouts keep their pace: over a few seconds they emit far more than the slow bolt executes, and nothing
    // announces back pressure.
    let emitted0 = c.metric_sum(t, "egret_emit_count", "component=\"numbers\"");
    let executed0 = c.metric_sum(t, "egret_execute_count", "component=\"by-word\"");
    let dropped0 = dropped();
    std::thread::sleep(Duration::from_secs(4));
    let emitted = c.metric_sum(t, "egret_emit_count", "component=\"numbers\"") - emitted0;
    let executed = c.metric_sum(t, "egret_execute_count", "component=\"by-word\"") - executed0;
    assert!(
        emitted > 3.0 * executed,
        "the spouts were held back: {emitted} emitted, {executed} executed by the slow bolt"
    );
    assert!(dropped() > dropped0, "drops stopped while the bolt is still slow");
    assert_eq!(c.metric_sum(t, "egret_back_pressure_active", ""), 0.0);
    assert_eq!(c.metric_sum(t, "egret_time_spent_back_pressure_initiated", ""), 0.0);
}

#[test]
fn bad_bytes_on_the_wire_are_logged_and_dropped_while_the_stmgr_keeps_serving() {
    use std::io::Write;
    let c = Cluster::new();
    let out = c.home.join("out");
    submit_grouping_check(&c, &out, &["--endless", "--containers", "1"]);
    let t = "grouping-check";
    let executed = || c.metric_sum(t, "egret_execute_count", "component=\"to-all\"");
    wait_for("tuples to flow", || (executed() > 0.0).then_some(()));
    let plan = c.explain(t);
    let port = plan["physical_plan"]["stmgrs"][0]["data_port"].as_i64().unwrap() as u16;
    // A stranger without the topology's secret is refused before it says anything.
    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = stranger.write_all(b"GET / HTTP/1.1\r\n\r\n");
    // Processes of the topology (they hold its secret) that send bad bytes.
    let secret = c.secret(t);
    let send = |bytes: &[u8]| {
        let mut s = secret.connect_to("127.0.0.1", port).unwrap();
        let _ = s.write_all(bytes);
    };
    // Garbage, an oversized frame, an unknown kind, and a peer from another topology.
    send(b"GET / HTTP/1.1\r\n\r\n");
    send(&(1u32 << 30).to_le_bytes());
    send(&[1, 0, 0, 0, 42]);
    let hello = egret_proto::egret::StmgrHello {
        topology_id: "another-topology-1".into(),
        stmgr_id: "stmgr-9".into(),
    };
    send(&egret_transport::control_frame(
        egret_proto::egret::control::Msg::StmgrHello(hello),
    ));
    // The stmgr names each offence with the peer, and still routes tuples.
    let needles = [
        "connection refused",
        "did not prove it belongs to the topology",
        "exceeds the maximum",
        "unknown frame kind 42",
        "from another topology (another-topology-1)",
    ];
    let log_path = c.home.join("logs/local/grouping-check/stmgr-1.log");
    let log = wait_for("the stmgr to log every offence", || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        needles.iter().all(|n| log.contains(n)).then_some(log)
    });
    assert!(
        log.contains("connection from 127.0.0.1:"),
        "errors name the peer:\n{log}"
    );
    let before = executed();
    wait_for("tuples to keep flowing", || (executed() > before).then_some(()));
    assert_eq!(container_pids(&c, t, 1, "stmgr").len(), 1);
}

#[test]
fn the_tmanager_keeps_time_series_and_exceptions_from_every_container() {
    use egret_proto::egret::MetricsQuery;
    let c = Cluster::new();
    let out = c.home.join("out");
    submit_grouping_check(&c, &out, &["--endless", "--containers", "2", "--report-errors"]);
    let t = "grouping-check";
    // Reports arrive every 5 s from each container's metrics manager.
    let r = wait_for("two reports of the spouts' emit counts", || {
        let r = query_tmanager(
            &c,
            t,
            MetricsQuery {
                component: "numbers".into(),
                names: vec!["__emit-count".into()],
                ..Default::default()
            },
        );
        (r.series.len() == 2 && r.series.iter().all(|s| s.points.len() >= 2)).then_some(r)
    });
    for s in &r.series {
        assert_eq!(s.stream, "default");
        assert!(
            s.points
                .windows(2)
                .all(|w| w[0].time_ms < w[1].time_ms && w[0].value <= w[1].value),
            "{s:?}"
        );
        assert!(s.points.last().unwrap().value > 0.0);
    }
    let tasks: BTreeMap<i32, ()> = r.series.iter().map(|s| (s.task_id, ())).collect();
    assert_eq!(tasks.len(), 2, "both spout tasks, from both containers");
    // The error the global bolt reports reaches the tmanager with its count.
    let e = wait_for("the reported errors", || {
        let r = query_tmanager(
            &c,
            t,
            MetricsQuery {
                component: "global".into(),
                ..Default::default()
            },
        );
        r.exceptions
            .into_iter()
            .find(|e| e.message.contains("sample error") && e.count > 0)
    });
    assert!(e.first_ms <= e.last_ms);
    // Filters: one task, and a time range.
    let one = query_tmanager(
        &c,
        t,
        MetricsQuery {
            component: "numbers".into(),
            tasks: vec![r.series[0].task_id],
            names: vec!["__emit-count".into()],
            ..Default::default()
        },
    );
    assert_eq!(one.series.len(), 1);
    let none = query_tmanager(
        &c,
        t,
        MetricsQuery {
            component: "numbers".into(),
            since_ms: i64::MAX,
            ..Default::default()
        },
    );
    assert!(none.series.iter().all(|s| s.points.is_empty()));
}
