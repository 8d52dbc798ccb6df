//! The Kubernetes scheduler as the CLI uses it: [`KubernetesBackend`] implements `egret_scheduler::Scheduler` from a
//! cluster's `scheduler.yaml` keys, reads what it needs from the state manager, and drives [`KubernetesScheduler`]
//! on a runtime of its own (the CLI is synchronous).
//!
//! ```yaml
//! egret.scheduler.kind: kubernetes
//! egret.kubernetes.namespace: streaming               # default: default
//! egret.kubernetes.image: registry.example/egret:0.1  # required: an image with `egret` (deploy/Containerfile)
//! egret.kubernetes.egret.home: /var/lib/egret         # EGRET_HOME in the pods (default)
//! egret.kubernetes.uploader: baked                    # baked (default) | shared-volume | url
//! egret.kubernetes.uploader.dir: /opt/topologies      # baked: where the image holds topology binaries;
//!                                                     # shared-volume: where they are on the volume
//! egret.kubernetes.uploader.claim: topologies         # shared-volume: the PersistentVolumeClaim
//! egret.kubernetes.uploader.url: http://files.internal/egret/   # url: fetched from <url><binary file name>
//! egret.kubernetes.checkpoints.claim: egret-checkpoints  # effectively-once: a ReadWriteMany claim, mounted at
//!                                                     # statemgr.yaml's egret.statefulstorage.localfs.root.path
//! ```
//!
//! The client comes from the usual places (`KUBECONFIG`, `~/.kube/config`, or the pod's service account), made on
//! first use, so `egret submit --dry-run` needs no cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use egret_proto::egret::PackingPlan;
use egret_scheduler::config::SchedulerConfig;
use egret_scheduler::{Scheduler, SchedulerError};
use egret_statemgr::StateManagerConfig;

use crate::spec::{CheckpointVolume, DEFAULT_EGRET_HOME, TopologySpec, Uploader};
use crate::{K8sError, KubernetesScheduler, manifests};

/// How the cluster gets topology binaries into its pods; the binary's own file name completes the path or URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UploaderSetting {
    Baked { dir: String },
    SharedVolume { claim: String, dir: String },
    Url { base: String },
}

/// A Kubernetes cluster's `scheduler.yaml` keys, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    pub image: String,
    pub egret_home: String,
    uploader: UploaderSetting,
    /// The ReadWriteMany claim for checkpoints, if the cluster runs effectively-once topologies.
    pub checkpoints_claim: Option<String>,
}

impl Settings {
    /// Reads and checks the keys (every `egret.kubernetes.*` key; an unknown one is refused, so a typo is seen).
    pub fn from_keys(keys: &BTreeMap<String, String>) -> Result<Settings, String> {
        const KNOWN: [&str; 8] = [
            "egret.kubernetes.namespace",
            "egret.kubernetes.image",
            "egret.kubernetes.egret.home",
            "egret.kubernetes.uploader",
            "egret.kubernetes.uploader.dir",
            "egret.kubernetes.uploader.claim",
            "egret.kubernetes.uploader.url",
            "egret.kubernetes.checkpoints.claim",
        ];
        if let Some(unknown) = keys.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("unknown key {unknown} (known: {})", KNOWN.join(", ")));
        }
        let get = |k: &str| keys.get(k).cloned();
        let need = |k: &str| get(k).ok_or(format!("{k} is required"));
        let uploader = match get("egret.kubernetes.uploader").as_deref().unwrap_or("baked") {
            "baked" => UploaderSetting::Baked {
                dir: need("egret.kubernetes.uploader.dir")?,
            },
            "shared-volume" => UploaderSetting::SharedVolume {
                claim: need("egret.kubernetes.uploader.claim")?,
                dir: get("egret.kubernetes.uploader.dir").unwrap_or_default(),
            },
            "url" => UploaderSetting::Url {
                base: need("egret.kubernetes.uploader.url")?,
            },
            other => {
                return Err(format!(
                    "egret.kubernetes.uploader is {other:?}: use baked, shared-volume or url"
                ));
            }
        };
        Ok(Settings {
            namespace: get("egret.kubernetes.namespace").unwrap_or_else(|| "default".into()),
            image: need("egret.kubernetes.image")?,
            egret_home: get("egret.kubernetes.egret.home").unwrap_or_else(|| DEFAULT_EGRET_HOME.into()),
            uploader,
            checkpoints_claim: get("egret.kubernetes.checkpoints.claim"),
        })
    }

    fn uploader(&self, binary_file: &str) -> Uploader {
        let join = |dir: &str| {
            if dir.is_empty() {
                binary_file.to_string()
            } else {
                format!("{}/{binary_file}", dir.trim_end_matches('/'))
            }
        };
        match &self.uploader {
            UploaderSetting::Baked { dir } => Uploader::BakedImage { path: join(dir) },
            UploaderSetting::SharedVolume { claim, dir } => Uploader::SharedVolume {
                claim: claim.clone(),
                path: join(dir),
            },
            UploaderSetting::Url { base } => Uploader::Url {
                url: format!("{base}{}{binary_file}", if base.ends_with('/') { "" } else { "/" }),
            },
        }
    }
}

/// The Kubernetes scheduler of one cluster, for the CLI.
pub struct KubernetesBackend {
    egret_home: PathBuf,
    cluster: String,
    settings: Settings,
    runtime: tokio::runtime::Runtime,
    scheduler: OnceLock<KubernetesScheduler>,
}

fn backend_error(e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Backend(e.to_string())
}

impl KubernetesBackend {
    /// The backend of `cluster` as its `scheduler.yaml` (already read into `config`) says.
    pub fn new(egret_home: &Path, cluster: &str, config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let settings = Settings::from_keys(&config.keys).map_err(|reason| SchedulerError::Config {
            path: SchedulerConfig::path(egret_home, cluster),
            reason,
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SchedulerError::io("starting the Kubernetes client's runtime"))?;
        Ok(KubernetesBackend {
            egret_home: egret_home.to_path_buf(),
            cluster: cluster.to_string(),
            settings,
            runtime,
            scheduler: OnceLock::new(),
        })
    }

    /// The topology's spec: the packing plan, the cluster's `statemgr.yaml` (which must name a state manager every
    /// pod reaches: ZooKeeper), and where the binary comes from.
    pub fn spec(&self, topology: &str, plan: &PackingPlan, binary_file: &str) -> Result<TopologySpec, SchedulerError> {
        let statemgr = StateManagerConfig::path(&self.egret_home, &self.cluster);
        let statemgr_yaml = std::fs::read_to_string(&statemgr)
            .map_err(SchedulerError::io(format!("reading {}", statemgr.display())))?;
        let mut spec = TopologySpec::new(
            topology,
            &self.cluster,
            &self.settings.namespace,
            &self.settings.image,
            plan.clone(),
            statemgr_yaml,
            self.settings.uploader(binary_file),
        );
        spec.egret_home = self.settings.egret_home.clone();
        let root = StateManagerConfig::load(&self.egret_home, &self.cluster)?.checkpoints_root;
        spec.checkpoints = match (&self.settings.checkpoints_claim, root) {
            (Some(claim), Some(path)) => Some(CheckpointVolume {
                claim: claim.clone(),
                path,
            }),
            (Some(_), None) => {
                return Err(SchedulerError::Backend(
                    "egret.kubernetes.checkpoints.claim needs egret.statefulstorage.localfs.root.path in \
                     statemgr.yaml: where the pods mount it"
                        .into(),
                ));
            }
            (None, _) => None,
        };
        spec.validate().map_err(backend_error)?;
        Ok(spec)
    }

    fn scheduler(&self) -> Result<&KubernetesScheduler, SchedulerError> {
        if let Some(s) = self.scheduler.get() {
            return Ok(s);
        }
        let client = self
            .runtime
            .block_on(kube::Client::try_default())
            .map_err(|e| SchedulerError::Backend(format!("no Kubernetes client: {e}")))?;
        Ok(self
            .scheduler
            .get_or_init(|| KubernetesScheduler::new(client, &self.settings.namespace)))
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T, K8sError>>) -> Result<T, SchedulerError> {
        self.runtime.block_on(f).map_err(backend_error)
    }
}

impl Scheduler for KubernetesBackend {
    fn launch(&self, topology: &str) -> Result<String, SchedulerError> {
        let state = egret_statemgr::open(&self.egret_home, &self.cluster)?;
        let plan = state
            .get_packing_plan(topology)?
            .ok_or_else(|| SchedulerError::Missing(topology.to_string(), "packing plan"))?;
        let exec = state
            .get_execution_state(topology)?
            .ok_or_else(|| SchedulerError::Missing(topology.to_string(), "execution state"))?;
        let file = Path::new(&exec.package)
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| SchedulerError::Missing(topology.to_string(), "package file name"))?;
        let mut spec = self.spec(topology, &plan, file)?;
        // Effectively-once restores a task's state wherever its pod runs next: the checkpoints must be shared.
        let effectively_once = state.get_topology(topology)?.is_some_and(|t| {
            t.topology_config.iter().flat_map(|c| &c.kvs).any(|kv| {
                kv.key == egret_api::keys::RELIABILITY_MODE
                    && kv.value.as_deref() == Some(egret_api::ReliabilityMode::EffectivelyOnce.as_str())
            })
        });
        if effectively_once && spec.checkpoints.is_none() {
            return Err(SchedulerError::Backend(format!(
                "{topology} is effectively-once: its checkpoints must be on a volume every pod shares; set \
                 egret.kubernetes.checkpoints.claim (a ReadWriteMany claim) in scheduler.yaml and \
                 egret.statefulstorage.localfs.root.path in statemgr.yaml"
            )));
        }
        spec.secret = egret_transport::auth::TopologySecret::load(&self.egret_home, &self.cluster, topology)
            .map_err(backend_error)?
            .to_hex();
        let scheduler = self.scheduler()?;
        self.block_on(scheduler.submit(&spec))?;
        Ok(format!(
            "applied StatefulSet {topology} ({} pods), its headless Service, ConfigMap and Secret in namespace {}",
            plan.containers.len() + 1,
            self.settings.namespace
        ))
    }

    fn kill(&self, topology: &str) -> Result<String, SchedulerError> {
        let scheduler = self.scheduler()?;
        self.block_on(scheduler.kill(topology))?;
        Ok(format!(
            "deleted StatefulSet {topology}, its Service, ConfigMap and Secret in namespace {}",
            self.settings.namespace
        ))
    }

    fn restart(&self, topology: &str, containers: &[i32]) -> Result<String, SchedulerError> {
        let scheduler = self.scheduler()?;
        let mut deleted = Vec::new();
        for &c in containers {
            let c = u32::try_from(c).map_err(|_| SchedulerError::UnknownContainer(c))?;
            deleted.extend(self.block_on(scheduler.restart(topology, Some(c)))?);
        }
        Ok(format!(
            "deleted pod(s) {}: the StatefulSet starts them again",
            deleted.join(", ")
        ))
    }

    /// Scales the StatefulSet to the plan's highest container id + 1 (pod ordinal = container id). A container
    /// removed below the highest keeps its pod, whose executor finds no container in the plan and exits.
    fn update(&self, topology: &str, plan: &PackingPlan) -> Result<String, SchedulerError> {
        let highest = plan.containers.iter().map(|c| c.id).max().unwrap_or(1).max(1);
        let replicas = u32::try_from(highest).map_err(|_| SchedulerError::UnknownContainer(highest))? + 1;
        let scheduler = self.scheduler()?;
        self.block_on(scheduler.update(topology, replicas))?;
        Ok(format!("scaled StatefulSet {topology} to {replicas} pods"))
    }

    fn dry_run(&self, topology: &str, plan: &PackingPlan, binary_file: &str) -> Result<String, SchedulerError> {
        let mut spec = self.spec(topology, plan, binary_file)?;
        spec.secret = "(made by egret submit)".into();
        manifests(&spec).and_then(|m| m.to_yaml()).map_err(backend_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kubernetes_settings_fill_in_the_binarys_file_name() {
        let s = Settings::from_keys(&keys(&[
            ("egret.kubernetes.image", "egret:1"),
            ("egret.kubernetes.uploader.dir", "/opt/topologies/"),
        ]))
        .unwrap();
        assert_eq!(s.namespace, "default");
        assert_eq!(
            s.uploader("wc"),
            Uploader::BakedImage {
                path: "/opt/topologies/wc".into()
            }
        );
        let url = Settings::from_keys(&keys(&[
            ("egret.kubernetes.image", "egret:1"),
            ("egret.kubernetes.uploader", "url"),
            ("egret.kubernetes.uploader.url", "http://files/egret"),
        ]))
        .unwrap();
        assert_eq!(
            url.uploader("wc"),
            Uploader::Url {
                url: "http://files/egret/wc".into()
            }
        );
    }

    #[test]
    fn kubernetes_settings_refuse_what_they_cannot_use() {
        let no_image = Settings::from_keys(&keys(&[("egret.kubernetes.uploader.dir", "/x")])).unwrap_err();
        assert!(no_image.contains("egret.kubernetes.image is required"), "{no_image}");
        let typo = Settings::from_keys(&keys(&[("egret.kubernetes.imgae", "x")])).unwrap_err();
        assert!(typo.contains("unknown key egret.kubernetes.imgae"), "{typo}");
        let kind = Settings::from_keys(&keys(&[
            ("egret.kubernetes.image", "x"),
            ("egret.kubernetes.uploader", "ftp"),
        ]))
        .unwrap_err();
        assert!(kind.contains("ftp"), "{kind}");
    }
}
