//! The operators behind the streamlet methods. Each decodes its input, does its work and encodes its output through
//! [`Outputs`]; those with state implement `Stateful` so that effectively-once checkpoints and restores it.

use std::hash::Hash;
use std::marker::PhantomData;

use egret_api::{CheckpointId, OutputDeclarer, Stateful, TopologyContext, UserError};
use serde::Serialize;

use crate::builder::Element;
use crate::component::{EmitFn, From, Operator, Outputs, decode};
use crate::key_bytes::KeyBytes;

fn emit_all<U: Serialize>(
    outputs: &mut Outputs<U>,
    items: &mut Vec<U>,
    emit: &mut EmitFn<'_>,
) -> Result<(), UserError> {
    for item in items.drain(..) {
        outputs.emit(&item, emit)?;
    }
    Ok(())
}

/// A task's function of each element, pushing its outputs.
pub(crate) type ElementFn<T, U> = Box<dyn FnMut(T, &mut Vec<U>) + Send>;

/// `map`, `flat_map`, `filter`, `key_by`, `repartition`, `union`, `consume`, `log`: a function of each element.
pub(crate) struct PerElement<T, U> {
    f: ElementFn<T, U>,
    outputs: Outputs<U>,
    buf: Vec<U>,
}

impl<T, U: Serialize> PerElement<T, U> {
    pub fn new(f: ElementFn<T, U>, outputs: Outputs<U>) -> Self {
        PerElement {
            f,
            outputs,
            buf: Vec::new(),
        }
    }
}

impl<T: Element, U: Element> Operator for PerElement<T, U> {
    fn process(&mut self, _key: &[u8], value: &[u8], _src: From<'_>, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        (self.f)(decode(value)?, &mut self.buf);
        emit_all(&mut self.outputs, &mut self.buf, emit)
    }

    fn declare(&self, out: &mut OutputDeclarer) {
        self.outputs.declare(out)
    }

    fn tick(&mut self, _now_ms: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.outputs.flush_watermarks(emit);
        Ok(())
    }
}

/// A custom operator with state (Heron's `SerializableTransformer`): `transform` pushes zero or more outputs per
/// input. Under effectively-once, `state` gives the runtime its state (see [`egret_api::KeyedState`]).
pub trait Transformer<I, O>: Send + 'static {
    fn setup(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }
    fn transform(&mut self, input: I, out: &mut Vec<O>) -> Result<(), UserError>;
    fn cleanup(&mut self) {}
    /// Return `Some(self)` to have the state checkpointed and restored.
    fn state(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
}

pub(crate) struct Transform<I, O, X> {
    x: X,
    outputs: Outputs<O>,
    buf: Vec<O>,
    _i: PhantomData<fn(I)>,
}

impl<I, O: Serialize, X> Transform<I, O, X> {
    pub fn new(x: X, outputs: Outputs<O>) -> Self {
        Transform {
            x,
            outputs,
            buf: Vec::new(),
            _i: PhantomData,
        }
    }
}

impl<I: Element, O: Element, X: Transformer<I, O>> Operator for Transform<I, O, X> {
    fn process(&mut self, _key: &[u8], value: &[u8], _src: From<'_>, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.x.transform(decode(value)?, &mut self.buf)?;
        emit_all(&mut self.outputs, &mut self.buf, emit)
    }

    fn declare(&self, out: &mut OutputDeclarer) {
        self.outputs.declare(out)
    }

    fn tick(&mut self, _now_ms: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.outputs.flush_watermarks(emit);
        Ok(())
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.x.setup(ctx)
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        self.x.state()
    }

    fn close(&mut self) {
        self.x.cleanup()
    }
}

/// Where a terminal streamlet's elements go (Heron's `Sink`). A sink that must write each result exactly once under
/// effectively-once returns its `Stateful` hooks from `state` (a two-phase sink commits in `post_save`).
pub trait Sink<T>: Send + 'static {
    fn setup(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        Ok(())
    }
    fn put(&mut self, element: T) -> Result<(), UserError>;
    fn cleanup(&mut self) {}
    fn state(&mut self) -> Option<&mut dyn Stateful> {
        None
    }
}

pub(crate) struct ToSink<T, S> {
    sink: S,
    _t: PhantomData<fn(T)>,
}

impl<T, S> ToSink<T, S> {
    pub fn new(sink: S) -> Self {
        ToSink { sink, _t: PhantomData }
    }
}

impl<T: Element, S: Sink<T>> Operator for ToSink<T, S> {
    fn process(&mut self, _key: &[u8], value: &[u8], _src: From<'_>, _emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.sink.put(decode(value)?)
    }

    fn declare(&self, _out: &mut OutputDeclarer) {}

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.sink.setup(ctx)
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        self.sink.state()
    }

    fn close(&mut self) {
        self.sink.cleanup()
    }
}

/// `reduce_by_key`: the reduced value per key (by its encoded bytes, as the parent computed them), state.
pub(crate) struct ReduceByKey<T, K, V> {
    value: Box<dyn Fn(T) -> V + Send + Sync>,
    op: Box<dyn Fn(V, V) -> V + Send + Sync>,
    reduced: foldhash::HashMap<KeyBytes, (K, V)>,
    outputs: Outputs<(K, V)>,
}

impl<T, K: Serialize, V: Serialize> ReduceByKey<T, K, V> {
    pub fn new(
        value: Box<dyn Fn(T) -> V + Send + Sync>,
        op: Box<dyn Fn(V, V) -> V + Send + Sync>,
        outputs: Outputs<(K, V)>,
    ) -> Self {
        ReduceByKey {
            value,
            op,
            reduced: foldhash::HashMap::default(),
            outputs,
        }
    }
}

impl<T: Element, K: Element + Eq + Hash, V: Element> Operator for ReduceByKey<T, K, V> {
    fn process(&mut self, key: &[u8], value: &[u8], _src: From<'_>, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        let v = (self.value)(decode(value)?);
        let entry = match self.reduced.remove(key) {
            Some((k, old)) => (k, (self.op)(old, v)),
            None => (decode::<K>(key)?, v),
        };
        self.outputs.emit(&entry, emit)?;
        self.reduced.insert(KeyBytes::new(key), entry);
        Ok(())
    }

    fn declare(&self, out: &mut OutputDeclarer) {
        self.outputs.declare(out)
    }

    fn tick(&mut self, _now_ms: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.outputs.flush_watermarks(emit);
        Ok(())
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl<T: Element, K: Element + Eq + Hash, V: Element> Stateful for ReduceByKey<T, K, V> {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.reduced.clear();
        if let Some(b) = restored {
            let entries: Vec<(Vec<u8>, K, V)> = postcard::from_bytes(b)?;
            for (bytes, k, v) in entries {
                self.reduced.insert(KeyBytes::new(&bytes), (k, v));
            }
        }
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let entries: Vec<(&[u8], &K, &V)> = self.reduced.iter().map(|(b, (k, v))| (b.as_slice(), k, v)).collect();
        out.extend_from_slice(&postcard::to_stdvec(&entries)?);
        Ok(())
    }
}

/// `count_by_key`: a count per key (foldhash: in-process only, never routing), kept by the key's encoded bytes (an element is never decoded to be counted; the
/// key is decoded only to be emitted, when something consumes the counts).
pub(crate) struct CountByKey<K> {
    counts: foldhash::HashMap<KeyBytes, u64>,
    outputs: Outputs<(K, u64)>,
}

impl<K: Serialize> CountByKey<K> {
    pub fn new(outputs: Outputs<(K, u64)>) -> Self {
        CountByKey {
            counts: foldhash::HashMap::default(),
            outputs,
        }
    }
}

impl<K: Element> Operator for CountByKey<K> {
    fn process(&mut self, key: &[u8], _value: &[u8], _src: From<'_>, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        let n = match self.counts.get_mut(key) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.insert(KeyBytes::new(key), 1);
                1
            }
        };
        if !self.outputs.is_empty() {
            self.outputs.emit(&(decode::<K>(key)?, n), emit)?;
        }
        Ok(())
    }

    fn declare(&self, out: &mut OutputDeclarer) {
        self.outputs.declare(out)
    }

    fn tick(&mut self, _now_ms: i64, emit: &mut EmitFn<'_>) -> Result<(), UserError> {
        self.outputs.flush_watermarks(emit);
        Ok(())
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl<K: Element> Stateful for CountByKey<K> {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.counts = match restored {
            None => foldhash::HashMap::default(),
            Some(b) => postcard::from_bytes::<Vec<(Vec<u8>, u64)>>(b)?
                .into_iter()
                .map(|(k, n)| (KeyBytes::new(&k), n))
                .collect(),
        };
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let entries: Vec<(&[u8], &u64)> = self.counts.iter().map(|(k, n)| (k.as_slice(), n)).collect();
        out.extend_from_slice(&postcard::to_stdvec(&entries)?);
        Ok(())
    }
}
