//! Tuple values and their canonical byte encoding.
//!
//! A tuple travels as the concatenation of its encoded values. The encoding is canonical (one value has exactly one
//! encoding), so the fields-grouping hash can run over these bytes in any process or language. It is also what a
//! bolt reads in place: [`ValueRef`] borrows strings and bytes from the received batch instead of copying them.
//!
//! Layout of one value (integers little-endian):
//!
//! | tag | name  | payload                                   |
//! |-----|-------|-------------------------------------------|
//! | 0   | null  | none                                      |
//! | 1   | bool  | 1 byte, 0 or 1                            |
//! | 2   | i64   | 8 bytes                                   |
//! | 3   | f64   | 8 bytes (IEEE-754 bits)                   |
//! | 4   | str   | u32 length, UTF-8 bytes                   |
//! | 5   | bytes | u32 length, bytes                         |
//! | 6   | list  | u32 count, `count` values                 |
//! | 7   | map   | u32 count, `count` (key value, value) pairs |
//!
//! This module must never allocate on the encode path of a flat value: emitting a `&str` writes its bytes straight
//! into the collector's buffer.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const TAG_NULL: u8 = 0;
pub const TAG_BOOL: u8 = 1;
pub const TAG_I64: u8 = 2;
pub const TAG_F64: u8 = 3;
pub const TAG_STR: u8 = 4;
pub const TAG_BYTES: u8 = 5;
pub const TAG_LIST: u8 = 6;
pub const TAG_MAP: u8 = 7;

/// Deepest nesting of lists and maps a decoder accepts; deeper input is treated as corrupt rather than risking the
/// stack on bytes a peer sent.
pub const MAX_DEPTH: usize = 64;

/// An owned tuple value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    /// Entries keep their insertion order; the encoding is canonical for a given order.
    Map(Vec<(Value, Value)>),
}

/// A value read in place from encoded bytes. Lists and maps stay encoded until iterated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    List(EncodedSeq<'a>),
    Map(EncodedSeq<'a>),
}

/// The encoded items of a list (one value each) or a map (two values per entry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodedSeq<'a> {
    pub count: u32,
    pub bytes: &'a [u8],
}

impl<'a> EncodedSeq<'a> {
    /// Iterates the values of a list, or keys and values alternately for a map.
    pub fn values(&self) -> ValuesIter<'a> {
        ValuesIter { rest: self.bytes }
    }
}

/// Bytes that do not hold a well-formed encoded value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("encoded value truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unknown value tag {0}")]
    UnknownTag(u8),
    #[error("string value is not UTF-8")]
    NotUtf8,
    #[error("bool value byte {0} is neither 0 nor 1")]
    BadBool(u8),
    #[error("values nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Encodes a serde value as `Bytes` (postcard). Read it back with [`crate::Tuple::get_serde`].
    pub fn serde<T: Serialize>(value: &T) -> Result<Value, postcard::Error> {
        postcard::to_stdvec(value).map(Value::Bytes)
    }

    /// Decodes one encoded value into an owned `Value`.
    pub fn decode(bytes: &[u8]) -> Result<(Value, usize), DecodeError> {
        let (v, used) = decode_ref(bytes)?;
        Ok((v.to_owned_value()?, used))
    }
}

impl<'a> ValueRef<'a> {
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Bool(_) => "bool",
            ValueRef::I64(_) => "i64",
            ValueRef::F64(_) => "f64",
            ValueRef::Str(_) => "str",
            ValueRef::Bytes(_) => "bytes",
            ValueRef::List(_) => "list",
            ValueRef::Map(_) => "map",
        }
    }

    pub fn to_owned_value(&self) -> Result<Value, DecodeError> {
        self.owned_at(0)
    }

    fn owned_at(&self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        Ok(match *self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::I64(i) => Value::I64(i),
            ValueRef::F64(f) => Value::F64(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::List(seq) => {
                let mut out = Vec::with_capacity(seq.count.min(1024) as usize);
                for v in seq.values() {
                    out.push(v?.owned_at(depth + 1)?);
                }
                Value::List(out)
            }
            ValueRef::Map(seq) => {
                let mut out = Vec::with_capacity(seq.count.min(1024) as usize);
                let mut it = seq.values();
                while let Some(k) = it.next() {
                    let k = k?.owned_at(depth + 1)?;
                    let v = it.next().ok_or(DecodeError::Truncated { needed: 1 })??;
                    out.push((k, v.owned_at(depth + 1)?));
                }
                Value::Map(out)
            }
        })
    }
}

fn take(bytes: &[u8], at: usize, n: usize) -> Result<&[u8], DecodeError> {
    let end = at.checked_add(n).ok_or(DecodeError::Truncated { needed: n })?;
    bytes.get(at..end).ok_or(DecodeError::Truncated {
        needed: end - bytes.len().min(end),
    })
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, DecodeError> {
    let b = take(bytes, at, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, DecodeError> {
    let b = take(bytes, at, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// Decodes the value at the start of `bytes`; returns it and the number of bytes it used.
pub fn decode_ref(bytes: &[u8]) -> Result<(ValueRef<'_>, usize), DecodeError> {
    let tag = *bytes.first().ok_or(DecodeError::Truncated { needed: 1 })?;
    match tag {
        TAG_NULL => Ok((ValueRef::Null, 1)),
        TAG_BOOL => match take(bytes, 1, 1)?[0] {
            0 => Ok((ValueRef::Bool(false), 2)),
            1 => Ok((ValueRef::Bool(true), 2)),
            other => Err(DecodeError::BadBool(other)),
        },
        TAG_I64 => Ok((ValueRef::I64(read_u64(bytes, 1)? as i64), 9)),
        TAG_F64 => Ok((ValueRef::F64(f64::from_bits(read_u64(bytes, 1)?)), 9)),
        TAG_STR | TAG_BYTES => {
            let len = read_u32(bytes, 1)? as usize;
            let body = take(bytes, 5, len)?;
            let v = if tag == TAG_STR {
                ValueRef::Str(std::str::from_utf8(body).map_err(|_| DecodeError::NotUtf8)?)
            } else {
                ValueRef::Bytes(body)
            };
            Ok((v, 5 + len))
        }
        TAG_LIST | TAG_MAP => {
            let count = read_u32(bytes, 1)?;
            let items = if tag == TAG_MAP { count as u64 * 2 } else { count as u64 };
            let len = skip_values(&bytes[5..], items, 1)?;
            let seq = EncodedSeq {
                count,
                bytes: &bytes[5..5 + len],
            };
            let v = if tag == TAG_MAP {
                ValueRef::Map(seq)
            } else {
                ValueRef::List(seq)
            };
            Ok((v, 5 + len))
        }
        other => Err(DecodeError::UnknownTag(other)),
    }
}

/// Returns the encoded length of the value at the start of `bytes`, checking it fully (UTF-8 included).
pub fn value_len(bytes: &[u8]) -> Result<usize, DecodeError> {
    decode_ref(bytes).map(|(_, n)| n)
}

fn skip_values(bytes: &[u8], items: u64, depth: usize) -> Result<usize, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let mut at = 0usize;
    for _ in 0..items {
        let rest = bytes.get(at..).ok_or(DecodeError::Truncated { needed: 1 })?;
        let tag = *rest.first().ok_or(DecodeError::Truncated { needed: 1 })?;
        let used = if tag == TAG_LIST || tag == TAG_MAP {
            let count = read_u32(rest, 1)? as u64;
            let inner = if tag == TAG_MAP { count * 2 } else { count };
            5 + skip_values(&rest[5..], inner, depth + 1)?
        } else {
            decode_ref(rest)?.1
        };
        at += used;
    }
    Ok(at)
}

/// Iterates encoded values one after another.
#[derive(Debug, Clone)]
pub struct ValuesIter<'a> {
    rest: &'a [u8],
}

impl<'a> ValuesIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ValuesIter { rest: bytes }
    }
}

impl<'a> Iterator for ValuesIter<'a> {
    type Item = Result<ValueRef<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match decode_ref(self.rest) {
            Ok((v, n)) => {
                self.rest = &self.rest[n..];
                Some(Ok(v))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// The buffer a collector encodes one tuple into, with the start offset of every value (the router hashes
/// grouping fields by these offsets without decoding).
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
    starts: Vec<u32>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
    }

    /// The encoded values of the tuple.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The encoded bytes of value `i`.
    pub fn field(&self, i: usize) -> &[u8] {
        let start = self.starts[i] as usize;
        let end = self.starts.get(i + 1).map_or(self.buf.len(), |&e| e as usize);
        &self.buf[start..end]
    }

    fn begin(&mut self) {
        self.starts.push(self.buf.len() as u32);
    }

    pub fn null(&mut self) {
        self.begin();
        self.buf.push(TAG_NULL);
    }
    pub fn bool(&mut self, v: bool) {
        self.begin();
        self.buf.extend_from_slice(&[TAG_BOOL, v as u8]);
    }
    pub fn i64(&mut self, v: i64) {
        self.begin();
        self.buf.push(TAG_I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.begin();
        self.buf.push(TAG_F64);
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub fn str(&mut self, v: &str) {
        self.begin();
        put_str_like(&mut self.buf, TAG_STR, v.as_bytes());
    }
    pub fn bytes_value(&mut self, v: &[u8]) {
        self.begin();
        put_str_like(&mut self.buf, TAG_BYTES, v);
    }
    pub fn value(&mut self, v: &Value) {
        self.begin();
        encode_value(&mut self.buf, v);
    }
    pub fn value_ref(&mut self, v: ValueRef<'_>) {
        self.begin();
        encode_value_ref(&mut self.buf, v);
    }
}

fn put_str_like(buf: &mut Vec<u8>, tag: u8, body: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(body);
}

/// Appends the canonical encoding of `v` to `buf`.
pub fn encode_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.push(TAG_NULL),
        Value::Bool(b) => buf.extend_from_slice(&[TAG_BOOL, *b as u8]),
        Value::I64(i) => {
            buf.push(TAG_I64);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        Value::F64(f) => {
            buf.push(TAG_F64);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => put_str_like(buf, TAG_STR, s.as_bytes()),
        Value::Bytes(b) => put_str_like(buf, TAG_BYTES, b),
        Value::List(items) => {
            buf.push(TAG_LIST);
            buf.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                encode_value(buf, item);
            }
        }
        Value::Map(entries) => {
            buf.push(TAG_MAP);
            buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for (k, v) in entries {
                encode_value(buf, k);
                encode_value(buf, v);
            }
        }
    }
}

fn encode_value_ref(buf: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => buf.push(TAG_NULL),
        ValueRef::Bool(b) => buf.extend_from_slice(&[TAG_BOOL, b as u8]),
        ValueRef::I64(i) => {
            buf.push(TAG_I64);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::F64(f) => {
            buf.push(TAG_F64);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        ValueRef::Str(s) => put_str_like(buf, TAG_STR, s.as_bytes()),
        ValueRef::Bytes(b) => put_str_like(buf, TAG_BYTES, b),
        // A sequence is already canonical bytes: copy it through.
        ValueRef::List(seq) | ValueRef::Map(seq) => {
            buf.push(if matches!(v, ValueRef::List(_)) {
                TAG_LIST
            } else {
                TAG_MAP
            });
            buf.extend_from_slice(&seq.count.to_le_bytes());
            buf.extend_from_slice(seq.bytes);
        }
    }
}

/// Something that can be one value of a tuple.
pub trait ToValue {
    fn encode(&self, enc: &mut Encoder);
}

impl ToValue for &str {
    fn encode(&self, enc: &mut Encoder) {
        enc.str(self)
    }
}
impl ToValue for String {
    fn encode(&self, enc: &mut Encoder) {
        enc.str(self)
    }
}
impl ToValue for &String {
    fn encode(&self, enc: &mut Encoder) {
        enc.str(self)
    }
}
impl ToValue for &[u8] {
    fn encode(&self, enc: &mut Encoder) {
        enc.bytes_value(self)
    }
}
impl ToValue for Vec<u8> {
    fn encode(&self, enc: &mut Encoder) {
        enc.bytes_value(self)
    }
}
impl ToValue for bool {
    fn encode(&self, enc: &mut Encoder) {
        enc.bool(*self)
    }
}
macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn encode(&self, enc: &mut Encoder) { enc.i64(*self as i64) }
        }
    )*};
}
int_to_value!(i8, i16, i32, i64, u8, u16, u32, isize);
impl ToValue for f64 {
    fn encode(&self, enc: &mut Encoder) {
        enc.f64(*self)
    }
}
impl ToValue for f32 {
    fn encode(&self, enc: &mut Encoder) {
        enc.f64(*self as f64)
    }
}
impl ToValue for Value {
    fn encode(&self, enc: &mut Encoder) {
        enc.value(self)
    }
}
impl ToValue for &Value {
    fn encode(&self, enc: &mut Encoder) {
        enc.value(self)
    }
}
impl ToValue for ValueRef<'_> {
    fn encode(&self, enc: &mut Encoder) {
        enc.value_ref(*self)
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Some(v) => v.encode(enc),
            None => enc.null(),
        }
    }
}
impl ToValue for BTreeMap<String, Value> {
    fn encode(&self, enc: &mut Encoder) {
        let v = Value::Map(self.iter().map(|(k, v)| (Value::Str(k.clone()), v.clone())).collect());
        enc.value(&v)
    }
}

/// A user type sent through serde (postcard), travelling as a `bytes` value.
pub struct Serde<'a, T: Serialize>(pub &'a T);

impl<T: Serialize> ToValue for Serde<'_, T> {
    fn encode(&self, enc: &mut Encoder) {
        match postcard::to_stdvec(self.0) {
            Ok(bytes) => enc.bytes_value(&bytes),
            // A type that cannot serialize is a programming error in the user's type; send null rather than
            // crash the task, the reader's get_serde reports the type mismatch.
            Err(_) => enc.null(),
        }
    }
}

/// Decodes a serde user type from the bytes of a `bytes` value.
pub fn from_serde_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// All the values of one tuple: a Rust tuple of [`ToValue`]s, a slice or a `Vec` of [`Value`]s.
pub trait Values {
    fn encode_all(&self, enc: &mut Encoder);
}

impl Values for [Value] {
    fn encode_all(&self, enc: &mut Encoder) {
        for v in self {
            enc.value(v);
        }
    }
}
impl Values for Vec<Value> {
    fn encode_all(&self, enc: &mut Encoder) {
        self.as_slice().encode_all(enc)
    }
}
impl<const N: usize> Values for [Value; N] {
    fn encode_all(&self, enc: &mut Encoder) {
        self.as_slice().encode_all(enc)
    }
}
impl Values for () {
    fn encode_all(&self, _enc: &mut Encoder) {}
}

macro_rules! tuple_values {
    ($($name:ident),+) => {
        impl<$($name: ToValue),+> Values for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_all(&self, enc: &mut Encoder) {
                let ($($name,)+) = self;
                $($name.encode(enc);)+
            }
        }
    };
}
tuple_values!(A);
tuple_values!(A, B);
tuple_values!(A, B, C);
tuple_values!(A, B, C, D);
tuple_values!(A, B, C, D, E);
tuple_values!(A, B, C, D, E, F);
tuple_values!(A, B, C, D, E, F, G);
tuple_values!(A, B, C, D, E, F, G, H);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<f64>()
                .prop_filter("NaN != NaN", |f| !f.is_nan())
                .prop_map(Value::F64),
            ".{0,12}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            let mut buf = Vec::new();
            encode_value(&mut buf, &v);
            let (back, used) = Value::decode(&buf).unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, v);
        }

        #[test]
        fn truncated_input_is_an_error_not_a_panic(v in arb_value(), cut in 0usize..64) {
            let mut buf = Vec::new();
            encode_value(&mut buf, &v);
            if cut < buf.len() {
                prop_assert!(decode_ref(&buf[..cut]).is_err());
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_ref(&bytes);
            let _ = Value::decode(&bytes);
        }
    }

    #[test]
    fn encoding_is_fixed() {
        let mut enc = Encoder::new();
        ("ab", 1i64, true).encode_all(&mut enc);
        assert_eq!(
            enc.bytes(),
            &[4, 2, 0, 0, 0, b'a', b'b', 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1][..]
        );
        assert_eq!(enc.len(), 3);
        assert_eq!(enc.field(1), &[2, 1, 0, 0, 0, 0, 0, 0, 0][..]);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut buf = Vec::new();
        for _ in 0..(MAX_DEPTH + 2) {
            buf.extend_from_slice(&[TAG_LIST, 1, 0, 0, 0]);
        }
        buf.push(TAG_NULL);
        assert_eq!(decode_ref(&buf), Err(DecodeError::TooDeep));
    }
}
