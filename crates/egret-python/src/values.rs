//! Python objects to Egret's canonical values and back, so a Python tuple is routed (fields grouping hashes the
//! encoded bytes) and read exactly like a Rust one.
//!
//! The rule (docs/python.md):
//! - objects of exactly these built-in types become the Egret value of the same kind: `None` → null, `bool` →
//!   bool, `int` (within i64) → i64, `float` → f64, `str` → str, `bytes` → bytes, `list` → list, `dict` → map (entries
//!   in insertion order), recursively; so `"egret"` emitted from Python and from Rust hashes alike;
//! - anything else (a tuple, a set, an int beyond i64, a subclass of a built-in type, any user object) is pickled
//!   (cloudpickle when importable, as heronpy does) into the one-entry map `{"__python_pickle__": <bytes>}`, which a
//!   Python receiver unpickles and a Rust component sees as that map.

use egret_api::value::{DecodeError, Encoder, ValueRef, ValuesIter};
use egret_api::{Value, Values};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

/// The key of the one-entry map that carries a pickled Python object.
pub const PICKLE_KEY: &str = "__python_pickle__";

/// Deepest nesting of lists and dicts converted (as Egret's decoder accepts); deeper or self-referential values are
/// refused with a `ValueError` in the emitting code.
const MAX_DEPTH: usize = egret_api::value::MAX_DEPTH;

/// The pickling functions, imported once per instance.
pub struct Pickler {
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
}

impl Pickler {
    pub fn import(py: Python<'_>) -> PyResult<Pickler> {
        // heronpy serializes with cloudpickle (it pickles lambdas and classes defined in __main__); plain pickle
        // reads what cloudpickle writes.
        let dumps = match py.import("cloudpickle") {
            Ok(m) => m.getattr("dumps")?,
            Err(_) => py.import("pickle")?.getattr("dumps")?,
        };
        let loads = py.import("pickle")?.getattr("loads")?;
        Ok(Pickler {
            dumps: dumps.unbind(),
            loads: loads.unbind(),
        })
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Pickler {
        Pickler {
            dumps: self.dumps.clone_ref(py),
            loads: self.loads.clone_ref(py),
        }
    }
}

/// Encodes every element of `tup` (a list, a tuple or any iterable) as one value of the tuple in `enc`.
pub fn encode_tuple(tup: &Bound<'_, PyAny>, enc: &mut Encoder, pickler: &Pickler) -> PyResult<()> {
    enc.clear();
    for item in tup.try_iter()? {
        encode_field(&item?, enc, pickler)?;
    }
    Ok(())
}

fn encode_field(obj: &Bound<'_, PyAny>, enc: &mut Encoder, pickler: &Pickler) -> PyResult<()> {
    // The common flat values go straight into the buffer; the rest through an owned `Value`.
    if let Ok(s) = obj.cast_exact::<PyString>() {
        enc.str(&s.to_cow()?);
    } else if obj.is_exact_instance_of::<PyBool>() {
        enc.bool(obj.extract::<bool>()?);
    } else if obj.is_exact_instance_of::<PyInt>()
        && let Ok(i) = obj.extract::<i64>()
    {
        enc.i64(i);
    } else if obj.is_exact_instance_of::<PyFloat>() {
        enc.f64(obj.extract::<f64>()?);
    } else {
        enc.value(&to_value(obj, pickler, 0)?);
    }
    Ok(())
}

/// The Egret value of a Python object, by the rule of the module doc.
pub fn to_value(obj: &Bound<'_, PyAny>, pickler: &Pickler, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "a tuple value nests lists or dicts deeper than {MAX_DEPTH} levels (or contains itself)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return Ok(Value::Str(s.to_cow()?.into_owned()));
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract()?));
    }
    if obj.is_exact_instance_of::<PyInt>()
        && let Ok(i) = obj.extract::<i64>()
    {
        return Ok(Value::I64(i));
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return Ok(Value::F64(obj.extract()?));
    }
    if let Ok(b) = obj.cast_exact::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(list) = obj.cast_exact::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for item in list.iter() {
            items.push(to_value(&item, pickler, depth + 1)?);
        }
        return Ok(Value::List(items));
    }
    if let Ok(dict) = obj.cast_exact::<PyDict>() {
        let mut entries = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            entries.push((to_value(&k, pickler, depth + 1)?, to_value(&v, pickler, depth + 1)?));
        }
        return Ok(Value::Map(entries));
    }
    let pickled = pickler.dumps.bind(obj.py()).call1((obj,))?;
    let bytes = pickled.cast::<PyBytes>()?.as_bytes().to_vec();
    Ok(Value::Map(vec![(Value::Str(PICKLE_KEY.into()), Value::Bytes(bytes))]))
}

/// The Python object of an encoded value.
pub fn to_python<'py>(py: Python<'py>, v: ValueRef<'_>, pickler: &Pickler) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        ValueRef::Null => py.None().into_bound(py),
        ValueRef::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        ValueRef::I64(i) => i.into_pyobject(py)?.into_any(),
        ValueRef::F64(f) => PyFloat::new(py, f).into_any(),
        ValueRef::Str(s) => PyString::new(py, s).into_any(),
        ValueRef::Bytes(b) => PyBytes::new(py, b).into_any(),
        ValueRef::List(seq) => {
            let list = PyList::empty(py);
            for item in seq.values() {
                list.append(to_python(py, item.map_err(decode_error)?, pickler)?)?;
            }
            list.into_any()
        }
        ValueRef::Map(seq) => {
            let mut items = seq.values();
            if seq.count == 1
                && let (Some(Ok(ValueRef::Str(PICKLE_KEY))), Some(Ok(ValueRef::Bytes(b)))) =
                    (items.next(), items.next())
            {
                return pickler.loads.bind(py).call1((PyBytes::new(py, b),));
            }
            let dict = PyDict::new(py);
            let mut items = seq.values();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                let k = to_python(py, k.map_err(decode_error)?, pickler)?;
                let v = to_python(py, v.map_err(decode_error)?, pickler)?;
                dict.set_item(k, v)?;
            }
            dict.into_any()
        }
    })
}

/// The values of an encoded tuple as a Python list.
pub fn tuple_values<'py>(py: Python<'py>, encoded: &[u8], pickler: &Pickler) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for v in ValuesIter::new(encoded) {
        list.append(to_python(py, v.map_err(decode_error)?, pickler)?)?;
    }
    Ok(list)
}

fn decode_error(e: DecodeError) -> PyErr {
    PyValueError::new_err(format!("corrupt tuple value: {e}"))
}

/// Values encoded at emit time, handed to a collector when the buffered emits are flushed.
pub struct PreEncoded<'a>(pub &'a Encoder);

impl Values for PreEncoded<'_> {
    fn encode_all(&self, enc: &mut Encoder) {
        for i in 0..self.0.len() {
            // Encoded by this module a moment ago, so it decodes; `value_ref` copies the canonical bytes through.
            if let Ok((v, _)) = egret_api::value::decode_ref(self.0.field(i)) {
                enc.value_ref(v);
            }
        }
    }
}
