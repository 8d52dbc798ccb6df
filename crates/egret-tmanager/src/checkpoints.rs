//! Effectively-once in the tmanager: it runs the checkpoint [`Coordinator`] (the same I/O-free one the simulator
//! runs) over the stmgrs. See `docs/checkpoints.md`.
//!
//! - **Checkpoints.** A timer thread starts one every interval (`StartCheckpoint` to every stmgr, which hands it to
//!   its instances; spouts take it). Each instance writes its state to the store and reports
//!   `InstanceStateStored` through its stmgr; when every task has, the checkpoint is complete: recorded in the
//!   state manager (`StatefulCheckpoints`: the kept ones and the last epoch, so that a restarted tmanager goes on from
//!   there), the ones no longer kept are deleted from the store, and `CheckpointCommitted` goes to every instance.
//! - **Rollback.** The plan carries the rollback every task must be in (`PhysicalPlan.rollback`: epoch and
//!   checkpoint). When a task or a stmgr is lost, the checkpoint under way is given up and none is started or
//!   completed until the topology is whole again (a task's state taken while a peer was missing could miss tuples
//!   sent to it); when the last lost task is back, a new epoch restores the newest complete checkpoint everywhere.
//!   A task that cannot restore reports `RestoreFailed`: if its state for that checkpoint does not read back from the
//!   store (checked here), the coordinator falls back to the next older complete checkpoint; otherwise it simply
//!   rolls back again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use egret_api::{CheckpointId, Config, ReliabilityMode, TaskId, Topology};
use egret_checkpoint::{CheckpointStore, LocalStore};
use egret_proto::egret::{
    CheckpointCommitted, CheckpointLayout, ComponentTasks, InstanceStateStored, PackingPlan, RestoreFailed,
    Rollback as RollbackMsg, StartCheckpoint, StatefulCheckpoints, UpdateTopology, control,
};
use egret_runtime::coordinator::{Coordinator, Rollback};
use egret_statemgr::StateManager;
use egret_transport::control_frame;

use crate::{Tmanager, TmanagerError, push_locked};

pub(crate) struct Checkpoints {
    coordinator: Coordinator,
    store: LocalStore,
    current: Rollback,
    /// Tasks lost and not registered again.
    missing: BTreeSet<u32>,
    /// Each stmgr's tasks (from the packing plan): a lost stmgr takes them with it.
    tasks_of: BTreeMap<String, Vec<u32>>,
    /// A rollback found no complete checkpoint it could read back: nothing more is restored or checkpointed.
    halted: bool,
    /// Each component's task ids now.
    layout: Vec<ComponentTasks>,
    /// The layout each complete checkpoint was taken under (a rollback after a rescale tells the tasks of a changed
    /// component where their key groups were).
    layouts: BTreeMap<u64, Vec<ComponentTasks>>,
    /// A rescale waiting for its checkpoint, recorded with the checkpoints so that it outlives this tmanager.
    pub(crate) pending_update: Option<UpdateTopology>,
}

/// Each component's task ids.
fn layout_of(topology: &Topology) -> Vec<ComponentTasks> {
    topology
        .components()
        .iter()
        .zip(topology.task_ids())
        .map(|(c, task_ids)| ComponentTasks {
            component: c.name.clone(),
            task_ids,
        })
        .collect()
}

fn tasks_by_stmgr(packing: &PackingPlan) -> BTreeMap<String, Vec<u32>> {
    packing
        .containers
        .iter()
        .map(|c| {
            (
                format!("stmgr-{}", c.id),
                c.instances.iter().map(|i| i.task_id as u32).collect(),
            )
        })
        .collect()
}

impl Checkpoints {
    /// The coordinator of an effectively-once topology (`None` under other modes), and the first rollback: the newest
    /// complete checkpoint the state manager records (a restarted tmanager or `egret restart`), or a clean start (a
    /// new submit, or `topology.stateful.start.clean`).
    pub(crate) fn new(
        state: &dyn StateManager,
        name: &str,
        topology: &Topology,
        packing: &PackingPlan,
    ) -> Result<Option<Checkpoints>, TmanagerError> {
        let config: &Config = topology.config();
        if config.reliability_mode()? != ReliabilityMode::EffectivelyOnce {
            return Ok(None);
        }
        let store = LocalStore::new(state.checkpoints_dir(name)?);
        let known = store.checkpoints().unwrap_or_else(|e| {
            tracing::error!(error = %e, store = %store.describe(), "cannot list the checkpoint store");
            Vec::new()
        });
        let record = state.get_stateful_checkpoints(name)?.unwrap_or_default();
        let complete: Vec<CheckpointId> = record.complete.iter().map(|&c| CheckpointId(c)).collect();
        let tasks_of = tasks_by_stmgr(packing);
        let now = Instant::now();
        let mut coordinator = Coordinator::new(
            tasks_of.values().flatten().map(|&t| TaskId(t)),
            config.checkpoint_interval()?,
            config.checkpoints_kept()?,
            complete,
            known.last().map_or(0, |c| c.0),
            record.epoch,
            now,
        );
        let clean = config.stateful_start_clean()?;
        // Without an explicit checkpoint, `start` cannot fail.
        let current = coordinator.start(clean, None, now).unwrap_or(Rollback {
            epoch: record.epoch + 1,
            checkpoint: None,
        });
        tracing::info!(
            topology = %name,
            epoch = current.epoch,
            checkpoint = ?current.checkpoint.map(|c| c.0),
            store = %store.describe(),
            "effectively-once: starting from {}",
            current.checkpoint.map_or("a clean state".to_string(), |c| format!("checkpoint {c}"))
        );
        let c = Checkpoints {
            coordinator,
            store,
            current,
            missing: BTreeSet::new(),
            tasks_of,
            halted: false,
            layout: layout_of(topology),
            layouts: record
                .layouts
                .iter()
                .map(|l| (l.checkpoint, l.components.clone()))
                .collect(),
            pending_update: record.pending_update.clone(),
        };
        c.record(state, name);
        Ok(Some(c))
    }

    /// What the plan says every task must be in: the epoch, the checkpoint, and for each component whose tasks
    /// changed since that checkpoint was taken, the tasks it had then.
    pub(crate) fn rollback_msg(&self) -> RollbackMsg {
        let checkpoint = self.current.checkpoint.map_or(0, |c| c.0);
        RollbackMsg {
            epoch: self.current.epoch,
            checkpoint,
            layout: self.changed_since(CheckpointId(checkpoint)),
        }
    }

    /// A rescale: from now on the topology has `topology`'s tasks placed by `packing`. Every task rolls back to the
    /// newest complete checkpoint (the one the rescale waited for) under the new layout; tasks new to the topology
    /// are missing until their instances register, and once they all have, every task rolls back once more (what
    /// ran without them may have lost tuples sent to them).
    pub(crate) fn rescale(&mut self, topology: &Topology, packing: &PackingPlan, now: Instant) -> Rollback {
        let before: BTreeSet<u32> = self.tasks_of.values().flatten().copied().collect();
        self.tasks_of = tasks_by_stmgr(packing);
        let after: BTreeSet<u32> = self.tasks_of.values().flatten().copied().collect();
        self.coordinator.set_tasks(after.iter().map(|&t| TaskId(t)));
        self.missing.retain(|t| after.contains(t));
        self.missing.extend(after.difference(&before));
        self.layout = layout_of(topology);
        self.current = self.coordinator.rollback(now);
        self.current
    }

    /// Whether `task`'s state of `checkpoint` reads back from the store: its own blob, or, when its component's
    /// tasks changed since the checkpoint, the blobs of the tasks the component had then, split for it.
    fn state_reads_back(&self, checkpoint: CheckpointId, task: TaskId) -> bool {
        let now = self.layout.iter().find(|l| l.task_ids.contains(&task.0));
        let then = now.and_then(|now| {
            self.changed_since(checkpoint)
                .into_iter()
                .find(|l| l.component == now.component)
        });
        match (now, then) {
            (Some(now), Some(then)) => {
                let old: Vec<TaskId> = then.task_ids.iter().map(|&t| TaskId(t)).collect();
                let index = now.task_ids.iter().position(|&t| t == task.0).unwrap_or(0);
                egret_checkpoint::load_rescaled(&self.store, checkpoint, &old, index, now.task_ids.len()).is_ok()
            }
            _ => self.store.load(checkpoint, task).is_ok(),
        }
    }

    /// For each component whose tasks changed since `checkpoint` was taken, the tasks it had then.
    fn changed_since(&self, checkpoint: CheckpointId) -> Vec<ComponentTasks> {
        let Some(then) = self.layouts.get(&checkpoint.0) else {
            return Vec::new();
        };
        then.iter()
            .filter(|old| {
                self.layout
                    .iter()
                    .find(|now| now.component == old.component)
                    .is_none_or(|now| now.task_ids != old.task_ids)
            })
            .cloned()
            .collect()
    }

    /// Why the newest complete checkpoint's state could not follow `topology`'s new layout (a removed task of a
    /// component holds state that is not keyed, which cannot be merged into the remaining tasks), if it cannot.
    pub(crate) fn cannot_rescale_to(&self, topology: &Topology) -> Option<String> {
        let checkpoint = *self.coordinator.complete().last()?;
        let new = layout_of(topology);
        for old in self.layouts.get(&checkpoint.0)? {
            let Some(now) = new.iter().find(|n| n.component == old.component) else {
                continue;
            };
            if now.task_ids == old.task_ids {
                continue;
            }
            let blobs: Vec<Vec<u8>> = match old
                .task_ids
                .iter()
                .map(|&t| self.store.load(checkpoint, TaskId(t)))
                .collect()
            {
                Ok(b) => b,
                Err(e) => return Some(format!("checkpoint {checkpoint} does not read back: {e}")),
            };
            let refs: Vec<Option<&[u8]>> = blobs.iter().map(|b| Some(b.as_slice())).collect();
            for index in 0..now.task_ids.len() {
                if let Err(e) = egret_api::state::key_group_blob::rescale(&refs, index, now.task_ids.len()) {
                    return Some(format!("component {}: {e}", old.component));
                }
            }
        }
        None
    }

    pub(crate) fn record(&self, state: &dyn StateManager, name: &str) {
        let complete: Vec<u64> = self.coordinator.complete().iter().map(|c| c.0).collect();
        let record = StatefulCheckpoints {
            layouts: complete
                .iter()
                .filter_map(|c| {
                    self.layouts.get(c).map(|components| CheckpointLayout {
                        checkpoint: *c,
                        components: components.clone(),
                    })
                })
                .collect(),
            complete,
            epoch: self.coordinator.epoch(),
            pending_update: self.pending_update.clone(),
        };
        if let Err(e) = state.put_stateful_checkpoints(name, &record) {
            tracing::error!(error = %e, "cannot record the complete checkpoints");
        }
    }

    fn can_checkpoint(&self) -> bool {
        self.missing.is_empty() && !self.halted
    }
}

/// Runs `f` on the checkpoints of an effectively-once topology, if the tmanager has them.
fn with<T>(tm: &Tmanager, f: impl FnOnce(&mut Checkpoints, bool) -> Option<T>) -> Option<T> {
    let mut inner = tm.inner.lock().ok()?;
    let published = inner.plan.is_some();
    f(inner.ckpt.as_mut()?, published)
}

/// Queues `msg` for every registered stmgr (under the lock, so in order with the plans).
fn broadcast(tm: &Tmanager, msg: control::Msg) {
    let Ok(inner) = tm.inner.lock() else { return };
    let frame = control_frame(msg);
    for w in inner.stmgrs.values().filter_map(|s| s.writer.as_ref()) {
        let _ = w.send(frame.clone());
    }
}

/// Puts `rollback` in the plan, records the epoch and pushes the plan to every stmgr.
fn push_rollback(tm: &Tmanager, rollback: Rollback, why: &str) {
    {
        let Ok(mut inner) = tm.inner.lock() else { return };
        let Some(c) = inner.ckpt.as_mut() else { return };
        c.current = rollback;
        c.record(&*tm.state, &tm.opts.topology);
        let msg = c.rollback_msg();
        if let Some(plan) = inner.plan.as_mut() {
            plan.rollback = Some(msg);
        }
        // Under the lock: a checkpoint of the new epoch is queued after the plan that opens it.
        push_locked(tm, &inner);
    }
    tracing::warn!(
        topology = %tm.opts.topology,
        epoch = rollback.epoch,
        checkpoint = ?rollback.checkpoint.map(|c| c.0),
        "rolling every task back to {} ({why})",
        rollback.checkpoint.map_or("a clean state".to_string(), |c| format!("checkpoint {c}"))
    );
}

/// The timer: starts a checkpoint when one is due and the topology is whole.
pub(crate) fn tick(tm: &Tmanager) {
    let start = with(tm, |c, published| {
        if !published || !c.can_checkpoint() {
            return None;
        }
        c.coordinator.poll(Instant::now())
    });
    if let Some((epoch, checkpoint)) = start {
        tracing::debug!(epoch, checkpoint = checkpoint.0, "starting a checkpoint");
        broadcast(
            tm,
            control::Msg::StartCheckpoint(StartCheckpoint {
                epoch,
                checkpoint: checkpoint.0,
            }),
        );
    }
}

/// When the timer should look again.
pub(crate) fn next_tick(tm: &Tmanager) -> Option<Instant> {
    with(tm, |c, _| Some(c.coordinator.next_start()))
}

pub(crate) fn stored(tm: &Tmanager, m: InstanceStateStored) {
    let done = with(tm, |c, _| {
        if !c.can_checkpoint() {
            return None;
        }
        let task = TaskId(u32::try_from(m.task_id).ok()?);
        let done = c
            .coordinator
            .saved(task, m.epoch, CheckpointId(m.checkpoint), m.bytes, Instant::now())?;
        c.layouts.insert(done.checkpoint.0, c.layout.clone());
        let kept: BTreeSet<u64> = c.coordinator.complete().iter().map(|c| c.0).collect();
        c.layouts.retain(|k, _| kept.contains(k));
        c.record(&*tm.state, &tm.opts.topology);
        Some((done, c.store.clone()))
    });
    let Some((done, store)) = done else { return };
    tracing::info!(
        topology = %tm.opts.topology,
        checkpoint = done.checkpoint.0,
        duration_ms = done.duration.as_millis() as u64,
        bytes = done.bytes,
        "checkpoint {} complete",
        done.checkpoint
    );
    broadcast(
        tm,
        control::Msg::CheckpointCommitted(CheckpointCommitted {
            checkpoint: done.checkpoint.0,
        }),
    );
    for old in done.expired {
        if let Err(e) = store.delete(old) {
            tracing::warn!(checkpoint = old.0, error = %e, "cannot delete an expired checkpoint");
        }
    }
    // A rescale waits for a complete checkpoint: this one.
    crate::apply_pending_update(tm);
}

/// A rescale asks for a checkpoint now rather than at the next interval.
pub(crate) fn checkpoint_soon(c: &mut Checkpoints) {
    c.coordinator.checkpoint_soon(Instant::now());
}

/// A task or a stmgr (`stmgr`: all its tasks) is gone.
pub(crate) fn lost(tm: &Tmanager, tasks: &[u32], stmgr: Option<&str>) {
    let stopping = tm.stopping.load(std::sync::atomic::Ordering::Relaxed);
    with(tm, |c, _| {
        if stopping {
            return None;
        }
        // Only tasks of the topology as it is now: an instance a rescale removed is not missed when it goes.
        let mut gone: Vec<u32> = tasks
            .iter()
            .copied()
            .filter(|t| c.tasks_of.values().flatten().any(|x| x == t))
            .collect();
        if let Some(id) = stmgr {
            gone.extend(c.tasks_of.get(id).into_iter().flatten());
        }
        if gone.is_empty() {
            return None;
        }
        c.missing.extend(gone.iter().copied());
        c.coordinator.give_up();
        tracing::warn!(tasks = ?gone, "effectively-once: tasks lost; no checkpoint until they are back, then a rollback");
        Some(())
    });
}

/// Tasks (`stmgr`: all of a re-registered stmgr's) are back: when none is missing any more, every task rolls back.
pub(crate) fn joined(tm: &Tmanager, tasks: &[u32], stmgr: Option<&str>) {
    let rollback = with(tm, |c, published| {
        if c.missing.is_empty() || c.halted {
            return None;
        }
        for t in tasks {
            c.missing.remove(t);
        }
        if let Some(id) = stmgr {
            for t in c.tasks_of.get(id).into_iter().flatten() {
                c.missing.remove(t);
            }
        }
        if !c.missing.is_empty() || !published {
            return None;
        }
        Some(c.coordinator.rollback(Instant::now()))
    });
    if let Some(r) = rollback {
        push_rollback(tm, r, "the topology is whole again after a loss");
    }
}

pub(crate) fn restore_failed(tm: &Tmanager, m: RestoreFailed) {
    let rollback = with(tm, |c, _| {
        if m.epoch != c.current.epoch || c.halted {
            return None; // about an older rollback, already superseded
        }
        tracing::error!(task = m.task_id, epoch = m.epoch, checkpoint = m.checkpoint, error = %m.error, "a task could not restore");
        let now = Instant::now();
        let task = TaskId(u32::try_from(m.task_id).ok()?);
        let unreadable = m.checkpoint != 0 && !c.state_reads_back(CheckpointId(m.checkpoint), task);
        if !unreadable {
            return Some(c.coordinator.rollback(now));
        }
        match c.coordinator.restore_failed(CheckpointId(m.checkpoint), now) {
            Ok(r) => Some(r),
            Err(e) => {
                c.halted = true;
                tracing::error!(topology = %tm.opts.topology, error = %e, "effectively-once halted: no checkpoint to restore");
                None
            }
        }
    });
    if let Some(r) = rollback {
        push_rollback(tm, r, "a task could not restore");
    }
}
