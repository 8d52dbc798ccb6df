"""Heron's example CountBolt (heron/examples/src/python/bolt/count_bolt.py), written against heronpy only.

Two additions: with ``wordcount.out.dir`` in the config, each tick tuple writes the task's counts to
``<dir>/count-<task>.txt`` (one ``word count`` line each) for a test to read; and the bolt registers heronpy metrics
(a ``CountMetric`` of the words counted, a ``MultiCountMetric`` per word, a mean of the increments), which Egret
publishes as user metrics."""

import os
from collections import Counter

from heronpy.api import global_metrics
from heronpy.api.bolt.bolt import Bolt
from heronpy.api.metrics import CountMetric, MeanReducer, MultiCountMetric, ReducedMetric


class CountBolt(Bolt):
    """CountBolt"""

    def initialize(self, config, context):
        self.logger.info("In prepare() of CountBolt")
        self.counter = Counter()
        self.total = 0
        self.out_dir = config.get("wordcount.out.dir")
        self.task_id = context.get_task_id()
        self.words_counted = CountMetric()
        self.by_word = MultiCountMetric()
        self.mean_increment = ReducedMetric(MeanReducer)
        context.register_metric("words-counted", self.words_counted, 1)
        context.register_metric("by-word", self.by_word, 1)
        context.register_metric("mean-increment", self.mean_increment, 1)

        self.logger.info(f"Component-specific config: \n{str(config)}")

    def _increment(self, word, inc_by):
        self.counter[word] += inc_by
        self.total += inc_by
        self.words_counted.incr()
        self.by_word.incr(word, inc_by)
        self.mean_increment.update(inc_by)

    def process(self, tup):
        word = tup.values[0]
        self._increment(word, 10 if word == "heron" else 1)
        global_metrics.safe_incr("count")
        self.ack(tup)

    def process_tick(self, tup):
        self.log("Got tick tuple!", "debug")
        if self.out_dir:
            path = os.path.join(self.out_dir, f"count-{self.task_id}.txt")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                for word, count in sorted(self.counter.items()):
                    f.write(f"{word} {count}\n")
            os.replace(path + ".tmp", path)
