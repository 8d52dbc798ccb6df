//! Effectively-once in a running instance: the test plays the stmgr (and, through it, the tmanager's checkpoint
//! coordinator) on a real socket, as `hostile.rs` does. It sends physical plans with rollbacks, `StartCheckpoint`
//! and DATA frames whose batches carry EPOCH and MARKER records, and checks what the instance answers
//! (`InstanceStateStored`, `RestoreFailed`, its markers) and what it wrote to the checkpoint store under the
//! state-manager home.
//!
//! The topology: `source` (2 tasks, a spout whose state is how many numbers it emitted) feeds `count` (1 task, a
//! bolt whose state is how many tuples it executed). Every wait ends by `DEADLINE`.

mod common;

use std::net::TcpStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use common::*;
use egret_api::value::Encoder;
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector, Stateful, StreamIndex,
    TaskId, Topology, TopologyBuilder, Tuple, UserError, keys,
};
use egret_checkpoint::{CheckpointStore, LocalStore};
use egret_instance::InstanceError;
use egret_proto::egret::{InstanceStateStored, RestoreFailed, Rollback, StartCheckpoint, control};
use egret_runtime::batch::{BatchBuilder, BatchReader, Record};
use egret_transport::{Frame, control_frame, data_frame};

const NAME: &str = "effectively-once";
/// How many numbers each `source` task emits before it runs dry.
const SOURCE_LIMIT: u64 = 200;

/// Emits 0, 1, 2, ... up to `SOURCE_LIMIT`; its state is the next number.
#[derive(Default)]
struct Numbers {
    next: u64,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if self.next < SOURCE_LIMIT {
            out.emit((self.next as i64,));
            self.next += 1;
        }
    }
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for Numbers {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.next = decode_u64(restored)?;
        Ok(())
    }
    fn pre_save(&mut self, _c: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&self.next.to_le_bytes());
        Ok(())
    }
}

/// Counts the tuples it executed; its state is that count. A saved state that is not 8 bytes fails its restore.
#[derive(Default)]
struct Counting {
    n: u64,
}

impl Bolt for Counting {
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {
        self.n += 1;
    }
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for Counting {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.n = decode_u64(restored)?;
        Ok(())
    }
    fn pre_save(&mut self, _c: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&self.n.to_le_bytes());
        Ok(())
    }
}

/// A state of 8 little-endian bytes; nothing (a clean start) is 0.
fn decode_u64(state: Option<&[u8]>) -> Result<u64, UserError> {
    match state {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .try_into()
                .map_err(|_| format!("a saved state of {} bytes, not 8", bytes.len()))?;
            Ok(u64::from_le_bytes(bytes))
        }
    }
}

fn topology() -> Topology {
    let mut b = TopologyBuilder::new(NAME);
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce.as_str());
    b.set_spout("source", 2, Numbers::default);
    b.set_bolt("count", 1, Counting::default).shuffle_grouping("source");
    b.build().expect("a valid topology")
}

/// The tasks of the test topology and the stream `count` consumes.
struct Shape {
    count: TaskId,
    sources: [TaskId; 2],
    input: StreamIndex,
}

impl Shape {
    fn of(t: &Topology) -> Shape {
        let tasks = |name: &str| t.tasks_of(t.component_index(name).unwrap()).collect::<Vec<_>>();
        let sources = tasks("source");
        Shape {
            count: tasks("count")[0],
            sources: [sources[0], sources[1]],
            input: t.stream_index("source", "default").unwrap(),
        }
    }
}

/// A DATA frame for `dest` holding one batch from `src`, as an effectively-once task sends it: the EPOCH record,
/// `tuples` DATA records on `stream`, then the marker of `marker` if given.
fn batch(dest: TaskId, epoch: u32, src: TaskId, stream: StreamIndex, tuples: u64, marker: Option<u64>) -> Vec<u8> {
    let now = Instant::now();
    let mut b = BatchBuilder::new();
    b.push_epoch(dest, epoch);
    for n in 0..tuples {
        let mut values = Encoder::new();
        values.i64(n as i64);
        b.push_data(now, dest, src, stream, n, &[], values.bytes());
    }
    if let Some(checkpoint) = marker {
        b.push_marker(now, dest, src, CheckpointId(checkpoint));
    }
    data_frame(dest.0, &b.take())
}

fn state_stored(frames: &mpsc::Receiver<Frame>) -> InstanceStateStored {
    next_frame_where(frames, "InstanceStateStored", |f| match f {
        Frame::Control(control::Msg::InstanceStateStored(s)) => Some(s),
        _ => None,
    })
}

fn restore_failed(frames: &mpsc::Receiver<Frame>) -> RestoreFailed {
    next_frame_where(frames, "RestoreFailed", |f| match f {
        Frame::Control(control::Msg::RestoreFailed(r)) => Some(r),
        _ => None,
    })
}

/// The fake stmgr of the test topology, and where its tasks are.
struct Fixture {
    stmgr: FakeStmgr,
    shape: Shape,
}

impl std::ops::Deref for Fixture {
    type Target = FakeStmgr;
    fn deref(&self) -> &FakeStmgr {
        &self.stmgr
    }
}

impl Fixture {
    fn new() -> Fixture {
        let t = topology();
        Fixture {
            stmgr: FakeStmgr::new(NAME, &t),
            shape: Shape::of(&t),
        }
    }

    /// Sends the plan that tells the instance to be in rollback `epoch`, restored from `checkpoint` (0: clean).
    fn roll_back(&self, stream: &TcpStream, epoch: u32, checkpoint: u64) {
        self.send(
            stream,
            &plan(
                &self.definition,
                Some(Rollback {
                    epoch,
                    checkpoint,
                    ..Default::default()
                }),
            ),
        );
    }

    /// The store the instances of this home write their checkpoints to.
    fn store(&self) -> LocalStore {
        LocalStore::new(self.home.state().checkpoints_dir(NAME).unwrap())
    }

    fn start_instance(&self, task: TaskId) -> (JoinHandle<Result<(), InstanceError>>, TcpStream) {
        self.stmgr.start_instance(topology, task)
    }

    /// Sends `tuples` from each source task in `epoch`, each batch ending with the marker of `checkpoint`.
    fn send_aligned(&self, stream: &TcpStream, epoch: u32, tuples: [u64; 2], checkpoint: u64) {
        let s = &self.shape;
        for (src, n) in s.sources.into_iter().zip(tuples) {
            self.send(stream, &batch(s.count, epoch, src, s.input, n, Some(checkpoint)));
        }
    }
}

/// The count (or position) a task saved at `checkpoint`, read back from the store.
fn saved_u64(store: &LocalStore, checkpoint: u64, task: TaskId) -> u64 {
    let state = store.load(CheckpointId(checkpoint), task).expect("a saved state");
    decode_u64(Some(&state)).expect("an 8-byte state")
}

#[test]
fn an_effectively_once_bolt_instance_starts_clean_and_stores_its_aligned_checkpoint() {
    let f = Fixture::new();
    let count = f.shape.count;
    let (instance, stream) = f.start_instance(count);
    let frames = read_frames(&stream);

    f.roll_back(&stream, 1, 0);
    f.send_aligned(&stream, 1, [3, 2], 1);

    let stored = state_stored(&frames);
    assert_eq!(
        (stored.task_id, stored.epoch, stored.checkpoint),
        (count.0 as i32, 1, 1)
    );
    assert!(stored.bytes > 8, "the blob's size, header included: {}", stored.bytes);
    assert_eq!(saved_u64(&f.store(), 1, count), 5);
    // The checkpoint messages are no errors, and the checkpoint metrics are published.
    f.metric(count, "egret_checkpoints_saved", |v| v == 1.0);
    assert_eq!(f.metric(count, "egret_checkpoint_last_id", |_| true), 1.0);
    assert_eq!(f.metric(count, "egret_exception_count", |_| true), 0.0);
    stop_instance(stream, instance);
}

#[test]
fn an_effectively_once_bolt_instance_restores_a_checkpoint_and_drops_batches_of_the_old_epoch() {
    let f = Fixture::new();
    let (count, [a, _]) = (f.shape.count, f.shape.sources);
    let (instance, stream) = f.start_instance(count);
    let frames = read_frames(&stream);

    // Epoch 1: checkpoint 1 holds 5 tuples; 7 more are executed after it and never checkpointed.
    f.roll_back(&stream, 1, 0);
    f.send_aligned(&stream, 1, [3, 2], 1);
    assert_eq!(state_stored(&frames).checkpoint, 1);
    f.send(&stream, &batch(count, 1, a, f.shape.input, 7, None));

    // Rollback to checkpoint 1 in epoch 2; a batch of epoch 1 that was still on its way (with a marker) is dropped.
    f.roll_back(&stream, 2, 1);
    f.send(&stream, &batch(count, 1, a, f.shape.input, 100, Some(2)));
    f.send_aligned(&stream, 2, [2, 1], 2);

    let stored = state_stored(&frames);
    assert_eq!(
        (stored.task_id, stored.epoch, stored.checkpoint),
        (count.0 as i32, 2, 2)
    );
    assert_eq!(
        saved_u64(&f.store(), 2, count),
        5 + 3,
        "restored to checkpoint 1's 5, then the 3 tuples of epoch 2"
    );
    f.metric(count, "egret_dropped_stale_count", |v| v == 1.0);
    f.metric(count, "egret_checkpoints_saved", |v| v == 2.0);
    assert_eq!(f.metric(count, "egret_exception_count", |_| true), 0.0);
    stop_instance(stream, instance);
}

#[test]
fn an_effectively_once_instance_reports_a_corrupt_checkpoint_as_restore_failed_and_keeps_serving() {
    let f = Fixture::new();
    let count = f.shape.count;
    let store = f.store();
    store.save(CheckpointId(3), count, &40u64.to_le_bytes()).unwrap();
    let path = store.blob_path(CheckpointId(3), count);
    let mut blob = std::fs::read(&path).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    std::fs::write(&path, &blob).unwrap();

    let (instance, stream) = f.start_instance(count);
    let frames = read_frames(&stream);
    f.roll_back(&stream, 1, 3);
    let failed = restore_failed(&frames);
    assert_eq!(
        (failed.task_id, failed.epoch, failed.checkpoint),
        (count.0 as i32, 1, 3)
    );
    assert!(
        failed.error.contains("checkpoint 3") && failed.error.contains("corrupt"),
        "{}",
        failed.error
    );

    // The tmanager then rolls back further (here to a clean start): the instance restores and checkpoints.
    f.roll_back(&stream, 2, 0);
    f.send_aligned(&stream, 2, [1, 1], 4);
    let stored = state_stored(&frames);
    assert_eq!((stored.epoch, stored.checkpoint), (2, 4));
    assert_eq!(saved_u64(&store, 4, count), 2);
    stop_instance(stream, instance);
}

#[test]
fn an_effectively_once_instance_whose_component_cannot_restore_reports_restore_failed() {
    let f = Fixture::new();
    let count = f.shape.count;
    // A blob the store verifies, holding a state the component refuses.
    f.store().save(CheckpointId(5), count, b"bad").unwrap();

    let (instance, stream) = f.start_instance(count);
    let frames = read_frames(&stream);
    f.roll_back(&stream, 3, 5);
    let failed = restore_failed(&frames);
    assert_eq!(
        (failed.task_id, failed.epoch, failed.checkpoint),
        (count.0 as i32, 3, 5)
    );
    assert!(
        failed.error.contains("failed to start") && failed.error.contains("3 bytes, not 8"),
        "{}",
        failed.error
    );
    f.metric(count, "egret_exception_count", |v| v >= 1.0);
    stop_instance(stream, instance);
}

#[test]
fn an_effectively_once_instance_whose_store_cannot_be_written_counts_the_error_and_reports_nothing() {
    let f = Fixture::new();
    let count = f.shape.count;
    // A file where the store's directory should be: every save fails.
    let dir = f.home.state().checkpoints_dir(NAME).unwrap();
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();

    let (instance, stream) = f.start_instance(count);
    let frames = read_frames(&stream);
    f.roll_back(&stream, 1, 0);
    f.send_aligned(&stream, 1, [1, 1], 1);
    f.send_aligned(&stream, 1, [1, 1], 2);

    // Both snapshots were taken and both writes failed; the task kept processing.
    f.metric(count, "egret_checkpoints_saved", |v| v == 2.0);
    f.metric(count, "egret_exception_count", |v| v == 2.0);
    assert!(!instance.is_finished(), "the instance stopped serving");
    while let Ok(frame) = frames.try_recv() {
        assert!(
            !matches!(frame, Frame::Control(control::Msg::InstanceStateStored(_))),
            "a failed save was reported as stored"
        );
    }
    stop_instance(stream, instance);
}

#[test]
fn an_effectively_once_spout_instance_takes_a_checkpoint_when_told_and_sends_its_markers() {
    let f = Fixture::new();
    let (count, [spout, _]) = (f.shape.count, f.shape.sources);
    let (instance, stream) = f.start_instance(spout);
    let frames = read_frames(&stream);

    f.roll_back(&stream, 1, 0);
    // A checkpoint of another epoch is ignored; the next one is taken wherever the spout is in its numbers.
    let start = |epoch, checkpoint| control_frame(control::Msg::StartCheckpoint(StartCheckpoint { epoch, checkpoint }));
    f.send(&stream, &start(5, 6));
    f.send(&stream, &start(1, 7));

    // Every batch starts with epoch 1; the marker comes after exactly the tuples the saved position counts.
    let mut tuples_before_marker = 0u64;
    let mut stored = None;
    next_frame_where(&frames, "the spout's marker", |frame| {
        let raw = match frame {
            Frame::Data { dest, raw } => {
                assert_eq!(dest, count.0, "the spout's only consumer is count");
                raw
            }
            Frame::Control(control::Msg::InstanceStateStored(s)) => {
                stored = Some(s);
                return None;
            }
            Frame::Control(other) => panic!("unexpected {other:?}"),
        };
        let mut records = BatchReader::new(Frame::data_records(&raw));
        assert!(matches!(records.next(), Some(Ok(Record::Epoch { epoch: 1, .. }))));
        for r in records {
            match r.expect("whole records") {
                Record::Data(d) => {
                    assert_eq!((d.dest, d.src), (count, spout));
                    tuples_before_marker += 1;
                }
                Record::Marker { dest, src, checkpoint } => {
                    assert_eq!((dest, src, checkpoint), (count, spout, CheckpointId(7)));
                    return Some(());
                }
                other => panic!("unexpected record {other:?}"),
            }
        }
        None
    });
    let stored = stored.unwrap_or_else(|| state_stored(&frames));
    assert_eq!(
        (stored.task_id, stored.epoch, stored.checkpoint),
        (spout.0 as i32, 1, 7)
    );
    assert_eq!(saved_u64(&f.store(), 7, spout), tuples_before_marker);
    eprintln!("the spout's checkpoint 7 came after {tuples_before_marker} of its {SOURCE_LIMIT} numbers");
    stop_instance(stream, instance);
}
