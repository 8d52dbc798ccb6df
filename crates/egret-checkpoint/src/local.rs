//! A store in local files: `<dir>/<checkpoint>/<task>.ckpt`, the checkpoint id zero-padded to 20 digits so that
//! directory listings sort like the ids. Each blob is written atomically (a temporary file beside it, fsynced,
//! renamed into place, directory fsynced), so after a crash a blob file is whole or absent; the checksum catches
//! the damage that happens anyway.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use egret_api::{CheckpointId, TaskId};

use crate::blob;
use crate::store::{CheckpointStore, StoreError};

/// Numbers this process's temporary files, so two saves of one blob at once never open the same temporary file.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Checkpoint blobs kept as files under one directory. Holds no open file and no lock; nothing is created until
/// the first save.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalStore { dir: dir.into() }
    }

    /// The directory the store keeps its checkpoints in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that keeps task `task`'s state of checkpoint `checkpoint`: `<dir>/<checkpoint, 20 digits>/<task>.ckpt`.
    pub fn blob_path(&self, checkpoint: CheckpointId, task: TaskId) -> PathBuf {
        self.checkpoint_dir(checkpoint).join(blob_file_name(task))
    }

    fn checkpoint_dir(&self, checkpoint: CheckpointId) -> PathBuf {
        self.dir.join(checkpoint_dir_name(checkpoint))
    }
}

impl CheckpointStore for LocalStore {
    fn save(&self, checkpoint: CheckpointId, task: TaskId, state: &[u8]) -> Result<u64, StoreError> {
        let blob = blob::encode(checkpoint, task, state);
        let dir = self.checkpoint_dir(checkpoint);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;

        let target = dir.join(blob_file_name(task));
        let temp = dir.join(format!(
            "{}~{}~{}.tmp",
            blob_file_name(task),
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&blob)?;
                file.sync_all()
            });
        if let Err(e) = written {
            // Best effort: the save already failed, and listings skip temporary files.
            let _ = fs::remove_file(&temp);
            return Err(StoreError::io("write", temp, e));
        }
        if let Err(e) = fs::rename(&temp, &target) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::io("rename", target, e));
        }
        // The rename is durable once the checkpoint's directory is synced; the store directory is synced too in
        // case this save created the checkpoint's directory (or another task's save did and has not synced yet).
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(blob.len() as u64)
    }

    fn load(&self, checkpoint: CheckpointId, task: TaskId) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(checkpoint, task);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing { checkpoint, task }),
            Err(e) => return Err(StoreError::io("read", path, e)),
        };
        let header_len = match blob::decode(checkpoint, task, &bytes) {
            Ok(state) => bytes.len() - state.len(),
            Err(error) => {
                return Err(StoreError::Corrupt {
                    checkpoint,
                    task,
                    error,
                    location: path.display().to_string(),
                });
            }
        };
        // Hand back the file's own buffer without its header rather than copying a possibly large state.
        bytes.drain(..header_len);
        Ok(bytes)
    }

    fn delete(&self, checkpoint: CheckpointId) -> Result<(), StoreError> {
        let dir = self.checkpoint_dir(checkpoint);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("delete", dir, e)),
            _ => Ok(()),
        }
    }

    fn checkpoints(&self) -> Result<Vec<CheckpointId>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("list", &self.dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &self.dir, e))?;
            let Some(checkpoint) = entry.file_name().to_str().and_then(parse_checkpoint_dir_name) else {
                continue;
            };
            let is_dir = entry
                .file_type()
                .map_err(|e| StoreError::io("list", entry.path(), e))?
                .is_dir();
            if is_dir && has_blob(&entry.path())? {
                ids.push(checkpoint);
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn describe(&self) -> String {
        format!("local files under {}", self.dir.display())
    }
}

fn checkpoint_dir_name(checkpoint: CheckpointId) -> String {
    format!("{:020}", checkpoint.0)
}

fn blob_file_name(task: TaskId) -> String {
    format!("{}.ckpt", task.0)
}

/// The checkpoint a directory name stands for, if it is exactly a name [`checkpoint_dir_name`] gives (so `7` or
/// `00000000000000000007.old` is a stray, not checkpoint 7).
fn parse_checkpoint_dir_name(name: &str) -> Option<CheckpointId> {
    let checkpoint = CheckpointId(name.parse().ok()?);
    (checkpoint_dir_name(checkpoint) == name).then_some(checkpoint)
}

/// The task a file name stands for, if it is exactly a name [`blob_file_name`] gives (temporary files are not).
fn parse_blob_file_name(name: &str) -> Option<TaskId> {
    let task = TaskId(name.strip_suffix(".ckpt")?.parse().ok()?);
    (blob_file_name(task) == name).then_some(task)
}

/// Whether a checkpoint's directory holds at least one blob: a save that failed or was interrupted can leave the
/// directory with only a temporary file, and such a checkpoint has nothing to restore.
fn has_blob(dir: &Path) -> Result<bool, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Deleted since the store directory was listed: gone, not an error.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
        if entry.file_name().to_str().and_then(parse_blob_file_name).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("sync", dir, e))
}

/// Directories cannot be opened for fsync outside Unix; the rename is still atomic, only its durability across a
/// power loss is weaker.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobError;
    use crate::store::contract;

    const C: CheckpointId = CheckpointId(7);

    fn store() -> (tempfile::TempDir, LocalStore) {
        let temp = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::new(temp.path().join("checkpoints"));
        (temp, store)
    }

    #[test]
    fn round_trip() {
        let (_temp, store) = store();
        contract::round_trip(&store);
    }

    #[test]
    fn save_replaces_the_previous_state() {
        let (_temp, store) = store();
        contract::save_replaces_the_previous_state(&store);
    }

    #[test]
    fn missing_blob_is_missing() {
        let (_temp, store) = store();
        contract::missing_blob_is_missing(&store);
    }

    #[test]
    fn delete_and_list() {
        let (_temp, store) = store();
        contract::delete_and_list(&store);
    }

    #[test]
    fn blobs_live_at_the_documented_paths() {
        let (_temp, store) = store();
        let path = store.blob_path(C, TaskId(3));
        assert_eq!(path, store.dir().join("00000000000000000007").join("3.ckpt"));
        let written = store.save(C, TaskId(3), b"state").expect("save");
        let bytes = fs::read(&path).expect("blob file");
        assert_eq!(bytes.len() as u64, written);
        assert_eq!(bytes, blob::encode(C, TaskId(3), b"state"));
        // Only the blob is left in the checkpoint's directory: no temporary file.
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["3.ckpt"]);
    }

    #[test]
    fn listing_ignores_stray_names_and_checkpoints_without_a_blob() {
        let (_temp, store) = store();
        store.save(CheckpointId(2), TaskId(1), b"x").expect("save");
        store.save(CheckpointId(u64::MAX), TaskId(1), b"x").expect("save");
        let dir = store.dir();
        // A checkpoint directory with only a leftover temporary file, or nothing at all.
        fs::create_dir(dir.join(checkpoint_dir_name(CheckpointId(3)))).expect("mkdir");
        fs::write(
            dir.join(checkpoint_dir_name(CheckpointId(3))).join("1.ckpt~42~0.tmp"),
            b"torn",
        )
        .expect("write");
        fs::create_dir(dir.join(checkpoint_dir_name(CheckpointId(4)))).expect("mkdir");
        // Names that are not checkpoint directories.
        fs::create_dir(dir.join("5")).expect("mkdir");
        fs::write(
            dir.join("5").join("1.ckpt"),
            blob::encode(CheckpointId(5), TaskId(1), b"x"),
        )
        .expect("write");
        fs::create_dir(dir.join("00000000000000000006.old")).expect("mkdir");
        fs::write(dir.join("00000000000000000006.old").join("1.ckpt"), b"x").expect("write");
        fs::write(
            dir.join(checkpoint_dir_name(CheckpointId(8))),
            b"a file, not a directory",
        )
        .expect("write");
        fs::write(dir.join("README"), b"operator notes").expect("write");

        assert_eq!(
            store.checkpoints().expect("list"),
            [CheckpointId(2), CheckpointId(u64::MAX)]
        );
    }

    #[test]
    fn listing_an_absent_store_is_empty() {
        let (_temp, store) = store();
        assert_eq!(store.checkpoints().expect("list"), []);
        store.delete(C).expect("delete in an absent store");
    }

    fn assert_corrupt(store: &LocalStore, checkpoint: CheckpointId, task: TaskId, expect: impl Fn(&BlobError) -> bool) {
        let err = store.load(checkpoint, task).unwrap_err();
        let message = err.to_string();
        match err {
            StoreError::Corrupt {
                checkpoint: c,
                task: t,
                error,
                location,
            } => {
                assert_eq!((c, t), (checkpoint, task));
                assert!(expect(&error), "unexpected blob error: {error:?}");
                let path = store.blob_path(checkpoint, task);
                assert_eq!(location, path.display().to_string());
                assert!(message.contains(&location), "{message}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn flipped_byte_is_corrupt() {
        let (_temp, store) = store();
        store.save(C, TaskId(1), b"some state").expect("save");
        let path = store.blob_path(C, TaskId(1));
        let mut bytes = fs::read(&path).expect("read");
        bytes[blob::HEADER_LEN + 2] ^= 0x01;
        fs::write(&path, bytes).expect("write");
        assert_corrupt(&store, C, TaskId(1), |e| {
            matches!(e, BlobError::ChecksumMismatch { .. })
        });
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let (_temp, store) = store();
        store.save(C, TaskId(1), b"some state").expect("save");
        let path = store.blob_path(C, TaskId(1));
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(blob::HEADER_LEN as u64 + 4).expect("truncate");
        assert_corrupt(&store, C, TaskId(1), |e| {
            *e == BlobError::LengthMismatch { expected: 10, found: 4 }
        });
        // Torn inside the header as well.
        file.set_len(10).expect("truncate");
        assert_corrupt(&store, C, TaskId(1), |e| {
            *e == BlobError::ShortHeader {
                expected: blob::HEADER_LEN,
                found: 10,
            }
        });
    }

    #[test]
    fn blob_moved_to_another_task_is_corrupt() {
        let (_temp, store) = store();
        store.save(C, TaskId(1), b"state of task 1").expect("save");
        fs::rename(store.blob_path(C, TaskId(1)), store.blob_path(C, TaskId(2))).expect("move");
        assert_corrupt(&store, C, TaskId(2), |e| {
            *e == BlobError::WrongTask {
                expected: TaskId(2),
                found: TaskId(1),
            }
        });
    }

    #[test]
    fn blob_copied_to_another_checkpoint_is_corrupt() {
        let (_temp, store) = store();
        store.save(C, TaskId(1), b"state").expect("save");
        store.save(CheckpointId(8), TaskId(2), b"other").expect("save");
        fs::copy(
            store.blob_path(C, TaskId(1)),
            store.blob_path(CheckpointId(8), TaskId(1)),
        )
        .expect("copy");
        assert_corrupt(&store, CheckpointId(8), TaskId(1), |e| {
            *e == BlobError::WrongCheckpoint {
                expected: CheckpointId(8),
                found: C,
            }
        });
    }

    /// The store directory is a regular file: every write fails (even as root, where permission bits would not),
    /// and the error names the path.
    #[test]
    fn unwritable_store_gives_io_error_naming_the_path() {
        let temp = tempfile::tempdir().expect("temp dir");
        let file = temp.path().join("not-a-directory");
        fs::write(&file, b"in the way").expect("write");
        let store = LocalStore::new(&file);

        let err = store.save(C, TaskId(1), b"state").unwrap_err();
        let message = err.to_string();
        match &err {
            StoreError::Io { action, path, .. } => {
                assert_eq!(*action, "create directory");
                assert!(path.starts_with(&file), "{path:?}");
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.starts_with("cannot create directory "), "{message}");

        // Reading and listing there fail the same way rather than pretending the store is empty.
        assert!(matches!(
            store.checkpoints(),
            Err(StoreError::Io { action: "list", .. })
        ));
        assert!(matches!(
            store.load(C, TaskId(1)),
            Err(StoreError::Io { action: "read", .. })
        ));
    }

    #[test]
    fn describe_names_the_directory() {
        let store = LocalStore::new("/var/egret/checkpoints");
        assert_eq!(store.describe(), "local files under /var/egret/checkpoints");
    }
}
