//! Effectively-once in the simulator: the coordinator thread. It runs the same I/O-free
//! [`egret_runtime::coordinator::Coordinator`] the tmanager runs, writes the tasks' snapshots to a
//! [`CheckpointStore`] (off the task threads: tasks go on processing while their state is written), and hands each
//! task its commands (restore, checkpoint, committed) through a mailbox the task loop checks between batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use egret_api::{CheckpointId, TaskId, Topology};
use egret_checkpoint::CheckpointStore;
use egret_runtime::checkpoint::{Snapshot, TaskCommand};
use egret_runtime::coordinator::{Coordinator, CoordinatorStats, Rollback};

/// A task's commands, waiting for its loop.
#[derive(Default)]
pub(crate) struct Mailbox {
    any: AtomicBool,
    commands: Mutex<VecDeque<TaskCommand>>,
}

impl Mailbox {
    pub(crate) fn push(&self, cmd: TaskCommand) {
        if let Ok(mut q) = self.commands.lock() {
            q.push_back(cmd);
            self.any.store(true, SeqCst);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(SeqCst)
    }

    pub(crate) fn pop(&self) -> Option<TaskCommand> {
        if !self.any.load(SeqCst) {
            return None;
        }
        let mut q = self.commands.lock().ok()?;
        let cmd = q.pop_front();
        if q.is_empty() {
            self.any.store(false, SeqCst);
        }
        cmd
    }
}

/// What tasks and the `Running` handle tell the coordinator thread.
pub(crate) enum Event {
    Saved(Snapshot),
    /// A task died (injected by a test) or a component failed to restore: roll everything back.
    Failure {
        task: TaskId,
        reason: String,
    },
}

/// What the coordinator thread shows the `Running` handle.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStatus {
    /// Complete checkpoints kept, oldest first.
    pub complete: Vec<CheckpointId>,
    pub epoch: u32,
    pub stats: CoordinatorStats,
    /// Durations of completed checkpoints (start to last save), in completion order.
    pub durations: Vec<Duration>,
    /// State bytes of the newest complete checkpoint.
    pub last_bytes: u64,
    /// Errors: store failures, state that could not be restored.
    pub errors: Vec<String>,
    /// A rollback found no complete checkpoint it could read back: the topology stopped processing.
    pub halted: bool,
}

pub(crate) struct CoordinatorThread {
    pub(crate) topology: Arc<Topology>,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) mailboxes: Arc<Vec<Mailbox>>,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) status: Arc<Mutex<CheckpointStatus>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) coordinator: Coordinator,
    pub(crate) first: Rollback,
}

/// The longest the coordinator thread sleeps, so that it sees `stop` soon.
const POLL: Duration = Duration::from_millis(5);

impl CoordinatorThread {
    fn mailbox(&self, task: TaskId) -> Option<&Mailbox> {
        self.mailboxes.get(task.0 as usize)
    }

    fn note_error(&self, error: String) {
        if let Ok(mut s) = self.status.lock() {
            s.errors.push(error);
        }
    }

    fn publish(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.complete = self.coordinator.complete().to_vec();
            s.epoch = self.coordinator.epoch();
            s.stats = self.coordinator.stats();
        }
    }

    /// Reads every task's state of `rollback.checkpoint` and only then sends the restores: if any cannot be read
    /// back, the next older complete checkpoint is tried; with none left, processing stops with an error.
    fn restore(&mut self, mut rollback: Rollback) {
        loop {
            let mut states = Vec::new();
            let mut failed = None;
            if let Some(checkpoint) = rollback.checkpoint {
                for (task, _, _) in self.topology.tasks() {
                    match self.store.load(checkpoint, task) {
                        Ok(state) => states.push(Some(state)),
                        Err(e) => {
                            failed = Some((checkpoint, e));
                            break;
                        }
                    }
                }
            } else {
                states = self.topology.tasks().map(|_| None).collect();
            }
            let Some((checkpoint, error)) = failed else {
                for ((task, _, _), state) in self.topology.tasks().zip(states) {
                    if let Some(m) = self.mailbox(task) {
                        m.push(TaskCommand::Restore {
                            epoch: rollback.epoch,
                            checkpoint: rollback.checkpoint,
                            state,
                        });
                    }
                }
                self.publish();
                return;
            };
            self.note_error(format!("cannot restore checkpoint {checkpoint}: {error}"));
            match self.coordinator.restore_failed(checkpoint, Instant::now()) {
                Ok(older) => rollback = older,
                Err(e) => {
                    self.note_error(e.to_string());
                    if let Ok(mut s) = self.status.lock() {
                        s.halted = true;
                    }
                    self.publish();
                    return;
                }
            }
        }
    }

    pub(crate) fn run(mut self) {
        let first = self.first;
        self.restore(first);
        let spouts: Vec<TaskId> = self
            .topology
            .tasks()
            .filter(|&(_, ci, _)| self.topology.components()[ci].kind.is_spout())
            .map(|(t, _, _)| t)
            .collect();
        while !self.stop.load(SeqCst) {
            let now = Instant::now();
            if let Some((epoch, checkpoint)) = self.coordinator.poll(now) {
                for &t in &spouts {
                    if let Some(m) = self.mailbox(t) {
                        m.push(TaskCommand::Checkpoint { epoch, checkpoint });
                    }
                }
                self.publish();
            }
            let wait = self.coordinator.next_start().saturating_duration_since(now).min(POLL);
            match self.events.recv_timeout(wait) {
                Ok(Event::Saved(s)) => self.saved(s),
                Ok(Event::Failure { task, reason }) => {
                    self.note_error(format!("task {task} failed: {reason}; rolling back"));
                    let rollback = self.coordinator.rollback(Instant::now());
                    self.restore(rollback);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Writes a task's snapshot; a failed write leaves its checkpoint incomplete (the next one may succeed).
    fn saved(&mut self, s: Snapshot) {
        let bytes = match self.store.save(s.checkpoint, s.task, &s.state) {
            Ok(n) => n,
            Err(e) => {
                self.note_error(format!(
                    "checkpoint {} of task {} not saved ({}): {e}",
                    s.checkpoint,
                    s.task,
                    self.store.describe()
                ));
                return;
            }
        };
        let Some(done) = self
            .coordinator
            .saved(s.task, s.epoch, s.checkpoint, bytes, Instant::now())
        else {
            return;
        };
        for old in &done.expired {
            if let Err(e) = self.store.delete(*old) {
                self.note_error(format!("cannot delete checkpoint {old}: {e}"));
            }
        }
        for (task, _, _) in self.topology.tasks() {
            if let Some(m) = self.mailbox(task) {
                m.push(TaskCommand::Committed {
                    checkpoint: done.checkpoint,
                });
            }
        }
        if let Ok(mut st) = self.status.lock() {
            st.durations.push(done.duration);
            st.last_bytes = done.bytes;
        }
        self.publish();
    }
}
