//! The tuple a bolt receives: a borrowed view into the batch it arrived in, with typed getters that return errors.

use std::cell::Cell;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::fields::Fields;
use crate::ids::{Roots, TaskId};
use crate::value::{self, DecodeError, Value, ValueRef, ValuesIter};

/// Component and stream names of Heron's tick tuples.
pub const SYSTEM_COMPONENT: &str = "__system";
pub const TICK_STREAM: &str = "__tick";

/// Where tuples of one stream come from and what their fields are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSource {
    pub component: String,
    pub stream: String,
    pub fields: Fields,
}

impl StreamSource {
    pub fn tick() -> Arc<StreamSource> {
        Arc::new(StreamSource {
            component: SYSTEM_COMPONENT.into(),
            stream: TICK_STREAM.into(),
            fields: Fields::default(),
        })
    }
}

/// Why a value could not be read from a tuple.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TupleError {
    #[error("stream {component}/{stream} has no field {field:?} (fields: {fields})")]
    NoSuchField {
        component: String,
        stream: String,
        field: String,
        fields: String,
    },
    #[error("field index {index} out of range: the tuple has {len} values")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("field {field} is {found}, not {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("corrupt tuple value: {0}")]
    Decode(#[from] DecodeError),
    #[error("field {field} does not deserialize: {reason}")]
    Serde { field: String, reason: String },
}

/// Names a field either by position or by its declared name.
pub trait FieldSel: Copy {
    fn index(self, source: &StreamSource) -> Result<usize, TupleError>;
    fn describe(self) -> String;
}

impl FieldSel for usize {
    fn index(self, _source: &StreamSource) -> Result<usize, TupleError> {
        Ok(self)
    }
    fn describe(self) -> String {
        format!("#{self}")
    }
}

impl FieldSel for &str {
    fn index(self, source: &StreamSource) -> Result<usize, TupleError> {
        source.fields.index_of(self).ok_or_else(|| TupleError::NoSuchField {
            component: source.component.clone(),
            stream: source.stream.clone(),
            field: self.to_string(),
            fields: source.fields.to_string(),
        })
    }
    fn describe(self) -> String {
        format!("{self:?}")
    }
}

/// What acking needs from a tuple: its key, its roots, and the XOR of the keys of the children anchored on it so far.
/// Implemented by [`Tuple`] and [`OwnedTuple`], so a bolt can anchor on a tuple it kept.
pub trait Anchor {
    fn ack_state(&self) -> AckState<'_>;
}

/// See [`Anchor`].
#[derive(Clone, Copy)]
pub struct AckState<'a> {
    pub key: u64,
    pub roots: Roots<'a>,
    pub children_xor: &'a Cell<u64>,
    /// Where the tuple came from and its values, for task hooks ([`AckState::tuple`]).
    pub source: &'a Arc<StreamSource>,
    pub src_task: TaskId,
    pub values: &'a [u8],
}

impl<'a> AckState<'a> {
    /// A view of the tuple being acked or failed.
    pub fn tuple(&self) -> Tuple<'a> {
        Tuple::new(self.source, self.src_task, self.values, self.key, self.roots)
    }
}

/// A tuple as delivered to `Bolt::execute`: borrowed from the batch, valid for the call. Keep one beyond the call
/// with [`Tuple::to_owned_tuple`].
pub struct Tuple<'a> {
    source: &'a Arc<StreamSource>,
    src_task: TaskId,
    values: &'a [u8],
    key: u64,
    roots: Roots<'a>,
    children_xor: Cell<u64>,
}

impl<'a> Tuple<'a> {
    /// Built by the runtime from a received record; `values` are the encoded values.
    pub fn new(source: &'a Arc<StreamSource>, src_task: TaskId, values: &'a [u8], key: u64, roots: Roots<'a>) -> Self {
        Tuple {
            source,
            src_task,
            values,
            key,
            roots,
            children_xor: Cell::new(0),
        }
    }

    pub fn source_component(&self) -> &str {
        &self.source.component
    }
    pub fn source_stream(&self) -> &str {
        &self.source.stream
    }
    pub fn source_task(&self) -> TaskId {
        self.src_task
    }
    pub fn fields(&self) -> &Fields {
        &self.source.fields
    }
    pub fn source(&self) -> &Arc<StreamSource> {
        self.source
    }
    /// True for the tick tuples `topology.tick.tuple.freq.secs` asks for.
    pub fn is_tick(&self) -> bool {
        self.source.component == SYSTEM_COMPONENT && self.source.stream == TICK_STREAM
    }
    /// The encoded values, as they travel.
    pub fn encoded_values(&self) -> &'a [u8] {
        self.values
    }
    pub fn roots(&self) -> Roots<'a> {
        self.roots
    }

    /// Iterates the values in order.
    pub fn values(&self) -> ValuesIter<'a> {
        ValuesIter::new(self.values)
    }

    /// Number of values (walks them; the declared field count is `fields().len()`).
    pub fn len(&self) -> usize {
        self.values().count()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of a field, by position or name.
    pub fn get(&self, field: impl FieldSel) -> Result<ValueRef<'a>, TupleError> {
        let index = field.index(self.source)?;
        let mut at = 0usize;
        for seen in 0..=index {
            let rest = &self.values[at..];
            if rest.is_empty() {
                return Err(TupleError::IndexOutOfRange { index, len: seen });
            }
            let (v, used) = value::decode_ref(rest)?;
            if seen == index {
                return Ok(v);
            }
            at += used;
        }
        unreachable!("the loop returns at seen == index")
    }

    pub fn get_str(&self, field: impl FieldSel) -> Result<&'a str, TupleError> {
        match self.get(field)? {
            ValueRef::Str(s) => Ok(s),
            other => Err(wrong(field, "str", other)),
        }
    }
    pub fn get_i64(&self, field: impl FieldSel) -> Result<i64, TupleError> {
        match self.get(field)? {
            ValueRef::I64(i) => Ok(i),
            other => Err(wrong(field, "i64", other)),
        }
    }
    pub fn get_f64(&self, field: impl FieldSel) -> Result<f64, TupleError> {
        match self.get(field)? {
            ValueRef::F64(f) => Ok(f),
            other => Err(wrong(field, "f64", other)),
        }
    }
    pub fn get_bool(&self, field: impl FieldSel) -> Result<bool, TupleError> {
        match self.get(field)? {
            ValueRef::Bool(b) => Ok(b),
            other => Err(wrong(field, "bool", other)),
        }
    }
    pub fn get_bytes(&self, field: impl FieldSel) -> Result<&'a [u8], TupleError> {
        match self.get(field)? {
            ValueRef::Bytes(b) => Ok(b),
            other => Err(wrong(field, "bytes", other)),
        }
    }
    /// An owned copy of a field's value.
    pub fn get_value(&self, field: impl FieldSel) -> Result<Value, TupleError> {
        Ok(self.get(field)?.to_owned_value()?)
    }
    /// A user type that was emitted with [`crate::Serde`] or [`Value::serde`].
    pub fn get_serde<T: DeserializeOwned>(&self, field: impl FieldSel) -> Result<T, TupleError> {
        let bytes = self.get_bytes(field)?;
        value::from_serde_bytes(bytes).map_err(|e| TupleError::Serde {
            field: field.describe(),
            reason: e.to_string(),
        })
    }

    /// Copies the tuple out of its batch so it can be kept, anchored on and acked after `execute` returns.
    pub fn to_owned_tuple(&self) -> OwnedTuple {
        OwnedTuple {
            source: Arc::clone(self.source),
            src_task: self.src_task,
            values: self.values.to_vec(),
            key: self.key,
            roots: self.roots.bytes().to_vec(),
            children_xor: Cell::new(self.children_xor.get()),
        }
    }
}

fn wrong(field: impl FieldSel, expected: &'static str, found: ValueRef<'_>) -> TupleError {
    TupleError::WrongType {
        field: field.describe(),
        expected,
        found: found.type_name(),
    }
}

impl Anchor for Tuple<'_> {
    fn ack_state(&self) -> AckState<'_> {
        AckState {
            key: self.key,
            roots: self.roots,
            children_xor: &self.children_xor,
            source: self.source,
            src_task: self.src_task,
            values: self.values,
        }
    }
}

impl std::fmt::Debug for Tuple<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values: Vec<_> = self.values().map(|v| v.and_then(|v| v.to_owned_value())).collect();
        f.debug_struct("Tuple")
            .field("component", &self.source.component)
            .field("stream", &self.source.stream)
            .field("task", &self.src_task)
            .field("values", &values)
            .finish()
    }
}

/// A tuple copied out of its batch (see [`Tuple::to_owned_tuple`]). It can still be anchored on and acked.
#[derive(Debug)]
pub struct OwnedTuple {
    source: Arc<StreamSource>,
    src_task: TaskId,
    values: Vec<u8>,
    key: u64,
    roots: Vec<u8>,
    children_xor: Cell<u64>,
}

impl OwnedTuple {
    /// A view of the kept tuple with the typed getters. Anchor and ack on the `OwnedTuple` itself, so children
    /// emitted on it are remembered.
    pub fn view(&self) -> Tuple<'_> {
        Tuple::new(
            &self.source,
            self.src_task,
            &self.values,
            self.key,
            Roots::new(&self.roots),
        )
    }
}

impl Anchor for OwnedTuple {
    fn ack_state(&self) -> AckState<'_> {
        AckState {
            key: self.key,
            roots: Roots::new(&self.roots),
            children_xor: &self.children_xor,
            source: &self.source,
            src_task: self.src_task,
            values: &self.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Encoder, Values};

    fn source() -> Arc<StreamSource> {
        Arc::new(StreamSource {
            component: "words".into(),
            stream: "default".into(),
            fields: Fields::new(["word", "count"]),
        })
    }

    #[test]
    fn getters_by_name_and_index() {
        let mut enc = Encoder::new();
        ("egret", 3i64).encode_all(&mut enc);
        let src = source();
        let t = Tuple::new(&src, TaskId(1), enc.bytes(), 0, Roots::default());
        assert_eq!(t.get_str("word").unwrap(), "egret");
        assert_eq!(t.get_i64(1).unwrap(), 3);
        assert_eq!(t.len(), 2);
        assert!(matches!(
            t.get_i64("word"),
            Err(TupleError::WrongType {
                expected: "i64",
                found: "str",
                ..
            })
        ));
        assert!(matches!(t.get("nope"), Err(TupleError::NoSuchField { .. })));
        assert!(matches!(
            t.get(2),
            Err(TupleError::IndexOutOfRange { index: 2, len: 2 })
        ));
        let owned = t.to_owned_tuple();
        assert_eq!(owned.view().get_str(0).unwrap(), "egret");
    }

    #[test]
    fn serde_values_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Point {
            x: i32,
            label: String,
        }
        let p = Point {
            x: -4,
            label: "a".into(),
        };
        let mut enc = Encoder::new();
        (crate::value::Serde(&p), 1i64).encode_all(&mut enc);
        let src = source();
        let t = Tuple::new(&src, TaskId(1), enc.bytes(), 0, Roots::default());
        assert_eq!(t.get_serde::<Point>(0).unwrap(), p);
        assert!(matches!(t.get_serde::<Point>(1), Err(TupleError::WrongType { .. })));
    }
}
