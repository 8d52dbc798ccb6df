"""Heron's example WordCountTopology (heron/examples/src/python/word_count_topology.py), written against heronpy
only: ``word_count_topology.py NAME [--out DIR] [--words-per-task N] [--containers K] [--reliability MODE]``."""

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
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args()

    builder = TopologyBuilder(name=args.name)
    word_spout = builder.add_spout(
        "word_spout", WordSpout, par=args.parallelism, config={"wordcount.words.per.task": args.words_per_task}
    )
    bolt_config = {constants.TOPOLOGY_TICK_TUPLE_FREQ_SECS: 1}
    if args.out:
        bolt_config["wordcount.out.dir"] = args.out
    builder.add_bolt(
        "count_bolt", CountBolt, par=args.parallelism, inputs={word_spout: Grouping.fields("word")}, config=bolt_config
    )
    builder.set_config(
        {
            constants.TOPOLOGY_RELIABILITY_MODE: args.reliability,
            constants.TOPOLOGY_STMGRS: args.containers,
        }
    )
    builder.build_and_submit()
