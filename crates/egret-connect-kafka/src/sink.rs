//! The Kafka sink: a bolt that produces each tuple as a record of a topic, in batches.
//!
//! The record's value is the tuple's field `value_field` (a string or bytes), its key the field `key_field` if
//! configured (a null key is allowed). A keyed record goes to partition `FNV-1a(key) % partitions`, so one key always
//! lands in the same partition; records without a key are spread round robin.
//!
//! Records are buffered per partition (an [`egret_api::SinkBatch`] each); when a partition's batch holds
//! `batch_records` records or its oldest is `batch_interval` old (checked on every tuple and tick tuple), or a
//! checkpoint is saved, every buffered batch is produced. The producer is rskafka's plain producer:
//! **not idempotent** (rskafka 0.6.0 sends producer id −1 and has no `InitProducerId`), and not transactional (the
//! broker available here, tansu 0.6.0, does not answer `EndTxn` either).
//!
//! - **at-most-once**: tuples are acked at once; a batch that cannot be produced is dropped (counted in
//!   `kafka-sink-records-dropped`).
//! - **at-least-once**: a tuple is acked only after the broker acknowledged its batch; a batch that fails (the broker
//!   went away, timed out) fails its tuples, so they replay. A batch whose acknowledgement was lost may be written
//!   twice.
//! - **effectively-once**: every buffered record is produced at each checkpoint's `pre_save` (retried with back-off
//!   until the broker takes it, so a saved checkpoint never misses a record); after a rollback the records produced
//!   since the restored checkpoint are produced again. So the topic holds each record **at least once**, not exactly
//!   once: exactly-once output needs Kafka transactions.
//!
//! A broker that goes away is retried with back-off (100 ms doubling to `retry_max`), counted in
//! `kafka-sink-retries`, `kafka-sink-connected` 0 meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use egret_api::metrics::{Counter, Gauge};
use egret_api::value::ValueRef;
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OwnedTuple, ReliabilityMode, SinkBatch, Stateful, TopologyContext, Tuple,
    UserError,
};
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;

use crate::client::{Backoff, KafkaError, TopicClient, fnv1a};

/// Where and how a [`KafkaSink`] writes.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    /// The field holding the record's value (a string or bytes).
    pub value_field: String,
    /// The field holding the record's key, if records have keys.
    pub key_field: Option<String>,
    pub batch_records: usize,
    pub batch_interval: Duration,
    pub call_timeout: Duration,
    pub retry_max: Duration,
}

impl KafkaSinkConfig {
    pub fn new(
        brokers: impl IntoIterator<Item = impl Into<String>>,
        topic: impl Into<String>,
        value_field: impl Into<String>,
    ) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into_iter().map(Into::into).collect(),
            topic: topic.into(),
            value_field: value_field.into(),
            key_field: None,
            batch_records: 500,
            batch_interval: Duration::from_millis(100),
            call_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn key_field(mut self, field: impl Into<String>) -> Self {
        self.key_field = Some(field.into());
        self
    }

    pub fn batch(mut self, records: usize, interval: Duration) -> Self {
        self.batch_records = records.max(1);
        self.batch_interval = interval;
        self
    }

    pub fn retry_max(mut self, max: Duration) -> Self {
        self.retry_max = max;
        self
    }

    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
}

/// A record (key, value) and its tuple, before the partitions are known.
type Unplaced = (Option<Vec<u8>>, Vec<u8>, Option<OwnedTuple>);

struct Metrics {
    written: Counter,
    dropped: Counter,
    retries: Counter,
    connected: Gauge,
}

/// The Kafka sink bolt (see the module documentation).
pub struct KafkaSink {
    config: KafkaSinkConfig,
    mode: ReliabilityMode,
    client: Option<TopicClient>,
    /// Partition ids and their clients, once connected.
    partitions: Vec<(i32, Option<PartitionClient>)>,
    round_robin: usize,
    /// Buffered records per partition index, with the tuples to ack once they are produced (at-least-once).
    batches: BTreeMap<usize, SinkBatch<Record>>,
    /// Records of tuples that came before the partitions were known: placed when connected.
    unplaced: Vec<Unplaced>,
    backoff: Backoff,
    metrics: Option<Metrics>,
}

impl KafkaSink {
    pub fn new(config: KafkaSinkConfig) -> Self {
        let backoff = Backoff::new(config.retry_max);
        KafkaSink {
            config,
            mode: ReliabilityMode::AtMostOnce,
            client: None,
            partitions: Vec::new(),
            round_robin: 0,
            batches: BTreeMap::new(),
            unplaced: Vec::new(),
            backoff,
            metrics: None,
        }
    }

    /// Records buffered, not produced yet.
    pub fn buffered(&self) -> usize {
        self.batches.values().map(SinkBatch::len).sum::<usize>() + self.unplaced.len()
    }

    fn field(tuple: &Tuple<'_>, name: &str) -> Result<Option<Vec<u8>>, KafkaError> {
        match tuple.get(name) {
            Ok(ValueRef::Str(s)) => Ok(Some(s.as_bytes().to_vec())),
            Ok(ValueRef::Bytes(b)) => Ok(Some(b.to_vec())),
            Ok(ValueRef::Null) => Ok(None),
            _ => Err(KafkaError::MissingField(name.to_string())),
        }
    }

    /// Connects and lists the partitions if needed.
    fn connect(&mut self) -> Result<(), KafkaError> {
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        if !self.partitions.is_empty() && client.connected() {
            return Ok(());
        }
        let ids = client.partitions()?;
        if ids.len() != self.partitions.len() {
            // Buffered records keep the partition they were given; a topic that grew gets its new partitions' share
            // of the records from now on.
            tracing::info!(partitions = ?ids, "kafka sink: partitions");
            self.partitions = ids.into_iter().map(|id| (id, None)).collect();
        }
        for (key, value, anchor) in std::mem::take(&mut self.unplaced) {
            self.place(key, value, anchor);
        }
        Ok(())
    }

    fn place(&mut self, key: Option<Vec<u8>>, value: Vec<u8>, anchor: Option<OwnedTuple>) {
        if self.partitions.is_empty() {
            self.unplaced.push((key, value, anchor));
            return;
        }
        let n = self.partitions.len();
        let index = match &key {
            Some(k) => (fnv1a(k) % n as u64) as usize,
            None => {
                self.round_robin = (self.round_robin + 1) % n;
                self.round_robin
            }
        };
        let (records, interval) = (self.config.batch_records, self.config.batch_interval);
        let record = Record {
            key,
            value: Some(value),
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
        };
        self.batches
            .entry(index)
            .or_insert_with(|| SinkBatch::new(records, interval))
            .push_with(record, anchor);
    }

    /// Produces every buffered batch. Acks (at-least-once) what the broker acknowledged; on failure fails
    /// (at-least-once: they replay) or drops (at-most-once) the rest.
    fn flush(&mut self, out: &mut BoltCollector<'_>) {
        let result = self.produce_all(Some(&mut *out));
        if result.is_ok() {
            self.backoff.reset();
        }
        if let Err(e) = &result {
            let wait = self.backoff.failed();
            tracing::warn!(error = %e, retry_in = ?wait, "kafka sink: produce failed");
            out.report_error(e);
            if let Some(c) = self.client.as_mut() {
                c.disconnect();
            }
            for p in &mut self.partitions {
                p.1 = None;
            }
            if let Some(m) = &self.metrics {
                m.retries.incr();
                m.connected.set(0.0);
            }
            let lost = self.buffered();
            for batch in self.batches.values_mut() {
                batch.drop_items();
                batch.failed(out);
            }
            for (_, _, t) in std::mem::take(&mut self.unplaced) {
                if let Some(t) = t {
                    out.fail(&t);
                }
            }
            if self.mode == ReliabilityMode::AtMostOnce
                && let Some(m) = &self.metrics
            {
                m.dropped.incr_by(lost as u64);
            }
        }
    }

    /// Produces every buffered batch, acking (with `out`: at-least-once) the tuples of each once the broker
    /// acknowledged it; stops at the first failure, the rest staying buffered.
    fn produce_all(&mut self, mut out: Option<&mut BoltCollector<'_>>) -> Result<(), KafkaError> {
        self.connect()?;
        let indexes: Vec<usize> = self
            .batches
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(&i, _)| i)
            .collect();
        for index in indexes {
            let Some(client) = self.client.as_ref() else {
                return Ok(());
            };
            let (Some((id, pc)), Some(batch)) = (self.partitions.get_mut(index), self.batches.get_mut(&index)) else {
                continue;
            };
            if pc.is_none() {
                *pc = Some(client.partition(*id)?);
            }
            let Some(pc) = pc.as_ref() else { continue };
            let records = batch.items().to_vec();
            let n = records.len();
            client.call(pc.produce(records, Compression::NoCompression))?;
            batch.drop_items();
            if let Some(out) = out.as_deref_mut() {
                batch.written(out);
            }
            if let Some(m) = &self.metrics {
                m.written.incr_by(n as u64);
            }
        }
        if let Some(m) = &self.metrics {
            m.connected.set(1.0);
        }
        Ok(())
    }
}

impl Bolt for KafkaSink {
    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.mode = ctx.config().reliability_mode()?;
        self.client = Some(TopicClient::new(
            self.config.brokers.clone(),
            self.config.topic.clone(),
            self.config.call_timeout,
        )?);
        self.metrics = Some(Metrics {
            written: ctx.register_counter("kafka-sink-records-written", Duration::from_secs(1))?,
            dropped: ctx.register_counter("kafka-sink-records-dropped", Duration::from_secs(1))?,
            retries: ctx.register_counter("kafka-sink-retries", Duration::from_secs(1))?,
            connected: ctx.register_gauge("kafka-sink-connected", Duration::from_secs(1))?,
        });
        // A wrong address or a missing topic is reported here with the broker's answer; a broker that is merely
        // away is retried later.
        match self.connect() {
            Ok(()) => {}
            Err(e @ KafkaError::MissingTopic { .. }) => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "kafka sink: broker not reachable yet; retrying later"),
        }
        tracing::info!(topic = %self.config.topic, mode = self.mode.as_str(), "kafka sink: prepared");
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if !tuple.is_tick() {
            let value = Self::field(tuple, &self.config.value_field);
            let key = match &self.config.key_field {
                Some(k) => Self::field(tuple, k),
                None => Ok(None),
            };
            match (key, value) {
                (Ok(key), Ok(value)) => {
                    let anchor = (self.mode == ReliabilityMode::AtLeastOnce).then(|| tuple.to_owned_tuple());
                    if anchor.is_none() {
                        out.ack(tuple);
                    }
                    self.place(key, value.unwrap_or_default(), anchor);
                }
                (Err(e), _) | (_, Err(e)) => {
                    // Replaying it would fail the same way.
                    out.report_error(&e);
                    out.ack(tuple);
                }
            }
        }
        // While the broker is away (back-off), tuples wait in the buffer (bounded by max.spout.pending upstream).
        if self.mode != ReliabilityMode::EffectivelyOnce
            && self.backoff.ready()
            && (!self.unplaced.is_empty() || self.batches.values().any(SinkBatch::is_due))
        {
            self.flush(out);
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for KafkaSink {
    fn init_state(&mut self, _restored: Option<&[u8]>) -> Result<(), UserError> {
        // Records buffered after the restored cut are produced again by the replay.
        self.batches.clear();
        self.unplaced.clear();
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, _out: &mut Vec<u8>) -> Result<(), UserError> {
        // The checkpoint must not complete while records before its cut are only in memory: produce them, waiting
        // for the broker (with back-off) as long as it takes. A failure here fails the checkpoint instead.
        let deadline = Instant::now() + self.config.retry_max.max(Duration::from_secs(1)) * 6;
        loop {
            if self.buffered() == 0 {
                return Ok(());
            }
            self.backoff.reset();
            match self.produce_all(None) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(e) => {
                    let wait = self.backoff.failed();
                    tracing::warn!(error = %e, retry_in = ?wait, "kafka sink: produce at checkpoint failed");
                    if let Some(c) = self.client.as_mut() {
                        c.disconnect();
                    }
                    for p in &mut self.partitions {
                        p.1 = None;
                    }
                    if let Some(m) = &self.metrics {
                        m.retries.incr();
                        m.connected.set(0.0);
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }
}
