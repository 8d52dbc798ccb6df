//! What can go wrong answering a tracker request, and which HTTP status each problem maps to.

use egret_proto::defn::DefnError;
use egret_statemgr::StateError;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("unknown cluster {0:?}: a cluster is `local` or a directory under $EGRET_HOME/conf/ (its statemgr.yaml)")]
    UnknownCluster(String),
    #[error("no topology {topology} on cluster {cluster} (egret list {cluster} shows what runs)")]
    UnknownTopology { cluster: String, topology: String },
    #[error("topology {topology} has no process {process:?} (its processes are listed in processes[].name)")]
    UnknownProcess { topology: String, process: String },
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("state manager: {0}")]
    State(#[from] StateError),
    #[error("topology {topology}: the definition is missing from the state manager")]
    MissingDefinition { topology: String },
    #[error("topology {topology}: the stored definition is invalid: {source}")]
    Definition {
        topology: String,
        #[source]
        source: DefnError,
    },
    #[error("log file {path} of process {process}: {source}")]
    Log {
        process: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log file {path} of process {process} is outside the topology's log directory {dir}")]
    LogOutsideDir { process: String, path: String, dir: String },
    #[error("no metrics manager of topology {topology} answered: {failures}")]
    Scrape { topology: String, failures: String },
    #[error("cannot query the tmanager of topology {topology}: {reason}")]
    Tmanager { topology: String, reason: String },
    #[error("the checkpoint store of topology {topology}: {reason}")]
    Checkpoints { topology: String, reason: String },
    #[error("the blocking worker of a request failed: {0}")]
    Worker(String),
    #[error("cannot serve the tracker: {0}")]
    Serve(#[source] std::io::Error),
}

impl TrackerError {
    /// The HTTP status a client gets for this problem.
    pub fn status(&self) -> u16 {
        match self {
            TrackerError::UnknownCluster(_)
            | TrackerError::UnknownTopology { .. }
            | TrackerError::UnknownProcess { .. } => 404,
            TrackerError::BadQuery(_) => 400,
            TrackerError::Scrape { .. } | TrackerError::Tmanager { .. } => 502,
            _ => 500,
        }
    }
}
