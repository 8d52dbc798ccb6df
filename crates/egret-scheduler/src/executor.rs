//! The executor of one container: starts its processes, restarts any that exits (at once, then a back-off of 0.5 s
//! doubling to 30 s while it keeps exiting, reset after 10 s of good health), and records what runs in the state
//! manager for `egret explain`.
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
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egret_proto::egret::{ContainerStatus, ProcessStatus};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::{SchedulerError, log_dir};

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

/// One process the executor keeps running.
struct Supervised {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
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

/// Runs the executor until it is killed.
pub fn run(opts: Opts) -> Result<(), SchedulerError> {
    let state = egret_statemgr::open(&opts.egret_home, &opts.cluster)?;
    let name = &opts.topology;
    let packing = state
        .get_packing_plan(name)?
        .ok_or_else(|| SchedulerError::Missing(name.clone(), "packing plan"))?;
    let exec = state
        .get_execution_state(name)?
        .ok_or_else(|| SchedulerError::Missing(name.clone(), "execution state"))?;
    let logs = log_dir(&opts.egret_home, &opts.cluster, name);
    fs::create_dir_all(&logs).map_err(SchedulerError::io(format!("creating {}", logs.display())))?;

    let home = opts.egret_home.display().to_string();
    let daemon = |role: &str, process: String| {
        let args = vec![
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
        ];
        (process, opts.egret_bin.clone(), args, Vec::new())
    };
    // The binary is in this executor's own package directory (another host or a pod has another egret home than
    // the submitter's): the execution state names its file.
    let package = crate::package_dir(&opts.egret_home, &opts.cluster, name).join(
        std::path::Path::new(&exec.package)
            .file_name()
            .ok_or_else(|| SchedulerError::Missing(name.clone(), "package file name"))?,
    );
    let mut specs = Vec::new();
    if opts.container == 0 {
        specs.push(daemon("tmanager", "tmanager".into()));
        specs.push(daemon("metricsmgr", "metricsmgr-0".into()));
    } else {
        let plan = packing
            .containers
            .iter()
            .find(|c| c.id == opts.container)
            .ok_or(SchedulerError::UnknownContainer(opts.container))?;
        specs.push(daemon("stmgr", format!("stmgr-{}", opts.container)));
        specs.push(daemon("metricsmgr", format!("metricsmgr-{}", opts.container)));
        for i in &plan.instances {
            let env = vec![
                ("EGRET_INSTANCE".to_string(), "1".to_string()),
                ("EGRET_HOME".into(), home.clone()),
                ("EGRET_CLUSTER".into(), opts.cluster.clone()),
                ("EGRET_TOPOLOGY".into(), name.clone()),
                ("EGRET_TASK".into(), i.task_id.to_string()),
                ("EGRET_CONTAINER".into(), opts.container.to_string()),
            ];
            let process = format!("instance-{}-{}", i.task_id, i.component);
            if exec.python.is_empty() {
                specs.push((process, package.clone(), exec.topology_args.clone(), env));
            } else {
                // A heronpy topology: the interpreter that described it at submit runs Egret's Python instance
                // (the `egret_python` package), which finds the topology's modules in the package directory.
                let args = vec!["-m".to_string(), PYTHON_INSTANCE_MODULE.to_string()];
                specs.push((process, PathBuf::from(&exec.python), args, env));
            }
        }
    }
    let mut procs: Vec<Supervised> = specs
        .into_iter()
        .map(|(name, program, args, env)| Supervised {
            log: logs.join(format!("{name}.log")),
            name,
            program,
            args,
            env,
            child: None,
            started: Instant::now(),
            started_ms: 0,
            restarts: 0,
            backoff: Backoff::default(),
            restart_at: None,
            last_exit: String::new(),
        })
        .collect();
    info!(
        cluster = %opts.cluster,
        egret_home = %opts.egret_home.display(),
        egret_bin = %opts.egret_bin.display(),
        pid = std::process::id(),
        processes = procs.len(),
        "executor started"
    );
    for p in &mut procs {
        p.start();
    }
    let mut dirty = true;
    // `egret kill` removes the topology's state. An executor the local scheduler started is stopped before that;
    // one that another host, a pod or a service manager runs learns it here (on a watch of the definition, and
    // every 10 s all the same), and stops its processes.
    let mut definition = state.watch(name, egret_statemgr::Node::Topology).ok();
    let mut checked = Instant::now();
    loop {
        let changed = match definition.as_mut() {
            Some(w) if w.has_changed().unwrap_or(false) => {
                w.mark_unchanged();
                true
            }
            _ => false,
        };
        if changed || checked.elapsed() >= Duration::from_secs(10) {
            checked = Instant::now();
            if let Ok(false) = state.exists(name) {
                info!("the topology is gone; stopping its processes and exiting");
                for p in &mut procs {
                    if let Some(mut child) = p.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
                return Ok(());
            }
        }
        for p in &mut procs {
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
                dirty = true;
            }
            if p.child.is_none() && p.restart_at.is_some_and(|t| Instant::now() >= t) {
                p.restart_at = None;
                p.restarts += 1;
                p.start();
                dirty = true;
            }
        }
        if dirty {
            let status = ContainerStatus {
                container: opts.container,
                executor_pid: std::process::id() as i32,
                processes: procs.iter().map(|p| p.status(opts.container)).collect(),
            };
            if let Err(e) = state.put_container_status(name, &status) {
                error!(error = %e, "cannot record the container's status");
            }
            dirty = false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
