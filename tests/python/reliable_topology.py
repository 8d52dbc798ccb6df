"""At least once, with fails and replays: ``reliable_topology.py NAME OUT_DIR NUMBERS MODE``.

The spout emits the numbers 0..NUMBERS, each with a Python tuple as its ``tup_id``, and replays what fails; its
``ack`` and ``fail`` write the ids to ``acked-<task>.txt`` / ``failed-<task>.txt``. The ``judge`` bolt (fields grouping
on ``n``, so a replay reaches the same task) refuses each number ending in 3 once: MODE ``fail`` fails it with
``self.fail``, MODE ``raise`` raises ``ValueError`` from ``process``. Accepted numbers go on, anchored, to ``sink``,
which writes them to ``sink-<task>.txt``."""

import os
import sys

from heronpy.api.bolt.bolt import Bolt
from heronpy.api.spout.spout import Spout
from heronpy.api.stream import Grouping
from heronpy.api.topology import TopologyBuilder


class ReplayingSpout(Spout):
    outputs = ["n"]

    def initialize(self, config, context):
        self.out = config["reliable.out.dir"]
        self.todo = list(range(int(config["reliable.numbers"])))
        self.todo.reverse()
        task = context.get_task_id()
        self.acked = open(os.path.join(self.out, f"acked-{task}.txt"), "a", buffering=1, encoding="utf-8")
        self.failed = open(os.path.join(self.out, f"failed-{task}.txt"), "a", buffering=1, encoding="utf-8")

    def next_tuple(self):
        if self.todo:
            n = self.todo.pop()
            self.emit([n], tup_id=("number", n))

    def ack(self, tup_id):
        kind, n = tup_id
        assert kind == "number", tup_id
        self.acked.write(f"{n}\n")

    def fail(self, tup_id):
        _, n = tup_id
        self.failed.write(f"{n}\n")
        self.todo.append(n)


class JudgeBolt(Bolt):
    outputs = ["n"]

    def initialize(self, config, context):
        self.mode = config["reliable.mode"]
        self.refused = set()

    def process(self, tup):
        n = tup.values[0]
        if n % 10 == 3 and n not in self.refused:
            self.refused.add(n)
            if self.mode == "raise":
                raise ValueError("the judge refuses a number ending in 3 the first time")
            self.fail(tup)
            return
        self.emit([n], anchors=[tup])
        self.ack(tup)


class SinkBolt(Bolt):
    def initialize(self, config, context):
        path = os.path.join(config["reliable.out.dir"], f"sink-{context.get_task_id()}.txt")
        self.file = open(path, "a", buffering=1, encoding="utf-8")

    def process(self, tup):
        self.file.write(f"{tup.values[0]}\n")
        self.ack(tup)


if __name__ == "__main__":
    name, out, numbers, mode = sys.argv[1:5]
    builder = TopologyBuilder(name)
    spout = builder.add_spout("numbers", ReplayingSpout, par=1)
    judge = builder.add_bolt("judge", JudgeBolt, par=2, inputs={spout: Grouping.fields("n")})
    builder.add_bolt("sink", SinkBolt, par=2, inputs={judge: Grouping.SHUFFLE})
    builder.set_config(
        {
            "topology.reliability.mode": "ATLEAST_ONCE",
            "topology.stmgrs": 2,
            "reliable.out.dir": out,
            "reliable.numbers": int(numbers),
            "reliable.mode": mode,
        }
    )
    builder.build_and_submit()
