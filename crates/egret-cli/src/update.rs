//! `egret update <cluster> <topology> --component-parallelism NAME:N ...`: rescale a running topology. The rescale is
//! planned from the stored definition and packing plan (`egret_packing::update`: stable task ids, only the instances
//! that change move), sent to the tmanager as an `UpdateTopology` (as `activate` sends `SetActive`), and followed in
//! the stored physical plan until it runs the new tasks under the new layout. `--dry-run` prints the new packing plan
//! and contacts nothing.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use egret_packing::update::{Update, parse_change, plan_update};
use egret_proto::api::TopologyState;
use egret_proto::egret::{PackingPlan, control};
use egret_transport::auth::TopologySecret;

use crate::commands::{ask_tmanager, existing};

#[derive(Args)]
pub struct UpdateArgs {
    /// The cluster: `local`, or one configured under $EGRET_HOME/conf/<cluster>/.
    cluster: String,
    /// The running topology's name.
    topology: String,
    /// A component and its new parallelism, NAME:N (e.g. count:5); repeat the flag for several components.
    #[arg(long = "component-parallelism", value_name = "NAME:N", required = true, value_parser = parse_change)]
    component_parallelism: Vec<(String, u32)>,
    /// Print the new packing plan (+ added, - removed) and exit without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for the topology to run at the new parallelism before giving up (with a non-zero exit).
    #[arg(long, default_value_t = 120, value_name = "S")]
    wait_secs: u64,
}

pub fn update(home: &Path, a: UpdateArgs) -> anyhow::Result<()> {
    let name = &a.topology;
    let state = existing(home, &a.cluster, name)?;
    let definition = state
        .get_topology(name)?
        .with_context(|| format!("topology {name} has no stored definition (is it still being submitted?)"))?;
    let current = state
        .get_packing_plan(name)?
        .with_context(|| format!("topology {name} has no stored packing plan (is it still being submitted?)"))?;
    let update = plan_update(&definition, &current, &a.component_parallelism)
        .with_context(|| format!("cannot rescale topology {name}"))?;
    if a.dry_run {
        print!("{}", render(name, &update));
        return Ok(());
    }

    let physical = state
        .get_physical_plan(name)?
        .with_context(|| format!("topology {name} is not running yet (no physical plan): try again once it runs"))?;
    // The rescale keeps the topology's activation as the tmanager has it now, which the stored definition does not
    // follow (activate/deactivate change only the physical plan).
    let activation = physical
        .topology
        .as_ref()
        .and_then(|t| TopologyState::try_from(t.state).ok())
        .unwrap_or(TopologyState::Running);
    let secret = TopologySecret::load(home, &a.cluster, name)?;
    let started = Instant::now();
    let (ok, message) = ask_tmanager(
        &*state,
        &secret,
        name,
        control::Msg::UpdateTopology(Box::new(update.message(activation))),
    )?;
    if !ok {
        bail!("the tmanager refused to rescale topology {name}: {message}");
    }
    println!("topology {name}: {message}");
    // Containers added or removed: the cluster's scheduler makes them run or stop (the local supervisor follows the
    // packing plan by itself; Kubernetes scales the StatefulSet).
    let containers = |p: &PackingPlan| p.containers.iter().map(|c| c.id).collect::<BTreeSet<i32>>();
    if containers(&update.current) != containers(&update.plan) {
        let did = crate::commands::scheduler(home, &a.cluster)?.update(name, &update.plan)?;
        println!("topology {name}: {did}");
    }

    let wait = Duration::from_secs(a.wait_secs);
    let effectively_once = update.new.config().reliability_mode()? == egret_api::ReliabilityMode::EffectivelyOnce;
    let wanted: BTreeSet<u32> = update.new.tasks().map(|(t, _, _)| t.0).collect();
    // Effectively-once: the newest complete checkpoint when the plan first shows the new layout (the one the
    // rescale rolled back to); the rescale is done once a newer one completes, saved by every task of the new layout.
    let mut baseline: Option<u64> = None;
    let mut last = String::new();
    loop {
        let progress = update.progress(state.get_physical_plan(name)?.as_ref());
        let waiting = if !progress.done() {
            progress.to_string()
        } else {
            let running = running_instances(&*state, name)?;
            let not_yet: Vec<u32> = wanted.difference(&running).copied().collect();
            let leaving: Vec<u32> = running.difference(&wanted).copied().collect();
            let newest = || -> anyhow::Result<u64> {
                Ok(state
                    .get_stateful_checkpoints(name)?
                    .and_then(|r| r.complete.iter().max().copied())
                    .unwrap_or(0))
            };
            if !not_yet.is_empty() {
                format!("the instances of task(s) {not_yet:?} are not running yet")
            } else if !leaving.is_empty() {
                format!("the instances of task(s) {leaving:?} are still running")
            } else if effectively_once && newest()? <= *baseline.get_or_insert(newest()?) {
                "every instance runs; waiting for the first checkpoint under the new layout".to_string()
            } else {
                println!(
                    "rescaled {name}: {} in {:.1} s",
                    update.summary(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        };
        let line = format!("      waiting: {waiting}");
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if started.elapsed() > wait {
            bail!(
                "topology {name} is not running at the new parallelism ({}) after {} s: {waiting}",
                update.summary(),
                a.wait_secs
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tasks whose instance process the executors report running (`instance-<task>-<component>`), as the tracker
/// and `egret explain` count them.
fn running_instances(state: &dyn egret_statemgr::StateManager, name: &str) -> anyhow::Result<BTreeSet<u32>> {
    let statuses = state.container_statuses(name)?;
    Ok(egret_tracker::explain::running_instances(&statuses)
        .into_keys()
        .collect())
}

/// The dry run's report: the changes, then every container of the current and the new packing plan with its
/// instances (`task component`), those the rescale adds marked `+`, those it removes `-`.
fn render(name: &str, u: &Update) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rescale of {name}: {} (dry run: nothing is changed)", u.summary());
    let _ = writeln!(out, "new packing plan ({}):", u.plan.algorithm);
    let ids = |p: &PackingPlan| p.containers.iter().map(|c| c.id).collect::<BTreeSet<i32>>();
    let (before, after) = (ids(&u.current), ids(&u.plan));
    for id in before.union(&after) {
        let mark = |old: bool, new: bool| match (old, new) {
            (false, true) => "+ ",
            (true, false) => "- ",
            _ => "  ",
        };
        let _ = writeln!(out, "{}container {id}", mark(before.contains(id), after.contains(id)));
        let tasks = |p: &PackingPlan| {
            p.containers
                .iter()
                .filter(|c| c.id == *id)
                .flat_map(|c| c.instances.iter().map(|i| (i.task_id, i.component.clone())))
                .collect::<BTreeSet<_>>()
        };
        let (old, new) = (tasks(&u.current), tasks(&u.plan));
        for (task, component) in old.union(&new) {
            let key = (*task, component.clone());
            let _ = writeln!(
                out,
                "  {}{task:>5} {component}",
                mark(old.contains(&key), new.contains(&key))
            );
        }
    }
    let containers = |set: &BTreeSet<i32>, other: &BTreeSet<i32>| set.difference(other).count();
    let _ = writeln!(
        out,
        "{} instance(s) added, {} removed; {} container(s) added, {} removed",
        u.added_tasks().len(),
        u.removed_tasks().len(),
        containers(&after, &before),
        containers(&before, &after)
    );
    out
}
