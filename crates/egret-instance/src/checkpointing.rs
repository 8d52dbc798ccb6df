//! Effectively-once on the instance side (`docs/checkpoints.md`): the instance's part of what the simulator's
//! coordinator thread and mailboxes do (`egret-simulator/src/checkpoints.rs`). The coordinator itself runs in the
//! tmanager; its word reaches the instance as CONTROL frames on the stmgr connection, and the instance's answers go
//! back the same way.
//!
//! - **Commands.** The link (`crate::link`) turns the stmgr's frames into [`TaskCommand`]s in a queue the task loop
//!   checks once per iteration ([`Checkpointing::next_command`]: one atomic load when empty). A physical plan with a
//!   rollback of a newer epoch becomes a `Restore` with the task's state read from the store here, on the task
//!   thread (the task can do nothing useful until it has it); a state that cannot be read becomes a
//!   `RestoreFailed` report instead, and no command. `StartCheckpoint` becomes `Checkpoint`, `CheckpointCommitted`
//!   becomes `Committed`.
//! - **Snapshots.** [`Checkpointing::save`] hands a snapshot to the **writer thread**, which writes it to the
//!   [`LocalStore`] so that the task thread never waits for the disk. A saved state is reported as
//!   `InstanceStateStored`; a failed write is logged and counted as the task's error, and nothing is reported: that
//!   checkpoint stays incomplete and the topology keeps running (the next checkpoint may succeed).
//! - **Reports.** Only the task thread writes to the socket. Every control message the instance sends
//!   (`InstanceStateStored`, `RestoreFailed`) waits in [`Reports`] until the link moves it to its out queue; the
//!   writer thread also signals an eventfd, which the link's `ppoll` watches beside the socket, so a report goes
//!   out at once even while the task sleeps.
//!
//! This module never touches the socket and never blocks the task thread, except for the state read of a restore.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};

use egret_api::{CheckpointId, TaskId, Topology};
use egret_checkpoint::{CheckpointStore, LocalStore};
use egret_proto::egret::{InstanceStateStored, RestoreFailed, Rollback, control};
use egret_runtime::checkpoint::{Snapshot, TaskCommand};
use egret_runtime::{TaskError, TaskMetrics};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves a queue, which is still a queue.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queue whose emptiness is one atomic load: the task loop asks it on every iteration.
struct Pending<T> {
    any: AtomicBool,
    items: Mutex<VecDeque<T>>,
}

impl<T> Pending<T> {
    fn new() -> Self {
        Pending {
            any: AtomicBool::new(false),
            items: Mutex::new(VecDeque::new()),
        }
    }

    fn push(&self, item: T) {
        let mut items = lock(&self.items);
        items.push_back(item);
        self.any.store(true, SeqCst);
    }

    fn is_empty(&self) -> bool {
        !self.any.load(SeqCst)
    }

    fn pop(&self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let mut items = lock(&self.items);
        let item = items.pop_front();
        if items.is_empty() {
            self.any.store(false, SeqCst);
        }
        item
    }

    fn take_all(&self) -> VecDeque<T> {
        if self.is_empty() {
            return VecDeque::new();
        }
        let mut items = lock(&self.items);
        self.any.store(false, SeqCst);
        std::mem::take(&mut *items)
    }
}

/// An eventfd: the writer thread signals it, the task thread's `ppoll` wakes on it. Counts are irrelevant (a wake
/// means "look at the reports"), so it is read only to make it quiet again.
struct Wakeup(File);

impl Wakeup {
    fn new() -> io::Result<Wakeup> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else holds it.
        Ok(Wakeup(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    fn signal(&self) {
        // Fails only when the counter would overflow, and then it is readable anyway.
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    fn clear(&self) {
        // `WouldBlock` when not signalled: already quiet.
        let _ = (&self.0).read(&mut [0u8; 8]);
    }
}

/// Control messages for the stmgr, waiting for the task thread to write them.
struct Reports {
    pending: Pending<control::Msg>,
    wakeup: Wakeup,
}

impl Reports {
    fn send(&self, msg: control::Msg) {
        self.pending.push(msg);
        // After the push: a task thread woken by the signal finds the message.
        self.wakeup.signal();
    }
}

/// The instance's effectively-once machinery, shared by the task thread (its link and its loop) and the writer
/// thread. Exists only under `topology.reliability.mode=EFFECTIVELY_ONCE`.
pub(crate) struct Checkpointing {
    task: TaskId,
    store: LocalStore,
    commands: Pending<TaskCommand>,
    reports: Arc<Reports>,
    /// To the writer thread. Unbounded, so that `save` never blocks the task: it holds at most the snapshots of
    /// the checkpoints a slow store has not written yet, one per checkpoint. (`Sender` is `Sync`: `save` is called
    /// through a shared reference.)
    snapshots: mpsc::Sender<Snapshot>,
    /// The newest rollback seen: older or repeated ones (a plan sent again) are ignored, and a failed restore is
    /// reported against it.
    last_rollback: Mutex<Option<Rollback>>,
    metrics: Arc<TaskMetrics>,
}

impl Checkpointing {
    /// Sets up the reports' eventfd and starts the writer thread, which ends when this is dropped.
    pub(crate) fn start(task: TaskId, store: LocalStore, metrics: Arc<TaskMetrics>) -> io::Result<Checkpointing> {
        let reports = Arc::new(Reports {
            pending: Pending::new(),
            wakeup: Wakeup::new()?,
        });
        let (snapshots, received) = mpsc::channel();
        {
            let (store, reports, metrics) = (store.clone(), Arc::clone(&reports), Arc::clone(&metrics));
            std::thread::Builder::new()
                .name("checkpoint-writer".into())
                .spawn(move || write_snapshots(&store, &received, &reports, &metrics))?;
        }
        tracing::info!(store = %store.describe(), "effectively-once: checkpoints go to the store");
        Ok(Checkpointing {
            task,
            store,
            commands: Pending::new(),
            reports,
            snapshots,
            last_rollback: Mutex::new(None),
            metrics,
        })
    }

    /// The task loop's next command (one atomic load when there is none).
    pub(crate) fn next_command(&self) -> Option<TaskCommand> {
        self.commands.pop()
    }

    /// Whether commands wait for the task loop: the link then does not sleep.
    pub(crate) fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// A physical plan's rollback: if its epoch is newer than any seen, reads the task's state of its checkpoint and
    /// queues the `Restore`; returns whether it did. A state that cannot be read is reported as `RestoreFailed`
    /// (the tmanager then rolls back to an older checkpoint) and nothing is queued.
    ///
    /// After a rescale (`rollback.layout` names this task's component) the state is the key groups the task owns
    /// now, gathered from the states of the tasks the component had when the checkpoint was taken.
    pub(crate) fn rollback(&self, rollback: Rollback, topology: &Topology) -> bool {
        {
            let mut last = lock(&self.last_rollback);
            if last.as_ref().is_some_and(|l| rollback.epoch <= l.epoch) {
                return false;
            }
            *last = Some(rollback.clone());
        }
        // Checkpoint ids start at 1: 0 means a clean start.
        let checkpoint = (rollback.checkpoint != 0).then_some(CheckpointId(rollback.checkpoint));
        let loaded = checkpoint.map(|c| self.load(c, &rollback, topology)).transpose();
        let state = match loaded.map(Option::flatten) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(
                    epoch = rollback.epoch,
                    checkpoint = rollback.checkpoint,
                    error = %e,
                    "cannot read the task's state for the rollback"
                );
                self.metrics.record_error(format!(
                    "rollback to checkpoint {} (epoch {}): {e}",
                    rollback.checkpoint, rollback.epoch
                ));
                self.report_restore_failed(&rollback, e.to_string());
                return false;
            }
        };
        tracing::info!(epoch = rollback.epoch, checkpoint = rollback.checkpoint, "rolling back");
        self.commands.push(TaskCommand::Restore {
            epoch: rollback.epoch,
            checkpoint,
            state,
        });
        true
    }

    /// The task's state of `checkpoint`: its own blob, or, for a component the rollback's layout says was rescaled
    /// since, its key groups out of the old tasks' blobs.
    fn load(
        &self,
        checkpoint: CheckpointId,
        rollback: &Rollback,
        topology: &Topology,
    ) -> Result<Option<Vec<u8>>, egret_checkpoint::RescaleLoadError> {
        let Some((ci, index)) = topology.task_component(self.task) else {
            return Ok(Some(self.store.load(checkpoint, self.task)?));
        };
        let component = &topology.components()[ci];
        match rollback.layout.iter().find(|l| l.component == component.name) {
            None => Ok(Some(self.store.load(checkpoint, self.task)?)),
            Some(old) => {
                let old: Vec<TaskId> = old.task_ids.iter().map(|&t| TaskId(t)).collect();
                tracing::info!(
                    checkpoint = checkpoint.0,
                    old_tasks = ?old,
                    index,
                    tasks = component.parallelism,
                    "restoring this task's key groups from the tasks the component had at the checkpoint"
                );
                egret_checkpoint::load_rescaled(
                    &self.store,
                    checkpoint,
                    &old,
                    index as usize,
                    component.parallelism as usize,
                )
            }
        }
    }

    /// Queues a command that needs nothing but the message (`Checkpoint`, `Committed`).
    pub(crate) fn push_command(&self, cmd: TaskCommand) {
        self.commands.push(cmd);
    }

    /// Hands a snapshot to the writer thread.
    pub(crate) fn save(&self, snapshot: Snapshot) {
        if let Err(mpsc::SendError(s)) = self.snapshots.send(snapshot) {
            // Only if the writer thread died (it panicked): the checkpoint stays incomplete.
            self.metrics.record_error(format!(
                "checkpoint {} not saved: the checkpoint writer thread is gone",
                s.checkpoint
            ));
        }
    }

    /// The task could not carry out the newest rollback (its component failed to start, or it dropped input of the
    /// new epoch): the tmanager must roll back again.
    pub(crate) fn command_failed(&self, error: TaskError) {
        let rollback = lock(&self.last_rollback).clone().unwrap_or_default();
        tracing::error!(
            epoch = rollback.epoch,
            checkpoint = rollback.checkpoint,
            error = %error,
            "the task could not carry out its rollback"
        );
        self.metrics.record_error(error.to_string());
        self.report_restore_failed(&rollback, error.to_string());
    }

    fn report_restore_failed(&self, rollback: &Rollback, error: String) {
        self.reports.send(control::Msg::RestoreFailed(RestoreFailed {
            task_id: self.task.0 as i32,
            epoch: rollback.epoch,
            checkpoint: rollback.checkpoint,
            error,
        }));
    }

    /// The descriptor the link's `ppoll` watches: readable when reports wait.
    pub(crate) fn wakeup_fd(&self) -> RawFd {
        self.reports.wakeup.0.as_raw_fd()
    }

    /// Quiets the wakeup descriptor after `ppoll` saw it signalled (before taking the reports: one pushed after
    /// the take signals it again).
    pub(crate) fn clear_wakeup(&self) {
        self.reports.wakeup.clear();
    }

    /// The reports waiting for the socket, oldest first (one atomic load when there are none).
    pub(crate) fn take_reports(&self) -> VecDeque<control::Msg> {
        if self.reports.pending.is_empty() {
            return VecDeque::new();
        }
        // Quiet the eventfd before taking, for the same reason as `clear_wakeup`: taken here, the reports need no
        // wakeup later.
        self.reports.wakeup.clear();
        self.reports.pending.take_all()
    }
}

/// The writer thread: writes each snapshot to the store and reports it, until the task side is dropped.
fn write_snapshots(store: &LocalStore, snapshots: &mpsc::Receiver<Snapshot>, reports: &Reports, metrics: &TaskMetrics) {
    for s in snapshots {
        match store.save(s.checkpoint, s.task, &s.state) {
            Ok(bytes) => {
                tracing::debug!(checkpoint = %s.checkpoint, epoch = s.epoch, bytes, "checkpoint saved");
                reports.send(control::Msg::InstanceStateStored(InstanceStateStored {
                    task_id: s.task.0 as i32,
                    epoch: s.epoch,
                    checkpoint: s.checkpoint.0,
                    bytes,
                }));
            }
            Err(e) => {
                tracing::error!(checkpoint = %s.checkpoint, error = %e, "checkpoint not saved");
                metrics.record_error(format!(
                    "checkpoint {} of task {} not saved ({}): {e}",
                    s.checkpoint,
                    s.task,
                    store.describe()
                ));
            }
        }
    }
}
