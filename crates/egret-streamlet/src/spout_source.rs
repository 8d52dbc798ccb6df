//! A source streamlet made from any spout (Heron's `newSource(IRichSpout)`): the spout runs as it would on its own,
//! and every tuple it emits becomes an element through the user's conversion. The spout keeps its own reliability
//! and state: its message ids are the elements' (its `ack`/`fail` are called), and under effectively-once its
//! `stateful()` is what is checkpointed, so a spout that seeks on restore (a log from an offset) replays exactly.

use std::collections::HashMap;
use std::sync::Arc;

use egret_api::value::Encoder;
use egret_api::{
    AckState, EmitRequest, EmitSink, MessageId, OutputDeclarer, Roots, Spout, SpoutCollector, Stateful, StreamSource,
    TaskId, TopologyContext, Tuple, UserError,
};
use serde::Serialize;

use crate::component::{KeyValue, Outputs};

/// Makes an element from a tuple the spout emitted; an error drops the tuple (reported, and failed to the spout).
pub(crate) type ElementFn<T> = Arc<dyn Fn(&Tuple<'_>) -> Result<T, UserError> + Send + Sync>;

/// The spout of a source made from a user's spout.
pub(crate) struct SpoutSource<S, T> {
    spout: S,
    element: ElementFn<T>,
    outputs: Outputs<T>,
    /// The user spout's declared streams, as its tuples' sources.
    streams: HashMap<String, Arc<StreamSource>>,
    task: TaskId,
    encoder: Encoder,
    /// Message ids of tuples that did not convert: failed to the spout after its `next_tuple`.
    failed: Vec<MessageId>,
}

impl<S: Spout, T: Serialize> SpoutSource<S, T> {
    pub fn new(spout: S, element: ElementFn<T>, outputs: Outputs<T>) -> Self {
        SpoutSource {
            spout,
            element,
            outputs,
            streams: HashMap::new(),
            task: TaskId(0),
            encoder: Encoder::new(),
            failed: Vec::new(),
        }
    }
}

/// The collector the user's spout emits into: each tuple is converted and emitted on the streamlet's streams.
struct Convert<'a, 'c, T> {
    encoder: &'a mut Encoder,
    out: &'a mut SpoutCollector<'c>,
    outputs: &'a mut Outputs<T>,
    element: &'a (dyn Fn(&Tuple<'_>) -> Result<T, UserError> + Send + Sync),
    streams: &'a HashMap<String, Arc<StreamSource>>,
    task: TaskId,
    failed: &'a mut Vec<MessageId>,
    emitted: bool,
}

impl<T: Serialize> EmitSink for Convert<'_, '_, T> {
    fn encoder(&mut self) -> &mut Encoder {
        self.encoder
    }

    fn emit(&mut self, request: EmitRequest<'_>) {
        self.emitted = true;
        let Some(source) = self.streams.get(request.stream) else {
            let e = format!(
                "the spout emitted on stream {:?}, which it did not declare",
                request.stream
            );
            return self.report_error(&*UserError::from(e));
        };
        let tuple = Tuple::new(source, self.task, self.encoder.bytes(), 0, Roots::default());
        let element = match (self.element)(&tuple) {
            Ok(element) => element,
            Err(e) => {
                self.out.report_error(&*e);
                self.failed.extend(request.message_id);
                return;
            }
        };
        let (out, id) = (&mut *self.out, request.message_id);
        let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| out.emit_on(stream, id, KeyValue(k, v));
        if let Err(e) = self.outputs.emit(&element, &mut emit) {
            self.out.report_error(&e);
        }
    }

    // A spout's collector never acks or fails.
    fn ack(&mut self, _tuple: AckState<'_>) {}
    fn fail(&mut self, _tuple: AckState<'_>) {}

    fn report_error(&mut self, error: &dyn std::error::Error) {
        self.out.report_error(error)
    }
}

impl<S: Spout, T: Serialize + Send + 'static> Spout for SpoutSource<S, T> {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.outputs.declare(out)
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let mut declared = OutputDeclarer::new();
        self.spout.declare_outputs(&mut declared);
        self.streams = declared
            .into_streams()
            .into_iter()
            .map(|s| {
                let source = StreamSource {
                    component: ctx.component_id().to_string(),
                    stream: s.name.clone(),
                    fields: s.fields,
                };
                (s.name, Arc::new(source))
            })
            .collect();
        self.task = ctx.task_id();
        self.spout.open(ctx)
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let mut convert = Convert {
            encoder: &mut self.encoder,
            out,
            outputs: &mut self.outputs,
            element: &*self.element,
            streams: &self.streams,
            task: self.task,
            failed: &mut self.failed,
            emitted: false,
        };
        self.spout.next_tuple(&mut SpoutCollector::new(&mut convert));
        if !convert.emitted {
            // An idle spout tells its event-time children how far it got (its last element may have been the last).
            let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| out.emit_on(stream, None, KeyValue(k, v));
            self.outputs.flush_watermarks(&mut emit);
        }
        for id in self.failed.drain(..) {
            self.spout.fail(id);
        }
    }

    fn ack(&mut self, id: MessageId) {
        self.spout.ack(id)
    }

    fn fail(&mut self, id: MessageId) {
        self.spout.fail(id)
    }

    fn activate(&mut self) {
        self.spout.activate()
    }

    fn deactivate(&mut self) {
        self.spout.deactivate()
    }

    fn close(&mut self) {
        self.spout.close()
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        self.spout.stateful()
    }
}
