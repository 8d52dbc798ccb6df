//! The commands that act on a running topology, and the daemon roles executors start.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use egret_proto::api::TopologyState;
use egret_proto::egret::{Location, SetActive, control};
use egret_scheduler::local::{LocalScheduler, alive};
use egret_scheduler::{log_dir, package_dir};
use egret_statemgr::LocalStateManager;
use egret_transport::{Frame, split};
use serde_json::json;

/// The only cluster this build can run on.
pub const LOCAL: &str = "local";

pub fn check_cluster(cluster: &str) -> anyhow::Result<()> {
    if cluster != LOCAL {
        bail!("unknown cluster {cluster:?}: this build runs topologies on the `local` cluster only");
    }
    Ok(())
}

#[derive(Args)]
pub struct TopologyArgs {
    cluster: String,
    topology: String,
}

#[derive(Args)]
pub struct RestartArgs {
    cluster: String,
    topology: String,
    /// Restart only this container (0 is the tmanager's); all containers if absent.
    #[arg(long)]
    container: Option<i32>,
}

#[derive(Args)]
pub struct ListArgs {
    cluster: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
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
    #[arg(long)]
    container: i32,
    /// Address to listen on and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

fn scheduler(home: &Path, cluster: &str) -> anyhow::Result<LocalScheduler> {
    Ok(LocalScheduler::new(
        home,
        cluster,
        std::env::current_exe().context("cannot find the egret binary")?,
    ))
}

fn existing(home: &Path, cluster: &str, topology: &str) -> anyhow::Result<LocalStateManager> {
    check_cluster(cluster)?;
    let state = LocalStateManager::new(home, cluster)?;
    if !state.exists(topology)? {
        bail!("no topology {topology} on cluster {cluster} (egret list {cluster} shows what runs)");
    }
    Ok(state)
}

/// Stops every process of a topology and removes its state, package and nothing else (logs stay).
pub fn cleanup(home: &Path, cluster: &str, topology: &str) -> anyhow::Result<Vec<i32>> {
    let groups = scheduler(home, cluster)?.stop(topology, None, Duration::from_secs(5))?;
    LocalStateManager::new(home, cluster)?.delete_topology(topology)?;
    let pkg = package_dir(home, cluster, topology);
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("cannot remove {}", pkg.display()))?;
    }
    Ok(groups)
}

pub fn kill(home: &Path, a: TopologyArgs) -> anyhow::Result<()> {
    let state = existing(home, &a.cluster, &a.topology)?;
    let pids: Vec<i32> = state
        .container_statuses(&a.topology)?
        .iter()
        .flat_map(|c| c.processes.iter().map(|p| p.pid).chain([c.executor_pid]))
        .collect();
    let groups = cleanup(home, &a.cluster, &a.topology)?;
    let survivors: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    if !survivors.is_empty() {
        bail!(
            "killed topology {}, but processes {survivors:?} are still alive",
            a.topology
        );
    }
    println!(
        "killed topology {} ({} containers stopped, state removed)",
        a.topology,
        groups.len()
    );
    Ok(())
}

/// Sends one control message to the tmanager and returns its answer.
fn ask_tmanager(state: &LocalStateManager, topology: &str, msg: control::Msg) -> anyhow::Result<(bool, String)> {
    let l: Location = state
        .get_location(topology, "tmanager")?
        .with_context(|| format!("topology {topology} has no tmanager yet"))?;
    let stream = TcpStream::connect((l.host.as_str(), l.port as u16))
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
    let (ok, message) = ask_tmanager(
        &state,
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
    let sched = scheduler(home, &a.cluster)?;
    sched.stop(&a.topology, Some(&containers), Duration::from_secs(5))?;
    for &c in &containers {
        sched.launch(&a.topology, c)?;
    }
    println!("restarted container(s) {containers:?} of topology {}", a.topology);
    Ok(())
}

fn topology_state(state: &LocalStateManager, name: &str) -> String {
    match state.get_physical_plan(name) {
        Ok(Some(p)) => match p.topology.map(|t| t.state) {
            Some(s) if s == TopologyState::Running as i32 => "RUNNING".into(),
            Some(s) if s == TopologyState::Paused as i32 => "PAUSED".into(),
            _ => "UNKNOWN".into(),
        },
        Ok(None) => "STARTING".into(),
        Err(e) => format!("UNREADABLE ({e})"),
    }
}

pub fn list(home: &Path, a: ListArgs) -> anyhow::Result<()> {
    check_cluster(&a.cluster)?;
    let state = LocalStateManager::new(home, &a.cluster)?;
    let mut rows = Vec::new();
    for name in state.list_topologies()? {
        let exec = state.get_execution_state(&name)?;
        rows.push(json!({
            "name": name,
            "state": topology_state(&state, &name),
            "containers": exec.as_ref().map_or(0, |e| e.containers),
            "submitted_ms": exec.as_ref().map_or(0, |e| e.submission_time_ms),
            "user": exec.map(|e| e.submission_user).unwrap_or_default(),
        }));
    }
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

pub fn explain(home: &Path, a: ExplainArgs) -> anyhow::Result<()> {
    let state = existing(home, &a.cluster, &a.topology)?;
    let name = &a.topology;
    let definition = state.get_topology(name)?.context("the definition is missing")?;
    let parsed = egret_proto::defn::from_definition(&definition)?;
    let packing = state.get_packing_plan(name)?.unwrap_or_default();
    let pplan = state.get_physical_plan(name)?;
    let locations = state.locations(name)?;
    let containers = state.container_statuses(name)?;
    let t = &parsed.topology;
    let components: Vec<_> = t
        .components()
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            json!({
                "name": c.name,
                "kind": if c.kind.is_spout() { "spout" } else { "bolt" },
                "parallelism": c.parallelism,
                "tasks": t.tasks_of(ci).map(|t| t.0).collect::<Vec<_>>(),
                "outputs": c.outputs.iter().map(|s| json!({"stream": s.name, "fields": s.fields.names(), "direct": s.direct})).collect::<Vec<_>>(),
                "inputs": c.inputs.iter().map(|i| json!({"component": i.component, "stream": i.stream, "grouping": i.grouping.to_string()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let packing_json: Vec<_> = packing
        .containers
        .iter()
        .map(|c| {
            json!({
                "container": c.id,
                "instances": c.instances.iter().map(|i| json!({"task": i.task_id, "component": i.component, "index": i.component_index})).collect::<Vec<_>>(),
                "cpu": c.required.as_ref().map_or(0.0, |r| r.cpu),
                "ram_bytes": c.required.as_ref().map_or(0, |r| r.ram_bytes),
            })
        })
        .collect();
    let stmgrs: Vec<_> = pplan
        .as_ref()
        .map(|p| p.stmgrs.iter().map(|s| json!({"id": s.id, "container": s.container, "host": s.host, "data_port": s.data_port, "pid": s.pid})).collect())
        .unwrap_or_default();
    let processes: Vec<_> = containers
        .iter()
        .flat_map(|c| {
            let executor = json!({"name": format!("executor-{}", c.container), "container": c.container, "pid": c.executor_pid,
                "state": if alive(c.executor_pid) { "running" } else { "gone" }, "restarts": 0,
                "log": log_dir(home, &a.cluster, name).join(format!("executor-{}.log", c.container)).display().to_string()});
            std::iter::once(executor).chain(c.processes.iter().map(|p| {
                let loc = locations.iter().find(|l| l.process == p.name);
                json!({"name": p.name, "container": p.container, "pid": p.pid, "state": p.state, "restarts": p.restarts,
                       "log": p.log_file, "port": loc.map(|l| l.port), "http_port": loc.map(|l| l.http_port).filter(|&p| p > 0)})
            }))
        })
        .collect();
    let out = json!({
        "topology": name,
        "id": definition.id,
        "state": topology_state(&state, name),
        "config": t.config().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "logical_plan": components,
        "packing_plan": {"algorithm": packing.algorithm, "containers": packing_json},
        "physical_plan": {"published": pplan.is_some(), "stmgrs": stmgrs},
        "processes": processes,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "topology {name} ({}) is {}",
        definition.id,
        out["state"].as_str().unwrap_or("")
    );
    println!("\nlogical plan:");
    for c in t.components() {
        let kind = if c.kind.is_spout() { "spout" } else { "bolt" };
        println!("  {kind} {} x{}", c.name, c.parallelism);
        for i in &c.inputs {
            println!("    <- {}/{} ({})", i.component, i.stream, i.grouping);
        }
    }
    println!("\npacking plan ({}):", packing.algorithm);
    for c in &packing.containers {
        let list: Vec<String> = c
            .instances
            .iter()
            .map(|i| format!("{}#{}", i.component, i.task_id))
            .collect();
        println!("  container {}: {}", c.id, list.join(", "));
    }
    println!(
        "\nphysical plan: {}",
        if pplan.is_some() {
            "published"
        } else {
            "not yet published"
        }
    );
    for s in stmgrs {
        println!(
            "  {} on {}:{} (pid {})",
            s["id"].as_str().unwrap_or(""),
            s["host"].as_str().unwrap_or(""),
            s["data_port"],
            s["pid"]
        );
    }
    println!("\nprocesses:");
    println!(
        "  {:<28} {:>4} {:>8} {:<10} {:>8} {:>8}  LOG",
        "NAME", "CONT", "PID", "STATE", "RESTARTS", "PORT"
    );
    for p in &processes {
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

pub fn executor(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    egret_scheduler::executor::run(egret_scheduler::executor::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        container: a.container,
        egret_bin: std::env::current_exe().context("cannot find the egret binary")?,
    })?;
    Ok(())
}

pub fn tmanager(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    egret_tmanager::run(egret_tmanager::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        host: a.host,
    })?;
    Ok(())
}

pub fn stmgr(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    egret_stmgr::run(egret_stmgr::Opts {
        egret_home: home.to_path_buf(),
        cluster: a.cluster,
        topology: a.topology,
        container: a.container,
        host: a.host,
    })?;
    Ok(())
}

pub fn metricsmgr(home: &Path, a: DaemonArgs) -> anyhow::Result<()> {
    let state = LocalStateManager::new(home, &a.cluster)?;
    let m = egret_metricsmgr::MetricsManager::bind(&a.topology, &a.host)?;
    let process = format!("metricsmgr-{}", a.container);
    eprintln!(
        "metricsmgr: topology={} publishers on {} http on {}",
        a.topology,
        m.publisher_port(),
        m.http_port()
    );
    state.put_location(
        &a.topology,
        &Location {
            process,
            container: a.container,
            host: a.host.clone(),
            port: m.publisher_port() as i32,
            pid: std::process::id() as i32,
            http_port: m.http_port() as i32,
        },
    )?;
    m.serve(Arc::new(AtomicBool::new(false)))?;
    Ok(())
}
