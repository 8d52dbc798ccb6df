//! A Python exception from user code, as a task error: the traceback goes to the instance's log, and the last line
//! (`ValueError: ...`) with the callback named is what the task reports (`TaskMetrics::record_error`, the tracker's
//! exceptions).

use pyo3::prelude::*;

#[derive(Debug)]
pub struct PythonError {
    /// `<callback> raised <Type>: <message>`.
    message: String,
}

impl std::fmt::Display for PythonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PythonError {}

impl PythonError {
    /// Logs the traceback of `err`, raised by the component's `callback`, and keeps its summary.
    pub fn new(py: Python<'_>, err: PyErr, component: &str, callback: &str) -> PythonError {
        let summary = match err.value(py).str() {
            Ok(s) => format!(
                "{}: {}",
                err.get_type(py)
                    .name()
                    .map_or_else(|_| "Exception".into(), |n| n.to_string()),
                s.to_cow().map_or_else(|_| "".into(), |c| c.into_owned())
            ),
            Err(_) => err.to_string(),
        };
        let traceback = traceback(py, &err).unwrap_or_else(|_| summary.clone());
        tracing::error!(component, callback, "{} raised:\n{}", callback, traceback.trim_end());
        PythonError {
            message: format!("{callback} raised {summary}"),
        }
    }
}

/// The whole traceback, as Python prints it.
fn traceback(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let lines = py
        .import("traceback")?
        .call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
    let joined = pyo3::types::PyString::new(py, "").call_method1("join", (lines,))?;
    joined.extract::<String>()
}
