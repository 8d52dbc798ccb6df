//! The Kubernetes scheduler's tests: the manifests it builds (checked field by field, and against the API's JSON
//! schemas offline with `kubernetes-validate`), and the exact requests `KubernetesScheduler` sends, against a mocked
//! API server (a `tower` service that records each request and answers like the API server would).

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use egret_kubernetes::manifests::{FETCH_IMAGE, Manifests};
use egret_kubernetes::{K8sError, KubernetesScheduler, TopologySpec, Uploader, manifests};
use egret_proto::egret::{ContainerPlan, InstancePlan, PackingPlan, Resource};
use http::{Request, Response};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service};
use kube::client::Body;
use serde_json::{Value, json};

const MIB: i64 = 1024 * 1024;
const ZOOKEEPER: &str = "egret.statemgr.kind: zookeeper\negret.statemgr.connection.string: zk-0.zk:2181\n";

/// A packing plan with containers 1..=N, each with one instance and the given `(cpu, ram_bytes, disk_bytes)`.
fn plan(required: &[(f64, i64, i64)]) -> PackingPlan {
    PackingPlan {
        id: "plan-1".into(),
        algorithm: "round-robin".into(),
        containers: required
            .iter()
            .enumerate()
            .map(|(i, &(cpu, ram_bytes, disk_bytes))| ContainerPlan {
                id: i as i32 + 1,
                instances: vec![InstancePlan {
                    component: "word".into(),
                    task_id: i as i32 + 1,
                    component_index: i as i32,
                    resource: None,
                }],
                required: Some(Resource {
                    cpu,
                    ram_bytes,
                    disk_bytes,
                }),
            })
            .collect(),
    }
}

/// word-count on cluster `prod`, namespace `egret`, three containers of which none is the largest in every resource.
fn spec(uploader: Uploader) -> TopologySpec {
    TopologySpec::new(
        "word-count",
        "prod",
        "egret",
        "registry.example/egret:0.1.0",
        plan(&[
            (1.5, 512 * MIB, 1024 * MIB),
            (2.25, 256 * MIB, 2048 * MIB),
            (1.0, 1024 * MIB, 512 * MIB),
        ]),
        ZOOKEEPER,
        uploader,
    )
    .with_secret("5ec7e7")
}

trait WithSecret {
    fn with_secret(self, secret: &str) -> Self;
}

impl WithSecret for TopologySpec {
    fn with_secret(mut self, secret: &str) -> Self {
        self.secret = secret.into();
        self
    }
}

fn baked() -> Uploader {
    Uploader::BakedImage {
        path: "/opt/topologies/word-count".into(),
    }
}

fn pod_spec(m: &Manifests) -> &PodSpec {
    let template = &m.stateful_set.spec.as_ref().expect("a StatefulSet spec").template;
    template.spec.as_ref().expect("a pod spec")
}

fn executor(m: &Manifests) -> &Container {
    &pod_spec(m).containers[0]
}

/// `name: mount path (read-only?, subPath)` for each of the container's mounts.
fn mounts(c: &Container) -> Vec<String> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|v| {
            format!(
                "{}: {} (read_only={:?}, sub_path={:?})",
                v.name, v.mount_path, v.read_only, v.sub_path
            )
        })
        .collect()
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializes")
}

// ------------------------------------------------------------------------------------------------------------------
// (a) The manifests.

#[test]
fn kubernetes_manifests_for_a_three_container_topology() {
    let m = manifests(&spec(baked())).expect("valid spec");
    let labels = json!({"app.kubernetes.io/name": "egret", "egret.topology": "word-count", "egret.cluster": "prod"});

    // ConfigMap: the cluster's statemgr.yaml under its file name.
    assert_eq!(
        to_json(&m.config_map),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "word-count-statemgr", "namespace": "egret", "labels": labels},
            "data": {"statemgr.yaml": ZOOKEEPER},
        })
    );

    // Headless Service selecting the topology's pods.
    assert_eq!(
        to_json(&m.service),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "word-count", "namespace": "egret", "labels": labels},
            "spec": {"clusterIP": "None", "selector": labels, "publishNotReadyAddresses": true},
        })
    );

    // StatefulSet: containers 1..=3 plus container 0, started in parallel.
    let sts = to_json(&m.stateful_set);
    assert_eq!(sts["apiVersion"], "apps/v1");
    assert_eq!(sts["kind"], "StatefulSet");
    assert_eq!(sts["metadata"]["name"], "word-count");
    assert_eq!(sts["metadata"]["labels"], labels);
    assert_eq!(sts["spec"]["replicas"], 4);
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(sts["spec"]["serviceName"], "word-count");
    assert_eq!(sts["spec"]["selector"], json!({"matchLabels": labels}));
    assert_eq!(sts["spec"]["template"]["metadata"]["labels"], labels);
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
        ])
    );
    assert_eq!(pod["shareProcessNamespace"], true);
    assert_eq!(pod["terminationGracePeriodSeconds"], 5);

    let c = executor(&m);
    assert_eq!(pod_spec(&m).containers.len(), 1);
    assert_eq!(c.name, "executor");
    assert_eq!(c.image.as_deref(), Some("registry.example/egret:0.1.0"));
    assert_eq!(
        c.command.as_deref().expect("a command").join(" "),
        "egret executor --cluster prod --topology word-count --container-from-pod-name --host $(POD_IP)"
    );
    assert_eq!(
        to_json(&c.env),
        json!([
            {"name": "EGRET_HOME", "value": "/var/lib/egret"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "EGRET_TOPOLOGY_SECRET",
             "valueFrom": {"secretKeyRef": {"name": "word-count-secret", "key": "topology-secret"}}},
        ])
    );
    // The topology's secret travels in a Secret, never in the pod spec.
    assert_eq!(to_json(&m.secret.string_data), json!({"topology-secret": "5ec7e7"}));
    assert_eq!(m.secret.metadata.name.as_deref(), Some("word-count-secret"));
    // The largest required of each resource (cpu of container 2, memory of 3, disk of 2), requests = limits.
    let quantities = json!({"cpu": "2250m", "memory": "1024Mi", "ephemeral-storage": "2048Mi"});
    assert_eq!(
        to_json(&c.resources),
        json!({"limits": quantities, "requests": quantities})
    );

    // statemgr.yaml appears at <egret_home>/conf/<cluster>/statemgr.yaml.
    assert_eq!(
        pod["volumes"][0],
        json!({"name": "statemgr", "configMap": {"name": "word-count-statemgr",
            "items": [{"key": "statemgr.yaml", "path": "statemgr.yaml"}]}})
    );
    assert_eq!(
        mounts(c)[0],
        "statemgr: /var/lib/egret/conf/prod (read_only=Some(true), sub_path=None)"
    );
}

#[test]
fn kubernetes_resources_round_up_and_omit_what_no_container_requires() {
    let mut s = spec(baked());
    s.packing_plan = plan(&[(0.0001, 1_000_000, 0), (0.5, 3 * MIB, 0)]);
    let m = manifests(&s).expect("valid spec");
    let quantities = json!({"cpu": "500m", "memory": "3Mi"});
    assert_eq!(
        to_json(&executor(&m).resources),
        json!({"limits": quantities, "requests": quantities})
    );
    s.packing_plan = plan(&[(1.0001, 1_000_001, 0)]);
    let m = manifests(&s).expect("valid spec");
    let quantities = json!({"cpu": "1001m", "memory": "1000001"});
    assert_eq!(
        to_json(&executor(&m).resources),
        json!({"limits": quantities, "requests": quantities})
    );
    assert_eq!(m.stateful_set.spec.and_then(|s| s.replicas), Some(2));
}

#[test]
fn kubernetes_baked_image_is_copied_into_the_package_directory() {
    let s = spec(baked());
    assert_eq!(
        s.package_path().expect("valid"),
        "/var/lib/egret/packages/prod/word-count/word-count"
    );
    let m = manifests(&s).expect("valid spec");
    let pod = pod_spec(&m);
    let init = pod.init_containers.as_deref().expect("an init container");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, "stage-package");
    assert_eq!(init[0].image.as_deref(), Some("registry.example/egret:0.1.0"));
    assert_eq!(
        init[0].command.as_deref().expect("a command"),
        [
            "cp",
            "/opt/topologies/word-count",
            "/var/lib/egret/packages/prod/word-count/word-count"
        ]
    );
    assert_eq!(
        mounts(&init[0]),
        ["package: /var/lib/egret/packages/prod/word-count (read_only=None, sub_path=None)"]
    );
    assert_eq!(
        to_json(&pod.volumes.as_ref().expect("volumes")[1]),
        json!({"name": "package", "emptyDir": {}})
    );
    assert_eq!(
        mounts(executor(&m))[1],
        "package: /var/lib/egret/packages/prod/word-count (read_only=Some(true), sub_path=None)"
    );
}

#[test]
fn kubernetes_shared_volume_mounts_the_binary_read_only() {
    let s = spec(Uploader::SharedVolume {
        claim: "egret-packages".into(),
        path: "prod/word-count/wc-bin".into(),
    });
    assert_eq!(
        s.package_path().expect("valid"),
        "/var/lib/egret/packages/prod/word-count/wc-bin"
    );
    let m = manifests(&s).expect("valid spec");
    let pod = pod_spec(&m);
    assert_eq!(pod.init_containers, None);
    assert_eq!(
        to_json(&pod.volumes.as_ref().expect("volumes")[1]),
        json!({"name": "package", "persistentVolumeClaim": {"claimName": "egret-packages", "readOnly": true}})
    );
    assert_eq!(
        mounts(executor(&m))[1],
        "package: /var/lib/egret/packages/prod/word-count/wc-bin (read_only=Some(true), \
         sub_path=Some(\"prod/word-count/wc-bin\"))"
    );
}

#[test]
fn kubernetes_url_is_fetched_by_an_init_container() {
    let s = spec(Uploader::Url {
        url: "http://packages.egret.svc:8080/prod/word-count?rev=3".into(),
    });
    assert_eq!(
        s.package_path().expect("valid"),
        "/var/lib/egret/packages/prod/word-count/word-count"
    );
    let m = manifests(&s).expect("valid spec");
    let pod = pod_spec(&m);
    let init = pod.init_containers.as_deref().expect("an init container");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, "fetch-package");
    assert_eq!(init[0].image.as_deref(), Some(FETCH_IMAGE));
    assert_eq!(
        init[0].command.as_deref().expect("a command"),
        [
            "sh",
            "-c",
            r#"wget -q -O "$1" "$2" && chmod 0755 "$1""#,
            "fetch-package",
            "/var/lib/egret/packages/prod/word-count/word-count",
            "http://packages.egret.svc:8080/prod/word-count?rev=3",
        ]
    );
    assert_eq!(
        mounts(&init[0]),
        ["package: /var/lib/egret/packages/prod/word-count (read_only=None, sub_path=None)"]
    );
    assert_eq!(
        to_json(&pod.volumes.as_ref().expect("volumes")[1]),
        json!({"name": "package", "emptyDir": {}})
    );
    assert_eq!(
        mounts(executor(&m))[1],
        "package: /var/lib/egret/packages/prod/word-count (read_only=Some(true), sub_path=None)"
    );
}

#[test]
fn kubernetes_egret_home_moves_every_path() {
    let mut s = spec(baked());
    s.egret_home = "/srv/egret".into();
    let m = manifests(&s).expect("valid spec");
    let c = executor(&m);
    assert_eq!(
        to_json(&c.env.as_ref().expect("env")[0]),
        json!({"name": "EGRET_HOME", "value": "/srv/egret"})
    );
    assert_eq!(
        mounts(c),
        [
            "statemgr: /srv/egret/conf/prod (read_only=Some(true), sub_path=None)",
            "package: /srv/egret/packages/prod/word-count (read_only=Some(true), sub_path=None)",
        ]
    );
}

/// Each bad spec is refused with an error that says what is wrong.
#[test]
fn kubernetes_bad_names_and_specs_are_refused() {
    let check = |change: &dyn Fn(&mut TopologySpec), expect: &str| {
        let mut s = spec(baked());
        change(&mut s);
        match manifests(&s) {
            Ok(_) => panic!("accepted a spec that should fail with {expect:?}: {s:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(expect), "{message:?} does not contain {expect:?}");
            }
        }
    };
    let topology = |name: &'static str| move |s: &mut TopologySpec| s.topology = name.to_string();
    check(
        &topology("Word_Count"),
        "topology name \"Word_Count\" cannot be used on Kubernetes: it contains 'W'; only lowercase letters a-z, \
         digits and '-' are allowed; submit it under another name, such as \"word-count\" (egret submit --name \
         word-count)",
    );
    check(&topology("word.count"), "such as \"word-count\"");
    check(&topology("1word"), "it must start with a lowercase letter");
    check(&topology("word-"), "it must start and end with a letter or digit");
    check(
        &topology(""),
        "topology name \"\" cannot be used on Kubernetes: it is empty",
    );
    check(&topology("wörd"), "it contains 'ö'");
    check(
        &topology("a-very-long-topology-name-that-is-more-than-fifty-two"),
        "it is 53 characters long; at most 52 are allowed",
    );
    check(&|s| s.cluster = "prod east".into(), "cluster name \"prod east\"");
    check(&|s| s.namespace = "Egret".into(), "namespace \"Egret\"");
    check(
        &|s| s.image = String::new(),
        "the image \"\" must be a non-empty reference",
    );
    check(
        &|s| s.egret_home = "var/lib/egret".into(),
        "egret_home \"var/lib/egret\" must be an absolute path",
    );
    check(
        &|s| s.egret_home = "/var/../egret".into(),
        "must be an absolute path without `..`",
    );
    check(
        &|s| s.packing_plan = plan(&[]),
        "the packing plan's container ids must be 1..=N (pod ordinals are container ids, 0 is the tmanager's); \
         they are []",
    );
    check(
        &|s| s.packing_plan.containers[1].id = 7,
        "container ids must be 1..=N (pod ordinals are container ids, 0 is the tmanager's); they are [1, 3, 7]",
    );
    check(
        &|s| s.statemgr_yaml = String::new(),
        "cluster prod's statemgr.yaml: the state manager is local files, which pods on different nodes cannot share",
    );
    check(
        &|s| s.statemgr_yaml = "egret.statemgr.kind: zookeeper\n".into(),
        "egret.statemgr.connection.string is not set",
    );
    check(
        &|s| s.uploader = Uploader::BakedImage { path: "bin/wc".into() },
        "the baked binary's path \"bin/wc\" must be absolute",
    );
    check(
        &|s| {
            s.uploader = Uploader::SharedVolume {
                claim: "packages".into(),
                path: "../wc".into(),
            }
        },
        "must be relative to the volume's root without `..`",
    );
    check(
        &|s| {
            s.uploader = Uploader::SharedVolume {
                claim: "Packages".into(),
                path: "wc".into(),
            }
        },
        "claim \"Packages\" cannot be used on Kubernetes",
    );
    check(
        &|s| {
            s.uploader = Uploader::Url {
                url: "https://example.com/wc".into(),
            }
        },
        "must start with http://",
    );
    check(
        &|s| {
            s.uploader = Uploader::Url {
                url: "http://example.com/".into(),
            }
        },
        "the binary's file name \"\"",
    );
}

#[test]
fn kubernetes_yaml_is_one_document_per_object_and_reads_back() {
    let m = manifests(&spec(baked())).expect("valid spec");
    let yaml = m.to_yaml().expect("serializes");
    assert!(yaml.starts_with("---\n"), "{yaml}");
    let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.trim().is_empty()).collect();
    assert_eq!(docs.len(), 4, "{yaml}");
    let secret: Secret = yaml_serde::from_str(docs[0]).expect("a Secret");
    let config_map: ConfigMap = yaml_serde::from_str(docs[1]).expect("a ConfigMap");
    let service: Service = yaml_serde::from_str(docs[2]).expect("a Service");
    let stateful_set: StatefulSet = yaml_serde::from_str(docs[3]).expect("a StatefulSet");
    assert_eq!(
        Manifests {
            secret,
            config_map,
            service,
            stateful_set
        },
        m
    );
    // The `$(POD_IP)` reference reaches kubectl as written (Kubernetes expands it, not a shell).
    assert!(yaml.contains("$(POD_IP)"), "{yaml}");
}

// ------------------------------------------------------------------------------------------------------------------
// (b) Offline schema validation with kubernetes-validate (PyPI), which bundles the API's JSON schemas.

/// Kubernetes versions the manifests are checked against: an older supported release, the one `k8s-openapi` is
/// built for (v1_33), and the newest kubernetes-validate 1.37.0 bundles.
const VALIDATE_VERSIONS: [&str; 3] = ["1.29.0", "1.33.0", "1.37.0"];

fn kubernetes_validate(version: &str, files: &[&Path]) -> std::process::Output {
    match Command::new("kubernetes-validate")
        .args(["--strict", "-k", version])
        .args(files)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run kubernetes-validate ({e}): install it with `pip install kubernetes-validate==1.37.0` \
             (scripts/install-test-deps does)"
        ),
    }
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let uploaders = [
        ("baked", baked()),
        (
            "shared",
            Uploader::SharedVolume {
                claim: "egret-packages".into(),
                path: "prod/wc".into(),
            },
        ),
        (
            "url",
            Uploader::Url {
                url: "http://packages:8080/wc".into(),
            },
        ),
    ];
    let mut files = Vec::new();
    for (name, uploader) in uploaders {
        let path = dir.path().join(format!("{name}.yaml"));
        let yaml = manifests(&spec(uploader)).and_then(|m| m.to_yaml()).expect("manifests");
        std::fs::write(&path, yaml).expect("writes");
        files.push(path);
    }
    let files: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    for version in VALIDATE_VERSIONS {
        let started = Instant::now();
        let out = kubernetes_validate(version, &files);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate -k {version} refused the manifests ({}):\n{stdout}\n{stderr}",
            out.status
        );
        // Twelve objects (three files of four), each reported valid against that version (the tool logs to
        // stderr).
        let minor = version.trim_end_matches(".0");
        let said = format!("{stdout}{stderr}");
        assert_eq!(said.matches("passed for resource").count(), 12, "-k {version}:\n{said}");
        assert_eq!(
            said.matches(&format!("against version {minor}\n")).count(),
            12,
            "-k {version}:\n{said}"
        );
        eprintln!(
            "kubernetes-validate -k {version}: 12 objects valid in {:?}",
            started.elapsed()
        );
    }

    // The validator does look: an unknown field and a wrong type are refused.
    let yaml = manifests(&spec(baked())).and_then(|m| m.to_yaml()).expect("manifests");
    for (bad, what) in [
        (
            yaml.replace("podManagementPolicy:", "podManagementPolicyy:"),
            "podManagementPolicyy",
        ),
        (yaml.replace("replicas: 4", "replicas: four"), "four"),
    ] {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &bad).expect("writes");
        let out = kubernetes_validate("1.33.0", &[&path]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "accepted a manifest with {what}:\n{said}");
        assert!(said.contains(what), "the refusal does not name {what}:\n{said}");
    }
}

// ------------------------------------------------------------------------------------------------------------------
// (c) The scheduler against a mocked API server.

/// One request as the mock API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    uri: String,
    content_type: String,
    /// The JSON body (`Null` when empty).
    body: Value,
}

type Answer = Box<dyn Fn(&Seen) -> (u16, Value) + Send + Sync>;

/// A client whose every request is recorded in the returned log and answered by `answer`.
fn mock_client(
    answer: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static,
) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let answer: Arc<Answer> = Arc::new(Box::new(answer));
    let service = {
        let log = Arc::clone(&log);
        tower::service_fn(move |request: Request<Body>| {
            let log = Arc::clone(&log);
            let answer = Arc::clone(&answer);
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("a readable request body");
                let seen = Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).expect("a JSON request body")
                    },
                };
                let (status, reply) = answer(&seen);
                log.lock().expect("the log").push(seen);
                let response = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
                    .expect("a response");
                Ok::<_, Infallible>(response)
            }
        })
    };
    (kube::Client::new(service, "default"), log)
}

fn requests(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().expect("the log").clone()
}

/// `METHOD uri [content type]` of each request.
fn lines(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {} [{}]", s.method, s.uri, s.content_type))
        .collect()
}

/// The API server's answer when an object does not exist.
fn not_found(seen: &Seen) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{} not found", seen.uri), "reason": "NotFound", "code": 404,
    })
}

/// A plausible success: an applied object comes back as sent, a deleted one as its last state, a merge patch as the
/// patched object, a deleted collection as the list of what was deleted.
fn plausible(seen: &Seen) -> (u16, Value) {
    let last = seen
        .uri
        .split('?')
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let reply = match seen.method.as_str() {
        "PATCH" if seen.content_type == "application/apply-patch+yaml" => seen.body.clone(),
        "PATCH" => json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": last},
            "spec": seen.body["spec"]}),
        "DELETE" if seen.uri.contains("/pods?") => json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": (0..4).map(|i| json!({"metadata": {"name": format!("word-count-{i}")}})).collect::<Vec<_>>(),
        }),
        "DELETE" if seen.uri.contains("/statefulsets/") => {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": last}})
        }
        "DELETE" if seen.uri.contains("/pods/") => {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": last}})
        }
        "DELETE" => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": last}}),
        other => panic!("the scheduler sent an unexpected {other} {}", seen.uri),
    };
    (200, reply)
}

#[tokio::test]
async fn kubernetes_submit_applies_the_secret_configmap_service_and_statefulset() {
    let (client, log) = mock_client(plausible);
    let scheduler = KubernetesScheduler::new(client, "egret");
    let s = spec(baked());
    scheduler.submit(&s).await.expect("submitted");

    let seen = requests(&log);
    assert_eq!(
        lines(&seen),
        [
            "PATCH /api/v1/namespaces/egret/secrets/word-count-secret?&force=true&fieldManager=egret \
             [application/apply-patch+yaml]",
            "PATCH /api/v1/namespaces/egret/configmaps/word-count-statemgr?&force=true&fieldManager=egret \
             [application/apply-patch+yaml]",
            "PATCH /api/v1/namespaces/egret/services/word-count?&force=true&fieldManager=egret \
             [application/apply-patch+yaml]",
            "PATCH /apis/apps/v1/namespaces/egret/statefulsets/word-count?&force=true&fieldManager=egret \
             [application/apply-patch+yaml]",
        ]
    );
    // Each body is the whole object, exactly as `manifests` builds it.
    let m = manifests(&s).expect("valid spec");
    assert_eq!(seen[0].body, to_json(&m.secret));
    assert_eq!(seen[1].body, to_json(&m.config_map));
    assert_eq!(seen[2].body, to_json(&m.service));
    assert_eq!(seen[3].body, to_json(&m.stateful_set));
    assert_eq!(seen[3].body["spec"]["replicas"], 4);
}

#[tokio::test]
async fn kubernetes_submit_reports_the_api_servers_message_and_stops() {
    let (client, log) = mock_client(|seen| {
        if seen.uri.contains("/services/") {
            let message = "services \"word-count\" is forbidden: User \"ci\" cannot patch resource \"services\" \
                           in the namespace \"egret\"";
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "Forbidden", "code": 403}),
            )
        } else {
            plausible(seen)
        }
    });
    let scheduler = KubernetesScheduler::new(client, "egret");
    let error = scheduler.submit(&spec(baked())).await.expect_err("refused");
    assert!(matches!(error, K8sError::Api { code: 403, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "applying Service egret/word-count: the API server answered 403 Forbidden: services \"word-count\" is \
         forbidden: User \"ci\" cannot patch resource \"services\" in the namespace \"egret\""
    );
    // The StatefulSet, which would start pods, was not applied.
    assert_eq!(requests(&log).len(), 3);
}

#[tokio::test]
async fn kubernetes_submit_refuses_a_bad_spec_without_a_request() {
    let (client, log) = mock_client(plausible);
    let scheduler = KubernetesScheduler::new(client, "egret");
    let mut other_namespace = spec(baked());
    other_namespace.namespace = "default".into();
    let error = scheduler.submit(&other_namespace).await.expect_err("refused");
    assert_eq!(
        error.to_string(),
        "topology word-count: its namespace \"default\" is not the scheduler's namespace \"egret\""
    );
    let mut bad_name = spec(baked());
    bad_name.topology = "Word_Count".into();
    let error = scheduler.submit(&bad_name).await.expect_err("refused");
    assert!(matches!(error, K8sError::InvalidName { .. }), "{error:?}");
    assert!(requests(&log).is_empty());
}

#[tokio::test]
async fn kubernetes_kill_deletes_with_background_propagation() {
    let (client, log) = mock_client(plausible);
    let scheduler = KubernetesScheduler::new(client, "egret");
    scheduler.kill("word-count").await.expect("killed");
    let seen = requests(&log);
    assert_eq!(
        lines(&seen),
        [
            "DELETE /apis/apps/v1/namespaces/egret/statefulsets/word-count? [application/json]",
            "DELETE /api/v1/namespaces/egret/services/word-count? [application/json]",
            "DELETE /api/v1/namespaces/egret/configmaps/word-count-statemgr? [application/json]",
            "DELETE /api/v1/namespaces/egret/secrets/word-count-secret? [application/json]",
        ]
    );
    for s in &seen {
        assert_eq!(s.body, json!({"propagationPolicy": "Background"}), "{s:?}");
    }
}

#[tokio::test]
async fn kubernetes_kill_of_what_is_already_gone_succeeds() {
    let (client, log) = mock_client(|seen| (404, not_found(seen)));
    let scheduler = KubernetesScheduler::new(client, "egret");
    scheduler.kill("word-count").await.expect("nothing to kill is fine");
    scheduler.kill("word-count").await.expect("and again");
    // Every object was still asked for: a missing StatefulSet does not mean a missing ConfigMap.
    assert_eq!(requests(&log).len(), 8);
}

#[tokio::test]
async fn kubernetes_kill_stops_at_another_error() {
    let (client, log) = mock_client(|_| {
        (
            500,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
        )
    });
    let scheduler = KubernetesScheduler::new(client, "egret");
    let error = scheduler.kill("word-count").await.expect_err("fails");
    assert_eq!(
        error.to_string(),
        "deleting StatefulSet egret/word-count: the API server answered 500 InternalError: etcdserver: request \
         timed out"
    );
    assert_eq!(requests(&log).len(), 1);
}

#[tokio::test]
async fn kubernetes_restart_one_container_deletes_its_pod() {
    let (client, log) = mock_client(plausible);
    let scheduler = KubernetesScheduler::new(client, "egret");
    let deleted = scheduler.restart("word-count", Some(2)).await.expect("restarted");
    assert_eq!(deleted, ["word-count-2"]);
    let seen = requests(&log);
    assert_eq!(
        lines(&seen),
        ["DELETE /api/v1/namespaces/egret/pods/word-count-2? [application/json]"]
    );
    assert_eq!(seen[0].body, json!({}));
}

#[tokio::test]
async fn kubernetes_restart_all_deletes_the_topologys_pods_by_label() {
    let (client, log) = mock_client(plausible);
    let scheduler = KubernetesScheduler::new(client, "egret");
    let deleted = scheduler.restart("word-count", None).await.expect("restarted");
    assert_eq!(
        deleted,
        ["word-count-0", "word-count-1", "word-count-2", "word-count-3"]
    );
    assert_eq!(
        lines(&requests(&log)),
        [
            "DELETE /api/v1/namespaces/egret/pods?&labelSelector=app.kubernetes.io%2Fname%3Degret%2Cegret.topology%3Dword-count \
             [application/json]"
        ]
    );
}

#[tokio::test]
async fn kubernetes_restart_of_a_missing_container_or_topology_is_an_error() {
    let (client, _) = mock_client(|seen| (404, not_found(seen)));
    let scheduler = KubernetesScheduler::new(client, "egret");
    let error = scheduler.restart("word-count", Some(9)).await.expect_err("no such pod");
    assert!(error.is_not_found(), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("restarting container 9 of word-count (deleting pod word-count-9)"),
        "{error}"
    );

    let (client, _) = mock_client(|_| {
        (
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        )
    });
    let scheduler = KubernetesScheduler::new(client, "egret");
    let error = scheduler.restart("word-count", None).await.expect_err("no pods");
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(error.to_string(), "topology word-count has no pods in namespace egret");
}

#[tokio::test]
async fn kubernetes_update_patches_the_statefulsets_replicas() {
    let (client, log) = mock_client(plausible);
    let scheduler = KubernetesScheduler::new(client, "egret");
    scheduler.update("word-count", 6).await.expect("updated");
    let seen = requests(&log);
    assert_eq!(
        lines(&seen),
        [
            "PATCH /apis/apps/v1/namespaces/egret/statefulsets/word-count?&fieldManager=egret \
          [application/merge-patch+json]"
        ]
    );
    assert_eq!(seen[0].body, json!({"spec": {"replicas": 6}}));

    let error = scheduler.update("word-count", 1).await.expect_err("too few");
    assert!(error.to_string().contains("a topology needs at least 2"), "{error}");
    assert_eq!(requests(&log).len(), 1);
}

#[test]
fn kubernetes_checkpoints_are_mounted_from_a_shared_claim() {
    let mut s = spec(baked());
    s.checkpoints = Some(egret_kubernetes::CheckpointVolume {
        claim: "egret-checkpoints".into(),
        path: "/mnt/checkpoints".into(),
    });
    let m = manifests(&s).expect("valid spec");
    let pod = to_json(&pod_spec(&m));
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.contains(&json!({"name": "checkpoints",
            "persistentVolumeClaim": {"claimName": "egret-checkpoints", "readOnly": false}})),
        "{pod}"
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(&json!({"name": "checkpoints", "mountPath": "/mnt/checkpoints"})),
        "{pod}"
    );
    // Without a checkpoint volume, there is none.
    let plain = to_json(&pod_spec(&manifests(&spec(baked())).unwrap()));
    assert!(!plain.to_string().contains("checkpoints"), "{plain}");
}
