//! `egret submit`: ask the topology binary for its definition, validate it, pack it, store it, upload the binary,
//! start one executor per container, and wait until the physical plan is published.
//!
//! A heronpy topology (a `.py` file, a `.pex` or a `.zip`) is described the way `heron submit` does it
//! (`HERON_OPTIONS`, the `.defn` heronpy writes), by `python -m egret_python.describe`; every component class is
//! then imported by `python -m egret_python.check`, so a topology that does not import is refused here with the
//! Python error. Its package (the file with the modules beside it, or the archive) is uploaded in place of a binary,
//! and the execution state names the interpreter that runs its instances (`python -m egret_python`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use egret_api::{CheckpointId, ConfigError, keys};
use egret_checkpoint::{CheckpointStore, LocalStore};
use egret_packing::Algorithm;
use egret_proto::api::TopologyState;
use egret_proto::defn;
use egret_proto::egret::{ExecutionState, StatefulCheckpoints};
use egret_proto::{Message, api};
use egret_scheduler::Scheduler;
use egret_scheduler::local::log_tail;
use egret_scheduler::package_dir;
use egret_statemgr::{StateError, StateManager};

use crate::commands::{check_cluster, cleanup, scheduler};

#[derive(Args)]
pub struct SubmitArgs {
    /// The cluster to run on: `local`, or one configured under $EGRET_HOME/conf/<cluster>/ (statemgr.yaml,
    /// scheduler.yaml, defaults.yaml).
    cluster: String,
    /// The topology binary (built with `egret::run`), or a heronpy topology: a `.py` file (uploaded with the
    /// modules and packages beside it), a `.pex` or a `.zip` (as `heron submit` takes them: `x.pex - [args]` runs
    /// its `__main__`, `x.pex module.TopologyClass` writes that class). Python is `python3`, or $EGRET_PYTHON.
    binary: PathBuf,
    /// Arguments for the topology binary (also given to every instance).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    topology_args: Vec<String>,
    /// Topology name (default: the name the binary gives it).
    #[arg(long)]
    name: Option<String>,
    /// Override a topology config value, e.g. `topology.stmgrs=2` (repeatable).
    #[arg(long = "config-property", value_name = "KEY=VALUE")]
    config_property: Vec<String>,
    /// Start with the spouts deactivated (as a topology whose config sets topology.initial.state=PAUSED).
    #[arg(long)]
    deploy_deactivated: bool,
    /// Validate and pack, print the plan and what the cluster's scheduler would start (on Kubernetes, the
    /// manifests); write and start nothing.
    #[arg(long)]
    dry_run: bool,
    /// Packing algorithm: round-robin (over `topology.stmgrs` containers) or first-fit-decreasing.
    #[arg(long, default_value = "round-robin")]
    packing: Algorithm,
    /// Seconds to wait for the topology to run.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Effectively-once: start from this checkpoint of an earlier run of the topology (kept after `egret kill`;
    /// `egret checkpoints` lists them) instead of from empty state.
    #[arg(long, value_name = "ID")]
    restore_checkpoint: Option<u64>,
}

/// `--restore-checkpoint ID`: what the tmanager must find in the state manager to start from that checkpoint, after
/// checking that the topology is effectively-once and that the checkpoint is in its store.
fn restore_checkpoint(
    home: &Path,
    a: &SubmitArgs,
    name: &str,
    config: &egret_api::Config,
) -> anyhow::Result<Option<StatefulCheckpoints>> {
    let Some(id) = a.restore_checkpoint else {
        return Ok(None);
    };
    if config.reliability_mode()? != egret_api::ReliabilityMode::EffectivelyOnce {
        bail!("--restore-checkpoint needs an EFFECTIVELY_ONCE topology; {name} is not one");
    }
    if config.stateful_start_clean()? {
        bail!("--restore-checkpoint and topology.stateful.start.clean=true contradict each other");
    }
    let state = egret_statemgr::open(home, &a.cluster)?;
    let store = LocalStore::new(state.checkpoints_dir(name)?);
    let kept = store.checkpoints()?;
    if !kept.contains(&CheckpointId(id)) {
        bail!(
            "checkpoint {id} is not in {} (kept: {}); `egret checkpoints {} {name}` lists them",
            store.describe(),
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
            },
            a.cluster
        );
    }
    Ok(Some(StatefulCheckpoints {
        complete: vec![id],
        epoch: 0,
        ..Default::default()
    }))
}

/// Runs the binary in describe mode and reads the definition it writes.
fn describe(binary: &Path, args: &[String]) -> anyhow::Result<api::Topology> {
    let out = std::env::temp_dir().join(format!("egret-defn-{}-{}", std::process::id(), now_ms()));
    let result = Command::new(binary)
        .args(args)
        .env("EGRET_DEFINITION_OUT", &out)
        .env_remove("EGRET_INSTANCE")
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !result.status.success() {
        let _ = std::fs::remove_file(&out);
        let stderr = String::from_utf8_lossy(&result.stderr);
        bail!(
            "{} could not describe its topology ({}):\n{}",
            binary.display(),
            result.status,
            stderr.trim_end()
        );
    }
    let bytes = std::fs::read(&out).with_context(|| {
        format!(
            "{} exited without writing a topology definition: does its main call egret::run?",
            binary.display()
        )
    })?;
    let _ = std::fs::remove_file(&out);
    api::Topology::decode(&bytes[..]).context("the topology definition does not decode")
}

/// A heronpy topology file: `.py`, `.pex` or `.zip`.
pub fn is_python(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("py" | "pex" | "zip"))
}

/// A described heronpy topology: the scratch directory `egret_python.describe` filled (removed on drop).
struct PythonTopology {
    work: PathBuf,
    /// The interpreter that described it (`sys.executable`), which runs its instances.
    python: String,
    /// The staged package: `work/package/<file name>` and whatever it needs beside it.
    package: PathBuf,
}

impl Drop for PythonTopology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The interpreter `egret submit` runs heronpy topologies with.
fn python_command() -> String {
    std::env::var("EGRET_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a heronpy topology as `heron submit` does and reads the definition heronpy writes.
fn describe_python(
    file: &Path,
    args: &[String],
    name: Option<&str>,
    paused: bool,
) -> anyhow::Result<(api::Topology, PythonTopology)> {
    let python = python_command();
    let work = std::env::temp_dir().join(format!("egret-python-{}-{}", std::process::id(), now_ms()));
    let defn_dir = work.join("defn");
    std::fs::create_dir_all(&defn_dir).with_context(|| format!("cannot create {}", defn_dir.display()))?;
    let mut described = PythonTopology {
        work,
        python: python.clone(),
        package: PathBuf::new(),
    };
    // heronpy reads its options from HERON_OPTIONS (`key=value,...`, spaces written as %%%%).
    let mut options = format!(
        "cmdline.topologydefn.tmpdirectory={},cmdline.topology.initial.state={}",
        defn_dir.display(),
        if paused { "PAUSED" } else { "RUNNING" }
    );
    if let Some(name) = name {
        options.push_str(&format!(",cmdline.topology.name={name}"));
    }
    let result = Command::new(&python)
        .args(["-m", "egret_python.describe"])
        .arg(&described.work)
        .arg(file)
        .args(args)
        .env("HERON_OPTIONS", options.replace(' ', "%%%%"))
        .env_remove("EGRET_INSTANCE")
        .output()
        .with_context(|| format!("cannot run {python} (set EGRET_PYTHON to the Python that has heronpy)"))?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        if stderr.contains("No module named egret_python") {
            bail!(
                "{python} has no egret_python package, which runs heronpy topologies: install it with \
                 scripts/install-python (or set EGRET_PYTHON to the Python that has it)"
            );
        }
        bail!(
            "{} did not run ({}):\n{}",
            file.display(),
            result.status,
            stderr.trim_end()
        );
    }
    let mut defns = Vec::new();
    for entry in std::fs::read_dir(&defn_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "defn") {
            defns.push(path);
        }
    }
    let defn = match defns.as_slice() {
        [one] => one,
        [] => bail!(
            "{} ran but wrote no topology definition: does it call build_and_submit() on a heronpy \
             TopologyBuilder, or define a heronpy Topology class?",
            file.display()
        ),
        _ => bail!(
            "{} wrote {} topology definitions; submit one at a time",
            file.display(),
            defns.len()
        ),
    };
    let bytes = std::fs::read(defn)?;
    let definition = api::Topology::decode(&bytes[..]).context("the .defn heronpy wrote does not decode")?;
    described.python = std::fs::read_to_string(described.work.join("python"))
        .map(|p| p.trim().to_string())
        .unwrap_or(python);
    let file_name = file.file_name().context("the topology file has no name")?;
    described.package = described.work.join("package").join(file_name);
    Ok((definition, described))
}

/// Imports every component class of the definition from the staged package, as an instance will; refuses the
/// topology with the Python errors when one does not load.
fn check_python_classes(described: &PythonTopology, definition: &api::Topology) -> anyhow::Result<()> {
    // A custom grouping written in Python is a pickled object only Python could call: Egret routes in Rust.
    for b in &definition.bolts {
        if let Some(i) = b.inputs.iter().find(|i| i.gtype == api::Grouping::Custom as i32) {
            bail!(
                "bolt {} groups {}/{} with a Python custom grouping, which Egret does not run (docs/python.md)",
                b.comp.name,
                i.stream.component_name,
                i.stream.id
            );
        }
    }
    let spouts = definition.spouts.iter().map(|s| ("spout", &s.comp));
    let bolts = definition.bolts.iter().map(|b| ("bolt", &b.comp));
    let mut specs = Vec::new();
    for (kind, comp) in spouts.chain(bolts) {
        let class = comp.class_name.as_deref().with_context(|| {
            format!(
                "{kind} {} names no Python class (is this a heronpy topology?)",
                comp.name
            )
        })?;
        specs.push(format!("{kind}:{}:{class}", comp.name));
    }
    let result = Command::new(&described.python)
        .args(["-m", "egret_python.check"])
        .arg(&described.package)
        .args(&specs)
        .env_remove("EGRET_INSTANCE")
        .output()
        .with_context(|| format!("cannot run {}", described.python))?;
    if !result.status.success() {
        bail!(
            "the topology's components do not load:\n{}",
            String::from_utf8_lossy(&result.stderr).trim_end()
        );
    }
    Ok(())
}

/// Copies the staged package (a file, or a directory's modules) into the topology's package directory.
fn upload_python(described: &PythonTopology, pkg_dir: &Path) -> anyhow::Result<PathBuf> {
    let staged = described.package.parent().context("no staged package")?;
    copy_tree(staged, pkg_dir)?;
    let file = described.package.file_name().context("no staged package file")?;
    Ok(pkg_dir.join(file))
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot upload {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn submit(home: &Path, a: SubmitArgs) -> anyhow::Result<()> {
    check_cluster(home, &a.cluster)?;
    let binary =
        std::fs::canonicalize(&a.binary).with_context(|| format!("no topology binary at {}", a.binary.display()))?;
    eprintln!("[1/5] asking {} for its topology", binary.display());
    let (mut definition, python) = if is_python(&binary) {
        let (definition, described) =
            describe_python(&binary, &a.topology_args, a.name.as_deref(), a.deploy_deactivated)?;
        eprintln!(
            "      heronpy topology; checking its component classes with {}",
            described.python
        );
        check_python_classes(&described, &definition)?;
        (definition, Some(described))
    } else {
        (describe(&binary, &a.topology_args)?, None)
    };
    if let Some(name) = &a.name {
        definition.name = name.clone();
    }
    let name = definition.name.clone();
    definition.id = format!("{name}-{:x}", now_ms());
    // Config overrides go into the stored definition, which every process reads.
    let mut overrides = Vec::new();
    for kv in &a.config_property {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--config-property {kv:?} is not KEY=VALUE"))?;
        overrides.push((k.trim().to_string(), v.trim().to_string()));
    }
    let cfg = definition.topology_config.get_or_insert_with(Default::default);
    for (k, v) in &overrides {
        cfg.kvs.retain(|kv| &kv.key != k);
        cfg.kvs.push(api::config::KeyValue {
            key: k.clone(),
            value: Some(v.clone()),
            serialized_value: None,
            r#type: Some(api::ConfigValueType::StringValue as i32),
        });
    }
    // The cluster's defaults, for what neither the topology nor --config-property sets.
    let defaults = egret_scheduler::config::cluster_defaults(home, &a.cluster)?;
    let mut defaulted = 0;
    for (k, v) in &defaults {
        if !cfg.kvs.iter().any(|kv| &kv.key == k) {
            cfg.kvs.push(api::config::KeyValue {
                key: k.clone(),
                value: Some(v.clone()),
                serialized_value: None,
                r#type: Some(api::ConfigValueType::StringValue as i32),
            });
            defaulted += 1;
        }
    }
    if defaulted > 0 {
        eprintln!("      {defaulted} value(s) from conf/{}/defaults.yaml", a.cluster);
    }
    eprintln!("[2/5] validating topology {name}");
    let parsed = defn::from_definition(&definition)?;
    for key in &parsed.skipped_config {
        if python.is_some() {
            eprintln!("      note: config {key} is a pickled Python object, which only the Python components read");
        } else {
            eprintln!("      note: config {key} is serialized by another language and ignored");
        }
    }
    let mut unknown = Vec::new();
    for key in overrides.iter().map(|(k, _)| k).chain(defaults.keys()) {
        match keys::status(key, keys::Scope::Topology) {
            keys::KeyStatus::Known => {}
            keys::KeyStatus::Refused(why) => bail!("Egret does not support {key} here: {why} (docs/config.md)"),
            keys::KeyStatus::Unknown if key.starts_with("topology.egret.") => {}
            keys::KeyStatus::Unknown => unknown.push(key.clone()),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "unknown config key(s) {}: check the spelling of the topology.* key",
            unknown.join(", ")
        );
    }
    let problems: Vec<ConfigError> = parsed.topology.config().check();
    if let Some(p) = problems.first() {
        bail!("{p}");
    }
    let topology = parsed.topology;
    // Deployed deactivated by the flag, or by the topology's own topology.initial.state=PAUSED.
    let paused = a.deploy_deactivated || topology.config().starts_paused()?;
    definition.state = if paused {
        TopologyState::Paused
    } else {
        TopologyState::Running
    } as i32;
    let restore = restore_checkpoint(home, &a, &name, topology.config())?;
    let plan = egret_packing::pack(&topology, a.packing)?;
    let tasks: usize = plan.containers.iter().map(|c| c.instances.len()).sum();
    eprintln!(
        "[3/5] packed {tasks} instances into {} container(s) with {} (plus container 0 for the tmanager)",
        plan.containers.len(),
        a.packing.as_str()
    );
    for c in &plan.containers {
        let list: Vec<String> = c
            .instances
            .iter()
            .map(|i| format!("{}#{}", i.component, i.task_id))
            .collect();
        eprintln!("      container {}: {}", c.id, list.join(", "));
    }
    if a.dry_run {
        let file = binary.file_name().and_then(|f| f.to_str()).unwrap_or("topology");
        print!("{}", scheduler(home, &a.cluster)?.dry_run(&name, &plan, file)?);
        println!("dry run: topology {name} is valid; nothing was started");
        return Ok(());
    }

    let state = egret_statemgr::open(home, &a.cluster)?;
    // Claim the name before anything else is written or started: of two submits of one name at once, exactly one
    // creates the definition; the other stops here having touched nothing.
    match state.create_topology(&name, &definition) {
        Ok(()) => {}
        Err(StateError::TopologyExists(_)) => bail!(
            "topology {name} already exists on cluster {} (or is being submitted right now): kill it first (egret kill {} {name})",
            a.cluster,
            a.cluster
        ),
        Err(e) => return Err(e.into()),
    }
    // From here on the name is ours: whatever fails, remove what was started and written, which frees the name.
    if let Some(record) = &restore
        && let Err(e) = state.put_stateful_checkpoints(&name, record)
    {
        let _ = cleanup(home, &a.cluster, &name);
        return Err(e.into());
    }
    match start(home, &a, &*state, &binary, python.as_ref(), &name, &definition, &plan) {
        Ok(()) => Ok(()),
        Err(e) => {
            let logs = egret_scheduler::log_dir(home, &a.cluster, &name);
            if let Err(cleanup_error) = cleanup(home, &a.cluster, &name) {
                eprintln!("egret: could not clean up topology {name}: {cleanup_error:#}");
            }
            Err(e.context(format!(
                "topology {name} did not start; it was killed (logs are in {})",
                logs.display()
            )))
        }
    }
}

/// Uploads the binary (or a heronpy topology's package), writes the rest of the state, starts the supervisor (which
/// starts the executors) and waits until the topology runs. The definition is already stored.
#[allow(clippy::too_many_arguments)]
fn start(
    home: &Path,
    a: &SubmitArgs,
    state: &dyn StateManager,
    binary: &Path,
    python: Option<&PythonTopology>,
    name: &str,
    definition: &api::Topology,
    plan: &egret_proto::egret::PackingPlan,
) -> anyhow::Result<()> {
    let paused = definition.state == TopologyState::Paused as i32;
    let pkg_dir = package_dir(home, &a.cluster, name);
    std::fs::create_dir_all(&pkg_dir).with_context(|| format!("cannot create {}", pkg_dir.display()))?;
    let file_name = binary
        .file_name()
        .map(|f| f.to_os_string())
        .unwrap_or_else(|| "topology".into());
    let package = match python {
        Some(described) => {
            let package = upload_python(described, &pkg_dir)?;
            eprintln!("[4/5] uploaded the Python package to {}", pkg_dir.display());
            package
        }
        None => {
            let package = pkg_dir.join(file_name);
            std::fs::copy(binary, &package)
                .with_context(|| format!("cannot upload the binary to {}", package.display()))?;
            eprintln!("[4/5] uploaded the binary to {}", package.display());
            package
        }
    };
    // The topology's secret: every connection between its processes proves it (egret_transport::auth).
    egret_transport::auth::TopologySecret::generate()
        .and_then(|secret| secret.store(home, &a.cluster, name))
        .context("cannot make the topology's secret")?;
    let user = std::env::var("USER").unwrap_or_default();
    state.put_packing_plan(name, plan)?;
    state.put_execution_state(
        name,
        &ExecutionState {
            topology_name: name.to_string(),
            topology_id: definition.id.clone(),
            cluster: a.cluster.clone(),
            submission_time_ms: now_ms(),
            submission_user: user,
            egret_version: env!("CARGO_PKG_VERSION").into(),
            containers: plan.containers.len() as i32 + 1,
            package: package.display().to_string(),
            topology_args: a.topology_args.clone(),
            python: python.map(|p| p.python.clone()).unwrap_or_default(),
        },
    )?;

    let scheduler = scheduler(home, &a.cluster)?;
    let launched = scheduler.launch(name).context("starting the containers")?;
    eprintln!("[5/5] {launched}; waiting for the physical plan");
    let tasks: usize = plan.containers.iter().map(|c| c.instances.len()).sum();
    wait_running(state, name, tasks, &*scheduler, Duration::from_secs(a.timeout))?;
    let how = if paused { "deployed deactivated" } else { "running" };
    println!(
        "topology {name} is {how} on cluster {}: {tasks} instances in {} containers",
        a.cluster,
        plan.containers.len()
    );
    println!("see it with: egret explain {} {name}", a.cluster);
    Ok(())
}

/// Waits until the tmanager has published a physical plan with every instance, showing progress; fails early when
/// a process keeps crashing.
fn wait_running(
    state: &dyn StateManager,
    name: &str,
    tasks: usize,
    scheduler: &dyn Scheduler,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(failure) = scheduler.failure(name) {
            bail!("{failure}");
        }
        if let Some(p) = state.get_physical_plan(name)?
            && p.instances.len() >= tasks
        {
            return Ok(());
        }
        let statuses = state.container_statuses(name)?;
        let procs: Vec<_> = statuses.iter().flat_map(|c| c.processes.iter()).collect();
        let running = procs.iter().filter(|p| p.state == "running").count();
        let stmgrs = state
            .locations(name)?
            .iter()
            .filter(|l| l.process.starts_with("stmgr-"))
            .count();
        let line = format!(
            "      {running}/{} processes running, {stmgrs} stmgr(s) listening",
            procs.len()
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if let Some(bad) = procs.iter().find(|p| p.restarts >= 3) {
            let tail = log_tail(Path::new(&bad.log_file), 10);
            bail!(
                "{} keeps exiting ({}); its log ends with:\n{}",
                bad.name,
                bad.state,
                tail
            );
        }
        if Instant::now() > deadline {
            bail!("no physical plan after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
