"""A stateful word count under effectively-once, written against heronpy only:
``stateful_word_count_topology.py NAME --out DIR --words-per-task N [--words-per-sec R] [--containers K]``."""

import argparse

import heronpy.api.api_constants as constants
from heronpy.api.stream import Grouping
from heronpy.api.topology import TopologyBuilder

from stateful_components import StatefulCountBolt, StatefulWordSpout

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--out", required=True)
    parser.add_argument("--words-per-task", type=int, required=True)
    parser.add_argument("--words-per-sec", type=int, default=0)
    parser.add_argument("--containers", type=int, default=2)
    args = parser.parse_args()

    builder = TopologyBuilder(name=args.name)
    spout = builder.add_spout(
        "word",
        StatefulWordSpout,
        par=2,
        config={"wordcount.words.per.task": args.words_per_task, "wordcount.words.per.sec": args.words_per_sec},
    )
    builder.add_bolt(
        "count",
        StatefulCountBolt,
        par=2,
        inputs={spout: Grouping.fields("word")},
        config={constants.TOPOLOGY_TICK_TUPLE_FREQ_SECS: 1, "wordcount.out.dir": args.out},
    )
    builder.set_config(
        {
            constants.TOPOLOGY_RELIABILITY_MODE: constants.TopologyReliabilityMode.EFFECTIVELY_ONCE,
            constants.TOPOLOGY_STATEFUL_CHECKPOINT_INTERVAL_SECONDS: 1,
            constants.TOPOLOGY_STMGRS: args.containers,
        }
    )
    builder.build_and_submit()
