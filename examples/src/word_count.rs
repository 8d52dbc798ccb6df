//! Word count, Heron's example topology: a spout emits random words from a fixed dictionary, a fields grouping on
//! the word sends every occurrence of a word to the same counting task, which keeps the counts.

use std::sync::Arc;
use std::time::Instant;

use egret::*;

use crate::SplitMix;

/// Emits random words from a dictionary, optionally at a capped rate and with message ids (so that under
/// at-least-once every word is tracked; this spout does not replay).
pub struct WordSpout {
    words: Arc<Vec<String>>,
    rng: SplitMix,
    /// Tuples per second for this task; `None` = as fast as possible.
    rate: Option<f64>,
    tracked: bool,
    started: Option<Instant>,
    emitted: u64,
    pub acked: u64,
    pub failed: u64,
}

impl WordSpout {
    pub fn new(words: Arc<Vec<String>>, seed: u64) -> Self {
        WordSpout {
            words,
            rng: SplitMix(seed),
            rate: None,
            tracked: false,
            started: None,
            emitted: 0,
            acked: 0,
            failed: 0,
        }
    }

    pub fn with_rate(mut self, per_second: Option<f64>) -> Self {
        self.rate = per_second;
        self
    }

    /// Emit with message ids, so acking tracks every word.
    pub fn tracked(mut self, tracked: bool) -> Self {
        self.tracked = tracked;
        self
    }
}

impl Spout for WordSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            if self.emitted as f64 >= started.elapsed().as_secs_f64() * rate {
                return;
            }
        }
        let word = self.words[self.rng.below(self.words.len())].as_str();
        if self.tracked {
            out.emit_with_id(self.emitted, (word,));
        } else {
            out.emit((word,));
        }
        self.emitted += 1;
    }

    fn ack(&mut self, _id: MessageId) {
        self.acked += 1;
    }

    fn fail(&mut self, _id: MessageId) {
        self.failed += 1;
    }
}

/// Counts words. Under at-least-once it acks every input.
#[derive(Default)]
pub struct CountBolt {
    pub counts: foldhash::HashMap<String, u64>,
}

impl Bolt for CountBolt {
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        match tuple.get_str(0) {
            Ok(word) => {
                match self.counts.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        self.counts.insert(word.to_owned(), 1);
                    }
                }
                out.ack(tuple);
            }
            Err(e) => {
                out.report_error(&e);
                out.fail(tuple);
            }
        }
    }
}

/// `n` random words of 20 characters from `0-9a-z`, like Heron's `WordCountTopology`.
pub fn random_dictionary(n: usize, seed: u64) -> Vec<String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| {
            (0..20)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
                .collect()
        })
        .collect()
}

/// A readable dictionary for the demo.
pub fn english_dictionary() -> Vec<String> {
    "the quick brown fox jumps over lazy dog egret heron storm flink stream tuple spout bolt grouping \
     river water bird wing feather lake marsh reed fish catch wade nest flight sky cloud rain wind"
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Options of the word count topology.
#[derive(Debug, Clone)]
pub struct WordCountOptions {
    pub spouts: u32,
    pub bolts: u32,
    pub words: Arc<Vec<String>>,
    pub reliability: ReliabilityMode,
    /// Total emit rate over all spout tasks; `None` = unlimited.
    pub rate: Option<f64>,
    pub config: Config,
}

impl Default for WordCountOptions {
    fn default() -> Self {
        WordCountOptions {
            spouts: 1,
            bolts: 1,
            words: Arc::new(english_dictionary()),
            reliability: ReliabilityMode::AtMostOnce,
            rate: None,
            config: Config::new(),
        }
    }
}

/// `word` (WordSpout) --fields(word)--> `count` (CountBolt).
pub fn topology(o: &WordCountOptions) -> Result<Topology, TopologyErrors> {
    let mut b = TopologyBuilder::new("word-count");
    let mut config = o.config.clone();
    config.set(keys::RELIABILITY_MODE, o.reliability.as_str());
    b.set_config(config);
    let (words, tracked) = (
        Arc::clone(&o.words),
        o.reliability == ReliabilityMode::AtLeastOnce,
    );
    let rate = o.rate.map(|r| r / o.spouts.max(1) as f64);
    let seed = std::sync::atomic::AtomicU64::new(1);
    b.set_spout("word", o.spouts, move || {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WordSpout::new(Arc::clone(&words), s)
            .with_rate(rate)
            .tracked(tracked)
    });
    b.set_bolt("count", o.bolts, CountBolt::default)
        .fields_grouping("word", ["word"]);
    b.build()
}
