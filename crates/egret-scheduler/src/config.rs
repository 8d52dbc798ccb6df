//! Which scheduler a cluster uses: `$EGRET_HOME/conf/<cluster>/scheduler.yaml` (no file: local processes).
//!
//! ```yaml
//! egret.scheduler.kind: kubernetes          # or local (the default)
//! egret.kubernetes.namespace: streaming     # every other key belongs to the scheduler of that kind
//! egret.kubernetes.image: registry.example/egret:0.1.0
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::SchedulerError;

/// The scheduler's file in a cluster's configuration directory (beside `statemgr.yaml`).
pub const SCHEDULER_FILE: &str = "scheduler.yaml";
/// The cluster's topology config defaults, beside them.
pub const DEFAULTS_FILE: &str = "defaults.yaml";
const KIND_KEY: &str = "egret.scheduler.kind";

/// The schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Local,
    Kubernetes,
}

/// A cluster's `scheduler.yaml`: the kind, and the kind's own keys (each scheduler reads and checks its keys).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchedulerConfig {
    pub kind: Kind,
    pub keys: BTreeMap<String, String>,
    /// The file it came from (none for the default).
    pub path: Option<PathBuf>,
}

impl SchedulerConfig {
    /// `<egret_home>/conf/<cluster>/scheduler.yaml`.
    pub fn path(egret_home: &Path, cluster: &str) -> PathBuf {
        egret_home
            .join(egret_statemgr::config::CONF_DIR)
            .join(cluster)
            .join(SCHEDULER_FILE)
    }

    /// The cluster's configuration: its file, or local processes when there is none.
    pub fn load(egret_home: &Path, cluster: &str) -> Result<Self, SchedulerError> {
        let path = Self::path(egret_home, cluster);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(SchedulerError::io(format!("reading {}", path.display()))(e)),
        };
        let mut config = Self::parse(&text).map_err(|reason| SchedulerError::Config {
            path: path.clone(),
            reason,
        })?;
        config.path = Some(path);
        Ok(config)
    }

    /// Parses a `scheduler.yaml`: a map of keys to scalar values.
    pub fn parse(text: &str) -> Result<Self, String> {
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        let mut keys: BTreeMap<String, yaml_serde::Value> = if blank {
            BTreeMap::new()
        } else {
            yaml_serde::from_str(text).map_err(|e| format!("not a map of keys to values: {e}"))?
        };
        let kind = match keys.remove(KIND_KEY) {
            None => Kind::Local,
            Some(v) => match scalar(&v).as_deref() {
                Some("local") => Kind::Local,
                Some("kubernetes") => Kind::Kubernetes,
                other => return Err(format!("{KIND_KEY} is {other:?}: use local or kubernetes")),
            },
        };
        let keys = keys
            .into_iter()
            .map(|(k, v)| {
                scalar(&v)
                    .map(|v| (k.clone(), v))
                    .ok_or(format!("{k} is not a single value"))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        if kind == Kind::Local
            && let Some(k) = keys.keys().next()
        {
            return Err(format!("{k}: the local scheduler takes no keys"));
        }
        Ok(SchedulerConfig { kind, keys, path: None })
    }
}

/// A cluster's `defaults.yaml`: topology config values (`topology.stmgrs: 4`, `topology.message.timeout.secs: 60`)
/// that `egret submit` gives every topology of the cluster that does not set them itself (a topology's own values
/// and `--config-property` win). Empty when there is no file.
pub fn cluster_defaults(egret_home: &Path, cluster: &str) -> Result<BTreeMap<String, String>, SchedulerError> {
    let path = egret_home
        .join(egret_statemgr::config::CONF_DIR)
        .join(cluster)
        .join(DEFAULTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(SchedulerError::io(format!("reading {}", path.display()))(e)),
    };
    parse_defaults(&text).map_err(|reason| SchedulerError::Config { path, reason })
}

fn parse_defaults(text: &str) -> Result<BTreeMap<String, String>, String> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(BTreeMap::new());
    }
    let keys: BTreeMap<String, yaml_serde::Value> =
        yaml_serde::from_str(text).map_err(|e| format!("not a map of keys to values: {e}"))?;
    keys.into_iter()
        .map(|(k, v)| {
            scalar(&v)
                .map(|v| (k.clone(), v))
                .ok_or(format!("{k} is not a single value"))
        })
        .collect()
}

fn scalar(v: &yaml_serde::Value) -> Option<String> {
    match v {
        yaml_serde::Value::String(s) => Some(s.clone()),
        yaml_serde::Value::Number(n) => Some(n.to_string()),
        yaml_serde::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_local_and_a_kubernetes_file_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SchedulerConfig::load(dir.path(), "local").unwrap().kind, Kind::Local);
        let c = SchedulerConfig::parse(
            "egret.scheduler.kind: kubernetes\negret.kubernetes.namespace: streaming\negret.kubernetes.replicas: 3\n",
        )
        .unwrap();
        assert_eq!(c.kind, Kind::Kubernetes);
        assert_eq!(c.keys["egret.kubernetes.namespace"], "streaming");
        assert_eq!(c.keys["egret.kubernetes.replicas"], "3");
    }

    #[test]
    fn cluster_defaults_are_a_map_of_values() {
        let d = parse_defaults("topology.stmgrs: 4\ntopology.message.timeout.secs: 60\n").unwrap();
        assert_eq!(d["topology.stmgrs"], "4");
        assert_eq!(d["topology.message.timeout.secs"], "60");
        assert!(parse_defaults("# none\n").unwrap().is_empty());
        assert!(
            parse_defaults("topology.stmgrs: [1]\n")
                .unwrap_err()
                .contains("not a single value")
        );
    }

    #[test]
    fn bad_scheduler_files_say_why() {
        let kind = SchedulerConfig::parse("egret.scheduler.kind: aurora\n").unwrap_err();
        assert!(kind.contains("aurora"), "{kind}");
        let local = SchedulerConfig::parse("egret.kubernetes.image: x\n").unwrap_err();
        assert!(local.contains("local scheduler takes no keys"), "{local}");
        let nested = SchedulerConfig::parse("egret.scheduler.kind: kubernetes\nx: [1, 2]\n").unwrap_err();
        assert!(nested.contains("x is not a single value"), "{nested}");
    }
}
