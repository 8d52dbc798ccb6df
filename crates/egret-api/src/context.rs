//! What a task knows about itself and its topology.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::fields::Fields;
use crate::hooks::TaskHook;
use crate::ids::TaskId;
use crate::metrics::{Counter, Gauge, Histogram, MetricError, MetricRegistry, MultiCounter, ReducedMetric, Reducer};
use crate::topology::Topology;

/// Given to `Spout::open` and `Bolt::prepare`.
#[derive(Debug, Clone)]
pub struct TopologyContext {
    topology: Arc<Topology>,
    component: usize,
    task: TaskId,
    component_index: u32,
    config: Config,
    /// The task's user metrics, which the runtime publishes.
    metrics: Arc<MetricRegistry>,
    /// Hooks added by the component, which the runtime takes after `open`/`prepare`.
    hooks: Arc<Mutex<Vec<Box<dyn TaskHook>>>>,
}

impl std::fmt::Debug for dyn TaskHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskHook")
    }
}

impl TopologyContext {
    pub fn new(topology: Arc<Topology>, task: TaskId) -> Option<Self> {
        let (component, component_index) = topology.task_component(task)?;
        let config = topology.component_config(component);
        Some(TopologyContext {
            topology,
            component,
            task,
            component_index,
            config,
            metrics: Arc::default(),
            hooks: Arc::default(),
        })
    }

    /// The same context publishing its user metrics through `metrics` (the runtime's, shared with its publisher).
    pub fn with_metrics(mut self, metrics: Arc<MetricRegistry>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry the user metrics of this task go to.
    pub fn metrics(&self) -> &Arc<MetricRegistry> {
        &self.metrics
    }

    /// Registers a counter (Heron's `registerMetric(name, new CountMetric(), intervalSecs)`), exported every
    /// `interval` (at least a second). Fails on an invalid name or one this task already registered.
    pub fn register_counter(&self, name: &str, interval: Duration) -> Result<Counter, MetricError> {
        self.metrics.counter(name, interval)
    }
    /// Registers a gauge: the value last set.
    pub fn register_gauge(&self, name: &str, interval: Duration) -> Result<Gauge, MetricError> {
        self.metrics.gauge(name, interval)
    }
    /// Registers a counter per key (Heron's `MultiCountMetric`).
    pub fn register_multi_counter(&self, name: &str, interval: Duration) -> Result<MultiCounter, MetricError> {
        self.metrics.multi_counter(name, interval)
    }
    /// Registers a metric reduced per interval (Heron's `ReducedMetric` with a `MeanReducer`, ...).
    pub fn register_reduced(
        &self,
        name: &str,
        reducer: Reducer,
        interval: Duration,
    ) -> Result<ReducedMetric, MetricError> {
        self.metrics.reduced(name, reducer, interval)
    }
    /// Registers a histogram with the given bucket bounds (e.g. [`crate::metrics::latency_buckets_seconds`]).
    pub fn register_histogram(
        &self,
        name: &str,
        upper_bounds: Vec<f64>,
        interval: Duration,
    ) -> Result<Histogram, MetricError> {
        self.metrics.histogram(name, upper_bounds, interval)
    }

    /// Adds a task hook (Heron's `TopologyContext.addTaskHook`); call it from `open` or `prepare`.
    pub fn add_task_hook(&self, hook: Box<dyn TaskHook>) {
        if let Ok(mut hooks) = self.hooks.lock() {
            hooks.push(hook);
        }
    }

    /// The hooks added since the last call (the runtime takes them after `open`/`prepare`).
    pub fn take_task_hooks(&self) -> Vec<Box<dyn TaskHook>> {
        self.hooks
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }

    pub fn topology_name(&self) -> &str {
        self.topology.name()
    }
    pub fn task_id(&self) -> TaskId {
        self.task
    }
    pub fn component_id(&self) -> &str {
        &self.topology.components()[self.component].name
    }
    /// This task's index within its component, 0-based.
    pub fn component_index(&self) -> u32 {
        self.component_index
    }
    pub fn parallelism(&self) -> u32 {
        self.topology.components()[self.component].parallelism
    }
    /// Topology config overlaid with this component's config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Task ids of any component (empty if unknown).
    pub fn component_tasks(&self, component: &str) -> Vec<TaskId> {
        self.topology
            .component_index(component)
            .map(|ci| self.topology.tasks_of(ci).collect())
            .unwrap_or_default()
    }
    pub fn output_fields(&self, stream: &str) -> Option<&Fields> {
        self.topology.components()[self.component]
            .output(stream)
            .map(|d| &d.fields)
    }
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }
}
