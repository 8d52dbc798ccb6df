//! The supervisor of one topology (Heron's scheduler running as a service): it starts the executor of every
//! container and starts again any executor that exits, with back-off, so that a container whose executor died
//! (its children die with it, see [`crate::executor`]) comes back without `egret restart`. It is the executors'
//! parent, so it learns of a death from `wait`, not by polling pids.
//!
//! It records its pid as the `supervisor` location. `egret kill` stops it before the executors (or it would start
//! them again); `egret restart` stops executors and lets it start them. It exits by itself once the topology's
//! definition is gone. If the supervisor itself dies, the executors keep running unsupervised, as every executor
//! did before it existed.
//!
//! It follows the stored packing plan while the topology runs (`egret update` stores a new one): on a watch of the
//! packing plan, every 5 s all the same, and whenever an executor exits, it compares the containers it runs with
//! those of the plan ([`reconcile`]), starts the executor of a container new in the plan, and stops for good (its
//! process group, SIGTERM then SIGKILL) the executor of a container that left it, recording an empty status for
//! that container. Executors of the other containers are left alone: each follows its own container's part of the
//! plan (see [`crate::executor`]).

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret_proto::egret::{ContainerStatus, Location, PackingPlan};
use egret_statemgr::{Node, StateManager};
use tokio::sync::watch::Receiver;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::local::{KILL_GRACE, LocalScheduler, stop_executor};
use crate::{PLAN_RECHECK, SchedulerError, watch_changed};

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
    let scheduler = LocalScheduler::new(&opts.egret_home, &opts.cluster, opts.egret_bin.clone());
    // The watch comes before the first read of the packing plan, so that a plan stored in between is not missed.
    let mut executors = Executors::new(state.clone(), name, scheduler);
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
    executors.apply(&packing);
    info!(
        cluster = %opts.cluster,
        egret_home = %opts.egret_home.display(),
        egret_bin = %opts.egret_bin.display(),
        pid = std::process::id(),
        executors = executors.list.len(),
        "supervisor started"
    );
    loop {
        // `kill` removes the definition last, after stopping this process; if this process outlived that (it was
        // stopped too late), nothing is left to supervise.
        if !state.exists(name)? {
            info!("the topology is gone; exiting");
            return Ok(());
        }
        executors.step();
        std::thread::sleep(POLL);
    }
}

/// The containers to start an executor for and those whose executor to stop, so that a supervisor whose executors
/// run the containers `running` runs exactly container 0 (the tmanager's, never in the plan) and those of `plan`.
/// Containers are started in plan order (an id listed twice once); stopped in `running` order.
pub fn reconcile(running: &[i32], plan: &PackingPlan) -> (Vec<i32>, Vec<i32>) {
    let wanted: Vec<i32> = std::iter::once(0).chain(plan.containers.iter().map(|c| c.id)).collect();
    let mut start: Vec<i32> = Vec::new();
    for &c in &wanted {
        if !running.contains(&c) && !start.contains(&c) {
            start.push(c);
        }
    }
    let stop = running.iter().copied().filter(|c| !wanted.contains(c)).collect();
    (start, stop)
}

/// A topology's executors, kept running and matched to the stored packing plan.
struct Executors {
    state: Arc<dyn StateManager>,
    topology: String,
    scheduler: LocalScheduler,
    list: Vec<Executor>,
    packing: Option<Receiver<u64>>,
    packing_checked: Instant,
}

impl Executors {
    /// Sets up the watch of the packing plan (before the caller's first read of it); starts nothing.
    fn new(state: Arc<dyn StateManager>, topology: &str, scheduler: LocalScheduler) -> Self {
        let packing = state.watch(topology, Node::PackingPlan).ok();
        Executors {
            state,
            topology: topology.to_string(),
            scheduler,
            list: Vec::new(),
            packing,
            packing_checked: Instant::now(),
        }
    }

    /// Stops (for good) the executors of the containers that left `plan` and adds those of the containers new in
    /// it, to be started by the next [`Executors::step`]; leaves the others alone.
    fn apply(&mut self, plan: &PackingPlan) {
        let running: Vec<i32> = self.list.iter().map(|e| e.container).collect();
        let (start, stop) = reconcile(&running, plan);
        for container in stop {
            let Some(at) = self.list.iter().position(|e| e.container == container) else {
                continue;
            };
            let mut e = self.list.remove(at);
            info!(container, "the container left the packing plan; stopping its executor");
            if let Some(child) = e.child.as_mut() {
                stop_executor(child, KILL_GRACE);
            }
            // `stop` and `kill` signal the executor pid a container's status records: none is left to signal.
            let status = ContainerStatus {
                container,
                executor_pid: 0,
                processes: Vec::new(),
            };
            if let Err(err) = self.state.put_container_status(&self.topology, &status) {
                error!(container, error = %err, "cannot record the stopped container's status");
            }
        }
        for container in start {
            if !running.is_empty() {
                info!(
                    container,
                    "the container is new in the packing plan; starting its executor"
                );
            }
            self.list.push(Executor {
                container,
                child: None,
                started: Instant::now(),
                backoff: Backoff::default(),
                start_at: Some(Instant::now()),
            });
        }
    }

    /// One look at the executors and the packing plan: follows the plan, and starts every executor that is due
    /// (new, or exited and its back-off passed).
    fn step(&mut self) {
        let mut exited = false;
        for e in &mut self.list {
            if let Some(child) = e.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                e.child = None;
                let wait = e.backoff.after_exit(e.started.elapsed());
                e.start_at = Some(Instant::now() + wait);
                warn!(container = e.container, %exit, restart_in = ?wait, "executor exited");
                exited = true;
            }
        }
        // An executor exits by itself when its container leaves the plan, maybe before this process's watch has
        // said so: the plan is read before any executor is started again.
        if exited || watch_changed(&mut self.packing) || self.packing_checked.elapsed() >= PLAN_RECHECK {
            self.packing_checked = Instant::now();
            match self.state.get_packing_plan(&self.topology) {
                Ok(Some(plan)) => self.apply(&plan),
                // No plan: the topology is being deleted, which `run` sees.
                Ok(None) => {}
                Err(err) => warn!(error = %err, "cannot read the packing plan; keeping the executors as they are"),
            }
        }
        for e in &mut self.list {
            if e.child.is_none() && e.start_at.is_some_and(|t| Instant::now() >= t) {
                e.started = Instant::now();
                match self.scheduler.launch(&self.topology, e.container) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::group_alive;
    use egret_proto::api::Topology;
    use egret_proto::egret::ContainerPlan;
    use egret_statemgr::LocalStateManager;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const TOPOLOGY: &str = "wc";

    fn packing(containers: &[i32]) -> PackingPlan {
        PackingPlan {
            id: TOPOLOGY.into(),
            algorithm: "test".into(),
            containers: containers
                .iter()
                .map(|&id| ContainerPlan {
                    id,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn reconcile_starts_new_containers_and_stops_those_that_left() {
        fn check(running: &[i32], plan: &[i32], expect_start: &[i32], expect_stop: &[i32]) {
            let (start, stop) = reconcile(running, &packing(plan));
            assert_eq!(
                (start.as_slice(), stop.as_slice()),
                (expect_start, expect_stop),
                "running {running:?}"
            );
        }
        // The supervisor's start: container 0 and every container of the plan.
        check(&[], &[1, 2], &[0, 1, 2], &[]);
        check(&[0, 1, 2], &[1, 2], &[], &[]);
        // Containers added and removed in one plan; container 0 is never stopped.
        check(&[0, 1, 2], &[2, 3], &[3], &[1]);
        check(&[0, 1, 2], &[], &[], &[1, 2]);
        // A container listed twice is started once.
        check(&[0], &[4, 4], &[4], &[]);
    }

    /// Kills every executor group the test started, however it ends.
    struct Guard(Executors);

    impl Drop for Guard {
        fn drop(&mut self) {
            for e in &mut self.0.list {
                if let Some(child) = e.child.as_mut() {
                    stop_executor(child, Duration::ZERO);
                }
            }
        }
    }

    /// The executor pid of every container the supervisor runs, once each has one.
    fn pids(e: &Executors) -> Vec<(i32, i32)> {
        e.list
            .iter()
            .map(|e| (e.container, e.child.as_ref().map_or(0, |c| c.id() as i32)))
            .collect()
    }

    /// Steps `e` until its executors are `containers`, each running, or fails after 5 s.
    fn step_until(e: &mut Executors, containers: &[i32]) -> Vec<(i32, i32)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            e.step();
            let now = pids(e);
            if now.iter().map(|&(c, _)| c).eq(containers.iter().copied()) && now.iter().all(|&(_, p)| p > 0) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "executors {now:?}, not {containers:?}, after 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The supervisor's own loop, with a stand-in `egret` binary whose `executor` is a `sleep`, against a local
    /// state manager: a new packing plan starts the executor of the container it adds, stops the process group of
    /// the one it removes (and records that container as empty), and leaves the others running; an executor whose
    /// container left is not started again when it exits, one whose container stays is.
    #[test]
    fn the_supervisor_follows_the_packing_plan() {
        let home = tempfile::tempdir().expect("a temporary home");
        let egret = home.path().join("egret");
        fs::write(&egret, "#!/bin/sh\nexec sleep 1000\n").expect("a stand-in egret binary");
        fs::set_permissions(&egret, fs::Permissions::from_mode(0o755)).expect("executable");
        let state = Arc::new(LocalStateManager::new(home.path(), "local").expect("a state manager"));
        state.put_topology(TOPOLOGY, &Topology::default()).expect("definition");
        state
            .put_packing_plan(TOPOLOGY, &packing(&[1, 2]))
            .expect("packing plan");
        let scheduler = LocalScheduler::new(home.path(), "local", egret);
        let mut guard = Guard(Executors::new(state.clone(), TOPOLOGY, scheduler));
        let e = &mut guard.0;
        e.apply(&packing(&[1, 2]));
        let before = step_until(e, &[0, 1, 2]);

        // Container 1 leaves, container 3 is new, container 2 stays.
        state
            .put_packing_plan(TOPOLOGY, &packing(&[2, 3]))
            .expect("new packing plan");
        let after = step_until(e, &[0, 2, 3]);
        assert_eq!(
            (after[0], after[1]),
            (before[0], before[2]),
            "an executor that stays was restarted"
        );
        assert!(
            !group_alive(before[1].1),
            "the executor of the container that left still runs"
        );
        let statuses = state.container_statuses(TOPOLOGY).expect("statuses");
        assert_eq!(statuses.len(), 1);
        assert_eq!(
            (
                statuses[0].container,
                statuses[0].executor_pid,
                statuses[0].processes.len()
            ),
            (1, 0, 0)
        );

        // Container 3 leaves and its executor exits at once (as a real one does when it sees the plan first): it
        // is dropped, not started again, even before the watch reports the new plan.
        state
            .put_packing_plan(TOPOLOGY, &packing(&[2]))
            .expect("plan without container 3");
        // SAFETY: kills the stand-in executor this test started.
        unsafe { libc::kill(after[2].1, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while e.list.iter().any(|x| x.container == 3) {
            e.step();
            let three = e.list.iter().find(|x| x.container == 3).and_then(|x| x.child.as_ref());
            assert!(
                three.is_none_or(|c| c.id() as i32 == after[2].1),
                "container 3's executor was started again"
            );
            assert!(Instant::now() < deadline, "container 3 still supervised after 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(step_until(e, &[0, 2])[..], after[..2]);

        // An executor whose container stays is started again when it dies.
        // SAFETY: as above.
        unsafe { libc::kill(after[1].1, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = step_until(e, &[0, 2]);
            if now[1].1 != after[1].1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "container 2's executor was not started again"
            );
        }
    }
}
