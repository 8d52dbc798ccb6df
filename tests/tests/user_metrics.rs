//! End-to-end test of user metrics: a topology (bin `metrics-check`) registers one metric of each kind from its
//! topology context; the test reads them where a user would — the metrics managers' `/metrics`, the tracker's
//! metrics and time-series API, and the topology page in a real headless Chromium — and checks every value against
//! what the topology did. Every wait has a deadline; the tracker and Chromium are killed when done, the topology by
//! the `Cluster`.

mod common;

use std::collections::BTreeMap;

use common::chromium::{chromium, run_chromium};
use common::*;
use serde_json::Value;

const TOPOLOGY: &str = "metrics-check";
/// Tuples the spout emits: words a, b, c by n % 3 give 1000, 1001 and 1000 of them.
const COUNT: u64 = 3001;

/// The raw exposition text of every metrics manager of the topology.
fn exposition_texts(c: &Cluster) -> Vec<String> {
    c.metrics_urls(TOPOLOGY)
        .into_iter()
        .filter_map(|port| egret_metricsmgr::scrape("127.0.0.1", port).ok())
        .collect()
}

#[test]
fn user_metrics_reach_prometheus_the_tracker_and_the_ui_with_the_values_the_topology_made() {
    let _ = chromium();
    let c = Cluster::new();
    let bin = env!("CARGO_BIN_EXE_metrics-check");
    c.ok(&[
        "submit",
        "local",
        bin,
        "--count",
        &COUNT.to_string(),
        "--containers",
        "2",
    ]);

    // /metrics: every kind, with its type, summed over the two observe tasks.
    wait_for("every tuple to be counted by the user counter", || {
        (c.metric_sum(TOPOLOGY, "egret_user_tuples_seen", "") == COUNT as f64).then_some(())
    });
    // Each task samples its metrics once per interval (1 s here) and publishes every second: wait for the samples
    // taken after the last tuple, the bolts' (their histogram's count) and the spout's.
    wait_for("the bolts' and the spout's last samples", || {
        let bolts = c.metric_sum(TOPOLOGY, "egret_user_n_seconds_count", "");
        let spout = c.metric_sum(TOPOLOGY, "egret_user_emitted", "component=\"numbers\"");
        (bolts == COUNT as f64 && spout == COUNT as f64).then_some(())
    });
    let sum = |name: &str, filter: &str| c.metric_sum(TOPOLOGY, name, filter);
    assert_eq!(sum("egret_user_emitted", "component=\"numbers\""), COUNT as f64);
    assert_eq!(sum("egret_user_words", "key=\"a\""), 1000.0);
    assert_eq!(sum("egret_user_words", "key=\"b\""), 1001.0);
    assert_eq!(sum("egret_user_words", "key=\"c\""), 1000.0);
    assert_eq!(
        sum("egret_user_distinct_words", ""),
        3.0,
        "the words are split over the two tasks"
    );
    // Both tasks report the same reduced values: 1.0 and 7.0 per tuple.
    assert_eq!(sum("egret_user_weight_mean", ""), 8.0);
    assert_eq!(sum("egret_user_weight_max", ""), 14.0);
    assert_eq!(sum("egret_user_weight_min", ""), 2.0);
    assert_eq!(
        sum("egret_user_registration_errors", ""),
        4.0,
        "each task saw both bad registrations refused"
    );
    assert_eq!(sum("egret_user_n_seconds_bucket", "le=\"0.5\""), 500.0);
    assert_eq!(sum("egret_user_n_seconds_bucket", "le=\"1\""), 1000.0);
    assert_eq!(sum("egret_user_n_seconds_bucket", "le=\"2\""), 2000.0);
    assert_eq!(sum("egret_user_n_seconds_bucket", "le=\"+Inf\""), COUNT as f64);
    let expected_sum = (1..=COUNT).map(|n| n as f64 / 1000.0).sum::<f64>();
    assert!((sum("egret_user_n_seconds_sum", "") - expected_sum).abs() < 1e-6);
    let text = exposition_texts(&c).join("\n");
    for (family, kind) in [
        ("egret_user_tuples_seen", "counter"),
        ("egret_user_words", "counter"),
        ("egret_user_distinct_words", "gauge"),
        ("egret_user_weight_mean", "gauge"),
        ("egret_user_n_seconds", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} is not a {kind}:\n{text}"
        );
    }
    assert!(
        text.contains("egret_user_words{topology=\"metrics-check\",component=\"observe\",task=\""),
        "{text}"
    );

    // The tracker's metrics API: the same values, the key as a field.
    let t = Tracker::start(&c);
    let api = format!("/api/v1/topologies/local/{TOPOLOGY}");
    let words = t.ok(&format!("{api}/metrics?name=user_words&component=observe"));
    let mut by_key: BTreeMap<String, f64> = BTreeMap::new();
    for s in words.as_array().expect("an array") {
        *by_key.entry(s["key"].as_str().unwrap_or("").to_string()).or_default() += s["value"].as_f64().unwrap_or(0.0);
    }
    assert_eq!(
        by_key,
        BTreeMap::from([("a".into(), 1000.0), ("b".into(), 1001.0), ("c".into(), 1000.0)]),
        "{words}"
    );

    // The tmanager's time series (`user=true` adds every user metric): the latest points agree.
    let latest = |series: &Value, name: &str| -> f64 {
        series
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == name)
            .filter_map(|s| s["points"].as_array()?.last()?.get(1)?.as_f64())
            .sum()
    };
    let series = wait_for("the tmanager to hold the final user counts", || {
        let s = t.ok(&format!("{api}/timeseries?user=true&name=__none"));
        (latest(&s, "tuples-seen") == COUNT as f64 && latest(&s, "emitted") == COUNT as f64).then_some(s)
    });
    let kinds: BTreeMap<&str, &str> = series
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["name"].as_str()?, s["kind"].as_str()?)))
        .collect();
    assert_eq!(kinds.get("tuples-seen"), Some(&"counter"), "{series}");
    assert_eq!(kinds.get("weight-mean"), Some(&"gauge"), "{series}");
    assert!(
        kinds.contains_key("n-p99"),
        "the histogram n-seconds gives quantiles n-p50 and n-p99 (ms): {series}"
    );
    assert!(
        !kinds.keys().any(|n| n.starts_with("__")),
        "only user metrics were asked for: {series}"
    );

    // The UI: the component and task tables show the user metrics the page read from the time series.
    let scratch = c.home.join("ui-test");
    std::fs::create_dir_all(&scratch).expect("creating the scratch directory");
    let url = format!("http://127.0.0.1:{}/topologies/local/{TOPOLOGY}", t.port);
    let mut run = 0;
    let cell = wait_for("the topology page to show the observe component's user metrics", || {
        run += 1;
        let dom = run_chromium(&scratch, run, &["--virtual-time-budget=8000", "--dump-dom"], &url);
        let cell = common::chromium::cell_of(&dom, "<tr data-component=\"observe\">", "user")?.to_string();
        cell.contains("tuples-seen=").then_some(cell)
    });
    eprintln!("observe's user metrics on the page: {cell}");
    for shown in [
        format!("tuples-seen={COUNT}"),
        "words[a]=1000".into(),
        "words[b]=1001".into(),
        "words[c]=1000".into(),
        "weight-mean=4".into(),
        "weight-max=7".into(),
        "weight-min=1".into(),
    ] {
        assert!(cell.contains(&shown), "{shown:?} is not in {cell:?}");
    }
}
