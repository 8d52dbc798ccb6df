//! End-to-end test of the tracker: a real topology on the local cluster, a real `egret tracker` process, and every
//! endpoint called over plain HTTP. Every wait has a deadline; the tracker is killed on drop, the topology by the
//! `Cluster`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOPOLOGY: &str = "grouping-check";

fn api(rest: &str) -> String {
    format!("/api/v1/topologies/local/{TOPOLOGY}{rest}")
}

/// Sum of the values of a metrics answer.
fn total(metrics: &Value) -> f64 {
    metrics
        .as_array()
        .expect("metrics are an array")
        .iter()
        .map(|m| m["value"].as_f64().unwrap_or(0.0))
        .sum()
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn the_tracker_serves_plans_metrics_back_pressure_and_logs() {
    let c = Cluster::new();
    let out = c.home.join("out").display().to_string();
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    c.ok(&["submit", "local", bin, "--out", &out, "--endless", "--containers", "2"]);
    let t = Tracker::start(&c);

    assert_eq!(t.ok("/api/v1/clusters"), serde_json::json!(["local"]));
    let row = wait_for("the topology to be listed RUNNING", || {
        let list = t.ok("/api/v1/topologies");
        let row = list.as_array()?.iter().find(|r| r["name"] == TOPOLOGY)?.clone();
        (row["state"] == "RUNNING").then_some(row)
    });
    assert_eq!(row["cluster"], "local");
    assert!(row["submitted_ms"].as_i64().unwrap_or(0) > 0, "{row}");

    // The plan: what `egret explain --json` prints, plus the execution state.
    let plan = t.ok(&api(""));
    let explain = c.explain(TOPOLOGY);
    assert_eq!(plan["logical_plan"], explain["logical_plan"]);
    assert_eq!(plan["packing_plan"], explain["packing_plan"]);
    let components: Vec<&str> = plan["logical_plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(components.len(), 4, "{components:?}");
    for name in ["numbers", "by-word", "to-all", "global"] {
        assert!(components.contains(&name), "{name} missing from {components:?}");
    }
    assert_eq!(plan["packing_plan"]["containers"].as_array().unwrap().len(), 2);
    // The execution state counts container 0 (the tmanager's) too.
    assert_eq!(plan["execution_state"]["containers"], 3, "{plan}");
    assert_eq!(row["containers"], plan["execution_state"]["containers"]);
    assert_eq!(plan["execution_state"]["topology_name"], TOPOLOGY);

    // Metrics: to-all (2 tasks, all grouping) executes every tuple the spouts emit, twice.
    let executed = || {
        let m = t.ok(&api("/metrics?component=to-all&name=execute_count"));
        let series = m.as_array().unwrap();
        assert!(
            series
                .iter()
                .all(|s| s["component"] == "to-all" && s["name"] == "execute_count"),
            "the filters hold: {m}"
        );
        total(&m)
    };
    let emitted = || total(&t.ok(&api("/metrics?component=numbers&name=emit_count")));
    wait_for("to-all to execute", || (executed() > 0.0).then_some(()));
    wait_for("to-all to execute 2x what the spouts emitted, within 10 %", || {
        let before = executed();
        std::thread::sleep(Duration::from_secs(2));
        let (after, spouts) = (executed(), emitted());
        assert!(
            after > before,
            "to-all execute_count did not grow in 2 s: {before} -> {after}"
        );
        let ratio = after / (2.0 * spouts);
        eprintln!("to-all executed {after}, spouts emitted {spouts}: ratio {ratio:.3}");
        (0.9..=1.1).contains(&ratio).then_some(())
    });
    // Both filters accept several values, repeated or comma-separated.
    let both = t.ok(&api(
        "/metrics?component=to-all,numbers&name=execute_count&name=emit_count",
    ));
    for component in ["to-all", "numbers"] {
        assert!(
            both.as_array().unwrap().iter().any(|s| s["component"] == component),
            "{component} missing: {both}"
        );
    }
    let (status, body) = t.get(&api("/metrics?nmae=execute_count"));
    assert_eq!(status, 400, "a misspelt filter is refused: {body}");
    assert!(body["error"].as_str().unwrap_or("").contains("nmae"), "{body}");

    // Back pressure: both stmgrs, each with its own series once published, and the instances.
    let bp = wait_for("both stmgrs' back-pressure series", || {
        let bp = t.ok(&api("/backpressure"));
        let stmgrs = bp["stmgrs"].as_array()?;
        (stmgrs.len() == 2 && stmgrs.iter().all(|s| s["metrics"]["back_pressure_active"].is_number())).then_some(bp)
    });
    let ids: Vec<&str> = bp["stmgrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["stmgr-1", "stmgr-2"], "{bp}");
    assert_eq!(bp["instances"].as_array().unwrap().len(), 8, "{bp}");

    // Logs: the tail of stmgr-1's log, an explicit page, and a page past the end.
    let log_file = PathBuf::from(
        plan["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "stmgr-1")
            .and_then(|p| p["log"].as_str())
            .expect("stmgr-1 has a log"),
    );
    let page = t.ok(&api("/logs/stmgr-1"));
    assert_eq!(page["process"], "stmgr-1");
    assert!(
        page["data"]
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l.contains(" process=stmgr-1: ")),
        "{page}"
    );
    let size = page["total"].as_u64().unwrap();
    assert!(
        size > 0 && page["length"].as_u64().unwrap() <= size.min(64 * 1024),
        "{page}"
    );
    let head = t.ok(&api("/logs/stmgr-1?offset=0&length=7"));
    assert_eq!((head["offset"].as_u64(), head["length"].as_u64()), (Some(0), Some(7)));
    let first = std::fs::read(&log_file).expect("reading stmgr-1's log");
    assert_eq!(head["data"].as_str(), Some(&*String::from_utf8_lossy(&first[..7])));
    let before = log_len(&log_file);
    let past = t.ok(&api(&format!("/logs/stmgr-1?offset={}", before + 1_000_000)));
    let after = log_len(&log_file);
    assert_eq!(
        (past["data"].as_str(), past["length"].as_u64()),
        (Some(""), Some(0)),
        "{past}"
    );
    let past_total = past["total"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&past_total),
        "total {past_total} not in {before}..={after}"
    );
    let (status, body) = t.get(&api("/logs/stmgr-1?offset=minus-one"));
    assert_eq!(status, 400, "{body}");

    // Errors name the problem, with fitting statuses.
    let (status, body) = t.get("/api/v1/topologies/local/no-such-topology");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("no-such-topology"),
        "{body}"
    );
    let (status, body) = t.get("/api/v1/topologies/local/no-such-topology/metrics");
    assert_eq!(status, 404, "{body}");
    let (status, body) = t.get(&format!("/api/v1/topologies/elsewhere/{TOPOLOGY}"));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("elsewhere"), "{body}");
    let (status, body) = t.get(&api("/logs/stmgr-9"));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("stmgr-9"), "{body}");
    let (status, body) = t.get(&api("/logs/..%2F..%2F..%2Fetc%2Fpasswd"));
    assert_eq!(status, 404, "only the topology's own processes have logs: {body}");

    // The OpenAPI document describes the routes just used.
    let doc = t.ok("/api/v1/openapi.json");
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    for path in [
        "/api/v1/topologies",
        "/api/v1/topologies/{cluster}/{name}/metrics",
        "/api/v1/topologies/{cluster}/{name}/logs/{process}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
}
