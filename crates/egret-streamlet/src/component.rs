//! The two components every streamlet compiles to: [`StreamletSpout`] (a source) and [`StreamletBolt`] (an operator),
//! and how they put elements on the wire.
//!
//! Every streamlet stream has two fields, `k` and `v`, both bytes: `v` is the element, encoded with postcard (the one
//! encoding of user types in Egret); `k` is empty, except on the stream a keyed child subscribes to, where it holds the
//! encoded key and the child subscribes with a fields grouping on `k`. The key is computed once, by the parent, from the
//! element it has in hand, so routing never decodes an element. A child that reads only the key (`count_by_key`) gets a
//! stream with the one field `k`: nothing of the element travels.

use std::collections::HashMap;
use std::sync::Arc;

use egret_api::{
    Bolt, BoltCollector, CheckpointId, MessageId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector, Stateful,
    TaskId, TopologyContext, Tuple, UserError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The fields of every streamlet stream.
pub const FIELDS: [&str; 2] = ["k", "v"];
/// The fields of a stream whose child reads only the key.
pub const KEY_ONLY_FIELDS: [&str; 1] = ["k"];

/// A streamlet tuple's values: `(k, v)`, or `(k)` alone on a key-only stream (`v` is `None`).
pub(crate) struct KeyValue<'a>(pub &'a [u8], pub Option<&'a [u8]>);

impl egret_api::Values for KeyValue<'_> {
    fn encode_all(&self, enc: &mut egret_api::value::Encoder) {
        enc.bytes_value(self.0);
        if let Some(v) = self.1 {
            enc.bytes_value(v);
        }
    }
}

/// A key function of a keyed child: writes the element's encoded key into the buffer (cleared first).
pub(crate) type KeyFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) + Send + Sync>;

/// An event-time child's timestamp function.
pub(crate) type TimestampFn<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// One output stream of a streamlet's component.
pub(crate) struct OutStream<T> {
    pub stream: String,
    /// For the stream of a keyed child: how to compute the key.
    pub key: Option<KeyFn<T>>,
    /// Whether the child reads the element (`count_by_key` needs only the key: `v` is then empty).
    pub value: bool,
    /// A watermark stream (to every task of an event-time windowed child): the largest timestamp of the elements
    /// this task emitted, sent every [`WATERMARK_EVERY`] elements and when the task goes idle.
    pub watermark: Option<TimestampFn<T>>,
}

impl<T> Clone for OutStream<T> {
    fn clone(&self) -> Self {
        OutStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
            value: self.value,
            watermark: self.watermark.clone(),
        }
    }
}

/// Elements between two watermarks a task sends on its own (it also sends one when idle).
pub(crate) const WATERMARK_EVERY: u32 = 256;

/// Where a watermark stream stands.
#[derive(Default, Clone, Copy)]
struct WatermarkState {
    max: Option<i64>,
    sent: Option<i64>,
    since: u32,
}

/// Encodes an element once and hands it to every output stream (with its key where a child is keyed).
pub(crate) struct Outputs<T> {
    streams: Vec<OutStream<T>>,
    /// Indexed like `streams` (only watermark streams use theirs).
    watermarks: Vec<WatermarkState>,
    /// Whether any stream carries the element (not only its key).
    any_value: bool,
    /// Reused for every element: encoding allocates nothing once they have grown.
    value: Vec<u8>,
    key: Vec<u8>,
}

impl<T: Serialize> Outputs<T> {
    pub fn new(streams: Vec<OutStream<T>>) -> Self {
        Outputs {
            watermarks: vec![WatermarkState::default(); streams.len()],
            any_value: streams.iter().any(|s| s.value),
            streams,
            value: Vec::new(),
            key: Vec::new(),
        }
    }

    pub fn declare(&self, out: &mut OutputDeclarer) {
        for s in &self.streams {
            if s.value || s.watermark.is_some() {
                out.declare_stream(s.stream.clone(), FIELDS);
            } else {
                out.declare_stream(s.stream.clone(), KEY_ONLY_FIELDS);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Emits `element` on every stream through `emit(stream, key, value)`.
    pub fn emit(&mut self, element: &T, emit: &mut EmitFn<'_>) -> Result<(), postcard::Error> {
        if self.streams.is_empty() {
            return Ok(());
        }
        self.value.clear();
        if self.any_value {
            encode_into(element, &mut self.value)?;
        }
        for (s, w) in self.streams.iter().zip(&mut self.watermarks) {
            if let Some(ts) = &s.watermark {
                let t = ts(element);
                w.max = Some(w.max.map_or(t, |m| m.max(t)));
                w.since += 1;
                if w.since >= WATERMARK_EVERY {
                    send_watermark(&s.stream, w, emit);
                }
                continue;
            }
            let value = s.value.then_some(&self.value[..]);
            match &s.key {
                Some(key) => {
                    key(element, &mut self.key);
                    emit(&s.stream, &self.key, value)
                }
                None => emit(&s.stream, &[], value),
            }
        }
        Ok(())
    }
}

impl<T> Outputs<T> {
    /// Sends the watermarks that moved since they were last sent (the task is idle, or a tick came).
    pub fn flush_watermarks(&mut self, emit: &mut EmitFn<'_>) {
        for (s, w) in self.streams.iter().zip(&mut self.watermarks) {
            if s.watermark.is_some() && w.max > w.sent {
                send_watermark(&s.stream, w, emit);
            }
        }
    }
}

fn send_watermark(stream: &str, w: &mut WatermarkState, emit: &mut EmitFn<'_>) {
    if let Some(max) = w.max {
        emit(stream, &[], Some(&max.to_le_bytes()));
        w.sent = Some(max);
    }
    w.since = 0;
}

/// A watermark tuple's timestamp (its `v`), if it is one.
pub(crate) fn watermark_of(stream: &str, value: &[u8]) -> Option<i64> {
    if !stream.starts_with(WATERMARK_PREFIX) {
        return None;
    }
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

/// Watermark streams' names start with this.
pub(crate) const WATERMARK_PREFIX: &str = "wm-";

/// Appends `value`'s postcard encoding to `buf` (postcard's own `to_extend` copies byte by byte).
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
    struct Append<'a>(&'a mut Vec<u8>);
    impl postcard::ser_flavors::Flavor for Append<'_> {
        type Output = ();
        fn try_push(&mut self, b: u8) -> postcard::Result<()> {
            self.0.push(b);
            Ok(())
        }
        fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
            self.0.extend_from_slice(b);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
    postcard::serialize_with_flavor(value, Append(buf))
}

/// Decodes an element from its `v` bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, UserError> {
    postcard::from_bytes(bytes).map_err(|e| format!("an element does not decode as this streamlet's type: {e}").into())
}

/// Where an input element came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct From<'a> {
    pub task: TaskId,
    /// The emitting component (a join tells its two sides apart by it).
    pub component: &'a str,
}

/// What an operator is given to emit with: `emit(stream, key, value)`, the value `None` on a key-only stream.
pub(crate) type EmitFn<'a> = dyn FnMut(&str, &[u8], Option<&[u8]>) + 'a;

/// A streamlet operator, type-erased: it decodes its input and encodes its output itself.
pub(crate) trait Operator: Send {
    /// One input element: its key bytes (empty unless the operator is keyed), its encoded value, and the task it came
    /// from (event-time operators keep a watermark per upstream task).
    fn process(&mut self, key: &[u8], value: &[u8], src: From<'_>, emit: &mut EmitFn<'_>) -> Result<(), UserError>;
    /// A tick (processing time advanced): operators act on time and send the watermarks of their outputs.
    fn tick(&mut self, _now_ms: i64, _emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        Ok(())
    }
    /// A watermark from an upstream task (event-time windows).
    fn watermark(&mut self, _from: From<'_>, _ts: i64, _emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        Ok(())
    }
    fn declare(&self, out: &mut OutputDeclarer);
    /// Called once before the first element, with the task's context.
    fn open(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }
    /// Effectively-once: the operator's state, if it keeps any.
    fn state(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
    fn close(&mut self) {}
}

/// The bolt of an operator streamlet. Under at-least-once its emits are anchored on the input, which it acks (or
/// fails when the operator fails on it).
pub struct StreamletBolt {
    op: Box<dyn Operator>,
}

impl StreamletBolt {
    pub(crate) fn new(op: Box<dyn Operator>) -> Self {
        StreamletBolt { op }
    }

    /// A bolt whose operator could not be made: its task fails to start with `reason`.
    pub(crate) fn failed(reason: String) -> Self {
        StreamletBolt {
            op: Box::new(Failed(reason)),
        }
    }
}

/// An operator that could not be made (a bad window spec): `open` reports why.
struct Failed(String);

impl Operator for Failed {
    fn process(&mut self, _k: &[u8], _v: &[u8], _src: From<'_>, _emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        Err(self.0.clone().into())
    }
    fn declare(&self, _out: &mut OutputDeclarer) {}
    fn open(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Err(self.0.clone().into())
    }
}

impl Bolt for StreamletBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.op.declare(out)
    }

    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.op.open(ctx)
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if tuple.is_tick() {
            let now = now_ms();
            let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| out.emit_on(stream, &[], KeyValue(k, v));
            if let Err(e) = self.op.tick(now, &mut emit) {
                out.report_error(&*e);
            }
            return;
        }
        let (key, value) = match key_and_value(tuple) {
            Ok(kv) => kv,
            Err(e) => {
                out.report_error(&e);
                return out.fail(tuple);
            }
        };
        if let Some(ts) = watermark_of(tuple.source_stream(), value) {
            let from = From {
                task: tuple.source_task(),
                component: tuple.source_component(),
            };
            let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| out.emit_on(stream, &[], KeyValue(k, v));
            if let Err(e) = self.op.watermark(from, ts, &mut emit) {
                out.report_error(&*e);
            }
            return out.ack(tuple);
        }
        let result = {
            let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| out.emit_on(stream, &[tuple], KeyValue(k, v));
            let from = From {
                task: tuple.source_task(),
                component: tuple.source_component(),
            };
            self.op.process(key, value, from, &mut emit)
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
        self.op.close()
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        self.op.state()
    }
}

/// A streamlet tuple's fields `k` and `v` (`v` empty on a key-only stream), read straight from its encoded values:
/// every element goes through here, so the common shape (one or two bytes values) is parsed in place and anything
/// else takes the general decoder, which says what is wrong.
fn key_and_value<'a>(tuple: &Tuple<'a>) -> Result<(&'a [u8], &'a [u8]), egret_api::TupleError> {
    if let Some((k, rest)) = bytes_field(tuple.encoded_values()) {
        if rest.is_empty() && tuple.fields().len() == 1 {
            return Ok((k, &[]));
        }
        if let Some((v, &[])) = bytes_field(rest) {
            return Ok((k, v));
        }
    }
    Ok((tuple.get_bytes(0)?, tuple.get_bytes(1)?))
}

/// A bytes value at the start of `b` (tag, little-endian u32 length, body) and what follows it.
fn bytes_field(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    if tag != egret_api::value::TAG_BYTES {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Milliseconds since the Unix epoch (the processing time windows and timestamps use).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a source task is: the context it gets to make its iterator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceContext {
    /// This task's index among the source's tasks (0-based).
    pub index: u32,
    /// How many tasks the source has.
    pub parallelism: u32,
}

/// What a source task's supplier gives when asked for an element.
pub(crate) enum Next<T> {
    Item(T),
    /// Nothing now; ask again later (a rate-limited or idle source).
    NotNow,
    /// The source is exhausted.
    Ended,
}

/// A source task's supplier of elements.
pub(crate) type Supplier<T> = Box<dyn FnMut() -> Next<T> + Send>;

/// Makes a source task's supplier.
pub(crate) type SupplierFactory<T> = Arc<dyn Fn(SourceContext) -> Supplier<T> + Send + Sync>;

/// Elements taken from the iterator per `next_tuple`.
const PER_CALL: usize = 64;

/// The spout of a source streamlet: it pulls its task's supplier. Under effectively-once its state is how many
/// elements it has taken, so a rollback makes the supplier anew and skips that many: any source that yields the same
/// sequence again (a file, a generator from a seed, a log from an offset) is replayed exactly. Under at-least-once it
/// keeps the elements in flight and emits a failed one again.
pub struct StreamletSpout<T> {
    make: SupplierFactory<T>,
    supplier: Option<Supplier<T>>,
    outputs: Outputs<T>,
    taken: u64,
    /// Restored position not yet skipped to (the iterator is made at `open`).
    skip_to: u64,
    acking: bool,
    pending: HashMap<MessageId, T>,
    replay: Vec<MessageId>,
    exhausted: bool,
}

impl<T: Serialize + Clone + Send + 'static> StreamletSpout<T> {
    pub(crate) fn new(make: SupplierFactory<T>, outputs: Outputs<T>) -> Self {
        StreamletSpout {
            make,
            supplier: None,
            outputs,
            taken: 0,
            skip_to: 0,
            acking: false,
            pending: HashMap::new(),
            replay: Vec::new(),
            exhausted: false,
        }
    }

    /// An idle source tells its event-time children how far it got.
    fn flush_watermarks(&mut self, out: &mut SpoutCollector<'_>) {
        let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| out.emit_on(stream, None, KeyValue(k, v));
        self.outputs.flush_watermarks(&mut emit);
    }

    fn emit(&mut self, id: MessageId, element: &T, out: &mut SpoutCollector<'_>) {
        let acking = self.acking;
        let mut emit = |stream: &str, k: &[u8], v: Option<&[u8]>| {
            out.emit_on(stream, acking.then_some(id), KeyValue(k, v));
        };
        if let Err(e) = self.outputs.emit(element, &mut emit) {
            out.report_error(&e);
        }
    }
}

impl<T: Serialize + Clone + Send + 'static> Spout for StreamletSpout<T> {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.outputs.declare(out)
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.acking = ctx.config().reliability_mode()? == ReliabilityMode::AtLeastOnce;
        let mut supplier = (self.make)(SourceContext {
            index: ctx.component_index(),
            parallelism: ctx.parallelism(),
        });
        // Back to the restored position: the same elements again, not emitted.
        while self.taken < self.skip_to {
            match supplier() {
                Next::Item(_) => self.taken += 1,
                Next::NotNow => std::thread::sleep(std::time::Duration::from_millis(1)),
                Next::Ended => {
                    return Err(format!(
                        "the source ended after {} elements; its saved position is {}: it does not replay",
                        self.taken, self.skip_to
                    )
                    .into());
                }
            }
        }
        self.supplier = Some(supplier);
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        for _ in 0..PER_CALL {
            if let Some(id) = self.replay.pop() {
                if let Some(element) = self.pending.get(&id).cloned() {
                    self.emit(id, &element, out);
                }
                continue;
            }
            if self.exhausted {
                return self.flush_watermarks(out);
            }
            let Some(supplier) = self.supplier.as_mut() else { return };
            let element = match supplier() {
                Next::Item(element) => element,
                Next::NotNow => return self.flush_watermarks(out),
                Next::Ended => {
                    self.exhausted = true;
                    return self.flush_watermarks(out);
                }
            };
            let id = self.taken;
            self.taken += 1;
            self.emit(id, &element, out);
            if self.acking {
                self.pending.insert(id, element);
            }
        }
    }

    fn ack(&mut self, id: MessageId) {
        self.pending.remove(&id);
    }

    fn fail(&mut self, id: MessageId) {
        if self.pending.contains_key(&id) {
            self.replay.push(id);
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl<T: Serialize + Clone + Send + 'static> Stateful for StreamletSpout<T> {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.skip_to = match restored {
            None => 0,
            Some(b) => u64::from_le_bytes(
                b.try_into()
                    .map_err(|_| format!("a source's state is 8 bytes, not {}", b.len()))?,
            ),
        };
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&self.taken.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_api::value::{Encoder, TAG_BYTES};

    fn encoded(fields: &[&[u8]]) -> Vec<u8> {
        let mut enc = Encoder::new();
        for f in fields {
            enc.bytes_value(f);
        }
        enc.bytes().to_vec()
    }

    #[test]
    fn bytes_fields_are_read_in_place_and_a_short_or_foreign_value_is_not_taken() {
        let two = encoded(&[b"key", b"value"]);
        let (k, rest) = bytes_field(&two).unwrap();
        assert_eq!(k, b"key");
        assert_eq!(bytes_field(rest), Some((&b"value"[..], &[][..])));
        // A length past the end, a cut length, another tag: not a bytes value here (the general decoder reports it).
        let mut long = vec![TAG_BYTES];
        long.extend_from_slice(&10u32.to_le_bytes());
        long.extend_from_slice(b"short");
        assert_eq!(bytes_field(&long), None);
        assert_eq!(bytes_field(&[TAG_BYTES, 1, 0]), None);
        assert_eq!(bytes_field(&[egret_api::value::TAG_STR, 0, 0, 0, 0]), None);
        assert_eq!(bytes_field(&[]), None);
    }

    #[test]
    fn encode_into_appends_postcards_encoding() {
        let mut buf = vec![9];
        encode_into(&("word".to_string(), 7u64), &mut buf).unwrap();
        let mut expected = vec![9];
        expected.extend(postcard::to_stdvec(&("word".to_string(), 7u64)).unwrap());
        assert_eq!(buf, expected);
    }
}
