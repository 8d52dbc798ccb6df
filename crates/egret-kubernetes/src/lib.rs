//! Egret on Kubernetes: a topology runs as **one StatefulSet** whose pod ordinals are the container ids (pod
//! `<topology>-0` is container 0, the tmanager's; pods `<topology>-1` … `<topology>-N` are the packing plan's
//! containers), behind a headless Service, with the cluster's `statemgr.yaml` in a ConfigMap.
//!
//! - [`spec`]: [`TopologySpec`], what the CLI hands over (names, image, packing plan, how the topology binary
//!   reaches the pods), and the name rules it is checked against.
//! - [`manifests`](mod@manifests): the typed objects ([`manifests()`]) and their YAML for `kubectl apply -f`.
//! - [`scheduler`]: [`KubernetesScheduler`], which submits, kills, restarts and updates topologies through the API
//!   server.
//!
//! One executor runs in each pod and takes its container id from the ordinal suffix of its pod name, so a pod
//! that Kubernetes starts again (after a crash, a node failure or `restart`) comes back as the same container. The
//! tmanager and the stmgrs find each other through the state manager (ZooKeeper), never through Kubernetes: the
//! headless Service exists because a StatefulSet needs one (`serviceName`), and gives every pod a stable DNS name.
//!
//! This crate never talks to the state manager and never packs: the CLI writes the topology's state (with
//! [`TopologySpec::package_path`] as the execution state's package) and calls this crate to start the pods.

pub mod backend;
pub mod manifests;
pub mod scheduler;
pub mod spec;

pub use backend::KubernetesBackend;
pub use manifests::{Manifests, manifests};
pub use scheduler::KubernetesScheduler;
pub use spec::{CheckpointVolume, DEFAULT_EGRET_HOME, TopologySpec, Uploader};

/// Everything that can go wrong here. Invalid input is refused before anything is sent to the API server; an API
/// error carries the server's own message.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// A name Kubernetes would refuse (or that would break a pod's name or labels), with the rule it breaks.
    #[error("{what} {value:?} cannot be used on Kubernetes: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A topology spec that cannot run as a StatefulSet.
    #[error("topology {topology}: {reason}")]
    InvalidSpec { topology: String, reason: String },
    /// The cluster's `statemgr.yaml` does not parse, or names a state manager pods cannot share.
    #[error("cluster {cluster}'s statemgr.yaml: {reason}")]
    StateManagerConfig { cluster: String, reason: String },
    /// The API server refused a request.
    #[error("{action}: the API server answered {code} {reason}: {message}")]
    Api {
        action: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// `restart` of a whole topology found no pod to delete.
    #[error("topology {topology} has no pods in namespace {namespace}")]
    NoPods { topology: String, namespace: String },
    /// The API server could not be reached, or its answer could not be read.
    #[error("{action}: {source}")]
    Client {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// Serializing a manifest failed.
    #[error("writing the {kind} as YAML: {reason}")]
    Yaml { kind: &'static str, reason: String },
}

impl K8sError {
    /// Wraps a `kube` error from doing `action`, keeping the API server's status (code, reason, message) apart so
    /// that the CLI can show the server's own words.
    pub(crate) fn from_kube(action: impl Into<String>, error: kube::Error) -> K8sError {
        let action = action.into();
        match error {
            kube::Error::Api(status) => K8sError::Api {
                action,
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            source => K8sError::Client { action, source },
        }
    }

    /// Whether what was asked for does not exist (the API server's 404, or a topology without pods).
    pub fn is_not_found(&self) -> bool {
        matches!(self, K8sError::Api { code: 404, .. } | K8sError::NoPods { .. })
    }
}
