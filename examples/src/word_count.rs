//! Word count, Heron's example topology: a spout emits random words from a fixed dictionary, a fields grouping on
//! the word sends every occurrence of a word to the same counting task, which keeps the counts.

use std::sync::Arc;
use std::time::Instant;

use egret::*;

use crate::SplitMix;

/// Words stored back to back, so picking a random word touches two small arrays instead of a `String` header and
/// a separate heap allocation.
#[derive(Debug, Clone)]
pub struct Dictionary {
    bytes: String,
    ends: Vec<u32>,
}

impl Dictionary {
    pub fn new(words: &[String]) -> Self {
        let mut bytes = String::new();
        let mut ends = Vec::with_capacity(words.len());
        for w in words {
            bytes.push_str(w);
            ends.push(bytes.len() as u32);
        }
        Dictionary { bytes, ends }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn word(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }
}

/// Emits random words from a dictionary, optionally at a capped rate and with message ids (so that under
/// at-least-once every word is tracked; this spout does not replay).
pub struct WordSpout {
    words: Arc<Dictionary>,
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
    pub fn new(words: Arc<Dictionary>, seed: u64) -> Self {
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
        let word = self.words.word(self.rng.below(self.words.len()));
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

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

/// Under effectively-once the spout's position is its generator and emit count: after a rollback it emits the
/// same words again from there.
impl Stateful for WordSpout {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        if let Some(b) = restored {
            let (Some(rng), Some(emitted)) = (b.get(..8), b.get(8..16)) else {
                return Err(format!("a word spout's state is 16 bytes, not {}", b.len()).into());
            };
            self.rng = SplitMix(u64::from_le_bytes(rng.try_into()?));
            self.emitted = u64::from_le_bytes(emitted.try_into()?);
        }
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&self.rng.0.to_le_bytes());
        out.extend_from_slice(&self.emitted.to_le_bytes());
        Ok(())
    }
}

/// Word counts. Words of up to 23 bytes are kept inline in the table (one cache miss per lookup instead of two for
/// a `String` key), longer ones in a second map.
#[derive(Default)]
pub struct WordCounts {
    short: foldhash::HashMap<[u8; 24], u64>,
    long: foldhash::HashMap<String, u64>,
}

impl WordCounts {
    fn inline_key(word: &str) -> Option<[u8; 24]> {
        let b = word.as_bytes();
        if b.len() > 23 {
            return None;
        }
        let mut key = [0u8; 24];
        key[0] = b.len() as u8;
        key[1..=b.len()].copy_from_slice(b);
        Some(key)
    }

    pub fn add(&mut self, word: &str) {
        match Self::inline_key(word) {
            Some(key) => *self.short.entry(key).or_default() += 1,
            None => match self.long.get_mut(word) {
                Some(n) => *n += 1,
                None => {
                    self.long.insert(word.to_owned(), 1);
                }
            },
        }
    }

    pub fn get(&self, word: &str) -> u64 {
        match Self::inline_key(word) {
            Some(key) => self.short.get(&key).copied().unwrap_or(0),
            None => self.long.get(word).copied().unwrap_or(0),
        }
    }

    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends every (word, count) as `len u8 | word | count u64` (a word of up to 255 bytes).
    pub fn save(&self, out: &mut Vec<u8>) -> Result<(), UserError> {
        for (w, n) in self.iter() {
            let len = u8::try_from(w.len()).map_err(|_| format!("word of {} bytes is too long to save", w.len()))?;
            out.push(len);
            out.extend_from_slice(w.as_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        Ok(())
    }

    /// The counts [`WordCounts::save`] wrote.
    pub fn restore(mut b: &[u8]) -> Result<Self, UserError> {
        let mut counts = WordCounts::default();
        while let Some((&len, rest)) = b.split_first() {
            let len = len as usize;
            let (Some(word), Some(n)) = (rest.get(..len), rest.get(len..len + 8)) else {
                return Err("word counts state is truncated".into());
            };
            let word = std::str::from_utf8(word)?;
            let n = u64::from_le_bytes(n.try_into()?);
            match Self::inline_key(word) {
                Some(key) => {
                    counts.short.insert(key, n);
                }
                None => {
                    counts.long.insert(word.to_owned(), n);
                }
            }
            b = &rest[len + 8..];
        }
        Ok(counts)
    }

    /// Every (word, count).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        let short = self.short.iter().map(|(k, n)| {
            // Inline keys were built from a &str, so they hold UTF-8.
            (std::str::from_utf8(&k[1..=k[0] as usize]).unwrap_or(""), *n)
        });
        short.chain(self.long.iter().map(|(w, n)| (w.as_str(), *n)))
    }
}

/// Counts words. Under at-least-once it acks every input.
#[derive(Default)]
pub struct CountBolt {
    pub counts: WordCounts,
    /// Registers the user counter `words-counted` in `prepare` and increments it per word (what a production
    /// topology does; the benchmark's `--user-counter` measures its cost).
    pub user_counter: bool,
    counted: Option<egret::metrics::Counter>,
}

impl CountBolt {
    /// A bolt that also counts its words in the user counter `words-counted`.
    pub fn with_user_counter() -> Self {
        CountBolt {
            user_counter: true,
            ..Self::default()
        }
    }
}

impl Bolt for CountBolt {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        if self.user_counter {
            self.counted = Some(ctx.register_counter("words-counted", std::time::Duration::from_secs(1))?);
        }
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        match tuple.get_str(0) {
            Ok(word) => {
                self.counts.add(word);
                if let Some(c) = &self.counted {
                    c.incr();
                }
                out.ack(tuple);
            }
            Err(e) => {
                out.report_error(&e);
                out.fail(tuple);
            }
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

/// Under effectively-once the counts are checkpointed and restored.
impl Stateful for CountBolt {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.counts = restored.map_or_else(|| Ok(WordCounts::default()), WordCounts::restore)?;
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        self.counts.save(out)
    }
}

/// `n` random words of 20 characters from `0-9a-z`, like Heron's `WordCountTopology`.
pub fn random_dictionary(n: usize, seed: u64) -> Vec<String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| (0..20).map(|_| ALPHABET[rng.below(ALPHABET.len())] as char).collect())
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
    /// The counting bolt increments a user counter per word ([`CountBolt::with_user_counter`]).
    pub user_counter: bool,
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
            user_counter: false,
        }
    }
}

/// The word count per window: a source of random words as in [`streamlet_topology`], then `count`, a
/// `count_by_key_and_window` in tumbling processing-time windows of `window_ms`, whose results go to `on_result`
/// (word, window, count) in a sink of its own, `results`. The sink also records how long after its window's end each
/// result arrived, in the user histogram [`WINDOW_RESULT_LATENCY`] (seconds; the clock is the machine's wall clock,
/// which every process on one machine shares).
pub fn streamlet_window_topology(
    o: &WordCountOptions,
    window_ms: i64,
    on_result: impl Fn(String, egret::streamlet::Window, u64) + Send + Sync + Clone + 'static,
) -> Result<Topology, TopologyErrors> {
    use egret::streamlet::{Builder, WindowSpec};
    let b = Builder::new();
    let windowed =
        random_words(&b, o).count_by_key_and_window(|w: &String| w.clone(), WindowSpec::tumbling_time(window_ms));
    windowed
        .results
        .name("count")
        .parallelism(o.bolts)
        .to_sink(move || WindowResults {
            on_result: on_result.clone(),
            latency: None,
        })
        .name("results")
        .parallelism(o.bolts);
    let mut config = o.config.clone();
    config.set(keys::RELIABILITY_MODE, o.reliability.as_str());
    b.build("word-count", config)
}

/// The user histogram of [`streamlet_window_topology`]'s sink: seconds from a window's end to its result's arrival
/// (`egret_user_window_result_latency` in Prometheus).
pub const WINDOW_RESULT_LATENCY: &str = "window-result-latency";

/// Bounds of [`WINDOW_RESULT_LATENCY`]: 100 µs to 10 s, twelve per decade, so that a quantile read from the buckets
/// is within about 20 % of the true one.
pub fn window_result_latency_buckets() -> Vec<f64> {
    (0..=60).map(|i| 1e-4 * 10f64.powf(i as f64 / 12.0)).collect()
}

struct WindowResults<F> {
    on_result: F,
    latency: Option<egret::metrics::Histogram>,
}

impl<F: Fn(String, egret::streamlet::Window, u64) + Send + 'static>
    egret::streamlet::Sink<(String, egret::streamlet::Window, u64)> for WindowResults<F>
{
    fn setup(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        let buckets = window_result_latency_buckets();
        self.latency =
            Some(ctx.register_histogram(WINDOW_RESULT_LATENCY, buckets, std::time::Duration::from_secs(1))?);
        Ok(())
    }

    fn put(&mut self, (word, window, n): (String, egret::streamlet::Window, u64)) -> Result<(), UserError> {
        if let Some(h) = &self.latency {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            h.observe((now_us - window.end * 1000) as f64 / 1e6);
        }
        (self.on_result)(word, window, n);
        Ok(())
    }
}

/// The source `word` of the streamlet word counts: each task its own generator of random words from the dictionary,
/// capped at its share of the rate.
fn random_words(b: &egret::streamlet::Builder, o: &WordCountOptions) -> egret::streamlet::Streamlet<String> {
    use egret::streamlet::SourceContext;
    let words = Arc::new(Dictionary::new(&o.words));
    let rate = o.rate.map(|r| r / o.spouts.max(1) as f64);
    b.new_source_fn(move |cx: SourceContext| {
        let words = Arc::clone(&words);
        let mut rng = SplitMix(1 + cx.index as u64);
        let started = Instant::now();
        let mut emitted = 0u64;
        move || {
            if let Some(rate) = rate
                && emitted as f64 >= started.elapsed().as_secs_f64() * rate
            {
                return None;
            }
            emitted += 1;
            Some(words.word(rng.below(words.len())).to_string())
        }
    })
    .name("word")
    .parallelism(o.spouts)
}

/// The same word count written with the Streamlet API: a source `word` of random words (each task its own generator,
/// capped at its share of the rate) and `count`, a `count_by_key` on the word. Its counts are operator state, kept
/// by the words' encoded bytes; nothing consumes them, so nothing is emitted downstream (as in the spout/bolt
/// version).
pub fn streamlet_topology(o: &WordCountOptions) -> Result<Topology, TopologyErrors> {
    use egret::streamlet::Builder;
    let b = Builder::new();
    random_words(&b, o)
        .count_by_key(|w: &String| w.clone())
        .name("count")
        .parallelism(o.bolts);
    let mut config = o.config.clone();
    config.set(keys::RELIABILITY_MODE, o.reliability.as_str());
    b.build("word-count", config)
}

/// `word` (WordSpout) --fields(word)--> `count` (CountBolt).
pub fn topology(o: &WordCountOptions) -> Result<Topology, TopologyErrors> {
    let mut b = TopologyBuilder::new("word-count");
    let mut config = o.config.clone();
    config.set(keys::RELIABILITY_MODE, o.reliability.as_str());
    b.set_config(config);
    let (words, tracked) = (
        Arc::new(Dictionary::new(&o.words)),
        o.reliability == ReliabilityMode::AtLeastOnce,
    );
    let rate = o.rate.map(|r| r / o.spouts.max(1) as f64);
    let seed = std::sync::atomic::AtomicU64::new(1);
    b.set_spout("word", o.spouts, move || {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WordSpout::new(Arc::clone(&words), s).with_rate(rate).tracked(tracked)
    });
    let user_counter = o.user_counter;
    b.set_bolt("count", o.bolts, move || CountBolt {
        user_counter,
        ..CountBolt::default()
    })
    .fields_grouping("word", ["word"]);
    b.build()
}
