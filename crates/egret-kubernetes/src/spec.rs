//! What the CLI hands over to run a topology on Kubernetes ([`TopologySpec`]), how the topology binary reaches the
//! pods ([`Uploader`]), and the name rules everything is checked against before any manifest is built.
//!
//! Names are **refused, never mangled**: the topology name is also the key of the topology in the state manager
//! and what the user types in `egret kill`, so quietly running `Word_Count` as `word-count` would leave two names
//! for one thing. The error says which rule was broken and, when one exists, the valid name to use instead.

use std::path::{Component, Path};

use egret_proto::egret::PackingPlan;
use egret_statemgr::{Kind, StateManagerConfig};

use crate::K8sError;

/// Where Egret lives inside the pods unless the spec says otherwise (the image's `EGRET_HOME`).
pub const DEFAULT_EGRET_HOME: &str = "/var/lib/egret";

/// The longest topology name. A StatefulSet labels each pod with `controller-revision-hash: <name>-<hash>` (the
/// hash is up to 10 characters) and label values have at most 63, so a longer name would create a StatefulSet
/// that can never start a pod.
pub const MAX_TOPOLOGY_NAME_LEN: usize = 52;

/// How the topology binary reaches the pods. Whichever is used, the executor finds the binary at
/// [`TopologySpec::package_path`]: `<egret_home>/packages/<cluster>/<topology>/<file name>`, the layout
/// `egret_scheduler::package_dir` gives on a local cluster, where the file name is the last component of the
/// path or URL below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploader {
    /// The binary is already in the image at `path` (absolute). An init container of the same image copies it into
    /// an emptyDir mounted at the package directory, so the package path is the same whatever the image's layout.
    BakedImage { path: String },
    /// The binary is at `path` (relative to the volume's root) on a PersistentVolumeClaim `claim` that the user
    /// filled; the claim is mounted read-only, and only that one file (`subPath`) appears at the package path. The
    /// claim must be readable from every node (ReadOnlyMany or ReadWriteMany).
    SharedVolume { claim: String, path: String },
    /// An init container fetches the binary from `url` with a plain HTTP GET (`wget` of the small
    /// [`FETCH_IMAGE`](crate::manifests::FETCH_IMAGE)) into an emptyDir mounted at the package directory, then
    /// makes it executable. Only `http://` is accepted: busybox's wget does not verify TLS certificates, and an
    /// unverified `https://` download of an executable would only look safer than plain HTTP.
    Url { url: String },
}

/// Everything needed to run one topology on a Kubernetes cluster. Build it with [`TopologySpec::new`] (which
/// sets `egret_home` to [`DEFAULT_EGRET_HOME`]) and change fields as needed.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologySpec {
    /// The topology's name: the StatefulSet's and the Service's (see [`check_topology_name`]).
    pub topology: String,
    /// The Egret cluster: which `conf/<cluster>/statemgr.yaml` the pods read, and a label.
    pub cluster: String,
    /// The Kubernetes namespace of every object.
    pub namespace: String,
    /// The container image with the `egret` binary on its `PATH` (see `deploy/Containerfile`).
    pub image: String,
    /// The packing plan: containers `1..=N` (container 0, the tmanager's, is not in it).
    pub packing_plan: PackingPlan,
    /// `EGRET_HOME` inside the pods (absolute).
    pub egret_home: String,
    /// The text of the cluster's `statemgr.yaml`, shipped in a ConfigMap.
    pub statemgr_yaml: String,
    /// How the topology binary reaches the pods.
    pub uploader: Uploader,
    /// The topology's secret (hex; `egret_transport::auth`), shipped in a Secret. Empty until set.
    pub secret: String,
    /// Where effectively-once checkpoints go: a volume every pod mounts at the same path (it must be
    /// ReadWriteMany), so that a task restored on another node finds its state.
    pub checkpoints: Option<CheckpointVolume>,
}

/// The shared volume of a cluster's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVolume {
    /// The PersistentVolumeClaim.
    pub claim: String,
    /// Where the pods mount it: the cluster's `egret.statefulstorage.localfs.root.path`.
    pub path: String,
}

impl TopologySpec {
    pub fn new(
        topology: impl Into<String>,
        cluster: impl Into<String>,
        namespace: impl Into<String>,
        image: impl Into<String>,
        packing_plan: PackingPlan,
        statemgr_yaml: impl Into<String>,
        uploader: Uploader,
    ) -> TopologySpec {
        TopologySpec {
            topology: topology.into(),
            cluster: cluster.into(),
            namespace: namespace.into(),
            image: image.into(),
            packing_plan,
            egret_home: DEFAULT_EGRET_HOME.to_string(),
            statemgr_yaml: statemgr_yaml.into(),
            uploader,
            secret: String::new(),
            checkpoints: None,
        }
    }

    /// The package directory inside the pods: `<egret_home>/packages/<cluster>/<topology>`.
    pub fn package_dir(&self) -> String {
        egret_scheduler::package_dir(Path::new(&self.egret_home), &self.cluster, &self.topology)
            .display()
            .to_string()
    }

    /// The binary's path inside the pods, which the CLI must record as the execution state's `package` (the
    /// executor starts the instances from it).
    pub fn package_path(&self) -> Result<String, K8sError> {
        let file = package_file_name(&self.topology, &self.uploader)?;
        Ok(format!("{}/{file}", self.package_dir()))
    }

    /// `<egret_home>/conf/<cluster>`: where the ConfigMap with `statemgr.yaml` is mounted, so the state manager
    /// finds it at `<egret_home>/conf/<cluster>/statemgr.yaml` as on any other cluster.
    pub fn conf_dir(&self) -> String {
        let file = StateManagerConfig::path(Path::new(&self.egret_home), &self.cluster);
        // The file's parent always exists: the path ends in conf/<cluster>/statemgr.yaml.
        file.parent().unwrap_or(Path::new("/")).display().to_string()
    }

    /// Checks every name and field, reporting the first problem. [`crate::manifests()`] calls it.
    pub fn validate(&self) -> Result<(), K8sError> {
        check_topology_name(&self.topology)?;
        check_cluster_name(&self.cluster)?;
        check_namespace(&self.namespace)?;
        let invalid = |reason: String| K8sError::InvalidSpec {
            topology: self.topology.clone(),
            reason,
        };
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "the image {:?} must be a non-empty reference without spaces",
                self.image
            )));
        }
        if !is_clean_absolute(&self.egret_home) {
            return Err(invalid(format!(
                "egret_home {:?} must be an absolute path without `..`",
                self.egret_home
            )));
        }
        check_container_ids(&self.topology, &self.packing_plan)?;
        let config = StateManagerConfig::parse(&self.statemgr_yaml).map_err(|reason| K8sError::StateManagerConfig {
            cluster: self.cluster.clone(),
            reason,
        })?;
        if config.kind == Kind::Local {
            return Err(K8sError::StateManagerConfig {
                cluster: self.cluster.clone(),
                reason: "the state manager is local files, which pods on different nodes cannot share; set \
                         egret.statemgr.kind: zookeeper and egret.statemgr.connection.string"
                    .into(),
            });
        }
        if let Uploader::SharedVolume { claim, .. } = &self.uploader {
            check_subdomain("claim", claim)?;
        }
        package_file_name(&self.topology, &self.uploader)?;
        Ok(())
    }
}

/// The binary's file name in the package directory: the last component of the uploader's path or URL, checked to
/// be a plain file name.
fn package_file_name(topology: &str, uploader: &Uploader) -> Result<String, K8sError> {
    let invalid = |reason: String| K8sError::InvalidSpec {
        topology: topology.to_string(),
        reason,
    };
    let last = match uploader {
        Uploader::BakedImage { path } => {
            if !is_clean_absolute(path) {
                return Err(invalid(format!(
                    "the baked binary's path {path:?} must be absolute (inside the image) without `..`"
                )));
            }
            path.rsplit('/').next().unwrap_or_default()
        }
        Uploader::SharedVolume { path, .. } => {
            let relative = !path.starts_with('/')
                && Path::new(path)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if path.is_empty() || !relative {
                return Err(invalid(format!(
                    "the binary's path on the volume {path:?} must be relative to the volume's root without `..`"
                )));
            }
            path.rsplit('/').next().unwrap_or_default()
        }
        Uploader::Url { url } => {
            let Some(rest) = url.strip_prefix("http://") else {
                return Err(invalid(format!(
                    "the package URL {url:?} must start with http:// (the fetching init container's wget does not \
                     verify TLS certificates; bake the binary into the image or use a shared volume instead)"
                )));
            };
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(format!("the package URL {url:?} contains spaces")));
            }
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            match path.split_once('/') {
                Some((_host, path)) => path.rsplit('/').next().unwrap_or_default(),
                None => "",
            }
        }
    };
    let plain = !last.is_empty()
        && last != "."
        && last != ".."
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !plain {
        return Err(invalid(format!(
            "the binary's file name {last:?} (the last part of {uploader:?}) must be non-empty and made of \
             A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(last.to_string())
}

fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Pod ordinals are container ids, so the packing plan's containers must be exactly `1..=N`: a gap would start a
/// pod whose executor finds no container of its ordinal.
fn check_container_ids(topology: &str, plan: &PackingPlan) -> Result<(), K8sError> {
    let mut ids: Vec<i32> = plan.containers.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    let expected: Vec<i32> = (1..=ids.len() as i32).collect();
    if ids.is_empty() || ids != expected {
        return Err(K8sError::InvalidSpec {
            topology: topology.to_string(),
            reason: format!(
                "the packing plan's container ids must be 1..=N (pod ordinals are container ids, 0 is the \
                 tmanager's); they are {ids:?}"
            ),
        });
    }
    Ok(())
}

/// A topology name must be a DNS-1035 label (the Service's name rule, stricter than the StatefulSet's): lowercase
/// letters, digits and `-`, starting with a letter and ending with a letter or digit, at most
/// [`MAX_TOPOLOGY_NAME_LEN`] characters. When lowercasing and turning `_` and `.` into `-` gives a valid name, the
/// error suggests it.
pub fn check_topology_name(name: &str) -> Result<(), K8sError> {
    let Err(reason) = dns_label(name, MAX_TOPOLOGY_NAME_LEN, true) else {
        return Ok(());
    };
    let suggestion: String = name
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let reason = if dns_label(&suggestion, MAX_TOPOLOGY_NAME_LEN, true).is_ok() {
        format!("{reason}; submit it under another name, such as {suggestion:?} (egret submit --name {suggestion})")
    } else {
        reason
    };
    Err(K8sError::InvalidName {
        what: "topology name",
        value: name.to_string(),
        reason,
    })
}

/// A cluster name becomes a label value and a directory name: 1 to 63 of `A-Z a-z 0-9 _ . -`, starting and ending
/// with a letter or digit.
pub fn check_cluster_name(name: &str) -> Result<(), K8sError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(K8sError::InvalidName {
            what: "cluster name",
            value: name.to_string(),
            reason: "a label value must be 1 to 63 of A-Z a-z 0-9 _ . -, starting and ending with a letter or digit"
                .into(),
        })
    }
}

/// A namespace is a DNS-1123 label.
pub fn check_namespace(name: &str) -> Result<(), K8sError> {
    dns_label(name, 63, false).map_err(|reason| K8sError::InvalidName {
        what: "namespace",
        value: name.to_string(),
        reason,
    })
}

/// A DNS-1123 subdomain (the rule for a PersistentVolumeClaim's name): dot-separated labels, at most 253
/// characters.
fn check_subdomain(what: &'static str, name: &str) -> Result<(), K8sError> {
    let reason = if name.len() > 253 {
        Some("it is longer than 253 characters".to_string())
    } else {
        name.split('.').find_map(|label| dns_label(label, 63, false).err())
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(K8sError::InvalidName {
            what,
            value: name.to_string(),
            reason,
        }),
    }
}

/// Checks a DNS label (RFC 1123; RFC 1035 when `letter_first`), saying what is wrong.
fn dns_label(name: &str, max_len: usize, letter_first: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > max_len {
        return Err(format!(
            "it is {} characters long; at most {max_len} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "it contains {c:?}; only lowercase letters a-z, digits and '-' are allowed"
        ));
    }
    if letter_first && !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("it must start with a lowercase letter".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}
