//! What `egret explain --json` prints and the tracker serves: a topology's logical plan, packing plan, physical
//! plan and processes, gathered from the state manager. Kept here, in one place, so the CLI and the tracker
//! cannot drift apart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use egret_api::{ReliabilityMode, TaskId, Topology};
use egret_checkpoint::{CheckpointStore, LocalStore};
use egret_proto::api::TopologyState;
use egret_proto::egret::{ContainerStatus, PackingPlan, PhysicalPlan, StatefulCheckpoints};
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
            // A topology whose definition cannot be read (still being submitted) is not rescaling.
            "rescaling": scaling(state, &name).is_ok_and(|s| s["rescaling"] == true),
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
    let record = match t.config().reliability_mode() {
        Ok(ReliabilityMode::EffectivelyOnce) => state.get_stateful_checkpoints(name)?,
        _ => None,
    };
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
        "scaling": scaling_of(t, &packing, pplan.as_ref(), &containers, record.as_ref()),
    }))
}

/// A topology's `scaling` view ([`scaling_of`]), read from the state manager: what [`explain`] shows under
/// `scaling`.
pub fn scaling(state: &dyn StateManager, name: &str) -> Result<Value, TrackerError> {
    let definition = state
        .get_topology(name)?
        .ok_or_else(|| TrackerError::MissingDefinition {
            topology: name.to_string(),
        })?;
    let t = egret_proto::defn::from_definition(&definition)
        .map_err(|source| TrackerError::Definition {
            topology: name.to_string(),
            source,
        })?
        .topology;
    let record = match t.config().reliability_mode() {
        Ok(ReliabilityMode::EffectivelyOnce) => state.get_stateful_checkpoints(name)?,
        _ => None,
    };
    Ok(scaling_of(
        &t,
        &state.get_packing_plan(name)?.unwrap_or_default(),
        state.get_physical_plan(name)?.as_ref(),
        &state.container_statuses(name)?,
        record.as_ref(),
    ))
}

/// The tasks whose instance process an executor reports running (`instance-<task>-<component>` in state
/// `running`), each with its component: what a rescale waits for.
pub fn running_instances(statuses: &[ContainerStatus]) -> BTreeMap<u32, String> {
    statuses
        .iter()
        .flat_map(|c| &c.processes)
        .filter(|p| p.state == "running")
        .filter_map(|p| {
            let rest = p.name.strip_prefix("instance-")?;
            let (task, component) = rest.split_once('-').unwrap_or((rest, ""));
            Some((task.parse().ok()?, component.to_string()))
        })
        .collect()
}

/// Each component's task ids, as `[{component, task_ids}]`.
fn layout_json(components: impl IntoIterator<Item = (String, Vec<u32>)>) -> Value {
    components
        .into_iter()
        .map(|(component, task_ids)| json!({"component": component, "task_ids": task_ids}))
        .collect()
}

/// The `scaling` view of a topology (in [`explain`]): each component's parallelism and task ids now (from the
/// stored definition, `t`), which of its tasks have a running instance process, which have none yet (`pending`) and
/// which instances still run for a task no longer in the plan (`leaving`); and whether the topology is in the
/// middle of a rescale (`rescaling`), with what it waits for (`waiting`). A topology is rescaling once its physical
/// plan is published and: the physical plan's task layout is not the stored definition's (the tmanager has not
/// pushed the new plan yet), a task new since the newest complete checkpoint has no running instance, an instance
/// runs for a task of neither the definition nor the packing plan, or (effectively-once) the newest complete checkpoint was taken under another layout
/// (the rescale is done once a checkpoint completes under the new one, as `egret update` waits for). Before the
/// physical plan is published the topology is starting, not rescaling. A rescale the tmanager holds until its
/// checkpoint completes (effectively-once) is recorded with the checkpoints: it shows as `requested` (each
/// component's parallelism after it) and the topology as rescaling.
pub fn scaling_of(
    t: &Topology,
    packing: &PackingPlan,
    pplan: Option<&PhysicalPlan>,
    containers: &[ContainerStatus],
    checkpoints: Option<&StatefulCheckpoints>,
) -> Value {
    let layout = t.task_ids();
    // The tasks the topology should run: the definition's, and the packing plan's (stored just after it).
    let mut wanted: BTreeMap<u32, String> = t
        .components()
        .iter()
        .zip(&layout)
        .flat_map(|(c, ids)| ids.iter().map(|&task| (task, c.name.clone())))
        .collect();
    for i in packing.containers.iter().flat_map(|c| &c.instances) {
        if let Ok(task) = u32::try_from(i.task_id) {
            wanted.entry(task).or_insert_with(|| i.component.clone());
        }
    }
    let running = running_instances(containers);
    let published_layout = pplan
        .and_then(|p| p.topology.as_ref())
        .and_then(|d| egret_proto::defn::from_definition(d).ok())
        .map(|d| d.topology.task_ids());
    let plan_has_layout = published_layout.as_ref() == Some(&layout);

    let tasks_of = |component: &str, map: &BTreeMap<u32, String>, keep: &dyn Fn(&u32) -> bool| -> Vec<u32> {
        map.iter()
            .filter(|(task, c)| c.as_str() == component && keep(task))
            .map(|(task, _)| *task)
            .collect()
    };
    let components: Vec<Value> = t
        .components()
        .iter()
        .zip(&layout)
        .map(|(c, ids)| {
            json!({
                "name": c.name,
                "parallelism": ids.len(),
                "task_ids": ids,
                "running": tasks_of(&c.name, &wanted, &|task| running.contains_key(task)),
                "pending": tasks_of(&c.name, &wanted, &|task| !running.contains_key(task)),
                "leaving": tasks_of(&c.name, &running, &|task| !wanted.contains_key(task)),
            })
        })
        .collect();
    let pending: Vec<u32> = wanted.keys().filter(|t| !running.contains_key(t)).copied().collect();
    let leaving: Vec<u32> = running.keys().filter(|t| !wanted.contains_key(t)).copied().collect();

    // Effectively-once: the newest complete checkpoint, and the layout it was taken under when the tmanager
    // recorded one (it does for every checkpoint that completes while it runs).
    let checkpoint = checkpoints.map(|r| {
        let newest = r.complete.iter().max().copied();
        let taken_under = newest.and_then(|id| r.layouts.iter().find(|l| l.checkpoint == id));
        let under_current = taken_under.map(|l| {
            let by_name: BTreeMap<&str, &Vec<u32>> = l
                .components
                .iter()
                .map(|c| (c.component.as_str(), &c.task_ids))
                .collect();
            t.components()
                .iter()
                .zip(&layout)
                .all(|(c, ids)| by_name.get(c.name.as_str()) == Some(&ids))
        });
        let taken_layout =
            taken_under.map(|l| layout_json(l.components.iter().map(|c| (c.component.clone(), c.task_ids.clone()))));
        json!({
            "newest_complete": newest,
            "epoch": r.epoch,
            "layout": taken_layout,
            "under_current_layout": under_current,
        })
    });
    let checkpoint_behind = checkpoint
        .as_ref()
        .is_some_and(|c| c["under_current_layout"] == json!(false));

    let mut waiting = Vec::new();
    if pplan.is_some() {
        if !plan_has_layout {
            waiting.push("the physical plan does not have the new task layout yet".to_string());
        }
        if !pending.is_empty() {
            waiting.push(format!("no instance runs for task(s) {pending:?} yet"));
        }
        if !leaving.is_empty() {
            waiting.push(format!("the instances of task(s) {leaving:?} still run"));
        }
        if checkpoint_behind {
            waiting.push("no checkpoint has completed under the new layout yet".to_string());
        }
    }
    // A task without a running instance is a rescale's only if it is new: one whose instance crashed and is being
    // restarted is the executor's business. New = not in the layout of the newest complete checkpoint
    // (effectively-once); without checkpoints there is no earlier layout to compare with, and the physical plan's
    // layout and the leaving instances tell a rescale apart.
    let earlier: Option<std::collections::BTreeSet<u32>> = checkpoints.and_then(|r| {
        let newest = r.complete.iter().max()?;
        let l = r.layouts.iter().find(|l| l.checkpoint == *newest)?;
        Some(l.components.iter().flat_map(|c| c.task_ids.iter().copied()).collect())
    });
    let new_pending = earlier.is_some_and(|e| pending.iter().any(|t| !e.contains(t)));
    let requested: Option<serde_json::Map<String, Value>> = checkpoints
        .and_then(|r| r.pending_update.as_ref())
        .and_then(|u| u.topology.as_ref())
        .and_then(|d| egret_proto::defn::from_definition(d).ok())
        .map(|d| {
            d.topology
                .components()
                .iter()
                .map(|c| (c.name.clone(), json!(c.parallelism)))
                .collect()
        });
    if requested.is_some() {
        waiting.push("the requested rescale waits for its checkpoint to complete".to_string());
    }
    let rescaling = requested.is_some()
        || pplan.is_some() && (!plan_has_layout || !leaving.is_empty() || checkpoint_behind || new_pending);
    let tasks_running = wanted.keys().filter(|t| running.contains_key(t)).count();
    json!({
        "rescaling": rescaling,
        "requested": requested,
        "waiting": waiting,
        "tasks": wanted.len(),
        "tasks_running": tasks_running,
        "physical_plan_layout": published_layout.map(|l| {
            layout_json(t.components().iter().map(|c| c.name.clone()).zip(l))
        }),
        "components": components,
        "pending": pending,
        "leaving": leaving,
        "checkpoint": checkpoint,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use egret_api::{Bolt, BoltCollector, Config, OutputDeclarer, Spout, SpoutCollector, TopologyBuilder, Tuple, keys};
    use egret_proto::egret::{CheckpointLayout, ComponentTasks, InstanceInfo, ProcessStatus};
    use egret_testkit::{CLUSTER, TempHome, fixtures, store_topology};

    struct S;
    impl Spout for S {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["line"]);
        }
        fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
    }
    struct B;
    impl Bolt for B {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["word"]);
        }
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
    }

    /// A word count; components by name: count 1-2, sentence 3, split 4-5.
    pub(crate) fn word_count(config: Config) -> Topology {
        let mut b = TopologyBuilder::new("wc");
        b.set_config(config);
        b.set_spout("sentence", 1, || S);
        b.set_bolt("split", 2, || B).shuffle_grouping("sentence");
        b.set_bolt("count", 2, || B).fields_grouping("split", ["word"]);
        b.build().unwrap()
    }

    /// Stores `t` as `wc` (definition and a packing plan over 2 containers).
    pub(crate) fn store(state: &dyn StateManager, t: &Topology) -> egret_proto::api::Topology {
        store_topology(state, "wc", t, 2)
    }

    /// Publishes a physical plan running `definition` (with every task of it registered).
    pub(crate) fn publish(state: &dyn StateManager, definition: &egret_proto::api::Topology) {
        let t = egret_proto::defn::from_definition(definition).unwrap().topology;
        let mut plan = fixtures::physical_plan("wc");
        plan.topology = Some(definition.clone());
        plan.instances = t
            .tasks()
            .map(|(task, ci, index)| InstanceInfo {
                task_id: task.0 as i32,
                component: t.components()[ci].name.clone(),
                component_index: index as i32,
                stmgr_id: "stmgr-1".into(),
            })
            .collect();
        state.put_physical_plan("wc", &plan).unwrap();
    }

    /// The executor of container 1 reports an instance process per `(task, component, state)`.
    pub(crate) fn instances(state: &dyn StateManager, running: &[(u32, &str, &str)]) {
        let mut status = fixtures::container_status(1);
        for &(task, component, s) in running {
            status.processes.push(ProcessStatus {
                name: format!("instance-{task}-{component}"),
                container: 1,
                pid: 700 + task as i32,
                state: s.into(),
                log_file: format!("instance-{task}-{component}.log"),
                restarts: 0,
                started_ms: 1,
            });
        }
        state.put_container_status("wc", &status).unwrap();
    }

    /// The scaling view `egret explain` shows (the same as [`super::scaling`] reads).
    fn scaling(home: &TempHome) -> Value {
        let s = explain(&home.0, CLUSTER, "wc").unwrap()["scaling"].clone();
        assert_eq!(s, super::scaling(&*home.state(), "wc").unwrap());
        s
    }

    fn component<'a>(s: &'a Value, name: &str) -> &'a Value {
        s["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no component {name} in {s}"))
    }

    pub(crate) const OLD: &[(u32, &str, &str)] = &[
        (1, "count", "running"),
        (2, "count", "running"),
        (3, "sentence", "running"),
        (4, "split", "running"),
        (5, "split", "running"),
    ];

    #[test]
    fn running_instances_come_from_the_executors_reports() {
        let mut c = fixtures::container_status(1);
        for (name, state) in [
            ("instance-7-count", "running"),
            ("instance-8-split-words", "running"),
            ("instance-9-count", "restarting"),
            ("instance-x-count", "running"),
            ("instance-10", "running"),
            ("metricsmgr-1", "running"),
        ] {
            c.processes.push(ProcessStatus {
                name: name.into(),
                state: state.into(),
                ..Default::default()
            });
        }
        let running = running_instances(&[c]);
        assert_eq!(
            running.into_iter().collect::<Vec<_>>(),
            [
                (7, "count".to_string()),
                (8, "split-words".to_string()),
                (10, String::new())
            ]
        );
    }

    #[test]
    fn a_steady_topology_is_not_rescaling() {
        let home = TempHome::new("egret-tracker-steady");
        let state = home.state();
        let definition = store(&*state, &word_count(Config::new()));
        // Not published yet: starting, not rescaling, though no instance runs.
        let s = scaling(&home);
        assert_eq!(s["rescaling"], false, "{s}");
        assert_eq!(s["pending"], json!([1, 2, 3, 4, 5]));

        publish(&*state, &definition);
        instances(&*state, OLD);
        let s = scaling(&home);
        assert_eq!(s["rescaling"], false, "{s}");
        assert_eq!(s["waiting"], json!([]));
        assert_eq!((s["tasks"].as_u64(), s["tasks_running"].as_u64()), (Some(5), Some(5)));
        assert_eq!(s["checkpoint"], Value::Null, "not effectively-once");
        assert_eq!(
            *component(&s, "count"),
            json!({
                "name": "count", "parallelism": 2,
                "task_ids": [1, 2], "running": [1, 2], "pending": [], "leaving": []
            })
        );
        assert_eq!(component(&s, "split")["task_ids"], json!([4, 5]));

        // An instance that crashed and is being restarted is not a rescale (it is listed as pending all the same).
        let crashed: Vec<(u32, &str, &str)> = OLD
            .iter()
            .map(|&(t, c, st)| {
                if t == 2 {
                    (t, c, "restarting (signal: 9)")
                } else {
                    (t, c, st)
                }
            })
            .collect();
        instances(&*state, &crashed);
        let s = scaling(&home);
        assert_eq!(s["rescaling"], false, "{s}");
        assert_eq!(s["pending"], json!([2]));
    }

    #[test]
    fn a_rescale_shows_its_pending_and_leaving_tasks_until_done() {
        let home = TempHome::new("egret-tracker-rescale");
        let state = home.state();
        let old = word_count(Config::new());
        let old_definition = store(&*state, &old);
        publish(&*state, &old_definition);
        instances(&*state, OLD);

        // count 2→3 adds task 6, split 2→1 removes task 5. The tmanager stores the new definition and packing
        // plan; the physical plan still runs the old layout.
        let new = old.rescaled(&[("count".into(), 3), ("split".into(), 1)]).unwrap();
        let new_definition = store(&*state, &new);
        let s = scaling(&home);
        assert_eq!(s["rescaling"], true, "{s}");
        assert_eq!(
            s["waiting"][0], "the physical plan does not have the new task layout yet",
            "{s}"
        );
        assert_eq!(
            s["physical_plan_layout"][0],
            json!({"component": "count", "task_ids": [1, 2]})
        );

        // The new plan is pushed; task 6's instance is not running yet (one that is starting is not), task 5's
        // still is.
        publish(&*state, &new_definition);
        let mut mid = OLD.to_vec();
        mid.push((6, "count", "starting"));
        instances(&*state, &mid);
        let s = scaling(&home);
        assert_eq!(s["rescaling"], true, "{s}");
        assert_eq!(list(&*state).unwrap()[0]["rescaling"], true);
        assert_eq!(
            s["waiting"],
            json!([
                "no instance runs for task(s) [6] yet",
                "the instances of task(s) [5] still run"
            ])
        );
        assert_eq!((s["tasks"].as_u64(), s["tasks_running"].as_u64()), (Some(5), Some(4)));
        assert_eq!(
            *component(&s, "count"),
            json!({
                "name": "count", "parallelism": 3,
                "task_ids": [1, 2, 6], "running": [1, 2], "pending": [6], "leaving": []
            })
        );
        assert_eq!(
            *component(&s, "split"),
            json!({
                "name": "split", "parallelism": 1,
                "task_ids": [4], "running": [4], "pending": [], "leaving": [5]
            })
        );
        assert_eq!((s["pending"].clone(), s["leaving"].clone()), (json!([6]), json!([5])));

        // Done: every task of the new layout runs, and only those.
        instances(
            &*state,
            &[
                (1, "count", "running"),
                (2, "count", "running"),
                (3, "sentence", "running"),
                (4, "split", "running"),
                (6, "count", "running"),
            ],
        );
        let s = scaling(&home);
        assert_eq!(s["rescaling"], false, "{s}");
        assert_eq!(list(&*state).unwrap()[0]["rescaling"], false);
        assert_eq!(component(&s, "count")["running"], json!([1, 2, 6]));
        assert_eq!(component(&s, "split")["leaving"], json!([]));
        assert_eq!((s["tasks"].as_u64(), s["tasks_running"].as_u64()), (Some(5), Some(5)));
    }

    #[test]
    fn an_effectively_once_rescale_waits_for_a_checkpoint_under_the_new_layout() {
        let home = TempHome::new("egret-tracker-rescale-eo");
        let state = home.state();
        let old = word_count(Config::new().with(keys::RELIABILITY_MODE, "EFFECTIVELY_ONCE"));
        let new = old.rescaled(&[("count".into(), 3)]).unwrap();

        // Requested and held by the tmanager for its checkpoint: recorded with the checkpoints, not applied yet.
        let old_definition = store(&*state, &old);
        publish(&*state, &old_definition);
        instances(&*state, OLD);
        let held = StatefulCheckpoints {
            complete: vec![3],
            epoch: 1,
            pending_update: Some(egret_proto::egret::UpdateTopology {
                topology_id: old_definition.id.clone(),
                topology: Some(egret_proto::defn::to_definition(
                    &new,
                    &old_definition.id,
                    egret_proto::api::TopologyState::Running,
                )),
                packing_plan: None,
            }),
            ..Default::default()
        };
        state.put_stateful_checkpoints("wc", &held).unwrap();
        let s = scaling(&home);
        assert_eq!(s["rescaling"], true, "{s}");
        assert_eq!(s["requested"]["count"], 3, "{s}");
        assert_eq!(
            s["waiting"],
            json!(["the requested rescale waits for its checkpoint to complete"])
        );

        let new_definition = store(&*state, &new);
        publish(&*state, &new_definition);
        let mut all = OLD.to_vec();
        all.push((6, "count", "running"));
        instances(&*state, &all);
        let layout = |t: &Topology| -> Vec<ComponentTasks> {
            t.components()
                .iter()
                .zip(t.task_ids())
                .map(|(c, task_ids)| ComponentTasks {
                    component: c.name.clone(),
                    task_ids,
                })
                .collect()
        };
        // The rescale rolled back to checkpoint 4, taken under the old layout.
        let mut record = StatefulCheckpoints {
            complete: vec![3, 4],
            epoch: 2,
            layouts: vec![CheckpointLayout {
                checkpoint: 4,
                components: layout(&old),
            }],
            pending_update: None,
        };
        state.put_stateful_checkpoints("wc", &record).unwrap();
        let s = scaling(&home);
        assert_eq!(s["rescaling"], true, "{s}");
        assert_eq!(list(&*state).unwrap()[0]["rescaling"], true);
        assert_eq!(
            s["waiting"],
            json!(["no checkpoint has completed under the new layout yet"])
        );
        assert_eq!(s["checkpoint"]["newest_complete"], 4);
        assert_eq!(s["checkpoint"]["under_current_layout"], false);
        assert_eq!(
            s["checkpoint"]["layout"][0],
            json!({"component": "count", "task_ids": [1, 2]})
        );

        // Checkpoint 5 completes under the new layout: done.
        record.complete = vec![4, 5];
        record.layouts.push(CheckpointLayout {
            checkpoint: 5,
            components: layout(&new),
        });
        state.put_stateful_checkpoints("wc", &record).unwrap();
        let s = scaling(&home);
        assert_eq!(s["rescaling"], false, "{s}");
        assert_eq!(s["checkpoint"]["newest_complete"], 5);
        assert_eq!(s["checkpoint"]["under_current_layout"], true);
        assert_eq!(s["checkpoint"]["epoch"], 2);
    }
}
