//! The local scheduler: every container is an executor process group on this machine.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use egret_statemgr::LocalStateManager;

use crate::{SchedulerError, log_dir};

pub struct LocalScheduler {
    egret_home: PathBuf,
    cluster: String,
    egret_bin: PathBuf,
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
        }
    }

    /// Starts the executor of `container` as a new process group; returns its pid (= process group id).
    pub fn launch(&self, topology: &str, container: i32) -> Result<i32, SchedulerError> {
        let logs = log_dir(&self.egret_home, &self.cluster, topology);
        fs::create_dir_all(&logs).map_err(SchedulerError::io(format!("creating {}", logs.display())))?;
        let log_path = logs.join(format!("executor-{container}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(SchedulerError::io(format!("opening {}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(SchedulerError::io("duplicating the log file"))?;
        let child = Command::new(&self.egret_bin)
            .arg("executor")
            .arg("--home")
            .arg(&self.egret_home)
            .args([
                "--cluster",
                &self.cluster,
                "--topology",
                topology,
                "--container",
                &container.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(SchedulerError::io(format!("starting {}", self.egret_bin.display())))?;
        Ok(child.id() as i32)
    }

    /// Stops the executors (and so every process) of the given containers, or of all: SIGTERM to each group, then
    /// SIGKILL to what is left after `grace`. Returns the process groups that were signalled.
    pub fn stop(
        &self,
        topology: &str,
        containers: Option<&[i32]>,
        grace: Duration,
    ) -> Result<Vec<i32>, SchedulerError> {
        let state = LocalStateManager::new(&self.egret_home, &self.cluster)?;
        let groups: Vec<i32> = state
            .container_statuses(topology)?
            .into_iter()
            .filter(|c| containers.is_none_or(|cs| cs.contains(&c.container)))
            .map(|c| c.executor_pid)
            .filter(|&pid| pid > 0)
            .collect();
        for &g in &groups {
            signal_group(g, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &g in &groups {
            if group_alive(g) {
                signal_group(g, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(groups)
    }
}
