//! `egret prometheus-config`: a Prometheus scrape configuration (or a `file_sd` target list) for the metrics
//! managers of the topologies running on a cluster, so Prometheus can scrape Egret without anyone copying ports
//! out of `egret explain`. The ports change on every submit, kill and restart, hence a command to rerun rather than
//! a file to write once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::commands::check_cluster;

#[derive(Args)]
pub struct PrometheusConfigArgs {
    cluster: String,
    /// Only this topology (all the cluster's topologies if absent).
    #[arg(long)]
    topology: Option<String>,
    /// Write the configuration to this file (atomically) instead of printing it.
    #[arg(long, conflicts_with = "file_sd")]
    output: Option<PathBuf>,
    /// The `job_name` of the scrape config.
    #[arg(long, default_value = "egret")]
    job: String,
    /// Instead of a whole configuration, write a `file_sd_configs` target list (JSON) to this file, atomically:
    /// a long-running Prometheus watching it picks up topologies as they come and go (rerun after submit/kill).
    #[arg(long)]
    file_sd: Option<PathBuf>,
}

/// One metrics manager to scrape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    topology: String,
    container: i64,
    host_port: String,
}

pub fn prometheus_config(home: &Path, a: PrometheusConfigArgs) -> anyhow::Result<()> {
    let targets = gather(home, &a.cluster, a.topology.as_deref())?;
    if targets.is_empty() {
        // Still a valid configuration: Prometheus starts and scrapes nothing until the command is rerun.
        match &a.topology {
            Some(t) => eprintln!("egret: note: topology {t} has no metrics manager yet, so there is nothing to scrape"),
            None => eprintln!(
                "egret: note: no topologies with a metrics manager on cluster {}, so there is nothing to scrape",
                a.cluster
            ),
        }
    }
    if let Some(file) = &a.file_sd {
        let text = serde_json::to_string_pretty(&file_sd(&targets))? + "\n";
        write_atomically(file, &text)?;
        eprintln!("egret: wrote {} target(s) to {}", targets.len(), file.display());
        return Ok(());
    }
    let text = scrape_config(&a.cluster, &a.job, &targets);
    match &a.output {
        Some(file) => {
            write_atomically(file, &text)?;
            eprintln!("egret: wrote {} target(s) to {}", targets.len(), file.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// The metrics managers of `only` (which must exist), or of every topology of the cluster, sorted.
fn gather(home: &Path, cluster: &str, only: Option<&str>) -> anyhow::Result<Vec<Target>> {
    let (state, names) = match only {
        Some(name) => (
            egret_tracker::explain::existing(home, cluster, name)?,
            vec![name.to_string()],
        ),
        None => {
            check_cluster(home, cluster)?;
            let state = egret_statemgr::open(home, cluster)?;
            let names = state.list_topologies()?;
            (state, names)
        }
    };
    let mut targets = Vec::new();
    for name in names {
        // The same data `egret explain --json` prints, so the ports here are the ones explain shows.
        let plan = match egret_tracker::explain::explain_from(&*state, home, cluster, &name) {
            Ok(plan) => plan,
            // Killed between the listing and now: it simply no longer needs scraping.
            Err(_) if only.is_none() && !state.exists(&name).unwrap_or(true) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read topology {name}")),
        };
        let before = targets.len();
        for p in plan["processes"].as_array().into_iter().flatten() {
            let is_metricsmgr = p["name"].as_str().is_some_and(|n| n.starts_with("metricsmgr-"));
            if let (true, Some(port)) = (is_metricsmgr, p["http_port"].as_i64()) {
                targets.push(Target {
                    topology: name.clone(),
                    container: p["container"].as_i64().unwrap_or(-1),
                    // The local cluster's metrics managers listen on the loopback address.
                    host_port: format!("127.0.0.1:{port}"),
                });
            }
        }
        if targets.len() == before {
            eprintln!(
                "egret: note: topology {name} has no metrics manager registered yet (still starting?); rerun later"
            );
        }
    }
    targets.sort();
    Ok(targets)
}

/// A YAML (and JSON) double-quoted string: JSON's escapes are a subset of YAML's, so any name is safe.
fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

/// A whole Prometheus configuration, written by hand: the shape is fixed and small, and the output deterministic.
fn scrape_config(cluster: &str, job: &str, targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `egret prometheus-config {cluster}`: the metrics managers of its running topologies."
    );
    let _ = writeln!(
        out,
        "# Ports change on every submit, kill and restart: rerun the command then (or see --file-sd)."
    );
    out.push_str("scrape_configs:\n");
    let _ = writeln!(out, "  - job_name: {}", quoted(job));
    out.push_str("    scrape_interval: 5s\n");
    out.push_str("    metrics_path: /metrics\n");
    // Egret's series already carry `topology`; honouring it keeps that name instead of `exported_topology`.
    out.push_str("    honor_labels: true\n");
    if targets.is_empty() {
        out.push_str("    static_configs: []\n");
        return out;
    }
    out.push_str("    static_configs:\n");
    for t in targets {
        let _ = writeln!(out, "      - targets: [{}]", quoted(&t.host_port));
        out.push_str("        labels:\n");
        let _ = writeln!(out, "          topology: {}", quoted(&t.topology));
        let _ = writeln!(out, "          container: {}", quoted(&t.container.to_string()));
    }
    out
}

/// Prometheus's `file_sd` format: one target group per metrics manager, since each has its own labels.
fn file_sd(targets: &[Target]) -> Value {
    targets
        .iter()
        .map(|t| {
            json!({
                "targets": [t.host_port],
                "labels": {"topology": t.topology, "container": t.container.to_string()},
            })
        })
        .collect()
}

/// Writes aside and renames, so Prometheus (reloading, or watching a file_sd file) never reads half a file.
fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = file.with_file_name(tmp_name);
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", file.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(topology: &str, container: i64, port: u16) -> Target {
        Target {
            topology: topology.into(),
            container,
            host_port: format!("127.0.0.1:{port}"),
        }
    }

    #[test]
    fn the_scrape_config_lists_every_metrics_manager_with_its_labels() {
        let text = scrape_config("local", "egret", &[target("wc", 1, 9001), target("wc", 2, 9002)]);
        assert!(text.contains("  - job_name: \"egret\"\n    scrape_interval: 5s\n    metrics_path: /metrics\n"));
        let group = concat!(
            "      - targets: [\"127.0.0.1:9002\"]\n",
            "        labels:\n",
            "          topology: \"wc\"\n",
            "          container: \"2\"\n",
        );
        assert!(text.contains(group), "{text}");
    }

    #[test]
    fn no_targets_is_still_a_configuration() {
        let text = scrape_config("local", "egret", &[]);
        assert!(text.ends_with("    static_configs: []\n"), "{text}");
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quoted("a\"b: #c"), "\"a\\\"b: #c\"");
    }

    #[test]
    fn file_sd_has_one_group_per_target() {
        let v = file_sd(&[target("wc", 1, 9001)]);
        assert_eq!(
            v,
            json!([{"targets": ["127.0.0.1:9001"], "labels": {"topology": "wc", "container": "1"}}])
        );
    }
}
