//! Exclamation, Heron's first example: a chain of bolts. `word` emits words, `exclaim1` appends "!!!", `exclaim2`
//! appends "!!!" again.

use std::collections::VecDeque;

use egret::*;

use crate::SplitMix;

pub struct TestWordSpout {
    rng: SplitMix,
}

impl TestWordSpout {
    pub const WORDS: [&'static str; 5] = ["nathan", "mike", "jackson", "golda", "bertels"];
}

impl Spout for TestWordSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        out.emit((Self::WORDS[self.rng.below(Self::WORDS.len())],));
    }
}

/// Appends "!!!" and keeps the last few results it produced.
#[derive(Default)]
pub struct ExclamationBolt {
    pub recent: VecDeque<String>,
    pub executed: u64,
}

impl BasicBolt for ExclamationBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let exclaimed = format!("{}!!!", tuple.get_str("word")?);
        out.emit((exclaimed.as_str(),));
        self.executed += 1;
        if self.recent.len() == 5 {
            self.recent.pop_front();
        }
        self.recent.push_back(exclaimed);
        Ok(())
    }
}

pub fn topology(parallelism: u32) -> Result<Topology, TopologyErrors> {
    let mut b = TopologyBuilder::new("exclamation");
    let seed = std::sync::atomic::AtomicU64::new(7);
    b.set_spout("word", parallelism, move || TestWordSpout {
        rng: SplitMix(seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
    });
    b.set_basic_bolt("exclaim1", parallelism, ExclamationBolt::default)
        .shuffle_grouping("word");
    b.set_basic_bolt("exclaim2", parallelism, ExclamationBolt::default)
        .shuffle_grouping("exclaim1");
    b.build()
}
