//! A heronpy spout as an Egret [`Spout`]: `SpoutTask` drives it exactly as it drives a Rust spout (when to call
//! `next_tuple`, max spout pending, the ledger's acks, fails and timeouts); this adapter calls the Python methods
//! and hands the buffered emits to the collector.

use std::sync::Arc;

use egret_api::{CheckpointId, MessageId, OutputDeclarer, Spout, SpoutCollector, Stateful, TopologyContext, UserError};
use pyo3::intern;
use pyo3::prelude::*;

use crate::ComponentCode;
use crate::delegate::SpoutDelegate;
use crate::errors::PythonError;
use crate::values::{Pickler, PreEncoded};

pub struct PySpout {
    code: Arc<ComponentCode>,
    /// Made by `open`.
    live: Option<Live>,
    /// Effectively-once: the heronpy `State` of a `StatefulComponent`.
    state: crate::state::ComponentState,
}

struct Live {
    component: Py<PyAny>,
    delegate: Py<SpoutDelegate>,
    /// Exceptions of callbacks that have no collector (`ack`, `fail`, `activate`, ...), reported at the next
    /// `next_tuple`.
    errors: Vec<PythonError>,
}

impl PySpout {
    pub fn new(code: Arc<ComponentCode>) -> PySpout {
        PySpout {
            code,
            live: None,
            state: Default::default(),
        }
    }

    /// Calls `method` of the component with `args`; an exception is kept for reporting.
    fn call(
        &mut self,
        method: &str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyTuple>>,
    ) {
        let Some(live) = &mut self.live else { return };
        Python::attach(|py| {
            let result = args(py).and_then(|args| live.component.bind(py).call_method1(method, args));
            if let Err(e) = result {
                live.errors.push(PythonError::new(py, e, &self.code.component, method));
            }
        });
    }
}

/// Hands the emits buffered by the delegate to the collector, in order, and reports kept exceptions.
fn flush(py: Python<'_>, live: &mut Live, out: &mut SpoutCollector<'_>) {
    for e in live.errors.drain(..) {
        out.report_error(&e);
    }
    let mut delegate = live.delegate.bind(py).borrow_mut();
    let emits = &mut delegate.emits;
    for (i, p) in emits.pending.iter().enumerate() {
        let stream = p.stream.as_deref().unwrap_or(egret_api::DEFAULT_STREAM);
        let values = PreEncoded(&emits.encoders[i]);
        match p.direct_task {
            Some(task) => out.emit_direct(task, stream, p.message_id, values),
            None => out.emit_on(stream, p.message_id, values),
        }
    }
    emits.pending.clear();
}

impl Spout for PySpout {
    /// The streams are in the definition heronpy wrote; a `PySpout` only runs in an instance.
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        if self.code.stateful { Some(self) } else { None }
    }

    /// Makes the component with its delegate (`cls(delegate=...)`) and calls `initialize(config, context)`.
    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let code = Arc::clone(&self.code);
        let state = &mut self.state;
        Python::attach(|py| {
            let made = (|| -> PyResult<Live> {
                let delegate = Py::new(py, SpoutDelegate::new(py, Pickler::import(py)?)?)?;
                let component = crate::make_component(py, &code, ctx, state, delegate.bind(py).as_any())?;
                Ok(Live {
                    component: component.unbind(),
                    delegate,
                    errors: Vec::new(),
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

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let Some(live) = &mut self.live else { return };
        Python::attach(|py| {
            if let Err(e) = live.component.bind(py).call_method0(intern!(py, "next_tuple")) {
                live.errors
                    .push(PythonError::new(py, e, &self.code.component, "next_tuple"));
            }
            flush(py, live, out);
        });
    }

    fn ack(&mut self, id: MessageId) {
        let Some(live) = &self.live else { return };
        let tup_id = Python::attach(|py| live.delegate.bind(py).borrow_mut().message_ids.remove(&id));
        if let Some(tup_id) = tup_id {
            self.call("ack", |py| pyo3::types::PyTuple::new(py, [tup_id]));
        }
    }

    fn fail(&mut self, id: MessageId) {
        let Some(live) = &self.live else { return };
        let tup_id = Python::attach(|py| live.delegate.bind(py).borrow_mut().message_ids.remove(&id));
        if let Some(tup_id) = tup_id {
            self.call("fail", |py| pyo3::types::PyTuple::new(py, [tup_id]));
        }
    }

    fn activate(&mut self) {
        self.call("activate", |py| Ok(pyo3::types::PyTuple::empty(py)));
    }

    fn deactivate(&mut self) {
        self.call("deactivate", |py| Ok(pyo3::types::PyTuple::empty(py)));
    }

    fn close(&mut self) {
        self.call("close", |py| Ok(pyo3::types::PyTuple::empty(py)));
    }
}

/// Effectively-once: the component's heronpy state is its checkpointed state.
impl Stateful for PySpout {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.state.restore(restored);
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let component = self.live.as_ref().map(|l| &l.component);
        self.state.pre_save(component, &self.code.component, out)
    }
}
