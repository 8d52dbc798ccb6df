use std::io;
use std::path::PathBuf;

/// Why a state manager call failed. Each variant names the file or the value at fault.
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
