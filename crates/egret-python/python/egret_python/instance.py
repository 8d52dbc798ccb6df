"""The Python side of an instance: what ``egret_python._native.run_instance`` (Rust) calls to load the user's
component and to build the topology context and config heronpy's components are given.

The task itself runs in Rust (``egret_instance``): registration, the task loop, acking, batching and metrics.
"""

import collections
import logging
import pickle
import sys
import traceback

from heronpy.api.topology_context import TopologyContext as HeronTopologyContext

from egret_python import loader


class EgretLogHandler(logging.Handler):
    """Python ``logging`` records as lines of the instance's log, in Egret's one format."""

    def emit(self, record):
        try:
            message = self.format(record)
        except Exception:  # pylint: disable=broad-except
            self.handleError(record)
            return
        from egret_python import _native  # pylint: disable=import-outside-toplevel

        _native.log(record.levelno, record.name, message)


def prepare(package, topology_name):
    """Before the component's class is imported: its modules on ``sys.path``, ``HERON_OPTIONS``, logging."""
    loader.set_heron_options(topology_name)
    loader.add_package(package)
    root = logging.getLogger()
    root.handlers = [EgretLogHandler()]
    root.setLevel(logging.INFO)


def load_class(class_name):
    return loader.load_class(class_name)


def _typed(value):
    """Heron's instance types config strings: integers, floats, ``true``/``false``; pickled values unpickled."""
    if isinstance(value, bytes):
        return pickle.loads(value)
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


# heronpy's ``get_sources`` keys: the protobuf StreamId's fields.
StreamId = collections.namedtuple("StreamId", "id component_name")


class TopologyContext(HeronTopologyContext):
    """heronpy's ``TopologyContext`` for one task."""

    def __init__(self, task_id, component_id, topology_name, config_items, component_tasks, sources):
        self._task_id = task_id
        self._component_id = component_id
        self._topology_name = topology_name
        # The topology's config overlaid with the component's (the later key wins), typed as Heron types it.
        self._config = {key: _typed(value) for key, value in config_items}
        self._component_tasks = component_tasks
        self._sources = {
            bolt: {StreamId(stream, producer): gtype for producer, stream, gtype in inputs}
            for bolt, inputs in sources.items()
        }

    def get_task_id(self):
        return self._task_id

    def get_component_id(self):
        return self._component_id

    def get_cluster_config(self):
        return self._config

    def get_topology_name(self):
        return self._topology_name

    def _set_metrics(self, metrics):
        """The task's metric registry (``_native.Metrics``), given before ``initialize``."""
        self._metrics = metrics

    def register_metric(self, name, metric, time_bucket_in_sec):
        """heronpy's metrics on Egret's user metrics: ``metric``'s update method is rebound to an Egret handle of
        the same kind, published as ``egret_user_<name>`` (docs/python.md)."""
        bind_metric(getattr(self, "_metrics", None), name, metric, time_bucket_in_sec)

    def get_sources(self, component_id):
        return self._sources.get(component_id)

    def get_component_tasks(self, component_id):
        return self._component_tasks.get(component_id)

    def add_task_hook(self, task_hook):
        raise NotImplementedError("Egret does not run heronpy task hooks (add_task_hook) yet (docs/python.md)")


def is_stateful(cls):
    """Whether the component class is a heronpy ``StatefulComponent`` (its state is checkpointed under
    effectively-once)."""
    from heronpy.api.state.stateful_component import StatefulComponent  # pylint: disable=import-outside-toplevel

    return isinstance(cls, type) and issubclass(cls, StatefulComponent)


def init_component_state(component, restored):
    """Heron's order: ``init_state(state)`` before ``initialize``, with the state of the checkpoint restored (pickled
    bytes) or an empty ``HashMapState`` on a clean start. Returns the state object, which is saved at each
    checkpoint."""
    from heronpy.api.state.state import HashMapState  # pylint: disable=import-outside-toplevel

    state = pickle.loads(restored) if restored is not None else HashMapState()
    component.init_state(state)
    return state


def save_component_state(component, state):
    """``pre_save()``, then the state pickled (cloudpickle when installed, as heronpy serializes)."""
    component.pre_save()
    try:
        import cloudpickle as dumper  # pylint: disable=import-outside-toplevel
    except ImportError:
        dumper = pickle
    return dumper.dumps(state)


def bind_metric(metrics, name, metric, time_bucket_in_sec):
    """Rebinds the update method of a heronpy metric object to the Egret handle of its kind. Counters stay
    cumulative on Egret's side (Prometheus' convention); ``get_value_and_reset`` of the object no longer sees
    updates."""
    # pylint: disable=import-outside-toplevel
    from heronpy.api.metrics import AssignableMetrics, CountMetric, MeanReducer, MultiCountMetric, ReducedMetric

    if metrics is None:
        raise RuntimeError("register_metric: this context has no metrics registry (called outside a task)")
    if isinstance(metric, CountMetric):
        metric.incr = metrics.counter(name, time_bucket_in_sec).incr
    elif isinstance(metric, MultiCountMetric):
        handle = metrics.multi_counter(name, time_bucket_in_sec)
        metric.incr = handle.incr
        metric.add_key = handle.add_key
    elif isinstance(metric, ReducedMetric) and isinstance(getattr(metric, "reducer", None), MeanReducer):
        metric.update = metrics.mean(name, time_bucket_in_sec).update
    elif isinstance(metric, AssignableMetrics):
        metric.update = metrics.gauge(name, time_bucket_in_sec).update
    else:
        raise NotImplementedError(
            f"register_metric({name!r}): Egret publishes heronpy's CountMetric, MultiCountMetric, "
            f"ReducedMetric(MeanReducer) and AssignableMetrics; {type(metric).__name__} is not one of them "
            "(docs/python.md)"
        )


def main():
    """Runs the task until its stmgr goes away; the executor starts the process again."""
    try:
        from egret_python import _native  # pylint: disable=import-outside-toplevel

        _native.run_instance()
    except Exception:  # pylint: disable=broad-except
        # The executor writes stderr to the instance's log.
        sys.stderr.write("egret_python: instance exiting:\n" + traceback.format_exc())
        sys.stderr.flush()
    return 1
