//! Egret's Python instance: the extension module `egret_python._native`, loaded by `python -m egret_python` (the
//! process an executor starts for each task of a heronpy topology).
//!
//! [`run_instance`] runs Egret's own Rust instance (`egret_instance::run`: registration with the stmgr, the task loop
//! of `egret_runtime::driver`, the metrics publisher thread) with a component that calls into the user's heronpy
//! spout or bolt: [`spout::PySpout`] and [`bolt::PyBolt`] implement `egret_api::Spout` / `Bolt`. So framing,
//! batching, routing (fields hash), the XOR ledger, back pressure and metrics are the Rust ones; Python runs only
//! the user's `initialize`, `next_tuple`, `ack`, `fail`, `process` and `process_tick`.
//!
//! The task thread is the process's main thread and holds the GIL while the task runs (an instance is
//! single-threaded, as Heron's Python instance is); the user's `emit`, `ack` and `fail` calls are buffered by the
//! delegate (`delegate`) and handed to the Rust collector in one go when the Python call returns.

mod bolt;
mod delegate;
mod errors;
mod metrics;
mod spout;
mod state;
mod tuple;
mod values;

use std::sync::Arc;

use egret_api::topology::{BoltFactory, SpoutFactory};
use egret_api::{ComponentKind, KeyCheck, Topology};
use egret_instance::InstanceEnv;
use egret_proto::{api, defn};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// The Python side of the package (`python/egret_python/instance.py`): loading modules and classes, the topology
/// context, the config dictionary.
pub(crate) const INSTANCE_MODULE: &str = "egret_python.instance";

/// What every task of the component shares: the user's class and the context and config built for it.
pub(crate) struct ComponentCode {
    pub class: Py<PyAny>,
    /// heronpy's `TopologyContext` for this task (`instance.TopologyContext`).
    pub context: Py<PyAny>,
    pub component: String,
    /// The class is a heronpy `StatefulComponent`: under effectively-once its state is checkpointed.
    pub stateful: bool,
}

/// Runs this process's task until its stmgr goes away (then the executor starts it again). Called by
/// `python -m egret_python` with the executor's environment (`EGRET_INSTANCE`, `EGRET_TASK`, ...).
#[pyfunction]
fn run_instance(py: Python<'_>) -> PyResult<()> {
    let env = match InstanceEnv::from_env() {
        Some(env) => env.map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
        None => {
            return Err(PyRuntimeError::new_err(
                "python -m egret_python runs one task of a heronpy topology and is started by an Egret executor \
                 (EGRET_INSTANCE is not set); submit the topology with `egret submit <cluster> topology.py`",
            ));
        }
    };
    let fail = |e: &dyn std::fmt::Display| PyRuntimeError::new_err(e.to_string());
    let state = egret_statemgr::open(&env.egret_home, &env.cluster).map_err(|e| fail(&e))?;
    let raw = state
        .get_topology(&env.topology)
        .map_err(|e| fail(&e))?
        .ok_or_else(|| PyRuntimeError::new_err(format!("topology {} has no stored definition", env.topology)))?;
    let exec = state
        .get_execution_state(&env.topology)
        .map_err(|e| fail(&e))?
        .ok_or_else(|| PyRuntimeError::new_err(format!("topology {} has no execution state", env.topology)))?;
    let parsed = defn::from_definition(&raw).map_err(|e| fail(&e))?;
    let topology = parsed.topology;
    let (ci, _) = topology
        .task_component(env.task)
        .ok_or_else(|| PyRuntimeError::new_err(format!("task {} is not in the topology", env.task)))?;
    let component = topology.components()[ci].name.clone();
    init_logging(&env, &component);

    // The package (a directory of modules, a .pex or a .zip) is in this executor's own package directory.
    let package_file = std::path::Path::new(&exec.package)
        .file_name()
        .ok_or_else(|| PyRuntimeError::new_err("the execution state names no package"))?;
    let package = egret_scheduler::package_dir(&env.egret_home, &env.cluster, &env.topology).join(package_file);
    let instance = py.import(INSTANCE_MODULE)?;
    instance.call_method1("prepare", (package.display().to_string(), &env.topology))?;

    let comp = raw_component(&raw, &component)
        .ok_or_else(|| PyRuntimeError::new_err(format!("component {component} is not in the stored definition")))?;
    let class_name = comp.class_name.clone().unwrap_or_default();
    tracing::info!(class = %class_name, package = %package.display(), "loading the component's class");
    let class = instance.call_method1("load_class", (&class_name,))?;

    let context = make_context(py, &instance, &raw, &topology, &component, comp, env.task.0)?;
    let stateful = instance.call_method1("is_stateful", (&class,))?.extract::<bool>()?;
    let code = Arc::new(ComponentCode {
        class: class.unbind(),
        context: context.unbind(),
        component: component.clone(),
        stateful,
    });
    let mut components = topology.components().to_vec();
    let def = &mut components[ci];
    def.kind = if def.kind.is_spout() {
        let code = Arc::clone(&code);
        let factory: SpoutFactory = Arc::new(move || Box::new(spout::PySpout::new(Arc::clone(&code))));
        ComponentKind::Spout(Some(factory))
    } else {
        let code = Arc::clone(&code);
        let factory: BoltFactory = Arc::new(move || Box::new(bolt::PyBolt::new(Arc::clone(&code))));
        ComponentKind::Bolt(Some(factory))
    };
    let topology = Topology::from_parts(
        topology.name().to_string(),
        topology.config().clone(),
        components,
        KeyCheck::Lenient,
    )
    .map_err(|e| fail(&e))?;
    // The GIL stays with this thread for the task's life (every call into the component is on it), except while the
    // task waits for input or room: then the user's own Python threads (a source's reader, say) can run.
    egret_instance::set_around_wait(release_the_gil_while);
    egret_instance::run(topology, env).map_err(|e| fail(&e))
}

/// Runs `wait` (a poll of the task's sockets, which calls no Python) with the GIL released.
fn release_the_gil_while(wait: &mut dyn FnMut()) {
    // SAFETY: only the task thread waits, and it holds the GIL (run_instance is called from Python and keeps it);
    // `wait` touches no Python object, and the GIL is taken back before anything else runs on this thread.
    unsafe {
        let saved = pyo3::ffi::PyEval_SaveThread();
        wait();
        pyo3::ffi::PyEval_RestoreThread(saved);
    }
}

/// Makes the user's component for a task as Heron's Python instance does: `cls(delegate=...)`, then (a
/// `StatefulComponent` under effectively-once) `init_state(state)`, then `initialize(config, context)`, with the
/// context registering metrics in the task's registry.
pub(crate) fn make_component<'py>(
    py: Python<'py>,
    code: &ComponentCode,
    ctx: &egret_api::TopologyContext,
    state: &mut state::ComponentState,
    delegate: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("delegate", delegate)?;
    let component = code.class.bind(py).call((), Some(&kwargs))?;
    state.init(py, &component)?;
    let context = code.context.bind(py);
    let metrics = Py::new(py, metrics::Metrics::new(Arc::clone(ctx.metrics())))?;
    context.call_method1("_set_metrics", (metrics,))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("config", context.call_method0("get_cluster_config")?)?;
    kwargs.set_item("context", context)?;
    component.call_method("initialize", (), Some(&kwargs))?;
    Ok(component)
}

/// The heronpy component `name` in the definition heronpy wrote.
fn raw_component<'a>(raw: &'a api::Topology, name: &str) -> Option<&'a api::Component> {
    let spouts = raw.spouts.iter().map(|s| &s.comp);
    let bolts = raw.bolts.iter().map(|b| &b.comp);
    spouts.chain(bolts).find(|c| c.name == name)
}

/// heronpy's `TopologyContext` for this task: its config is the topology's overlaid with the component's, each value
/// as heronpy wrote it (a string, or the pickled bytes of a Python object), typed on the Python side.
fn make_context<'py>(
    py: Python<'py>,
    instance: &Bound<'py, PyModule>,
    raw: &api::Topology,
    topology: &Topology,
    component: &str,
    comp: &api::Component,
    task: u32,
) -> PyResult<Bound<'py, PyAny>> {
    let config = PyList::empty(py);
    let kvs = raw
        .topology_config
        .iter()
        .flat_map(|c| c.kvs.iter())
        .chain(comp.config.kvs.iter());
    for kv in kvs {
        let value: Bound<'py, PyAny> = match (&kv.value, &kv.serialized_value) {
            (Some(v), _) => v.into_pyobject(py)?.into_any(),
            (None, Some(bytes)) => PyBytes::new(py, bytes).into_any(),
            (None, None) => continue,
        };
        config.append((&kv.key, value))?;
    }
    // Overrides from --config-property and the cluster's defaults are in the definition Egret stored, as strings.
    let tasks = PyDict::new(py);
    for (ci, c) in topology.components().iter().enumerate() {
        let ids: Vec<u32> = topology.tasks_of(ci).map(|t| t.0).collect();
        tasks.set_item(&c.name, ids)?;
    }
    let sources = PyDict::new(py);
    for b in &raw.bolts {
        let list = PyList::empty(py);
        for i in &b.inputs {
            list.append((&i.stream.component_name, &i.stream.id, i.gtype))?;
        }
        sources.set_item(&b.comp.name, list)?;
    }
    instance.call_method1(
        "TopologyContext",
        (task, component, topology.name(), config, tasks, sources),
    )
}

/// Every line of the instance's log names it, as a Rust instance's does (`egret::run`).
fn init_logging(env: &InstanceEnv, component: &str) {
    let process = format!("instance-{}-{component}", env.task);
    egret_scheduler::logging::init(&[
        ("topology", &env.topology),
        ("container", &env.container),
        ("process", &process),
        ("component", &component),
        ("task", &env.task),
    ]);
}

/// A record of Python's `logging`, written as a `tracing` event in the instance's log format
/// (`instance.EgretLogHandler` calls it).
#[pyfunction]
fn log(level: u32, logger: &str, message: &str) {
    // Python's levels: DEBUG 10, INFO 20, WARNING 30, ERROR 40, CRITICAL 50.
    match level {
        0..=9 => tracing::trace!(logger, "{message}"),
        10..=19 => tracing::debug!(logger, "{message}"),
        20..=29 => tracing::info!(logger, "{message}"),
        30..=39 => tracing::warn!(logger, "{message}"),
        _ => tracing::error!(logger, "{message}"),
    }
}

/// Egret's fields-grouping hash of a Python value list, for checks from Python (the same bytes Rust hashes).
#[pyfunction]
fn encode(py: Python<'_>, tup: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
    let pickler = values::Pickler::import(py)?;
    let mut enc = egret_api::value::Encoder::new();
    values::encode_tuple(tup, &mut enc, &pickler)?;
    Ok(PyBytes::new(py, enc.bytes()).unbind())
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_instance, m)?)?;
    m.add_function(wrap_pyfunction!(log, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_class::<tuple::HeronTuple>()?;
    m.add_class::<delegate::SpoutDelegate>()?;
    m.add_class::<delegate::BoltDelegate>()?;
    m.add_class::<metrics::Metrics>()?;
    m.add_class::<metrics::PyCounter>()?;
    m.add_class::<metrics::PyMultiCounter>()?;
    m.add_class::<metrics::PyReduced>()?;
    m.add_class::<metrics::PyGauge>()?;
    Ok(())
}
