//! The supervisor of one topology (Heron's scheduler running as a service): it starts the executor of every
//! container and starts again any executor that exits, with back-off, so that a container whose executor died
//! (its children die with it, see [`crate::executor`]) comes back without `egret restart`. It is the executors'
//! parent, so it learns of a death from `wait`, not by polling pids.
//!
//! It records its pid as the `supervisor` location. `egret kill` stops it before the executors (or it would start
//! them again); `egret restart` stops executors and lets it start them. It exits by itself once the topology's
//! definition is gone. If the supervisor itself dies, the executors keep running unsupervised, as every executor
//! did before it existed.

use std::process::Child;
use std::time::{Duration, Instant};

use egret_proto::egret::Location;
use tracing::{error, info, warn};

use crate::SchedulerError;
use crate::backoff::Backoff;
use crate::local::LocalScheduler;

/// The supervisor's process (and location, and log) name.
pub const SUPERVISOR: &str = "supervisor";

/// How often the supervisor looks at its executors.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Opts {
    pub egret_home: std::path::PathBuf,
    pub cluster: String,
    pub topology: String,
    /// The `egret` binary, to start the executors.
    pub egret_bin: std::path::PathBuf,
}

/// The executor of one container, as the supervisor keeps it.
struct Executor {
    container: i32,
    child: Option<Child>,
    started: Instant,
    backoff: Backoff,
    start_at: Option<Instant>,
}

/// Runs the supervisor until the topology is deleted or the process is killed.
pub fn run(opts: Opts) -> Result<(), SchedulerError> {
    let state = egret_statemgr::open(&opts.egret_home, &opts.cluster)?;
    let name = &opts.topology;
    let packing = state
        .get_packing_plan(name)?
        .ok_or_else(|| SchedulerError::Missing(name.clone(), "packing plan"))?;
    state.put_location(
        name,
        &Location {
            process: SUPERVISOR.into(),
            // The supervisor belongs to no container.
            container: -1,
            host: String::new(),
            port: 0,
            pid: std::process::id() as i32,
            http_port: 0,
        },
    )?;
    let scheduler = LocalScheduler::new(&opts.egret_home, &opts.cluster, opts.egret_bin.clone());
    // Container 0 is the tmanager's; the packing plan lists the others.
    let mut executors: Vec<Executor> = std::iter::once(0)
        .chain(packing.containers.iter().map(|c| c.id))
        .map(|container| Executor {
            container,
            child: None,
            started: Instant::now(),
            backoff: Backoff::default(),
            start_at: Some(Instant::now()),
        })
        .collect();
    info!(
        cluster = %opts.cluster,
        egret_home = %opts.egret_home.display(),
        egret_bin = %opts.egret_bin.display(),
        pid = std::process::id(),
        executors = executors.len(),
        "supervisor started"
    );
    loop {
        // `kill` removes the definition last, after stopping this process; if this process outlived that (it was
        // stopped too late), nothing is left to supervise.
        if !state.exists(name)? {
            info!("the topology is gone; exiting");
            return Ok(());
        }
        for e in &mut executors {
            if let Some(child) = e.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                e.child = None;
                let wait = e.backoff.after_exit(e.started.elapsed());
                e.start_at = Some(Instant::now() + wait);
                warn!(container = e.container, %exit, restart_in = ?wait, "executor exited");
            }
            if e.child.is_none() && e.start_at.is_some_and(|t| Instant::now() >= t) {
                e.started = Instant::now();
                match scheduler.launch(name, e.container) {
                    Ok(child) => {
                        info!(container = e.container, pid = child.id(), "executor started");
                        e.child = Some(child);
                        e.start_at = None;
                    }
                    Err(err) => {
                        let wait = e.backoff.after_exit(Duration::ZERO);
                        e.start_at = Some(Instant::now() + wait);
                        error!(container = e.container, error = %err, retry_in = ?wait, "cannot start the executor");
                    }
                }
            }
        }
        std::thread::sleep(POLL);
    }
}
