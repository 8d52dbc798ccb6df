//! What the in-process tests of Egret's daemons share (the stmgr's, the tmanager's, the instance's): a temporary
//! state-manager home, a topology stored with its packing plan, a metrics manager serving on port 0, a printed seed
//! and a deadline on every wait. Test-only: nothing here is meant for a running topology.

pub mod collect;
pub mod fixtures;
pub mod kafka;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod zookeeper;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use egret_api::Topology;
use egret_metricsmgr::MetricsManager;
use egret_metricsmgr::exposition::Sample;
use egret_proto::api::TopologyState;
use egret_proto::defn;
use egret_proto::egret::{ContainerPlan, InstancePlan, Location, PackingPlan};
use egret_runtime::rng::FastRng;
use egret_statemgr::StateManager;

/// The cluster name the tests use.
pub const CLUSTER: &str = "local";

/// A state-manager home of its own under the system's temp dir, removed when dropped.
pub struct TempHome(pub PathBuf);

impl TempHome {
    pub fn new(prefix: &str) -> TempHome {
        // The clock alone is not enough: two tests of one process may read the same time (a coarse clock), and then
        // share a home and find each other's daemons.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        TempHome(dir)
    }

    /// A state manager rooted here, for the [`CLUSTER`].
    pub fn state(&self) -> Arc<dyn StateManager> {
        egret_statemgr::open(&self.0, CLUSTER).expect("a state manager in the temp dir")
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A seed for a randomised test, printed so that a failure can be replayed with `EGRET_TEST_SEED`.
pub fn seed() -> u64 {
    let seed = std::env::var("EGRET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| FastRng::from_entropy(0).next_u64());
    eprintln!("seed {seed} (replay with EGRET_TEST_SEED={seed})");
    seed
}

/// Polls `f` every 10 ms until it returns `Some`; panics naming `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stores `topology` under `name` (definition id `<name>-1`, RUNNING) with a packing plan that deals its tasks round
/// robin over containers `1..=containers`; returns the stored definition.
pub fn store_topology(
    state: &dyn StateManager,
    name: &str,
    topology: &Topology,
    containers: usize,
) -> egret_proto::api::Topology {
    let definition = defn::to_definition(topology, &format!("{name}-1"), TopologyState::Running);
    state.put_topology(name, &definition).expect("store the definition");
    let containers = (0..containers.max(1))
        .map(|i| ContainerPlan {
            id: i as i32 + 1,
            instances: topology
                .tasks()
                .filter(|(task, _, _)| (task.0 as usize - 1) % containers.max(1) == i)
                .map(|(task, component, index)| InstancePlan {
                    component: topology.components()[component].name.clone(),
                    task_id: task.0 as i32,
                    component_index: index as i32,
                    resource: None,
                })
                .collect(),
            required: None,
        })
        .collect();
    let plan = PackingPlan {
        id: format!("{name}-plan"),
        algorithm: "test".into(),
        containers,
    };
    state.put_packing_plan(name, &plan).expect("store the packing plan");
    definition
}

/// A real metrics manager serving on port 0 in this process, announced as `metricsmgr-<container>` of `topology`;
/// stopped when dropped.
pub struct InProcessMetricsmgr {
    http_port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessMetricsmgr {
    pub fn start(state: &dyn StateManager, topology: &str, container: i32) -> InProcessMetricsmgr {
        let m = MetricsManager::bind(topology, "127.0.0.1").expect("bind the metricsmgr");
        state
            .put_location(
                topology,
                &Location {
                    process: format!("metricsmgr-{container}"),
                    container,
                    host: "127.0.0.1".into(),
                    port: m.publisher_port() as i32,
                    pid: std::process::id() as i32,
                    http_port: m.http_port() as i32,
                },
            )
            .expect("announce the metricsmgr");
        let http_port = m.http_port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || m.serve(&test_secret(), flag).expect("the metricsmgr serves"));
        InProcessMetricsmgr {
            http_port,
            stop,
            thread: Some(thread),
        }
    }

    /// What `/metrics` serves now (empty if the scrape fails).
    pub fn samples(&self) -> Vec<Sample> {
        egret_metricsmgr::scrape_samples("127.0.0.1", self.http_port).unwrap_or_default()
    }

    /// The first sample named `name` whose label `key` is `value`, if there is one yet.
    pub fn value(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.samples()
            .iter()
            .find(|s| s.name == name && s.label(key) == Some(value))
            .map(|s| s.value)
    }
}

impl Drop for InProcessMetricsmgr {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The topology secret of this test process's in-process daemons and their clients (random, one per process).
pub fn test_secret() -> egret_transport::auth::TopologySecret {
    static SECRET: std::sync::OnceLock<egret_transport::auth::TopologySecret> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(|| egret_transport::auth::TopologySecret::generate().expect("random bytes for a secret"))
        .clone()
}

/// Connects to the stmgr on `port` as the instance of `task` and registers (proving [`test_secret`]); panics unless
/// the stmgr accepts. Reads and writes on the returned stream time out after `deadline`.
pub fn register_instance(
    port: u16,
    topology_id: &str,
    t: &Topology,
    task: egret_api::TaskId,
    deadline: Duration,
) -> std::net::TcpStream {
    use egret_proto::egret::{InstanceInfo, RegisterInstance, control};
    use egret_transport::{Frame, control_frame, read_frame};
    use std::io::Write;
    let stream = test_secret()
        .connect_to("127.0.0.1", port)
        .expect("connect to the stmgr");
    stream.set_read_timeout(Some(deadline)).expect("a read timeout");
    stream.set_write_timeout(Some(deadline)).expect("a write timeout");
    let (component, index) = t.task_component(task).expect("the task is in the topology");
    let register = control_frame(control::Msg::RegisterInstance(RegisterInstance {
        topology_id: topology_id.into(),
        instance: Some(InstanceInfo {
            task_id: task.0 as i32,
            component: t.components()[component].name.clone(),
            component_index: index as i32,
            stmgr_id: "stmgr-1".into(),
        }),
    }));
    (&stream).write_all(&register).expect("send the registration");
    match read_frame(&mut &stream, egret_transport::DEFAULT_MAX_FRAME) {
        Ok(Frame::Control(control::Msg::Status(s))) if s.ok => {}
        other => panic!("task {task} was not registered: {other:?}"),
    }
    stream
}
