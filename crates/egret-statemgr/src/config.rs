//! Which state manager a cluster uses: `$EGRET_HOME/conf/<cluster>/statemgr.yaml`, with Heron's key names under
//! `egret.` (`heron.statemgr.connection.string` is `egret.statemgr.connection.string`). A cluster without that file
//! keeps its state in local files (`local` needs no configuration).
//!
//! ```yaml
//! egret.statemgr.kind: zookeeper                      # or local (the default)
//! egret.statemgr.connection.string: 10.0.0.5:2181,10.0.0.6:2181
//! egret.statemgr.root.path: /egret                    # nodes under <root>/<cluster>/ (default /egret)
//! egret.statemgr.zookeeper.session.timeout.ms: 10000  # default 10000
//! egret.statefulstorage.localfs.root.path: /mnt/shared/egret-checkpoints   # default $EGRET_HOME/checkpoints
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::StateError;

/// Under `egret_home`: the per-cluster configuration directories.
pub const CONF_DIR: &str = "conf";
/// The state manager's file in a cluster's configuration directory.
pub const STATEMGR_FILE: &str = "statemgr.yaml";

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Local,
    Zookeeper,
}

/// A cluster's `statemgr.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateManagerConfig {
    #[serde(rename = "egret.statemgr.kind", default)]
    pub kind: Kind,
    #[serde(rename = "egret.statemgr.connection.string", default)]
    pub connection: Option<String>,
    #[serde(rename = "egret.statemgr.root.path", default)]
    pub root: Option<String>,
    #[serde(rename = "egret.statemgr.zookeeper.session.timeout.ms", default)]
    pub session_timeout_ms: Option<u64>,
    /// Where effectively-once checkpoints go (Heron's `heron.statefulstorage.localfs.root.path`): a directory
    /// every host of the cluster reaches at this path (NFS, a ReadWriteMany volume), as `<root>/<cluster>/<topology>`.
    /// Default: `$EGRET_HOME/checkpoints`, which only the hosts sharing that home see.
    #[serde(rename = "egret.statefulstorage.localfs.root.path", default)]
    pub checkpoints_root: Option<String>,
}

impl StateManagerConfig {
    pub const DEFAULT_ROOT: &str = "/egret";
    pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;

    /// `<egret_home>/conf/<cluster>/statemgr.yaml`.
    pub fn path(egret_home: &Path, cluster: &str) -> PathBuf {
        egret_home.join(CONF_DIR).join(cluster).join(STATEMGR_FILE)
    }

    /// The cluster's configuration: its file, or the local default when there is none.
    pub fn load(egret_home: &Path, cluster: &str) -> Result<Self, StateError> {
        let path = Self::path(egret_home, cluster);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(StateError::io(path, e)),
        };
        Self::parse(&text).map_err(|reason| StateError::Config { path, reason })
    }

    /// Parses and checks a `statemgr.yaml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        // An empty file (or one of comments only) is the default.
        let config: Self = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            Self::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| e.to_string())?
        };
        if config.kind == Kind::Zookeeper && config.connection.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err("egret.statemgr.kind is zookeeper but egret.statemgr.connection.string is not set".into());
        }
        if let Some(root) = &config.root
            && !(root.starts_with('/') && (root.len() == 1 || !root.ends_with('/')))
        {
            return Err(format!(
                "egret.statemgr.root.path {root:?} must be an absolute ZooKeeper path like /egret"
            ));
        }
        if let Some(root) = &config.checkpoints_root
            && !root.starts_with('/')
        {
            return Err(format!(
                "egret.statefulstorage.localfs.root.path {root:?} must be an absolute path"
            ));
        }
        if config.session_timeout_ms == Some(0) {
            return Err("egret.statemgr.zookeeper.session.timeout.ms must be more than 0".into());
        }
        Ok(config)
    }
}

/// The cluster every home has, with nothing to configure.
pub const LOCAL_CLUSTER: &str = "local";

/// The clusters of `egret_home`: `local`, and each directory under `conf/` with a valid name; sorted.
pub fn clusters(egret_home: &Path) -> Vec<String> {
    let mut out = vec![LOCAL_CLUSTER.to_string()];
    if let Ok(entries) = std::fs::read_dir(egret_home.join(CONF_DIR)) {
        for entry in entries.flatten() {
            if entry.path().is_dir()
                && let Ok(name) = entry.file_name().into_string()
                && crate::paths::valid_name(&name)
                && name != LOCAL_CLUSTER
            {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clusters_are_local_and_each_configured_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(clusters(dir.path()), ["local"]);
        std::fs::create_dir_all(dir.path().join("conf/zk")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf/local")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf/not a name")).unwrap();
        assert_eq!(clusters(dir.path()), ["local", "zk"]);
    }

    #[test]
    fn a_missing_or_empty_file_is_local() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(StateManagerConfig::load(dir.path(), "local").unwrap().kind, Kind::Local);
        assert_eq!(
            StateManagerConfig::parse("# nothing\n").unwrap(),
            StateManagerConfig::default()
        );
    }

    #[test]
    fn a_zookeeper_config_parses_and_bad_ones_say_why() {
        let c = StateManagerConfig::parse(
            "egret.statemgr.kind: zookeeper\negret.statemgr.connection.string: 10.0.0.5:2181\n\
             egret.statemgr.root.path: /egret\negret.statemgr.zookeeper.session.timeout.ms: 4000\n",
        )
        .unwrap();
        assert_eq!(c.kind, Kind::Zookeeper);
        assert_eq!(c.connection.as_deref(), Some("10.0.0.5:2181"));
        assert_eq!(c.session_timeout_ms, Some(4000));
        let no_address = StateManagerConfig::parse("egret.statemgr.kind: zookeeper\n").unwrap_err();
        assert!(no_address.contains("connection.string"), "{no_address}");
        let typo = StateManagerConfig::parse("egret.statemgr.kind: zookeeper\negret.statemgr.conection: x\n");
        assert!(typo.unwrap_err().contains("egret.statemgr.conection"));
        let kind = StateManagerConfig::parse("egret.statemgr.kind: etcd\n").unwrap_err();
        assert!(kind.contains("etcd"), "{kind}");
        let root = StateManagerConfig::parse("egret.statemgr.root.path: egret/\n").unwrap_err();
        assert!(root.contains("absolute"), "{root}");
    }
}
