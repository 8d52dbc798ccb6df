//! The Kafka source: a spout that emits the records of a topic's partitions.
//!
//! Partition `p` is read by the task of index `p % parallelism` (so every partition has exactly one reader; a task
//! may have none). Each task keeps, per partition, the offset of the next record to emit (its *position*):
//!
//! - **effectively-once**: the positions are the spout's checkpointed state ([`Stateful`], a [`KeyedState`] of
//!   partition → offset saved whole, so that after a rescale (`egret update`) every task gets every position and
//!   reads from there the partitions it now owns); a rollback (or a restarted task) restores them and drops whatever was fetched but not emitted, so the
//!   records are emitted again exactly from the restored checkpoint's cut.
//! - **at-least-once**: every record is emitted with a message id and kept until acked; a failed (or timed out)
//!   record is emitted again, with the same id, before any new one. The *committed* position of a partition
//!   ([`KafkaSource::committed`]) is the lowest unacked offset (or the position when none is unacked): everything
//!   below it is acked. It is kept in memory only (Egret does not use Kafka consumer groups), so a task that restarts
//!   begins again at the configured start: at least once, with duplicates.
//! - **at-most-once**: records are emitted once, untracked.
//!
//! A partition without a position starts at the configured [`StartAt`] (earliest, latest, or the first record at or
//! after a timestamp). A broker that goes away is retried with back-off (100 ms doubling to `retry_max`), counted in
//! `kafka-source-retries` with `kafka-source-connected` 0 meanwhile; positions do not move while it is away, so
//! nothing is lost. Lag per partition (high watermark − position) is the gauge `kafka-source-lag-<partition>`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use egret_api::metrics::{Counter, Gauge};
use egret_api::{
    CheckpointId, KeyedState, MessageId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector, Stateful,
    TopologyContext, UserError,
};
use rskafka::client::error::{Error as RsError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;

use crate::client::{Backoff, KafkaError, TopicClient};

/// The fields a Kafka source emits: the partition (`i64`), the record's offset (`i64`), its key (null when it has
/// none) and its value (a string, invalid UTF-8 replaced, or bytes: [`ValueFormat`]).
pub const KAFKA_SOURCE_FIELDS: [&str; 4] = ["partition", "offset", "key", "value"];

/// Records emitted per `next_tuple` call at most: the runtime gets control back often enough to send and take acks.
const RECORDS_PER_CALL: usize = 256;

/// Where a partition without a saved position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The earliest record the broker still keeps.
    Earliest,
    /// After the last record present when the partition is first read.
    Latest,
    /// The first record whose timestamp is at or after this time (milliseconds since the Unix epoch).
    TimestampMs(i64),
}

/// How keys and values are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// As strings (invalid UTF-8 replaced by U+FFFD).
    String,
    /// As bytes.
    Bytes,
}

/// Where and how a [`KafkaSource`] reads.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    pub start: StartAt,
    pub format: ValueFormat,
    /// The most record bytes one fetch asks for.
    pub fetch_max_bytes: i32,
    /// How long a fetch waits on the broker for new records when a partition is at its end. Only the first fetch of
    /// a `next_tuple` that follows one that emitted nothing waits; the others ask for what is there now.
    pub fetch_wait: Duration,
    /// The longest one call to the broker may take before it counts as failed.
    pub call_timeout: Duration,
    /// The back-off cap between attempts while the broker is away.
    pub retry_max: Duration,
}

impl KafkaSourceConfig {
    pub fn new(brokers: impl IntoIterator<Item = impl Into<String>>, topic: impl Into<String>) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into_iter().map(Into::into).collect(),
            topic: topic.into(),
            start: StartAt::Earliest,
            format: ValueFormat::String,
            fetch_max_bytes: 1 << 20,
            fetch_wait: Duration::from_millis(50),
            call_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    pub fn format(mut self, format: ValueFormat) -> Self {
        self.format = format;
        self
    }

    pub fn fetch(mut self, max_bytes: i32, wait: Duration) -> Self {
        self.fetch_max_bytes = max_bytes.max(1);
        self.fetch_wait = wait;
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

/// The offset after the partition's last record: the larger of ListOffsets(latest) and the high watermark of a fetch.
/// tansu 0.6.0 answers ListOffsets(latest) with the last batch's base offset + 1, which is too small when the last
/// batch has more than one record; the high watermark is right.
fn latest(client: &TopicClient, pc: &PartitionClient) -> Result<i64, KafkaError> {
    let listed = client.call(pc.get_offset(OffsetAt::Latest))?;
    let earliest = client.call(pc.get_offset(OffsetAt::Earliest))?;
    let (_, high_watermark) = client.call(pc.fetch_records(earliest, 1..2, 0))?;
    Ok(listed.max(high_watermark))
}

/// Records fetched and the partition's high watermark.
type Fetched = (Vec<RecordAndOffset>, i64);

/// Records from `from` when a fetch from `from` returned none up to it although the partition has more: tansu 0.6.0
/// answers a fetch from inside a record batch with the batches after it (a position restored by a rollback is usually
/// inside one). Fetches from earlier offsets (1, 2, 4, ... back, down to the earliest kept) until a batch holding
/// `from` (or an earlier offset) comes back; `None` when none does (a real gap: compacted or deleted records).
fn from_inside_a_batch(
    client: &TopicClient,
    pc: &PartitionClient,
    from: i64,
    max_bytes: i32,
) -> Result<Option<Fetched>, KafkaError> {
    let earliest = client.call(pc.get_offset(OffsetAt::Earliest))?;
    let mut back = 1;
    loop {
        let at = from.saturating_sub(back).max(earliest);
        if at >= from {
            return Ok(None);
        }
        let (records, high_watermark) = client.call(pc.fetch_records(at, 1..max_bytes, 0))?;
        if records.iter().any(|r| r.offset <= from) {
            return Ok(Some((records, high_watermark)));
        }
        if at == earliest {
            return Ok(None);
        }
        back = back.saturating_mul(2);
    }
}

/// Emits one record: partition, offset, key, value.
fn emit(format: ValueFormat, out: &mut SpoutCollector<'_>, id: Option<MessageId>, partition: i32, r: &RecordAndOffset) {
    let key = r.record.key.as_deref();
    let value = r.record.value.as_deref().unwrap_or_default();
    let (partition, offset) = (i64::from(partition), r.offset);
    match format {
        ValueFormat::String => {
            let key = key.map(String::from_utf8_lossy);
            let key = key.as_deref();
            let value = String::from_utf8_lossy(value);
            let values = (partition, offset, key, value.as_ref());
            match id {
                Some(id) => out.emit_with_id(id, values),
                None => out.emit(values),
            }
        }
        ValueFormat::Bytes => {
            let values = (partition, offset, key, value);
            match id {
                Some(id) => out.emit_with_id(id, values),
                None => out.emit(values),
            }
        }
    }
}

/// The task (by index within the component) that reads partition `partition`.
pub fn partition_task(partition: i32, tasks: u32) -> u32 {
    (partition.unsigned_abs()) % tasks.max(1)
}

/// One record emitted under at-least-once whose tree is not complete yet.
struct PendingRecord {
    partition: i32,
    record: RecordAndOffset,
}

/// One partition this task reads.
struct TrackedPartition {
    id: i32,
    client: Option<PartitionClient>,
    /// The offset of the next record to emit; `None` until resolved from [`StartAt`].
    position: Option<i64>,
    /// The offset the next fetch asks for (past the buffered records).
    fetch_next: i64,
    /// Fetched, not yet emitted (offsets ≥ `position`).
    buffer: VecDeque<RecordAndOffset>,
    /// Offsets emitted under at-least-once and not acked yet.
    unacked: BTreeSet<i64>,
    high_watermark: i64,
    lag: Option<Gauge>,
}

struct Metrics {
    records: Counter,
    retries: Counter,
    connected: Gauge,
}

/// The Kafka source spout (see the module documentation).
pub struct KafkaSource {
    config: KafkaSourceConfig,
    mode: ReliabilityMode,
    task_index: u32,
    tasks: u32,
    client: Option<TopicClient>,
    partitions: Vec<TrackedPartition>,
    /// Positions restored by `init_state`, applied when the partitions are listed.
    restored: BTreeMap<i32, i64>,
    /// Whether the partitions were listed since the last connection or restore.
    listed: bool,
    backoff: Backoff,
    /// The partition to fetch from next (round robin).
    turn: usize,
    /// Whether the last `next_tuple` emitted nothing: only then may a fetch wait on the broker.
    idle: bool,
    next_id: MessageId,
    pending: HashMap<MessageId, PendingRecord>,
    replay: VecDeque<MessageId>,
    metrics: Option<Metrics>,
    /// For the lag gauges of partitions found after `open`.
    ctx: Option<TopologyContext>,
}

impl KafkaSource {
    pub fn new(config: KafkaSourceConfig) -> Self {
        let backoff = Backoff::new(config.retry_max);
        KafkaSource {
            config,
            mode: ReliabilityMode::AtMostOnce,
            task_index: 0,
            tasks: 1,
            client: None,
            partitions: Vec::new(),
            restored: BTreeMap::new(),
            listed: false,
            backoff,
            turn: 0,
            idle: true,
            next_id: 0,
            pending: HashMap::new(),
            replay: VecDeque::new(),
            metrics: None,
            ctx: None,
        }
    }

    /// The positions of this task's partitions: partition → offset of the next record to emit.
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        // Only the partitions this task reads: after a rescale every task restores every partition's position
        // (the state is saved whole), and a stale copy must not be saved again beside the owner's.
        let mut positions: BTreeMap<i32, i64> = self
            .restored
            .iter()
            .filter(|(p, _)| partition_task(**p, self.tasks) == self.task_index)
            .map(|(p, o)| (*p, *o))
            .collect();
        positions.extend(self.partitions.iter().filter_map(|p| p.position.map(|o| (p.id, o))));
        positions
    }

    /// Under at-least-once: partition → the offset below which every record is acked (the lowest unacked offset, or
    /// the position when nothing is unacked).
    pub fn committed(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .filter_map(|p| {
                let below = p.unacked.first().copied().or(p.position)?;
                Some((p.id, below))
            })
            .collect()
    }

    /// Records emitted under at-least-once whose trees are not complete yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Connects and lists the partitions if needed; false while the broker is away (back-off scheduled).
    fn ensure_listed(&mut self, out: &mut SpoutCollector<'_>) -> bool {
        if self.listed {
            return true;
        }
        if !self.backoff.ready() {
            return false;
        }
        let result = match self.client.as_mut() {
            Some(client) => client.partitions(),
            None => return false,
        };
        match result {
            Ok(ids) => {
                for id in ids {
                    if partition_task(id, self.tasks) != self.task_index || self.partitions.iter().any(|p| p.id == id) {
                        continue;
                    }
                    let name = format!("kafka-source-lag-{id}");
                    let lag = self.ctx.as_ref().and_then(|ctx| {
                        ctx.register_gauge(&name, Duration::from_secs(1))
                            .map_err(|e| tracing::warn!(error = %e, name, "kafka source: cannot register a lag gauge"))
                            .ok()
                    });
                    self.partitions.push(TrackedPartition {
                        id,
                        client: None,
                        position: None,
                        fetch_next: 0,
                        buffer: VecDeque::new(),
                        unacked: BTreeSet::new(),
                        high_watermark: 0,
                        lag,
                    });
                }
                self.partitions.sort_by_key(|p| p.id);
                for p in &mut self.partitions {
                    if p.position.is_none()
                        && let Some(&o) = self.restored.get(&p.id)
                    {
                        p.position = Some(o);
                        p.fetch_next = o;
                    }
                }
                self.listed = true;
                self.backoff.reset();
                if let Some(m) = &self.metrics {
                    m.connected.set(1.0);
                }
                tracing::info!(
                    topic = %self.config.topic,
                    partitions = ?self.partitions.iter().map(|p| p.id).collect::<Vec<_>>(),
                    "kafka source: reading"
                );
                true
            }
            Err(e) => {
                self.broker_failed(&e, out);
                false
            }
        }
    }

    fn broker_failed(&mut self, e: &KafkaError, out: &mut SpoutCollector<'_>) {
        let wait = self.backoff.failed();
        tracing::warn!(error = %e, retry_in = ?wait, "kafka source: broker call failed; retrying");
        out.report_error(e);
        if let Some(c) = self.client.as_mut() {
            c.disconnect();
        }
        self.listed = false;
        for p in &mut self.partitions {
            p.client = None;
        }
        if let Some(m) = &self.metrics {
            m.retries.incr();
            m.connected.set(0.0);
        }
    }

    /// Fetches more records for partition `i` (resolving its start position first if needed); at the end of the
    /// partition the broker holds the fetch up to `wait` for new records.
    fn fetch(&mut self, i: usize, wait: Duration) -> Result<(), KafkaError> {
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        let start = self.config.start;
        let p = &mut self.partitions[i];
        if p.client.is_none() {
            p.client = Some(client.partition(p.id)?);
        }
        let Some(pc) = p.client.as_ref() else {
            return Ok(());
        };
        let position = match p.position {
            Some(o) => o,
            None => {
                let at = match start {
                    StartAt::Earliest => OffsetAt::Earliest,
                    StartAt::Latest => OffsetAt::Latest,
                    StartAt::TimestampMs(ms) => {
                        OffsetAt::Timestamp(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default())
                    }
                };
                let mut o = match at {
                    OffsetAt::Latest => latest(client, pc)?,
                    at => client.call(pc.get_offset(at))?,
                };
                if o < 0 {
                    // No record at or after the timestamp: start after the last one.
                    o = latest(client, pc)?;
                }
                tracing::info!(partition = p.id, offset = o, start = ?start, "kafka source: starting position");
                p.position = Some(o);
                p.fetch_next = o;
                o
            }
        };
        let from = p.fetch_next.max(position);
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let fetched = client.call(pc.fetch_records(from, 1..self.config.fetch_max_bytes, wait_ms));
        let (records, high_watermark) = match fetched {
            Ok(r) => r,
            Err(KafkaError::Client {
                source:
                    RsError::ServerError {
                        protocol_error: ProtocolError::OffsetOutOfRange,
                        ..
                    },
                ..
            }) => {
                // The records at the position are gone (retention, deletion): go on from the earliest one kept.
                let earliest = client.call(pc.get_offset(OffsetAt::Earliest))?;
                let to = if from < earliest { earliest } else { latest(client, pc)? };
                tracing::warn!(
                    partition = p.id,
                    offset = from,
                    to,
                    "kafka source: offset out of range; skipping to the next kept record"
                );
                p.position = Some(to);
                p.fetch_next = to;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (records, high_watermark) = if from < high_watermark && records.first().is_none_or(|r| r.offset > from) {
            from_inside_a_batch(client, pc, from, self.config.fetch_max_bytes)?.unwrap_or((records, high_watermark))
        } else {
            (records, high_watermark)
        };
        for r in records {
            if r.offset >= from {
                p.fetch_next = r.offset + 1;
                p.buffer.push_back(r);
            }
        }
        p.high_watermark = high_watermark;
        Ok(())
    }

    fn emit(&self, out: &mut SpoutCollector<'_>, id: Option<MessageId>, partition: i32, r: &RecordAndOffset) {
        emit(self.config.format, out, id, partition, r);
    }

    fn update_lag(&self) {
        for p in &self.partitions {
            if let (Some(g), Some(pos)) = (&p.lag, p.position) {
                g.set((p.high_watermark - pos).max(0) as f64);
            }
        }
    }
}

impl Spout for KafkaSource {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(KAFKA_SOURCE_FIELDS);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.mode = ctx.config().reliability_mode()?;
        self.task_index = ctx.component_index();
        self.tasks = ctx.parallelism().max(1);
        self.client = Some(TopicClient::new(
            self.config.brokers.clone(),
            self.config.topic.clone(),
            self.config.call_timeout,
        )?);
        self.metrics = Some(Metrics {
            records: ctx.register_counter("kafka-source-records", Duration::from_secs(1))?,
            retries: ctx.register_counter("kafka-source-retries", Duration::from_secs(1))?,
            connected: ctx.register_gauge("kafka-source-connected", Duration::from_secs(1))?,
        });
        // A missing topic is reported at start with the broker's answer; a broker that is merely away is retried.
        if let Some(client) = self.client.as_mut() {
            match client.partitions() {
                Ok(_) => {}
                Err(e @ KafkaError::MissingTopic { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "kafka source: broker not reachable yet; retrying later"),
            }
        }
        self.ctx = Some(ctx.clone());
        tracing::info!(
            brokers = %self.config.brokers.join(","),
            topic = %self.config.topic,
            task_index = self.task_index,
            tasks = self.tasks,
            mode = self.mode.as_str(),
            "kafka source: open"
        );
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let mut emitted = 0;
        while emitted < RECORDS_PER_CALL {
            let Some(id) = self.replay.pop_front() else { break };
            if let Some(p) = self.pending.remove(&id) {
                self.emit(out, Some(id), p.partition, &p.record);
                self.pending.insert(id, p);
                emitted += 1;
            }
        }
        if !self.ensure_listed(out) || self.partitions.is_empty() {
            return;
        }
        let n = self.partitions.len();
        let mut tried = 0;
        // Only a call after one that emitted nothing waits on the broker (once): a call that blocks while records
        // trickle in would keep the task's emit cycle going, and its open batches unsent, for many waits.
        let mut may_wait = self.idle;
        while emitted < RECORDS_PER_CALL && tried < n {
            let i = self.turn % n;
            if self.partitions[i].buffer.is_empty() {
                let wait = if std::mem::take(&mut may_wait) {
                    self.config.fetch_wait
                } else {
                    Duration::ZERO
                };
                if let Err(e) = self.fetch(i, wait) {
                    self.broker_failed(&e, out);
                    break;
                }
                if self.partitions[i].buffer.is_empty() {
                    self.turn += 1;
                    tried += 1;
                    continue;
                }
            }
            let partition = self.partitions[i].id;
            let format = self.config.format;
            while emitted < RECORDS_PER_CALL {
                let p = &mut self.partitions[i];
                let Some(r) = p.buffer.pop_front() else { break };
                p.position = Some(r.offset + 1);
                if self.mode == ReliabilityMode::AtLeastOnce {
                    p.unacked.insert(r.offset);
                    let id = self.next_id;
                    self.next_id += 1;
                    emit(format, out, Some(id), partition, &r);
                    self.pending.insert(id, PendingRecord { partition, record: r });
                } else {
                    emit(format, out, None, partition, &r);
                }
                emitted += 1;
            }
            self.turn += 1;
            tried += 1;
        }
        self.idle = emitted == 0;
        self.update_lag();
        if let Some(m) = &self.metrics {
            m.records.incr_by(emitted as u64);
        }
    }

    /// A rescale under at-least-once or at-most-once (effectively-once makes a new source from the checkpoint):
    /// drop the partitions this task no longer reads and list again to take those it now reads, from the configured
    /// start (positions are not shared outside checkpoints, so a moved partition may be read twice, never skipped).
    fn update(&mut self, ctx: &TopologyContext) {
        let (index, tasks) = (ctx.component_index(), ctx.parallelism().max(1));
        if (index, tasks) == (self.task_index, self.tasks) {
            return;
        }
        (self.task_index, self.tasks) = (index, tasks);
        self.partitions.retain(|p| partition_task(p.id, tasks) == index);
        self.listed = false;
        tracing::info!(index, tasks, "kafka source rescaled; listing the partitions again");
    }

    fn ack(&mut self, id: MessageId) {
        if let Some(r) = self.pending.remove(&id)
            && let Some(p) = self.partitions.iter_mut().find(|p| p.id == r.partition)
        {
            p.unacked.remove(&r.record.offset);
        }
    }

    fn fail(&mut self, id: MessageId) {
        if self.pending.contains_key(&id) {
            self.replay.push_back(id);
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for KafkaSource {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        // Every partition's position after a rescale (saved whole), this task's own otherwise.
        self.restored = KeyedState::<i32, i64>::restore(restored)
            .map_err(KafkaError::BadState)?
            .into_map()
            .into_iter()
            .collect();
        // What was fetched or emitted after the restored cut is read again from the restored positions.
        for p in &mut self.partitions {
            p.buffer.clear();
            p.unacked.clear();
            p.position = self.restored.get(&p.id).copied();
            if let Some(o) = p.position {
                p.fetch_next = o;
            }
        }
        self.pending.clear();
        self.replay.clear();
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let mut state = KeyedState::new();
        for (p, o) in self.positions() {
            state.insert(p, o);
        }
        Ok(state.save_whole(out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_partitions_are_assigned_round_robin_to_tasks() {
        for tasks in 1..5u32 {
            let mut per_task = vec![Vec::new(); tasks as usize];
            for p in 0..12 {
                per_task[partition_task(p, tasks) as usize].push(p);
            }
            assert!(
                per_task.iter().all(|ps| ps.len() == 12 / tasks as usize),
                "{tasks}: {per_task:?}"
            );
            assert_eq!(per_task[0][0], 0);
        }
        assert_eq!(partition_task(5, 0), 0, "no task count is taken as one");
    }

    #[test]
    fn kafka_positions_follow_their_partitions_when_the_source_is_rescaled() {
        let positions: BTreeMap<i32, i64> = (0..8).map(|p| (p, 100 + p as i64)).collect();
        // Two tasks, each saving the positions of the partitions it reads.
        let saved: Vec<Vec<u8>> = (0..2u32)
            .map(|index| {
                let mut s = KafkaSource::new(KafkaSourceConfig::new(["127.0.0.1:1"], "t"));
                s.init_state(None).unwrap();
                (s.task_index, s.tasks) = (index, 2);
                s.restored = positions.clone();
                let mut b = Vec::new();
                s.pre_save(CheckpointId(1), &mut b).unwrap();
                b
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = saved.iter().map(|b| Some(b.as_slice())).collect();
        for tasks in [1u32, 3, 5] {
            let mut seen = BTreeMap::new();
            for index in 0..tasks {
                let bytes = egret_api::state::key_group_blob::rescale(&refs, index as usize, tasks as usize).unwrap();
                let mut s = KafkaSource::new(KafkaSourceConfig::new(["127.0.0.1:1"], "t"));
                s.init_state(bytes.as_deref()).unwrap();
                (s.task_index, s.tasks) = (index, tasks);
                for (p, o) in s.positions() {
                    assert_eq!(partition_task(p, tasks), index);
                    assert!(seen.insert(p, o).is_none(), "partition {p} read by two tasks");
                }
            }
            assert_eq!(seen, positions, "{tasks} tasks: every partition once, at its position");
        }
    }

    #[test]
    fn kafka_source_state_round_trips_and_rewinds() {
        let mut s = KafkaSource::new(KafkaSourceConfig::new(["127.0.0.1:1"], "t"));
        s.partitions.push(TrackedPartition {
            id: 3,
            client: None,
            position: Some(42),
            fetch_next: 50,
            buffer: VecDeque::new(),
            unacked: BTreeSet::from([40, 41]),
            high_watermark: 60,
            lag: None,
        });
        assert_eq!(
            s.committed(),
            BTreeMap::from([(3, 40)]),
            "committed below the lowest unacked offset"
        );
        let mut saved = Vec::new();
        s.pre_save(CheckpointId(1), &mut saved).unwrap();
        s.partitions[0].position = Some(99);
        s.init_state(Some(&saved)).unwrap();
        assert_eq!(s.positions(), BTreeMap::from([(3, 42)]));
        assert_eq!(
            s.partitions[0].fetch_next, 42,
            "a rollback fetches again from the restored position"
        );
        assert!(s.partitions[0].unacked.is_empty());
        assert!(s.init_state(Some(&[0xff, 0xff, 0xff])).is_err());
    }
}
