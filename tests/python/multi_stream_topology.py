"""Several streams and groupings, as a heronpy ``Topology`` class (the other way heronpy defines topologies):
``multi_stream_topology.py OUT_DIR NUMBERS_PER_TASK``.

numbers (2 tasks) --default: shuffle--> shuffled (2)
                  --default: fields(parity)--> by_parity (2) --checked: global--> global_sink (2)
                  --words: all--> everyone (2)
"""

import sys

from heronpy.api.stream import Grouping
from heronpy.api.topology import Topology

from grouping_components import NumberSpout, RecordingBolt


class MultiStreamTopology(Topology):
    config = {
        "groupings.out.dir": sys.argv[1],
        "groupings.numbers.per.task": int(sys.argv[2]),
        "topology.stmgrs": 2,
    }
    numbers = NumberSpout.spec(par=2)
    shuffled = RecordingBolt.spec(par=2, inputs={numbers: Grouping.SHUFFLE})
    by_parity = RecordingBolt.spec(par=2, inputs={numbers: Grouping.fields("parity")})
    global_sink = RecordingBolt.spec(par=2, inputs={by_parity["checked"]: Grouping.GLOBAL})
    everyone = RecordingBolt.spec(par=2, inputs={numbers["words"]: Grouping.ALL})
