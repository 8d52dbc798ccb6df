//! [`StateManager`]: what every process asks of a cluster's shared state, whatever keeps it (local files, ZooKeeper).
//! The CLI, the tracker and every daemon hold an `Arc<dyn StateManager>` from [`crate::open`], so a new backend
//! touches this crate only.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use egret_proto::api::Topology;
use egret_proto::egret::{ContainerStatus, ExecutionState, Location, PackingPlan, PhysicalPlan, StatefulCheckpoints};

use crate::error::StateError;

/// A cluster's shared state: per topology, its definition, packing plan, physical plan, execution state, complete
/// checkpoints, where its daemons listen and how its containers are. Every `put` replaces the whole message
/// atomically (a reader sees the old one or the new one); every `get` of something never written is `Ok(None)`.
/// Names are checked ([`crate::paths::valid_name`]) before anything is stored.
pub trait StateManager: Send + Sync + std::fmt::Debug {
    /// The cluster whose state this is.
    fn cluster(&self) -> &str;

    /// Where the state lives, for people (`local files under ...`, `zookeeper at ...`).
    fn describe(&self) -> String;

    /// Writes the definition of a new topology, or fails with [`StateError::TopologyExists`] if `name` already has
    /// one; the check and the write are one step, so of two submits of one name at once exactly one succeeds.
    fn create_topology(&self, name: &str, topology: &Topology) -> Result<(), StateError>;
    fn put_topology(&self, name: &str, topology: &Topology) -> Result<(), StateError>;
    fn get_topology(&self, name: &str) -> Result<Option<Topology>, StateError>;

    fn put_packing_plan(&self, name: &str, plan: &PackingPlan) -> Result<(), StateError>;
    fn get_packing_plan(&self, name: &str) -> Result<Option<PackingPlan>, StateError>;

    fn put_physical_plan(&self, name: &str, plan: &PhysicalPlan) -> Result<(), StateError>;
    fn get_physical_plan(&self, name: &str) -> Result<Option<PhysicalPlan>, StateError>;

    fn put_execution_state(&self, name: &str, state: &ExecutionState) -> Result<(), StateError>;
    fn get_execution_state(&self, name: &str) -> Result<Option<ExecutionState>, StateError>;

    /// Effectively-once: the complete checkpoints and the last epoch, written by the tmanager. Removed with the
    /// topology (a new submit starts clean), unlike the checkpoints themselves.
    fn put_stateful_checkpoints(&self, name: &str, checkpoints: &StatefulCheckpoints) -> Result<(), StateError>;
    fn get_stateful_checkpoints(&self, name: &str) -> Result<Option<StatefulCheckpoints>, StateError>;

    /// Where topology `name`'s checkpoint store keeps its files.
    fn checkpoints_dir(&self, name: &str) -> Result<PathBuf, StateError>;

    /// Makes the calling process topology `name`'s tmanager, listening at `location` (process `tmanager`), and
    /// returns the lease that says when that stops being true: at most one tmanager acts at a time. ZooKeeper keeps
    /// the claim as an ephemeral node of this process's session, created only if there is none: while a previous
    /// tmanager's session lives (a killed one's lasts until its session timeout) this waits, up to `wait`, then
    /// fails with [`StateError::TmanagerExists`]; the lease is lost when the session expires. Local files serve one
    /// machine, where the executor of container 0 runs the only tmanager: the claim is writing the location.
    fn claim_tmanager(&self, name: &str, location: &Location, wait: Duration) -> Result<TmanagerLease, StateError>;

    /// A counter that grows whenever `node` of topology `name` is created, changed or deleted, so that a reader waits
    /// (`changed().await`, or `has_changed()` from a plain thread) and then reads again instead of polling. It may
    /// also grow without a change (after a reconnection, when one could have been missed): read again and compare.
    /// ZooKeeper: a persistent watch. Local files have no watches: a thread looks at the file every
    /// [`LOCAL_WATCH_INTERVAL`](crate::local::LOCAL_WATCH_INTERVAL) until the receiver is dropped.
    fn watch(&self, name: &str, node: crate::Node) -> Result<tokio::sync::watch::Receiver<u64>, StateError>;
    /// Like [`StateManager::watch`], for the location of daemon `process` of topology `name` (a stmgr follows the
    /// tmanager's this way).
    fn watch_location(&self, name: &str, process: &str) -> Result<tokio::sync::watch::Receiver<u64>, StateError>;

    /// Records where a daemon of topology `name` listens, under `location.process`.
    fn put_location(&self, name: &str, location: &Location) -> Result<(), StateError>;
    fn get_location(&self, name: &str, process: &str) -> Result<Option<Location>, StateError>;
    /// Every daemon location of topology `name`, sorted by process name.
    fn locations(&self, name: &str) -> Result<Vec<Location>, StateError>;

    /// Records the status an executor reports for its container.
    fn put_container_status(&self, name: &str, status: &ContainerStatus) -> Result<(), StateError>;
    /// The status of every container of topology `name` that has reported one, sorted by container id.
    fn container_statuses(&self, name: &str) -> Result<Vec<ContainerStatus>, StateError>;

    /// Names of the topologies that have a definition, sorted.
    fn list_topologies(&self) -> Result<Vec<String>, StateError>;
    /// Whether topology `name` has a definition.
    fn exists(&self, name: &str) -> Result<bool, StateError>;
    /// Removes everything of topology `name` (missing parts are fine, so an interrupted delete can be repeated); the
    /// definition goes last, so until everything else is gone the topology is still listed.
    fn delete_topology(&self, name: &str) -> Result<(), StateError>;
}

/// A tmanager's claim on its topology ([`StateManager::claim_tmanager`]). Clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct TmanagerLease {
    lost: Arc<AtomicBool>,
}

impl TmanagerLease {
    /// Whether the claim has ended: the tmanager must stop acting (its process exits and is started again, and the
    /// new one claims anew).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Ends the claim (the backend saw the session that held it expire, or its node go).
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release)
    }
}
