//! The interface every place that keeps checkpoint blobs implements, and the errors it reports.

use std::io;
use std::path::PathBuf;

use egret_api::{CheckpointId, TaskId};

use crate::blob::BlobError;

/// A place that keeps checkpoint blobs, one per (checkpoint, task). Every blob goes through [`crate::blob`], so
/// what [`CheckpointStore::load`] returns has been verified whatever the medium.
///
/// A store does not know which checkpoints are complete; whoever decides that records it elsewhere and asks the
/// store only for blobs of checkpoints it knows to be complete.
pub trait CheckpointStore: Send + Sync {
    /// Keeps `state` as task `task`'s state of checkpoint `checkpoint`, replacing any it had, and returns the
    /// number of bytes written (the blob, header included). When this returns `Ok` the blob is durable as far as
    /// the medium allows.
    fn save(&self, checkpoint: CheckpointId, task: TaskId, state: &[u8]) -> Result<u64, StoreError>;

    /// Task `task`'s state of checkpoint `checkpoint`, verified: [`StoreError::Missing`] if there is none,
    /// [`StoreError::Corrupt`] if the blob is damaged, truncated or belongs elsewhere.
    fn load(&self, checkpoint: CheckpointId, task: TaskId) -> Result<Vec<u8>, StoreError>;

    /// Removes every task's blob of `checkpoint`. Deleting a checkpoint that has none is `Ok`, so an interrupted
    /// clean-up can simply be repeated.
    fn delete(&self, checkpoint: CheckpointId) -> Result<(), StoreError>;

    /// The checkpoints that have at least one blob, ascending, complete or not.
    fn checkpoints(&self) -> Result<Vec<CheckpointId>, StoreError>;

    /// Where the blobs are, for error messages and logs (e.g. `local files under /var/egret/checkpoints`).
    fn describe(&self) -> String;
}

/// Why a store call failed. Each variant names the checkpoint, the task or the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint {checkpoint} has no saved state for task {task}")]
    Missing { checkpoint: CheckpointId, task: TaskId },
    /// The blob is there but cannot be trusted; restore from an older complete checkpoint instead.
    #[error("checkpoint {checkpoint}: the saved state of task {task} in {location} is corrupt: {error}")]
    Corrupt {
        checkpoint: CheckpointId,
        task: TaskId,
        #[source]
        error: BlobError,
        /// Where the blob was read from: its file, or the store's description.
        location: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "create directory", "write", "rename", "sync", "read", "delete", "list".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Behaviour every store must show, run against each implementation by its own tests.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub fn round_trip(store: &dyn CheckpointStore) {
        let states: [&[u8]; 3] = [b"", b"counts: a=1 b=2", &[0xff; 4096]];
        for (i, state) in states.iter().enumerate() {
            let task = TaskId(i as u32);
            let written = store.save(CheckpointId(1), task, state).expect("save");
            assert_eq!(written, (crate::blob::HEADER_LEN + state.len()) as u64);
        }
        for (i, state) in states.iter().enumerate() {
            assert_eq!(store.load(CheckpointId(1), TaskId(i as u32)).expect("load"), *state);
        }
    }

    pub fn save_replaces_the_previous_state(store: &dyn CheckpointStore) {
        store.save(CheckpointId(2), TaskId(1), b"first").expect("save");
        store.save(CheckpointId(2), TaskId(1), b"second").expect("save");
        assert_eq!(store.load(CheckpointId(2), TaskId(1)).expect("load"), b"second");
    }

    pub fn missing_blob_is_missing(store: &dyn CheckpointStore) {
        let err = store.load(CheckpointId(9), TaskId(4)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Missing {
                    checkpoint: CheckpointId(9),
                    task: TaskId(4)
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "checkpoint 9 has no saved state for task 4");
        // Another task of an existing checkpoint is missing too.
        store.save(CheckpointId(9), TaskId(1), b"x").expect("save");
        assert!(matches!(
            store.load(CheckpointId(9), TaskId(4)),
            Err(StoreError::Missing { .. })
        ));
    }

    pub fn delete_and_list(store: &dyn CheckpointStore) {
        assert_eq!(store.checkpoints().expect("list"), []);
        for checkpoint in [5, 3, 12] {
            for task in [1, 2] {
                store
                    .save(CheckpointId(checkpoint), TaskId(task), b"state")
                    .expect("save");
            }
        }
        let ids = |v: &[u64]| v.iter().copied().map(CheckpointId).collect::<Vec<_>>();
        assert_eq!(store.checkpoints().expect("list"), ids(&[3, 5, 12]));

        store.delete(CheckpointId(5)).expect("delete");
        assert_eq!(store.checkpoints().expect("list"), ids(&[3, 12]));
        for task in [1, 2] {
            assert!(matches!(
                store.load(CheckpointId(5), TaskId(task)),
                Err(StoreError::Missing { .. })
            ));
        }
        // The other checkpoints keep their blobs.
        assert_eq!(store.load(CheckpointId(3), TaskId(2)).expect("load"), b"state");

        // Deleting what is not there (any more) is fine.
        store.delete(CheckpointId(5)).expect("delete again");
        store.delete(CheckpointId(99)).expect("delete never saved");
        assert_eq!(store.checkpoints().expect("list"), ids(&[3, 12]));
    }
}

/// Why the state of a task of a rescaled component could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RescaleLoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint {checkpoint}: {error}")]
    State {
        checkpoint: CheckpointId,
        #[source]
        error: egret_api::StateError,
    },
}

/// The state the task at `index` of `tasks` restores from `checkpoint`, which was taken while the component had
/// the tasks `old` (ascending): the key groups it owns now, from whichever old task saved them
/// (`egret_api::state::key_group_blob::rescale`, which also says what happens to state that is not keyed). One
/// place for the simulator and the instances.
pub fn load_rescaled(
    store: &dyn CheckpointStore,
    checkpoint: CheckpointId,
    old: &[TaskId],
    index: usize,
    tasks: usize,
) -> Result<Option<Vec<u8>>, RescaleLoadError> {
    let blobs: Vec<Vec<u8>> = old
        .iter()
        .map(|&t| store.load(checkpoint, t))
        .collect::<Result<_, _>>()?;
    let refs: Vec<Option<&[u8]>> = blobs.iter().map(|b| Some(b.as_slice())).collect();
    egret_api::state::key_group_blob::rescale(&refs, index, tasks)
        .map_err(|error| RescaleLoadError::State { checkpoint, error })
}
