//! [`KubernetesScheduler`]: runs topologies through a Kubernetes API server.
//!
//! - **submit** server-side applies the ConfigMap, the Service and the StatefulSet (field manager `egret`, forced
//!   on conflicts: Egret owns these objects, and a field someone changed by hand, such as the replicas after a
//!   `kubectl scale`, must not stop a submit). Applying is idempotent: submitting again updates the objects in
//!   place, which is how a topology gets a new image or new resources.
//! - **kill** deletes the StatefulSet with **Background** propagation, then the Service and the ConfigMap. With
//!   Background the StatefulSet's name is free as soon as the call returns and the garbage collector deletes the
//!   pods after; with Foreground the StatefulSet would linger, marked for deletion, until its last pod is gone, and a
//!   submit of the same name in that window would patch the dying object and vanish with it. An object that is
//!   already gone is not an error, so kill can be repeated.
//! - **restart** deletes pods and lets the StatefulSet start them again under the same names, so each comes back as
//!   the same container.
//! - **update** merge-patches the StatefulSet's `spec.replicas`: scaling down removes the highest ordinals, which
//!   are the highest container ids, as a repacking that drops the last containers expects.
//!
//! Every call only asks the API server; none waits for pods to start or stop.

use either::Either;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::ResourceExt;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::K8sError;
use crate::manifests::{config_map_name, manifests, pod_name, pod_selector, secret_name};
use crate::spec::{TopologySpec, check_namespace, check_topology_name};

/// The field manager of every change Egret makes, as the API server records it in `managedFields`.
pub const FIELD_MANAGER: &str = "egret";

/// Runs topologies in one namespace of the cluster `client` talks to.
#[derive(Clone)]
pub struct KubernetesScheduler {
    client: Client,
    namespace: String,
}

impl KubernetesScheduler {
    /// A scheduler for `namespace` through `client` (`kube::Client::try_default()` in the CLI; a client over a
    /// mocked service in tests).
    pub fn new(client: Client, namespace: impl Into<String>) -> KubernetesScheduler {
        KubernetesScheduler {
            client,
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates the topology's objects, or updates them to match `spec`: the ConfigMap first (the pods mount it),
    /// then the Service, then the StatefulSet, which starts the pods. The spec's namespace must be this
    /// scheduler's.
    pub async fn submit(&self, spec: &TopologySpec) -> Result<(), K8sError> {
        if spec.namespace != self.namespace {
            return Err(K8sError::InvalidSpec {
                topology: spec.topology.clone(),
                reason: format!(
                    "its namespace {:?} is not the scheduler's namespace {:?}",
                    spec.namespace, self.namespace
                ),
            });
        }
        let m = manifests(spec)?;
        self.apply(&m.secret).await?;
        self.apply(&m.config_map).await?;
        self.apply(&m.service).await?;
        self.apply(&m.stateful_set).await?;
        Ok(())
    }

    async fn apply<K>(&self, object: &K) -> Result<(), K8sError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + std::fmt::Debug,
        K: Serialize + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let name = object.name_any();
        let action = format!("applying {} {}/{name}", K::kind(&Default::default()), self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api::<K>()
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| K8sError::from_kube(action, e))?;
        Ok(())
    }

    /// Deletes the topology's StatefulSet (Background propagation: see the module doc), Service and ConfigMap.
    /// Objects already gone are skipped, so this can be repeated; the first other error stops it.
    pub async fn kill(&self, topology: &str) -> Result<(), K8sError> {
        self.check(topology)?;
        self.delete_if_present::<StatefulSet>(topology).await?;
        self.delete_if_present::<Service>(topology).await?;
        self.delete_if_present::<ConfigMap>(&config_map_name(topology)).await?;
        self.delete_if_present::<Secret>(&secret_name(topology)).await?;
        Ok(())
    }

    async fn delete_if_present<K>(&self, name: &str) -> Result<(), K8sError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + std::fmt::Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let action = format!("deleting {} {}/{name}", K::kind(&Default::default()), self.namespace);
        match self.api::<K>().delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) => match K8sError::from_kube(action, e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Restarts container `container` (deletes pod `<topology>-<container>`), or every container of the topology
    /// (deletes its pods by label) when `None`; the StatefulSet starts them again. Returns the names of the deleted
    /// pods (none if the API server answers a delete of many with a bare Status, which names none). A container
    /// with no pod is an error (it is not in the topology), and so is a topology with no pods.
    pub async fn restart(&self, topology: &str, container: Option<u32>) -> Result<Vec<String>, K8sError> {
        self.check(topology)?;
        let pods = self.api::<Pod>();
        match container {
            Some(container) => {
                let name = pod_name(topology, container);
                let action = format!("restarting container {container} of {topology} (deleting pod {name})");
                pods.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(|e| K8sError::from_kube(action, e))?;
                Ok(vec![name])
            }
            None => {
                let selector = pod_selector(topology);
                let action = format!("restarting {topology} (deleting the pods {selector})");
                let deleted = pods
                    .delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| K8sError::from_kube(action, e))?;
                // The API server answers with the deleted pods (a bare Status would say nothing about which).
                match deleted {
                    Either::Left(list) if list.items.is_empty() => Err(K8sError::NoPods {
                        topology: topology.to_string(),
                        namespace: self.namespace.clone(),
                    }),
                    Either::Left(list) => Ok(list.items.iter().map(ResourceExt::name_any).collect()),
                    Either::Right(_) => Ok(Vec::new()),
                }
            }
        }
    }

    /// Sets the number of pods (containers, including container 0) of the topology. At least 2: container 0 and
    /// one container of instances (stopping a topology is `kill`). Only the count changes: a new packing plan whose
    /// containers need other resources is applied by `submit` with the new spec.
    pub async fn update(&self, topology: &str, replicas: u32) -> Result<(), K8sError> {
        self.check(topology)?;
        if replicas < 2 {
            return Err(K8sError::InvalidSpec {
                topology: topology.to_string(),
                reason: format!(
                    "{replicas} replicas: a topology needs at least 2 (container 0 and one container of instances)"
                ),
            });
        }
        let replicas = i32::try_from(replicas).map_err(|_| K8sError::InvalidSpec {
            topology: topology.to_string(),
            reason: format!("{replicas} replicas are more than a StatefulSet can hold"),
        })?;
        let action = format!(
            "scaling StatefulSet {}/{topology} to {replicas} replicas",
            self.namespace
        );
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.api::<StatefulSet>()
            .patch(topology, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| K8sError::from_kube(action, e))?;
        Ok(())
    }

    /// Refuses a bad name before the request is built, with the same rule as submit.
    fn check(&self, topology: &str) -> Result<(), K8sError> {
        check_namespace(&self.namespace)?;
        check_topology_name(topology)
    }
}
