//! The Kubernetes objects of one topology, as typed `k8s-openapi` values, and their YAML.
//!
//! - A **ConfigMap** `<topology>-statemgr` with the cluster's `statemgr.yaml`, mounted read-only as the directory
//!   `<egret_home>/conf/<cluster>` (a whole-directory mount, not `subPath`, so an edited ConfigMap reaches running
//!   pods).
//! - A headless **Service** `<topology>` (`clusterIP: None`, no ports): the StatefulSet's `serviceName`, which gives
//!   each pod a stable DNS name. The daemons do not use it to find each other; they register their addresses in
//!   the state manager.
//! - A **StatefulSet** `<topology>` with `replicas` = the packing plan's containers + 1, so that pod ordinal =
//!   container id and pod `<topology>-0` runs the tmanager. `podManagementPolicy: Parallel` starts and stops all
//!   pods at once (the default, OrderedReady, starts them one by one and waits for each). Tolerations of 10 s for
//!   `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable` move the pods of a failed node after 10 s
//!   instead of the default 300 s.
//!
//! A StatefulSet's pods are uniform, so every pod gets the resources of the largest container: for each of cpu,
//! memory and ephemeral storage, the largest `required` in the packing plan, as both request and limit (so the pods
//! are in the Guaranteed QoS class and are not evicted first under memory pressure). Container 0 runs only the
//! tmanager and a metricsmgr, so it reserves more than it uses; a second StatefulSet for it would save that at the
//! cost of two objects to keep in step.

use std::collections::BTreeMap;

use egret_proto::egret::PackingPlan;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements, Secret,
    SecretKeySelector, Service, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::K8sError;
use crate::spec::{TopologySpec, Uploader};

/// The label every Egret object carries, with the value [`APP`].
pub const LABEL_APP: &str = "app.kubernetes.io/name";
pub const APP: &str = "egret";
/// The label with the topology's name.
pub const LABEL_TOPOLOGY: &str = "egret.topology";
/// The label with the Egret cluster's name.
pub const LABEL_CLUSTER: &str = "egret.cluster";
/// The key of `statemgr.yaml` in the ConfigMap.
pub const STATEMGR_KEY: &str = egret_statemgr::config::STATEMGR_FILE;
/// The image of the init container that fetches a [`Uploader::Url`] package: busybox, for its `wget`.
pub const FETCH_IMAGE: &str = "busybox:1.37.0";
/// The executor's container in each pod.
pub const EXECUTOR_CONTAINER: &str = "executor";
/// How long a pod stays on a node that is not ready or unreachable before Kubernetes moves it.
pub const NODE_FAILURE_TOLERATION_SECONDS: i64 = 10;
/// How long a deleted pod's processes get between SIGTERM and SIGKILL. The executor has no graceful shutdown: it
/// dies at SIGTERM and its processes die with it (`PR_SET_PDEATHSIG`), so this only bounds a stuck pod and keeps
/// `restart` quick (a StatefulSet starts the new pod only once the old one is gone).
pub const TERMINATION_GRACE_SECONDS: i64 = 5;

const STATEMGR_VOLUME: &str = "statemgr";
const PACKAGE_VOLUME: &str = "package";
const CHECKPOINTS_VOLUME: &str = "checkpoints";

/// The objects of one topology. [`Manifests::to_yaml`] writes them for `kubectl apply -f`, in the order they are
/// applied: the ConfigMap first, since the pods cannot start without it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The topology's secret (`egret_transport::auth`), given to the executors as `EGRET_TOPOLOGY_SECRET`.
    pub secret: Secret,
    pub config_map: ConfigMap,
    pub service: Service,
    pub stateful_set: StatefulSet,
}

impl Manifests {
    /// One YAML document per object, separated by `---` lines.
    pub fn to_yaml(&self) -> Result<String, K8sError> {
        let docs = [
            to_yaml("Secret", &self.secret)?,
            to_yaml("ConfigMap", &self.config_map)?,
            to_yaml("Service", &self.service)?,
            to_yaml("StatefulSet", &self.stateful_set)?,
        ];
        Ok(docs.map(|d| format!("---\n{d}")).concat())
    }
}

fn to_yaml<T: serde::Serialize>(kind: &'static str, object: &T) -> Result<String, K8sError> {
    yaml_serde::to_string(object).map_err(|e| K8sError::Yaml {
        kind,
        reason: e.to_string(),
    })
}

/// The name of the Secret with the topology's secret.
pub fn secret_name(topology: &str) -> String {
    format!("{topology}-secret")
}

/// The key of the topology's secret in its Secret.
pub const SECRET_KEY: &str = "topology-secret";

/// The name of the ConfigMap with the topology's `statemgr.yaml`.
pub fn config_map_name(topology: &str) -> String {
    format!("{topology}-statemgr")
}

/// The name of the pod that runs `container` (its ordinal is the container id).
pub fn pod_name(topology: &str, container: u32) -> String {
    format!("{topology}-{container}")
}

/// The labels of every object and pod of the topology; they also select the pods, so they never change.
pub fn labels(topology: &str, cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_APP.to_string(), APP.to_string()),
        (LABEL_TOPOLOGY.to_string(), topology.to_string()),
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
    ])
}

/// The label selector of every pod of a topology (whatever its cluster: a namespace holds one topology of a name).
pub fn pod_selector(topology: &str) -> String {
    format!("{LABEL_APP}={APP},{LABEL_TOPOLOGY}={topology}")
}

/// Builds the topology's ConfigMap, Service and StatefulSet after checking the spec ([`TopologySpec::validate`]).
pub fn manifests(spec: &TopologySpec) -> Result<Manifests, K8sError> {
    spec.validate()?;
    let labels = labels(&spec.topology, &spec.cluster);
    let metadata = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(spec.namespace.clone()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let secret = Secret {
        metadata: metadata(secret_name(&spec.topology)),
        string_data: Some(BTreeMap::from([(SECRET_KEY.to_string(), spec.secret.clone())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };

    let config_map = ConfigMap {
        metadata: metadata(config_map_name(&spec.topology)),
        data: Some(BTreeMap::from([(STATEMGR_KEY.to_string(), spec.statemgr_yaml.clone())])),
        ..ConfigMap::default()
    };

    let service = Service {
        metadata: metadata(spec.topology.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(labels.clone()),
            // There is no readiness probe; publish every pod's address as soon as it has one.
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let replicas = spec.packing_plan.containers.len() + 1;
    let replicas = i32::try_from(replicas).map_err(|_| K8sError::InvalidSpec {
        topology: spec.topology.clone(),
        reason: format!("{replicas} containers are more than a StatefulSet can hold"),
    })?;
    let stateful_set = StatefulSet {
        metadata: metadata(spec.topology.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(spec.topology.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(spec)?),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };

    Ok(Manifests {
        secret,
        config_map,
        service,
        stateful_set,
    })
}

fn pod_spec(spec: &TopologySpec) -> Result<PodSpec, K8sError> {
    let package_dir = spec.package_dir();
    let package_path = spec.package_path()?;
    let statemgr_volume = Volume {
        name: STATEMGR_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&spec.topology),
            items: Some(vec![KeyToPath {
                key: STATEMGR_KEY.into(),
                path: STATEMGR_KEY.into(),
                ..KeyToPath::default()
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let statemgr_mount = VolumeMount {
        name: STATEMGR_VOLUME.into(),
        mount_path: spec.conf_dir(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let empty_dir = || Volume {
        name: PACKAGE_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    // The init container writes the package directory; the executor only reads it.
    let package_dir_mount = |read_only: bool| VolumeMount {
        name: PACKAGE_VOLUME.into(),
        mount_path: package_dir.clone(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };

    let (package_volume, package_mount, init_container) = match &spec.uploader {
        Uploader::BakedImage { path } => {
            let copy = Container {
                name: "stage-package".into(),
                image: Some(spec.image.clone()),
                command: Some(vec!["cp".into(), path.clone(), package_path.clone()]),
                volume_mounts: Some(vec![package_dir_mount(false)]),
                ..Container::default()
            };
            (empty_dir(), package_dir_mount(true), Some(copy))
        }
        Uploader::SharedVolume { claim, path } => {
            let volume = Volume {
                name: PACKAGE_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            };
            // Only the binary appears in the package directory, not the rest of the volume.
            let mount = VolumeMount {
                name: PACKAGE_VOLUME.into(),
                mount_path: package_path.clone(),
                sub_path: Some(path.clone()),
                read_only: Some(true),
                ..VolumeMount::default()
            };
            (volume, mount, None)
        }
        Uploader::Url { url } => {
            // The path and URL are passed as arguments ($1, $2), never pasted into the script, so no character of
            // theirs can change what the shell runs.
            let fetch = Container {
                name: "fetch-package".into(),
                image: Some(FETCH_IMAGE.into()),
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    r#"wget -q -O "$1" "$2" && chmod 0755 "$1""#.into(),
                    "fetch-package".into(),
                    package_path.clone(),
                    url.clone(),
                ]),
                volume_mounts: Some(vec![package_dir_mount(false)]),
                ..Container::default()
            };
            (empty_dir(), package_dir_mount(true), Some(fetch))
        }
    };

    let executor = Container {
        name: EXECUTOR_CONTAINER.into(),
        image: Some(spec.image.clone()),
        command: Some(executor_command(spec)),
        env: Some(vec![
            EnvVar {
                name: "EGRET_HOME".into(),
                value: Some(spec.egret_home.clone()),
                ..EnvVar::default()
            },
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
            EnvVar {
                name: egret_transport::auth::SECRET_ENV.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name(&spec.topology),
                        key: SECRET_KEY.into(),
                        ..SecretKeySelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        ]),
        resources: resources(&spec.packing_plan),
        volume_mounts: Some(
            [statemgr_mount, package_mount]
                .into_iter()
                .chain(spec.checkpoints.as_ref().map(|c| VolumeMount {
                    name: CHECKPOINTS_VOLUME.into(),
                    mount_path: c.path.clone(),
                    ..VolumeMount::default()
                }))
                .collect(),
        ),
        ..Container::default()
    };

    Ok(PodSpec {
        init_containers: init_container.map(|c| vec![c]),
        containers: vec![executor],
        volumes: Some(
            [statemgr_volume, package_volume]
                .into_iter()
                .chain(spec.checkpoints.as_ref().map(|c| Volume {
                    name: CHECKPOINTS_VOLUME.into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: c.claim.clone(),
                        read_only: Some(false),
                    }),
                    ..Volume::default()
                }))
                .collect(),
        ),
        tolerations: Some(node_failure_tolerations()),
        // The executor must not be PID 1: PID 1 ignores SIGTERM unless it handles it (the executor does not), and
        // must reap orphaned processes. With a shared process namespace the pod's pause process is PID 1.
        share_process_namespace: Some(true),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        ..PodSpec::default()
    })
}

/// `egret executor --cluster <cluster> --topology <topology> --container-from-pod-name --host $(POD_IP)`: the
/// executor takes its container id from the ordinal at the end of `POD_NAME`, and its daemons listen on, and
/// advertise, the pod's IP (Kubernetes expands `$(POD_IP)` from the container's environment).
pub fn executor_command(spec: &TopologySpec) -> Vec<String> {
    [
        "egret",
        "executor",
        "--cluster",
        &spec.cluster,
        "--topology",
        &spec.topology,
        "--container-from-pod-name",
        "--host",
        "$(POD_IP)",
    ]
    .map(String::from)
    .to_vec()
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Evict the pods of a failed node after [`NODE_FAILURE_TOLERATION_SECONDS`] rather than Kubernetes' default 300 s:
/// a topology with a missing container is stalled (back pressure), so its pods should move soon.
fn node_failure_tolerations() -> Vec<Toleration> {
    ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .map(|key| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(NODE_FAILURE_TOLERATION_SECONDS),
            ..Toleration::default()
        })
        .to_vec()
}

/// The largest `required` of any container, per resource, as requests equal to limits (see the module doc). A
/// resource no container requires is left out.
pub fn resources(plan: &PackingPlan) -> Option<ResourceRequirements> {
    let required = plan.containers.iter().filter_map(|c| c.required.as_ref());
    let cpu = required.clone().map(|r| r.cpu).fold(0.0, f64::max);
    let ram = required.clone().map(|r| r.ram_bytes).max().unwrap_or(0);
    let disk = required.map(|r| r.disk_bytes).max().unwrap_or(0);
    let mut quantities = BTreeMap::new();
    if cpu.is_finite() && cpu > 0.0 {
        // Whole millicores, rounded up so that the pod never gets less than the plan asks for.
        quantities.insert(
            "cpu".to_string(),
            Quantity(format!("{}m", (cpu * 1000.0).ceil() as u64)),
        );
    }
    if ram > 0 {
        quantities.insert("memory".to_string(), bytes_quantity(ram));
    }
    if disk > 0 {
        quantities.insert("ephemeral-storage".to_string(), bytes_quantity(disk));
    }
    if quantities.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        limits: Some(quantities.clone()),
        requests: Some(quantities),
        ..ResourceRequirements::default()
    })
}

/// Bytes as `<n>Mi` when a whole number of MiB (easier to read), else as plain bytes.
fn bytes_quantity(bytes: i64) -> Quantity {
    const MI: i64 = 1024 * 1024;
    if bytes % MI == 0 {
        Quantity(format!("{}Mi", bytes / MI))
    } else {
        Quantity(bytes.to_string())
    }
}
