"""Where a topology's modules are and how a component class is found: shared by the instance and by the checks
``egret submit`` runs, so a class that imports at submit imports in the instance too."""

import importlib
import os
import sys
import tempfile
import types
import zipfile

# A class defined in the topology file itself is named ``__main__.<Class>`` by heronpy (the file ran as a script);
# the instance loads that file under this name, so its ``if __name__ == '__main__':`` block does not run.
MAIN_MODULE = "__egret_main__"

_main_source = None


def package_paths(package):
    """The ``sys.path`` entries of a package: a ``.py`` file's directory, or a ``.pex`` / ``.zip`` archive itself
    (zipimport) with the wheels a pex keeps under ``.deps/``."""
    package = os.path.abspath(package)
    if os.path.isdir(package):
        return [package]
    if package.endswith(".py"):
        return [os.path.dirname(package)]
    with zipfile.ZipFile(package) as archive:
        deps = sorted(
            {name.split("/")[1] for name in archive.namelist() if name.startswith(".deps/") and name.count("/") >= 2}
        )
    return [package] + [os.path.join(package, ".deps", d) for d in deps]


def add_package(package):
    """Puts the package first on ``sys.path`` and remembers the file ``__main__`` classes come from."""
    global _main_source
    for path in reversed(package_paths(package)):
        if path not in sys.path:
            sys.path.insert(0, path)
    _main_source = os.path.abspath(package)


def set_heron_options(topology_name):
    """heronpy's ``Topology`` metaclass needs ``HERON_OPTIONS`` whenever a module defining a topology class is
    imported (also by an instance importing its component from that module): give it a scratch directory."""
    if "HERON_OPTIONS" not in os.environ:
        scratch = tempfile.mkdtemp(prefix="egret-heron-options-")
        os.environ["HERON_OPTIONS"] = (
            f"cmdline.topologydefn.tmpdirectory={scratch},cmdline.topology.initial.state=RUNNING,"
            f"cmdline.topology.name={topology_name}"
        )


def _main_module():
    module = sys.modules.get(MAIN_MODULE)
    if module is not None:
        return module
    if _main_source is None:
        raise ImportError("a class of __main__ needs the topology file, and no package was given")
    if _main_source.endswith(".py"):
        with open(_main_source, encoding="utf-8") as f:
            source, filename = f.read(), _main_source
    else:
        with zipfile.ZipFile(_main_source) as archive:
            source, filename = archive.read("__main__.py").decode("utf-8"), _main_source + "/__main__.py"
    module = types.ModuleType(MAIN_MODULE)
    module.__file__ = filename
    sys.modules[MAIN_MODULE] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[MAIN_MODULE]
        raise
    return module


def load_class(class_name):
    """The class heronpy named ``<module>.<Class>`` in the topology definition."""
    module_name, _, name = class_name.rpartition(".")
    if not module_name or not name:
        raise ImportError(f"component class {class_name!r} is not <module>.<Class>")
    if module_name == "__main__":
        module = _main_module()
    else:
        module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no class {name!r}") from None
