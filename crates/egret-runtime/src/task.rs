//! Running one task: the emit path (encode, route, batch, acking keys) and the drivers that call user code.
//!
//! [`SpoutTask`] and [`BoltTask`] are I/O free: the caller (a simulator thread, or an instance process's task
//! thread) feeds them received batches and the current time, and moves their [`Outbox`] batches with a
//! [`Transport`]. This is the one implementation of emitting, routing and acking that every mode runs.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use egret_api::hooks::{BoltAckInfo, BoltExecuteInfo, BoltFailInfo, EmitInfo, SpoutAckInfo, SpoutFailInfo, TaskHook};
use egret_api::value::Encoder;
use egret_api::{
    AckState, Bolt, BoltCollector, CheckpointId, ComponentKind, ConfigError, EmitError, EmitRequest, EmitSink,
    MessageId, ReliabilityMode, Root, RootId, Spout, SpoutCollector, Stateful, StreamIndex, StreamSource, TaskId,
    Topology, TopologyContext, Tuple, UserError,
};

use crate::batch::{
    Batch, BatchError, BatchReader, MAX_ROOTS, MAX_TUPLE_BYTES, Record, Segment, Segments, split_epoch,
};
use crate::checkpoint::{Accept, Aligner, MarkerOutcome, Snapshot, TaskCommand};
use crate::ledger::XorLedger;
use crate::metrics::{StreamCount, TaskMetrics};
use crate::outbox::Outbox;
use crate::rng::FastRng;
use crate::router::StreamRouter;

/// Why a task could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} is not in the topology")]
    UnknownTask(TaskId),
    #[error("task {task} is a {actual}, not a {expected}")]
    WrongKind {
        task: TaskId,
        expected: &'static str,
        actual: &'static str,
    },
    #[error("task {task}: {error}")]
    Config { task: TaskId, error: ConfigError },
    #[error("task {task}: this process has no code for component {component} (a definition read from storage)")]
    NoCode { task: TaskId, component: String },
    #[error(
        "task {task} dropped input of a rollback it had not been told of yet (more than \
         topology.egret.checkpoint.buffer.bytes): another rollback is needed"
    )]
    InputDropped { task: TaskId },
    #[error("task {task} ({component}) failed to start: {error}")]
    Start {
        task: TaskId,
        component: String,
        error: UserError,
    },
}

struct OutStream {
    name: String,
    index: StreamIndex,
    arity: usize,
    direct: bool,
    router: StreamRouter,
}

/// Counts kept on the task thread and published once per batch or cycle.
#[derive(Default)]
struct LocalCounts {
    emitted: u64,
    executed: u64,
    acked: u64,
    failed: u64,
    execute_nanos: u64,
}

/// A task's part in effectively-once: its rollback epoch, the alignment of its inputs on checkpoint markers, and
/// the snapshots it took and has not handed over yet. See `docs/checkpoints.md`.
struct Checkpointing {
    /// The rollback epoch the task runs in; 0 until the first [`TaskCommand::Restore`].
    epoch: u32,
    /// Restored in `epoch`: user code has its state and may run.
    ready: bool,
    /// Where this task's markers go.
    downstream: Vec<TaskId>,
    aligner: Aligner,
    snapshots: Vec<Snapshot>,
    /// Bolts: batches of a newer epoch than the task's, kept until the coordinator's `Restore` for it arrives.
    held: Vec<Batch>,
    held_bytes: usize,
    max_held_bytes: usize,
    /// A batch of a newer epoch was dropped for want of room: the epoch must be rolled back again.
    held_overflow: bool,
}

impl Checkpointing {
    fn new(topology: &Topology, task: TaskId, max_buffered: usize) -> Self {
        Checkpointing {
            epoch: 0,
            ready: false,
            downstream: topology.downstream_tasks(task),
            aligner: Aligner::for_task(topology, task, max_buffered),
            snapshots: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            max_held_bytes: max_buffered,
            held_overflow: false,
        }
    }
}

/// The emit side of a task: implements [`EmitSink`] for the collectors.
pub struct Emitter {
    task: TaskId,
    /// The largest task id of the topology.
    max_task: u32,
    component: String,
    enc: Encoder,
    streams: Vec<OutStream>,
    acking: bool,
    rng: FastRng,
    outbox: Outbox,
    dests: Vec<egret_api::TaskId>,
    roots: Vec<Root>,
    /// The time of the current cycle: taken once per batch or emit cycle, not per tuple.
    now: Instant,
    /// Spouts under at-least-once.
    ledger: Option<XorLedger>,
    /// Spout message ids to ack right after the emit cycle (at-most-once, or trees with no consumer).
    immediate_acks: Vec<MessageId>,
    /// Spouts: complete latencies not yet published (µs).
    latencies: Vec<u64>,
    counts: LocalCounts,
    /// Emits and executes per stream (indexed by `StreamIndex`), published with the other counts.
    stream_counts: Vec<StreamCount>,
    stream_counts_dirty: bool,
    metrics: Arc<TaskMetrics>,
    /// Effectively-once only.
    ckpt: Option<Checkpointing>,
    /// Task hooks: first those named by `topology.auto.task.hooks` (`auto_hooks` of them), then the component's.
    hooks: Vec<Box<dyn TaskHook>>,
    auto_hooks: usize,
    auto_hooks_prepared: bool,
    /// `topology.debug`: a line per tuple emitted or executed. Boxed: off, it costs one pointer and one branch.
    debug: Option<Box<crate::debug_log::DebugLog>>,
}

impl Emitter {
    fn new(topology: &Topology, task: TaskId, metrics: Arc<TaskMetrics>, now: Instant) -> Result<Self, TaskError> {
        let (ci, _) = topology.task_component(task).ok_or(TaskError::UnknownTask(task))?;
        let config = topology.component_config(ci);
        let err = |error| TaskError::Config { task, error };
        let mode = config.reliability_mode().map_err(err)?;
        let acking = mode == ReliabilityMode::AtLeastOnce;
        let ckpt = if mode == ReliabilityMode::EffectivelyOnce {
            let bound = config.checkpoint_buffer_bytes().map_err(err)?;
            Some(Checkpointing::new(
                topology,
                task,
                bound.min(usize::MAX as u64) as usize,
            ))
        } else {
            None
        };
        let mut rng = FastRng::from_entropy(task.0 as u64);
        let streams = topology
            .streams()
            .iter()
            .filter(|s| s.component == ci)
            .map(|s| OutStream {
                name: s.decl.name.clone(),
                index: s.index,
                arity: s.decl.fields.len(),
                direct: s.decl.direct,
                router: StreamRouter::new(topology, s.index, &mut rng),
            })
            .collect();
        let is_spout = topology.components()[ci].kind.is_spout();
        let debug = match config.debug().map_err(err)? {
            true => Some(Box::new(crate::debug_log::DebugLog::new(
                &topology.components()[ci].name,
                task,
                config.debug_lines_per_sec().map_err(err)?,
            ))),
            false => None,
        };
        let ledger = if acking && is_spout {
            let timeout = if config.message_timeouts_enabled().map_err(err)? {
                Some(config.message_timeout().map_err(err)?)
            } else {
                None
            };
            Some(XorLedger::new(timeout, now))
        } else {
            None
        };
        Ok(Emitter {
            task,
            max_task: topology.max_task_id(),
            component: topology.components()[ci].name.clone(),
            enc: Encoder::new(),
            streams,
            acking,
            rng,
            outbox: Outbox::new(
                topology.max_task_id(),
                config.batch_tuples().map_err(err)?,
                config.batch_flush_interval().map_err(err)?,
            ),
            dests: Vec::new(),
            roots: Vec::new(),
            now,
            ledger,
            immediate_acks: Vec::new(),
            latencies: Vec::new(),
            counts: LocalCounts::default(),
            stream_counts: vec![StreamCount::default(); topology.streams().len()],
            stream_counts_dirty: false,
            metrics,
            ckpt,
            hooks: topology.auto_task_hooks(ci),
            auto_hooks: 0,
            auto_hooks_prepared: false,
            debug,
        })
        .map(|mut em| {
            em.auto_hooks = em.hooks.len();
            em
        })
    }

    /// Routes to `topology`'s tasks from now on (a rescale changed some component's tasks): new routers, room in
    /// the outbox for new task ids, and under effectively-once the new upstream and downstream sets. Open batches
    /// to removed tasks are sent as they are (their stmgr refuses them and, under at-least-once, fails their roots).
    fn set_topology(&mut self, topology: &Topology) {
        self.max_task = topology.max_task_id();
        self.outbox.grow(self.max_task);
        for s in &mut self.streams {
            s.router = StreamRouter::new(topology, s.index, &mut self.rng);
        }
        if let Some(ck) = &mut self.ckpt {
            ck.downstream = topology.downstream_tasks(self.task);
            ck.aligner = Aligner::for_task(topology, self.task, ck.max_held_bytes);
        }
    }

    /// After the component's `open`/`prepare`: prepares the configured hooks (once) and takes the hooks the
    /// component added, replacing those an earlier component of this task added (a rollback makes a new one).
    fn install_hooks(&mut self, ctx: &TopologyContext) {
        if !self.auto_hooks_prepared {
            self.auto_hooks_prepared = true;
            for h in &mut self.hooks {
                h.prepare(ctx);
            }
        }
        for mut old in self.hooks.drain(self.auto_hooks..) {
            old.cleanup();
        }
        let first = self.hooks.len();
        self.hooks.extend(ctx.take_task_hooks());
        for h in &mut self.hooks[first..] {
            h.prepare(ctx);
        }
    }

    fn cleanup_hooks(&mut self) {
        for h in &mut self.hooks {
            h.cleanup();
        }
    }

    /// Tells the hooks a spout's tree completed (`latency` when it was tracked).
    fn hook_spout_ack(&mut self, message_id: MessageId, complete_latency: Option<Duration>) {
        let info = SpoutAckInfo {
            message_id,
            task: self.task,
            complete_latency,
        };
        for h in &mut self.hooks {
            h.spout_ack(&info);
        }
    }

    fn hook_spout_fail(&mut self, message_id: MessageId) {
        let info = SpoutFailInfo {
            message_id,
            task: self.task,
            fail_latency: None,
        };
        for h in &mut self.hooks {
            h.spout_fail(&info);
        }
    }

    /// Takes `checkpoint`: the component's state (if it has any) becomes a [`Snapshot`], and a marker goes to every
    /// downstream task after everything this task sent it before.
    fn take_checkpoint(&mut self, stateful: Option<&mut dyn Stateful>, checkpoint: CheckpointId, alignment: Duration) {
        let Some(ck) = &mut self.ckpt else { return };
        let mut state = Vec::new();
        let saved = match stateful {
            None => Ok(()),
            Some(s) => s.pre_save(checkpoint, &mut state),
        };
        for &dest in &ck.downstream {
            self.outbox
                .builder(dest)
                .push_marker(self.now, dest, self.task, checkpoint);
            self.outbox.pushed(dest);
        }
        match saved {
            Ok(()) => {
                let m = &self.metrics;
                m.checkpoints_saved.fetch_add(1, Relaxed);
                m.checkpoint_last_id.store(checkpoint.0, Relaxed);
                m.checkpoint_state_bytes.store(state.len() as u64, Relaxed);
                m.checkpoint_alignment_micros
                    .store(alignment.as_micros() as u64, Relaxed);
                ck.snapshots.push(Snapshot {
                    task: self.task,
                    epoch: ck.epoch,
                    checkpoint,
                    state,
                    alignment,
                })
            }
            // Without this task's save the checkpoint never completes; the markers still go, so downstream tasks
            // are not kept aligning.
            Err(e) => {
                let msg = format!("pre_save of checkpoint {checkpoint} failed: {e}");
                self.metrics.record_error(msg);
            }
        }
    }

    /// Enters rollback epoch `epoch`: every unsent batch (of the old epoch) is dropped, alignment starts afresh. The
    /// task is not ready until its component has its state and is open ([`Emitter::restored`]).
    fn enter_epoch(&mut self, epoch: u32) {
        let Some(ck) = &mut self.ckpt else { return };
        ck.epoch = epoch;
        ck.ready = false;
        ck.aligner.reset();
        ck.snapshots.clear();
        self.outbox.clear();
        self.outbox.set_epoch(epoch);
        self.immediate_acks.clear();
    }

    fn ready(&self) -> bool {
        self.ckpt.as_ref().is_none_or(|c| c.ready)
    }

    fn restored(&mut self) {
        if let Some(ck) = &mut self.ckpt {
            ck.ready = true;
        }
    }

    fn error(&mut self, e: &dyn std::error::Error) {
        self.metrics.record_error(e.to_string());
    }

    fn publish(&mut self) {
        let c = std::mem::take(&mut self.counts);
        let m = &self.metrics;
        if c.emitted > 0 {
            m.emitted.fetch_add(c.emitted, Relaxed);
        }
        if c.executed > 0 {
            m.executed.fetch_add(c.executed, Relaxed);
            m.execute_nanos.fetch_add(c.execute_nanos, Relaxed);
        }
        if c.acked > 0 {
            m.acked.fetch_add(c.acked, Relaxed);
        }
        if c.failed > 0 {
            m.failed.fetch_add(c.failed, Relaxed);
        }
        if self.stream_counts_dirty {
            m.add_stream_counts(&mut self.stream_counts);
            self.stream_counts_dirty = false;
        }
        m.add_complete_latencies(&mut self.latencies);
        if let Some(l) = &self.ledger {
            m.pending_roots.store(l.in_flight() as u64, Relaxed);
        }
        m.unflushed.store(self.outbox.unflushed() as u64, Relaxed);
        if let Some(ck) = &self.ckpt {
            let a = ck.aligner.stats();
            m.checkpoint_buffered_bytes
                .store((a.buffered_bytes + ck.held_bytes) as u64, Relaxed);
            m.checkpoints_abandoned.store(a.abandoned, Relaxed);
        }
    }
}

impl Emitter {
    /// Tells the hooks of the tuple just emitted on output stream `si` (its values still in the encoder, its
    /// destinations in `dests`).
    fn hook_emit(&mut self, si: usize) {
        let info = EmitInfo {
            stream: &self.streams[si].name,
            task: self.task,
            out_tasks: &self.dests,
            encoded_values: self.enc.bytes(),
        };
        for h in &mut self.hooks {
            h.emit(&info);
        }
    }
}

impl EmitSink for Emitter {
    fn encoder(&mut self) -> &mut Encoder {
        &mut self.enc
    }

    fn emit(&mut self, req: EmitRequest<'_>) {
        let Some(si) = self.streams.iter().position(|s| s.name == req.stream) else {
            let e = EmitError::UnknownStream {
                component: self.component.clone(),
                stream: req.stream.into(),
            };
            return self.error(&e);
        };
        let s = &mut self.streams[si];
        let problem = if self.enc.len() != s.arity {
            Some(EmitError::WrongArity {
                component: self.component.clone(),
                stream: s.name.clone(),
                expected: s.arity,
                got: self.enc.len(),
            })
        } else if req.direct_task.is_some() && !s.direct {
            Some(EmitError::NotDirect {
                component: self.component.clone(),
                stream: s.name.clone(),
            })
        } else if req.direct_task.is_none() && s.direct {
            Some(EmitError::DirectRequired {
                component: self.component.clone(),
                stream: s.name.clone(),
            })
        } else if self.enc.bytes().len() > MAX_TUPLE_BYTES {
            Some(EmitError::TupleTooLarge {
                component: self.component.clone(),
                stream: s.name.clone(),
                bytes: self.enc.bytes().len(),
                max: MAX_TUPLE_BYTES,
            })
        } else {
            None
        };
        if let Some(e) = problem {
            return self.error(&e);
        }
        self.dests.clear();
        if let Err(e) = s.router.route(&self.enc, self.task, req.direct_task, &mut self.dests) {
            let e = match e {
                crate::router::RouteError::BadDirectTask { task } => EmitError::BadDirectTask {
                    component: self.component.clone(),
                    stream: s.name.clone(),
                    task,
                },
                other => return self.error(&other),
            };
            return self.error(&e);
        }
        let stream = s.index;
        self.counts.emitted += 1;
        self.stream_counts[stream.0 as usize].emitted += 1;
        self.stream_counts_dirty = true;
        if let Some(log) = &mut self.debug {
            log.emitted(self.now, &self.streams[si].name, &self.dests, self.enc.bytes());
        }

        if !self.acking {
            for &dest in &self.dests {
                let b = self.outbox.builder(dest);
                b.push_data(self.now, dest, self.task, stream, 0, &[], self.enc.bytes());
                self.outbox.pushed(dest);
            }
            if let Some(id) = req.message_id {
                self.immediate_acks.push(id);
            }
            if !self.hooks.is_empty() {
                self.hook_emit(si);
            }
            return;
        }

        // At-least-once: the copies carry the roots of the tree and a fresh key each.
        self.roots.clear();
        let mut new_root = None;
        if let (Some(id), Some(_)) = (req.message_id, &self.ledger) {
            let root = RootId(self.rng.next_key());
            self.roots.push(Root {
                task: self.task,
                id: root,
            });
            new_root = Some((root, id));
        }
        for a in req.anchors {
            for r in a.ack_state().roots.iter() {
                if !self.roots.contains(&r) {
                    self.roots.push(r);
                }
            }
        }
        if self.roots.len() > MAX_ROOTS {
            let e = EmitError::TooManyRoots {
                component: self.component.clone(),
                stream: self.streams[si].name.clone(),
                roots: self.roots.len(),
                max: MAX_ROOTS,
            };
            // Undo the count taken above: the tuple is not sent.
            self.counts.emitted -= 1;
            self.stream_counts[stream.0 as usize].emitted -= 1;
            return self.error(&e);
        }
        let mut xor = 0u64;
        for &dest in &self.dests {
            let key = if self.roots.is_empty() { 0 } else { self.rng.next_key() };
            xor ^= key;
            let b = self.outbox.builder(dest);
            b.push_data(self.now, dest, self.task, stream, key, &self.roots, self.enc.bytes());
            self.outbox.pushed(dest);
        }
        // Each anchor's ack must cancel the keys of the children anchored on it.
        for a in req.anchors {
            let c = a.ack_state().children_xor;
            c.set(c.get() ^ xor);
        }
        if let (Some((root, id)), Some(ledger)) = (new_root, &mut self.ledger)
            && ledger.start(root, id, xor, self.now).is_some()
        {
            self.immediate_acks.push(id);
        }
        if !self.hooks.is_empty() {
            self.hook_emit(si);
        }
    }

    fn ack(&mut self, t: AckState<'_>) {
        self.counts.acked += 1;
        if !self.hooks.is_empty() {
            let info = BoltAckInfo {
                tuple: t.tuple(),
                task: self.task,
            };
            for h in &mut self.hooks {
                h.bolt_ack(&info);
            }
        }
        if !self.acking {
            return;
        }
        let xor = t.key ^ t.children_xor.get();
        for r in t.roots.iter() {
            self.outbox.builder(r.task).push_ack(self.now, r.task, r.id, xor);
            self.outbox.pushed(r.task);
        }
    }

    fn fail(&mut self, t: AckState<'_>) {
        self.counts.failed += 1;
        if !self.hooks.is_empty() {
            let info = BoltFailInfo {
                tuple: t.tuple(),
                task: self.task,
            };
            for h in &mut self.hooks {
                h.bolt_fail(&info);
            }
        }
        if !self.acking {
            return;
        }
        for r in t.roots.iter() {
            self.outbox.builder(r.task).push_fail(self.now, r.task, r.id);
            self.outbox.pushed(r.task);
        }
    }

    fn report_error(&mut self, error: &dyn std::error::Error) {
        self.error(error)
    }
}

fn kind_name(kind: &ComponentKind) -> &'static str {
    if kind.is_spout() { "spout" } else { "bolt" }
}

/// What one [`SpoutTask::emit_cycle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitCycle {
    /// Tuples emitted.
    pub emitted: u64,
    /// A `next_tuple` call emitted nothing: the source has nothing more for now.
    pub source_empty: bool,
}

/// A spout task: calls `next_tuple` while it may emit, tracks roots, calls `ack` / `fail`.
pub struct SpoutTask {
    spout: Box<dyn Spout>,
    /// Makes the component anew on a rollback.
    factory: egret_api::topology::SpoutFactory,
    /// `open` was called on `spout` (effectively-once defers it to the first restore).
    opened: bool,
    em: Emitter,
    ctx: TopologyContext,
    active: bool,
    max_pending: usize,
    spout_wait: Duration,
    spout_wait_max: Duration,
    expired: Vec<MessageId>,
}

impl SpoutTask {
    pub fn new(
        topology: &Arc<Topology>,
        task: TaskId,
        metrics: Arc<TaskMetrics>,
        now: Instant,
    ) -> Result<Self, TaskError> {
        let (ci, _) = topology.task_component(task).ok_or(TaskError::UnknownTask(task))?;
        let def = &topology.components()[ci];
        let ComponentKind::Spout(factory) = &def.kind else {
            return Err(TaskError::WrongKind {
                task,
                expected: "spout",
                actual: kind_name(&def.kind),
            });
        };
        let factory = factory.as_ref().ok_or_else(|| TaskError::NoCode {
            task,
            component: def.name.clone(),
        })?;
        let user_metrics = Arc::clone(&metrics.user);
        let em = Emitter::new(topology, task, metrics, now)?;
        let ctx = TopologyContext::new(Arc::clone(topology), task)
            .ok_or(TaskError::UnknownTask(task))?
            .with_metrics(user_metrics);
        let max_pending = ctx
            .config()
            .max_spout_pending()
            .map_err(|error| TaskError::Config { task, error })?;
        let spout_wait = ctx
            .config()
            .spout_wait()
            .map_err(|error| TaskError::Config { task, error })?;
        let spout_wait_max = ctx
            .config()
            .spout_wait_max()
            .map_err(|error| TaskError::Config { task, error })?;
        Ok(SpoutTask {
            spout: factory(),
            factory: Arc::clone(factory),
            opened: false,
            em,
            ctx,
            active: false,
            max_pending: max_pending as usize,
            spout_wait,
            spout_wait_max,
            expired: vec![],
        })
    }

    /// Calls `open`, then `activate` if the topology starts active. Under effectively-once both wait for the first
    /// [`TaskCommand::Restore`], which gives the component its state first.
    pub fn open(&mut self, active: bool) -> Result<(), TaskError> {
        if self.em.ckpt.is_some() {
            return Ok(());
        }
        self.open_component()?;
        self.set_active(active);
        Ok(())
    }

    fn open_component(&mut self) -> Result<(), TaskError> {
        self.opened = true;
        // A component made anew (a rollback) registers its metrics again and keeps their values.
        self.ctx.metrics().reopen();
        self.spout.open(&self.ctx).map_err(|error| TaskError::Start {
            task: self.em.task,
            component: self.em.component.clone(),
            error,
        })?;
        self.em.install_hooks(&self.ctx);
        Ok(())
    }

    /// Carries out a checkpoint coordinator's command (effectively-once; ignored otherwise).
    pub fn command(&mut self, cmd: TaskCommand, now: Instant) -> Result<(), TaskError> {
        self.em.now = now;
        match cmd {
            TaskCommand::Restore {
                epoch,
                checkpoint,
                state,
            } => self.restore(epoch, checkpoint, state.as_deref()),
            TaskCommand::Checkpoint { epoch, checkpoint } => {
                if self.em.ckpt.as_ref().is_some_and(|c| c.ready && c.epoch == epoch) {
                    self.em
                        .take_checkpoint(self.spout.stateful(), checkpoint, Duration::ZERO);
                }
                Ok(())
            }
            TaskCommand::Committed { checkpoint } => {
                if let Some(s) = self.spout.stateful() {
                    s.post_save(checkpoint);
                }
                Ok(())
            }
            TaskCommand::Rescale { topology } => {
                self.em.set_topology(&topology);
                self.update_topology(&topology)
            }
        }
    }

    /// Rolls back (or starts) in `epoch`: a fresh component gets the state saved at `checkpoint`, then `open`;
    /// it emits again from the position its state holds.
    fn restore(&mut self, epoch: u32, checkpoint: Option<CheckpointId>, state: Option<&[u8]>) -> Result<(), TaskError> {
        if self.em.ckpt.is_none() {
            return Ok(());
        }
        if self.opened {
            if let Some(s) = self.spout.stateful() {
                s.pre_restore(checkpoint);
            }
            self.spout.close();
            self.spout = (self.factory)();
            self.opened = false;
        }
        self.em.enter_epoch(epoch);
        let start_err = |error| TaskError::Start {
            task: self.em.task,
            component: self.em.component.clone(),
            error,
        };
        if let Some(s) = self.spout.stateful() {
            s.init_state(state).map_err(start_err)?;
        }
        self.open_component()?;
        // `open` is followed by `activate` when the topology is active: the driver's next `set_active` does it.
        self.active = false;
        self.em.restored();
        Ok(())
    }

    /// Snapshots taken since the last call, for the store.
    pub fn take_snapshots(&mut self) -> Vec<Snapshot> {
        self.em
            .ckpt
            .as_mut()
            .map_or_else(Vec::new, |c| std::mem::take(&mut c.snapshots))
    }

    pub fn set_active(&mut self, active: bool) {
        if active != self.active && self.opened {
            self.active = active;
            if active {
                self.spout.activate()
            } else {
                self.spout.deactivate()
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether `next_tuple` may be called now: active, outputs not backed up, and (at-least-once) fewer than
    /// `topology.max.spout.pending` roots in flight.
    pub fn can_emit(&self) -> bool {
        self.active
            && self.em.ready()
            && self.em.outbox.waiting() == 0
            && self.em.ledger.as_ref().is_none_or(|l| l.in_flight() < self.max_pending)
    }

    /// Calls `next_tuple` up to `max_calls` times, stopping early when the spout emits nothing or may not emit.
    pub fn emit_cycle(&mut self, now: Instant, max_calls: usize) -> EmitCycle {
        self.em.now = now;
        let before = self.em.counts.emitted;
        let mut source_empty = false;
        for _ in 0..max_calls {
            if !self.can_emit() {
                break;
            }
            let n = self.em.counts.emitted;
            self.spout.next_tuple(&mut SpoutCollector::new(&mut self.em));
            if self.em.counts.emitted == n {
                source_empty = true;
                break;
            }
        }
        for id in std::mem::take(&mut self.em.immediate_acks) {
            self.em.counts.acked += 1;
            self.spout.ack(id);
            if !self.em.hooks.is_empty() {
                self.em.hook_spout_ack(id, None);
            }
        }
        let emitted = self.em.counts.emitted - before;
        self.em.publish();
        EmitCycle { emitted, source_empty }
    }

    /// How long to wait before calling `next_tuple` again after a call that emitted nothing
    /// (`topology.egret.spout.wait.micros`), and the most that wait grows to while the source stays empty
    /// (`topology.egret.spout.wait.max.micros`).
    pub fn spout_waits(&self) -> (Duration, Duration) {
        (self.spout_wait, self.spout_wait_max)
    }

    /// Applies the acks and fails in a received batch.
    pub fn handle_batch(&mut self, batch: &[u8], now: Instant) -> Result<(), BatchError> {
        self.em.now = now;
        let mut result = Ok(());
        for rec in BatchReader::new(batch) {
            match rec {
                Ok(Record::Ack { root, xor, .. }) => {
                    if let Some(done) = self.em.ledger.as_mut().and_then(|l| l.ack(root, xor, now)) {
                        self.em.latencies.push(done.latency.as_micros() as u64);
                        self.em.counts.acked += 1;
                        self.spout.ack(done.message_id);
                        if !self.em.hooks.is_empty() {
                            self.em.hook_spout_ack(done.message_id, Some(done.latency));
                        }
                    }
                }
                Ok(Record::Fail { root, .. }) => {
                    if let Some(id) = self.em.ledger.as_mut().and_then(|l| l.fail(root)) {
                        self.em.counts.failed += 1;
                        self.spout.fail(id);
                        if !self.em.hooks.is_empty() {
                            self.em.hook_spout_fail(id);
                        }
                    }
                }
                Ok(Record::Data(d)) => {
                    self.em
                        .metrics
                        .record_error(format!("spout task {} received a data tuple from {}", d.dest, d.src));
                }
                // Effectively-once spouts receive no acks; an EPOCH record alone is harmless.
                Ok(Record::Epoch { .. }) => {}
                Ok(Record::Marker { dest, src, checkpoint }) => {
                    // Spouts take checkpoints when the tmanager says so, never from markers.
                    self.em.metrics.record_error(format!(
                        "spout task {dest} received a marker of checkpoint {checkpoint} from {src}"
                    ));
                }
                Err(e) => {
                    self.em.metrics.record_error(format!("corrupt batch: {e}"));
                    result = Err(e);
                }
            }
        }
        self.em.publish();
        result
    }

    /// Fails timed-out roots and closes batches that waited long enough.
    pub fn on_timer(&mut self, now: Instant) {
        self.em.now = now;
        if let Some(l) = &mut self.em.ledger {
            l.expire(now, &mut self.expired);
        }
        for id in std::mem::take(&mut self.expired) {
            self.em.counts.failed += 1;
            self.spout.fail(id);
            if !self.em.hooks.is_empty() {
                self.em.hook_spout_fail(id);
            }
        }
        self.em.outbox.flush_due(now);
        self.em.publish();
    }

    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.em.outbox
    }

    pub fn pending_roots(&self) -> usize {
        self.em.ledger.as_ref().map_or(0, |l| l.in_flight())
    }

    /// Publishes the outbox state after the caller moved batches.
    pub fn publish(&mut self) {
        self.em.publish();
    }

    /// The topology changed under this running task (a parallelism change): the component is told with a context of
    /// the new topology (`Spout::update`, Heron's `IUpdatable`). Routing to the new task layout is not changed here.
    pub fn update_topology(&mut self, topology: &Arc<Topology>) -> Result<(), TaskError> {
        let task = self.em.task;
        self.ctx = TopologyContext::new(Arc::clone(topology), task)
            .ok_or(TaskError::UnknownTask(task))?
            .with_metrics(Arc::clone(self.ctx.metrics()));
        if self.opened {
            self.spout.update(&self.ctx);
        }
        Ok(())
    }

    /// Calls `close` and gives the spout back (the simulator lets tests inspect it).
    pub fn close(mut self) -> Box<dyn Spout> {
        if self.opened {
            self.spout.close();
        }
        self.em.cleanup_hooks();
        self.spout
    }
}

/// A bolt task: calls `execute` for each received tuple, and delivers tick tuples.
pub struct BoltTask {
    bolt: Box<dyn Bolt>,
    /// Makes the component anew on a rollback.
    factory: egret_api::topology::BoltFactory,
    /// `prepare` was called on `bolt` (effectively-once defers it to the first restore).
    prepared: bool,
    em: Emitter,
    ctx: TopologyContext,
    /// Indexed by stream index.
    sources: Vec<Arc<StreamSource>>,
    /// Indexed by stream index: whether this bolt's component subscribes to the stream.
    consumes: Vec<bool>,
    tick_source: Arc<StreamSource>,
    tick: Option<(Duration, Instant)>,
}

impl BoltTask {
    pub fn new(
        topology: &Arc<Topology>,
        task: TaskId,
        metrics: Arc<TaskMetrics>,
        now: Instant,
    ) -> Result<Self, TaskError> {
        let (ci, _) = topology.task_component(task).ok_or(TaskError::UnknownTask(task))?;
        let def = &topology.components()[ci];
        let ComponentKind::Bolt(factory) = &def.kind else {
            return Err(TaskError::WrongKind {
                task,
                expected: "bolt",
                actual: kind_name(&def.kind),
            });
        };
        let factory = factory.as_ref().ok_or_else(|| TaskError::NoCode {
            task,
            component: def.name.clone(),
        })?;
        let user_metrics = Arc::clone(&metrics.user);
        let em = Emitter::new(topology, task, metrics, now)?;
        let ctx = TopologyContext::new(Arc::clone(topology), task)
            .ok_or(TaskError::UnknownTask(task))?
            .with_metrics(user_metrics);
        let tick = ctx
            .config()
            .tick_period()
            .map_err(|error| TaskError::Config { task, error })?;
        Ok(BoltTask {
            bolt: factory(),
            factory: Arc::clone(factory),
            prepared: false,
            em,
            ctx,
            sources: topology.streams().iter().map(|s| Arc::clone(&s.source)).collect(),
            consumes: topology
                .streams()
                .iter()
                .map(|s| topology.consumers(s.index).any(|(c, _)| c == ci))
                .collect(),
            tick_source: StreamSource::tick(),
            tick: tick.map(|p| (p, now + p)),
        })
    }

    /// Calls `prepare`; under effectively-once that waits for the first [`TaskCommand::Restore`], which gives the
    /// component its state first.
    pub fn prepare(&mut self) -> Result<(), TaskError> {
        if self.em.ckpt.is_some() {
            return Ok(());
        }
        self.prepare_component()
    }

    fn prepare_component(&mut self) -> Result<(), TaskError> {
        self.prepared = true;
        // A component made anew (a rollback) registers its metrics again and keeps their values.
        self.ctx.metrics().reopen();
        self.bolt.prepare(&self.ctx).map_err(|error| TaskError::Start {
            task: self.em.task,
            component: self.em.component.clone(),
            error,
        })?;
        self.em.install_hooks(&self.ctx);
        Ok(())
    }

    /// Carries out a checkpoint coordinator's command (effectively-once; ignored otherwise). Batches of the new epoch
    /// held until a `Restore` are processed as part of it.
    pub fn command(&mut self, cmd: TaskCommand, now: Instant) -> Result<(), TaskError> {
        self.em.now = now;
        match cmd {
            TaskCommand::Restore {
                epoch,
                checkpoint,
                state,
            } => {
                self.restore(epoch, checkpoint, state.as_deref())?;
                let (held, overflow) = self.em.ckpt.as_mut().map_or((Vec::new(), false), |c| {
                    c.held_bytes = 0;
                    (std::mem::take(&mut c.held), std::mem::take(&mut c.held_overflow))
                });
                for batch in held {
                    let _ = self.handle_batch(&batch, now);
                }
                if overflow {
                    return Err(TaskError::InputDropped { task: self.em.task });
                }
                Ok(())
            }
            // Bolts checkpoint when their inputs' markers align, not on command.
            TaskCommand::Checkpoint { .. } => Ok(()),
            TaskCommand::Committed { checkpoint } => {
                if let Some(s) = self.bolt.stateful() {
                    s.post_save(checkpoint);
                }
                Ok(())
            }
            TaskCommand::Rescale { topology } => {
                self.em.set_topology(&topology);
                self.update_topology(&topology)
            }
        }
    }

    /// Rolls back (or starts) in `epoch`: a fresh component gets the state saved at `checkpoint`, then `prepare`.
    fn restore(&mut self, epoch: u32, checkpoint: Option<CheckpointId>, state: Option<&[u8]>) -> Result<(), TaskError> {
        if self.em.ckpt.is_none() {
            return Ok(());
        }
        if self.prepared {
            if let Some(s) = self.bolt.stateful() {
                s.pre_restore(checkpoint);
            }
            self.bolt.cleanup();
            self.bolt = (self.factory)();
            self.prepared = false;
        }
        self.em.enter_epoch(epoch);
        if let Some(s) = self.bolt.stateful() {
            s.init_state(state).map_err(|error| TaskError::Start {
                task: self.em.task,
                component: self.em.component.clone(),
                error,
            })?;
        }
        self.prepare_component()?;
        self.em.restored();
        Ok(())
    }

    /// Snapshots taken since the last call, for the store.
    pub fn take_snapshots(&mut self) -> Vec<Snapshot> {
        self.em
            .ckpt
            .as_mut()
            .map_or_else(Vec::new, |c| std::mem::take(&mut c.snapshots))
    }

    /// Executes every tuple of a received batch; returns how many were executed. Under effectively-once the batch
    /// is first checked against the task's epoch and aligned on checkpoint markers (and may be held for later).
    pub fn handle_batch(&mut self, batch: &[u8], now: Instant) -> Result<u64, BatchError> {
        self.em.now = now;
        let Some(ck) = &mut self.em.ckpt else {
            return self.execute_batch(batch, now);
        };
        let Some((epoch, records)) = split_epoch(batch) else {
            let msg = format!("bolt task {} received a batch without an epoch", self.em.task);
            self.em.metrics.record_error(msg);
            return Ok(0);
        };
        if epoch > ck.epoch || (epoch == ck.epoch && !ck.ready) {
            // Sent after a rollback this task has not been told of yet: keep it for then, within the bound. Past
            // it the batch is dropped and, once restored, the task asks for another rollback (its input of the new
            // epoch is incomplete): memory stays bounded and nothing is lost.
            if ck.held_bytes + batch.len() > ck.max_held_bytes {
                ck.held_overflow = true;
                self.em.metrics.dropped_stale.fetch_add(1, Relaxed);
            } else {
                ck.held_bytes += batch.len();
                ck.held.push(batch.to_vec());
            }
            return Ok(0);
        }
        if epoch < ck.epoch {
            // Sent before the rollback: its effects are undone, so it is dropped.
            self.em.metrics.dropped_stale.fetch_add(1, Relaxed);
            return Ok(0);
        }
        let mut executed = 0;
        let mut result = Ok(());
        for seg in Segments::new(records) {
            let Some(ck) = &mut self.em.ckpt else { break };
            match seg {
                Segment::Records { src, bytes } => match ck.aligner.accept(src.unwrap_or(TaskId(0)), bytes) {
                    Accept::Process => match self.execute_batch(bytes, now) {
                        Ok(n) => executed += n,
                        Err(e) => result = Err(e),
                    },
                    Accept::Buffered => {}
                    Accept::Abandoned { checkpoint, released } => {
                        self.em.metrics.record_error(format!(
                            "checkpoint {checkpoint} abandoned: aligning its markers would hold more than {} bytes \
                             (topology.egret.checkpoint.buffer.bytes)",
                            ck.max_held_bytes
                        ));
                        for r in released {
                            executed += self.execute_batch(&r.batch, now).unwrap_or(0);
                        }
                    }
                },
                Segment::Marker { src, checkpoint, .. } => match ck.aligner.on_marker(src, checkpoint, now) {
                    MarkerOutcome::Aligned {
                        checkpoint,
                        started,
                        released,
                    } => {
                        let alignment = now.saturating_duration_since(started);
                        self.em.take_checkpoint(self.bolt.stateful(), checkpoint, alignment);
                        for r in released {
                            executed += self.execute_batch(&r.batch, now).unwrap_or(0);
                        }
                    }
                    MarkerOutcome::Overtaken { released, .. } => {
                        for r in released {
                            executed += self.execute_batch(&r.batch, now).unwrap_or(0);
                        }
                    }
                    MarkerOutcome::Waiting { .. } | MarkerOutcome::Ignored(_) => {}
                },
            }
        }
        result.map(|()| executed)
    }

    /// Executes every tuple of a batch of DATA records.
    fn execute_batch(&mut self, batch: &[u8], now: Instant) -> Result<u64, BatchError> {
        let mut executed = 0u64;
        let mut result = Ok(());
        for rec in BatchReader::new(batch) {
            match rec {
                Ok(Record::Data(d)) => {
                    // Everything a record says is checked before use: it came from another process.
                    let Some(source) = self
                        .sources
                        .get(d.stream.0 as usize)
                        .filter(|_| self.consumes.get(d.stream.0 as usize) == Some(&true))
                    else {
                        self.em.metrics.record_error(format!(
                            "bolt task {} received a tuple on stream index {}, which it does not consume",
                            self.em.task, d.stream.0
                        ));
                        continue;
                    };
                    if d.dest != self.em.task {
                        self.em.metrics.record_error(format!(
                            "bolt task {} received a tuple for task {}",
                            self.em.task, d.dest
                        ));
                        continue;
                    }
                    if d.roots.iter().any(|r| r.task.0 == 0 || r.task.0 > self.em.max_task) {
                        self.em.metrics.record_error(format!(
                            "bolt task {} received a tuple whose root names a task that does not exist",
                            self.em.task
                        ));
                        continue;
                    }
                    if let Some(log) = &mut self.em.debug {
                        log.executed(now, source, d.src, d.values);
                    }
                    let tuple = Tuple::new(source, d.src, d.values, d.key, d.roots);
                    if self.em.hooks.is_empty() {
                        self.bolt.execute(&tuple, &mut BoltCollector::new(&mut self.em));
                    } else {
                        let started = Instant::now();
                        self.bolt.execute(&tuple, &mut BoltCollector::new(&mut self.em));
                        let info = BoltExecuteInfo {
                            tuple: &tuple,
                            task: self.em.task,
                            execute_latency: started.elapsed(),
                        };
                        for h in &mut self.em.hooks {
                            h.bolt_execute(&info);
                        }
                    }
                    executed += 1;
                    self.em.stream_counts[d.stream.0 as usize].executed += 1;
                }
                Ok(Record::Marker { src, checkpoint, .. }) => {
                    // Markers are taken out of a batch by checkpoint alignment before it gets here; none is sent
                    // yet, so one that arrives is unexpected.
                    self.em.metrics.record_error(format!(
                        "bolt task {} received a marker of checkpoint {checkpoint} from {src}",
                        self.em.task
                    ));
                }
                Ok(other) => {
                    self.em
                        .metrics
                        .record_error(format!("bolt task {} received an ack record {other:?}", self.em.task));
                }
                Err(e) => {
                    self.em.metrics.record_error(format!("corrupt batch: {e}"));
                    result = Err(e);
                }
            }
        }
        self.em.counts.executed += executed;
        self.em.stream_counts_dirty |= executed > 0;
        self.em.counts.execute_nanos += now.elapsed().as_nanos() as u64;
        self.em.publish();
        result.map(|()| executed)
    }

    /// Delivers a due tick tuple and closes batches that waited long enough.
    pub fn on_timer(&mut self, now: Instant) {
        self.em.now = now;
        if let Some((period, next)) = &mut self.tick
            && now >= *next
        {
            *next = now + *period;
            let tuple = Tuple::new(&self.tick_source, egret_api::TaskId(0), &[], 0, Default::default());
            self.bolt.execute(&tuple, &mut BoltCollector::new(&mut self.em));
        }
        self.em.outbox.flush_due(now);
        self.em.publish();
    }

    /// The next time [`BoltTask::on_timer`] has work.
    pub fn next_timer(&self) -> Option<Instant> {
        let tick = self.tick.map(|(_, next)| next);
        match (tick, self.em.outbox.next_flush()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.em.outbox
    }

    pub fn publish(&mut self) {
        self.em.publish();
    }

    /// The topology changed under this running task (a parallelism change): the component is told with a context of
    /// the new topology (`Bolt::update`, Heron's `IUpdatable`). Routing to the new task layout is not changed here.
    pub fn update_topology(&mut self, topology: &Arc<Topology>) -> Result<(), TaskError> {
        let task = self.em.task;
        self.ctx = TopologyContext::new(Arc::clone(topology), task)
            .ok_or(TaskError::UnknownTask(task))?
            .with_metrics(Arc::clone(self.ctx.metrics()));
        if self.prepared {
            self.bolt.update(&self.ctx);
        }
        Ok(())
    }

    /// Calls `cleanup` and gives the bolt back.
    pub fn cleanup(mut self) -> Box<dyn Bolt> {
        if self.prepared {
            self.bolt.cleanup();
        }
        self.em.cleanup_hooks();
        self.bolt
    }
}

impl SpoutTask {
    /// The next time [`SpoutTask::on_timer`] has work.
    pub fn next_timer(&self) -> Option<Instant> {
        let expiry = self.em.ledger.as_ref().and_then(|l| l.next_expiry_check());
        match (expiry, self.em.outbox.next_flush()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use egret_api::{OutputDeclarer, SpoutCollector, TopologyBuilder};

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

    #[test]
    fn a_marker_reaching_a_task_is_counted_as_an_error() {
        let mut b = TopologyBuilder::new("t");
        b.set_spout("s", 1, || S);
        b.set_bolt("b", 1, || B).shuffle_grouping("s");
        let t = Arc::new(b.build().unwrap());
        // b = task 1, s = task 2.
        let now = Instant::now();
        let marker = |dest: u32, src: u32| {
            let mut b = BatchBuilder::new();
            b.push_marker(now, TaskId(dest), TaskId(src), CheckpointId(1));
            b.take()
        };
        let bm = Arc::new(TaskMetrics::default());
        let mut bolt = BoltTask::new(&t, TaskId(1), Arc::clone(&bm), now).unwrap();
        assert_eq!(bolt.handle_batch(&marker(1, 2), now), Ok(0));
        assert_eq!(bm.errors.load(Relaxed), 1);
        assert!(bm.last_error().unwrap().contains("marker of checkpoint 1 from 2"));

        let sm = Arc::new(TaskMetrics::default());
        let mut spout = SpoutTask::new(&t, TaskId(2), Arc::clone(&sm), now).unwrap();
        assert_eq!(spout.handle_batch(&marker(2, 1), now), Ok(()));
        assert_eq!(sm.errors.load(Relaxed), 1);
        assert!(sm.last_error().unwrap().contains("marker of checkpoint 1 from 1"));
    }

    /// Records the parallelism each `update` told it of.
    struct Updatable(Arc<std::sync::Mutex<Vec<u32>>>);
    impl Bolt for Updatable {
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
        fn update(&mut self, ctx: &TopologyContext) {
            self.0.lock().unwrap().push(ctx.parallelism());
        }
    }

    #[test]
    fn a_parallelism_change_is_told_to_the_prepared_component_with_the_new_context() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let topology = |bolts: u32| {
            let mut b = TopologyBuilder::new("t");
            b.set_spout("s", 1, || S);
            let seen = Arc::clone(&seen);
            b.set_bolt("b", bolts, move || Updatable(Arc::clone(&seen)))
                .shuffle_grouping("s");
            Arc::new(b.build().unwrap())
        };
        let now = Instant::now();
        let metrics = Arc::new(TaskMetrics::default());
        let mut bolt = BoltTask::new(&topology(2), TaskId(1), Arc::clone(&metrics), now).unwrap();
        // Not prepared yet: nothing to tell.
        bolt.update_topology(&topology(3)).unwrap();
        bolt.prepare().unwrap();
        bolt.update_topology(&topology(5)).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![5]);
        // The new context publishes the task's user metrics where the old one did.
        assert!(Arc::ptr_eq(bolt.ctx.metrics(), &metrics.user));
    }

    /// Counts what it executed; its state is that count.
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
            self.n = restored.map_or(0, |b| b[0] as u64);
            Ok(())
        }
        fn pre_save(&mut self, _c: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
            out.push(self.n as u8);
            Ok(())
        }
    }

    #[test]
    fn an_effectively_once_bolt_drops_older_epochs_holds_newer_ones_and_snapshots_at_the_aligned_cut() {
        let mut b = TopologyBuilder::new("t");
        b.config()
            .set(egret_api::keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce);
        b.set_spout("s", 2, || S);
        b.set_bolt("b", 1, Counting::default).shuffle_grouping("s");
        let t = Arc::new(b.build().unwrap());
        // b = task 1; s = tasks 2 and 3.
        let now = Instant::now();
        let batch = |epoch: u32, src: u32, tuples: usize, marker: Option<u64>| {
            let mut b = BatchBuilder::new();
            b.push_epoch(TaskId(1), epoch);
            let mut enc = Encoder::new();
            enc.i64(1);
            for _ in 0..tuples {
                b.push_data(now, TaskId(1), TaskId(src), StreamIndex(0), 0, &[], enc.bytes());
            }
            if let Some(c) = marker {
                b.push_marker(now, TaskId(1), TaskId(src), CheckpointId(c));
            }
            b.take()
        };
        let m = Arc::new(TaskMetrics::default());
        let mut bolt = BoltTask::new(&t, TaskId(1), Arc::clone(&m), now).unwrap();
        bolt.prepare().unwrap();
        let restore = |epoch, state: Option<Vec<u8>>| TaskCommand::Restore {
            epoch,
            checkpoint: state.as_ref().map(|_| CheckpointId(1)),
            state,
        };
        // Before its first restore the bolt holds everything.
        assert_eq!(bolt.handle_batch(&batch(1, 2, 3, None), now), Ok(0));
        bolt.command(restore(1, None), now).unwrap();
        // The held batch was processed at the restore; then marker 5 from task 2 holds task 2's later tuples
        // until task 3's marker comes.
        assert_eq!(bolt.handle_batch(&batch(1, 2, 2, Some(5)), now), Ok(2));
        assert_eq!(
            bolt.handle_batch(&batch(1, 2, 4, None), now),
            Ok(0),
            "after the cut: held"
        );
        assert_eq!(
            bolt.handle_batch(&batch(1, 3, 1, Some(5)), now),
            Ok(5),
            "1 before the cut, 4 released"
        );
        let snaps = bolt.take_snapshots();
        assert_eq!(snaps.len(), 1);
        assert_eq!(
            (snaps[0].checkpoint, snaps[0].epoch, &snaps[0].state[..]),
            (CheckpointId(5), 1, &[6u8][..])
        );
        // A batch of a newer epoch waits for its restore; an older one is dropped.
        assert_eq!(bolt.handle_batch(&batch(2, 2, 7, None), now), Ok(0));
        bolt.command(restore(2, Some(vec![6])), now).unwrap();
        assert_eq!(bolt.handle_batch(&batch(1, 3, 9, None), now), Ok(0));
        assert_eq!(m.dropped_stale.load(Relaxed), 1);
        let counted = bolt.cleanup();
        let any: &dyn std::any::Any = &*counted;
        assert_eq!(
            any.downcast_ref::<Counting>().unwrap().n,
            6 + 7,
            "restored to 6, then the held 7"
        );
    }
}
