"""``python -m egret_python.check PACKAGE KIND:NAME:CLASS ...``: run by ``egret submit`` before anything starts.
Imports every component class from the package as an instance will, and prints each failure with its traceback.
Exit status 1 when any class cannot be used."""

import sys
import traceback

from egret_python import loader


def main(argv):
    package, components = argv[0], argv[1:]
    loader.set_heron_options("egret-submit-check")
    loader.add_package(package)
    failed = 0
    for spec in components:
        kind, name, class_name = spec.split(":", 2)
        try:
            cls = loader.load_class(class_name)
            needed = "next_tuple" if kind == "spout" else "process"
            if not callable(getattr(cls, needed, None)):
                raise TypeError(f"{class_name} is not a heronpy {kind}: it has no {needed}() method")
        except BaseException:  # pylint: disable=broad-except
            failed += 1
            sys.stderr.write(f"{kind} {name!r}: cannot load class {class_name!r}:\n{traceback.format_exc()}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
