//! What the instance's test binaries share: a state-manager home with a topology stored, its container's metrics
//! manager, and a listener playing the container's stmgr, to which a real instance (run on a thread) connects.
#![allow(dead_code)]

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use egret_api::{TaskId, Topology};
use egret_instance::{InstanceEnv, InstanceError};
use egret_proto::egret::{Location, PhysicalPlan, Rollback, Status, control};
use egret_testkit::{CLUSTER, InProcessMetricsmgr, TempHome, store_topology};
use egret_transport::{Frame, control_frame, read_frame};

/// Every wait in these tests ends by then.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `f` until it returns `Some`, or panics naming `what` after the deadline.
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    egret_testkit::wait_for(what, DEADLINE, f)
}

/// A physical plan (RUNNING) as a CONTROL frame, with an effectively-once rollback if given.
pub fn plan(definition: &egret_proto::api::Topology, rollback: Option<Rollback>) -> Vec<u8> {
    control_frame(control::Msg::PhysicalPlan(PhysicalPlan {
        topology: Some(definition.clone()),
        rollback,
        ..Default::default()
    }))
}

/// A home with `topology` stored as `name`, its metrics manager, and the fake stmgr's listener.
pub struct FakeStmgr {
    pub name: &'static str,
    pub home: TempHome,
    pub definition: egret_proto::api::Topology,
    pub metrics: InProcessMetricsmgr,
    listener: TcpListener,
}

impl FakeStmgr {
    pub fn new(name: &'static str, topology: &Topology) -> FakeStmgr {
        let home = TempHome::new(&format!("egret-instance-{name}"));
        let state = home.state();
        let definition = store_topology(&*state, name, topology, 1);
        // The instance proves the topology's secret to this fake stmgr, as to a real one.
        egret_testkit::test_secret()
            .store(&home.0, CLUSTER, name)
            .expect("store the secret");
        let metrics = InProcessMetricsmgr::start(&*state, name, 1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let location = Location {
            process: "stmgr-1".into(),
            container: 1,
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port() as i32,
            pid: std::process::id() as i32,
            http_port: 0,
        };
        state.put_location(name, &location).unwrap();
        FakeStmgr {
            name,
            home,
            definition,
            metrics,
            listener,
        }
    }

    /// Runs `task`'s instance of `topology()` on a thread and accepts its registration (then sends the plan, active,
    /// without a rollback): the stream is the instance's connection.
    pub fn start_instance(
        &self,
        topology: fn() -> Topology,
        task: TaskId,
    ) -> (JoinHandle<Result<(), InstanceError>>, TcpStream) {
        let env = InstanceEnv {
            egret_home: self.home.0.clone(),
            cluster: CLUSTER.into(),
            topology: self.name.into(),
            task,
            container: 1,
        };
        let instance = thread::spawn(move || egret_instance::run(topology(), env));
        (instance, self.accept(task))
    }

    /// Accepts the instance's connection, checks its registration, accepts it and sends the plan.
    fn accept(&self, task: TaskId) -> TcpStream {
        let listener = &self.listener;
        listener.set_nonblocking(true).unwrap();
        let mut stream = wait_for("the instance to connect", || listener.accept().ok().map(|(s, _)| s));
        stream.set_nonblocking(false).unwrap();
        egret_testkit::test_secret()
            .accept(&mut stream)
            .expect("the instance proves the secret");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        match read_frame(&mut &stream, egret_transport::DEFAULT_MAX_FRAME).expect("a registration") {
            Frame::Control(control::Msg::RegisterInstance(r)) => {
                assert_eq!(r.topology_id, self.definition.id);
                assert_eq!(r.instance.map(|i| i.task_id), Some(task.0 as i32));
            }
            other => panic!("expected RegisterInstance, got {other:?}"),
        }
        let status = Status {
            ok: true,
            message: String::new(),
        };
        (&stream)
            .write_all(&control_frame(control::Msg::Status(status)))
            .unwrap();
        (&stream).write_all(&plan(&self.definition, None)).unwrap();
        stream
    }

    pub fn send(&self, stream: &TcpStream, frame: &[u8]) {
        let mut stream = stream;
        stream.write_all(frame).expect("the instance keeps reading");
    }

    /// Waits until the metric `name` the instance of `task` publishes satisfies `ok`; returns its value.
    pub fn metric(&self, task: TaskId, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let what = format!("{name} of task {task} to reach the expected value");
        wait_for(&what, || {
            self.metrics.value(name, "task", &task.0.to_string()).filter(|&v| ok(v))
        })
    }
}

/// Reads the instance's frames on a thread of its own (so its writes never block on us) until the connection ends.
pub fn read_frames(stream: &TcpStream) -> mpsc::Receiver<Frame> {
    let mut read = stream.try_clone().unwrap();
    read.set_read_timeout(None).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        while let Ok(f) = read_frame(&mut read, egret_transport::DEFAULT_MAX_FRAME) {
            if tx.send(f).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next frame from the instance for which `f` says `Some`, skipping the others; panics naming `what` after the
/// deadline.
pub fn next_frame_where<T>(frames: &mpsc::Receiver<Frame>, what: &str, mut f: impl FnMut(Frame) -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match frames.recv_timeout(left) {
            Ok(frame) => {
                if let Some(v) = f(frame) {
                    return v;
                }
            }
            Err(e) => panic!("no {what} from the instance within {DEADLINE:?} ({e})"),
        }
    }
}

/// Waits for the instance thread to return, within the deadline.
pub fn join_instance(handle: JoinHandle<Result<(), InstanceError>>) -> Result<(), InstanceError> {
    wait_for("the instance to return", || handle.is_finished().then_some(()));
    handle.join().expect("the instance thread does not panic")
}

/// Ends the connection as a dying stmgr would; the instance must return within the deadline, having lost it.
pub fn stop_instance(stream: TcpStream, instance: JoinHandle<Result<(), InstanceError>>) {
    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    let result = join_instance(instance);
    assert!(matches!(result, Err(InstanceError::LostStmgr)), "{result:?}");
}
