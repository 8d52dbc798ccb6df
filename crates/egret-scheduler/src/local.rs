//! The local scheduler: every container is an executor process group on this machine, started and restarted by
//! the topology's supervisor process.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::supervisor::SUPERVISOR;
use crate::{Scheduler, SchedulerError, log_dir};

/// How long `kill` lets a container's processes stop after SIGTERM before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

pub struct LocalScheduler {
    egret_home: PathBuf,
    cluster: String,
    egret_bin: PathBuf,
    /// The supervisors this value launched, by topology: `failure` watches them.
    launched: Mutex<Vec<(String, Child)>>,
}

/// Whether a process exists (signal 0).
pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Whether any process of the group exists.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: as above, for the process group.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: sends a signal to a process group we started; errors (already gone) are fine.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

impl LocalScheduler {
    pub fn new(egret_home: &Path, cluster: &str, egret_bin: PathBuf) -> Self {
        LocalScheduler {
            egret_home: egret_home.to_path_buf(),
            cluster: cluster.to_string(),
            egret_bin,
            launched: Mutex::new(Vec::new()),
        }
    }

    /// Starts the supervisor of `topology` (which starts every executor, and starts again any that exits) as a new
    /// process group, logging to `supervisor.log`.
    pub fn launch_supervisor(&self, topology: &str) -> Result<Child, SchedulerError> {
        self.spawn_role(topology, SUPERVISOR, SUPERVISOR, &[])
    }

    /// Starts the executor of `container` as a new process group (its pid is the group id), logging to
    /// `executor-<container>.log`.
    pub fn launch(&self, topology: &str, container: i32) -> Result<Child, SchedulerError> {
        let container = container.to_string();
        self.spawn_role(
            topology,
            "executor",
            &format!("executor-{container}"),
            &["--container", &container],
        )
    }

    fn spawn_role(&self, topology: &str, role: &str, log_name: &str, extra: &[&str]) -> Result<Child, SchedulerError> {
        let logs = log_dir(&self.egret_home, &self.cluster, topology);
        fs::create_dir_all(&logs).map_err(SchedulerError::io(format!("creating {}", logs.display())))?;
        let log_path = logs.join(format!("{log_name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(SchedulerError::io(format!("opening {}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(SchedulerError::io("duplicating the log file"))?;
        Command::new(&self.egret_bin)
            .arg(role)
            .arg("--home")
            .arg(&self.egret_home)
            .args(["--cluster", &self.cluster, "--topology", topology])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(SchedulerError::io(format!("starting {}", self.egret_bin.display())))
    }

    /// The pid of the topology's supervisor if it is running.
    pub fn supervisor_pid(&self, topology: &str) -> Result<Option<i32>, SchedulerError> {
        let state = egret_statemgr::open(&self.egret_home, &self.cluster)?;
        Ok(state
            .get_location(topology, SUPERVISOR)?
            .map(|l| l.pid)
            .filter(|&pid| alive(pid)))
    }

    /// Stops the executors (and so every process) of the given containers, or of all: SIGTERM to each group, then
    /// SIGKILL to what is left after `grace`. Stopping all (`None`) stops the supervisor first, so that it does not
    /// start them again. A container stopped alone is started again by the supervisor. Returns the process groups
    /// that were signalled.
    pub fn stop(
        &self,
        topology: &str,
        containers: Option<&[i32]>,
        grace: Duration,
    ) -> Result<Vec<i32>, SchedulerError> {
        let state = egret_statemgr::open(&self.egret_home, &self.cluster)?;
        let mut stopped = Vec::new();
        if containers.is_none()
            && let Some(location) = state.get_location(topology, SUPERVISOR)?
            && location.pid > 0
        {
            stop_groups(&[location.pid], grace);
            stopped.push(location.pid);
        }
        let groups: Vec<i32> = state
            .container_statuses(topology)?
            .into_iter()
            .filter(|c| containers.is_none_or(|cs| cs.contains(&c.container)))
            .map(|c| c.executor_pid)
            .filter(|&pid| pid > 0)
            .collect();
        stop_groups(&groups, grace);
        stopped.extend(groups);
        Ok(stopped)
    }
}

impl Scheduler for LocalScheduler {
    /// Nothing to do: the topology's supervisor follows the stored packing plan (it starts the executors of added
    /// containers and stops those of removed ones).
    fn update(&self, _topology: &str, plan: &egret_proto::egret::PackingPlan) -> Result<String, SchedulerError> {
        Ok(format!(
            "the supervisor follows the new packing plan ({} container(s))",
            plan.containers.len()
        ))
    }

    fn launch(&self, topology: &str) -> Result<String, SchedulerError> {
        let child = self.launch_supervisor(topology)?;
        let pid = child.id();
        self.launched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((topology.to_string(), child));
        Ok(format!(
            "started the supervisor (pid {pid}), which starts every executor"
        ))
    }

    fn kill(&self, topology: &str) -> Result<String, SchedulerError> {
        let state = egret_statemgr::open(&self.egret_home, &self.cluster)?;
        let supervisor = state.get_location(topology, SUPERVISOR)?.map(|l| l.pid);
        let pids: Vec<i32> = state
            .container_statuses(topology)?
            .iter()
            .flat_map(|c| c.processes.iter().map(|p| p.pid).chain([c.executor_pid]))
            .chain(supervisor)
            .collect();
        let groups = self.stop(topology, None, KILL_GRACE)?;
        let survivors: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
        if !survivors.is_empty() {
            return Err(SchedulerError::Backend(format!(
                "stopped topology {topology}, but processes {survivors:?} are still alive"
            )));
        }
        Ok(format!("{} containers stopped", groups.len()))
    }

    fn dry_run(
        &self,
        topology: &str,
        plan: &egret_proto::egret::PackingPlan,
        _binary_file: &str,
    ) -> Result<String, SchedulerError> {
        let home = self.egret_home.display();
        let mut out = format!(
            "would start a supervisor, which starts and restarts {} executors:\n",
            plan.containers.len() + 1
        );
        for c in std::iter::once(0).chain(plan.containers.iter().map(|c| c.id)) {
            out.push_str(&format!(
                "  {} executor --home {home} --cluster {} --topology {topology} --container {c}\n",
                self.egret_bin.display(),
                self.cluster
            ));
        }
        Ok(out)
    }

    /// Stops the containers' executors; the supervisor starts them again (waited for here, so that the command
    /// returns when the restart has happened). Without a supervisor (it died), starts them here, unsupervised.
    fn restart(&self, topology: &str, containers: &[i32]) -> Result<String, SchedulerError> {
        let state = egret_statemgr::open(&self.egret_home, &self.cluster)?;
        let old_executors: Vec<i32> = state
            .container_statuses(topology)?
            .iter()
            .map(|s| s.executor_pid)
            .collect();
        self.stop(topology, Some(containers), KILL_GRACE)?;
        if self.supervisor_pid(topology)?.is_none() {
            for &c in containers {
                self.launch(topology, c)?;
            }
            return Ok("no supervisor was running: started the executors unsupervised".into());
        }
        // The supervisor cannot tell a restart from a crash, so a container restarted often may wait out the
        // longest back-off first.
        let patience = crate::backoff::MAX_BACKOFF + Duration::from_secs(15);
        let deadline = Instant::now() + patience;
        loop {
            let statuses = state.container_statuses(topology)?;
            let restarted = containers.iter().all(|&c| {
                statuses
                    .iter()
                    .any(|s| s.container == c && !old_executors.contains(&s.executor_pid) && alive(s.executor_pid))
            });
            if restarted {
                return Ok("the supervisor started them again".into());
            }
            if Instant::now() > deadline {
                return Err(SchedulerError::Backend(format!(
                    "stopped container(s) {containers:?} of topology {topology}, but the supervisor did not start \
                     them again within {patience:?} (see its log)"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn failure(&self, topology: &str) -> Option<String> {
        let mut launched = self.launched.lock().unwrap_or_else(|p| p.into_inner());
        let (_, child) = launched.iter_mut().find(|(t, _)| t == topology)?;
        let exit = child.try_wait().ok()??;
        let log = log_dir(&self.egret_home, &self.cluster, topology).join(format!("{SUPERVISOR}.log"));
        Some(format!(
            "the supervisor exited ({exit}); its log ends with:\n{}",
            log_tail(&log, 10)
        ))
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Stops an executor this process launched ([`LocalScheduler::launch`]), and so every process of its container:
/// SIGTERM to its process group, SIGKILL to what is left of the group once the executor has exited or after
/// `grace`, then reaps the executor and waits (up to 5 s more) until the group is gone. The caller is the executor's
/// parent and reaps it here: [`stop_groups`] would wait on its zombie.
pub fn stop_executor(executor: &mut Child, grace: Duration) {
    let group = executor.id() as i32;
    signal_group(group, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while matches!(executor.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(group, libc::SIGKILL);
    let _ = executor.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(group) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to each process group, SIGKILL to those still there after `grace`, then waits (up to 5 s more) until
/// they are gone.
fn stop_groups(groups: &[i32], grace: Duration) {
    for &g in groups {
        signal_group(g, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in groups {
        if group_alive(g) {
            signal_group(g, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
