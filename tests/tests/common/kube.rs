//! A fake Kubernetes for end-to-end tests: an API server that serves the few calls Egret makes (server-side apply
//! of the ConfigMap, Service and StatefulSet; pod and object deletes) and plays the kubelet: when the StatefulSet is
//! applied it runs each pod as Kubernetes would: the ConfigMap's files put where the pod mounts them, the init
//! container's command run, then the pod's own command (`egret executor --container-from-pod-name --host
//! $(POD_IP)`) with the pod's environment (`POD_NAME`, `POD_IP`, `EGRET_HOME`). Each pod has a file system of its
//! own for its egret home (the manifest's `/var/lib/egret` becomes a directory per pod), and may run on a test host
//! (a network namespace) with that host's address as its IP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// One request the fake API server answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
}

/// The fake API server and kubelet.
pub struct FakeKubernetes {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    pods: Arc<Mutex<BTreeMap<String, Child>>>,
    kubelet: Arc<Kubelet>,
}

/// Where a pod runs: `Some((network namespace, its address))`, or `None` for this machine's own, at 127.0.0.1.
pub type Placement = Box<dyn Fn(&str) -> Option<(Option<String>, String)> + Send + Sync>;

/// What a pod needs to be run again (after a delete of the pod).
#[derive(Clone)]
struct PodTemplate {
    command: Vec<String>,
    env: Vec<(String, String)>,
    init: Vec<Vec<String>>,
    cluster: String,
}

/// The egret home the manifests give the pods (the default).
const POD_EGRET_HOME: &str = "/var/lib/egret";

struct Kubelet {
    egret: PathBuf,
    logs: PathBuf,
    /// Where each pod's own egret home is made (`<pods_root>/<pod>`, for the manifest's egret home).
    pods_root: PathBuf,
    config_maps: Mutex<BTreeMap<String, Value>>,
    secrets: Mutex<BTreeMap<String, Value>>,
    /// Each StatefulSet's replicas and pod template.
    templates: Mutex<BTreeMap<String, (u32, PodTemplate)>>,
    pods: Arc<Mutex<BTreeMap<String, Child>>>,
    placement: Placement,
}

impl Kubelet {
    /// `$(VAR)` in a command expands from the container's environment, as Kubernetes does.
    fn expand(arg: &str, env: &[(String, String)]) -> String {
        env.iter()
            .fold(arg.to_string(), |a, (k, v)| a.replace(&format!("$({k})"), v))
    }

    fn run_pod(&self, pod: &str, t: &PodTemplate) {
        // The pod's own file system: its egret home is a directory of its own, with the ConfigMap mounted in it.
        let root = self.pods_root.join(pod);
        let local = |s: &str| s.replace(POD_EGRET_HOME, &root.display().to_string());
        // A pod started again gets a fresh emptyDir for its package (the old pod's processes may still be exiting).
        let _ = std::fs::remove_dir_all(root.join("packages"));
        let conf = root.join("conf").join(&t.cluster);
        std::fs::create_dir_all(&conf).unwrap();
        for cm in self.config_maps.lock().unwrap().values() {
            for (file, text) in cm["data"].as_object().into_iter().flatten() {
                std::fs::write(conf.join(file), text.as_str().unwrap()).unwrap();
            }
        }
        let t = &PodTemplate {
            command: t.command.iter().map(|a| local(a)).collect(),
            env: t.env.iter().map(|(k, v)| (k.clone(), local(v))).collect(),
            init: t.init.iter().map(|c| c.iter().map(|a| local(a)).collect()).collect(),
            cluster: t.cluster.clone(),
        };
        let (netns, ip) = (self.placement)(pod).unwrap_or((None, "127.0.0.1".to_string()));
        let mut env = t.env.clone();
        env.push(("POD_NAME".into(), pod.to_string()));
        env.push(("POD_IP".into(), ip));
        for init in &t.init {
            let args: Vec<String> = init.iter().map(|a| Self::expand(a, &env)).collect();
            if let Some(parent) = Path::new(args.last().unwrap()).parent() {
                std::fs::create_dir_all(parent).unwrap(); // the emptyDir the init container writes into
            }
            let status = Command::new(&args[0])
                .args(&args[1..])
                .status()
                .expect("init container");
            assert!(status.success(), "init container {args:?} failed");
        }
        let mut args: Vec<String> = t.command.iter().map(|a| Self::expand(a, &env)).collect();
        assert_eq!(args[0], "egret", "the pod runs the image's egret");
        args[0] = self.egret.display().to_string();
        let log = std::fs::File::create(self.logs.join(format!("{pod}.log"))).unwrap();
        // In a test host's namespace, `ip netns exec` execs the program: the child is the pod's process.
        let mut command = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&args[0]);
                c
            }
            None => Command::new(&args[0]),
        };
        let child = command
            .args(&args[1..])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start a pod");
        self.pods.lock().unwrap().insert(pod.to_string(), child);
    }

    fn kill_pod(&self, pod: &str) -> bool {
        let Some(mut child) = self.pods.lock().unwrap().remove(pod) else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// The StatefulSet controller: `replicas` pods named `<name>-<ordinal>`, started at once (Parallel).
    fn apply_stateful_set(&self, sts: &Value) {
        let name = sts["metadata"]["name"].as_str().unwrap().to_string();
        let pod = &sts["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        // Plain values, and values from a Secret (`valueFrom.secretKeyRef`); the downward API's come per pod.
        let secrets = self.secrets.lock().unwrap();
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let name = e["name"].as_str()?.to_string();
                if let Some(v) = e["value"].as_str() {
                    return Some((name, v.to_string()));
                }
                let r = &e["valueFrom"]["secretKeyRef"];
                let secret = secrets.get(r["name"].as_str()?).unwrap_or_else(|| {
                    panic!(
                        "the pod refers to Secret {} but only {:?} are applied",
                        r["name"],
                        secrets.keys()
                    )
                });
                Some((name, secret["stringData"][r["key"].as_str()?].as_str()?.to_string()))
            })
            .collect();
        drop(secrets);
        let init = pod["initContainers"]
            .as_array()
            .map(|a| a.iter().map(|c| strings(&c["command"])).collect())
            .unwrap_or_default();
        let t = PodTemplate {
            command: [strings(&container["command"]), strings(&container["args"])].concat(),
            env,
            init,
            cluster: sts["metadata"]["labels"]["egret.cluster"].as_str().unwrap().to_string(),
        };
        let replicas = sts["spec"]["replicas"].as_u64().unwrap() as u32;
        for i in 0..replicas {
            self.run_pod(&format!("{name}-{i}"), &t);
        }
        self.templates.lock().unwrap().insert(name, (replicas, t));
    }

    /// Answers one API request; the body it returns.
    fn answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let path_only = path.split('?').next().unwrap();
        let parts: Vec<&str> = path_only.trim_matches('/').split('/').collect();
        let (kind, name) = (parts[parts.len() - 2], parts[parts.len() - 1]);
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
        match (method, kind) {
            ("PATCH", _) => {
                let object: Value = serde_json::from_slice(body).expect("an applied object is JSON");
                match kind {
                    "configmaps" => {
                        self.config_maps
                            .lock()
                            .unwrap()
                            .insert(name.to_string(), object.clone());
                    }
                    "secrets" => {
                        self.secrets.lock().unwrap().insert(name.to_string(), object.clone());
                    }
                    "statefulsets" => self.apply_stateful_set(&object),
                    _ => {}
                }
                (200, object)
            }
            ("DELETE", "pods") => {
                if !self.kill_pod(name) {
                    return (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("pods \"{name}\" not found")}),
                    );
                }
                // The StatefulSet controller starts the pod again.
                let sts = name.rsplit_once('-').unwrap().0;
                let template = self.templates.lock().unwrap().get(sts).map(|(_, t)| t.clone());
                if let Some(t) = template {
                    self.run_pod(name, &t);
                }
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}),
                )
            }
            ("DELETE", "statefulsets") => {
                if let Some((replicas, _)) = self.templates.lock().unwrap().remove(name) {
                    for i in 0..replicas {
                        self.kill_pod(&format!("{name}-{i}"));
                    }
                }
                (200, status)
            }
            ("DELETE", _) => (200, status),
            _ => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "message": "not served by the fake"}),
            ),
        }
    }
}

impl FakeKubernetes {
    /// A fake API server on 127.0.0.1 whose pods run `egret` (the binary at `egret`), log to `logs/<pod>.log`, get a
    /// file system root under `pods_root`, and run where `placement` says (a test host's network namespace and
    /// address; by default this one, at 127.0.0.1).
    pub fn start(egret: PathBuf, logs: PathBuf, pods_root: PathBuf, placement: Placement) -> FakeKubernetes {
        std::fs::create_dir_all(&logs).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let pods: Arc<Mutex<BTreeMap<String, Child>>> = Arc::default();
        let kubelet = Arc::new(Kubelet {
            egret,
            logs,
            pods_root,
            config_maps: Mutex::default(),
            secrets: Mutex::default(),
            templates: Mutex::default(),
            pods: Arc::clone(&pods),
            placement,
        });
        let seen = Arc::clone(&requests);
        let kubelet_handle = Arc::clone(&kubelet);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kubelet, seen) = (Arc::clone(&kubelet), Arc::clone(&seen));
                std::thread::spawn(move || serve(stream, &kubelet, &seen));
            }
        });
        FakeKubernetes {
            port,
            requests,
            pods,
            kubelet: kubelet_handle,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn running_pods(&self) -> Vec<String> {
        let mut pods = self.pods.lock().unwrap();
        pods.iter_mut()
            .filter_map(|(n, c)| c.try_wait().ok().flatten().is_none().then(|| n.clone()))
            .collect()
    }

    /// Kills pod `pod` (SIGKILL, as its node dying) and starts it again, as the StatefulSet controller would.
    pub fn kill_and_restart_pod(&self, pod: &str) {
        self.kubelet.kill_pod(pod);
        let sts = pod.rsplit_once('-').map_or(pod, |(s, _)| s);
        let template = self.kubelet.templates.lock().unwrap().get(sts).map(|(_, t)| t.clone());
        if let Some(t) = template {
            self.kubelet.run_pod(pod, &t);
        }
    }

    /// A kubeconfig that points at this server.
    pub fn kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.port
        );
        std::fs::write(path, text).unwrap();
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut *self.pods.lock().unwrap()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Serves the requests of one connection (HTTP/1.1, bodies with a Content-Length), answering each with JSON.
fn serve(stream: TcpStream, kubelet: &Kubelet, seen: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut it = line.split_whitespace();
        let (method, path) = (it.next().unwrap_or("").to_string(), it.next().unwrap_or("").to_string());
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (k, v) = header.split_once(':').unwrap();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
            assert!(
                !k.eq_ignore_ascii_case("transfer-encoding"),
                "the fake API server reads Content-Length bodies only"
            );
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        seen.lock().unwrap().push(Request {
            method: method.clone(),
            path: path.clone(),
        });
        let (code, answer) = kubelet.answer(&method, &path, &body);
        let answer = answer.to_string();
        let reason = if code == 200 { "OK" } else { "Not Found" };
        let _ = write!(
            writer,
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
    }
}

/// A cluster `name` whose state is in ZooKeeper `zk` and whose scheduler is Kubernetes, served by a new fake API
/// server (returned) whose pods run where `placement` says; `statemgr` and `scheduler` are extra lines for the
/// cluster's files. The "image" holds the test's topology binaries where cargo built them (the baked uploader).
/// The `egret` commands of the returned cluster reach the fake API server (`KUBECONFIG`).
pub fn kube_cluster(
    zk: &egret_testkit::zookeeper::ZkServer,
    name: &str,
    statemgr: &str,
    scheduler: &str,
    placement: Placement,
) -> (super::Cluster, FakeKubernetes) {
    let c = super::Cluster::on(name);
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_reliable-check"))
        .parent()
        .unwrap()
        .to_path_buf();
    let conf = c.home.join("conf").join(name);
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("statemgr.yaml"),
        format!(
            "egret.statemgr.kind: zookeeper\negret.statemgr.connection.string: {}\n\
             egret.statemgr.zookeeper.session.timeout.ms: 4000\n{statemgr}",
            zk.connection()
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("scheduler.yaml"),
        format!(
            "egret.scheduler.kind: kubernetes\negret.kubernetes.namespace: default\n\
             egret.kubernetes.image: egret:test\negret.kubernetes.uploader: baked\n\
             egret.kubernetes.uploader.dir: {}\n{scheduler}",
            bin_dir.display()
        ),
    )
    .unwrap();
    let k8s = FakeKubernetes::start(c.egret.clone(), c.home.join("pod-logs"), c.home.join("pods"), placement);
    let kubeconfig = c.home.join("kubeconfig");
    k8s.kubeconfig(&kubeconfig);
    c.env
        .borrow_mut()
        .push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    (c, k8s)
}
