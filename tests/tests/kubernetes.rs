//! `egret submit`, `restart` and `kill` on a Kubernetes-configured cluster, end to end, against a fake API server
//! that also plays the kubelet: no Kubernetes can run here, so the test serves the few API calls Egret makes
//! (server-side apply of the ConfigMap, Service and StatefulSet; pod and object deletes), and when the StatefulSet
//! is applied it runs each pod as Kubernetes would: the ConfigMap's `statemgr.yaml` put where the pod mounts it,
//! the init container's command run, then the pod's own command (`egret executor --container-from-pod-name
//! --host $(POD_IP)`) with the pod's environment (`POD_NAME`, `POD_IP`, `EGRET_HOME`). Each pod has a file system of
//! its own for its egret home (the manifest's `/var/lib/egret` becomes a directory per pod), so nothing is shared
//! with the submitter or between pods but ZooKeeper and the topology's output directory. The topology's state is in a real ZooKeeper, through which the pods find each other. What is not exercised:
//! a real API server, scheduling onto nodes, images, volumes and networking between pods (see docs/kubernetes.md).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use egret_testkit::zookeeper::ZkServer;

const N: u64 = 20_000;

#[test]
fn kubernetes_submit_restart_and_kill_through_the_api_with_pods_that_find_each_other_in_zookeeper() {
    let zk = ZkServer::start();
    let (c, k8s) = common::kube::kube_cluster(&zk, "k8s", "", "", Box::new(|_| None));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_reliable-check"));
    let pods_root = c.home.join("pods");

    // --dry-run prints the manifests and applies nothing.
    let out = c.home.join("out");
    let (out_s, n, bin_s) = (out.display().to_string(), N.to_string(), bin.display().to_string());
    let dry = c.ok(&["submit", "k8s", &bin_s, "--dry-run", "--", "--out", &out_s]);
    assert!(
        dry.contains("kind: StatefulSet") && dry.contains("podManagementPolicy: Parallel"),
        "{dry}"
    );
    assert!(k8s.requests().is_empty(), "a dry run sends nothing");

    let t = "reliable-check";
    c.ok(&[
        "submit",
        "k8s",
        &bin_s,
        "--out",
        &out_s,
        "--n",
        &n,
        "--pause-micros",
        "300",
    ]);
    let applied: Vec<String> = k8s
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path.split('?').next().unwrap().to_string())
        .collect();
    assert_eq!(
        applied,
        [
            format!("/api/v1/namespaces/default/secrets/{t}-secret"),
            format!("/api/v1/namespaces/default/configmaps/{t}-statemgr"),
            format!("/api/v1/namespaces/default/services/{t}"),
            format!("/apis/apps/v1/namespaces/default/statefulsets/{t}"),
        ]
    );
    assert!(
        k8s.requests()
            .iter()
            .all(|r| r.method != "PATCH" || r.path.contains("fieldManager=egret")),
        "server-side apply as egret"
    );
    assert_eq!(
        k8s.running_pods().len(),
        3,
        "container 0 and the 2 containers of the packing plan"
    );
    // Each pod's executor runs the binary from its own egret home, where the init container put it.
    assert!(
        pods_root
            .join(format!("{t}-1/packages/k8s/{t}/reliable-check"))
            .exists()
    );

    wait_for("some progress", || (ids(&out, "acked-").0.len() > 2_000).then_some(()));
    let restarted = c.ok(&["restart", "k8s", t, "--container", "1"]);
    assert!(restarted.contains(&format!("{t}-1")), "{restarted}");
    assert!(
        k8s.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.starts_with(&format!("/api/v1/namespaces/default/pods/{t}-1"))),
        "restart deletes the pod"
    );
    let all: BTreeSet<u64> = (0..N).collect();
    wait_for("every input acked", || (ids(&out, "acked-").0 == all).then_some(()));
    let (received, _) = ids(&out, "sink-");
    assert!(all.is_subset(&received), "every input received");

    c.ok(&["kill", "k8s", t]);
    let deleted: BTreeSet<String> = k8s
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && !r.path.contains("/pods/"))
        .map(|r| r.path.split('?').next().unwrap().to_string())
        .collect();
    assert_eq!(
        deleted,
        BTreeSet::from([
            format!("/api/v1/namespaces/default/secrets/{t}-secret"),
            format!("/api/v1/namespaces/default/configmaps/{t}-statemgr"),
            format!("/api/v1/namespaces/default/services/{t}"),
            format!("/apis/apps/v1/namespaces/default/statefulsets/{t}"),
        ])
    );
    assert!(k8s.running_pods().is_empty(), "no pod left");
    assert!(!c.ok(&["list", "k8s"]).contains(t));

    // An effectively-once topology needs its checkpoints on a volume every pod shares: refused without one.
    let refused = c.run(&["submit", "k8s", env!("CARGO_BIN_EXE_stateful-check"), "--out", &out_s]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("egret.kubernetes.checkpoints.claim"), "{said}");
    assert!(
        !c.ok(&["list", "k8s"]).contains("stateful-word-count"),
        "nothing left of it"
    );
}
