//! The batch a sink bolt writes to an external system (a stream, a topic, a table): what the connectors' sinks
//! share. It owns the buffered items, the tuples to ack or fail with them under at-least-once, and when the batch is
//! due (full, or its oldest item old enough). Writing is the sink's own business: it takes the items, writes them,
//! then says how it went ([`SinkBatch::written`], [`SinkBatch::failed`], or [`SinkBatch::keep`] to hold them for the
//! next attempt or a checkpoint).
//!
//! Under at-least-once a tuple is acked only once its item is written, and failed (so its spout replays it) when the
//! write fails; under the other modes it is acked when it arrives (at-most-once: a failed batch is lost;
//! effectively-once: the sink keeps unwritten items in its checkpoint).

use std::time::{Duration, Instant};

use crate::{BoltCollector, OwnedTuple, ReliabilityMode, Tuple};

/// See the module documentation.
#[derive(Debug)]
pub struct SinkBatch<T> {
    items: Vec<T>,
    /// At-least-once: the tuples of the items pushed since the last `written` or `failed`.
    anchors: Vec<OwnedTuple>,
    oldest: Option<Instant>,
    max_items: usize,
    max_age: Duration,
}

impl<T> SinkBatch<T> {
    /// A batch due at `max_items` items (at least 1) or when its oldest item is `max_age` old.
    pub fn new(max_items: usize, max_age: Duration) -> Self {
        SinkBatch {
            items: Vec::new(),
            anchors: Vec::new(),
            oldest: None,
            max_items: max_items.max(1),
            max_age,
        }
    }

    /// Adds `tuple`'s item. Under at-least-once the tuple is kept until [`written`](Self::written) or
    /// [`failed`](Self::failed); under the other modes it is acked now.
    pub fn push(&mut self, item: T, tuple: &Tuple<'_>, mode: ReliabilityMode, out: &mut BoltCollector<'_>) {
        if mode == ReliabilityMode::AtLeastOnce {
            self.push_with(item, Some(tuple.to_owned_tuple()));
        } else {
            out.ack(tuple);
            self.push_with(item, None);
        }
    }

    /// Adds an item with the tuple the sink kept for it, acked or failed with the batch (`None`: nothing to answer
    /// for, e.g. the tuple was acked already).
    pub fn push_with(&mut self, item: T, tuple: Option<OwnedTuple>) {
        self.items.push(item);
        self.oldest.get_or_insert_with(Instant::now);
        self.anchors.extend(tuple);
    }

    /// Whether the batch should be written now: it is full, or its oldest item is old enough.
    pub fn is_due(&self) -> bool {
        self.items.len() >= self.max_items || self.oldest.is_some_and(|t| t.elapsed() >= self.max_age)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Takes the items out to write them; their tuples stay until [`written`](Self::written) or
    /// [`failed`](Self::failed).
    pub fn take(&mut self) -> Vec<T> {
        self.oldest = None;
        std::mem::take(&mut self.items)
    }

    /// Puts back items that were taken and not written, before any pushed since: written with the next batch or
    /// saved with the next checkpoint. They count as new for [`is_due`](Self::is_due).
    pub fn keep(&mut self, mut items: Vec<T>) {
        if items.is_empty() {
            return;
        }
        items.append(&mut self.items);
        self.items = items;
        self.oldest = Some(Instant::now());
    }

    /// Drops the items (not written; e.g. at-most-once after a failed write). Returns how many.
    pub fn drop_items(&mut self) -> usize {
        self.oldest = None;
        std::mem::take(&mut self.items).len()
    }

    /// The items taken were written: acks their tuples.
    pub fn written(&mut self, out: &mut BoltCollector<'_>) {
        for t in self.anchors.drain(..) {
            out.ack(&t);
        }
    }

    /// The items taken were not written: fails their tuples, whose spouts replay them.
    pub fn failed(&mut self, out: &mut BoltCollector<'_>) {
        for t in self.anchors.drain(..) {
            out.fail(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::collector::{EmitRequest, EmitSink};
    use crate::value::{Encoder, Values};
    use crate::{AckState, Fields, Roots, StreamSource, TaskId};

    /// Counts what the batch answers for its tuples.
    #[derive(Default)]
    struct Answers {
        enc: Encoder,
        acked: Vec<String>,
        failed: Vec<String>,
    }

    fn word(state: &AckState<'_>) -> String {
        Tuple::new(state.source, state.src_task, state.values, state.key, state.roots)
            .get_str("word")
            .unwrap_or_default()
            .to_string()
    }

    impl EmitSink for Answers {
        fn encoder(&mut self) -> &mut Encoder {
            &mut self.enc
        }
        fn emit(&mut self, _request: EmitRequest<'_>) {}
        fn ack(&mut self, tuple: AckState<'_>) {
            self.acked.push(word(&tuple));
        }
        fn fail(&mut self, tuple: AckState<'_>) {
            self.failed.push(word(&tuple));
        }
        fn report_error(&mut self, _error: &dyn std::error::Error) {}
    }

    /// Pushes each word as its own item.
    fn push_words(batch: &mut SinkBatch<String>, words: &[&str], mode: ReliabilityMode, answers: &mut Answers) {
        let source = Arc::new(StreamSource {
            component: "words".into(),
            stream: "default".into(),
            fields: Fields::new(["word"]),
        });
        for w in words {
            let mut enc = Encoder::new();
            (*w,).encode_all(&mut enc);
            let t = Tuple::new(&source, TaskId(1), enc.bytes(), 7, Roots::default());
            batch.push(w.to_string(), &t, mode, &mut BoltCollector::new(answers));
        }
    }

    #[test]
    fn at_least_once_acks_written_items_and_fails_the_others() {
        let mut answers = Answers::default();
        let mut batch = SinkBatch::new(3, Duration::from_secs(3600));
        push_words(&mut batch, &["a", "b"], ReliabilityMode::AtLeastOnce, &mut answers);
        assert!(!batch.is_due() && answers.acked.is_empty(), "acked only once written");
        push_words(&mut batch, &["c"], ReliabilityMode::AtLeastOnce, &mut answers);
        assert!(batch.is_due(), "full");
        assert_eq!(batch.take(), ["a", "b", "c"]);
        assert!(batch.is_empty() && !batch.is_due());
        batch.written(&mut BoltCollector::new(&mut answers));
        assert_eq!(answers.acked, ["a", "b", "c"]);
        push_words(&mut batch, &["d"], ReliabilityMode::AtLeastOnce, &mut answers);
        batch.take();
        batch.failed(&mut BoltCollector::new(&mut answers));
        assert_eq!(answers.failed, ["d"]);
        assert_eq!(answers.acked.len(), 3);
    }

    #[test]
    fn other_modes_ack_at_once_and_kept_items_come_first() {
        let mut answers = Answers::default();
        let mut batch = SinkBatch::new(10, Duration::ZERO);
        push_words(&mut batch, &["a", "b"], ReliabilityMode::EffectivelyOnce, &mut answers);
        assert_eq!(answers.acked, ["a", "b"]);
        assert!(batch.is_due(), "its oldest item is max_age old");
        let taken = batch.take();
        push_words(&mut batch, &["c"], ReliabilityMode::EffectivelyOnce, &mut answers);
        batch.keep(taken);
        assert_eq!(batch.items(), ["a", "b", "c"]);
        batch.failed(&mut BoltCollector::new(&mut answers));
        assert!(answers.failed.is_empty(), "no tuple waits outside at-least-once");
        assert_eq!(batch.drop_items(), 3);
        assert!(batch.is_empty() && !batch.is_due());
        batch.push_with("restored".to_string(), None);
        assert_eq!(batch.len(), 1);
    }
}
