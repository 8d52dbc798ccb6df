//! Where effectively-once checkpoints are kept.
//!
//! When a task takes checkpoint C it hands its state, as opaque bytes, to a [`CheckpointStore`], which keeps it as
//! one **checkpoint blob** per (checkpoint, task): a small header (magic `EGCK`, format version, the checkpoint id,
//! the task id, the state's length and an xxh3-64 checksum) followed by the state bytes. The layout is in
//! [`blob`], field by field, and nowhere else.
//!
//! The checksum is there because a blob can be torn (the process or the machine died mid-write) or damaged later
//! (disk, copy, operator). Restoring such bytes would hand a task garbage for state and silently break the
//! effectively-once promise. Instead [`CheckpointStore::load`] verifies every blob and reports
//! [`StoreError::Corrupt`], and recovery falls back to the next older complete checkpoint. The header also names
//! its checkpoint and task, so a blob copied or moved to another task's or another checkpoint's place is refused
//! too.
//!
//! [`CheckpointStore`] is a trait so that the places a blob can live stay interchangeable: [`MemoryStore`] for
//! the simulator and tests, [`LocalStore`] for local files, and later an S3-compatible or HDFS store, without the
//! tasks or the checkpoint logic changing.
//!
//! A store keeps blobs; it does not know which checkpoints are *complete* (saved by every task). That is decided
//! and recorded elsewhere (by the checkpoint coordinator, in the state manager), and a store's
//! [`CheckpointStore::checkpoints`] lists any checkpoint with at least one blob, complete or not. This crate never
//! interprets the state bytes either.

pub mod blob;
mod local;
mod memory;
mod store;

pub use blob::BlobError;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use store::{CheckpointStore, RescaleLoadError, StoreError, load_rescaled};
