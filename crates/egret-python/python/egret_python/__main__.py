"""``python -m egret_python``: one task of a heronpy topology, started by an Egret executor."""

import sys

from egret_python.instance import main

sys.exit(main())
