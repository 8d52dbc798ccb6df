//! Scheduling: the [`Scheduler`] trait (Heron's `IScheduler`), which the CLI gets for a cluster from its
//! `scheduler.yaml` ([`config`]); the local scheduler here, the Kubernetes one in `egret-kubernetes`.
//!
//! - [`local::LocalScheduler`] starts a topology's **supervisor** and its **executors** (one per container), each
//!   as its own process group, and stops containers by signalling those groups.
//! - [`supervisor::run`] is the supervisor: one per topology, it starts every executor and starts again any that
//!   exits, with back-off; it follows the stored packing plan (executors of new containers started, of removed
//!   ones stopped).
//! - [`executor::run`] is the executor: it starts the container's processes (container 0: tmanager and
//!   metricsmgr; container k: stmgr, metricsmgr and one instance per task), writes their status to the state
//!   manager, and restarts a process that exits, with back-off ([`backoff`]). Its processes die with it. It
//!   follows the stored packing plan (instances that join its container started, those that leave stopped).
//!
//! Files: logs under `$EGRET_HOME/logs/<cluster>/<topology>/<process>.log`, uploaded binaries under
//! `$EGRET_HOME/packages/<cluster>/<topology>/`.

pub mod backoff;
pub mod config;
pub mod executor;
pub mod local;
pub mod logging;
pub mod supervisor;

use std::path::{Path, PathBuf};

/// How often the executor and the supervisor read the packing plan even when its watch has said nothing (a watch
/// may miss a change, or be unavailable).
pub(crate) const PLAN_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a state-manager watch has counted a change since the last call (and marks it seen). A watch that is
/// missing or has ended says no: the executor and the supervisor read again periodically all the same.
pub(crate) fn watch_changed(watch: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match watch.as_mut() {
        Some(w) if w.has_changed().unwrap_or(false) => {
            w.mark_unchanged();
            true
        }
        _ => false,
    }
}

/// Where a topology's process logs go.
pub fn log_dir(egret_home: &Path, cluster: &str, topology: &str) -> PathBuf {
    egret_home.join("logs").join(cluster).join(topology)
}

/// Where a topology's uploaded binary lives.
pub fn package_dir(egret_home: &Path, cluster: &str, topology: &str) -> PathBuf {
    egret_home.join("packages").join(cluster).join(topology)
}

/// How a cluster runs a topology's containers. The topology's state (definition, packing plan, execution state)
/// is written before [`Scheduler::launch`] and removed after [`Scheduler::kill`].
pub trait Scheduler {
    /// Starts every container of `topology`; says what it started.
    fn launch(&self, topology: &str) -> Result<String, SchedulerError>;
    /// Stops every container of `topology`; says what it stopped. Stopping what is already gone is not an error.
    fn kill(&self, topology: &str) -> Result<String, SchedulerError>;
    /// Restarts the containers `containers` of `topology`; says what it did.
    fn restart(&self, topology: &str, containers: &[i32]) -> Result<String, SchedulerError>;
    /// What [`Scheduler::launch`] would start for `topology` packed as `plan`, with the binary named `binary_file`,
    /// without starting anything (`egret submit --dry-run`).
    fn dry_run(
        &self,
        topology: &str,
        plan: &egret_proto::egret::PackingPlan,
        binary_file: &str,
    ) -> Result<String, SchedulerError>;
    /// A rescale (`egret update`) stored `plan`: make the cluster run its containers (container 0 and every
    /// container the plan lists), starting those it adds and stopping those it removes; says what it did. The
    /// executors of the containers that stay follow the plan themselves.
    fn update(&self, topology: &str, plan: &egret_proto::egret::PackingPlan) -> Result<String, SchedulerError>;
    /// Why the topology cannot come up, if this scheduler can tell (a supervisor that exited): polled while
    /// `egret submit` waits for the topology to run.
    fn failure(&self, _topology: &str) -> Option<String> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A cluster's `scheduler.yaml` is wrong.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// What a scheduler backend (the Kubernetes API server, ...) answered.
    #[error("{0}")]
    Backend(String),
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
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SchedulerError {
        let what = what.into();
        move |source| SchedulerError::Io { what, source }
    }
}
