# A heronpy word count, written to a .defn by heronpy itself.
import os
from heronpy.api.spout.spout import Spout
from heronpy.api.bolt.bolt import Bolt
from heronpy.api.stream import Grouping
from heronpy.api.topology import TopologyBuilder

class WordSpout(Spout):
    outputs = ['word']
    def next_tuple(self):
        self.emit(['egret'])

class CountBolt(Bolt):
    outputs = ['word', 'count']
    def process(self, tup):
        pass

if __name__ == '__main__':
    builder = TopologyBuilder('heronpy-word-count')
    word = builder.add_spout('word', WordSpout, par=2)
    count = builder.add_bolt('count', CountBolt, par=3, inputs={word: Grouping.fields('word')},
                             config={'topology.tick.tuple.freq.secs': 5})
    builder.add_bolt('sink', CountBolt, par=1, inputs={count: Grouping.ALL})
    builder.set_config({'topology.reliability.mode': 'ATLEAST_ONCE', 'some.python.object': object()})
    builder.build_and_submit()
