//! A store in this process's memory: for the simulator and tests. Blobs are encoded and verified exactly as on
//! disk, so a test can damage one ([`MemoryStore::tamper`]) and watch recovery refuse it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use egret_api::{CheckpointId, TaskId};

use crate::blob;
use crate::store::{CheckpointStore, StoreError};

/// Checkpoint blobs kept in memory, lost with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    blobs: Mutex<BTreeMap<(CheckpointId, TaskId), Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets a test change the stored blob of (`checkpoint`, `task`) in place: flip a byte, truncate it, replace
    /// it. Returns whether there was such a blob (`f` is not called if there was none).
    pub fn tamper(&self, checkpoint: CheckpointId, task: TaskId, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.blobs().get_mut(&(checkpoint, task)) {
            Some(blob) => {
                f(blob);
                true
            }
            None => false,
        }
    }

    /// Every change to the map is a single insert or removal, so a thread that panicked while holding the lock
    /// cannot have left it half-changed: carry on with it rather than spread the panic.
    fn blobs(&self) -> MutexGuard<'_, BTreeMap<(CheckpointId, TaskId), Vec<u8>>> {
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CheckpointStore for MemoryStore {
    fn save(&self, checkpoint: CheckpointId, task: TaskId, state: &[u8]) -> Result<u64, StoreError> {
        let blob = blob::encode(checkpoint, task, state);
        let written = blob.len() as u64;
        self.blobs().insert((checkpoint, task), blob);
        Ok(written)
    }

    fn load(&self, checkpoint: CheckpointId, task: TaskId) -> Result<Vec<u8>, StoreError> {
        let blobs = self.blobs();
        let Some(bytes) = blobs.get(&(checkpoint, task)) else {
            return Err(StoreError::Missing { checkpoint, task });
        };
        match blob::decode(checkpoint, task, bytes) {
            Ok(state) => Ok(state.to_vec()),
            Err(error) => Err(StoreError::Corrupt {
                checkpoint,
                task,
                error,
                location: self.describe(),
            }),
        }
    }

    fn delete(&self, checkpoint: CheckpointId) -> Result<(), StoreError> {
        self.blobs().retain(|(c, _), _| *c != checkpoint);
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<CheckpointId>, StoreError> {
        // Keys are ordered by checkpoint first, so equal checkpoints are adjacent and the result is ascending.
        let mut ids: Vec<CheckpointId> = self.blobs().keys().map(|(c, _)| *c).collect();
        ids.dedup();
        Ok(ids)
    }

    fn describe(&self) -> String {
        "memory (this process)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobError;
    use crate::store::contract;

    const C: CheckpointId = CheckpointId(7);

    #[test]
    fn round_trip() {
        contract::round_trip(&MemoryStore::new());
    }

    #[test]
    fn save_replaces_the_previous_state() {
        contract::save_replaces_the_previous_state(&MemoryStore::new());
    }

    #[test]
    fn missing_blob_is_missing() {
        contract::missing_blob_is_missing(&MemoryStore::new());
    }

    #[test]
    fn delete_and_list() {
        contract::delete_and_list(&MemoryStore::new());
    }

    #[test]
    fn usable_as_a_shared_trait_object() {
        let store: std::sync::Arc<dyn CheckpointStore> = std::sync::Arc::new(MemoryStore::new());
        let saver = std::sync::Arc::clone(&store);
        std::thread::spawn(move || saver.save(C, TaskId(1), b"from another thread"))
            .join()
            .expect("thread")
            .expect("save");
        assert_eq!(store.load(C, TaskId(1)).expect("load"), b"from another thread");
    }

    fn assert_corrupt(store: &MemoryStore, task: TaskId, expect: impl Fn(&BlobError) -> bool) {
        match store.load(C, task) {
            Err(StoreError::Corrupt {
                checkpoint,
                task: t,
                error,
                location,
            }) => {
                assert_eq!((checkpoint, t), (C, task));
                assert!(expect(&error), "unexpected blob error: {error:?}");
                assert_eq!(location, "memory (this process)");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn flipped_byte_is_corrupt() {
        let store = MemoryStore::new();
        store.save(C, TaskId(1), b"state").expect("save");
        assert!(store.tamper(C, TaskId(1), |b| {
            let last = b.len() - 1;
            b[last] ^= 0x40;
        }));
        assert_corrupt(&store, TaskId(1), |e| matches!(e, BlobError::ChecksumMismatch { .. }));
    }

    #[test]
    fn truncated_blob_is_corrupt() {
        let store = MemoryStore::new();
        store.save(C, TaskId(1), b"state").expect("save");
        assert!(store.tamper(C, TaskId(1), |b| b.truncate(b.len() - 2)));
        assert_corrupt(&store, TaskId(1), |e| {
            *e == BlobError::LengthMismatch { expected: 5, found: 3 }
        });
    }

    #[test]
    fn blob_of_another_task_is_corrupt() {
        let store = MemoryStore::new();
        store.save(C, TaskId(2), b"state of 2").expect("save");
        assert!(store.tamper(C, TaskId(2), |b| *b = blob::encode(C, TaskId(1), b"state of 1")));
        assert_corrupt(&store, TaskId(2), |e| {
            *e == BlobError::WrongTask {
                expected: TaskId(2),
                found: TaskId(1),
            }
        });
    }

    #[test]
    fn tamper_reports_a_missing_blob() {
        let store = MemoryStore::new();
        assert!(!store.tamper(C, TaskId(1), |_| panic!("nothing to tamper with")));
    }
}
