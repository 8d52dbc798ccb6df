//! The `delegate` heronpy's components call (`BaseComponent.delegate`, `self.logger`, `self.log`, `self.emit`, and
//! a bolt's `self.ack` / `self.fail`), as Heron's `SpoutInstance` / `BoltInstance` are.
//!
//! Calls are buffered, values encoded at once (so a value that cannot be encoded raises in the user's `emit`), and
//! handed to the Rust collector in order when the call into the component returns (`PySpout`/`PyBolt` drain them).
//! An emit from outside a callback (a thread of the user's) goes out with the next callback's.

use std::collections::HashMap;

use egret_api::value::Encoder;
use egret_api::{DEFAULT_STREAM, MessageId, TaskId};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::tuple::HeronTuple;
use crate::values::{Pickler, encode_tuple};

/// One buffered emit; its values are in the delegate's encoder of the same index.
pub struct PendingEmit {
    /// `None`: the default stream.
    pub stream: Option<String>,
    pub message_id: Option<MessageId>,
    pub direct_task: Option<TaskId>,
    /// Bolts only: the tuples it is anchored on.
    pub anchors: Vec<Py<HeronTuple>>,
}

/// What a bolt asked for, in order.
pub enum BoltOp {
    /// Index into the emits.
    Emit(usize),
    Ack(Py<HeronTuple>),
    Fail(Py<HeronTuple>),
}

/// The buffered emits of one callback and the encoders their values are in (kept for reuse).
pub struct Emits {
    pub pending: Vec<PendingEmit>,
    pub encoders: Vec<Encoder>,
    pickler: Pickler,
}

impl Emits {
    fn new(pickler: Pickler) -> Emits {
        Emits {
            pending: Vec::new(),
            encoders: Vec::new(),
            pickler,
        }
    }

    fn push(
        &mut self,
        tup: &Bound<'_, PyAny>,
        stream: &Bound<'_, PyAny>,
        message_id: Option<MessageId>,
        direct_task: Option<&Bound<'_, PyAny>>,
        anchors: Vec<Py<HeronTuple>>,
    ) -> PyResult<usize> {
        let i = self.pending.len();
        if self.encoders.len() <= i {
            self.encoders.push(Encoder::new());
        }
        encode_tuple(tup, &mut self.encoders[i], &self.pickler)?;
        let stream = stream
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("stream must be a str"))?
            .to_cow()?;
        let stream = (stream != DEFAULT_STREAM).then(|| stream.into_owned());
        let direct_task = match direct_task {
            None => None,
            Some(t) if t.is_none() => None,
            Some(t) => Some(TaskId(t.extract::<u32>().map_err(|_| {
                PyTypeError::new_err(format!("direct_task argument needs to be an integer, given: {t}"))
            })?)),
        };
        self.pending.push(PendingEmit {
            stream,
            message_id,
            direct_task,
            anchors,
        });
        Ok(i)
    }

    /// Heron's answer to `need_task_ids`: the direct task if any, else an empty list (its instance never knows
    /// where a grouping sends a tuple, the stmgr decides; Egret's emitter decides after the call returns).
    fn task_ids<'py>(py: Python<'py>, direct_task: Option<TaskId>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, direct_task.map(|t| t.0))
    }
}

/// Heron's `log(message, level)`: trace and debug, info, warn, error.
fn log(logger: &Bound<'_, PyAny>, message: &Bound<'_, PyAny>, level: Option<&str>) -> PyResult<()> {
    // Python's logging levels.
    let level = match level {
        None | Some("info") => 20,
        Some("trace") | Some("debug") => 10,
        Some("warn") => 30,
        Some("error") => 40,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "{other} is not supported as logging level"
            )));
        }
    };
    logger.call_method1("log", (level, message))?;
    Ok(())
}

/// A spout's delegate.
#[pyclass(module = "egret_python", unsendable)]
pub struct SpoutDelegate {
    /// Heron's instances log through the root logger.
    #[pyo3(get)]
    logger: Py<PyAny>,
    pub emits: Emits,
    next_message_id: MessageId,
    /// The user's `tup_id` objects by the message id Egret's ledger tracks.
    pub message_ids: HashMap<MessageId, Py<PyAny>>,
}

impl SpoutDelegate {
    pub fn new(py: Python<'_>, pickler: Pickler) -> PyResult<SpoutDelegate> {
        Ok(SpoutDelegate {
            logger: py.import("logging")?.call_method0("getLogger")?.unbind(),
            emits: Emits::new(pickler),
            next_message_id: 1,
            message_ids: HashMap::new(),
        })
    }
}

#[pymethods]
impl SpoutDelegate {
    #[pyo3(signature = (tup, tup_id=None, stream=None, direct_task=None, need_task_ids=false))]
    fn emit<'py>(
        &mut self,
        py: Python<'py>,
        tup: &Bound<'py, PyAny>,
        tup_id: Option<Bound<'py, PyAny>>,
        stream: Option<Bound<'py, PyAny>>,
        direct_task: Option<Bound<'py, PyAny>>,
        need_task_ids: bool,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let message_id = match tup_id {
            Some(id) if !id.is_none() => {
                let m = self.next_message_id;
                self.next_message_id += 1;
                self.message_ids.insert(m, id.unbind());
                Some(m)
            }
            _ => None,
        };
        let stream = stream.unwrap_or_else(|| PyString::new(py, DEFAULT_STREAM).into_any());
        let pushed = self
            .emits
            .push(tup, &stream, message_id, direct_task.as_ref(), Vec::new());
        let i = match pushed {
            Ok(i) => i,
            Err(e) => {
                if let Some(m) = message_id {
                    self.message_ids.remove(&m);
                }
                return Err(e);
            }
        };
        if !need_task_ids {
            return Ok(None);
        }
        Emits::task_ids(py, self.emits.pending[i].direct_task).map(Some)
    }

    #[pyo3(signature = (message, level=None))]
    fn log(&self, py: Python<'_>, message: &Bound<'_, PyAny>, level: Option<&str>) -> PyResult<()> {
        log(self.logger.bind(py), message, level)
    }
}

/// A bolt's delegate.
#[pyclass(module = "egret_python", unsendable)]
pub struct BoltDelegate {
    #[pyo3(get)]
    logger: Py<PyAny>,
    pub emits: Emits,
    pub ops: Vec<BoltOp>,
}

impl BoltDelegate {
    pub fn new(py: Python<'_>, pickler: Pickler) -> PyResult<BoltDelegate> {
        Ok(BoltDelegate {
            logger: py.import("logging")?.call_method0("getLogger")?.unbind(),
            emits: Emits::new(pickler),
            ops: Vec::new(),
        })
    }

    /// Heron logs and ignores an ack or fail of something that is not a tuple it delivered.
    fn settle(&mut self, tup: &Bound<'_, PyAny>, ack: bool) -> PyResult<()> {
        let Ok(t) = tup.cast::<HeronTuple>() else {
            let what = if ack { "ack()" } else { "fail()" };
            let logger = self.logger.bind(tup.py());
            logger.call_method1("error", (format!("Only HeronTuple type is supported in {what}"),))?;
            return Ok(());
        };
        t.borrow().settled.set(true);
        let t = t.clone().unbind();
        self.ops.push(if ack { BoltOp::Ack(t) } else { BoltOp::Fail(t) });
        Ok(())
    }
}

#[pymethods]
impl BoltDelegate {
    #[pyo3(signature = (tup, stream=None, anchors=None, direct_task=None, need_task_ids=false))]
    fn emit<'py>(
        &mut self,
        py: Python<'py>,
        tup: &Bound<'py, PyAny>,
        stream: Option<Bound<'py, PyAny>>,
        anchors: Option<Bound<'py, PyAny>>,
        direct_task: Option<Bound<'py, PyAny>>,
        need_task_ids: bool,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        // Heron anchors on the HeronTuples in `anchors` and ignores anything else in it.
        let mut kept = Vec::new();
        if let Some(anchors) = anchors.filter(|a| !a.is_none()) {
            for a in anchors.try_iter()? {
                if let Ok(t) = a?.cast_into::<HeronTuple>() {
                    kept.push(t.unbind());
                }
            }
        }
        let stream = stream.unwrap_or_else(|| PyString::new(py, DEFAULT_STREAM).into_any());
        let i = self.emits.push(tup, &stream, None, direct_task.as_ref(), kept)?;
        self.ops.push(BoltOp::Emit(i));
        if !need_task_ids {
            return Ok(None);
        }
        Emits::task_ids(py, self.emits.pending[i].direct_task).map(Some)
    }

    fn ack(&mut self, tup: &Bound<'_, PyAny>) -> PyResult<()> {
        self.settle(tup, true)
    }

    fn fail(&mut self, tup: &Bound<'_, PyAny>) -> PyResult<()> {
        self.settle(tup, false)
    }

    #[pyo3(signature = (message, level=None))]
    fn log(&self, py: Python<'_>, message: &Bound<'_, PyAny>, level: Option<&str>) -> PyResult<()> {
        log(self.logger.bind(py), message, level)
    }
}
