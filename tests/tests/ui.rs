//! End-to-end test of the tracker's web UI: a real topology on the local cluster, a real `egret tracker` process
//! and a real headless Chromium loading the topology page, whose DOM and screenshot are checked. Every wait has a
//! deadline; the tracker and every Chromium are killed when done, the topology by the `Cluster`.

mod common;

use std::path::Path;

use common::chromium::{chromium, run_chromium, text_of};
use common::*;

const TOPOLOGY: &str = "grouping-check";
#[test]
fn the_topology_page_shows_the_plan_rates_and_a_screenshot() {
    let browser = chromium();
    let c = Cluster::new();
    let out = c.home.join("out").display().to_string();
    let bin = env!("CARGO_BIN_EXE_grouping-check");
    c.ok(&["submit", "local", bin, "--out", &out, "--endless", "--containers", "2"]);
    let t = Tracker::start(&c);
    let scratch = c.home.join("ui-test");
    std::fs::create_dir_all(&scratch).unwrap();
    let url = format!("http://127.0.0.1:{}/topologies/local/{TOPOLOGY}", t.port);

    // The tmanager holds a rate after two metrics reports (5 s apart), so the first loads may show none yet.
    let mut run = 0;
    let (dom, rate) = wait_for("the topology page to show an emit rate above zero", || {
        run += 1;
        let dom = run_chromium(&scratch, run, &["--virtual-time-budget=15000", "--dump-dom"], &url);
        let rate = text_of(&dom, "emit-rate-total")?.parse::<f64>().ok()?;
        eprintln!("run {run}: emit-rate-total {rate}");
        (rate > 0.0).then_some((dom, rate))
    });
    eprintln!("emit rate {rate} tuples/s after {run} load(s)");

    for name in ["numbers", "by-word", "to-all", "global"] {
        assert!(
            dom.contains(&format!("data-component=\"{name}\" data-kind=")),
            "{name} is not a node of the plan graph:\n{dom}"
        );
    }
    assert_eq!(dom.matches("<g class=\"edge\"").count(), 3, "three edges:\n{dom}");
    for (from, to, grouping) in [
        ("numbers", "by-word", "fields(word)"),
        ("numbers", "to-all", "all"),
        ("numbers", "global", "global"),
    ] {
        let edge = format!("<g class=\"edge\" data-from=\"{from}\" data-to=\"{to}\"");
        let at = dom
            .find(&edge)
            .unwrap_or_else(|| panic!("no edge {from} -> {to}:\n{dom}"));
        let tag = &dom[at..at + dom[at..].find('>').unwrap_or(0)];
        assert!(tag.contains(&format!("data-grouping=\"{grouping}\"")), "{tag}");
    }
    // The page's own JS filled the tables and drew the charts from the time series.
    assert!(dom.contains("<div class=\"chart\""), "no chart was drawn:\n{dom}");
    assert!(
        dom.contains("/topologies/local/grouping-check/logs/stmgr-1"),
        "no log link:\n{dom}"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("creating target/test-artifacts");
    let png = artifacts.join("ui-topology.png");
    let _ = std::fs::remove_file(&png);
    run += 1;
    let shot = format!("--screenshot={}", png.display());
    run_chromium(
        &scratch,
        run,
        &["--virtual-time-budget=15000", &shot, "--window-size=1280,1600"],
        &url,
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "the screenshot {} is {size} bytes", png.display());
    let head = std::fs::read(&png).unwrap_or_default();
    assert!(head.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    eprintln!("screenshot: {} ({size} bytes, {})", png.display(), browser.display());
}
