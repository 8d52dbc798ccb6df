//! The tuple a Python bolt receives: heronpy's `Tuple` (`id component stream task values`), holding the Rust tuple
//! it came from so the bolt can ack, fail or anchor on it at any later time, as Heron allows.

use egret_api::{Anchor, OwnedTuple};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;

/// heronpy's `Tuple` namedtuple, field for field (also indexable and iterable like it), plus the Rust tuple.
/// Not `Send`: it lives and dies on the task thread.
#[pyclass(module = "egret_python", name = "HeronTuple", unsendable)]
pub struct HeronTuple {
    /// Heron gives a tuple's key as its id; so does Egret (0 for tick tuples and untracked tuples' keys vary).
    #[pyo3(get)]
    pub id: Py<PyAny>,
    #[pyo3(get)]
    pub component: Py<PyAny>,
    #[pyo3(get)]
    pub stream: Py<PyAny>,
    #[pyo3(get)]
    pub task: Py<PyAny>,
    #[pyo3(get)]
    pub values: Py<PyAny>,
    /// The received tuple, for acking and anchoring (`None` for a tick tuple).
    pub owned: Option<OwnedTuple>,
    /// Acked or failed already: a bolt that raised after settling its input does not fail it again.
    pub settled: std::cell::Cell<bool>,
}

impl HeronTuple {
    pub fn anchor(&self) -> Option<&dyn Anchor> {
        self.owned.as_ref().map(|t| t as &dyn Anchor)
    }
}

#[pymethods]
impl HeronTuple {
    fn __len__(&self) -> usize {
        5
    }

    fn __getitem__(&self, py: Python<'_>, index: isize) -> PyResult<Py<PyAny>> {
        let fields = [&self.id, &self.component, &self.stream, &self.task, &self.values];
        let i = if index < 0 { index + 5 } else { index };
        usize::try_from(i)
            .ok()
            .and_then(|i| fields.get(i))
            .map(|f| f.clone_ref(py))
            .ok_or_else(|| PyIndexError::new_err("tuple index out of range"))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let repr = |o: &Py<PyAny>| -> PyResult<String> { Ok(o.bind(py).repr()?.to_cow()?.into_owned()) };
        Ok(format!(
            "Tuple(id={}, component={}, stream={}, task={}, values={})",
            repr(&self.id)?,
            repr(&self.component)?,
            repr(&self.stream)?,
            repr(&self.task)?,
            repr(&self.values)?
        ))
    }
}
