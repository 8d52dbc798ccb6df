//! The Redis Streams sink: a bolt appending one entry per tuple to a stream (`XADD`), pipelined in batches.
//!
//! - **at-least-once**: a tuple is acked once the pipeline holding its entry was answered; when the connection is
//!   lost the batch's tuples are failed, so they replay (an entry may then be written twice: `XADD` is not
//!   idempotent).
//! - **at-most-once**: tuples are acked when received; a batch that cannot be written is dropped and counted
//!   (`redis-sink-entries-dropped`).
//! - **effectively-once**: batches are written as under at-least-once and the rest at each checkpoint's
//!   `pre_save`; entries that cannot be written then (the server is away) are saved in the checkpoint and written
//!   after. Nothing before a checkpoint's cut is lost, but a rollback replays what followed the cut, so the stream
//!   may hold an entry twice: the output is at-least-once (readers deduplicate on a key field).
//!
//! A lost connection is attempted again with back-off (100 ms doubling to `retry_max`; `redis-sink-retries`,
//! gauge `redis-sink-connected`). A configuration error (refused connection, wrong credentials, a key that is not a
//! stream) fails `prepare` with the server's answer.

use std::time::Duration;

use egret_api::metrics::{Counter, Gauge};
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OutputDeclarer, ReliabilityMode, SinkBatch, Stateful, TopologyContext, Tuple,
    UserError, ValueRef,
};

use crate::conn::{Backoff, RedisError, connect, redact};

/// Where and how a [`RedisSink`] writes.
#[derive(Debug, Clone)]
pub struct RedisSinkConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The stream (key) written to.
    pub stream: String,
    /// The tuple fields written as the entry's fields (same names); empty: every field of the tuple.
    pub fields: Vec<String>,
    /// Entries per pipeline at most, and the longest time an entry waits (needs tick tuples on an idle sink).
    pub batch_entries: usize,
    pub batch_interval: Duration,
    /// `MAXLEN ~ n` on every `XADD`: the stream is trimmed to about `n` entries.
    pub max_len: Option<usize>,
    pub retry_max: Duration,
}

impl RedisSinkConfig {
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        RedisSinkConfig {
            url: url.into(),
            stream: stream.into(),
            fields: Vec::new(),
            batch_entries: 500,
            batch_interval: Duration::from_millis(100),
            max_len: None,
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn batch(mut self, entries: usize, interval: Duration) -> Self {
        self.batch_entries = entries.max(1);
        self.batch_interval = interval;
        self
    }

    pub fn max_len(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    pub fn retry_max(mut self, max: Duration) -> Self {
        self.retry_max = max;
        self
    }
}

/// One entry to write: its field/value pairs.
type Fields = Vec<(String, Vec<u8>)>;

struct Metrics {
    written: Counter,
    dropped: Counter,
    rejected: Counter,
    retries: Counter,
    connected: Gauge,
}

/// The Redis Streams sink bolt (see the module documentation). Declares no output.
pub struct RedisSink {
    config: RedisSinkConfig,
    addr: String,
    mode: ReliabilityMode,
    conn: Option<redis::Connection>,
    backoff: Backoff,
    batch: SinkBatch<Fields>,
    metrics: Option<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("redis sink: field {field}: {message}")]
struct ValueError {
    field: String,
    message: String,
}

impl RedisSink {
    pub fn new(config: RedisSinkConfig) -> Self {
        RedisSink {
            addr: redact(&config.url),
            backoff: Backoff::new(config.retry_max),
            batch: SinkBatch::new(config.batch_entries, config.batch_interval),
            config,
            mode: ReliabilityMode::AtMostOnce,
            conn: None,
            metrics: None,
        }
    }

    /// Refuses a key that exists and is not a stream.
    fn check_stream(&self, conn: &mut redis::Connection) -> Result<(), RedisError> {
        let kind: String = redis::cmd("TYPE")
            .arg(&self.config.stream)
            .query(conn)
            .map_err(|source| RedisError::Redis {
                addr: self.addr.clone(),
                source,
            })?;
        if kind != "stream" && kind != "none" {
            return Err(RedisError::Stream {
                addr: self.addr.clone(),
                stream: self.config.stream.clone(),
                message: format!("the key holds a {kind}, not a stream"),
            });
        }
        Ok(())
    }

    fn entry(&self, tuple: &Tuple<'_>) -> Result<Fields, ValueError> {
        let names: Vec<String> = if self.config.fields.is_empty() {
            tuple.fields().names().to_vec()
        } else {
            self.config.fields.clone()
        };
        let mut entry = Vec::with_capacity(names.len());
        for name in names {
            let v = tuple.get(name.as_str()).map_err(|e| ValueError {
                field: name.clone(),
                message: e.to_string(),
            })?;
            let bytes = match v {
                ValueRef::Null => Vec::new(),
                ValueRef::Bool(b) => b.to_string().into_bytes(),
                ValueRef::I64(i) => i.to_string().into_bytes(),
                ValueRef::F64(f) => f.to_string().into_bytes(),
                ValueRef::Str(s) => s.as_bytes().to_vec(),
                ValueRef::Bytes(b) => b.to_vec(),
                ValueRef::List(_) | ValueRef::Map(_) => {
                    return Err(ValueError {
                        field: name,
                        message: "a list or map has no stream field form".into(),
                    });
                }
            };
            entry.push((name, bytes));
        }
        Ok(entry)
    }

    /// Writes `entries` in one pipeline.
    fn write(&mut self, entries: &[Fields]) -> Result<(), RedisError> {
        if self.conn.is_none() {
            if !self.backoff.ready() {
                return Err(RedisError::Redis {
                    addr: self.addr.clone(),
                    source: redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "waiting to reconnect",
                    )),
                });
            }
            match connect(&self.config.url) {
                Ok(c) => {
                    tracing::info!(addr = %self.addr, "redis sink: connected");
                    self.conn = Some(c);
                    self.backoff.reset();
                    if let Some(m) = &self.metrics {
                        m.connected.set(1.0);
                    }
                }
                Err(e) => {
                    self.connection_lost(&e, false);
                    return Err(e);
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for entry in entries {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&self.config.stream);
            if let Some(n) = self.config.max_len {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*");
            for (k, v) in entry {
                cmd.arg(k).arg(v.as_slice());
            }
            pipe.add_command(cmd).ignore();
        }
        let r: Result<(), redis::RedisError> = pipe.query(conn);
        r.map_err(|source| RedisError::Redis {
            addr: self.addr.clone(),
            source,
        })
    }

    fn connection_lost(&mut self, e: &RedisError, was_connected: bool) {
        tracing::warn!(error = %e, "redis sink: connection lost; retrying with back-off");
        self.conn = None;
        self.backoff.failed();
        if let Some(m) = &self.metrics {
            if !was_connected {
                m.retries.incr();
            }
            m.connected.set(0.0);
        }
    }

    /// Writes the buffered entries; acks (at-least-once) or fails their tuples. Returns whether they were written.
    fn flush(&mut self, out: &mut BoltCollector<'_>) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let entries = self.batch.take();
        match self.write(&entries) {
            Ok(()) => {
                if let Some(m) = &self.metrics {
                    m.written.incr_by(entries.len() as u64);
                }
                self.batch.written(out);
                true
            }
            Err(e) => {
                if self.conn.is_some() {
                    // An answer of the server (the key changed type...) or a lost connection mid-pipeline.
                    if e.is_connection_lost() {
                        self.connection_lost(&e, true);
                    } else {
                        out.report_error(&e);
                    }
                }
                match self.mode {
                    ReliabilityMode::AtLeastOnce => self.batch.failed(out),
                    ReliabilityMode::AtMostOnce => {
                        if let Some(m) = &self.metrics {
                            m.dropped.incr_by(entries.len() as u64);
                        }
                    }
                    // Kept: written with the next batch, or saved with the next checkpoint.
                    ReliabilityMode::EffectivelyOnce => self.batch.keep(entries),
                }
                false
            }
        }
    }
}

impl Bolt for RedisSink {
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        if self.config.stream.is_empty() {
            return Err(RedisError::Config("a sink needs a stream".into()).into());
        }
        self.mode = ctx.config().reliability_mode()?;
        self.metrics = Some(Metrics {
            written: ctx.register_counter("redis-sink-entries-written", Duration::from_secs(1))?,
            dropped: ctx.register_counter("redis-sink-entries-dropped", Duration::from_secs(1))?,
            rejected: ctx.register_counter("redis-sink-entries-rejected", Duration::from_secs(1))?,
            retries: ctx.register_counter("redis-sink-retries", Duration::from_secs(1))?,
            connected: ctx.register_gauge("redis-sink-connected", Duration::from_secs(1))?,
        });
        let mut conn = connect(&self.config.url)?;
        self.check_stream(&mut conn)?;
        self.conn = Some(conn);
        if let Some(m) = &self.metrics {
            m.connected.set(1.0);
        }
        tracing::info!(addr = %self.addr, stream = %self.config.stream, mode = self.mode.as_str(), "redis sink: ready");
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if !tuple.is_tick() {
            match self.entry(tuple) {
                Ok(entry) => self.batch.push(entry, tuple, self.mode, out),
                Err(e) => {
                    // Replaying it would fail the same way.
                    out.report_error(&e);
                    if let Some(m) = &self.metrics {
                        m.rejected.incr();
                    }
                    out.ack(tuple);
                }
            }
        }
        if self.batch.is_due() {
            self.flush(out);
        }
    }

    fn cleanup(&mut self) {
        if self.mode != ReliabilityMode::AtLeastOnce && !self.batch.is_empty() {
            let entries = self.batch.take();
            if let Err(e) = self.write(&entries) {
                tracing::warn!(error = %e, entries = entries.len(), "redis sink: entries not written at cleanup");
            }
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for RedisSink {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        // Entries of the restored checkpoint that could not be written when it was taken.
        let entries: Vec<Fields> = match restored {
            None => Vec::new(),
            Some(bytes) => postcard::from_bytes(bytes).map_err(RedisError::BadState)?,
        };
        self.batch.drop_items();
        self.batch.keep(entries);
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        if !self.batch.is_empty() {
            let entries = self.batch.take();
            match self.write(&entries) {
                Ok(()) => {
                    if let Some(m) = &self.metrics {
                        m.written.incr_by(entries.len() as u64);
                    }
                }
                Err(e) => {
                    if self.conn.is_some() && e.is_connection_lost() {
                        self.connection_lost(&e, true);
                    }
                    tracing::warn!(error = %e, entries = entries.len(), "redis sink: entries kept in the checkpoint");
                    self.batch.keep(entries);
                }
            }
        }
        out.extend_from_slice(&postcard::to_stdvec(self.batch.items())?);
        Ok(())
    }
}
