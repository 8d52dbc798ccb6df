//! A tmanager served in this process on port 0 (`egret_tmanager::serve`), driven over real sockets: the test plays
//! the stmgrs of a two-container topology (`RegisterStmgr` with their instances, then heartbeats), the CLI
//! (`SetActive`) and a metrics manager (`MetricsReport`, `MetricsQuery`). Every wait ends at a deadline, and every
//! test ends by setting the shutdown flag and joining `serve`.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use egret_api::{Bolt, BoltCollector, OutputDeclarer, Spout, SpoutCollector, Topology, TopologyBuilder, Tuple, keys};
use egret_proto::api::TopologyState;
use egret_proto::egret::{
    Heartbeat, InstanceInfo, MetricValue, MetricsQuery, MetricsReport, PhysicalPlan, PublishMetrics, RegisterStmgr,
    SetActive, Status, StmgrInfo, control,
};
use egret_statemgr::StateManager;
use egret_testkit::{CLUSTER, TempHome, store_topology};
use egret_tmanager::{Opts, TmanagerError};
use egret_transport::{Frame, control_frame, read_frame};

/// Every wait in these tests ends by then.
const DEADLINE: Duration = Duration::from_secs(5);
const NAME: &str = "tm";
const CONTAINERS: [i32; 2] = [1, 2];
const MAX_FRAME: usize = egret_transport::DEFAULT_MAX_FRAME;

struct Source;

impl Spout for Source {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
}

struct Sink;

impl Bolt for Sink {
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        out.ack(t);
    }
}

/// source (2 tasks) -> sink (3 tasks), with `config` set on the topology.
fn topology(config: &[(&str, &str)]) -> Topology {
    let mut b = TopologyBuilder::new(NAME);
    for (k, v) in config {
        b.config().set(*k, v);
    }
    b.set_spout("source", 2, || Source);
    b.set_bolt("sink", 3, || Sink).shuffle_grouping("source");
    b.build().expect("a valid topology")
}

struct Tmanager {
    port: u16,
    state: Arc<dyn StateManager>,
    topology: Topology,
    topology_id: String,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), TmanagerError>>>,
    _home: TempHome,
}

impl Tmanager {
    fn start(config: &[(&str, &str)]) -> Tmanager {
        let home = TempHome::new("egret-tmanager");
        let state = home.state();
        let topology = topology(config);
        // Tasks dealt round robin over containers 1 and 2, as `instances_of` expects.
        let definition = store_topology(&*state, NAME, &topology, CONTAINERS.len());
        Tmanager::serve(home, state, topology, definition.id)
    }

    /// Stops this tmanager and serves a new one on the same home and state (as the executor restarts a dead one).
    fn restart(mut self) -> Tmanager {
        self.shutdown.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("serve does not panic").expect("serve returns Ok");
        }
        let home = std::mem::replace(&mut self._home, TempHome::new("egret-tmanager-moved"));
        Tmanager::serve(
            home,
            self.state.clone(),
            self.topology.clone(),
            self.topology_id.clone(),
        )
    }

    fn serve(home: TempHome, state: Arc<dyn StateManager>, topology: Topology, topology_id: String) -> Tmanager {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let opts = Opts {
            egret_home: home.0.clone(),
            cluster: CLUSTER.into(),
            topology: NAME.into(),
            host: "127.0.0.1".into(),
            secret: egret_testkit::test_secret(),
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let (tm_state, flag) = (state.clone(), Arc::clone(&shutdown));
        let thread = thread::spawn(move || egret_tmanager::serve(listener, tm_state, opts, flag));
        let tm = Tmanager {
            port,
            state,
            topology,
            topology_id,
            shutdown,
            thread: Some(thread),
            _home: home,
        };
        // The tmanager announces the port it serves on (after a restart, the location replaces its predecessor's).
        wait_for("the tmanager's location", || {
            tm.state
                .get_location(NAME, "tmanager")
                .ok()
                .flatten()
                .filter(|l| l.port == port as i32)
        });
        tm
    }

    /// The instances of `container`, as its stmgr registers them.
    fn instances_of(&self, container: i32) -> Vec<InstanceInfo> {
        let i = CONTAINERS.iter().position(|&c| c == container).unwrap();
        self.topology
            .tasks()
            .filter(|(task, _, _)| (task.0 as usize - 1) % CONTAINERS.len() == i)
            .map(|(task, component, index)| InstanceInfo {
                task_id: task.0 as i32,
                component: self.topology.components()[component].name.clone(),
                component_index: index as i32,
                stmgr_id: format!("stmgr-{container}"),
            })
            .collect()
    }

    fn stored_plan(&self) -> Option<PhysicalPlan> {
        self.state.get_physical_plan(NAME).unwrap()
    }

    /// Connects as the stmgr of `container` and registers it; panics unless the tmanager accepts it.
    fn register(&self, container: i32) -> Stmgr {
        let (status, stmgr) = self.try_register(container, &self.topology_id);
        assert!(status.ok, "stmgr-{container} was refused: {}", status.message);
        stmgr
    }

    fn try_register(&self, container: i32, topology_id: &str) -> (Status, Stmgr) {
        let id = format!("stmgr-{container}");
        let stream = connect(self.port);
        let register = control::Msg::RegisterStmgr(RegisterStmgr {
            topology_id: topology_id.into(),
            stmgr: Some(StmgrInfo {
                id: id.clone(),
                container,
                host: "127.0.0.1".into(),
                data_port: 40_000 + container,
                pid: std::process::id() as i32,
            }),
            instances: self.instances_of(container),
        });
        (&stream).write_all(&control_frame(register)).unwrap();
        let status = match read_frame(&mut &stream, MAX_FRAME) {
            Ok(Frame::Control(control::Msg::Status(s))) => s,
            other => panic!("{id} got {other:?} where a status was expected"),
        };
        let registered_at = Instant::now();
        let mut read = stream.try_clone().unwrap();
        read.set_read_timeout(None).unwrap();
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            loop {
                match read_frame(&mut read, MAX_FRAME) {
                    Ok(f) => {
                        if tx.send(Event::Frame(f)).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = tx.send(Event::Closed(Instant::now()));
                        return;
                    }
                }
            }
        });
        let stmgr = Stmgr {
            id,
            stream,
            events,
            registered_at,
        };
        (status, stmgr)
    }

    /// Sends one message as the CLI does (a connection of its own) and returns the tmanager's status.
    fn ask(&self, msg: control::Msg) -> Status {
        let stream = connect(self.port);
        (&stream).write_all(&control_frame(msg)).unwrap();
        match read_frame(&mut &stream, MAX_FRAME) {
            Ok(Frame::Control(control::Msg::Status(s))) => s,
            other => panic!("the tmanager answered {other:?}"),
        }
    }

    fn set_active(&self, active: bool) -> Status {
        self.ask(control::Msg::SetActive(SetActive {
            topology_id: self.topology_id.clone(),
            active,
        }))
    }

    /// Sets the shutdown flag and waits for `serve` to return; returns how long that took.
    fn stop(mut self) -> Duration {
        let since = Instant::now();
        self.shutdown.store(true, SeqCst);
        let thread = self.thread.take().unwrap();
        while !thread.is_finished() {
            assert!(
                since.elapsed() < DEADLINE,
                "serve still runs {DEADLINE:?} after shutdown"
            );
            thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("serve does not panic").expect("serve returns Ok");
        since.elapsed()
    }
}

impl Drop for Tmanager {
    fn drop(&mut self) {
        // A failed test still stops its tmanager.
        self.shutdown.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn connect(port: u16) -> TcpStream {
    let stream = egret_testkit::test_secret()
        .connect_to("127.0.0.1", port)
        .expect("connect to the tmanager");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    egret_testkit::wait_for(what, DEADLINE, f)
}

enum Event {
    Frame(Frame),
    /// The tmanager closed the connection (read failed or hit the end), at this time.
    Closed(Instant),
}

/// A registered stmgr connection whose incoming frames a thread of its own collects.
struct Stmgr {
    id: String,
    stream: TcpStream,
    events: mpsc::Receiver<Event>,
    /// When the tmanager's answer to the registration arrived: the last frame this stmgr sent was before it.
    registered_at: Instant,
}

impl Stmgr {
    fn heartbeat(&self) {
        let beat = control_frame(control::Msg::Heartbeat(Heartbeat { time_ms: 1 }));
        (&self.stream)
            .write_all(&beat)
            .expect("the tmanager keeps the connection");
    }

    /// The next physical plan pushed to this stmgr.
    fn next_plan(&self) -> PhysicalPlan {
        match self.events.recv_timeout(DEADLINE) {
            Ok(Event::Frame(Frame::Control(control::Msg::PhysicalPlan(p)))) => p,
            Ok(Event::Frame(f)) => panic!("{} got {f:?} where a physical plan was expected", self.id),
            Ok(Event::Closed(_)) => panic!("{} was closed where a physical plan was expected", self.id),
            Err(e) => panic!("{} got no physical plan within {DEADLINE:?}: {e}", self.id),
        }
    }

    /// Asserts that nothing arrives for `quiet` (the tmanager pushes at once when it has something to push).
    fn expect_nothing_for(&self, quiet: Duration) {
        match self.events.recv_timeout(quiet) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Event::Frame(f)) => panic!("{} got {f:?} where nothing was expected", self.id),
            Ok(Event::Closed(_)) => panic!("{} was closed where nothing was expected", self.id),
            Err(RecvTimeoutError::Disconnected) => panic!("{}'s reader ended", self.id),
        }
    }

    /// Waits up to `within` for the tmanager to close the connection; returns when it did.
    fn closed_within(&self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Closed(at)) => return Some(at),
                Ok(Event::Frame(_)) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Asserts that `plan` places every task of the topology exactly once, behind the stmgr of its container.
fn assert_every_task_placed(tm: &Tmanager, plan: &PhysicalPlan) {
    let mut expected: Vec<InstanceInfo> = CONTAINERS.iter().flat_map(|&c| tm.instances_of(c)).collect();
    expected.sort_by_key(|i| i.task_id);
    assert_eq!(plan.instances, expected, "every task placed once, by task id");
    let stmgrs: Vec<&str> = plan.stmgrs.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(stmgrs, ["stmgr-1", "stmgr-2"]);
}

fn plan_state(plan: &PhysicalPlan) -> i32 {
    plan.topology.as_ref().expect("the plan carries the topology").state
}

#[test]
fn the_physical_plan_waits_for_every_stmgr_then_reaches_each_of_them() {
    let tm = Tmanager::start(&[]);
    let s1 = tm.register(1);
    s1.expect_nothing_for(Duration::from_millis(300));
    assert_eq!(
        tm.stored_plan(),
        None,
        "no plan is stored before every stmgr registered"
    );

    let s2 = tm.register(2);
    let (p1, p2) = (s1.next_plan(), s2.next_plan());
    assert_eq!(p1, p2, "both stmgrs get the same plan");
    assert_every_task_placed(&tm, &p1);
    assert_eq!(plan_state(&p1), TopologyState::Running as i32);
    assert_eq!(tm.stored_plan(), Some(p1), "the pushed plan is the stored one");
    tm.stop();
}

#[test]
fn a_stmgr_of_another_topology_is_refused() {
    let tm = Tmanager::start(&[]);
    let (status, _) = tm.try_register(1, "some-other-topology-id");
    assert!(!status.ok);
    assert!(status.message.contains("not a stmgr of topology"), "{}", status.message);
    // The container is still waited for: once its real stmgr registers, the plan goes out.
    let (s1, s2) = (tm.register(1), tm.register(2));
    assert_eq!(s1.next_plan(), s2.next_plan());
    tm.stop();
}

#[test]
fn deactivate_from_the_cli_pauses_the_plan_of_every_stmgr_and_the_stored_one() {
    let tm = Tmanager::start(&[]);
    let (s1, s2) = (tm.register(1), tm.register(2));
    let running = s1.next_plan();
    assert_eq!(s2.next_plan(), running);

    let status = tm.set_active(false);
    assert!(status.ok && status.message == "deactivated", "{status:?}");
    let (p1, p2) = (s1.next_plan(), s2.next_plan());
    assert_eq!(p1, p2);
    assert_eq!(plan_state(&p1), TopologyState::Paused as i32);
    assert_eq!(p1.instances, running.instances, "only the state changed");
    let stored = tm.stored_plan().expect("a stored plan");
    assert_eq!(plan_state(&stored), TopologyState::Paused as i32);

    // Asking again changes nothing and pushes nothing.
    let again = tm.set_active(false);
    assert!(again.ok && again.message == "already deactivated", "{again:?}");
    s1.expect_nothing_for(Duration::from_millis(200));

    let status = tm.set_active(true);
    assert!(status.ok && status.message == "activated", "{status:?}");
    assert_eq!(plan_state(&s1.next_plan()), TopologyState::Running as i32);
    assert_eq!(plan_state(&s2.next_plan()), TopologyState::Running as i32);

    let wrong = tm.ask(control::Msg::SetActive(SetActive {
        topology_id: "another".into(),
        active: false,
    }));
    assert!(!wrong.ok, "a SetActive for another topology id is refused");
    tm.stop();
}

#[test]
fn a_stmgr_silent_past_the_heartbeat_timeout_is_dropped_and_may_register_again() {
    // The shortest timeout the key accepts: more than the 5 s heartbeat interval.
    const TIMEOUT: Duration = Duration::from_secs(6);
    let tm = Tmanager::start(&[(keys::STMGR_HEARTBEAT_TIMEOUT_SECS, "6")]);
    let (silent, beating) = (tm.register(1), tm.register(2));
    let plan = silent.next_plan();
    assert_eq!(beating.next_plan(), plan);

    // stmgr-2 heartbeats (more often than it must); stmgr-1 sends nothing after its registration.
    let deadline = silent.registered_at + TIMEOUT + Duration::from_secs(3);
    let closed_at = loop {
        beating.heartbeat();
        if let Some(at) = silent.closed_within(Duration::from_millis(500)) {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "stmgr-1 is still connected {:?} after it fell silent",
            TIMEOUT
        );
    };
    let took = closed_at - silent.registered_at;
    eprintln!("stmgr-1 was dropped {took:?} after its last frame");
    assert!(
        took >= TIMEOUT - Duration::from_millis(100),
        "dropped too early: {took:?}"
    );

    // The heartbeating stmgr keeps its connection and still gets what is pushed.
    beating.heartbeat();
    beating.expect_nothing_for(Duration::from_millis(100));
    assert!(tm.set_active(false).ok);
    assert_eq!(plan_state(&beating.next_plan()), TopologyState::Paused as i32);

    // Registering again on a new connection, stmgr-1 gets the current plan at once; stmgr-2 gets it too (its
    // peer's address may have changed).
    let again = tm.register(1);
    let rejoined = again.next_plan();
    assert_eq!(plan_state(&rejoined), TopologyState::Paused as i32);
    assert_every_task_placed(&tm, &rejoined);
    assert_eq!(beating.next_plan(), rejoined);
    tm.stop();
}

#[test]
fn metrics_reports_are_kept_and_answered_to_queries() {
    let tm = Tmanager::start(&[]);
    let reporter = connect(tm.port);
    for (time_ms, value) in [(1_000, 5.0), (6_000, 9.0)] {
        let report = control::Msg::MetricsReport(MetricsReport {
            container: 1,
            time_ms,
            publishers: vec![PublishMetrics {
                component: "sink".into(),
                task_id: 1,
                process: "instance-1".into(),
                metrics: vec![MetricValue {
                    name: "__execute-count".into(),
                    stream: "default".into(),
                    value,
                    ..Default::default()
                }],
                exceptions: Vec::new(),
                histograms: Vec::new(),
            }],
        });
        (&reporter).write_all(&control_frame(report)).unwrap();
    }
    let query = control_frame(control::Msg::MetricsQuery(MetricsQuery {
        topology_id: tm.topology_id.clone(),
        component: "sink".into(),
        ..MetricsQuery::default()
    }));
    let points = wait_for("both reported points", || {
        let q = connect(tm.port);
        (&q).write_all(&query).unwrap();
        let response = match read_frame(&mut &q, MAX_FRAME) {
            Ok(Frame::Control(control::Msg::MetricsQueryResponse(r))) => r,
            other => panic!("the tmanager answered {other:?}"),
        };
        let points: Vec<(i64, f64)> = response
            .series
            .iter()
            .filter(|s| s.task_id == 1 && s.name == "__execute-count")
            .flat_map(|s| s.points.iter().map(|p| (p.time_ms, p.value)))
            .collect();
        (points.len() == 2).then_some(points)
    });
    assert_eq!(points, [(1_000, 5.0), (6_000, 9.0)]);
    tm.stop();
}

#[test]
fn shutdown_closes_every_connection_and_serve_returns() {
    let tm = Tmanager::start(&[]);
    let (s1, s2) = (tm.register(1), tm.register(2));
    assert_eq!(s1.next_plan(), s2.next_plan());
    // A connection that has not said anything yet, and one whose peer stops listening.
    let idle = connect(tm.port);
    let half = connect(tm.port);
    half.shutdown(Shutdown::Write).unwrap();

    let took = tm.stop();
    assert!(took < Duration::from_secs(1), "serve took {took:?} to return");
    assert!(s1.closed_within(DEADLINE).is_some(), "stmgr-1's connection is closed");
    assert!(s2.closed_within(DEADLINE).is_some(), "stmgr-2's connection is closed");
    // Closed either way: with an end of stream if it was accepted, with a reset if it still waited in the listener's
    // backlog when the listener closed. A read that times out means it was left open.
    let mut buf = [0u8; 1];
    match std::io::Read::read(&mut &idle, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection that sent nothing is still open: {other:?}"),
    }
}

impl Stmgr {
    fn send(&self, msg: control::Msg) {
        (&self.stream)
            .write_all(&control_frame(msg))
            .expect("the tmanager keeps the connection");
    }

    /// The next control message pushed to this stmgr that `pick` accepts (heartbeat-free: the tmanager sends none).
    fn next<T>(&self, what: &str, mut pick: impl FnMut(control::Msg) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Frame(Frame::Control(m))) => {
                    if let Some(v) = pick(m) {
                        return v;
                    }
                }
                Ok(Event::Frame(_)) => {}
                Ok(Event::Closed(_)) => panic!("{} was closed while waiting for {what}", self.id),
                Err(e) => panic!("{} got no {what} within {DEADLINE:?}: {e}", self.id),
            }
        }
    }

    fn tasks(&self, tm: &Tmanager) -> Vec<i32> {
        let container: i32 = self.id.trim_start_matches("stmgr-").parse().unwrap();
        tm.instances_of(container).iter().map(|i| i.task_id).collect()
    }
}

#[test]
fn effectively_once_checkpoints_complete_when_every_task_stored_and_a_lost_task_rolls_everyone_back() {
    use egret_proto::egret::{InstanceJoined, InstanceLost, InstanceStateStored, Rollback};
    let tm = Tmanager::start(&[
        (keys::RELIABILITY_MODE, "EFFECTIVELY_ONCE"),
        (keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, "0.1"),
    ]);
    let stmgrs = [tm.register(1), tm.register(2)];
    for s in &stmgrs {
        let plan = s.next_plan();
        assert_eq!(
            plan.rollback,
            Some(Rollback {
                epoch: 1,
                checkpoint: 0,
                ..Default::default()
            }),
            "a clean start in epoch 1"
        );
    }
    // Every stmgr is told to start the same checkpoint.
    let start = |s: &Stmgr| {
        s.next("a StartCheckpoint", |m| match m {
            control::Msg::StartCheckpoint(c) => Some((c.epoch, c.checkpoint)),
            _ => None,
        })
    };
    let (epoch, checkpoint) = start(&stmgrs[0]);
    assert_eq!(start(&stmgrs[1]), (epoch, checkpoint));
    let store = |s: &Stmgr, epoch, checkpoint| {
        for task_id in s.tasks(&tm) {
            s.send(control::Msg::InstanceStateStored(InstanceStateStored {
                task_id,
                epoch,
                checkpoint,
                bytes: 10,
            }));
        }
    };
    store(&stmgrs[0], epoch, checkpoint);
    store(&stmgrs[1], epoch, checkpoint);
    for s in &stmgrs {
        let committed = s.next("a CheckpointCommitted", |m| match m {
            control::Msg::CheckpointCommitted(c) => Some(c.checkpoint),
            _ => None,
        });
        assert_eq!(committed, checkpoint);
    }
    let record = tm.state.get_stateful_checkpoints(NAME).unwrap().unwrap();
    assert_eq!((record.complete, record.epoch), (vec![checkpoint], 1));

    // A task is lost: no rollback until it is back, then every stmgr gets a plan of a new epoch from the checkpoint.
    let lost = stmgrs[1].tasks(&tm)[0];
    stmgrs[1].send(control::Msg::InstanceLost(InstanceLost { task_id: lost }));
    stmgrs[1].send(control::Msg::InstanceJoined(InstanceJoined { task_id: lost }));
    for s in &stmgrs {
        let plan = s.next("a plan of a new epoch", |m| match m {
            control::Msg::PhysicalPlan(p) => Some(p),
            _ => None,
        });
        assert_eq!(
            plan.rollback,
            Some(Rollback {
                epoch: 2,
                checkpoint,
                ..Default::default()
            })
        );
    }
    // Saves of the old epoch no longer count.
    let (epoch2, next) = start(&stmgrs[0]);
    assert_eq!(epoch2, 2);
    assert!(next > checkpoint, "checkpoint ids only grow");
    tm.stop();
}

#[test]
fn a_rescale_waiting_for_its_checkpoint_is_carried_out_by_a_restarted_tmanager() {
    use egret_proto::egret::InstanceStateStored;
    // Checkpoints only when asked for: the rescale's own.
    let tm = Tmanager::start(&[
        (keys::RELIABILITY_MODE, "EFFECTIVELY_ONCE"),
        (keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, "600"),
    ]);
    let stmgrs = [tm.register(1), tm.register(2)];
    for s in &stmgrs {
        s.next_plan();
    }
    let definition = tm.state.get_topology(NAME).unwrap().unwrap();
    let mut packing = tm.state.get_packing_plan(NAME).unwrap().unwrap();
    // `store_topology` deals tasks round robin (its plan says "test"): repack the same way.
    packing.algorithm = "round-robin".into();
    let update = egret_packing::update::plan_update(&definition, &packing, &[("sink".into(), 4)]).unwrap();
    let status = tm.ask(control::Msg::UpdateTopology(Box::new(
        update.message(TopologyState::Running),
    )));
    assert!(status.ok, "{}", status.message);
    let start = |s: &Stmgr| {
        s.next("a StartCheckpoint", |m| match m {
            control::Msg::StartCheckpoint(c) => Some((c.epoch, c.checkpoint)),
            _ => None,
        })
    };
    // The checkpoint the rescale waits for is asked for at once; nobody stores it before the tmanager goes.
    start(&stmgrs[0]);
    let record = tm.state.get_stateful_checkpoints(NAME).unwrap().unwrap();
    assert!(record.pending_update.is_some(), "the waiting rescale is recorded");
    drop(stmgrs);

    let tm = tm.restart();
    let stmgrs = [tm.register(1), tm.register(2)];
    let (epoch, checkpoint) = start(&stmgrs[0]);
    assert_eq!(start(&stmgrs[1]), (epoch, checkpoint));
    let sink_tasks = |d: &egret_proto::api::Topology| {
        egret_proto::defn::from_definition(d)
            .unwrap()
            .topology
            .component("sink")
            .unwrap()
            .parallelism
    };
    assert_eq!(
        sink_tasks(&tm.state.get_topology(NAME).unwrap().unwrap()),
        3,
        "not before its checkpoint"
    );
    // Every task saved a keyed state (empty), as an instance would: the rescale checks the state can follow it.
    let store = egret_checkpoint::LocalStore::new(tm.state.checkpoints_dir(NAME).unwrap());
    let mut blob = Vec::new();
    egret_api::KeyedState::<String, u64>::default().save(&mut blob).unwrap();
    for s in &stmgrs {
        for task_id in s.tasks(&tm) {
            egret_checkpoint::CheckpointStore::save(
                &store,
                egret_api::CheckpointId(checkpoint),
                egret_api::TaskId(task_id as u32),
                &blob,
            )
            .unwrap();
            s.send(control::Msg::InstanceStateStored(InstanceStateStored {
                task_id,
                epoch,
                checkpoint,
                bytes: 10,
            }));
        }
    }
    let committed = stmgrs[0].next("a CheckpointCommitted", |m| match m {
        control::Msg::CheckpointCommitted(c) => Some(c.checkpoint),
        _ => None,
    });
    assert_eq!(committed, checkpoint);
    wait_for("the rescaled definition", || {
        let d = tm.state.get_topology(NAME).ok()??;
        (sink_tasks(&d) == 4).then_some(())
    });
    let record = tm.state.get_stateful_checkpoints(NAME).unwrap().unwrap();
    assert_eq!(record.pending_update, None, "carried out, no longer pending");
    let plan = stmgrs[0].next("the rescaled plan", |m| match m {
        control::Msg::PhysicalPlan(p) if p.instances.len() == 6 => Some(p),
        _ => None,
    });
    assert_eq!(
        plan.rollback.map(|r| r.checkpoint),
        Some(checkpoint),
        "every task restores the rescale's checkpoint"
    );
    tm.stop();
}
