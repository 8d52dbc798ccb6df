"""Heron's example WordSpout (heron/examples/src/python/spout/word_spout.py), written against heronpy only.

The one change: ``wordcount.words.per.task`` in the config bounds how many words each task emits (0, the default,
emits forever as Heron's does), so a test can check exact counts."""

from itertools import cycle

from heronpy.api.spout.spout import Spout


class WordSpout(Spout):
    """WordSpout: emits a set of words repeatedly"""

    outputs = ["word"]

    def initialize(self, config, context):
        self.logger.info("In initialize() of WordSpout")
        self.words = cycle(["hello", "bye", "good", "bad", "heron", "storm"])
        self.limit = int(config.get("wordcount.words.per.task", 0))

        self.emit_count = 0
        self.ack_count = 0
        self.fail_count = 0

        self.logger.info("Component-specific config: \n%s" % str(config))
        self.logger.info("Context: task %d of %s" % (context.get_task_id(), context.get_component_id()))

    def next_tuple(self):
        if self.limit and self.emit_count >= self.limit:
            return
        word = next(self.words)
        self.emit([word], tup_id="message id")
        self.emit_count += 1
        if self.emit_count % 100000 == 0:
            self.logger.info("Emitted " + str(self.emit_count))

    def ack(self, tup_id):
        self.ack_count += 1
        if self.ack_count % 100000 == 0:
            self.logger.info("Acked %sth tuples, tup_id: %s" % (str(self.ack_count), str(tup_id)))

    def fail(self, tup_id):
        self.fail_count += 1
        if self.fail_count % 100000 == 0:
            self.logger.info("Failed %sth tuples, tup_id: %s" % (str(self.fail_count), str(tup_id)))
