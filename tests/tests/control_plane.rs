//! Control-plane failures on the local cluster: two submits of one name at once, an executor killed with SIGKILL,
//! a stmgr that stops sending heartbeats (SIGSTOP). Real `egret` commands start real processes; every wait has a
//! deadline, and the topology is killed when a test ends, even when it fails.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOPOLOGY: &str = "grouping-check";

fn submit_endless(c: &Cluster, extra: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    let out = c.home.join("out").display().to_string();
    let mut args = vec!["submit"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["local", bin, "--out", &out, "--endless", "--containers", "2"]);
    c.ok(&args);
}

fn executed(c: &Cluster, filter: &str) -> f64 {
    c.metric_sum(TOPOLOGY, "egret_execute_count", filter)
}

/// The label selecting the to-all bolt's task in `container` (to-all has one task in each container).
fn to_all_task_of(c: &Cluster, container: i64) -> String {
    let plan = c.explain(TOPOLOGY);
    let instances = plan["packing_plan"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["container"] == container)
        .unwrap_or_else(|| panic!("no container {container}: {plan}"))["instances"]
        .clone();
    let task = instances
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["component"] == "to-all")
        .unwrap_or_else(|| panic!("no to-all task in container {container}: {plan}"))["task"]
        .clone();
    format!("task=\"{task}\"")
}

fn executor_pid(c: &Cluster, container: i64) -> i32 {
    let plan = c.explain(TOPOLOGY);
    plan["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == format!("executor-{container}").as_str())
        .and_then(|p| p["pid"].as_i64())
        .unwrap_or_else(|| panic!("no executor of container {container}: {plan}")) as i32
}

/// The running processes the executor of container 1 started (not the executor itself).
fn processes_of_container_1(c: &Cluster) -> Vec<i64> {
    let executor = executor_pid(c, 1) as i64;
    let mut pids = container_pids(c, TOPOLOGY, 1, "");
    pids.retain(|&p| p != executor);
    pids
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: a signal to a process of this test's own topology.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[test]
fn two_concurrent_submits_of_one_name_start_one_topology() {
    let c = Cluster::new();
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    let submit = |out: &str| {
        Command::new(&c.egret)
            .arg("--home")
            .arg(&c.home)
            .args(["submit", "--timeout", "60", "local", bin, "--out", out])
            .args(["--endless", "--containers", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting egret submit")
    };
    let (out_a, out_b) = (
        c.home.join("a").display().to_string(),
        c.home.join("b").display().to_string(),
    );
    // Both start together; each is bounded by its own --timeout.
    let (a, b) = (submit(&out_a), submit(&out_b));
    let results = [
        a.wait_with_output().expect("first submit"),
        b.wait_with_output().expect("second submit"),
    ];
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let (won, lost): (Vec<_>, Vec<_>) = results.iter().partition(|o| o.status.success());
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "exactly one submit succeeds:\n--- first\n{}\n--- second\n{}",
        text(&results[0]),
        text(&results[1])
    );
    let refusal = String::from_utf8_lossy(&lost[0].stderr);
    assert!(
        refusal.contains("topology grouping-check already exists"),
        "the refusal names the topology:\n{refusal}"
    );

    // One topology runs, whole, and the refused submit took nothing of it down.
    let list = c.ok(&["list", "local"]);
    assert_eq!(list.matches(TOPOLOGY).count(), 1, "{list}");
    wait_for("tuples to flow", || {
        (executed(&c, "component=\"to-all\"") > 0.0).then_some(())
    });
    let pids = c.pids(TOPOLOGY);
    // The supervisor, 3 executors, tmanager and metricsmgr-0, 2 x (stmgr, metricsmgr), 8 instances.
    assert_eq!(pids.len(), 1 + 3 + 2 + 2 * 2 + 8, "{pids:?}");
    assert!(pids.iter().all(|&p| running(p)), "every listed process runs: {pids:?}");

    c.ok(&["kill", "local", TOPOLOGY]);
    wait_for("every process of the topology to be gone", || {
        pids.iter().all(|&p| !running(p)).then_some(())
    });
    let left = processes_naming(&c.home);
    assert!(left.is_empty(), "processes of this cluster left after kill: {left:?}");
    assert!(c.ok(&["list", "local"]).contains("no topologies"));
}

#[test]
fn an_executor_killed_with_sigkill_takes_its_children_and_its_container_comes_back() {
    let c = Cluster::new();
    submit_endless(&c, &[]);
    let task = to_all_task_of(&c, 1);
    wait_for("container 1 to execute tuples", || {
        (executed(&c, &task) > 0.0).then_some(())
    });
    let supervisor = c.pids(TOPOLOGY)[0];
    let executor = executor_pid(&c, 1);
    let children = processes_of_container_1(&c);
    // stmgr, metricsmgr and 4 instances.
    assert_eq!(children.len(), 6, "{children:?}");

    signal(executor, libc::SIGKILL);
    let killed = Instant::now();
    wait_for("every child of the killed executor to die with it", || {
        children.iter().all(|&p| !running(p as i32)).then_some(())
    });
    eprintln!("the children died {:?} after their executor", killed.elapsed());

    // The supervisor starts a new executor, which starts the container's processes again.
    let fresh = wait_for("container 1 to run again", || {
        let now = processes_of_container_1(&c);
        let new_executor = executor_pid(&c, 1);
        (new_executor != executor
            && running(new_executor)
            && now.len() == 6
            && now.iter().all(|p| !children.contains(p) && running(*p as i32)))
        .then_some(now)
    });
    eprintln!(
        "container 1 ran again {:?} after its executor was killed",
        killed.elapsed()
    );
    wait_for("the new stmgr to be in the physical plan", || {
        let plan = c.explain(TOPOLOGY);
        plan["physical_plan"]["stmgrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "stmgr-1" && fresh.contains(&s["pid"].as_i64().unwrap_or(0)))
            .then_some(())
    });
    // Fresh counters in container 1: its to-all task executes again.
    wait_for("the restarted container to execute tuples", || {
        (executed(&c, &task) > 100.0).then_some(())
    });
    assert_eq!(c.pids(TOPOLOGY)[0], supervisor, "the same supervisor");
    let log = std::fs::read_to_string(c.home.join("logs/local/grouping-check/supervisor.log")).unwrap_or_default();
    assert!(
        log.contains("executor exited container=1 exit=signal: 9 (SIGKILL)"),
        "the supervisor logs the death:\n{log}"
    );

    let pids = c.pids(TOPOLOGY);
    c.ok(&["kill", "local", TOPOLOGY]);
    wait_for("every process of the topology to be gone", || {
        pids.iter().all(|&p| !running(p)).then_some(())
    });
    let left = processes_naming(&c.home);
    assert!(left.is_empty(), "processes of this cluster left after kill: {left:?}");
}

/// Sends SIGCONT to a stopped process when dropped, so that a failing test does not leave it stopped.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn count_in(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(needle).count()
}

#[test]
fn a_stmgr_stopped_with_sigstop_is_declared_dead_after_missed_heartbeats() {
    const TIMEOUT: Duration = Duration::from_secs(8);
    // Stmgrs send a heartbeat every 5 s (egret_api::defaults::STMGR_HEARTBEAT_INTERVAL_SECS).
    const INTERVAL: Duration = Duration::from_secs(5);
    let c = Cluster::new();
    submit_endless(
        &c,
        &[
            "--config-property",
            &format!("topology.egret.stmgr.heartbeat.timeout.secs={}", TIMEOUT.as_secs()),
        ],
    );
    let submitted = Instant::now();
    let task = to_all_task_of(&c, 1);
    wait_for("container 1 to execute tuples", || {
        (executed(&c, &task) > 0.0).then_some(())
    });
    let log = c.home.join("logs/local/grouping-check/tmanager.log");
    assert_eq!(count_in(&log, "stmgr-1 registered"), 1);
    let stmgr = container_pids(&c, TOPOLOGY, 1, "stmgr-")[0] as i32;

    signal(stmgr, libc::SIGSTOP);
    let stopped = Stopped(stmgr);
    let since = Instant::now();
    wait_for("the tmanager to declare stmgr-1 dead", || {
        (count_in(&log, "stmgr-1 declared dead") > 0).then_some(())
    });
    let took = since.elapsed();
    eprintln!("stmgr-1 was declared dead {took:?} after it stopped");
    // Its last heartbeat came at most one interval before it stopped, so the deadline passed between
    // (timeout - interval) and timeout after; polling and a loaded machine add a little.
    assert!(
        took >= TIMEOUT - INTERVAL - Duration::from_millis(500),
        "declared dead too early: {took:?}"
    );
    assert!(
        took <= TIMEOUT + Duration::from_secs(4),
        "declared dead too late: {took:?}"
    );

    // Once running again it finds its connection closed, registers anew, and its container works again.
    drop(stopped);
    wait_for("stmgr-1 to register again", || {
        (count_in(&log, "stmgr-1 registered") == 2).then_some(())
    });
    let before = executed(&c, &task);
    wait_for("container 1 to execute tuples again", || {
        (executed(&c, &task) > before + 100.0).then_some(())
    });
    // The other stmgr, heartbeating all along for longer than the timeout, was never declared dead.
    let healthy_for = TIMEOUT + INTERVAL;
    if let Some(rest) = healthy_for.checked_sub(submitted.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(count_in(&log, "stmgr-2 declared dead"), 0);
    assert_eq!(count_in(&log, "stmgr-1 declared dead"), 1);
}
