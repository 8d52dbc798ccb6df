//! Failure tests: `kill -9` one process of a running at-least-once topology over a replayable input, and check
//! that every input is acked and received at least once after recovery (duplicates are allowed, losses are not).
//! Named after what they kill, as Heron's were.

mod common;

use std::collections::BTreeSet;

use common::*;

const N: u64 = 20_000;

/// The pid, restart count and name of the first running process whose name contains `pattern`.
fn process(c: &Cluster, topology: &str, pattern: &str) -> (i32, i64, String) {
    let e = c.explain(topology);
    let p = e["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap_or("").contains(pattern) && p["state"] == "running")
        .unwrap_or_else(|| panic!("no running process like {pattern}: {e}"))
        .clone();
    (
        p["pid"].as_i64().unwrap() as i32,
        p["restarts"].as_i64().unwrap_or(0),
        p["name"].as_str().unwrap().to_string(),
    )
}

fn kill_and_recover(victim: &str) {
    let c = Cluster::new();
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_reliable-check");
    let out_s = out.display().to_string();
    c.ok(&[
        "submit",
        "local",
        bin,
        "--out",
        &out_s,
        "--n",
        &N.to_string(),
        "--containers",
        "2",
    ]);
    let t = "reliable-check";
    // Kill in the middle of the run: some input acked, much still to come.
    wait_for("some progress", || (ids(&out, "acked-").0.len() > 2_000).then_some(()));
    let (pid, restarts, name) = process(&c, t, victim);
    // SAFETY: SIGKILL to a process of this test's own topology.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    eprintln!(
        "killed {name} (pid {pid}) with {} of {N} ids acked",
        ids(&out, "acked-").0.len()
    );
    // The executor brings it back.
    wait_for("the killed process to be restarted", || {
        let e = c.explain(t);
        e["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| {
                p["name"] == name.as_str() && p["state"] == "running" && p["restarts"].as_i64().unwrap_or(0) > restarts
            })
            .then_some(())
    });
    let lines = every_id_acked_and_received(&out, N);
    eprintln!(
        "{victim}: {lines} sink receipts for {N} inputs ({} replayed duplicates)",
        lines - N
    );
}

#[test]
fn kill_a_bolt_instance() {
    kill_and_recover("-sink");
}

#[test]
fn kill_a_spout_instance() {
    kill_and_recover("-source");
}

#[test]
fn kill_a_stmgr() {
    kill_and_recover("stmgr-1");
}

#[test]
fn kill_the_tmanager() {
    kill_and_recover("tmanager");
}

#[test]
fn every_input_arrives_without_failures() {
    let c = Cluster::new();
    let out = c.home.join("out");
    let bin = env!("CARGO_BIN_EXE_reliable-check");
    c.ok(&[
        "submit",
        "local",
        bin,
        "--out",
        &out.display().to_string(),
        "--n",
        "5000",
        "--pause-micros",
        "0",
    ]);
    let all: BTreeSet<u64> = (0..5000).collect();
    wait_for("every input to be acked", || {
        (ids(&out, "acked-").0 == all).then_some(())
    });
    // The sink writes an id before it acks it, so every acked id is already on file.
    let (received, lines) = ids(&out, "sink-");
    assert_eq!(received, all);
    assert_eq!(lines, 5000, "without failures nothing is replayed");
}
