//! Task hooks (Heron's and Storm's `ITaskHook`): callbacks the runtime makes on a task's thread at every emit, spout
//! ack and fail, and bolt execute, ack and fail. A component adds one in `open`/`prepare` with
//! [`crate::TopologyContext::add_task_hook`]; the config key `topology.auto.task.hooks` (a comma-separated list) names
//! hooks declared with [`crate::TopologyBuilder::task_hook`], for every task of the topology or of a component.
//!
//! A task without hooks pays one branch per event. A hook runs inline on the task thread: keep it cheap.

use std::sync::Arc;
use std::time::Duration;

use crate::context::TopologyContext;
use crate::ids::{MessageId, TaskId};
use crate::tuple::Tuple;
use crate::value::{Value, ValuesIter};

/// See the module documentation. Every callback has a default that does nothing.
pub trait TaskHook: Send {
    /// Called once, after the component's `open`/`prepare`.
    fn prepare(&mut self, _ctx: &TopologyContext) {}
    /// Called when the task stops.
    fn cleanup(&mut self) {}
    /// A tuple was emitted (and routed: `out_tasks` are the tasks it went to).
    fn emit(&mut self, _info: &EmitInfo<'_>) {}
    /// A spout's tuple tree completed; the spout's `ack` was called.
    fn spout_ack(&mut self, _info: &SpoutAckInfo) {}
    /// A spout's tuple tree failed or timed out; the spout's `fail` was called.
    fn spout_fail(&mut self, _info: &SpoutFailInfo) {}
    /// A bolt's `execute` returned.
    fn bolt_execute(&mut self, _info: &BoltExecuteInfo<'_, '_>) {}
    /// A bolt acked a tuple.
    fn bolt_ack(&mut self, _info: &BoltAckInfo<'_>) {}
    /// A bolt failed a tuple.
    fn bolt_fail(&mut self, _info: &BoltFailInfo<'_>) {}
}

/// Makes a hook for each task; declared by name with [`crate::TopologyBuilder::task_hook`].
pub type TaskHookFactory = Arc<dyn Fn() -> Box<dyn TaskHook> + Send + Sync>;

/// One emitted tuple.
#[derive(Debug)]
pub struct EmitInfo<'a> {
    pub stream: &'a str,
    /// The emitting task.
    pub task: TaskId,
    /// Where the tuple went (one entry per copy).
    pub out_tasks: &'a [TaskId],
    /// The tuple's values in Egret's encoding; [`EmitInfo::values`] decodes them.
    pub encoded_values: &'a [u8],
}

impl EmitInfo<'_> {
    /// The emitted values, decoded (`None` for one that does not decode, which the runtime would have refused).
    pub fn values(&self) -> Vec<Option<Value>> {
        ValuesIter::new(self.encoded_values)
            .map(|v| v.ok().and_then(|v| v.to_owned_value().ok()))
            .collect()
    }
}

/// A spout tuple tree that completed.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoutAckInfo {
    pub message_id: MessageId,
    pub task: TaskId,
    /// Emit to completion; `None` when the tree completed without being tracked (at-most-once).
    pub complete_latency: Option<Duration>,
}

/// A spout tuple tree that failed or timed out.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoutFailInfo {
    pub message_id: MessageId,
    pub task: TaskId,
    /// Emit to failure.
    pub fail_latency: Option<Duration>,
}

/// A tuple a bolt executed.
#[derive(Debug)]
pub struct BoltExecuteInfo<'t, 'a> {
    pub tuple: &'t Tuple<'a>,
    pub task: TaskId,
    pub execute_latency: Duration,
}

/// A tuple a bolt acked.
#[derive(Debug)]
pub struct BoltAckInfo<'a> {
    pub tuple: Tuple<'a>,
    pub task: TaskId,
}

/// A tuple a bolt failed.
#[derive(Debug)]
pub struct BoltFailInfo<'a> {
    pub tuple: Tuple<'a>,
    pub task: TaskId,
}
