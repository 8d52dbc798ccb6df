"""A stateful word count written against heronpy only: a spout and a bolt that are heronpy
``StatefulComponent``s, for effectively-once. The spout's position and the bolt's counts live in the heronpy
``State`` given to ``init_state`` (before ``initialize``) and are written into it in ``pre_save``.

With ``wordcount.out.dir`` in its config, each tick tuple makes the bolt write its counts to
``<dir>/count-<task>.txt`` (one ``word count`` line each) for a test to read."""

import os
import time
from collections import Counter

from heronpy.api.bolt.bolt import Bolt
from heronpy.api.spout.spout import Spout
from heronpy.api.state.stateful_component import StatefulComponent

WORDS = ["hello", "bye", "good", "bad", "heron", "storm"]


class StatefulWordSpout(Spout, StatefulComponent):
    """Emits ``wordcount.words.per.task`` words (the six in turn), at most ``wordcount.words.per.sec`` a second;
    its position is its state."""

    outputs = ["word"]

    def init_state(self, state):
        self.state = state

    def initialize(self, config, context):
        self.limit = int(config.get("wordcount.words.per.task", 0))
        self.per_sec = int(config.get("wordcount.words.per.sec", 0))
        self.next = self.state.get("next") or 0
        self.started = (time.monotonic(), self.next)
        self.logger.info("StatefulWordSpout starts at %d of %d", self.next, self.limit)

    def next_tuple(self):
        if self.next >= self.limit:
            return
        if self.per_sec:
            start, first = self.started
            if self.next - first >= (time.monotonic() - start) * self.per_sec:
                return
        self.emit([WORDS[self.next % len(WORDS)]])
        self.next += 1

    def pre_save(self):
        self.state.put("next", self.next)


class StatefulCountBolt(Bolt, StatefulComponent):
    """Counts words; the counts are its state."""

    def init_state(self, state):
        self.state = state

    def initialize(self, config, context):
        self.counter = Counter(self.state.get("counts") or {})
        self.out_dir = config.get("wordcount.out.dir")
        self.task_id = context.get_task_id()

    def process(self, tup):
        self.counter[tup.values[0]] += 1

    def pre_save(self):
        self.state.put("counts", dict(self.counter))

    def process_tick(self, tup):
        if self.out_dir:
            path = os.path.join(self.out_dir, f"count-{self.task_id}.txt")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                for word, count in sorted(self.counter.items()):
                    f.write(f"{word} {count}\n")
            os.replace(path + ".tmp", path)
