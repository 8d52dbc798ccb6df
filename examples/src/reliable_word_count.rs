//! Reliable word count: at-least-once end to end. A spout reads a finite list of sentences and replays any
//! sentence whose tree fails or times out; `split` emits each word anchored on its sentence; `count` fails a
//! fraction of its inputs on purpose (and silently drops another fraction, which only the timeout catches).
//! Because `count` remembers which (sentence, position) it already counted, replays do not double-count, and the
//! final counts are exact.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use egret::*;

use crate::SplitMix;

/// Emits each sentence once with its index as message id, and again whenever it fails.
pub struct SentenceSpout {
    sentences: Arc<Vec<String>>,
    next: usize,
    replay: VecDeque<MessageId>,
    pub acked: HashSet<MessageId>,
    pub emits: u64,
    pub fails: u64,
}

impl SentenceSpout {
    pub fn new(sentences: Arc<Vec<String>>) -> Self {
        SentenceSpout {
            sentences,
            next: 0,
            replay: VecDeque::new(),
            acked: HashSet::new(),
            emits: 0,
            fails: 0,
        }
    }
}

impl Spout for SentenceSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "sentence"]);
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let id = match self.replay.pop_front() {
            Some(id) => id,
            None if self.next < self.sentences.len() => {
                self.next += 1;
                (self.next - 1) as MessageId
            }
            None => return,
        };
        self.emits += 1;
        out.emit_with_id(id, (id as i64, self.sentences[id as usize].as_str()));
    }

    fn ack(&mut self, id: MessageId) {
        self.acked.insert(id);
    }

    fn fail(&mut self, id: MessageId) {
        self.fails += 1;
        self.replay.push_back(id);
    }
}

/// Splits a sentence into (id, position, word) tuples, anchored on the sentence.
pub struct SplitBolt;

impl BasicBolt for SplitBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "pos", "word"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let id = tuple.get_i64("id")?;
        for (pos, word) in tuple.get_str("sentence")?.split_whitespace().enumerate() {
            out.emit((id, pos as i64, word));
        }
        Ok(())
    }
}

/// Counts words exactly once per (sentence, position), failing or dropping some inputs on purpose.
pub struct FlakyCountBolt {
    rng: SplitMix,
    fail_fraction: f64,
    drop_fraction: f64,
    seen: HashSet<(i64, i64)>,
    pub counts: BTreeMap<String, u64>,
    pub failed_on_purpose: u64,
    pub dropped_on_purpose: u64,
}

impl FlakyCountBolt {
    pub fn new(seed: u64, fail_fraction: f64, drop_fraction: f64) -> Self {
        FlakyCountBolt {
            rng: SplitMix(seed),
            fail_fraction,
            drop_fraction,
            seen: HashSet::new(),
            counts: BTreeMap::new(),
            failed_on_purpose: 0,
            dropped_on_purpose: 0,
        }
    }
}

impl Bolt for FlakyCountBolt {
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let roll = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if roll < self.fail_fraction {
            self.failed_on_purpose += 1;
            return out.fail(tuple);
        }
        if roll < self.fail_fraction + self.drop_fraction {
            // Neither ack nor fail: only the message timeout can recover this tuple.
            self.dropped_on_purpose += 1;
            return;
        }
        let (id, pos, word) = match (tuple.get_i64("id"), tuple.get_i64("pos"), tuple.get_str("word")) {
            (Ok(id), Ok(pos), Ok(word)) => (id, pos, word),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                out.report_error(&e);
                return out.fail(tuple);
            }
        };
        if self.seen.insert((id, pos)) {
            *self.counts.entry(word.to_string()).or_default() += 1;
        }
        out.ack(tuple);
    }
}

/// The input: `n` sentences of 3-8 words from a small vocabulary.
pub fn sentences(n: usize, seed: u64) -> Vec<String> {
    let words = crate::word_count::english_dictionary();
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| {
            let len = 3 + rng.below(6);
            (0..len)
                .map(|_| words[rng.below(words.len())].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The counts a correct run must end with.
pub fn expected_counts(sentences: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for s in sentences {
        for w in s.split_whitespace() {
            *counts.entry(w.to_string()).or_default() += 1;
        }
    }
    counts
}

/// `sentence` --shuffle--> `split` --fields(word)--> `count`, at-least-once.
pub fn topology(
    sentences: Arc<Vec<String>>,
    counters: u32,
    fail_fraction: f64,
    drop_fraction: f64,
    timeout_secs: u64,
) -> Result<Topology, TopologyErrors> {
    let mut b = TopologyBuilder::new("reliable-word-count");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .set(keys::MESSAGE_TIMEOUT_SECS, timeout_secs)
        .set(keys::MAX_SPOUT_PENDING, 1000);
    b.set_spout("sentence", 1, move || SentenceSpout::new(Arc::clone(&sentences)));
    b.set_basic_bolt("split", 2, || SplitBolt).shuffle_grouping("sentence");
    let seed = std::sync::atomic::AtomicU64::new(11);
    b.set_bolt("count", counters, move || {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FlakyCountBolt::new(s, fail_fraction, drop_fraction)
    })
    .fields_grouping("split", ["word"]);
    b.build()
}
