//! The Redis Streams source: a spout reading one or more streams through a consumer group (`XREADGROUP`). Each task
//! is one consumer of the group, named `<topology>-<task id>`, so a restarted task is the same consumer and finds
//! the entries delivered to it and not acknowledged in its pending entries list (PEL).
//!
//! At `open` the group is created if missing (`XGROUP CREATE ... MKSTREAM`, from the start or the end of the stream,
//! [`GroupStart`]); then the task reads its own PEL first (`XREADGROUP ... <id>`, the history of this consumer) and
//! new entries after (`XREADGROUP ... >`).
//!
//! - **at-least-once**: every entry is emitted with a message id; it is `XACK`ed when Egret acks its tuple tree; a
//!   failed (or timed-out) entry is emitted again (same id) before new ones — it stays in the PEL meanwhile, so a
//!   task that restarts emits it again too.
//! - **effectively-once**: the state is the last emitted entry id per stream. Entries are `XACK`ed at `post_save` of
//!   the checkpoint whose cut they precede. A restored task reads its PEL from the start: entries up to the saved id
//!   were in the restored cut (only their `XACK` was lost) and are acknowledged, later ones are emitted again, in
//!   order — exactly what followed the cut. The PEL, not `XRANGE`, is what is read again: with several tasks the
//!   group spreads entries over consumers, and a task's PEL holds exactly the entries it was given.
//! - **at-most-once**: entries are emitted untracked and acknowledged at once; pending entries found at open (a
//!   crash between an emit and its `XACK`) are acknowledged, not emitted.
//!
//! A lost connection (the server stopped, a timeout) is attempted again with back-off (100 ms doubling to
//! `retry_max`; metric `redis-source-retries`, gauge `redis-source-connected`). After reconnecting, the task reads
//! its PEL again and skips what it already emitted, so an entry whose delivery was lost with the connection is
//! emitted; acknowledgements not sent yet are kept and sent then. Errors of configuration (a refused connection,
//! wrong credentials, a key that is not a stream) fail `open` with the server's answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use egret_api::metrics::{Counter, Gauge};
use egret_api::{
    CheckpointId, MessageId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector, Stateful, TopologyContext,
    UserError, Value,
};

use crate::conn::{Backoff, Entry, EntryId, RedisError, connect, parse_read_reply, redact};

/// Where a consumer group created by the source starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// Every entry already in the stream (`0`).
    Beginning,
    /// Only entries added after the group is created (`$`).
    End,
}

/// Where and how a [`RedisSource`] reads.
#[derive(Debug, Clone)]
pub struct RedisSourceConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The streams read (keys).
    pub streams: Vec<String>,
    /// The consumer group.
    pub group: String,
    /// The entry fields emitted after `stream` and `id`, as strings (a missing field is an empty string).
    pub fields: Vec<String>,
    pub start: GroupStart,
    /// Entries asked for per read and stream.
    pub count: usize,
    /// The longest wait between connection attempts.
    pub retry_max: Duration,
}

impl RedisSourceConfig {
    pub fn new(url: impl Into<String>, streams: &[&str], group: impl Into<String>, fields: &[&str]) -> Self {
        RedisSourceConfig {
            url: url.into(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
            group: group.into(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
            start: GroupStart::Beginning,
            count: 256,
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn start(mut self, start: GroupStart) -> Self {
        self.start = start;
        self
    }

    pub fn count(mut self, count: usize) -> Self {
        self.count = count.max(1);
        self
    }

    pub fn retry_max(mut self, max: Duration) -> Self {
        self.retry_max = max;
        self
    }

    /// The fields the source emits: `stream`, `id`, then the configured entry fields.
    pub fn output_fields(&self) -> Vec<String> {
        let mut f = vec!["stream".to_string(), "id".to_string()];
        f.extend(self.fields.iter().cloned());
        f
    }
}

/// An entry emitted under at-least-once whose tree is not complete yet.
struct Pending {
    stream: String,
    id: EntryId,
    values: Vec<Value>,
}

struct Metrics {
    entries: Counter,
    retries: Counter,
    connected: Gauge,
}

/// The Redis Streams source spout (see the module documentation).
pub struct RedisSource {
    config: RedisSourceConfig,
    addr: String,
    mode: ReliabilityMode,
    consumer: String,
    conn: Option<redis::Connection>,
    backoff: Backoff,
    /// Read this consumer's pending entries (history) before new ones: at open and after each reconnection.
    read_history: bool,
    /// Where the history read goes on per stream (the last pending entry it returned).
    history_cursor: BTreeMap<String, EntryId>,
    /// The last entry emitted per stream (effectively-once: the state; every mode: what a history read skips).
    position: BTreeMap<String, EntryId>,
    /// Effectively-once: the restored position, up to which pending entries are acknowledged, not emitted.
    restored: BTreeMap<String, EntryId>,
    /// Entries read and not emitted yet.
    ready: VecDeque<Entry>,
    next_id: MessageId,
    pending: HashMap<MessageId, Pending>,
    replay: VecDeque<MessageId>,
    /// Entries to `XACK` (per stream), sent at the next chance.
    to_ack: BTreeMap<String, Vec<EntryId>>,
    /// Effectively-once: entries emitted since the last checkpoint, and those of checkpoints not complete yet.
    since_checkpoint: BTreeMap<String, Vec<EntryId>>,
    by_checkpoint: BTreeMap<CheckpointId, BTreeMap<String, Vec<EntryId>>>,
    metrics: Option<Metrics>,
}

/// Entries emitted per `next_tuple` call at most.
const ENTRIES_PER_CALL: usize = 64;

impl RedisSource {
    pub fn new(config: RedisSourceConfig) -> Self {
        RedisSource {
            addr: redact(&config.url),
            backoff: Backoff::new(config.retry_max),
            config,
            mode: ReliabilityMode::AtMostOnce,
            consumer: String::new(),
            conn: None,
            read_history: true,
            history_cursor: BTreeMap::new(),
            position: BTreeMap::new(),
            restored: BTreeMap::new(),
            ready: VecDeque::new(),
            next_id: 0,
            pending: HashMap::new(),
            replay: VecDeque::new(),
            to_ack: BTreeMap::new(),
            since_checkpoint: BTreeMap::new(),
            by_checkpoint: BTreeMap::new(),
            metrics: None,
        }
    }

    /// The consumer name of this task in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Entries emitted under at-least-once whose trees are not complete yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn err(&self, source: redis::RedisError) -> RedisError {
        RedisError::Redis {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Creates the group on every stream unless it exists; refuses a key that is not a stream.
    fn create_groups(&self, conn: &mut redis::Connection) -> Result<(), RedisError> {
        let start = match self.config.start {
            GroupStart::Beginning => "0",
            GroupStart::End => "$",
        };
        for stream in &self.config.streams {
            let r: Result<redis::Value, redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&self.config.group)
                .arg(start)
                .arg("MKSTREAM")
                .query(conn);
            match r {
                Ok(_) => tracing::info!(stream = %stream, group = %self.config.group, "redis source: group created"),
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => return Err(self.err(e)),
                Err(e) => {
                    return Err(RedisError::Stream {
                        addr: self.addr.clone(),
                        stream: stream.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Connected, or `None` while waiting out the back-off or when this attempt failed.
    fn connection(&mut self) -> Option<&mut redis::Connection> {
        if self.conn.is_none() {
            if !self.backoff.ready() {
                return None;
            }
            match connect(&self.config.url).and_then(|mut c| self.create_groups(&mut c).map(|()| c)) {
                Ok(c) => {
                    tracing::info!(addr = %self.addr, consumer = %self.consumer, "redis source: connected");
                    self.conn = Some(c);
                    self.backoff.reset();
                    self.read_history = true;
                    self.history_cursor.clear();
                    if let Some(m) = &self.metrics {
                        m.connected.set(1.0);
                    }
                }
                Err(e) => {
                    self.connection_lost(&e);
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    fn connection_lost(&mut self, e: &RedisError) {
        tracing::warn!(error = %e, "redis source: connection lost; retrying with back-off");
        self.conn = None;
        self.backoff.failed();
        if let Some(m) = &self.metrics {
            m.retries.incr();
            m.connected.set(0.0);
        }
    }

    /// After a failed command: a lost connection starts the back-off; other errors are reported.
    fn command_failed(&mut self, e: RedisError, out: &mut SpoutCollector<'_>) {
        if e.is_connection_lost() {
            self.connection_lost(&e);
        } else {
            tracing::warn!(error = %e, "redis source: command failed");
            out.report_error(&e);
        }
    }

    /// Sends the queued `XACK`s; kept for later if the connection is lost.
    fn flush_acks(&mut self) -> Result<(), RedisError> {
        if self.to_ack.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (stream, ids) in &self.to_ack {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(stream).arg(&self.config.group);
            for id in ids {
                cmd.arg(id.to_string());
            }
            pipe.add_command(cmd).ignore();
        }
        let Some(conn) = self.connection() else {
            return Ok(());
        };
        let r: Result<(), redis::RedisError> = pipe.query(conn);
        match r {
            Ok(()) => {
                self.to_ack.clear();
                Ok(())
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Reads more entries into `ready`: this consumer's pending entries first (after open or a reconnection), then
    /// new ones.
    fn fill(&mut self) -> Result<(), RedisError> {
        if self.conn.is_none() && self.connection().is_none() {
            return Ok(());
        }
        // (Connecting again resets the history read.)
        let history = self.read_history;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.config.count);
        cmd.arg("STREAMS").arg(&self.config.streams);
        for s in &self.config.streams {
            match (history, self.history_cursor.get(s)) {
                (true, Some(id)) => cmd.arg(id.to_string()),
                (true, None) => cmd.arg("0"),
                (false, _) => cmd.arg(">"),
            };
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let r: Result<redis::Value, redis::RedisError> = cmd.query(conn);
        let reply = r.map_err(|e| self.err(e))?;
        let entries = parse_read_reply(&reply).ok_or_else(|| RedisError::Reply {
            addr: self.addr.clone(),
            command: "XREADGROUP",
            reply: format!("{reply:?}"),
        })?;
        if !history {
            self.ready.extend(entries);
            return Ok(());
        }
        // History: pending entries of this consumer, in id order per stream; an empty answer ends it.
        if entries.is_empty() {
            self.read_history = false;
            return Ok(());
        }
        for e in entries {
            self.history_cursor.insert(e.stream.clone(), e.id);
            let emitted = self.position.get(&e.stream).is_some_and(|p| e.id <= *p);
            let in_cut = self.restored.get(&e.stream).is_some_and(|p| e.id <= *p);
            // At-most-once: what was delivered before (a crash between emit and XACK) is not emitted twice.
            let at_most_once = self.mode == ReliabilityMode::AtMostOnce;
            if e.fields.is_none() || (in_cut && !emitted) || (at_most_once && !emitted) {
                // Deleted while pending, or (effectively-once) in the restored checkpoint's cut: only the XACK was
                // missing.
                self.to_ack.entry(e.stream.clone()).or_default().push(e.id);
                continue;
            }
            if emitted || self.ready.iter().any(|r| r.stream == e.stream && r.id == e.id) {
                continue;
            }
            self.ready.push_back(e);
        }
        Ok(())
    }

    fn emit_entry(&mut self, e: Entry, out: &mut SpoutCollector<'_>) {
        let Some(fields) = e.fields else {
            return;
        };
        let mut values = Vec::with_capacity(2 + self.config.fields.len());
        values.push(Value::Str(e.stream.clone()));
        values.push(Value::Str(e.id.to_string()));
        for name in &self.config.fields {
            let v = fields
                .iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            values.push(Value::Str(v));
        }
        self.position.insert(e.stream.clone(), e.id);
        match self.mode {
            ReliabilityMode::AtLeastOnce => {
                let id = self.next_id;
                self.next_id += 1;
                out.emit_with_id(id, values.clone());
                self.pending.insert(
                    id,
                    Pending {
                        stream: e.stream,
                        id: e.id,
                        values,
                    },
                );
            }
            ReliabilityMode::EffectivelyOnce => {
                out.emit(values);
                self.since_checkpoint.entry(e.stream).or_default().push(e.id);
            }
            ReliabilityMode::AtMostOnce => {
                out.emit(values);
                self.to_ack.entry(e.stream).or_default().push(e.id);
            }
        }
        if let Some(m) = &self.metrics {
            m.entries.incr();
        }
    }
}

impl Spout for RedisSource {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(self.config.output_fields());
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        if self.config.streams.is_empty() || self.config.group.is_empty() {
            return Err(RedisError::Config("a source needs at least one stream and a group".into()).into());
        }
        self.mode = ctx.config().reliability_mode()?;
        self.consumer = format!("{}-{}", ctx.topology_name(), ctx.task_id().0);
        self.metrics = Some(Metrics {
            entries: ctx.register_counter("redis-source-entries", Duration::from_secs(1))?,
            retries: ctx.register_counter("redis-source-retries", Duration::from_secs(1))?,
            connected: ctx.register_gauge("redis-source-connected", Duration::from_secs(1))?,
        });
        // Configuration errors stop the start here, with the server's answer.
        let mut conn = connect(&self.config.url)?;
        self.create_groups(&mut conn)?;
        self.conn = Some(conn);
        if let Some(m) = &self.metrics {
            m.connected.set(1.0);
        }
        tracing::info!(
            addr = %self.addr,
            streams = ?self.config.streams,
            group = %self.config.group,
            consumer = %self.consumer,
            mode = self.mode.as_str(),
            "redis source: open"
        );
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if let Err(e) = self.flush_acks() {
            self.command_failed(e, out);
        }
        let mut emitted = 0;
        let mut reads = 0;
        while emitted < ENTRIES_PER_CALL {
            if let Some(id) = self.replay.pop_front() {
                if let Some(p) = self.pending.get(&id) {
                    out.emit_with_id(id, p.values.clone());
                    emitted += 1;
                }
                continue;
            }
            if let Some(e) = self.ready.pop_front() {
                self.emit_entry(e, out);
                emitted += 1;
                continue;
            }
            // At most two reads per call (the end of the history, then new entries): the runtime gets control back.
            if reads == 2 {
                break;
            }
            reads += 1;
            let was_history = self.read_history;
            if let Err(e) = self.fill() {
                self.command_failed(e, out);
                break;
            }
            if self.ready.is_empty() && !was_history {
                break;
            }
        }
        if self.mode == ReliabilityMode::AtMostOnce
            && let Err(e) = self.flush_acks()
        {
            self.command_failed(e, out);
        }
    }

    fn ack(&mut self, id: MessageId) {
        if let Some(p) = self.pending.remove(&id) {
            self.to_ack.entry(p.stream).or_default().push(p.id);
        }
    }

    fn fail(&mut self, id: MessageId) {
        if self.pending.contains_key(&id) {
            self.replay.push_back(id);
        }
    }

    fn close(&mut self) {
        if let Err(e) = self.flush_acks() {
            tracing::warn!(error = %e, "redis source: acknowledgements not sent at close (the entries stay pending)");
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for RedisSource {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.restored = match restored {
            None => BTreeMap::new(),
            Some(bytes) => postcard::from_bytes(bytes).map_err(RedisError::BadState)?,
        };
        Ok(())
    }

    fn pre_save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let mut position = self.restored.clone();
        position.extend(self.position.iter().map(|(s, id)| (s.clone(), *id)));
        out.extend_from_slice(&postcard::to_stdvec(&position)?);
        let emitted = std::mem::take(&mut self.since_checkpoint);
        self.by_checkpoint.insert(checkpoint, emitted);
        Ok(())
    }

    fn post_save(&mut self, checkpoint: CheckpointId) {
        let later = self.by_checkpoint.split_off(&CheckpointId(checkpoint.0 + 1));
        let done = std::mem::replace(&mut self.by_checkpoint, later);
        for (_, streams) in done {
            for (stream, ids) in streams {
                self.to_ack.entry(stream).or_default().extend(ids);
            }
        }
        // Sent at the next `next_tuple` (or kept while the server is away).
    }
}
