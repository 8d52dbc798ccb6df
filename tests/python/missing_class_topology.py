"""A topology whose bolt class exists only while the script runs: it is defined inside the ``__main__`` block, so
heronpy names it ``__main__.VanishedBolt`` but an instance, which imports the file without running that block,
cannot find it. ``egret submit`` must refuse it, naming the class."""

import sys

from heronpy.api.bolt.bolt import Bolt
from heronpy.api.stream import Grouping
from heronpy.api.topology import TopologyBuilder

from word_spout import WordSpout

if __name__ == "__main__":

    class VanishedBolt(Bolt):
        def process(self, tup):
            self.ack(tup)

    builder = TopologyBuilder(sys.argv[1])
    words = builder.add_spout("words", WordSpout, par=1)
    builder.add_bolt("vanished", VanishedBolt, par=1, inputs={words: Grouping.SHUFFLE})
    builder.build_and_submit()
