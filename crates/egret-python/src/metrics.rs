//! heronpy's `context.register_metric(name, metric, time_bucket_in_sec)` on Egret's user metrics: the Python side
//! (`instance.bind_metric`) asks [`Metrics`] for the Egret handle of the metric's kind and rebinds the heronpy
//! metric object's update method (`incr`, `update`) to it, so the user's `self.counter.incr()` updates an Egret
//! counter directly and the value is published like a Rust topology's (`egret_user_<name>` on `/metrics`, the
//! tracker, the UI). The handles are the task thread's (the instance's one thread holds the GIL).

use std::sync::Arc;
use std::time::Duration;

use egret_api::metrics::{Counter, Gauge, MetricRegistry, MultiCounter, ReducedMetric, Reducer};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The task's user-metric registry, as the Python context sees it.
#[pyclass(unsendable)]
pub struct Metrics {
    registry: Arc<MetricRegistry>,
}

impl Metrics {
    pub fn new(registry: Arc<MetricRegistry>) -> Metrics {
        Metrics { registry }
    }
}

fn interval(secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| PyValueError::new_err(format!("time_bucket_in_sec must be a number of seconds, not {secs}")))
}

fn refused(e: egret_api::MetricError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

#[pymethods]
impl Metrics {
    /// heronpy's `CountMetric`.
    fn counter(&self, name: &str, secs: f64) -> PyResult<PyCounter> {
        let c = self.registry.counter(name, interval(secs)?).map_err(refused)?;
        Ok(PyCounter(c))
    }
    /// heronpy's `MultiCountMetric`.
    fn multi_counter(&self, name: &str, secs: f64) -> PyResult<PyMultiCounter> {
        let c = self.registry.multi_counter(name, interval(secs)?).map_err(refused)?;
        Ok(PyMultiCounter(c))
    }
    /// heronpy's `ReducedMetric(MeanReducer)`.
    fn mean(&self, name: &str, secs: f64) -> PyResult<PyReduced> {
        let r = self
            .registry
            .reduced(name, Reducer::Mean, interval(secs)?)
            .map_err(refused)?;
        Ok(PyReduced(r))
    }
    /// heronpy's `AssignableMetrics`.
    fn gauge(&self, name: &str, secs: f64) -> PyResult<PyGauge> {
        let g = self.registry.gauge(name, interval(secs)?).map_err(refused)?;
        Ok(PyGauge(g))
    }
}

#[pyclass(unsendable)]
pub struct PyCounter(Counter);

#[pymethods]
impl PyCounter {
    /// `CountMetric.incr(to_add=1)`.
    #[pyo3(signature = (to_add = 1))]
    fn incr(&self, to_add: u64) {
        self.0.incr_by(to_add)
    }
}

#[pyclass(unsendable)]
pub struct PyMultiCounter(MultiCounter);

#[pymethods]
impl PyMultiCounter {
    /// `MultiCountMetric.incr(key, to_add=1)`; a key that is not a string counts under its `str()`.
    #[pyo3(signature = (key, to_add = 1))]
    fn incr(&mut self, key: &Bound<'_, PyAny>, to_add: u64) -> PyResult<()> {
        let key = key.str()?;
        self.0.incr_by(&key.to_cow()?, to_add);
        Ok(())
    }
    /// `MultiCountMetric.add_key(key)`: the key's series starts at zero.
    fn add_key(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.incr(key, 0)
    }
}

#[pyclass(unsendable)]
pub struct PyReduced(ReducedMetric);

#[pymethods]
impl PyReduced {
    /// `ReducedMetric.update(value)`.
    fn update(&self, value: f64) {
        self.0.update(value)
    }
}

#[pyclass(unsendable)]
pub struct PyGauge(Gauge);

#[pymethods]
impl PyGauge {
    /// `AssignableMetrics.update(value)`.
    fn update(&self, value: f64) {
        self.0.set(value)
    }
}
