"""Egret's Python instance: runs heronpy 0.20.5 spouts and bolts inside Egret's Rust instance.

``python -m egret_python`` is the process an Egret executor starts for each task of a heronpy topology (see
``docs/python.md``); ``egret submit`` uses ``egret_python.describe`` and ``egret_python.check``. Nothing here is
called by topology code, which is written against heronpy's API only.
"""

__version__ = "0.1.0"
