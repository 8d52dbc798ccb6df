"""Heron's example WordCountTopology (heron/examples/src/python/word_count_topology.py), written against heronpy
only: ``word_count_topology.py NAME [--out DIR] [--words-per-task N] [--containers K] [--reliability MODE]
[--spouts N] [--bolts N] [--spout-name word_spout] [--bolt-name count_bolt]`` (``egret-bench wordcount --language
python`` names the components as the Rust word count does)."""

import argparse

import heronpy.api.api_constants as constants
from heronpy.api.stream import Grouping
from heronpy.api.topology import TopologyBuilder

from count_bolt import CountBolt
from word_spout import WordSpout

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--out", default=None)
    parser.add_argument("--words-per-task", type=int, default=0)
    parser.add_argument("--containers", type=int, default=1)
    parser.add_argument("--reliability", default=constants.TopologyReliabilityMode.ATLEAST_ONCE)
    parser.add_argument("--spouts", type=int, default=2)
    parser.add_argument("--bolts", type=int, default=2)
    parser.add_argument("--spout-name", default="word_spout")
    parser.add_argument("--bolt-name", default="count_bolt")
    args = parser.parse_args()

    builder = TopologyBuilder(name=args.name)
    word_spout = builder.add_spout(
        args.spout_name, WordSpout, par=args.spouts, config={"wordcount.words.per.task": args.words_per_task}
    )
    bolt_config = {constants.TOPOLOGY_TICK_TUPLE_FREQ_SECS: 1}
    if args.out:
        bolt_config["wordcount.out.dir"] = args.out
    builder.add_bolt(
        args.bolt_name, CountBolt, par=args.bolts, inputs={word_spout: Grouping.fields("word")}, config=bolt_config
    )
    builder.set_config(
        {
            constants.TOPOLOGY_RELIABILITY_MODE: args.reliability,
            constants.TOPOLOGY_STMGRS: args.containers,
        }
    )
    builder.build_and_submit()
