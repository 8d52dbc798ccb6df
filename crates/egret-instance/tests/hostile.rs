//! A running instance against a hostile stmgr: the test plays the stmgr on a real socket and sends, with valid
//! framing, thousands of frames whose contents are wrong (records of unknown kinds, truncated records, huge counts,
//! streams out of range, roots naming tasks that do not exist, frames for other tasks, CONTROL frames that do not
//! decode, frames of unknown kinds) interleaved with good tuples. The instance must not panic or stop, must echo
//! every good tuple, and must count every bad frame in the `egret_exception_count` it publishes to a real
//! metricsmgr. Everything random comes from one seed, printed first; `EGRET_TEST_SEED=<n>` replays a run.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use egret_api::value::Encoder;
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OutputDeclarer, ReliabilityMode, Root, RootId, Spout, SpoutCollector,
    StreamIndex, TaskId, Topology, TopologyBuilder, Tuple, keys,
};
use egret_instance::InstanceError;
use egret_proto::egret::{Heartbeat, RegisterStmgr, control};
use egret_runtime::batch::{BatchBuilder, BatchReader, Record};
use egret_runtime::rng::FastRng;
use egret_testkit::seed;
use egret_transport::{Frame, KIND_CONTROL, control_frame, data_frame};

/// Every wait in this test ends by then.
const NAME: &str = "hostile";
const GOOD_FRAMES: usize = 200;
const BAD_FRAMES: usize = 3000;

/// Emits 0, 1, 2, ... with message ids, as fast as acks allow (`MAX_PENDING`).
struct Source(u64);

impl Spout for Source {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        out.emit_with_id(self.0, (self.0 as i64,));
        self.0 += 1;
    }
}

/// Few enough that the spout stops emitting unless its tuples are acked.
const MAX_PENDING: u64 = 50;

/// Emits every input anchored to it, to `sink`; an input without an integer `n` is reported and failed.
struct Echo;

impl Bolt for Echo {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        match t.get_i64("n") {
            Ok(n) => {
                out.emit_anchored(&[t], (n,));
                out.ack(t);
            }
            Err(e) => {
                out.report_error(&e);
                out.fail(t);
            }
        }
    }
}

struct Sink;

impl Bolt for Sink {
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        out.ack(t);
    }
}

fn topology() -> Topology {
    let mut b = TopologyBuilder::new(NAME);
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce.as_str())
        .set(keys::MAX_SPOUT_PENDING, MAX_PENDING);
    b.set_spout("source", 1, || Source(0));
    b.set_bolt("echo", 1, || Echo).shuffle_grouping("source");
    b.set_bolt("sink", 1, || Sink).shuffle_grouping("echo");
    b.build().expect("a valid topology")
}

/// The tasks of the test topology and the stream indexes the frames name.
struct Shape {
    source: TaskId,
    echo: TaskId,
    sink: TaskId,
    max_task: u32,
    /// source -> echo: the one stream echo consumes.
    input: StreamIndex,
    /// echo -> sink: a stream echo does not consume.
    output: StreamIndex,
    streams: u32,
}

impl Shape {
    fn of(t: &Topology) -> Shape {
        let task = |name: &str| t.tasks_of(t.component_index(name).unwrap()).next().unwrap();
        Shape {
            source: task("source"),
            echo: task("echo"),
            sink: task("sink"),
            max_task: t.max_task_id(),
            input: t.stream_index("source", "default").unwrap(),
            output: t.stream_index("echo", "default").unwrap(),
            streams: t.streams().len() as u32,
        }
    }
}

fn i64_values(n: i64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.i64(n);
    e.bytes().to_vec()
}

/// One DATA record, fields as given (nroots and values_len from the slices).
fn data_record(dest: u32, src: u32, stream: u32, key: u64, roots: &[Root], values: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push_data(
        Instant::now(),
        TaskId(dest),
        TaskId(src),
        StreamIndex(stream),
        key,
        roots,
        values,
    );
    b.take()
}

fn random_bytes(rng: &mut FastRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Fewer than `max` random bytes.
fn some_bytes(rng: &mut FastRng, max: usize) -> Vec<u8> {
    let n = rng.below(max);
    random_bytes(rng, n)
}

/// A frame with valid framing whose contents the instance of task `target` (echo or source) must refuse, and how
/// many errors it must count for it (one per bad record it can read, one for a frame it cannot use at all).
fn hostile_frame(rng: &mut FastRng, s: &Shape, target: TaskId) -> (Vec<u8>, u64) {
    let echo = target.0;
    let key = rng.next_key();
    let root = Root {
        task: s.source,
        id: RootId(rng.next_u64()),
    };
    let good_values = i64_values(rng.next_u64() as i64);
    let f = match rng.below(15) {
        // A record of an unknown kind, then random bytes.
        0 => {
            let mut body = vec![[0u8, 6, 9, 0x7f, 0xff][rng.below(5)]];
            body.extend(some_bytes(rng, 64));
            data_frame(echo, &body)
        }
        // A DATA record cut short, inside its header or inside its roots and values.
        1 => {
            let full = data_record(echo, s.source.0, s.input.0, key, &[root], &good_values);
            let cut = 1 + rng.below(full.len() - 1);
            data_frame(echo, &full[..cut])
        }
        // Huge nroots and values_len with a short body.
        2 => {
            let mut r = data_record(echo, s.source.0, s.input.0, key, &[], &[]);
            r[21..23].copy_from_slice(&u16::MAX.to_le_bytes());
            r[23..27].copy_from_slice(&(u32::MAX - rng.below(1000) as u32).to_le_bytes());
            r.extend(some_bytes(rng, 256));
            data_frame(echo, &r)
        }
        // A stream index beyond the topology's streams.
        3 => {
            let stream = s.streams + rng.below(1 << 20) as u32;
            data_frame(echo, &data_record(echo, s.source.0, stream, key, &[root], &good_values))
        }
        // The stream echo emits, which it does not consume.
        4 => data_frame(
            echo,
            &data_record(echo, s.source.0, s.output.0, key, &[root], &good_values),
        ),
        // A record whose dest field names another task (the frame is for echo).
        5 => {
            let dest = [0, s.source.0, s.sink.0, 1_000_000_000, u32::MAX][rng.below(5)];
            data_frame(
                echo,
                &data_record(dest, s.source.0, s.input.0, key, &[root], &good_values),
            )
        }
        // Roots naming task 0 or a task far beyond the topology, among real ones.
        6 => {
            let bad = Root {
                task: TaskId([0, s.max_task + 1, 1_000_000_000][rng.below(3)]),
                id: RootId(rng.next_u64()),
            };
            let roots = [root, bad];
            data_frame(
                echo,
                &data_record(echo, s.source.0, s.input.0, key, &roots, &good_values),
            )
        }
        // ACK and FAIL records for random roots: errors for a bolt, which never receives them; a spout ignores roots
        // it does not hold (a late ack of an expired root is no error).
        7 => {
            let mut b = BatchBuilder::new();
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let dest = TaskId(rng.next_u64() as u32);
                if rng.below(2) == 0 {
                    b.push_ack(Instant::now(), dest, RootId(rng.next_u64()), rng.next_u64());
                } else {
                    b.push_fail(Instant::now(), dest, RootId(rng.next_u64()));
                }
            }
            let errors = if target == s.echo { n as u64 } else { 0 };
            return (data_frame(echo, &b.take()), errors);
        }
        // A well-formed record whose values are not an integer `n` (the bolt reports it).
        8 => {
            let mut e = Encoder::new();
            if rng.below(2) == 0 {
                e.str("not a number");
            }
            data_frame(echo, &data_record(echo, s.source.0, s.input.0, key, &[root], e.bytes()))
        }
        // A DATA frame for another task.
        9 => {
            let dest = [0, s.echo.0, s.sink.0, s.max_task + 1, u32::MAX][rng.below(5)];
            let dest = if dest == target.0 { s.source.0 } else { dest };
            data_frame(
                dest,
                &data_record(dest, s.source.0, s.input.0, key, &[root], &good_values),
            )
        }
        // A CONTROL frame that does not decode: its first tag has wire type 7, which protobuf does not have.
        10 => {
            let mut body = vec![(rng.next_u64() as u8) | 7];
            body.extend(some_bytes(rng, 32));
            frame(KIND_CONTROL, &body)
        }
        // A frame of an unknown kind.
        11 => {
            let kind = [0u8, 3, 4, 0x80, 0xff][rng.below(5)];
            let body = some_bytes(rng, 64);
            frame(kind, &body)
        }
        // A DATA frame too short to name its destination.
        12 => {
            let body = some_bytes(rng, 4);
            frame(egret_transport::KIND_DATA, &body)
        }
        // Checkpoint markers, which no task expects yet: one error each, whatever their fields say.
        13 => {
            let mut b = BatchBuilder::new();
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let (dest, src) = (TaskId(rng.next_u64() as u32), TaskId(rng.next_u64() as u32));
                b.push_marker(Instant::now(), dest, src, CheckpointId(rng.next_u64()));
            }
            return (data_frame(echo, &b.take()), n as u64);
        }
        // A control message that has no business reaching an instance.
        _ => match rng.below(2) {
            0 => control_frame(control::Msg::Heartbeat(Heartbeat {
                time_ms: rng.next_u64() as i64,
            })),
            _ => control_frame(control::Msg::RegisterStmgr(RegisterStmgr::default())),
        },
    };
    (f, 1)
}

/// A frame of `kind` around `body`, with a correct length.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(body);
    f
}

#[test]
fn a_running_bolt_instance_survives_hostile_frames_and_keeps_serving() {
    let started = Instant::now();
    let mut rng = FastRng::new(seed());
    let t = topology();
    let s = Shape::of(&t);
    let f = FakeStmgr::new(NAME, &t);
    let (instance, stream) = f.start_instance(topology, s.echo);
    let metrics = &f.metrics;
    let frames = read_frames(&stream);

    // Good frames (one tuple each, numbered) spread among the hostile ones.
    let mut good_at: BTreeSet<usize> = BTreeSet::new();
    while good_at.len() < GOOD_FRAMES {
        good_at.insert(rng.below(BAD_FRAMES + GOOD_FRAMES));
    }
    let mut good = 0i64;
    let mut bad = 0u64;
    let mut expected_errors = 0u64;
    for i in 0..BAD_FRAMES + GOOD_FRAMES {
        let f = if good_at.contains(&i) {
            let root = Root {
                task: s.source,
                id: RootId(1_000_000 + good as u64),
            };
            good += 1;
            let record = data_record(
                s.echo.0,
                s.source.0,
                s.input.0,
                rng.next_key(),
                &[root],
                &i64_values(good - 1),
            );
            data_frame(s.echo.0, &record)
        } else {
            bad += 1;
            let (f, errors) = hostile_frame(&mut rng, &s, s.echo);
            expected_errors += errors;
            f
        };
        (&stream).write_all(&f).expect("the instance keeps reading");
    }
    // One large hostile frame: a 1 MiB tuple on a stream that does not exist.
    let big = data_record(
        s.echo.0,
        s.source.0,
        s.streams + 7,
        rng.next_key(),
        &[],
        &random_bytes(&mut rng, 1024 * 1024),
    );
    (&stream).write_all(&data_frame(s.echo.0, &big)).unwrap();
    bad += 1;
    expected_errors += 1;
    eprintln!("sent {good} good and {bad} hostile frames");

    // Every good tuple comes back, echoed to sink and anchored to its root; nothing else is echoed.
    let echo_output = Arc::clone(&t.stream(s.output).unwrap().source);
    let mut echoed = BTreeSet::new();
    let deadline = Instant::now() + DEADLINE;
    while echoed.len() < GOOD_FRAMES {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Frame::Data { dest, raw }) = frames.recv_timeout(left) else {
            panic!(
                "only {} of {GOOD_FRAMES} good tuples came back within {DEADLINE:?}",
                echoed.len()
            );
        };
        for r in BatchReader::new(Frame::data_records(&raw)) {
            let Record::Data(d) = r.expect("the instance writes whole records") else {
                continue;
            };
            assert_eq!((dest, d.dest, d.stream), (s.sink.0, s.sink, s.output));
            let n = Tuple::new(&echo_output, d.src, d.values, d.key, d.roots)
                .get_i64("n")
                .expect("an echo carries n");
            assert!((0..good).contains(&n), "an echo of a tuple never sent: {n}");
            let roots: Vec<Root> = d.roots.iter().collect();
            assert_eq!(
                roots,
                [Root {
                    task: s.source,
                    id: RootId(1_000_000 + n as u64)
                }]
            );
            assert!(echoed.insert(n), "tuple {n} echoed twice");
        }
    }
    assert!(!instance.is_finished(), "the instance stopped serving");

    // Every hostile frame was counted, once per bad record it holds, in what the instance publishes (every second).
    let deadline = Instant::now() + DEADLINE;
    let errors = loop {
        let counted = metrics.value("egret_exception_count", "task", &s.echo.0.to_string());
        if let Some(v) = counted.filter(|&v| v >= expected_errors as f64) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the instance counted {counted:?} errors within {DEADLINE:?}; {expected_errors} expected"
        );
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("egret_exception_count for echo: {errors} after {bad} hostile frames");
    assert_eq!(errors, expected_errors as f64, "errors counted beyond the bad records");
    assert!(!instance.is_finished(), "the instance stopped serving");

    // The connection ends: the instance returns, as it does when its stmgr dies.
    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    let result = join_instance(instance);
    assert!(matches!(result, Err(InstanceError::LostStmgr)), "{result:?}");
    eprintln!("done in {:?}", started.elapsed());
}

#[test]
fn a_running_spout_instance_survives_hostile_frames_and_keeps_emitting() {
    let started = Instant::now();
    let mut rng = FastRng::new(seed());
    let t = topology();
    let s = Shape::of(&t);
    let f = FakeStmgr::new(NAME, &t);
    let (instance, stream) = f.start_instance(topology, s.source);
    let metrics = &f.metrics;
    let frames = read_frames(&stream);

    // Acks every tuple received so far (the spout emits only MAX_PENDING tuples ahead of its acks); returns how many.
    let ack_received = |stream: &TcpStream| {
        let mut acks = BatchBuilder::new();
        let mut n = 0;
        while let Ok(f) = frames.try_recv() {
            let Frame::Data { raw, .. } = f else { continue };
            for r in BatchReader::new(Frame::data_records(&raw)) {
                if let Ok(Record::Data(d)) = r {
                    for root in d.roots.iter() {
                        acks.push_ack(Instant::now(), root.task, root.id, d.key);
                    }
                    n += 1;
                }
            }
        }
        if !acks.is_empty() {
            (&*stream)
                .write_all(&data_frame(s.source.0, &acks.take()))
                .expect("the instance keeps reading");
        }
        n
    };

    let (mut bad, mut expected_errors, mut emitted) = (0u64, 0u64, 0u64);
    for i in 0..BAD_FRAMES {
        let (f, errors) = hostile_frame(&mut rng, &s, s.source);
        (&stream).write_all(&f).expect("the instance keeps reading");
        bad += 1;
        expected_errors += errors;
        if i % 20 == 0 {
            emitted += ack_received(&stream);
        }
    }
    eprintln!("sent {bad} hostile frames; {emitted} tuples received meanwhile");

    // The spout keeps emitting: many times its pending limit arrive after the barrage, acked as they come.
    let mut after = 0;
    let deadline = Instant::now() + DEADLINE;
    while after < 20 * MAX_PENDING {
        after += ack_received(&stream);
        assert!(
            Instant::now() < deadline,
            "the spout emitted only {after} tuples within {DEADLINE:?} after the hostile frames"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(!instance.is_finished(), "the instance stopped serving");

    let deadline = Instant::now() + DEADLINE;
    let errors = loop {
        let counted = metrics.value("egret_exception_count", "task", &s.source.0.to_string());
        let acked = metrics
            .value("egret_ack_count", "task", &s.source.0.to_string())
            .unwrap_or(0.0);
        if let Some(v) = counted.filter(|&v| v >= expected_errors as f64 && acked > 0.0) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the spout counted {counted:?} errors and {acked} acks within {DEADLINE:?}; {expected_errors} errors expected"
        );
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("egret_exception_count for source: {errors} after {bad} hostile frames");
    assert_eq!(errors, expected_errors as f64, "errors counted beyond the bad records");

    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    let result = join_instance(instance);
    assert!(matches!(result, Err(InstanceError::LostStmgr)), "{result:?}");
    eprintln!("done in {:?}", started.elapsed());
}
