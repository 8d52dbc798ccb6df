"""Spout and bolts of ``multi_stream_topology.py`` (heronpy API only). Each bolt task appends what it receives to
``<out>/<component>-<task>.txt``, one line per tuple, for the test to check exactly."""

import os

from heronpy.api.bolt.bolt import Bolt
from heronpy.api.spout.spout import Spout
from heronpy.api.stream import Stream


class NumberSpout(Spout):
    """Emits ``groupings.numbers.per.task`` numbers per task on the default stream (``n``, ``parity``) and a word
    for each on the ``words`` stream (``word``, ``meta``: a Python tuple, which Egret carries pickled)."""

    outputs = [Stream(fields=["n", "parity"]), Stream(fields=["word", "meta"], name="words")]

    def initialize(self, config, context):
        self.per_task = int(config["groupings.numbers.per.task"])
        tasks = sorted(context.get_component_tasks(context.get_component_id()))
        # Each task emits its own range of numbers.
        self.next = tasks.index(context.get_task_id()) * self.per_task
        self.end = self.next + self.per_task

    def next_tuple(self):
        if self.next >= self.end:
            return
        n = self.next
        self.next += 1
        self.emit([n, "even" if n % 2 == 0 else "odd"])
        self.emit([f"w{n}", (n, "meta")], stream="words")


class RecordingBolt(Bolt):
    """Writes one line per tuple: its values, space separated, and the source component and stream."""

    outputs = [Stream(fields=["n"], name="checked")]

    def initialize(self, config, context):
        path = os.path.join(config["groupings.out.dir"], f"{context.get_component_id()}-{context.get_task_id()}.txt")
        self.file = open(path, "a", buffering=1, encoding="utf-8")
        self.forward = context.get_component_id() == "by_parity"

    def process(self, tup):
        values = " ".join(self._show(v) for v in tup.values)
        self.file.write(f"{tup.component}/{tup.stream} {values}\n")
        if self.forward:
            self.emit([tup.values[0]], stream="checked", anchors=[tup])
        self.ack(tup)

    @staticmethod
    def _show(v):
        # A tuple value must arrive as the tuple it was: say its type.
        if isinstance(v, tuple):
            return "tuple:" + ",".join(str(x) for x in v)
        return str(v)
