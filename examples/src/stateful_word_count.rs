//! Stateful word count: effectively-once end to end. The spout reads a finite, replayable list of sentences and keeps
//! its position in its checkpointed state; `split` emits each word; `count` keeps its counts in a
//! [`KeyedState`]. After any failure every task rolls back to the newest complete checkpoint (the spout rewinds to
//! the position it saved, the counters to the counts they saved), so the final counts are exact: nothing lost,
//! nothing counted twice. Under at-least-once the same topology replays failed sentences and over-counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use egret::*;

/// How many partitions the sentences are dealt into (sentence `i` is in partition `i % PARTITIONS`), like the
/// partitions of a Kafka topic: each spout task reads the partitions whose key group it owns, so a rescale of the
/// spout hands partitions (and their positions) to other tasks.
pub const PARTITIONS: i64 = 16;

/// Emits the sentences of the partitions it owns, in order within each; its state is its position in each of them
/// (a [`KeyedState`] keyed by partition, so that it follows the partitions when the spout's parallelism changes).
pub struct SentenceSpout {
    sentences: Arc<Vec<String>>,
    /// The partitions this task owns.
    owned: Vec<i64>,
    /// The next sentence of each partition to emit (its `n`-th is sentence `n * PARTITIONS + partition`).
    next: KeyedState<i64, u64>,
    /// Round robin over `owned`.
    turn: usize,
    /// Under at-least-once: message ids are sentence indexes; failed ones are emitted again.
    replay: Vec<MessageId>,
    /// At most this many sentences per second (this task), counted from `open`; `None`: as fast as possible.
    rate: Option<f64>,
    opened: Option<std::time::Instant>,
    emitted_since_open: u64,
}

impl SentenceSpout {
    pub fn new(sentences: Arc<Vec<String>>) -> Self {
        SentenceSpout {
            sentences,
            owned: Vec::new(),
            next: KeyedState::new(),
            turn: 0,
            replay: Vec::new(),
            rate: None,
            opened: None,
            emitted_since_open: 0,
        }
    }

    /// Caps this task's emit rate (sentences per second), to make a run last.
    pub fn with_rate(mut self, per_second: Option<f64>) -> Self {
        self.rate = per_second;
        self
    }

    /// The next sentence index of the owned partitions, round robin; `None` when they are all done.
    fn next_index(&mut self) -> Option<usize> {
        for _ in 0..self.owned.len() {
            let p = self.owned[self.turn % self.owned.len()];
            self.turn += 1;
            let n = self.next.entry(p).or_insert(0);
            let index = (*n as i64 * PARTITIONS + p) as usize;
            if index < self.sentences.len() {
                *n += 1;
                return Some(index);
            }
        }
        None
    }
}

/// Sentences emitted per `next_tuple` call.
const PER_CALL: usize = 16;

impl Spout for SentenceSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["sentence"]);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let (index, tasks) = (ctx.component_index() as usize, ctx.parallelism().max(1) as usize);
        self.owned = (0..PARTITIONS)
            .filter(|p| egret::key_groups::select(p.key_hash(), tasks) == index)
            .collect();
        self.opened = Some(std::time::Instant::now());
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        for _ in 0..PER_CALL {
            if let (Some(rate), Some(opened)) = (self.rate, self.opened)
                && self.emitted_since_open as f64 >= opened.elapsed().as_secs_f64() * rate
            {
                return;
            }
            let index = match self.replay.pop() {
                Some(id) => id as usize,
                None => match self.next_index() {
                    Some(index) => index,
                    None => return,
                },
            };
            self.emitted_since_open += 1;
            out.emit_with_id(index as MessageId, (self.sentences[index].as_str(),));
        }
    }

    fn fail(&mut self, id: MessageId) {
        self.replay.push(id);
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for SentenceSpout {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.next = KeyedState::restore(restored)?;
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.next.save(out)?)
    }
}

pub struct SplitBolt;

impl BasicBolt for SplitBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        for word in tuple.get_str("sentence")?.split_whitespace() {
            out.emit((word,));
        }
        Ok(())
    }
}

/// Counts words in its checkpointed state.
#[derive(Default)]
pub struct CountBolt {
    pub counts: KeyedState<String, u64>,
}

impl BasicBolt for CountBolt {
    fn execute(&mut self, tuple: &Tuple<'_>, _out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let word = tuple.get_str("word")?;
        match self.counts.get_mut(word) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(word.to_string(), 1);
            }
        }
        Ok(())
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for CountBolt {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.counts = KeyedState::restore(restored)?;
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.counts.save(out)?)
    }
}

/// The counts of every counter task together.
pub fn total_counts<'a>(counters: impl IntoIterator<Item = &'a CountBolt>) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for c in counters {
        for (w, n) in c.counts.iter() {
            *all.entry(w.clone()).or_default() += n;
        }
    }
    all
}

/// `sentence` --shuffle--> `split` --fields(word)--> `count`, with checkpoints every `interval_secs` under
/// effectively-once (or under `mode`, to compare).
pub fn topology(
    sentences: Arc<Vec<String>>,
    spouts: u32,
    splitters: u32,
    counters: u32,
    interval_secs: f64,
    mode: ReliabilityMode,
) -> Result<Topology, TopologyErrors> {
    let mut b = builder(sentences, spouts, splitters, interval_secs, mode, None);
    b.set_basic_bolt("count", counters, CountBolt::default)
        .fields_grouping("split", ["word"]);
    b.build()
}

/// The topology without its counter, for a caller that brings its own `count` (fields grouping on `word` from
/// `split`); `rate` caps each spout task's sentences per second.
pub fn builder(
    sentences: Arc<Vec<String>>,
    spouts: u32,
    splitters: u32,
    interval_secs: f64,
    mode: ReliabilityMode,
    rate: Option<f64>,
) -> TopologyBuilder {
    let mut b = TopologyBuilder::new("stateful-word-count");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, interval_secs)
        .set(keys::MAX_SPOUT_PENDING, 2000);
    b.set_spout("sentence", spouts, move || {
        SentenceSpout::new(Arc::clone(&sentences)).with_rate(rate)
    });
    b.set_basic_bolt("split", splitters, || SplitBolt)
        .shuffle_grouping("sentence");
    b
}

/// Counts words in its checkpointed state and emits each new count, `(word, count)`, anchored on the word: the
/// feed of a table that keeps the latest count per word (an upsert sink) or every count once (an append-only one).
#[derive(Default)]
pub struct RunningCountBolt {
    pub counts: KeyedState<String, u64>,
}

impl BasicBolt for RunningCountBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "count"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let word = tuple.get_str("word")?;
        let n = match self.counts.get_mut(word) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.insert(word.to_string(), 1);
                1
            }
        };
        out.emit((word, n as i64));
        Ok(())
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for RunningCountBolt {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.counts = KeyedState::restore(restored)?;
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.counts.save(out)?)
    }
}

/// Splits the text of the field it names into words (e.g. `line`, from a file source).
pub struct SplitField(pub &'static str);

impl BasicBolt for SplitField {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        for word in tuple.get_str(self.0)?.split_whitespace() {
            out.emit((word,));
        }
        Ok(())
    }
}
