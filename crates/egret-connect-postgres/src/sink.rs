//! The PostgreSQL sink bolt: each tuple is a row (a value per column, from the tuple's field of the column's name),
//! written in batches into an upsert table (`ON CONFLICT (key) DO UPDATE`) or an append-only table.
//!
//! - **at-most-once**: a batch is written when it has `batch_rows` rows or its oldest is `batch_interval` old; a
//!   batch that cannot be written is dropped (counted in `postgres-sink-rows-dropped`).
//! - **at-least-once**: the same batches; a tuple is acked once its row is committed and failed (so it replays) when
//!   its batch could not be written. Replays do not duplicate rows in an upsert table (the key absorbs them); an
//!   append-only table gets a replayed row again.
//! - **effectively-once**: a two-phase sink. Rows are buffered between checkpoints; at a checkpoint's `pre_save` they
//!   are written in one transaction that is prepared (`PREPARE TRANSACTION '<topology>-<task>-<checkpoint>'`),
//!   durable and invisible; when the checkpoint is complete (`post_save`) it is committed (`COMMIT PREPARED`). On a
//!   rollback to checkpoint C the prepared transactions of this task up to C are committed (C is complete: only their
//!   commit was lost) and later ones rolled back (their rows are produced again by the replay), found in
//!   `pg_prepared_xacts` by their gid's prefix. So each row is in the table exactly once, in an append-only table
//!   too. When a checkpoint's rows cannot be prepared (the server is away, or an earlier prepared transaction of this
//!   task is not committed yet and could hold the same rows' locks) they are saved in the checkpoint's state instead,
//!   and written with the next checkpoint's transaction: the checkpoint still completes and nothing is lost.
//!
//! A server that goes away is retried with back-off (100 ms doubling to `retry_max`), counted in
//! `postgres-sink-retries`, with `postgres-sink-connected` 0 meanwhile. Configuration errors (bad address, wrong
//! credentials, a missing table or column, a conflict key without a unique index) stop the task at `prepare` with the
//! server's answer.

use std::collections::HashMap;
use std::time::Duration;

use egret_api::metrics::{Counter, Gauge};
use egret_api::value::ValueRef;
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OutputDeclarer, ReliabilityMode, SinkBatch, Stateful, TopologyContext, Tuple,
    UserError,
};
use serde::{Deserialize, Serialize};

use crate::writer::{Finish, PgWriter, PostgresSinkError, Row, TableSpec};
use egret_api::retry::Backoff;

/// Where and how a [`PostgresSink`] writes.
#[derive(Debug, Clone)]
pub struct PostgresSinkConfig {
    /// A libpq-style connection string (`host=... port=... user=... password=... dbname=...`) or a
    /// `postgresql://` URL.
    pub connection: String,
    pub table: String,
    /// The columns written; each value comes from the tuple's field of the same name.
    pub columns: Vec<String>,
    /// Upsert on this key (it needs a unique index); empty: append-only.
    pub key: Vec<String>,
    /// At-most/at-least-once: a batch is written at this many rows...
    pub batch_rows: usize,
    /// ... or when its oldest row is this old (checked at each tuple and tick: give the sink a tick).
    pub batch_interval: Duration,
    /// The longest wait between two connection attempts.
    pub retry_max: Duration,
}

impl PostgresSinkConfig {
    /// An upsert table: a row per `key`, updated with the newest values.
    pub fn upsert(connection: impl Into<String>, table: impl Into<String>, columns: &[&str], key: &[&str]) -> Self {
        PostgresSinkConfig {
            connection: connection.into(),
            table: table.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            key: key.iter().map(|c| c.to_string()).collect(),
            batch_rows: 500,
            batch_interval: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }

    /// An append-only table: every row inserted.
    pub fn append(connection: impl Into<String>, table: impl Into<String>, columns: &[&str]) -> Self {
        Self::upsert(connection, table, columns, &[])
    }

    pub fn batch(mut self, rows: usize, interval: Duration) -> Self {
        self.batch_rows = rows.max(1);
        self.batch_interval = interval;
        self
    }

    pub fn retry_max(mut self, max: Duration) -> Self {
        self.retry_max = max;
        self
    }
}

/// What an effectively-once sink saves at a checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    checkpoint: u64,
    /// Rows that belong to the checkpoint but are in no prepared transaction: written by the next one.
    rows: Vec<Row>,
    /// Checkpoints whose prepared transaction must not be committed, if it exists (its rows are in `rows`, or in a
    /// later transaction): a write that failed after `PREPARE TRANSACTION` was sent may still have prepared it.
    abandoned: Vec<u64>,
}

struct Metrics {
    rows_written: Counter,
    rows_rejected: Counter,
    rows_dropped: Counter,
    retries: Counter,
    connected: Gauge,
}

/// The PostgreSQL sink bolt (see the module documentation). Declares no output.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    mode: ReliabilityMode,
    writer: Option<PgWriter>,
    /// `<topology>-<task>-`: this task's prepared transactions.
    gid_prefix: String,
    /// At-most/at-least-once: the next batch; effectively-once: the rows since the last checkpoint.
    batch: SinkBatch<Row>,
    backoff: Backoff,
    /// Effectively-once: what `init_state` restored, settled at `prepare`.
    restored: Option<SavedState>,
    /// Effectively-once: checkpoints prepared by this task and not yet committed, oldest first.
    prepared: Vec<u64>,
    /// Effectively-once: the newest complete checkpoint (commit every prepared one up to it).
    complete: Option<u64>,
    abandoned: Vec<u64>,
    key_positions: Vec<usize>,
    metrics: Option<Metrics>,
}

impl PostgresSink {
    pub fn new(config: PostgresSinkConfig) -> Self {
        let key_positions = config
            .key
            .iter()
            .filter_map(|k| config.columns.iter().position(|c| c == k))
            .collect();
        PostgresSink {
            backoff: Backoff::new(config.retry_max),
            batch: SinkBatch::new(config.batch_rows, config.batch_interval),
            config,
            mode: ReliabilityMode::AtMostOnce,
            writer: None,
            gid_prefix: String::new(),
            restored: None,
            prepared: Vec::new(),
            complete: None,
            abandoned: Vec::new(),
            key_positions,
            metrics: None,
        }
    }

    fn gid(&self, checkpoint: u64) -> String {
        format!("{}{checkpoint}", self.gid_prefix)
    }

    /// The row of a tuple: each column's value from the field of its name, as text (the server casts it).
    fn row(&self, tuple: &Tuple<'_>) -> Result<Row, PostgresSinkError> {
        let mut row = Vec::with_capacity(self.config.columns.len());
        for column in &self.config.columns {
            let value = tuple
                .get(column.as_str())
                .map_err(|_| PostgresSinkError::MissingField {
                    field: column.clone(),
                    column: column.clone(),
                })?;
            row.push(match value {
                ValueRef::Null => None,
                ValueRef::Bool(b) => Some(b.to_string()),
                ValueRef::I64(n) => Some(n.to_string()),
                ValueRef::F64(x) if x.is_nan() => Some("NaN".into()),
                ValueRef::F64(x) if x.is_infinite() => Some(if x > 0.0 { "Infinity" } else { "-Infinity" }.into()),
                ValueRef::F64(x) => Some(x.to_string()),
                ValueRef::Str(s) => Some(s.to_string()),
                ValueRef::Bytes(b) => {
                    let mut hex = String::with_capacity(2 + 2 * b.len());
                    hex.push_str("\\x");
                    for byte in b {
                        hex.push_str(&format!("{byte:02x}"));
                    }
                    Some(hex)
                }
                ValueRef::List(_) | ValueRef::Map(_) => {
                    return Err(PostgresSinkError::UnsupportedValue { field: column.clone() });
                }
            });
        }
        Ok(row)
    }

    /// Upsert tables: one row per key, the last one (a statement may not update a row twice).
    fn rows_to_write(&self, rows: &[Row]) -> Vec<Row> {
        if self.key_positions.is_empty() {
            return rows.to_vec();
        }
        let mut last: HashMap<Vec<Option<&str>>, usize> = HashMap::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let key = self.key_positions.iter().map(|&p| row[p].as_deref()).collect();
            last.insert(key, i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|i| rows[i].clone()).collect()
    }

    /// Connected, or why not (waiting out the back-off, or this attempt failed).
    fn ensure_connected(&mut self) -> Result<(), PostgresSinkError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(PostgresSinkError::NotConnected {
                server: self.config.table.clone(),
                retry_in: Duration::ZERO,
            });
        };
        if writer.is_connected() {
            return Ok(());
        }
        if let Some(retry_in) = self.backoff.wait() {
            return Err(PostgresSinkError::NotConnected {
                server: writer.server().to_string(),
                retry_in,
            });
        }
        match writer.connect() {
            Ok(()) => {
                self.backoff.reset();
                if let Some(m) = &self.metrics {
                    m.connected.set(1.0);
                }
                if self.mode == ReliabilityMode::EffectivelyOnce {
                    self.settle_abandoned();
                }
                Ok(())
            }
            Err(e) => {
                self.connection_failed(&e);
                Err(e)
            }
        }
    }

    fn connection_failed(&mut self, e: &PostgresSinkError) {
        self.backoff.failed();
        if let Some(m) = &self.metrics {
            m.retries.incr();
            m.connected.set(0.0);
        }
        tracing::warn!(
            table = %self.config.table,
            error = %e,
            retry_in_ms = self.backoff.wait().map_or(0, |d| d.as_millis() as u64),
            "postgres sink: server unavailable"
        );
    }

    /// After an error: a lost connection starts the back-off.
    fn after_error(&mut self, e: &PostgresSinkError) {
        if e.is_connection_lost() {
            self.connection_failed(e);
        }
    }

    fn count(&self, written: &crate::writer::Written) {
        if let Some(m) = &self.metrics {
            m.rows_written.incr_by(written.rows);
            m.rows_rejected.incr_by(written.rejected.len() as u64);
        }
    }

    /// At-most/at-least-once: writes the buffered rows in a committed transaction; acks or fails their tuples.
    fn flush(&mut self, out: &mut BoltCollector<'_>) {
        if self.batch.is_empty() {
            return;
        }
        let rows = self.rows_to_write(self.batch.items());
        let result = self.ensure_connected().and_then(|()| match self.writer.as_mut() {
            Some(w) => w.write(&rows, Finish::Commit),
            None => Ok(Default::default()),
        });
        match result {
            Ok(written) => {
                self.count(&written);
                if let Some((_, e)) = written.rejected.first() {
                    let e = format!("postgres sink: {} rows refused, e.g. {e}", written.rejected.len());
                    out.report_error(&*UserError::from(e));
                }
                self.batch.written(out);
            }
            Err(e) => {
                self.after_error(&e);
                out.report_error(&e);
                if let Some(m) = &self.metrics
                    && self.mode == ReliabilityMode::AtMostOnce
                {
                    m.rows_dropped.incr_by(self.batch.len() as u64);
                }
                self.batch.failed(out);
            }
        }
        self.batch.drop_items();
    }

    /// Effectively-once: commits the prepared transactions up to the newest complete checkpoint.
    fn commit_complete(&mut self) {
        let Some(complete) = self.complete else { return };
        while let Some(&checkpoint) = self.prepared.first() {
            if checkpoint > complete {
                break;
            }
            if let Err(e) = self.ensure_connected() {
                tracing::debug!(error = %e, "postgres sink: commit waits for the server");
                return;
            }
            let gid = self.gid(checkpoint);
            let Some(writer) = self.writer.as_mut() else { return };
            match writer.commit_prepared(&gid) {
                Ok(()) => {
                    tracing::debug!(gid = %gid, "postgres sink: committed");
                    self.prepared.remove(0);
                }
                Err(e) => {
                    tracing::warn!(gid = %gid, error = %e, "postgres sink: COMMIT PREPARED failed; retried later");
                    self.after_error(&e);
                    return;
                }
            }
        }
    }

    /// Effectively-once: rolls back the transactions that may have been prepared by a write that failed.
    fn settle_abandoned(&mut self) {
        while let Some(&checkpoint) = self.abandoned.first() {
            let gid = self.gid(checkpoint);
            let Some(writer) = self.writer.as_mut() else { return };
            match writer.rollback_prepared(&gid) {
                Ok(()) => {
                    self.abandoned.remove(0);
                }
                Err(e) => {
                    tracing::warn!(gid = %gid, error = %e, "postgres sink: ROLLBACK PREPARED failed; retried later");
                    if e.is_connection_lost() {
                        self.backoff.failed();
                    }
                    return;
                }
            }
        }
    }

    /// Effectively-once, at `prepare`: settles what earlier runs of this task prepared, against the restored state
    /// (none: a clean start, where every prepared transaction of this task is rolled back).
    fn settle_restored(&mut self) -> Result<(), PostgresSinkError> {
        let restored = self.restored.take();
        let restored_checkpoint = restored.as_ref().map(|s| s.checkpoint);
        let restored = restored.unwrap_or_default();
        let prefix = self.gid_prefix.clone();
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut gids: Vec<(u64, String)> = writer
            .prepared_gids(&prefix)?
            .into_iter()
            .filter_map(|gid| Some((gid[prefix.len()..].parse::<u64>().ok()?, gid)))
            .collect();
        gids.sort();
        for (checkpoint, gid) in gids {
            if restored_checkpoint.is_some_and(|r| checkpoint <= r) && !restored.abandoned.contains(&checkpoint) {
                writer.commit_prepared(&gid)?;
                tracing::info!(gid = %gid, "postgres sink: committed at restore (its checkpoint is complete)");
            } else {
                writer.rollback_prepared(&gid)?;
                tracing::info!(gid = %gid, "postgres sink: rolled back at restore (not in the restored checkpoint)");
            }
        }
        self.batch.drop_items();
        self.batch.keep(restored.rows);
        Ok(())
    }

    /// Effectively-once `pre_save`: prepares the rows since the last checkpoint, or saves them in the state.
    fn save(&mut self, checkpoint: u64) -> SavedState {
        self.commit_complete();
        let mut state = SavedState {
            checkpoint,
            rows: Vec::new(),
            abandoned: self.abandoned.clone(),
        };
        if self.batch.is_empty() {
            return state;
        }
        // An earlier prepared transaction still open may hold locks on the same rows: waiting for it here would wait
        // for this very task's commit.
        let prepared_open = !self.prepared.is_empty();
        let written = if prepared_open {
            Err(None)
        } else {
            self.ensure_connected().map_err(Some).and_then(|()| {
                let rows = self.rows_to_write(self.batch.items());
                let gid = self.gid(checkpoint);
                match self.writer.as_mut() {
                    Some(w) => w.write(&rows, Finish::Prepare(&gid)).map_err(Some),
                    None => Err(None),
                }
            })
        };
        match written {
            Ok(written) => {
                self.count(&written);
                if let Some((_, e)) = written.rejected.first() {
                    tracing::warn!(checkpoint, rejected = written.rejected.len(), error = %e, "postgres sink: rows refused");
                }
                self.prepared.push(checkpoint);
                self.batch.drop_items();
            }
            Err(error) => {
                if let Some(e) = &error {
                    tracing::warn!(checkpoint, error = %e, rows = self.batch.len(), "postgres sink: rows kept in the checkpoint's state");
                    self.after_error(e);
                    // The write may have prepared the transaction before it failed: it must never be committed.
                    self.abandoned.push(checkpoint);
                    state.abandoned.push(checkpoint);
                }
                state.rows = self.batch.items().to_vec();
            }
        }
        state
    }
}

impl Bolt for PostgresSink {
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.mode = ctx.config().reliability_mode()?;
        self.gid_prefix = format!("{}-{}-", ctx.topology_name(), ctx.task_id().0);
        let spec = TableSpec {
            table: self.config.table.clone(),
            columns: self.config.columns.clone(),
            key: self.config.key.clone(),
        };
        let mut writer = PgWriter::new(&self.config.connection, spec)?;
        // Configuration errors (address, credentials, table, columns, key) stop the task here, with the server's
        // answer.
        writer.connect()?;
        self.writer = Some(writer);
        let interval = Duration::from_secs(1);
        let metrics = Metrics {
            rows_written: ctx.register_counter("postgres-sink-rows-written", interval)?,
            rows_rejected: ctx.register_counter("postgres-sink-rows-rejected", interval)?,
            rows_dropped: ctx.register_counter("postgres-sink-rows-dropped", interval)?,
            retries: ctx.register_counter("postgres-sink-retries", interval)?,
            connected: ctx.register_gauge("postgres-sink-connected", interval)?,
        };
        metrics.connected.set(1.0);
        self.metrics = Some(metrics);
        if self.mode == ReliabilityMode::EffectivelyOnce {
            self.settle_restored()?;
        }
        tracing::info!(
            table = %self.config.table,
            task = ctx.task_id().0,
            mode = self.mode.as_str(),
            upsert = !self.config.key.is_empty(),
            "postgres sink: ready"
        );
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if !tuple.is_tick() {
            match self.row(tuple) {
                Ok(row) => self.batch.push(row, tuple, self.mode, out),
                Err(e) => {
                    // Replaying it would fail the same way.
                    out.report_error(&e);
                    if let Some(m) = &self.metrics {
                        m.rows_rejected.incr();
                    }
                    out.ack(tuple);
                }
            }
        }
        match self.mode {
            ReliabilityMode::EffectivelyOnce => {
                if tuple.is_tick() {
                    self.commit_complete();
                }
            }
            _ => {
                if self.batch.is_due() {
                    self.flush(out);
                }
            }
        }
    }

    fn cleanup(&mut self) {
        if self.mode == ReliabilityMode::AtMostOnce && !self.batch.is_empty() {
            let rows = self.rows_to_write(self.batch.items());
            if let Some(w) = self.writer.as_mut()
                && let Err(e) = w.write(&rows, Finish::Commit)
            {
                tracing::warn!(error = %e, "postgres sink: last batch not written");
            }
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for PostgresSink {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.restored = match restored {
            None => None,
            Some(bytes) => Some(postcard::from_bytes(bytes).map_err(PostgresSinkError::BadState)?),
        };
        Ok(())
    }

    fn pre_save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        let state = self.save(checkpoint.0);
        out.extend_from_slice(&postcard::to_stdvec(&state)?);
        Ok(())
    }

    fn post_save(&mut self, checkpoint: CheckpointId) {
        self.complete = self.complete.max(Some(checkpoint.0));
        self.commit_complete();
    }

    fn pre_restore(&mut self, checkpoint: Option<CheckpointId>) {
        // The fresh component settles everything at its prepare; rolling back here only releases locks sooner.
        let later: Vec<u64> = self
            .prepared
            .iter()
            .copied()
            .filter(|&c| checkpoint.is_none_or(|r| c > r.0))
            .collect();
        for c in later {
            let gid = self.gid(c);
            if let Some(w) = self.writer.as_mut()
                && w.is_connected()
                && let Err(e) = w.rollback_prepared(&gid)
            {
                tracing::warn!(gid = %gid, error = %e, "postgres sink: ROLLBACK PREPARED at rollback failed");
            }
        }
    }
}
