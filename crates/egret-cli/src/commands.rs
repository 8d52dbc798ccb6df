//! The commands that act on a running topology, and the daemon roles executors start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use egret_proto::egret::{Location, SetActive, control};
use egret_scheduler::Scheduler;
use egret_scheduler::config::{Kind as SchedulerKind, SchedulerConfig};
use egret_scheduler::local::LocalScheduler;
use egret_scheduler::package_dir;
use egret_scheduler::supervisor::SUPERVISOR;
use egret_statemgr::StateManager;
use egret_transport::auth::TopologySecret;
use egret_transport::{Frame, split};

pub fn check_cluster(home: &Path, cluster: &str) -> anyhow::Result<()> {
    Ok(egret_tracker::explain::check_cluster(home, cluster)?)
}

#[derive(Args)]
pub struct TopologyArgs {
    /// The cluster: `local`, or one configured under $EGRET_HOME/conf/<cluster>/.
    cluster: String,
    topology: String,
}

#[derive(Args)]
pub struct CheckpointsArgs {
    /// The cluster: `local`, or one configured under $EGRET_HOME/conf/<cluster>/.
    cluster: String,
    topology: String,
    /// Print JSON (what the tracker's /checkpoints serves).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestartArgs {
    /// The cluster: `local`, or one configured under $EGRET_HOME/conf/<cluster>/.
    cluster: String,
    topology: String,
    /// Restart only this container (0 is the tmanager's); all containers if absent.
    #[arg(long)]
    container: Option<i32>,
}

#[derive(Args)]
pub struct ListArgs {
    /// The cluster: `local`, or one configured under $EGRET_HOME/conf/<cluster>/.
    cluster: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The cluster: `local`, or one configured under $EGRET_HOME/conf/<cluster>/.
    cluster: String,
    topology: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DaemonArgs {
    #[arg(long)]
    cluster: String,
    #[arg(long)]
    topology: String,
    #[arg(long, required_unless_present = "container_from_pod_name")]
    container: Option<i32>,
    /// Take the container id from the ordinal at the end of the `POD_NAME` environment variable (`<topology>-<id>`,
    /// a StatefulSet pod's name): how a Kubernetes pod starts its executor.
    #[arg(long, conflicts_with = "container")]
    container_from_pod_name: bool,
    /// Address to listen on and advertise (an executor passes it to its daemons).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

impl DaemonArgs {
    /// The container id: `--container`, or the ordinal of `POD_NAME`.
    fn container(&self) -> anyhow::Result<i32> {
        match self.container {
            Some(c) => Ok(c),
            None => {
                let pod =
                    std::env::var("POD_NAME").context("--container-from-pod-name needs POD_NAME in the environment")?;
                container_of_pod(&pod)
            }
        }
    }
}

/// The container id of a StatefulSet pod named `<anything>-<ordinal>`.
fn container_of_pod(pod: &str) -> anyhow::Result<i32> {
    pod.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<i32>().ok())
        .filter(|c| *c >= 0)
        .with_context(|| format!("pod name {pod:?} does not end in -<container id>"))
}

#[derive(Args)]
pub struct SupervisorArgs {
    #[arg(long)]
    cluster: String,
    #[arg(long)]
    topology: String,
}

#[derive(Args)]
pub struct TrackerArgs {
    /// Port to listen on; 0 picks a free one (see --port-file).
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Once listening, write the bound port to this file (how scripts find the port of `--port 0`).
    #[arg(long)]
    port_file: Option<PathBuf>,
}

/// The scheduler of `cluster`, as its `conf/<cluster>/scheduler.yaml` says (local processes when there is none).
pub fn scheduler(home: &Path, cluster: &str) -> anyhow::Result<Box<dyn Scheduler>> {
    let config = SchedulerConfig::load(home, cluster)?;
    Ok(match config.kind {
        SchedulerKind::Local => Box::new(LocalScheduler::new(
            home,
            cluster,
            std::env::current_exe().context("cannot find the egret binary")?,
        )),
        SchedulerKind::Kubernetes => Box::new(egret_kubernetes::KubernetesBackend::new(home, cluster, &config)?),
    })
}

pub(crate) fn existing(home: &Path, cluster: &str, topology: &str) -> anyhow::Result<Arc<dyn StateManager>> {
    Ok(egret_tracker::explain::existing(home, cluster, topology)?)
}

/// Stops every process of a topology (its supervisor first) and removes its state, package and nothing else (logs
/// stay). Also what a failed submit does, so it must cope with a topology that is only partly written.
pub fn cleanup(home: &Path, cluster: &str, topology: &str) -> anyhow::Result<String> {
    let stopped = scheduler(home, cluster)?.kill(topology)?;
    egret_statemgr::open(home, cluster)?.delete_topology(topology)?;
    TopologySecret::remove(home, cluster, topology).context("cannot remove the topology's secret")?;
    let pkg = package_dir(home, cluster, topology);
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("cannot remove {}", pkg.display()))?;
    }
    Ok(stopped)
}

pub fn kill(home: &Path, a: TopologyArgs) -> anyhow::Result<()> {
    existing(home, &a.cluster, &a.topology)?;
    let stopped = cleanup(home, &a.cluster, &a.topology)?;
    println!("killed topology {} ({stopped}; state removed)", a.topology);
    Ok(())
}

/// Sends one control message to the tmanager (proving the topology's secret) and returns its answer.
pub(crate) fn ask_tmanager(
    state: &dyn StateManager,
    secret: &TopologySecret,
    topology: &str,
    msg: control::Msg,
) -> anyhow::Result<(bool, String)> {
    let l: Location = state
        .get_location(topology, "tmanager")?
        .with_context(|| format!("topology {topology} has no tmanager yet"))?;
    let stream = secret
        .connect_to(&l.host, l.port as u16)
        .with_context(|| format!("cannot reach the tmanager at {}:{}", l.host, l.port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (mut reader, mut writer) = split(stream, 1 << 20)?;
    writer.send_control(msg)?;
    match reader.read()? {
        Frame::Control(control::Msg::Status(s)) => Ok((s.ok, s.message)),
        other => bail!("unexpected answer from the tmanager: {other:?}"),
    }
}

pub fn set_active(home: &Path, a: TopologyArgs, active: bool) -> anyhow::Result<()> {
    let state = existing(home, &a.cluster, &a.topology)?;
    let id = state.get_topology(&a.topology)?.map(|t| t.id).unwrap_or_default();
    let secret = TopologySecret::load(home, &a.cluster, &a.topology)?;
    let (ok, message) = ask_tmanager(
        &*state,
        &secret,
        &a.topology,
        control::Msg::SetActive(SetActive {
            topology_id: id,
            active,
        }),
    )?;
    if !ok {
        bail!("the tmanager refused: {message}");
    }
    println!("topology {}: {message}", a.topology);
    Ok(())
}

pub fn restart(home: &Path, a: RestartArgs) -> anyhow::Result<()> {
    let state = existing(home, &a.cluster, &a.topology)?;
    let containers: Vec<i32> = match a.container {
        Some(c) => {
            if !state.container_statuses(&a.topology)?.iter().any(|s| s.container == c) {
                bail!("topology {} has no container {c}", a.topology);
            }
            vec![c]
        }
        None => state
            .container_statuses(&a.topology)?
            .iter()
            .map(|s| s.container)
            .collect(),
    };
    let what = scheduler(home, &a.cluster)?.restart(&a.topology, &containers)?;
    println!(
        "restarted container(s) {containers:?} of topology {} ({what})",
        a.topology
    );
    Ok(())
}

pub fn list(home: &Path, a: ListArgs) -> anyhow::Result<()> {
    check_cluster(home, &a.cluster)?;
    let state = egret_statemgr::open(home, &a.cluster)?;
    let rows = egret_tracker::explain::list(&*state)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no topologies on cluster {}", a.cluster);
    } else {
        println!("{:<30} {:<10} {:>10}", "TOPOLOGY", "STATE", "CONTAINERS");
        for r in rows {
            println!(
                "{:<30} {:<10} {:>10}",
                r["name"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["containers"]
            );
        }
    }
    Ok(())
}

/// `egret checkpoints <cluster> <topology>`: the checkpoints kept in the topology's store (also after `egret kill`,
/// for `egret submit --restore-checkpoint`), and which of them the running topology records as complete. The data
/// is the tracker's (`egret_tracker::explain::checkpoints`).
pub fn checkpoints(home: &Path, a: CheckpointsArgs) -> anyhow::Result<()> {
    check_cluster(home, &a.cluster)?;
    let state = egret_statemgr::open(home, &a.cluster)?;
    let c = egret_tracker::explain::checkpoints(&*state, &a.topology)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    println!(
        "checkpoints of {} in {}",
        a.topology,
        c["store"].as_str().unwrap_or_default()
    );
    match c["epoch"].as_u64() {
        Some(e) => println!("running in rollback epoch {e}"),
        None => println!("not running (or not effectively-once): no checkpoint is recorded as complete"),
    }
    let kept = c["kept"].as_array().cloned().unwrap_or_default();
    if kept.is_empty() {
        println!("none kept");
        return Ok(());
    }
    println!("{:>20} {:>9} {:>6} {:>12}", "CHECKPOINT", "COMPLETE", "TASKS", "BYTES");
    for k in kept {
        println!(
            "{:>20} {:>9} {:>6} {:>12}",
            k["id"].as_u64().unwrap_or(0),
            if k["complete"].as_bool() == Some(true) {
                "yes"
            } else {
                "-"
            },
            k["tasks"].as_u64().unwrap_or(0),
            k["bytes"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}

pub fn explain(home: &Path, a: ExplainArgs) -> anyhow::Result<()> {
    // The same data the tracker serves; the text below is printed from it so the two cannot disagree.
    let out = egret_tracker::explain::explain(home, &a.cluster, &a.topology)?;
    let name = &a.topology;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let items = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    println!("topology {name} ({}) is {}", text(&out["id"]), text(&out["state"]));
    println!("\nlogical plan:");
    for c in items(&out["logical_plan"]) {
        println!("  {} {} x{}", text(&c["kind"]), text(&c["name"]), c["parallelism"]);
        for i in items(&c["inputs"]) {
            println!(
                "    <- {}/{} ({})",
                text(&i["component"]),
                text(&i["stream"]),
                text(&i["grouping"])
            );
        }
    }
    println!("\npacking plan ({}):", text(&out["packing_plan"]["algorithm"]));
    for c in items(&out["packing_plan"]["containers"]) {
        let list: Vec<String> = items(&c["instances"])
            .iter()
            .map(|i| format!("{}#{}", text(&i["component"]), i["task"]))
            .collect();
        println!("  container {}: {}", c["container"], list.join(", "));
    }
    let published = out["physical_plan"]["published"].as_bool().unwrap_or(false);
    println!(
        "\nphysical plan: {}",
        if published { "published" } else { "not yet published" }
    );
    for s in items(&out["physical_plan"]["stmgrs"]) {
        println!(
            "  {} on {}:{} (pid {})",
            text(&s["id"]),
            text(&s["host"]),
            s["data_port"],
            s["pid"]
        );
    }
    println!("\nprocesses:");
    println!(
        "  {:<28} {:>4} {:>8} {:<10} {:>8} {:>8}  LOG",
        "NAME", "CONT", "PID", "STATE", "RESTARTS", "PORT"
    );
    for p in &items(&out["processes"]) {
        let port = p["port"].as_i64().map(|v| v.to_string()).unwrap_or_default();
        println!(
            "  {:<28} {:>4} {:>8} {:<10} {:>8} {:>8}  {}",
            p["name"].as_str().unwrap_or(""),
            p["container"],
            p["pid"],
            p["state"].as_str().unwrap_or(""),
            p["restarts"],
            port,
            p["log"].as_str().unwrap_or("")
        );
        if let Some(h) = p["http_port"].as_i64() {
            println!("  {:<28} metrics: http://127.0.0.1:{h}/metrics", "");
        }
    }
    Ok(())
}

/// Serves the tracker's JSON API until killed.
pub fn tracker(home: &Path, a: TrackerArgs) -> anyhow::Result<()> {
    egret_scheduler::logging::init(&[("process", &"tracker")]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tracker's async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let port = listener.local_addr().context("cannot read the bound address")?.port();
        if let Some(file) = &a.port_file {
            // Written aside and renamed, so a reader polling the file never sees a partial number.
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, format!("{port}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
        }
        println!(
            "tracker: serving http://{}:{port}/api/v1 for {}",
            a.host,
            home.display()
        );
        egret_tracker::serve(
            egret_tracker::Opts {
                egret_home: home.to_path_buf(),
            },
            listener,
        )
        .await?;
        Ok(())
    })
}

/// Every line a daemon logs names its topology, container and process (as its log file is named).
fn init_logging(a: &DaemonArgs, container: i32, process: &str) {
    egret_scheduler::logging::init(&[
        ("topology", &a.topology),
        ("container", &container),
        ("process", &process),
    ]);
}

pub fn supervisor(home: &Path, a: SupervisorArgs) -> anyhow::Result<()> {
    egret_scheduler::logging::init(&[("topology", &a.topology), ("process", &SUPERVISOR)]);
    egret_scheduler::supervisor::run(egret_scheduler::supervisor::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        egret_bin: std::env::current_exe().context("cannot find the egret binary")?,
    })?;
    Ok(())
}

pub fn executor(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    let container = a.container()?;
    init_logging(&a, container, &format!("executor-{container}"));
    egret_scheduler::executor::run(egret_scheduler::executor::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        container,
        host: a.host,
        egret_bin: std::env::current_exe().context("cannot find the egret binary")?,
    })?;
    Ok(())
}

pub fn tmanager(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    init_logging(&a, a.container()?, "tmanager");
    let secret = TopologySecret::load(home, &a.cluster, &a.topology)?;
    egret_tmanager::run(egret_tmanager::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        host: a.host,
        secret,
    })?;
    Ok(())
}

pub fn stmgr(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    let container = a.container()?;
    init_logging(&a, container, &format!("stmgr-{container}"));
    let secret = TopologySecret::load(home, &a.cluster, &a.topology)?;
    egret_stmgr::run(egret_stmgr::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        container,
        host: a.host,
        secret,
    })?;
    Ok(())
}

pub fn metricsmgr(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    let container = a.container()?;
    let process = format!("metricsmgr-{container}");
    init_logging(&a, container, &process);
    let secret = TopologySecret::load(home, &a.cluster, &a.topology)?;
    let state = egret_statemgr::open(home, &a.cluster)?;
    let m = egret_metricsmgr::MetricsManager::bind(&a.topology, &a.host)?;
    tracing::info!(
        cluster = %a.cluster,
        egret_home = %home.display(),
        host = %a.host,
        publisher_port = m.publisher_port(),
        http_port = m.http_port(),
        "metricsmgr started"
    );
    state.put_location(
        &a.topology,
        &Location {
            process,
            container,
            host: a.host.clone(),
            port: m.publisher_port() as i32,
            pid: std::process::id() as i32,
            http_port: m.http_port() as i32,
        },
    )?;
    // Every export interval, the latest values go to the tmanager, which keeps their time series for the tracker.
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let (secret, handle, topology, container, stop) = (
            secret.clone(),
            m.snapshot_handle(),
            a.topology.clone(),
            container,
            Arc::clone(&shutdown),
        );
        std::thread::spawn(move || {
            let locate = move || {
                let l = state.get_location(&topology, "tmanager").ok()??;
                Some((l.host, l.port as u16))
            };
            egret_metricsmgr::forward_reports(
                &secret,
                handle,
                container,
                locate,
                egret_metricsmgr::EXPORT_INTERVAL,
                stop,
            )
        });
    }
    m.serve(&secret, shutdown)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::container_of_pod;

    #[test]
    fn a_statefulset_pods_ordinal_is_its_container() {
        assert_eq!(container_of_pod("word-count-0").unwrap(), 0);
        assert_eq!(container_of_pod("word-count-12").unwrap(), 12);
        for bad in ["word-count", "wordcount-x", "-", ""] {
            let e = container_of_pod(bad).unwrap_err().to_string();
            assert!(e.contains("does not end in -<container id>"), "{bad}: {e}");
        }
    }
}
