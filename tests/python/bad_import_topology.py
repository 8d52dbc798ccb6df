"""A topology whose file does not import: ``egret submit`` must refuse it and show Python's error."""

import no_such_module_for_egret  # noqa: F401

from heronpy.api.topology import TopologyBuilder

if __name__ == "__main__":
    TopologyBuilder("bad-import").build_and_submit()
