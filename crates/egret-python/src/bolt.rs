//! A heronpy bolt as an Egret [`Bolt`]: `BoltTask` reads the batches, delivers tick tuples and keeps the acking
//! arithmetic; this adapter gives each tuple to `process` (a tick tuple to `process_tick`) as heronpy's `Tuple`,
//! then hands the bolt's buffered emits, acks and fails to the collector in the order they were made.
//!
//! A `process` that raises: the exception is the task's error (traceback in the log) and, unless the bolt acked or
//! failed it first, the tuple is failed, so under at-least-once its spout replays it; the instance keeps running.

use std::collections::HashMap;
use std::sync::Arc;

use egret_api::tuple::{SYSTEM_COMPONENT, TICK_STREAM};
use egret_api::{
    Anchor, Bolt, BoltCollector, CheckpointId, OutputDeclarer, Stateful, StreamSource, TopologyContext, Tuple,
    UserError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::ComponentCode;
use crate::delegate::{BoltDelegate, BoltOp};
use crate::errors::PythonError;
use crate::tuple::HeronTuple;
use crate::values::{Pickler, PreEncoded, tuple_values};

pub struct PyBolt {
    code: Arc<ComponentCode>,
    /// Made by `prepare`.
    live: Option<Live>,
    /// Effectively-once: the heronpy `State` of a `StatefulComponent`.
    state: crate::state::ComponentState,
}

struct Live {
    component: Py<PyAny>,
    delegate: Py<BoltDelegate>,
    pickler: Pickler,
    /// The component and stream names of each input stream as Python strings, made once. Keyed by the address of
    /// the stream's source, which the map keeps alive.
    names: HashMap<usize, StreamNames>,
}

/// An input stream's names as Python strings.
struct StreamNames {
    /// Keeps the source (whose address is the key) alive.
    _source: Arc<StreamSource>,
    component: Py<PyAny>,
    stream: Py<PyAny>,
}

impl PyBolt {
    pub fn new(code: Arc<ComponentCode>) -> PyBolt {
        PyBolt {
            code,
            live: None,
            state: Default::default(),
        }
    }
}

impl Live {
    /// heronpy's `Tuple` for a received tuple.
    fn heron_tuple(&mut self, py: Python<'_>, tuple: &Tuple<'_>) -> PyResult<Py<HeronTuple>> {
        let source = tuple.source();
        let names = self
            .names
            .entry(Arc::as_ptr(source) as usize)
            .or_insert_with(|| StreamNames {
                _source: Arc::clone(source),
                component: PyString::new(py, &source.component).into_any().unbind(),
                stream: PyString::new(py, &source.stream).into_any().unbind(),
            });
        let values = tuple_values(py, tuple.encoded_values(), &self.pickler)?;
        Py::new(
            py,
            HeronTuple {
                id: tuple.ack_state().key.into_pyobject(py)?.into_any().unbind(),
                component: names.component.clone_ref(py),
                stream: names.stream.clone_ref(py),
                task: tuple.source_task().0.into_pyobject(py)?.into_any().unbind(),
                values: values.into_any().unbind(),
                owned: Some(tuple.to_owned_tuple()),
                settled: std::cell::Cell::new(false),
            },
        )
    }

    /// Heron's tick tuple: id and stream `__tick`, component `__system`, no task, no values.
    fn tick_tuple(&self, py: Python<'_>) -> PyResult<Py<HeronTuple>> {
        Py::new(
            py,
            HeronTuple {
                id: PyString::new(py, TICK_STREAM).into_any().unbind(),
                component: PyString::new(py, SYSTEM_COMPONENT).into_any().unbind(),
                stream: PyString::new(py, TICK_STREAM).into_any().unbind(),
                task: py.None(),
                values: py.None(),
                owned: None,
                settled: std::cell::Cell::new(false),
            },
        )
    }
}

/// Hands what the bolt did during the call to the collector, in order.
fn flush(py: Python<'_>, live: &Live, out: &mut BoltCollector<'_>) {
    let mut guard = live.delegate.bind(py).borrow_mut();
    let delegate = &mut *guard;
    if delegate.ops.is_empty() {
        return;
    }
    for op in delegate.ops.drain(..) {
        match op {
            BoltOp::Emit(i) => {
                let p = &delegate.emits.pending[i];
                let stream = p.stream.as_deref().unwrap_or(egret_api::DEFAULT_STREAM);
                let values = PreEncoded(&delegate.emits.encoders[i]);
                let held: Vec<PyRef<'_, HeronTuple>> = p.anchors.iter().map(|a| a.borrow(py)).collect();
                let anchors: Vec<&dyn Anchor> = held.iter().filter_map(|t| t.anchor()).collect();
                match p.direct_task {
                    Some(task) => out.emit_direct(task, stream, &anchors, values),
                    None => out.emit_on(stream, &anchors, values),
                }
            }
            BoltOp::Ack(t) => {
                if let Some(a) = t.borrow(py).anchor() {
                    out.ack(a);
                }
            }
            BoltOp::Fail(t) => {
                if let Some(a) = t.borrow(py).anchor() {
                    out.fail(a);
                }
            }
        }
    }
    delegate.emits.pending.clear();
}

impl Bolt for PyBolt {
    /// The streams are in the definition heronpy wrote; a `PyBolt` only runs in an instance.
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        if self.code.stateful { Some(self) } else { None }
    }

    /// Makes the component with its delegate (`cls(delegate=...)`) and calls `initialize(config, context)`.
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let code = Arc::clone(&self.code);
        let state = &mut self.state;
        Python::attach(|py| {
            let made = (|| -> PyResult<Live> {
                let pickler = Pickler::import(py)?;
                let delegate = Py::new(py, BoltDelegate::new(py, pickler.clone_ref(py))?)?;
                let component = crate::make_component(py, &code, ctx, state, delegate.bind(py).as_any())?;
                Ok(Live {
                    component: component.unbind(),
                    delegate,
                    pickler,
                    names: HashMap::new(),
                })
            })();
            match made {
                Ok(live) => {
                    self.live = Some(live);
                    Ok(())
                }
                Err(e) => Err(Box::new(PythonError::new(py, e, &code.component, "initialize")) as UserError),
            }
        })
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let Some(live) = &mut self.live else { return };
        let component = &self.code.component;
        Python::attach(|py| {
            if tuple.is_tick() {
                let result = live
                    .tick_tuple(py)
                    .and_then(|t| live.component.bind(py).call_method1(intern!(py, "process_tick"), (t,)));
                flush(py, live, out);
                if let Err(e) = result {
                    out.report_error(&PythonError::new(py, e, component, "process_tick"));
                }
                return;
            }
            let heron_tuple = match live.heron_tuple(py, tuple) {
                Ok(t) => t,
                Err(e) => {
                    // A value that does not unpickle here: the tuple cannot be processed.
                    out.report_error(&PythonError::new(py, e, component, "process"));
                    out.fail(tuple);
                    return;
                }
            };
            let result = live
                .component
                .bind(py)
                .call_method1(intern!(py, "process"), (heron_tuple.clone_ref(py),));
            flush(py, live, out);
            if let Err(e) = result {
                out.report_error(&PythonError::new(py, e, component, "process"));
                let t = heron_tuple.borrow(py);
                if !t.settled.get()
                    && let Some(a) = t.anchor()
                {
                    out.fail(a);
                }
            }
        });
    }

    fn cleanup(&mut self) {
        let Some(live) = &self.live else { return };
        Python::attach(|py| {
            // heronpy's Bolt has no cleanup method; a component may define one.
            let component = live.component.bind(py);
            if component.hasattr("cleanup").unwrap_or(false)
                && let Err(e) = component.call_method0("cleanup")
            {
                PythonError::new(py, e, &self.code.component, "cleanup");
            }
        });
    }
}

/// Effectively-once: the component's heronpy state is its checkpointed state.
impl Stateful for PyBolt {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.state.restore(restored);
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let component = self.live.as_ref().map(|l| &l.component);
        self.state.pre_save(component, &self.code.component, out)
    }
}
