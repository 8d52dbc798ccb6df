//! The user's code: spouts (sources) and bolts (operators), and how they declare their output streams.

use std::any::Any;

use crate::collector::{BasicCollector, BoltCollector, SpoutCollector};
use crate::context::TopologyContext;
use crate::fields::Fields;
use crate::ids::MessageId;
use crate::state::Stateful;
use crate::tuple::Tuple;

/// The name of the stream `emit` uses when none is given.
pub const DEFAULT_STREAM: &str = "default";

/// An error from user code (open, prepare, execute).
pub type UserError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A source of tuples. One value per task; the runtime calls it from one thread only.
pub trait Spout: Any + Send {
    /// Declares the streams this spout emits. Called once at build time, on a fresh instance.
    fn declare_outputs(&self, out: &mut OutputDeclarer);

    /// Called once before anything else on the task.
    fn open(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }

    /// Emits zero or more tuples. Called in a loop while the topology is active, the task's outputs have room and
    /// (at-least-once) fewer than `topology.max.spout.pending` roots are in flight. Returning without emitting tells
    /// the runtime there is nothing to do right now.
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>);

    /// The tuple tree of `id` completed.
    fn ack(&mut self, _id: MessageId) {}

    /// The tuple tree of `id` failed or timed out; a spout that replays emits it again.
    fn fail(&mut self, _id: MessageId) {}

    /// The topology was activated (also called once after `open` when it starts active).
    fn activate(&mut self) {}

    /// The topology was deactivated: `next_tuple` will not be called until `activate`.
    fn deactivate(&mut self) {}

    /// The task is stopping.
    fn close(&mut self) {}

    /// The topology changed under a running task, e.g. a component's parallelism (Heron's `IUpdatable.update`):
    /// `ctx` describes the new topology (`ctx.parallelism()`, `ctx.component_tasks(...)`). Called on the task's thread
    /// between two calls of the component, never during one.
    fn update(&mut self, _ctx: &TopologyContext) {}

    /// A component whose state survives failures (effectively-once) returns itself: `Some(self)`. See
    /// [`Stateful`]; under other reliability modes the hooks are not called.
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
}

/// An operator: receives tuples from its input streams, emits, acks or fails them.
pub trait Bolt: Any + Send {
    /// Declares the streams this bolt emits. Called once at build time, on a fresh instance.
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }

    /// Processes one input tuple. Under at-least-once every input must eventually be acked or failed through
    /// `out`; [`BasicBolt`] does that for you.
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>);

    fn cleanup(&mut self) {}

    /// The topology changed under a running task, e.g. a component's parallelism (Heron's `IUpdatable.update`):
    /// `ctx` describes the new topology (`ctx.parallelism()`, `ctx.component_tasks(...)`). Called on the task's thread
    /// between two calls of the component, never during one.
    fn update(&mut self, _ctx: &TopologyContext) {}

    /// A component whose state survives failures (effectively-once) returns itself: `Some(self)`. See
    /// [`Stateful`]; under other reliability modes the hooks are not called.
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
}

/// A bolt whose emits are anchored on the input and whose input is acked when `execute` returns `Ok`, failed when
/// it returns `Err` (Heron's `BaseBasicBolt`).
pub trait BasicBolt: Any + Send {
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError>;

    fn cleanup(&mut self) {}

    /// See [`Bolt::update`].
    fn update(&mut self, _ctx: &TopologyContext) {}

    /// A component whose state survives failures (effectively-once) returns itself: `Some(self)`. See
    /// [`Stateful`]; under other reliability modes the hooks are not called.
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
}

/// Runs a [`BasicBolt`] as a [`Bolt`]: anchors its emits on the input, then acks or fails the input.
pub struct BasicBoltAdapter<B>(pub B);

impl<B: BasicBolt> Bolt for BasicBoltAdapter<B> {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.0.declare_outputs(out)
    }
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.0.prepare(ctx)
    }
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let result = {
            let mut basic = BasicCollector::new(out, tuple);
            self.0.execute(tuple, &mut basic)
        };
        match result {
            Ok(()) => out.ack(tuple),
            Err(e) => {
                out.report_error(&*e);
                out.fail(tuple)
            }
        }
    }
    fn cleanup(&mut self) {
        self.0.cleanup()
    }
    fn update(&mut self, ctx: &TopologyContext) {
        self.0.update(ctx)
    }
    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        self.0.stateful()
    }
}

/// One declared output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDecl {
    pub name: String,
    pub fields: Fields,
    /// Consumers must subscribe with direct grouping and the emitter must use `emit_direct`.
    pub direct: bool,
}

/// Collects a component's output stream declarations.
#[derive(Debug, Default, Clone)]
pub struct OutputDeclarer {
    streams: Vec<StreamDecl>,
}

impl OutputDeclarer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the default stream.
    pub fn declare(&mut self, fields: impl Into<Fields>) -> &mut Self {
        self.declare_stream(DEFAULT_STREAM, fields)
    }

    pub fn declare_stream(&mut self, name: impl Into<String>, fields: impl Into<Fields>) -> &mut Self {
        self.streams.push(StreamDecl {
            name: name.into(),
            fields: fields.into(),
            direct: false,
        });
        self
    }

    pub fn declare_direct_stream(&mut self, name: impl Into<String>, fields: impl Into<Fields>) -> &mut Self {
        self.streams.push(StreamDecl {
            name: name.into(),
            fields: fields.into(),
            direct: true,
        });
        self
    }

    pub fn into_streams(self) -> Vec<StreamDecl> {
        self.streams
    }
}
