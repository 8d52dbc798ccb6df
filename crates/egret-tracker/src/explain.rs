//! What `egret explain --json` prints and the tracker serves: a topology's logical plan, packing plan, physical
//! plan and processes, gathered from the state manager. Kept here, in one place, so the CLI and the tracker
//! cannot drift apart.

use std::path::Path;
use std::sync::Arc;

use egret_api::TaskId;
use egret_checkpoint::{CheckpointStore, LocalStore};
use egret_proto::api::TopologyState;
use egret_scheduler::local::alive;
use egret_scheduler::log_dir;
use egret_scheduler::supervisor::SUPERVISOR;
use egret_statemgr::StateManager;
use serde_json::{Value, json};

use crate::TrackerError;

/// `cluster` is `local` or one configured under `$EGRET_HOME/conf/`.
pub fn check_cluster(home: &Path, cluster: &str) -> Result<(), TrackerError> {
    if !egret_statemgr::config::clusters(home).iter().any(|c| c == cluster) {
        return Err(TrackerError::UnknownCluster(cluster.to_string()));
    }
    Ok(())
}

/// Every topology of every cluster, each row with its `cluster`.
pub fn list_all(home: &Path) -> Result<Vec<Value>, TrackerError> {
    let mut rows = Vec::new();
    for cluster in egret_statemgr::config::clusters(home) {
        let state = egret_statemgr::open(home, &cluster)?;
        for mut r in list(&*state)? {
            r["cluster"] = json!(cluster);
            rows.push(r);
        }
    }
    Ok(rows)
}

/// The state manager of `cluster`, if it holds `topology`.
pub fn existing(home: &Path, cluster: &str, topology: &str) -> Result<Arc<dyn StateManager>, TrackerError> {
    check_cluster(home, cluster)?;
    let state = egret_statemgr::open(home, cluster)?;
    if !state.exists(topology)? {
        return Err(TrackerError::UnknownTopology {
            cluster: cluster.to_string(),
            topology: topology.to_string(),
        });
    }
    Ok(state)
}

/// RUNNING or PAUSED from the published physical plan; STARTING until the tmanager publishes one.
pub fn topology_state(state: &dyn StateManager, name: &str) -> String {
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

/// One row per topology of the cluster, as `egret list --json` prints them.
pub fn list(state: &dyn StateManager) -> Result<Vec<Value>, TrackerError> {
    let mut rows = Vec::new();
    for name in state.list_topologies()? {
        let exec = state.get_execution_state(&name)?;
        rows.push(json!({
            "name": name,
            "state": topology_state(state, &name),
            "containers": exec.as_ref().map_or(0, |e| e.containers),
            "submitted_ms": exec.as_ref().map_or(0, |e| e.submission_time_ms),
            "user": exec.map(|e| e.submission_user).unwrap_or_default(),
        }));
    }
    Ok(rows)
}

/// An effectively-once topology's checkpoints, what `egret checkpoints --json` prints and the tracker serves: the
/// store's directory, the rollback epoch and the complete checkpoints the tmanager recorded (none once the topology is
/// killed), and every checkpoint the store keeps with its task count and size (kept after kill, for
/// `egret submit --restore-checkpoint`).
pub fn checkpoints(state: &dyn StateManager, name: &str) -> Result<Value, TrackerError> {
    let store = LocalStore::new(state.checkpoints_dir(name)?);
    let record = state.get_stateful_checkpoints(name)?;
    let kept = store.checkpoints().map_err(|e| TrackerError::Checkpoints {
        topology: name.to_string(),
        reason: e.to_string(),
    })?;
    let kept: Vec<Value> = kept
        .into_iter()
        .map(|id| {
            let (mut tasks, mut bytes) = (0u64, 0u64);
            let dir = store.blob_path(id, TaskId(1));
            if let Some(entries) = dir.parent().and_then(|d| std::fs::read_dir(d).ok()) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().ends_with(".ckpt") {
                        tasks += 1;
                        bytes += e.metadata().map_or(0, |m| m.len());
                    }
                }
            }
            let complete = record.as_ref().is_some_and(|r| r.complete.contains(&id.0));
            json!({"id": id.0, "complete": complete, "tasks": tasks, "bytes": bytes})
        })
        .collect();
    Ok(json!({
        "topology": name,
        "store": store.dir().display().to_string(),
        "epoch": record.as_ref().map(|r| r.epoch),
        "complete": record.map(|r| r.complete).unwrap_or_default(),
        "kept": kept,
    }))
}

/// The explain data of one topology: what `egret explain --json` prints.
pub fn explain(home: &Path, cluster: &str, name: &str) -> Result<Value, TrackerError> {
    let state = existing(home, cluster, name)?;
    explain_from(&*state, home, cluster, name)
}

/// [`explain`] with the state manager already open.
pub fn explain_from(state: &dyn StateManager, home: &Path, cluster: &str, name: &str) -> Result<Value, TrackerError> {
    let definition = state
        .get_topology(name)?
        .ok_or_else(|| TrackerError::MissingDefinition {
            topology: name.to_string(),
        })?;
    let parsed = egret_proto::defn::from_definition(&definition).map_err(|source| TrackerError::Definition {
        topology: name.to_string(),
        source,
    })?;
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
    let logs = log_dir(home, cluster, name);
    // The supervisor belongs to no container; it is listed first, as the parent of every executor.
    let supervisor = locations.iter().find(|l| l.process == SUPERVISOR).map(|l| {
        json!({"name": SUPERVISOR, "container": null, "pid": l.pid,
            "state": if alive(l.pid) { "running" } else { "gone" }, "restarts": 0,
            "log": logs.join(format!("{SUPERVISOR}.log")).display().to_string()})
    });
    let processes: Vec<_> = supervisor
        .into_iter()
        .chain(containers.iter()
        .flat_map(|c| {
            let executor = json!({"name": format!("executor-{}", c.container), "container": c.container, "pid": c.executor_pid,
                "state": if alive(c.executor_pid) { "running" } else { "gone" }, "restarts": 0,
                "log": logs.join(format!("executor-{}.log", c.container)).display().to_string()});
            std::iter::once(executor).chain(c.processes.iter().map(|p| {
                let loc = locations.iter().find(|l| l.process == p.name);
                json!({"name": p.name, "container": p.container, "pid": p.pid, "state": p.state, "restarts": p.restarts,
                       "log": p.log_file, "port": loc.map(|l| l.port), "http_port": loc.map(|l| l.http_port).filter(|&p| p > 0)})
            }))
        }))
        .collect();
    Ok(json!({
        "topology": name,
        "id": definition.id,
        "state": topology_state(state, name),
        "config": t.config().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "logical_plan": components,
        "packing_plan": {"algorithm": packing.algorithm, "containers": packing_json},
        "physical_plan": {"published": pplan.is_some(), "stmgrs": stmgrs},
        "processes": processes,
    }))
}
