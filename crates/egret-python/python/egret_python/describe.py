"""``python -m egret_python.describe OUT TOPOLOGY [ARGS...]``: what ``egret submit`` runs for a heronpy topology.

Runs the topology as ``heron submit`` does, with ``HERON_OPTIONS`` (set by ``egret submit``) naming ``OUT/defn`` as
the definition directory: a ``.py`` file as a script, a ``.pex`` or ``.zip`` through its ``__main__`` (or, as with
``heron submit x.pex <module.Class>``, by writing that ``Topology`` class). A ``Topology`` subclass defined by a
script that does not write itself is written. Then stages the package ``egret submit`` uploads into
``OUT/package`` (a ``.py`` file with the modules and packages beside it; an archive as it is) and records the
interpreter in ``OUT/python``."""

import os
import re
import runpy
import shutil
import sys

from egret_python import loader

DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _write_unwritten_topologies(namespace, defn_dir):
    """Writes the ``Topology`` subclasses of a script that defines one without writing it."""
    if any(name.endswith(".defn") for name in os.listdir(defn_dir)):
        return
    from heronpy.api.topology import Topology  # pylint: disable=import-outside-toplevel

    for value in list(namespace.values()):
        if isinstance(value, type) and issubclass(value, Topology) and value is not Topology:
            value.write()


def _stage(path, package_dir):
    os.makedirs(package_dir)
    if not path.endswith(".py"):
        shutil.copy2(path, package_dir)
        return
    # The script and what it can import from its directory: modules beside it and packages (directories with an
    # __init__.py), without caches.
    source_dir = os.path.dirname(path)
    for entry in sorted(os.listdir(source_dir)):
        full = os.path.join(source_dir, entry)
        if os.path.isfile(full) and entry.endswith(".py"):
            shutil.copy2(full, package_dir)
        elif os.path.isdir(full) and os.path.isfile(os.path.join(full, "__init__.py")):
            shutil.copytree(full, os.path.join(package_dir, entry), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def main(argv):
    out, path, args = argv[0], os.path.abspath(argv[1]), argv[2:]
    defn_dir = os.path.join(out, "defn")
    with open(os.path.join(out, "python"), "w", encoding="utf-8") as f:
        f.write(sys.executable)
    _stage(path, os.path.join(out, "package"))
    if path.endswith(".py"):
        sys.path.insert(0, os.path.dirname(path))
        sys.argv = [path] + args
        namespace = runpy.run_path(path, run_name="__main__")
        _write_unwritten_topologies(namespace, defn_dir)
        return 0
    for entry in reversed(loader.package_paths(path)):
        sys.path.insert(0, entry)
    if args and args[0] == "-":
        args = args[1:]
    elif args and DOTTED.match(args[0]):
        # heron submit's form: the archive and the Topology class to write.
        loader.load_class(args[0]).write()
        return 0
    sys.argv = [path] + args
    namespace = runpy.run_path(path, run_name="__main__")
    _write_unwritten_topologies(namespace, defn_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
