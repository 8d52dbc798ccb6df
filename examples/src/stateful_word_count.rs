//! Stateful word count: effectively-once end to end. The spout reads a finite, replayable list of sentences and keeps
//! its position in its checkpointed state; `split` emits each word; `count` keeps its counts in a
//! [`KeyedState`]. After any failure every task rolls back to the newest complete checkpoint (the spout rewinds to
//! the position it saved, the counters to the counts they saved), so the final counts are exact: nothing lost,
//! nothing counted twice. Under at-least-once the same topology replays failed sentences and over-counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use egret::*;

/// Emits its share of the sentences (those whose index is its task index modulo the parallelism), in order; its
/// state is how many of them it has emitted.
pub struct SentenceSpout {
    sentences: Arc<Vec<String>>,
    task_index: usize,
    tasks: usize,
    /// The next of this task's sentences to emit (its `n`-th is sentence `n * tasks + task_index`).
    next: u64,
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
            task_index: 0,
            tasks: 1,
            next: 0,
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
}

/// Sentences emitted per `next_tuple` call.
const PER_CALL: usize = 16;

impl Spout for SentenceSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["sentence"]);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task_index = ctx.component_index() as usize;
        self.tasks = ctx.parallelism().max(1) as usize;
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
            self.emitted_since_open += 1;
            let index = match self.replay.pop() {
                Some(id) => id as usize,
                None => {
                    let index = self.next as usize * self.tasks + self.task_index;
                    if index >= self.sentences.len() {
                        return;
                    }
                    self.next += 1;
                    index
                }
            };
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
        self.next = match restored {
            None => 0,
            Some(b) => u64::from_le_bytes(
                b.try_into()
                    .map_err(|_| format!("a sentence spout's state is 8 bytes, not {}", b.len()))?,
            ),
        };
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&self.next.to_le_bytes());
        Ok(())
    }
}

/// Splits sentences into words.
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
