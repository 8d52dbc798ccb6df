//! A running stmgr against hostile instances: the test connects as the instances of the one container and sends,
//! with valid framing, thousands of frames whose contents are wrong (DATA frames for task 0 or for tasks beyond the
//! topology, frames of unknown kinds, CONTROL frames that do not decode or make no sense from an instance, DATA
//! frames too short for a destination, garbage records, roots of nonexistent tasks in undeliverable frames)
//! interleaved with good frames between instances. The stmgr must not panic or stop, must forward every frame for a
//! connected task unchanged and in order, and must count every refused frame (`egret_frames_bad_count`) and every
//! undeliverable one (`egret_frames_dropped_count`) in what it publishes to a real metricsmgr. Everything random
//! comes from one seed, printed first; `EGRET_TEST_SEED=<n>` replays a run.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self};
use std::time::{Duration, Instant};

use egret_api::{
    Bolt, BoltCollector, OutputDeclarer, Root, RootId, Spout, SpoutCollector, StreamIndex, TaskId, Topology,
    TopologyBuilder, Tuple,
};
use egret_proto::egret::{BackPressure, Heartbeat, PhysicalPlan, RegisterInstance, StmgrHello, control};
use egret_runtime::batch::{BatchBuilder, BatchReader, Record};
use egret_runtime::rng::FastRng;
use egret_stmgr::Opts;
use egret_testkit::{CLUSTER, InProcessMetricsmgr, TempHome, seed, store_topology};
use egret_transport::{Frame, KIND_CONTROL, KIND_DATA, control_frame, data_frame, read_frame};

/// Every wait in this test ends by then.
const DEADLINE: Duration = Duration::from_secs(5);
const NAME: &str = "hostile";
const GOOD_FRAMES: usize = 300;
const BAD_FRAMES: usize = 3000;

struct Source;

impl Spout for Source {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
}

struct Echo;

impl Bolt for Echo {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        out.ack(t);
    }
}

struct Sink;

impl Bolt for Sink {
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        out.ack(t);
    }
}

/// source -> echo -> sink (two tasks); components sort by name, so echo is task 1, sink 2 and 3, source 4.
fn topology() -> Topology {
    let mut b = TopologyBuilder::new(NAME);
    b.set_spout("source", 1, || Source);
    b.set_bolt("echo", 1, || Echo).shuffle_grouping("source");
    b.set_bolt("sink", 2, || Sink).shuffle_grouping("echo");
    b.build().expect("a valid topology")
}

/// The container's metrics manager, with what these tests read from it.
struct Metrics(InProcessMetricsmgr);

impl Metrics {
    fn start(state: &dyn egret_statemgr::StateManager) -> Metrics {
        Metrics(InProcessMetricsmgr::start(state, NAME, 1))
    }

    /// The value of the stmgr's metric `name`, if it published one yet.
    fn stmgr_value(&self, name: &str) -> Option<f64> {
        self.0.value(name, "component", egret_stmgr::METRICS_COMPONENT)
    }

    /// Waits until the stmgr's `name` reaches `expected`, then checks it is exactly that.
    fn wait_for_stmgr_value(&self, name: &str, expected: u64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.stmgr_value(name);
            if v.is_some_and(|v| v >= expected as f64) {
                assert_eq!(v, Some(expected as f64), "{name}: counted more than was sent");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {v:?} after {DEADLINE:?}; {expected} expected"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A frame of `kind` around `body`, with a correct length.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(body);
    f
}

fn random_bytes(rng: &mut FastRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Fewer than `max` random bytes.
fn some_bytes(rng: &mut FastRng, max: usize) -> Vec<u8> {
    let n = rng.below(max);
    random_bytes(rng, n)
}

/// One connection, registered as an instance, whose incoming frames a thread of its own collects.
struct Instance {
    task: TaskId,
    stream: TcpStream,
    frames: mpsc::Receiver<Frame>,
}

impl Instance {
    fn connect(port: u16, topology_id: &str, t: &Topology, task: TaskId) -> Instance {
        let stream = egret_testkit::register_instance(port, topology_id, t, task, DEADLINE);
        let mut read = stream.try_clone().unwrap();
        read.set_read_timeout(None).unwrap();
        let (tx, frames) = mpsc::channel();
        thread::spawn(move || {
            while let Ok(f) = read_frame(&mut read, egret_transport::DEFAULT_MAX_FRAME) {
                if tx.send(f).is_err() {
                    break;
                }
            }
        });
        Instance { task, stream, frames }
    }

    fn send(&self, frame: &[u8]) {
        (&self.stream).write_all(frame).expect("the stmgr keeps reading");
    }

    /// Receives exactly `expected` (whole frames, in order), skipping only FAIL batches the stmgr sent for roots of
    /// undeliverable frames; fails after the deadline.
    fn expect_frames(&self, expected: &[Vec<u8>]) -> usize {
        let deadline = Instant::now() + DEADLINE;
        let mut next = 0;
        let mut fails = 0;
        while next < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.frames.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "task {} received {next} of {} frames within {DEADLINE:?}",
                    self.task,
                    expected.len()
                )
            });
            match f {
                Frame::Data { raw, .. } if raw == expected[next] => next += 1,
                Frame::Data { dest, raw } if self.is_fail_batch(dest, &raw) => fails += 1,
                other => panic!(
                    "task {} received {other:?} where frame {next} of {} was expected",
                    self.task,
                    expected.len()
                ),
            }
        }
        fails
    }

    /// Whether `raw` is a DATA frame for this task holding FAIL records for this task only.
    fn is_fail_batch(&self, dest: u32, raw: &[u8]) -> bool {
        dest == self.task.0
            && BatchReader::new(Frame::data_records(raw))
                .all(|r| matches!(r, Ok(Record::Fail { dest, .. }) if dest == self.task))
    }
}

fn data_record(dest: TaskId, src: TaskId, stream: StreamIndex, roots: &[Root], values: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push_data(Instant::now(), dest, src, stream, 7, roots, values);
    b.take()
}

/// What a hostile frame should do to the stmgr's counters.
enum Effect {
    /// Refused: `__frames-bad-count` rises by one.
    Bad,
    /// Undeliverable (its task is in the topology but has no connection): `__frames-dropped-count` rises by one.
    Dropped,
    /// Forwarded unchanged to the task it names.
    Forwarded,
}

#[test]
fn a_running_stmgr_survives_hostile_frames_and_keeps_routing() {
    let started = Instant::now();
    let mut rng = FastRng::new(seed());
    let home = TempHome::new("egret-hostile-stmgr");
    let state = home.state();
    let t = topology();
    let definition = store_topology(&*state, NAME, &t, 1);
    let task = |name: &str, i: usize| t.tasks_of(t.component_index(name).unwrap()).nth(i).unwrap();
    let (echo, sink, absent, source) = (task("echo", 0), task("sink", 0), task("sink", 1), task("source", 0));
    let max_task = t.max_task_id();
    let input = t.stream_index("source", "default").unwrap();
    let output = t.stream_index("echo", "default").unwrap();
    let metrics = Metrics::start(&*state);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let opts = Opts {
        egret_home: home.0.clone(),
        cluster: CLUSTER.into(),
        topology: NAME.into(),
        container: 1,
        host: "127.0.0.1".into(),
        secret: egret_testkit::test_secret(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stmgr_state = state.clone();
    let stmgr = thread::spawn(move || {
        egret_stmgr::serve(listener, stmgr_state, opts, async move {
            let _ = stopped.await;
        })
    });

    // Every instance of the container but one (the second sink task, as if it were restarting): local routes work
    // without a tmanager, and frames for the missing task are undeliverable.
    let source_conn = Instance::connect(port, &definition.id, &t, source);
    let echo_conn = Instance::connect(port, &definition.id, &t, echo);
    let sink_conn = Instance::connect(port, &definition.id, &t, sink);

    let (mut bad, mut dropped) = (0u64, 0u64);
    let (mut to_echo, mut to_sink) = (Vec::new(), Vec::new());
    let mut good = 0;
    for _ in 0..BAD_FRAMES + GOOD_FRAMES {
        if rng.below(BAD_FRAMES + GOOD_FRAMES) < GOOD_FRAMES {
            // A good tuple from source to echo, and one from echo to sink.
            let root = Root {
                task: source,
                id: RootId(rng.next_u64()),
            };
            let values = random_bytes(&mut rng, 8);
            let f = data_frame(echo.0, &data_record(echo, source, input, &[root], &values));
            source_conn.send(&f);
            to_echo.push(f);
            let f = data_frame(sink.0, &data_record(sink, echo, output, &[root], &values));
            echo_conn.send(&f);
            to_sink.push(f);
            good += 1;
            continue;
        }
        let roots: Vec<Root> = (0..rng.below(4))
            .map(|_| Root {
                task: TaskId([0, source.0, max_task + 1, 1_000_000_000][rng.below(4)]),
                id: RootId(rng.next_u64()),
            })
            .collect();
        let records = data_record(TaskId(rng.next_u64() as u32), source, input, &roots, &[]);
        let (f, effect) = match rng.below(10) {
            // DATA frames for task 0 or beyond the topology, whose roots the stmgr reads to fail them.
            0 => {
                let dest = [0, max_task + 1, 1_000_000_000, u32::MAX][rng.below(4)];
                (data_frame(dest, &records), Effect::Bad)
            }
            // The same for a task of the topology that has no connection: undeliverable.
            1 => (data_frame(absent.0, &records), Effect::Dropped),
            // Garbage records for a connected task: the stmgr does not read them and forwards them unchanged.
            2 => {
                let n = rng.below(512);
                (data_frame(echo.0, &random_bytes(&mut rng, n)), Effect::Forwarded)
            }
            // Records with huge counts, for a connected task: forwarded unchanged too.
            3 => {
                let mut r = records.clone();
                r[21..23].copy_from_slice(&u16::MAX.to_le_bytes());
                r[23..27].copy_from_slice(&u32::MAX.to_le_bytes());
                (data_frame(echo.0, &r), Effect::Forwarded)
            }
            // Garbage records for an undeliverable or nonexistent task (the stmgr reads them to fail their roots).
            4 => {
                let dest = [0, absent.0, max_task + 1][rng.below(3)];
                let mut body = vec![[1u8, 2, 3, 0, 0xff][rng.below(5)]];
                body.extend(some_bytes(&mut rng, 256));
                let effect = if dest == absent.0 { Effect::Dropped } else { Effect::Bad };
                (data_frame(dest, &body), effect)
            }
            // A frame of an unknown kind.
            5 => {
                let kind = [0u8, 3, 4, 0x80, 0xff][rng.below(5)];
                (frame(kind, &some_bytes(&mut rng, 64)), Effect::Bad)
            }
            // A CONTROL frame that does not decode: its first tag has wire type 7, which protobuf does not have.
            6 => {
                let mut body = vec![(rng.next_u64() as u8) | 7];
                body.extend(some_bytes(&mut rng, 32));
                (frame(KIND_CONTROL, &body), Effect::Bad)
            }
            // A DATA frame too short to name its destination.
            7 => (frame(KIND_DATA, &some_bytes(&mut rng, 4)), Effect::Bad),
            // Control messages that make no sense from an instance.
            _ => {
                let msg = match rng.below(4) {
                    0 => control::Msg::RegisterInstance(RegisterInstance::default()),
                    1 => control::Msg::StmgrHello(StmgrHello {
                        topology_id: definition.id.clone(),
                        stmgr_id: "stmgr-9".into(),
                    }),
                    2 => control::Msg::BackPressure(BackPressure {
                        stmgr_id: "stmgr-9".into(),
                        start: true,
                    }),
                    _ => control::Msg::PhysicalPlan(PhysicalPlan::default()),
                };
                (control_frame(msg), Effect::Bad)
            }
        };
        source_conn.send(&f);
        match effect {
            Effect::Bad => bad += 1,
            Effect::Dropped => dropped += 1,
            Effect::Forwarded => to_echo.push(f),
        }
        // Heartbeats are welcome from anyone: neither bad nor routed.
        if rng.below(100) == 0 {
            source_conn.send(&control_frame(control::Msg::Heartbeat(Heartbeat { time_ms: 1 })));
        }
    }
    eprintln!(
        "sent {good} good frames pairs, {} garbage frames to forward, {bad} bad, {dropped} undeliverable",
        to_echo.len() - good
    );

    // Every frame for a connected task arrives unchanged and in order; the stmgr sends nothing else but FAIL
    // batches for the roots of undeliverable frames, and those only to the task owning the roots.
    assert_eq!(echo_conn.expect_frames(&to_echo), 0);
    assert_eq!(sink_conn.expect_frames(&to_sink), 0);
    assert!(!stmgr.is_finished(), "the stmgr stopped serving");

    // Every refused and every undeliverable frame is counted, and nothing else.
    metrics.wait_for_stmgr_value("egret_frames_bad_count", bad);
    metrics.wait_for_stmgr_value("egret_frames_dropped_count", dropped);
    assert!(!stmgr.is_finished(), "the stmgr stopped serving");

    // Still routing after all that.
    let f = data_frame(sink.0, &data_record(sink, echo, output, &[], &[]));
    echo_conn.send(&f);
    sink_conn.expect_frames(&[f]);
    // The source received only FAIL batches for its own roots.
    while let Ok(f) = source_conn.frames.try_recv() {
        match f {
            Frame::Data { dest, raw } => assert!(source_conn.is_fail_batch(dest, &raw), "{raw:?}"),
            other => panic!("the source received {other:?}"),
        }
    }

    let _ = stop.send(());
    let deadline = Instant::now() + DEADLINE;
    while !stmgr.is_finished() {
        assert!(Instant::now() < deadline, "the stmgr did not stop within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(10));
    }
    stmgr
        .join()
        .expect("the stmgr does not panic")
        .expect("the stmgr stops cleanly");
    eprintln!("done in {:?}", started.elapsed());
}
