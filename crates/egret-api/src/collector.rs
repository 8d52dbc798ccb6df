//! What user code emits through. The collectors encode values into the runtime's buffer and hand the runtime an
//! [`EmitRequest`]; routing, batching and acking happen behind the [`EmitSink`] the runtime implements.
//!
//! A bad emit (an undeclared stream, the wrong number of values, a direct emit to a task that does not consume the
//! stream) is a bug in the topology: the tuple is dropped and the error is reported as the task's error, with the
//! stream named, rather than returned from every emit call.

use crate::ids::{MessageId, TaskId};
use crate::tuple::{AckState, Anchor, Tuple};
use crate::value::{Encoder, Values};

/// One emit, after its values were encoded into [`EmitSink::encoder`].
pub struct EmitRequest<'a> {
    pub stream: &'a str,
    /// Spouts only: track this tuple's tree under at-least-once.
    pub message_id: Option<MessageId>,
    /// Bolts only: the inputs this tuple descends from.
    pub anchors: &'a [&'a dyn Anchor],
    /// `emit_direct`: the one consumer task.
    pub direct_task: Option<TaskId>,
}

/// Why an emit was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("component {component} emitted on undeclared stream {stream:?}")]
    UnknownStream { component: String, stream: String },
    #[error("component {component} emitted {got} values on stream {stream:?}, which declares {expected} fields")]
    WrongArity {
        component: String,
        stream: String,
        expected: usize,
        got: usize,
    },
    #[error("component {component} used emit_direct on stream {stream:?}, which is not declared direct")]
    NotDirect { component: String, stream: String },
    #[error("component {component} must use emit_direct on direct stream {stream:?}")]
    DirectRequired { component: String, stream: String },
    #[error("component {component} sent a direct tuple on {stream:?} to task {task}, which does not consume it")]
    BadDirectTask {
        component: String,
        stream: String,
        task: TaskId,
    },
    #[error("component {component} emitted a tuple on {stream:?} anchored to {roots} roots; at most {max} fit a tuple")]
    TooManyRoots {
        component: String,
        stream: String,
        roots: usize,
        max: usize,
    },
    #[error("component {component} emitted a tuple of {bytes} bytes on {stream:?}; at most {max} bytes fit a tuple")]
    TupleTooLarge {
        component: String,
        stream: String,
        bytes: usize,
        max: usize,
    },
}

/// Implemented by the runtime for each task.
pub trait EmitSink {
    /// The buffer the next tuple's values are encoded into; cleared by the collector before each emit.
    fn encoder(&mut self) -> &mut Encoder;
    /// Route and send the tuple in [`EmitSink::encoder`].
    fn emit(&mut self, request: EmitRequest<'_>);
    fn ack(&mut self, tuple: AckState<'_>);
    fn fail(&mut self, tuple: AckState<'_>);
    fn report_error(&mut self, error: &dyn std::error::Error);
}

fn encode(sink: &mut dyn EmitSink, values: &(impl Values + ?Sized)) {
    let enc = sink.encoder();
    enc.clear();
    values.encode_all(enc);
}

/// A spout's collector.
pub struct SpoutCollector<'a> {
    sink: &'a mut dyn EmitSink,
}

impl<'a> SpoutCollector<'a> {
    pub fn new(sink: &'a mut dyn EmitSink) -> Self {
        SpoutCollector { sink }
    }

    /// Emits on the default stream, untracked.
    pub fn emit(&mut self, values: impl Values) {
        self.emit_on(crate::DEFAULT_STREAM, None, values)
    }

    /// Emits on the default stream; under at-least-once the spout's `ack(id)` or `fail(id)` follows.
    pub fn emit_with_id(&mut self, id: MessageId, values: impl Values) {
        self.emit_on(crate::DEFAULT_STREAM, Some(id), values)
    }

    pub fn emit_on(&mut self, stream: &str, id: Option<MessageId>, values: impl Values) {
        encode(self.sink, &values);
        self.sink.emit(EmitRequest {
            stream,
            message_id: id,
            anchors: &[],
            direct_task: None,
        });
    }

    /// Emits to one task of a component that subscribed to this direct stream with direct grouping.
    pub fn emit_direct(&mut self, task: TaskId, stream: &str, id: Option<MessageId>, values: impl Values) {
        encode(self.sink, &values);
        self.sink.emit(EmitRequest {
            stream,
            message_id: id,
            anchors: &[],
            direct_task: Some(task),
        });
    }

    pub fn report_error(&mut self, error: &dyn std::error::Error) {
        self.sink.report_error(error)
    }
}

/// A bolt's collector.
pub struct BoltCollector<'a> {
    sink: &'a mut dyn EmitSink,
}

impl<'a> BoltCollector<'a> {
    pub fn new(sink: &'a mut dyn EmitSink) -> Self {
        BoltCollector { sink }
    }

    /// Emits on the default stream, anchored on nothing (its loss never replays anything).
    pub fn emit(&mut self, values: impl Values) {
        self.emit_on(crate::DEFAULT_STREAM, &[], values)
    }

    /// Emits on the default stream as a child of `anchors`: their trees complete only when it is acked.
    pub fn emit_anchored(&mut self, anchors: &[&dyn Anchor], values: impl Values) {
        self.emit_on(crate::DEFAULT_STREAM, anchors, values)
    }

    pub fn emit_on(&mut self, stream: &str, anchors: &[&dyn Anchor], values: impl Values) {
        encode(self.sink, &values);
        self.sink.emit(EmitRequest {
            stream,
            message_id: None,
            anchors,
            direct_task: None,
        });
    }

    pub fn emit_direct(&mut self, task: TaskId, stream: &str, anchors: &[&dyn Anchor], values: impl Values) {
        encode(self.sink, &values);
        self.sink.emit(EmitRequest {
            stream,
            message_id: None,
            anchors,
            direct_task: Some(task),
        });
    }

    /// The tuple was processed: under at-least-once its part of the tree is done.
    pub fn ack(&mut self, tuple: &dyn Anchor) {
        self.sink.ack(tuple.ack_state())
    }

    /// The tuple could not be processed: under at-least-once its roots fail now and their spouts may replay.
    pub fn fail(&mut self, tuple: &dyn Anchor) {
        self.sink.fail(tuple.ack_state())
    }

    pub fn report_error(&mut self, error: &dyn std::error::Error) {
        self.sink.report_error(error)
    }
}

/// A [`crate::BasicBolt`]'s collector: every emit is anchored on the input being executed.
pub struct BasicCollector<'a, 'b> {
    inner: &'a mut BoltCollector<'b>,
    input: &'a Tuple<'a>,
}

impl<'a, 'b> BasicCollector<'a, 'b> {
    pub fn new(inner: &'a mut BoltCollector<'b>, input: &'a Tuple<'a>) -> Self {
        BasicCollector { inner, input }
    }

    pub fn emit(&mut self, values: impl Values) {
        self.emit_on(crate::DEFAULT_STREAM, values)
    }

    pub fn emit_on(&mut self, stream: &str, values: impl Values) {
        let input: &dyn Anchor = self.input;
        self.inner.emit_on(stream, &[input], values)
    }

    pub fn emit_direct(&mut self, task: TaskId, stream: &str, values: impl Values) {
        let input: &dyn Anchor = self.input;
        self.inner.emit_direct(task, stream, &[input], values)
    }

    pub fn report_error(&mut self, error: &dyn std::error::Error) {
        self.inner.report_error(error)
    }
}
