//! Scheduling on this machine.
//!
//! - [`local::LocalScheduler`] starts a topology's **supervisor** and its **executors** (one per container), each
//!   as its own process group, and stops containers by signalling those groups.
//! - [`supervisor::run`] is the supervisor: one per topology, it starts every executor and starts again any that
//!   exits, with back-off.
//! - [`executor::run`] is the executor: it starts the container's processes (container 0: tmanager and
//!   metricsmgr; container k: stmgr, metricsmgr and one instance per task), writes their status to the state
//!   manager, and restarts a process that exits, with back-off ([`backoff`]). Its processes die with it.
//!
//! Files: logs under `$EGRET_HOME/logs/<cluster>/<topology>/<process>.log`, uploaded binaries under
//! `$EGRET_HOME/packages/<cluster>/<topology>/`.

pub mod backoff;
pub mod executor;
pub mod local;
pub mod logging;
pub mod supervisor;

use std::path::{Path, PathBuf};

/// Where a topology's process logs go.
pub fn log_dir(egret_home: &Path, cluster: &str, topology: &str) -> PathBuf {
    egret_home.join("logs").join(cluster).join(topology)
}

/// Where a topology's uploaded binary lives.
pub fn package_dir(egret_home: &Path, cluster: &str, topology: &str) -> PathBuf {
    egret_home.join("packages").join(cluster).join(topology)
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("state manager: {0}")]
    State(#[from] egret_statemgr::StateError),
    #[error("topology {0} has no {1}")]
    Missing(String, &'static str),
    #[error("container {0} is not in the packing plan")]
    UnknownContainer(i32),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl SchedulerError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SchedulerError {
        let what = what.into();
        move |source| SchedulerError::Io { what, source }
    }
}
