//! The state manager: the one place a topology's shared state lives, so that the submitter, the executors, the
//! tmanager, the stmgrs and the tracker find each other and agree on the plans without talking first.
//!
//! Every process asks it through the [`StateManager`] trait, from [`open`], which reads the cluster's
//! configuration ([`config`]): [`LocalStateManager`] keeps each piece of state as one protobuf file under
//! `$EGRET_HOME/state/<cluster>/` (the layout is in [`paths`], and nowhere else); every write replaces its file
//! atomically, so a reader sees the old message or the new one, never a mix.
//!
//! [`ZkStateManager`] keeps the same messages as ZooKeeper nodes under `<root>/<cluster>/` (Heron's layout), with the
//! tmanager's location ephemeral and watches instead of polling.
//!
//! This crate stores and loads messages; it never interprets them (no plan is checked against a topology here).

pub mod config;
mod error;
mod local;
mod manager;
pub mod paths;
mod zookeeper;

use std::path::Path;
use std::sync::Arc;

pub use config::{Kind, StateManagerConfig};
pub use error::StateError;
pub use local::LocalStateManager;
pub use manager::{StateManager, TmanagerLease};
pub use paths::Node;
pub use zookeeper::{EPHEMERAL_PROCESS, MAX_NODE_BYTES, ZkStateManager};

/// The state manager of `cluster`, as `<egret_home>/conf/<cluster>/statemgr.yaml` configures it (local files when
/// there is no such file).
pub fn open(egret_home: &Path, cluster: &str) -> Result<Arc<dyn StateManager>, StateError> {
    let config = StateManagerConfig::load(egret_home, cluster)?;
    let checkpoints_root = config.checkpoints_root.clone();
    match config.kind {
        Kind::Local => {
            let local = LocalStateManager::new(egret_home, cluster)?;
            Ok(Arc::new(match checkpoints_root {
                Some(root) => local.with_checkpoints_root(root),
                None => local,
            }))
        }
        Kind::Zookeeper => {
            // `parse` refused a zookeeper config without a connection string.
            let connection = config.connection.as_deref().unwrap_or_default();
            let root = config.root.as_deref().unwrap_or(StateManagerConfig::DEFAULT_ROOT);
            let timeout = config
                .session_timeout_ms
                .unwrap_or(StateManagerConfig::DEFAULT_SESSION_TIMEOUT_MS);
            let zk = ZkStateManager::connect(connection, root, cluster, std::time::Duration::from_millis(timeout))?;
            let zk = zk.with_egret_home(egret_home);
            Ok(Arc::new(match checkpoints_root {
                Some(root) => zk.with_checkpoints_root(root),
                None => zk,
            }))
        }
    }
}
