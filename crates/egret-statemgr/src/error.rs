use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a state manager call failed. Each variant names the file, the ZooKeeper node or the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A topology, process or cluster name that would not make a safe single path component.
    #[error("{what} name {name:?} is invalid: use 1-100 of A-Z a-z 0-9 _ . - (and not \".\" or \"..\")")]
    InvalidName { what: &'static str, name: String },
    /// A container status for a negative container id (ids are 0 for the tmanager's container, then 1..N).
    #[error("container id {0} is invalid: container ids are 0 or more")]
    InvalidContainer(i32),
    /// A topology of this name already exists (or is being submitted right now).
    #[error("topology {0} already exists")]
    TopologyExists(String),
    /// Another tmanager of the topology is alive and holds its claim.
    #[error("topology {topology} already has a live tmanager ({holder}); waited {waited_ms} ms for it to go")]
    TmanagerExists {
        topology: String,
        holder: String,
        waited_ms: u64,
    },
    /// A file exists but does not hold the message it should.
    #[error("{}: does not decode: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A cluster's state manager configuration (`conf/<cluster>/statemgr.yaml`) is wrong.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// A ZooKeeper root that is not an absolute path of valid names (`/egret`, `/heron/state`).
    #[error("zookeeper root {0:?} is invalid: use \"/\" or an absolute path of valid names, like /egret")]
    InvalidRoot(String),
    /// No first ZooKeeper session could be opened (no server answered within the session timeout, or the connection
    /// string is malformed).
    #[error("zookeeper at {servers}: cannot open a session: {reason}")]
    ZooKeeperConnect { servers: String, reason: String },
    /// ZooKeeper answered a request on `path` with an error the state manager does not expect (no permission, a
    /// missing chroot, a node too large, ...).
    #[error("zookeeper node {path}: {reason}")]
    ZooKeeper { path: String, reason: String },
    /// No answer for `path` within the retry bound: the connection was lost and not restored, or the session expired
    /// and no new one was opened in time. The request may still take effect if the connection comes back.
    #[error("zookeeper node {path}: no answer from {servers} within {waited:?} (last: {reason})")]
    ZooKeeperUnavailable {
        servers: String,
        path: String,
        waited: Duration,
        reason: String,
    },
    /// A state manager that was given no place for checkpoints (the ZooKeeper one keeps them in local files under an
    /// egret home it must be told).
    #[error("cluster {cluster}: no checkpoint directory configured (ZkStateManager::with_egret_home was not called)")]
    NoCheckpointsDir { cluster: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StateError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StateError::Io {
            path: path.into(),
            source,
        }
    }
}
