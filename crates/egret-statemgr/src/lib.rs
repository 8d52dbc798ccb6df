//! The state manager: the one place a topology's shared state lives, so that the submitter, the executors, the
//! tmanager, the stmgrs and the tracker find each other and agree on the plans without talking first.
//!
//! [`LocalStateManager`] keeps each piece of state as one protobuf file under `$EGRET_HOME/state/<cluster>/` (the
//! layout is in [`paths`], and nowhere else). Like Heron's local-FS state manager it has no watches: a reader polls
//! a file's modification time ([`LocalStateManager::modified`]). Every write replaces its file atomically, so a
//! reader sees the old message or the new one, never a mix.
//!
//! This crate stores and loads messages; it never interprets them (no plan is checked against a topology here).

mod error;
mod local;
pub mod paths;

pub use error::StateError;
pub use local::LocalStateManager;
pub use paths::Node;
