//! The executor of one container: starts its processes, restarts any that exits (at once, then a back-off of 0.5 s
//! doubling to 30 s while it keeps exiting, reset after 10 s of good health), and records what runs in the state
//! manager for `egret explain`.
//!
//! It follows the stored packing plan while the topology runs (`egret update` stores a new one): on a watch of the
//! packing plan, and every 5 s all the same, the executor of container k compares the instances it runs with those
//! the plan puts in container k ([`reconcile`]), starts the new ones, and kills for good those that left; every
//! other process (the stmgr, the metricsmgr, an instance that stays) is left alone, since an instance that stays
//! keeps its task id. When container k leaves the plan, the executor stops every process and exits 0. Container 0
//! (tmanager and metricsmgr) does not depend on the plan. The executor never decides a plan itself.
//!
//! It is started as the leader of its own process group, so the scheduler stops the container by signalling the
//! group: the executor and every child go together.
//!
//! Its children also die when the executor dies alone (`kill -9` of the executor): each is started with
//! `PR_SET_PDEATHSIG = SIGKILL`, so no process of a dead executor keeps running unsupervised beside the processes
//! of the executor the supervisor starts in its place. The kernel sends that signal when the *thread* that forked
//! the child exits, so every child is started from the executor's main thread (the one loop in [`run`]).

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egret_proto::egret::{ContainerPlan, ContainerStatus, InstancePlan, ProcessStatus};
use egret_statemgr::{Node, StateManager};
use tokio::sync::watch::Receiver;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::{PLAN_RECHECK, SchedulerError, log_dir, watch_changed};

#[derive(Debug, Clone)]
pub struct Opts {
    pub egret_home: PathBuf,
    pub cluster: String,
    pub topology: String,
    pub container: i32,
    /// The address this container's daemons listen on and advertise (its host's, or its pod's).
    pub host: String,
    /// The `egret` binary, to start the daemons.
    pub egret_bin: PathBuf,
}

/// The Python module an instance of a heronpy topology runs (`python -m egret_python`, from the wheel built from
/// `crates/egret-python`).
pub const PYTHON_INSTANCE_MODULE: &str = "egret_python";

/// What the executor starts for one process: the same at every (re)start.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// One process the executor keeps running.
struct Supervised {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// The instance this process runs; `None` for a daemon (tmanager, stmgr, metricsmgr).
    instance: Option<InstancePlan>,
    child: Option<Child>,
    started: Instant,
    started_ms: i64,
    restarts: i32,
    backoff: Backoff,
    restart_at: Option<Instant>,
    last_exit: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Supervised {
    /// A process not started yet, logging to `<logs>/<name>.log`.
    fn new(spec: Spec, logs: &Path, instance: Option<InstancePlan>) -> Self {
        Supervised {
            log: logs.join(format!("{}.log", spec.name)),
            name: spec.name,
            program: spec.program,
            args: spec.args,
            env: spec.env,
            instance,
            child: None,
            started: Instant::now(),
            started_ms: 0,
            restarts: 0,
            backoff: Backoff::default(),
            restart_at: None,
            last_exit: String::new(),
        }
    }

    /// Kills the process (SIGKILL) and waits for it; it is not started again.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.restart_at = None;
    }

    fn start(&mut self) {
        let out = File::options().create(true).append(true).open(&self.log);
        let spawned = out.and_then(|out| {
            let err = out.try_clone()?;
            let mut command = Command::new(&self.program);
            command
                .args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            die_with_this_process(&mut command);
            command.spawn()
        });
        self.started = Instant::now();
        self.started_ms = now_ms();
        match spawned {
            Ok(child) => {
                info!(child = %self.name, pid = child.id(), "started");
                self.child = Some(child);
            }
            Err(e) => {
                error!(child = %self.name, error = %e, "cannot start");
                self.last_exit = format!("could not start: {e}");
                self.schedule_restart();
            }
        }
    }

    fn schedule_restart(&mut self) {
        self.restart_at = Some(Instant::now() + self.backoff.after_exit(self.started.elapsed()));
    }

    fn status(&self, container: i32) -> ProcessStatus {
        let (pid, state) = match (&self.child, self.restart_at) {
            (Some(c), _) => (c.id() as i32, "running".to_string()),
            (None, Some(_)) => (0, format!("restarting ({})", self.last_exit)),
            (None, None) => (0, "stopped".to_string()),
        };
        ProcessStatus {
            name: self.name.clone(),
            container,
            pid,
            state,
            log_file: self.log.display().to_string(),
            restarts: self.restarts,
            started_ms: self.started_ms,
        }
    }
}

/// Makes the child that `command` starts receive SIGKILL when this process's calling thread exits, however it
/// exits (see the module doc for why that thread is the main one).
fn die_with_this_process(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec and calls only async-signal-safe functions (prctl,
    // getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The executor may have died between the fork and the prctl, before the signal was armed: then the
            // child has been reparented already and must not start at all (ESRCH: its parent is gone).
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Runs the executor until it is killed, its topology is deleted, or its container leaves the packing plan.
pub fn run(opts: Opts) -> Result<(), SchedulerError> {
    let state = egret_statemgr::open(&opts.egret_home, &opts.cluster)?;
    let name = &opts.topology;
    let exec = state
        .get_execution_state(name)?
        .ok_or_else(|| SchedulerError::Missing(name.clone(), "execution state"))?;
    let logs = log_dir(&opts.egret_home, &opts.cluster, name);
    fs::create_dir_all(&logs).map_err(SchedulerError::io(format!("creating {}", logs.display())))?;

    let home = opts.egret_home.display().to_string();
    let daemon = |role: &str, process: String| Spec {
        name: process,
        program: opts.egret_bin.clone(),
        args: vec![
            role.to_string(),
            "--home".into(),
            home.clone(),
            "--cluster".into(),
            opts.cluster.clone(),
            "--topology".into(),
            name.clone(),
            "--container".into(),
            opts.container.to_string(),
            "--host".into(),
            opts.host.clone(),
        ],
        env: Vec::new(),
    };
    // The binary is in this executor's own package directory (another host or a pod has another egret home than
    // the submitter's): the execution state names its file.
    let package = crate::package_dir(&opts.egret_home, &opts.cluster, name).join(
        std::path::Path::new(&exec.package)
            .file_name()
            .ok_or_else(|| SchedulerError::Missing(name.clone(), "package file name"))?,
    );
    let (daemons, instances) = if opts.container == 0 {
        let daemons = vec![
            daemon("tmanager", "tmanager".into()),
            daemon("metricsmgr", "metricsmgr-0".into()),
        ];
        (daemons, None)
    } else {
        let daemons = vec![
            daemon("stmgr", format!("stmgr-{}", opts.container)),
            daemon("metricsmgr", format!("metricsmgr-{}", opts.container)),
        ];
        let instances = InstanceLauncher {
            home: home.clone(),
            cluster: opts.cluster.clone(),
            topology: name.clone(),
            container: opts.container,
            package,
            topology_args: exec.topology_args.clone(),
            python: exec.python.clone(),
        };
        (daemons, Some(instances))
    };
    // The watches come before the first read of the packing plan, so that a plan stored in between is not missed.
    let mut container = Container::new(state.clone(), name, opts.container, logs, instances);
    let packing = state
        .get_packing_plan(name)?
        .ok_or_else(|| SchedulerError::Missing(name.clone(), "packing plan"))?;
    let plan = if opts.container == 0 {
        None
    } else {
        let plan = packing
            .containers
            .iter()
            .find(|c| c.id == opts.container)
            .ok_or(SchedulerError::UnknownContainer(opts.container))?;
        Some(plan)
    };
    info!(
        cluster = %opts.cluster,
        egret_home = %opts.egret_home.display(),
        egret_bin = %opts.egret_bin.display(),
        pid = std::process::id(),
        daemons = daemons.len(),
        instances = plan.map_or(0, |p| p.instances.len()),
        "executor started"
    );
    container.start(daemons, plan);
    loop {
        if let Step::Exit = container.step() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// How often the executor looks at its processes and its watches.
const POLL: Duration = Duration::from_millis(100);

/// How often the executor checks that its topology still exists, watch or not.
const DEFINITION_RECHECK: Duration = Duration::from_secs(10);

/// What an instance process runs: everything but its task comes from the execution state, read once at start.
#[derive(Debug, Clone)]
struct InstanceLauncher {
    home: String,
    cluster: String,
    topology: String,
    container: i32,
    /// The topology binary (in this executor's package directory).
    package: PathBuf,
    /// The arguments the topology was submitted with; a topology binary's instances get the same ones.
    topology_args: Vec<String>,
    /// A heronpy topology's interpreter; empty for a topology binary.
    python: String,
}

impl InstanceLauncher {
    /// The process of `instance`: the same whether the instance was in the first packing plan the executor read or
    /// came with a later one.
    fn spec(&self, instance: &InstancePlan) -> Spec {
        let env = vec![
            ("EGRET_INSTANCE".to_string(), "1".to_string()),
            ("EGRET_HOME".into(), self.home.clone()),
            ("EGRET_CLUSTER".into(), self.cluster.clone()),
            ("EGRET_TOPOLOGY".into(), self.topology.clone()),
            ("EGRET_TASK".into(), instance.task_id.to_string()),
            ("EGRET_CONTAINER".into(), self.container.to_string()),
        ];
        let name = format!("instance-{}-{}", instance.task_id, instance.component);
        if self.python.is_empty() {
            Spec {
                name,
                program: self.package.clone(),
                args: self.topology_args.clone(),
                env,
            }
        } else {
            // A heronpy topology: the interpreter that described it at submit runs Egret's Python instance (the
            // `egret_python` package), which finds the topology's modules in the package directory.
            Spec {
                name,
                program: PathBuf::from(&self.python),
                args: vec!["-m".to_string(), PYTHON_INSTANCE_MODULE.to_string()],
                env,
            }
        }
    }
}

/// The instances to start and the tasks to stop so that an executor whose instance processes run the tasks
/// `running` runs exactly those that `plan` puts in its container. Instances are started in plan order (a task
/// listed twice once); tasks are stopped in `running` order.
pub fn reconcile<'p>(running: &[i32], plan: &'p ContainerPlan) -> (Vec<&'p InstancePlan>, Vec<i32>) {
    let mut start: Vec<&InstancePlan> = Vec::new();
    for i in &plan.instances {
        if !running.contains(&i.task_id) && !start.iter().any(|s| s.task_id == i.task_id) {
            start.push(i);
        }
    }
    let stop = running
        .iter()
        .copied()
        .filter(|t| !plan.instances.iter().any(|i| i.task_id == *t))
        .collect();
    (start, stop)
}

/// What [`Container::step`] asks of the loop that drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    /// Every process has been stopped: the executor exits.
    Exit,
}

/// The processes of one container, kept running and matched to the stored packing plan.
struct Container {
    state: Arc<dyn StateManager>,
    topology: String,
    container: i32,
    logs: PathBuf,
    /// How to start an instance; `None` for container 0, which runs none and does not follow the packing plan.
    instances: Option<InstanceLauncher>,
    procs: Vec<Supervised>,
    definition: Option<Receiver<u64>>,
    definition_checked: Instant,
    packing: Option<Receiver<u64>>,
    packing_checked: Instant,
    /// Whether the status recorded in the state manager is behind `procs`.
    dirty: bool,
}

impl Container {
    /// Sets up the watches (before the caller's first read of the packing plan, so that no change is missed);
    /// starts nothing.
    fn new(
        state: Arc<dyn StateManager>,
        topology: &str,
        container: i32,
        logs: PathBuf,
        instances: Option<InstanceLauncher>,
    ) -> Self {
        // `egret kill` removes the topology's state. An executor the local scheduler started is stopped before that;
        // one that another host, a pod or a service manager runs learns it here (on a watch of the definition, and
        // every 10 s all the same), and stops its processes.
        let definition = state.watch(topology, Node::Topology).ok();
        let packing = match instances {
            Some(_) => state.watch(topology, Node::PackingPlan).ok(),
            None => None,
        };
        Container {
            state,
            topology: topology.to_string(),
            container,
            logs,
            instances,
            procs: Vec::new(),
            definition,
            definition_checked: Instant::now(),
            packing,
            packing_checked: Instant::now(),
            dirty: true,
        }
    }

    /// Starts the daemons, then the instances of `plan` (the container's part of the packing plan read at start).
    fn start(&mut self, daemons: Vec<Spec>, plan: Option<&ContainerPlan>) {
        for spec in daemons {
            let mut p = Supervised::new(spec, &self.logs, None);
            p.start();
            self.procs.push(p);
        }
        if let Some(plan) = plan {
            self.apply(plan);
        }
        self.dirty = true;
    }

    /// The tasks whose instance processes this executor keeps.
    fn running_tasks(&self) -> Vec<i32> {
        self.procs
            .iter()
            .filter_map(|p| p.instance.as_ref())
            .map(|i| i.task_id)
            .collect()
    }

    /// Starts the instances newly in the container's plan and stops (for good) those that left it; leaves every
    /// other process alone.
    fn apply(&mut self, plan: &ContainerPlan) {
        let Some(launcher) = self.instances.as_ref() else {
            return;
        };
        let running = self.running_tasks();
        let (start, stop) = reconcile(&running, plan);
        for task in stop {
            if let Some(at) = self
                .procs
                .iter()
                .position(|p| p.instance.as_ref().is_some_and(|i| i.task_id == task))
            {
                let mut p = self.procs.remove(at);
                let component = p.instance.as_ref().map(|i| i.component.clone()).unwrap_or_default();
                info!(task, %component, "the instance left this container in the packing plan; stopping it");
                p.stop();
                self.dirty = true;
            }
        }
        for instance in start {
            info!(
                task = instance.task_id,
                component = %instance.component,
                "the instance is in this container in the packing plan; starting it"
            );
            let mut p = Supervised::new(launcher.spec(instance), &self.logs, Some(instance.clone()));
            p.start();
            self.procs.push(p);
            self.dirty = true;
        }
    }

    /// Stops every process (SIGKILL, then waits for it).
    fn stop_all(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
    }

    /// Reads the packing plan and follows it; [`Step::Exit`] once the container has left it (its processes
    /// stopped).
    fn follow_plan(&mut self) -> Step {
        let packing = match self.state.get_packing_plan(&self.topology) {
            Ok(Some(p)) => p,
            // No plan: the topology is being deleted, which the definition check handles.
            Ok(None) => return Step::Continue,
            Err(e) => {
                warn!(error = %e, "cannot read the packing plan; keeping the processes as they are");
                return Step::Continue;
            }
        };
        match packing.containers.iter().find(|c| c.id == self.container) {
            Some(plan) => {
                self.apply(plan);
                Step::Continue
            }
            None => {
                info!("the container left the packing plan; stopping its processes and exiting");
                self.stop_all();
                self.procs.clear();
                // What `stop` and `kill` signal is the recorded executor pid: none is left to signal.
                self.record_status(0);
                Step::Exit
            }
        }
    }

    /// One look at the watches and the processes: follows the packing plan, restarts what exited (when its back-off
    /// has passed) and records the container's status if it changed.
    fn step(&mut self) -> Step {
        if watch_changed(&mut self.definition) || self.definition_checked.elapsed() >= DEFINITION_RECHECK {
            self.definition_checked = Instant::now();
            if let Ok(false) = self.state.exists(&self.topology) {
                info!("the topology is gone; stopping its processes and exiting");
                self.stop_all();
                return Step::Exit;
            }
        }
        if self.instances.is_some()
            && (watch_changed(&mut self.packing) || self.packing_checked.elapsed() >= PLAN_RECHECK)
        {
            self.packing_checked = Instant::now();
            if let Step::Exit = self.follow_plan() {
                return Step::Exit;
            }
        }
        for p in &mut self.procs {
            if let Some(child) = p.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                p.child = None;
                p.last_exit = exit.to_string();
                p.schedule_restart();
                warn!(
                    child = %p.name,
                    %exit,
                    restart_in = ?p.restart_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now())),
                    "exited; restarting"
                );
                self.dirty = true;
            }
            if p.child.is_none() && p.restart_at.is_some_and(|t| Instant::now() >= t) {
                p.restart_at = None;
                p.restarts += 1;
                p.start();
                self.dirty = true;
            }
        }
        if self.dirty {
            self.record_status(std::process::id() as i32);
            self.dirty = false;
        }
        Step::Continue
    }

    fn record_status(&self, executor_pid: i32) {
        let status = ContainerStatus {
            container: self.container,
            executor_pid,
            processes: self.procs.iter().map(|p| p.status(self.container)).collect(),
        };
        if let Err(e) = self.state.put_container_status(&self.topology, &status) {
            error!(error = %e, "cannot record the container's status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_proto::api::Topology;
    use egret_proto::egret::PackingPlan;
    use egret_statemgr::LocalStateManager;

    const TOPOLOGY: &str = "wc";

    fn container(id: i32, tasks: &[(i32, &str)]) -> ContainerPlan {
        ContainerPlan {
            id,
            instances: tasks
                .iter()
                .map(|&(task_id, component)| InstancePlan {
                    component: component.to_string(),
                    task_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn packing(containers: Vec<ContainerPlan>) -> PackingPlan {
        PackingPlan {
            id: TOPOLOGY.into(),
            algorithm: "test".into(),
            containers,
        }
    }

    #[test]
    fn reconcile_starts_the_new_instances_and_stops_those_that_left() {
        fn check(running: &[i32], plan: &[i32], expect_start: &[i32], expect_stop: &[i32]) {
            let tasks: Vec<(i32, &str)> = plan.iter().map(|&t| (t, "word")).collect();
            let plan = container(1, &tasks);
            let (start, stop) = reconcile(running, &plan);
            let start: Vec<i32> = start.iter().map(|i| i.task_id).collect();
            assert_eq!(
                (start.as_slice(), stop.as_slice()),
                (expect_start, expect_stop),
                "running {running:?}"
            );
        }
        // Nothing runs yet (the executor's start): every instance of the plan.
        check(&[], &[3, 1, 2], &[3, 1, 2], &[]);
        // The same plan again: nothing to do.
        check(&[1, 2, 3], &[3, 1, 2], &[], &[]);
        // Scale up and down in one plan; task 2 stays.
        check(&[1, 2], &[2, 4, 5], &[4, 5], &[1]);
        // Every instance leaves the container (it stays, with its stmgr and metricsmgr).
        check(&[1, 2], &[], &[], &[1, 2]);
        // A task listed twice is started once.
        check(&[], &[7, 7], &[7], &[]);
    }

    /// The environment a running process was started with (Linux's `/proc/<pid>/environ`).
    fn environ(pid: i32) -> Vec<String> {
        let bytes = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        bytes
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    fn alive(pid: i32) -> bool {
        crate::local::alive(pid)
    }

    /// Steps `c` until the status it records for container 1 satisfies `done`, or fails after 5 s.
    fn step_until(c: &mut Container, what: &str, done: impl Fn(&ContainerStatus) -> bool) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert_eq!(c.step(), Step::Continue, "the executor exited while waiting for {what}");
            let status = c.state.container_statuses(TOPOLOGY).expect("statuses");
            if let Some(s) = status.into_iter().find(|s| s.container == 1)
                && done(&s)
            {
                return s;
            }
            assert!(Instant::now() < deadline, "no {what} within 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn names(s: &ContainerStatus) -> Vec<&str> {
        s.processes.iter().map(|p| p.name.as_str()).collect()
    }

    fn pid_of(s: &ContainerStatus, name: &str) -> i32 {
        s.processes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", names(s)))
            .pid
    }

    /// The executor's own loop, with `sleep` as the stmgr and as the topology binary (so every instance is a
    /// `sleep 1000` with the instance's environment), against a local state manager: a new packing plan starts
    /// the instance that joined container 1, kills the one that left, leaves the rest running, and a plan without
    /// container 1 stops everything and ends the executor. The children die with the test's thread if it fails.
    #[test]
    fn an_executor_follows_the_packing_plan_and_exits_when_its_container_leaves() {
        let home = tempfile::tempdir().expect("a temporary home");
        let state = Arc::new(LocalStateManager::new(home.path(), "local").expect("a state manager"));
        state.put_topology(TOPOLOGY, &Topology::default()).expect("definition");
        let first = packing(vec![
            container(1, &[(1, "word"), (2, "word")]),
            container(2, &[(3, "count")]),
        ]);
        state.put_packing_plan(TOPOLOGY, &first).expect("packing plan");
        let logs = home.path().join("logs");
        fs::create_dir_all(&logs).expect("log dir");
        let launcher = InstanceLauncher {
            home: home.path().display().to_string(),
            cluster: "local".into(),
            topology: TOPOLOGY.into(),
            container: 1,
            package: PathBuf::from("sleep"),
            topology_args: vec!["1000".into()],
            python: String::new(),
        };
        let stmgr = Spec {
            name: "stmgr-1".into(),
            program: PathBuf::from("sleep"),
            args: vec!["1000".into()],
            env: Vec::new(),
        };
        let mut c = Container::new(state.clone(), TOPOLOGY, 1, logs, Some(launcher));
        c.start(vec![stmgr], Some(&first.containers[0]));
        let before = step_until(&mut c, "the first plan's processes", |s| {
            s.processes.len() == 3 && s.processes.iter().all(|p| p.state == "running")
        });
        assert_eq!(names(&before), ["stmgr-1", "instance-1-word", "instance-2-word"]);
        assert_eq!(before.executor_pid, std::process::id() as i32);

        // Task 1 moves to container 2, task 4 is new in container 1, task 2 stays.
        state
            .put_packing_plan(
                TOPOLOGY,
                &packing(vec![
                    container(1, &[(2, "word"), (4, "count")]),
                    container(2, &[(3, "count"), (1, "word")]),
                ]),
            )
            .expect("new packing plan");
        let after = step_until(&mut c, "the new plan's processes", |s| {
            names(s) == ["stmgr-1", "instance-2-word", "instance-4-count"]
        });
        assert!(after.processes.iter().all(|p| p.state == "running" && p.restarts == 0));
        for kept in ["stmgr-1", "instance-2-word"] {
            assert_eq!(pid_of(&after, kept), pid_of(&before, kept), "{kept} was restarted");
        }
        assert!(
            !alive(pid_of(&before, "instance-1-word")),
            "the instance that left still runs"
        );
        let env = environ(pid_of(&after, "instance-4-count"));
        for var in [
            "EGRET_INSTANCE=1",
            "EGRET_TOPOLOGY=wc",
            "EGRET_TASK=4",
            "EGRET_CONTAINER=1",
        ] {
            assert!(
                env.iter().any(|v| v == var),
                "{var} not in the new instance's environment {env:?}"
            );
        }
        // The instance that left is not started again.
        for _ in 0..5 {
            assert_eq!(c.step(), Step::Continue);
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = &c.state.container_statuses(TOPOLOGY).expect("statuses")[0];
        assert_eq!(names(status), ["stmgr-1", "instance-2-word", "instance-4-count"]);

        // Container 1 leaves the plan.
        state
            .put_packing_plan(
                TOPOLOGY,
                &packing(vec![container(2, &[(3, "count"), (1, "word"), (2, "word")])]),
            )
            .expect("plan without container 1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.step() == Step::Continue {
            assert!(Instant::now() < deadline, "the executor did not exit within 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &after.processes {
            assert!(!alive(p.pid), "{} still runs", p.name);
        }
        let last = &state.container_statuses(TOPOLOGY).expect("statuses")[0];
        assert_eq!((last.container, last.executor_pid, last.processes.len()), (1, 0, 0));
    }
}
