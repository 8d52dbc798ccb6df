//! Checkpoint alignment: the receiving task lines its inputs up on a checkpoint's markers (`docs/checkpoints.md`).
//!
//! Every upstream task sends a MARKER record (`crate::batch`) to each of its downstream tasks once it has taken
//! checkpoint C, after everything it sent them before. A task may snapshot its state for C only when it has
//! processed exactly what its upstream tasks sent before their C markers: the batches of an upstream whose marker is
//! in must wait (they are after the cut), the batches of one whose marker is still due are processed (they are
//! before it). [`Aligner`] decides that, one per receiving task; the task snapshots, sends its own markers, then
//! processes what was held back.
//!
//! Heron aligns in the stmgr in front of the instance (`CheckpointGateway`). Egret's stmgr forwards frames without
//! decoding them, and the simulator must run the same alignment as the processes, so the receiving task aligns its
//! own inputs (as Flink does): the task loop, in every mode, drives this module. It owns no I/O and reads no clock:
//! the caller passes the time.
//!
//! **What it relies on.** A batch holds the records of one source task: an `Outbox` belongs to one task's emitter
//! and keeps one open batch per destination, and every transport (the simulator's queues, a stmgr forwarding a DATA
//! frame's bytes unchanged) delivers a batch whole and in order per (source, destination) pair. A marker can sit in
//! the middle of a batch: split received batches with [`crate::batch::Segments`], which also splits where the
//! source changes, so [`Aligner::accept`] is always given records of one source.
//!
//! **How to drive it**, for each received batch, segment by segment, in order:
//! - `Records { src, bytes }`: [`Aligner::accept`]. `Process`: process `bytes` now. `Buffered`: the aligner kept a
//!   copy; do not process it. `Abandoned`: process `released` in order (it ends with this batch).
//! - `Marker { src, checkpoint }`: [`Aligner::on_marker`]. `Aligned`: snapshot the state for `checkpoint`, send
//!   markers downstream, then process `released` in order. `Overtaken`: process `released` in order.
//!
//! Process every `released` batch, in order, before the next call to `accept` or `on_marker`: that is what keeps
//! the batches of one source in the order it sent them (released batches were sent before any later one).
//!
//! Spouts have no upstream task: their aligner never aligns through markers and processes every batch (their input
//! is acks and fails). Spouts will take a checkpoint when the tmanager tells them to, and then send their markers.
//!
//! A task on a cycle (a component subscribing to its own stream, or to a downstream one) counts a downstream task as
//! upstream: it would wait for a marker that can only come after its own snapshot, so its checkpoints would never
//! align. Validation refuses an effectively-once topology with a cycle (`TopologyError::CycleUnderEffectivelyOnce`).

use std::time::Instant;

use egret_api::{CheckpointId, TaskId, Topology};

use crate::batch::Batch;

/// What a task saved at a checkpoint, handed by the task loop to whoever writes it to the store (on another
/// thread: processing goes on meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub task: TaskId,
    /// The rollback epoch the task was in: a save from an older epoch is ignored by the coordinator.
    pub epoch: u32,
    pub checkpoint: CheckpointId,
    /// What `Stateful::pre_save` wrote; empty for a component without state.
    pub state: Vec<u8>,
    /// How long the task aligned its inputs' markers before it could take the snapshot (zero for spouts).
    pub alignment: std::time::Duration,
}

/// What the checkpoint coordinator tells a task (effectively-once). The task loop takes these from its
/// `LoopControl` between batches.
#[derive(Debug, Clone)]
pub enum TaskCommand {
    /// Start (or roll back) in rollback epoch `epoch` from the state saved at `checkpoint` (`None`: a clean
    /// start): drop everything of older epochs, create the component anew and give it `state`.
    Restore {
        epoch: u32,
        checkpoint: Option<CheckpointId>,
        state: Option<Vec<u8>>,
    },
    /// Spouts: take `checkpoint` now (between two emit cycles) and send its markers downstream. Ignored by a task
    /// not in `epoch`.
    Checkpoint { epoch: u32, checkpoint: CheckpointId },
    /// `checkpoint` is complete (every task saved it): two-phase components commit.
    Committed { checkpoint: CheckpointId },
    /// The topology was rescaled (`egret update --component-parallelism`): route to its tasks from now on and tell
    /// the component (`update`). Under effectively-once a `Restore` of the rescale's epoch follows at once.
    Rescale {
        topology: std::sync::Arc<egret_api::Topology>,
    },
}

/// A batch the aligner held back and now hands back, to be processed in the order of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub src: TaskId,
    pub batch: Batch,
}

/// What to do with a received batch ([`Aligner::accept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accept {
    /// Process it now.
    Process,
    /// Its source is past the cut of the checkpoint being aligned: the aligner kept a copy; do not process it.
    Buffered,
    /// Keeping it would pass the bound on buffered bytes, so the alignment of `checkpoint` is given up: process
    /// `released` in order (the batches held back, then this one). Later markers of `checkpoint` are ignored.
    Abandoned {
        checkpoint: CheckpointId,
        released: Vec<Released>,
    },
}

/// What a marker did ([`Aligner::on_marker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerOutcome {
    /// Nothing changed; the reason is counted in [`AlignerStats::ignored_markers`].
    Ignored(Ignored),
    /// `checkpoint` is being aligned; markers from `pending` upstream tasks are still due.
    Waiting { checkpoint: CheckpointId, pending: usize },
    /// Every upstream marker of `checkpoint` is in. Snapshot the state now (everything before the cut has been
    /// processed), send markers downstream, then process `released` in order. `started` is when the first marker of
    /// `checkpoint` came (the alignment time is `now - started`).
    Aligned {
        checkpoint: CheckpointId,
        started: Instant,
        released: Vec<Released>,
    },
    /// A marker of a newer checkpoint `by` came while `abandoned` was being aligned: `abandoned` is given up (process
    /// `released` in order), and `by` is now being aligned.
    Overtaken {
        abandoned: CheckpointId,
        by: CheckpointId,
        released: Vec<Released>,
    },
}

/// Why a marker was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Its source is not an upstream task of this task.
    NotUpstream,
    /// Its checkpoint is older than the newest one seen.
    Stale,
    /// Its checkpoint is the newest seen, and its alignment already completed or was abandoned.
    Finished,
    /// Its source already sent the marker of the checkpoint being aligned.
    Duplicate,
}

/// Counters for metrics. The counts only grow; `buffered_*` and `aligning` are the state now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlignerStats {
    pub completed: u64,
    pub abandoned: u64,
    pub ignored_markers: u64,
    pub buffered_bytes: usize,
    pub buffered_batches: usize,
    /// The checkpoint being aligned and when its first marker came.
    pub aligning: Option<(CheckpointId, Instant)>,
}

struct Alignment {
    checkpoint: CheckpointId,
    started: Instant,
    /// Indexed like `Aligner::upstream`: whether that task's marker is in.
    marked: Vec<bool>,
    pending: usize,
    buffer: Vec<Released>,
    bytes: usize,
}

/// Aligns one receiving task's inputs on checkpoint markers. See the module doc for how to drive it.
pub struct Aligner {
    /// Ascending, without duplicates.
    upstream: Vec<TaskId>,
    max_buffered_bytes: usize,
    /// The newest checkpoint whose marker came: older markers are stale.
    newest: Option<CheckpointId>,
    aligning: Option<Alignment>,
    completed: u64,
    abandoned: u64,
    ignored_markers: u64,
}

impl Aligner {
    /// An aligner over `upstream` tasks, holding back at most `max_buffered_bytes` of batches.
    pub fn new(upstream: impl IntoIterator<Item = TaskId>, max_buffered_bytes: usize) -> Self {
        let mut upstream: Vec<TaskId> = upstream.into_iter().collect();
        upstream.sort_unstable();
        upstream.dedup();
        Aligner {
            upstream,
            max_buffered_bytes,
            newest: None,
            aligning: None,
            completed: 0,
            abandoned: 0,
            ignored_markers: 0,
        }
    }

    /// The aligner of `task`: its upstream tasks are [`Topology::upstream_tasks`].
    pub fn for_task(topology: &Topology, task: TaskId, max_buffered_bytes: usize) -> Self {
        Aligner::new(topology.upstream_tasks(task), max_buffered_bytes)
    }

    pub fn upstream(&self) -> &[TaskId] {
        &self.upstream
    }

    /// Decides what to do with a batch of records from `src` (no markers in it: see [`crate::batch::Segments`]).
    pub fn accept(&mut self, src: TaskId, batch: &[u8]) -> Accept {
        let Some(a) = &mut self.aligning else {
            return Accept::Process;
        };
        let Ok(i) = self.upstream.binary_search(&src) else {
            return Accept::Process;
        };
        if !a.marked[i] {
            return Accept::Process;
        }
        let kept = Released {
            src,
            batch: batch.to_vec(),
        };
        if a.bytes.saturating_add(batch.len()) > self.max_buffered_bytes {
            let a = self.aligning.take().expect("aligning");
            self.abandoned += 1;
            let mut released = a.buffer;
            released.push(kept);
            return Accept::Abandoned {
                checkpoint: a.checkpoint,
                released,
            };
        }
        a.bytes += batch.len();
        a.buffer.push(kept);
        Accept::Buffered
    }

    /// Takes the marker of `checkpoint` from `src`, received at `now`.
    pub fn on_marker(&mut self, src: TaskId, checkpoint: CheckpointId, now: Instant) -> MarkerOutcome {
        let Ok(i) = self.upstream.binary_search(&src) else {
            return self.ignore(Ignored::NotUpstream);
        };
        match self.newest {
            Some(newest) if checkpoint < newest => return self.ignore(Ignored::Stale),
            Some(newest) if checkpoint == newest => {
                let Some(a) = &mut self.aligning else {
                    return self.ignore(Ignored::Finished);
                };
                if a.marked[i] {
                    return self.ignore(Ignored::Duplicate);
                }
                a.marked[i] = true;
                a.pending -= 1;
                if a.pending > 0 {
                    return MarkerOutcome::Waiting {
                        checkpoint,
                        pending: a.pending,
                    };
                }
                let a = self.aligning.take().expect("aligning");
                self.completed += 1;
                return MarkerOutcome::Aligned {
                    checkpoint,
                    started: a.started,
                    released: a.buffer,
                };
            }
            _ => {}
        }
        // The first marker of a newer checkpoint.
        self.newest = Some(checkpoint);
        let mut marked = vec![false; self.upstream.len()];
        marked[i] = true;
        let pending = self.upstream.len() - 1;
        let overtaken = self.aligning.take();
        if pending == 0 {
            // A single upstream task: nothing to wait for. (An alignment in progress needs two upstream tasks, so
            // there is none to give up here.)
            debug_assert!(overtaken.is_none());
            self.completed += 1;
            return MarkerOutcome::Aligned {
                checkpoint,
                started: now,
                released: Vec::new(),
            };
        }
        self.aligning = Some(Alignment {
            checkpoint,
            started: now,
            marked,
            pending,
            buffer: Vec::new(),
            bytes: 0,
        });
        match overtaken {
            Some(old) => {
                self.abandoned += 1;
                MarkerOutcome::Overtaken {
                    abandoned: old.checkpoint,
                    by: checkpoint,
                    released: old.buffer,
                }
            }
            None => MarkerOutcome::Waiting { checkpoint, pending },
        }
    }

    /// Gives up the alignment in progress, if any (the caller's own decision: the checkpoint was declared failed, or
    /// the input ended): returns its checkpoint and the batches to process, in order. Later markers of that
    /// checkpoint are ignored.
    pub fn abandon(&mut self) -> Option<(CheckpointId, Vec<Released>)> {
        let a = self.aligning.take()?;
        self.abandoned += 1;
        Some((a.checkpoint, a.buffer))
    }

    /// Forgets everything but the counters, dropping buffered batches: for a rollback, after which the upstream tasks
    /// send again from the restored checkpoint. The caller must feed nothing received before the rollback after this.
    pub fn reset(&mut self) {
        self.aligning = None;
        self.newest = None;
    }

    /// The checkpoint being aligned, if any.
    pub fn aligning(&self) -> Option<CheckpointId> {
        self.aligning.as_ref().map(|a| a.checkpoint)
    }

    pub fn buffered_bytes(&self) -> usize {
        self.aligning.as_ref().map_or(0, |a| a.bytes)
    }

    pub fn stats(&self) -> AlignerStats {
        AlignerStats {
            completed: self.completed,
            abandoned: self.abandoned,
            ignored_markers: self.ignored_markers,
            buffered_bytes: self.buffered_bytes(),
            buffered_batches: self.aligning.as_ref().map_or(0, |a| a.buffer.len()),
            aligning: self.aligning.as_ref().map(|a| (a.checkpoint, a.started)),
        }
    }

    fn ignore(&mut self, why: Ignored) -> MarkerOutcome {
        self.ignored_markers += 1;
        MarkerOutcome::Ignored(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    /// Batches carry their tag (`<src>.<n>`), padded with zeros to their length.
    fn tag_of(batch: &[u8]) -> String {
        String::from_utf8(batch.iter().copied().take_while(|&b| b != 0).collect()).unwrap()
    }

    fn tags(released: &[Released]) -> String {
        released.iter().map(|r| tag_of(&r.batch)).collect::<Vec<_>>().join(",")
    }

    /// Runs `script` through an aligner over `upstream` and describes what the caller would see.
    ///
    /// Script: `<src>b` a 10-byte batch from task `src` (`<src>b<len>` for another length), `<src>m<c>` the marker of
    /// checkpoint `c`. Trace: a processed batch is its tag `<src>.<n>` (n counts `src`'s batches from 1), a buffered
    /// one `(<tag>)`, an abandonment by the bound `D<c>[released]`; markers give `W<c>/<pending>`,
    /// `A<c>[released]`, `X<old>><new>[released]` or `I:<reason>`.
    fn check(upstream: &[u32], bound: usize, script: &str, expect: &str) {
        let t0 = Instant::now();
        let mut a = Aligner::new(upstream.iter().map(|&t| TaskId(t)), bound);
        let mut sent: BTreeMap<u32, usize> = BTreeMap::new();
        let mut trace = Vec::new();
        for (step, token) in script.split_whitespace().enumerate() {
            let now = t0 + Duration::from_millis(step as u64);
            let at = token.find(['b', 'm']).expect("b or m");
            let src = TaskId(token[..at].parse().unwrap());
            let arg = &token[at + 1..];
            if token[at..].starts_with('b') {
                let n = sent.entry(src.0).or_default();
                *n += 1;
                let mut batch = format!("{}.{n}", src.0).into_bytes();
                batch.resize(if arg.is_empty() { 10 } else { arg.parse().unwrap() }, 0);
                trace.push(match a.accept(src, &batch) {
                    Accept::Process => tag_of(&batch),
                    Accept::Buffered => format!("({})", tag_of(&batch)),
                    Accept::Abandoned { checkpoint, released } => format!("D{}[{}]", checkpoint.0, tags(&released)),
                });
            } else {
                let c = CheckpointId(arg.parse().unwrap());
                trace.push(match a.on_marker(src, c, now) {
                    MarkerOutcome::Ignored(why) => format!("I:{}", format!("{why:?}").to_lowercase()),
                    MarkerOutcome::Waiting { checkpoint, pending } => format!("W{}/{pending}", checkpoint.0),
                    MarkerOutcome::Aligned {
                        checkpoint, released, ..
                    } => format!("A{}[{}]", checkpoint.0, tags(&released)),
                    MarkerOutcome::Overtaken {
                        abandoned,
                        by,
                        released,
                    } => {
                        format!("X{}>{}[{}]", abandoned.0, by.0, tags(&released))
                    }
                });
            }
            assert!(a.buffered_bytes() <= bound, "{script}: bound passed at {token}");
        }
        assert_eq!(
            trace.join(" "),
            expect,
            "upstream {upstream:?}, bound {bound}, script {script}"
        );
    }

    #[test]
    fn two_upstream_tasks_in_either_order() {
        // Batches after a task's marker wait; batches of the task still due pass; the last marker releases.
        check(
            &[1, 2],
            1 << 20,
            "1b 1m1 1b 2b 2m1 1b",
            "1.1 W1/1 (1.2) 2.1 A1[1.2] 1.3",
        );
        check(
            &[1, 2],
            1 << 20,
            "2m1 1b 2b 2b 1m1 2b",
            "W1/1 1.1 (2.1) (2.2) A1[2.1,2.2] 2.3",
        );
        // Released batches keep their arrival order across sources.
        check(&[1, 2], 1 << 20, "1m1 1b 2b", "W1/1 (1.1) 2.1");
        check(
            &[1, 2],
            1 << 20,
            "1m1 1b 1b 2m1 2b 1b",
            "W1/1 (1.1) (1.2) A1[1.1,1.2] 2.1 1.3",
        );
    }

    #[test]
    fn three_upstream_tasks_markers_in_every_order() {
        for [x, y, z] in [[1, 2, 3], [1, 3, 2], [2, 1, 3], [2, 3, 1], [3, 1, 2], [3, 2, 1]] {
            let script = format!("{x}b {x}m7 {x}b {y}b {y}m7 {y}b {x}b {z}b {z}m7 {z}b {y}b");
            let expect =
                format!("{x}.1 W7/2 ({x}.2) {y}.1 W7/1 ({y}.2) ({x}.3) {z}.1 A7[{x}.2,{y}.2,{x}.3] {z}.2 {y}.3");
            check(&[1, 2, 3], 1 << 20, &script, &expect);
        }
    }

    #[test]
    fn a_newer_checkpoint_overtakes_the_one_being_aligned() {
        // Task 1 is a checkpoint ahead: checkpoint 1 is given up, its batches released before 2 starts.
        check(
            &[1, 2],
            1 << 20,
            "1m1 1b 1m2 1b 2b 2m1 2m2 1b",
            "W1/1 (1.1) X1>2[1.1] (1.2) 2.1 I:stale A2[1.2] 1.3",
        );
        // Task 2 skipped checkpoint 1.
        check(
            &[1, 2],
            1 << 20,
            "1m1 1b 2m2 2b 1m2",
            "W1/1 (1.1) X1>2[1.1] (2.1) A2[2.1]",
        );
        // Ids compare as numbers, not as text.
        check(&[1, 2], 1 << 20, "1m9 2m10 1m10", "W9/1 X9>10[] A10[]");
    }

    #[test]
    fn markers_that_change_nothing_are_ignored() {
        check(
            &[1, 2],
            1 << 20,
            "1m5 1m5 1m4 9m5 2m5 2m5 1m3 1m5",
            "W5/1 I:duplicate I:stale I:notupstream A5[] I:finished I:stale I:finished",
        );
    }

    #[test]
    fn the_byte_bound_abandons_the_alignment() {
        // 20 bytes fit a bound of 25; the third batch would pass it: everything is released, this batch last.
        check(
            &[1, 2],
            25,
            "1m1 1b 1b 1b 2b 2m1 1b 1m2 1b 2m2",
            "W1/1 (1.1) (1.2) D1[1.1,1.2,1.3] 2.1 I:finished 1.4 W2/1 (1.5) A2[1.5]",
        );
        check(&[1, 2], 20, "1m1 1b 1b 2m1", "W1/1 (1.1) (1.2) A1[1.1,1.2]");
        check(&[1, 2], 0, "1m1 2b 1b 2m1", "W1/1 2.1 D1[1.1] I:finished");
        check(&[1, 2], 100, "1m1 1b200", "W1/1 D1[1.1]");
    }

    #[test]
    fn a_single_upstream_task_aligns_at_once() {
        check(&[4], 0, "4b 4m1 4b 4m2 4m2 4m1", "4.1 A1[] 4.2 A2[] I:finished I:stale");
    }

    #[test]
    fn a_task_without_upstream_never_aligns() {
        // A spout: it processes everything; markers (none should come) are ignored.
        check(&[], 0, "1b 1m1 1b", "1.1 I:notupstream 1.2");
    }

    #[test]
    fn counters_abandon_and_reset() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(30);
        let mut a = Aligner::new([TaskId(3), TaskId(1), TaskId(3)], 1000);
        assert_eq!(a.upstream(), [TaskId(1), TaskId(3)]);
        assert_eq!(a.stats(), AlignerStats::default());
        assert!(matches!(
            a.on_marker(TaskId(1), CheckpointId(1), t0),
            MarkerOutcome::Waiting { .. }
        ));
        assert_eq!(a.accept(TaskId(1), &[0; 100]), Accept::Buffered);
        assert_eq!(a.accept(TaskId(3), &[0; 100]), Accept::Process);
        assert_eq!(
            a.stats(),
            AlignerStats {
                buffered_bytes: 100,
                buffered_batches: 1,
                aligning: Some((CheckpointId(1), t0)),
                ..AlignerStats::default()
            }
        );
        let MarkerOutcome::Aligned { started, released, .. } = a.on_marker(TaskId(3), CheckpointId(1), later) else {
            panic!("expected aligned")
        };
        assert_eq!((later - started, released.len()), (Duration::from_millis(30), 1));
        assert!(matches!(
            a.on_marker(TaskId(1), CheckpointId(0), later),
            MarkerOutcome::Ignored(Ignored::Stale)
        ));
        a.on_marker(TaskId(3), CheckpointId(2), later);
        a.accept(TaskId(3), &[1; 10]);
        let (c, released) = a.abandon().unwrap();
        assert_eq!((c, released.len()), (CheckpointId(2), 1));
        assert_eq!(a.abandon(), None);
        assert_eq!(
            a.stats(),
            AlignerStats {
                completed: 1,
                abandoned: 1,
                ignored_markers: 1,
                ..AlignerStats::default()
            }
        );
        // A rollback drops what is held and forgets the checkpoints seen: ids may start again lower.
        a.on_marker(TaskId(3), CheckpointId(3), later);
        assert_eq!(a.accept(TaskId(3), &[1; 10]), Accept::Buffered);
        a.reset();
        assert_eq!((a.aligning(), a.buffered_bytes()), (None, 0));
        assert!(matches!(
            a.on_marker(TaskId(1), CheckpointId(1), later),
            MarkerOutcome::Waiting { .. }
        ));
    }

    #[test]
    fn for_task_aligns_over_the_topology_upstream() {
        use egret_api::{Bolt, BoltCollector, OutputDeclarer, Spout, SpoutCollector, TopologyBuilder, Tuple};
        struct S;
        impl Spout for S {
            fn declare_outputs(&self, out: &mut OutputDeclarer) {
                out.declare(["x"]);
            }
            fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
        }
        struct B;
        impl Bolt for B {
            fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
        }
        let mut b = TopologyBuilder::new("t");
        b.set_spout("s", 3, || S);
        b.set_bolt("b", 2, || B).fields_grouping("s", ["x"]);
        let t = b.build().unwrap();
        // b = tasks 1..=2, s = 3..=5.
        assert_eq!(
            Aligner::for_task(&t, TaskId(1), 0).upstream(),
            [TaskId(3), TaskId(4), TaskId(5)]
        );
        assert_eq!(Aligner::for_task(&t, TaskId(3), 0).upstream(), []);
    }

    /// One upstream task's output: batches (their length) and the markers of the checkpoints it takes.
    #[derive(Debug, Clone)]
    enum Sent {
        Batch(usize),
        Marker(u64),
    }

    /// Scripts for `n` upstream tasks over `checkpoints` checkpoints: each task sends a few batches before each of
    /// its markers (it skips a checkpoint now and then) and a few after the last.
    fn scripts() -> impl Strategy<Value = Vec<Vec<Sent>>> {
        let before = (
            proptest::collection::vec(8usize..72, 0..4),
            proptest::bool::weighted(0.85),
        );
        let task = (
            proptest::collection::vec(before, 5),
            proptest::collection::vec(8usize..72, 0..4),
        );
        (1usize..=4, 0usize..=5, proptest::collection::vec(task, 4)).prop_map(|(n, checkpoints, tasks)| {
            tasks
                .into_iter()
                .take(n)
                .map(|(befores, after)| {
                    let mut out = Vec::new();
                    for (c, (lens, marker)) in befores.into_iter().take(checkpoints).enumerate() {
                        out.extend(lens.into_iter().map(Sent::Batch));
                        if marker {
                            out.push(Sent::Marker(c as u64 + 1));
                        }
                    }
                    out.extend(after.into_iter().map(Sent::Batch));
                    out
                })
                .collect()
        })
    }

    proptest! {
        /// N upstream tasks send batches and markers, interleaved at random as a network would (each task's order
        /// kept). A caller drives the aligner as the module doc says. Every batch is processed exactly once, each
        /// source's batches in order, and each completed checkpoint's snapshot point is the consistent cut: exactly
        /// the batches every upstream task sent before its marker.
        #[test]
        fn alignment_keeps_order_and_snapshots_the_consistent_cut(
            scripts in scripts(),
            picks in proptest::collection::vec(any::<u32>(), 0..300),
            bound in prop_oneof![Just(usize::MAX), 0usize..400],
        ) {
            let t0 = Instant::now();
            let upstream: Vec<TaskId> = (0..scripts.len() as u32).map(|i| TaskId(10 + 2 * i)).collect();
            let mut a = Aligner::new(upstream.clone(), bound);
            // Batch payload: src u32 | seq u32, padded to its length.
            let encode = |src: TaskId, seq: u32, len: usize| {
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&src.0.to_le_bytes());
                b.extend_from_slice(&seq.to_le_bytes());
                b.resize(len, 0);
                b
            };
            let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let decode = |b: &[u8]| (word(b, 0), word(b, 4));

            let mut next = vec![0usize; scripts.len()];
            let mut seqs = vec![0u32; scripts.len()];
            let mut processed: Vec<(u32, u32)> = Vec::new();
            let mut cuts: BTreeMap<u64, BTreeSet<(u32, u32)>> = BTreeMap::new();
            let mut step = 0usize;
            loop {
                let live: Vec<usize> = (0..scripts.len()).filter(|&u| next[u] < scripts[u].len()).collect();
                if live.is_empty() {
                    break;
                }
                let pick = picks.get(step).copied().unwrap_or(step as u32);
                let u = live[pick as usize % live.len()];
                step += 1;
                let now = t0 + Duration::from_micros(step as u64);
                let src = upstream[u];
                match scripts[u][next[u]] {
                    Sent::Batch(len) => {
                        seqs[u] += 1;
                        let batch = encode(src, seqs[u], len);
                        match a.accept(src, &batch) {
                            Accept::Process => processed.push(decode(&batch)),
                            Accept::Buffered => {}
                            Accept::Abandoned { released, .. } => {
                                prop_assert_eq!(&released.last().unwrap().batch, &batch);
                                processed.extend(released.iter().map(|r| decode(&r.batch)));
                            }
                        }
                    }
                    Sent::Marker(c) => match a.on_marker(src, CheckpointId(c), now) {
                        MarkerOutcome::Aligned { checkpoint, released, .. } => {
                            // The snapshot is taken here, before the released batches.
                            let cut = processed.iter().copied().collect();
                            prop_assert!(cuts.insert(checkpoint.0, cut).is_none(), "checkpoint {} aligned twice", c);
                            processed.extend(released.iter().map(|r| decode(&r.batch)));
                        }
                        MarkerOutcome::Overtaken { released, .. } => {
                            processed.extend(released.iter().map(|r| decode(&r.batch)));
                        }
                        MarkerOutcome::Waiting { .. } | MarkerOutcome::Ignored(_) => {}
                    },
                }
                next[u] += 1;
                prop_assert!(a.buffered_bytes() <= bound);
            }
            // The input ended: whatever is still held back is processed.
            if let Some((_, released)) = a.abandon() {
                processed.extend(released.iter().map(|r| decode(&r.batch)));
            }

            // Exactly once, and in order per source.
            let total: u32 = seqs.iter().sum();
            prop_assert_eq!(processed.len(), total as usize);
            for (u, src) in upstream.iter().enumerate() {
                let order: Vec<u32> = processed.iter().filter(|p| p.0 == src.0).map(|p| p.1).collect();
                prop_assert_eq!(order, (1..=seqs[u]).collect::<Vec<_>>(), "task {} out of order", src.0);
            }
            // The consistent cut of every completed checkpoint.
            for (&c, cut) in &cuts {
                let mut expect = BTreeSet::new();
                for (u, script) in scripts.iter().enumerate() {
                    let marker = script.iter().position(|s| matches!(s, Sent::Marker(m) if *m == c));
                    prop_assert!(marker.is_some(), "checkpoint {} aligned without task {}'s marker", c, upstream[u].0);
                    let before = script[..marker.unwrap()].iter().filter(|s| matches!(s, Sent::Batch(_))).count();
                    expect.extend((1..=before as u32).map(|seq| (upstream[u].0, seq)));
                }
                prop_assert_eq!(cut, &expect, "checkpoint {}", c);
            }
            let stats = a.stats();
            prop_assert_eq!(stats.completed as usize, cuts.len());
            // With one upstream task and no bound, every marker aligns at once.
            if bound == usize::MAX && scripts.len() == 1 {
                let markers = scripts[0].iter().filter(|s| matches!(s, Sent::Marker(_))).count();
                prop_assert_eq!(cuts.len(), markers);
            }
        }
    }
}
