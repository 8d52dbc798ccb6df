//! The NATS JetStream source: a spout reading a stream through a pull consumer (`fetch`, without waiting).
//!
//! - **at-least-once**: a durable pull consumer (`durable`, explicit acks) shared by the spout's tasks, which the
//!   server spreads the messages over. A message is emitted with a message id and acknowledged (`ack`) when Egret
//!   acks its tuple tree; a failed (or timed-out) tuple is negatively acknowledged (`NAK`), so the server delivers
//!   it again at once. A message whose ack is lost (a task killed) is delivered again after the consumer's
//!   `ack_wait` (keep it longer than `topology.message.timeout.secs`).
//! - **effectively-once**: the state is the last stream sequence this task went past. Each task reads the stream
//!   through an ephemeral consumer of its own (no acks) starting after that sequence, and takes the messages whose
//!   stream sequence modulo the parallelism is its index: a rollback reads again exactly what followed the
//!   restored cut. (Every task reads the whole stream: with one task nothing is wasted.)
//! - **at-most-once**: the durable consumer; messages are acknowledged when emitted.
//!
//! Emits `subject`, `sequence` (the stream sequence) and `payload` (UTF-8, invalid bytes replaced).
//!
//! The client reconnects by itself when the server goes away; a fetch or ack that fails meanwhile is attempted again
//! with back-off (100 ms doubling to `retry_max`; `nats-source-retries`), and acks not sent yet are kept. A
//! connection refused or a missing stream fails `open` with the server's answer.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use egret_api::metrics::Counter;
use egret_api::{
    CheckpointId, MessageId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector, Stateful, TopologyContext,
    UserError, Value,
};
use futures_util::StreamExt;

use crate::common::{Backoff, IO_TIMEOUT, NatsError, connect, redact, runtime};

/// Where and how a [`NatsSource`] reads.
#[derive(Debug, Clone)]
pub struct NatsSourceConfig {
    /// `nats://[user:password@]host:port`.
    pub url: String,
    /// The JetStream stream (it must exist).
    pub stream: String,
    /// The durable consumer's name (at-most/at-least-once); created if missing.
    pub durable: String,
    /// Only messages of subjects matching this filter (empty: every subject of the stream).
    pub filter_subject: String,
    /// Messages asked for per fetch.
    pub count: usize,
    /// The durable consumer's ack wait: an unacknowledged message is delivered again after it.
    pub ack_wait: Duration,
    pub retry_max: Duration,
}

impl NatsSourceConfig {
    pub fn new(url: impl Into<String>, stream: impl Into<String>, durable: impl Into<String>) -> Self {
        NatsSourceConfig {
            url: url.into(),
            stream: stream.into(),
            durable: durable.into(),
            filter_subject: String::new(),
            count: 256,
            ack_wait: Duration::from_secs(60),
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn filter_subject(mut self, filter: impl Into<String>) -> Self {
        self.filter_subject = filter.into();
        self
    }

    pub fn count(mut self, count: usize) -> Self {
        self.count = count.max(1);
        self
    }

    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    pub fn retry_max(mut self, max: Duration) -> Self {
        self.retry_max = max;
        self
    }
}

/// The fields a NATS source emits.
pub const NATS_SOURCE_FIELDS: [&str; 3] = ["subject", "sequence", "payload"];

struct Metrics {
    messages: Counter,
    retries: Counter,
}

/// The NATS JetStream source spout (see the module documentation).
pub struct NatsSource {
    config: NatsSourceConfig,
    addr: String,
    mode: ReliabilityMode,
    task_index: u64,
    tasks: u64,
    rt: Option<tokio::runtime::Runtime>,
    js: Option<jetstream::Context>,
    consumer: Option<PullConsumer>,
    backoff: Backoff,
    /// Effectively-once: the last stream sequence this task went past (emitted or another task's).
    position: u64,
    next_id: MessageId,
    pending: HashMap<MessageId, jetstream::Message>,
    /// Acks and NAKs not sent yet.
    to_ack: Vec<(jetstream::Message, bool)>,
    metrics: Option<Metrics>,
}

impl NatsSource {
    pub fn new(config: NatsSourceConfig) -> Self {
        NatsSource {
            addr: redact(&config.url),
            backoff: Backoff::new(config.retry_max),
            config,
            mode: ReliabilityMode::AtMostOnce,
            task_index: 0,
            tasks: 1,
            rt: None,
            js: None,
            consumer: None,
            position: 0,
            next_id: 0,
            pending: HashMap::new(),
            to_ack: Vec::new(),
            metrics: None,
        }
    }

    /// Messages emitted under at-least-once whose trees are not complete yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The consumer this task reads through (created or looked up).
    fn make_consumer(&self) -> Result<PullConsumer, NatsError> {
        let (Some(rt), Some(js)) = (&self.rt, &self.js) else {
            return Err(NatsError::Config("the source is not open".into()));
        };
        let stream_err = |message: String| NatsError::Stream {
            addr: self.addr.clone(),
            stream: self.config.stream.clone(),
            message,
        };
        rt.block_on(async {
            let fut = async {
                let stream = js
                    .get_stream(&self.config.stream)
                    .await
                    .map_err(|e| stream_err(e.to_string()))?;
                let consumer = if self.mode == ReliabilityMode::EffectivelyOnce {
                    stream
                        .create_consumer(pull::Config {
                            deliver_policy: DeliverPolicy::ByStartSequence {
                                start_sequence: self.position + 1,
                            },
                            ack_policy: AckPolicy::None,
                            filter_subject: self.config.filter_subject.clone(),
                            inactive_threshold: Duration::from_secs(30),
                            ..Default::default()
                        })
                        .await
                } else {
                    stream
                        .get_or_create_consumer(
                            &self.config.durable,
                            pull::Config {
                                durable_name: Some(self.config.durable.clone()),
                                deliver_policy: DeliverPolicy::All,
                                ack_policy: AckPolicy::Explicit,
                                ack_wait: self.config.ack_wait,
                                // Egret bounds what is in flight (`topology.max.spout.pending`); the server's own
                                // bound (1000 by default) would make fetches of a busy consumer wait.
                                max_ack_pending: -1,
                                filter_subject: self.config.filter_subject.clone(),
                                ..Default::default()
                            },
                        )
                        .await
                };
                consumer.map_err(|e| stream_err(format!("consumer: {e}")))
            };
            tokio::time::timeout(IO_TIMEOUT * 2, fut)
                .await
                .map_err(|_| NatsError::Timeout {
                    addr: self.addr.clone(),
                    what: "creating the consumer",
                    timeout: IO_TIMEOUT * 2,
                })?
        })
    }

    fn failed(&mut self, e: &NatsError, out: &mut SpoutCollector<'_>) {
        tracing::warn!(error = %e, "nats source: request failed; retrying with back-off");
        if self.backoff.ready() {
            out.report_error(e);
        }
        self.backoff.failed();
        if let Some(m) = &self.metrics {
            m.retries.incr();
        }
    }

    /// Sends the queued acks and NAKs; those that fail are kept.
    fn flush_acks(&mut self) -> Result<(), NatsError> {
        if self.to_ack.is_empty() {
            return Ok(());
        }
        let Some(rt) = &self.rt else {
            return Ok(());
        };
        let mut failed = None;
        let mut kept = Vec::new();
        rt.block_on(async {
            for (msg, ok) in self.to_ack.drain(..) {
                if failed.is_some() {
                    kept.push((msg, ok));
                    continue;
                }
                let r = if ok {
                    msg.ack().await
                } else {
                    msg.ack_with(AckKind::Nak(None)).await
                };
                if let Err(e) = r {
                    failed = Some(e.to_string());
                    kept.push((msg, ok));
                }
            }
        });
        self.to_ack = kept;
        match failed {
            None => Ok(()),
            Some(message) => Err(NatsError::Request {
                addr: self.addr.clone(),
                what: "ack",
                message,
            }),
        }
    }

    /// Fetches what is there now (without waiting).
    fn fetch(&mut self) -> Result<Vec<jetstream::Message>, NatsError> {
        if self.consumer.is_none() {
            self.consumer = Some(self.make_consumer()?);
        }
        let (Some(rt), Some(consumer)) = (&self.rt, &self.consumer) else {
            return Ok(Vec::new());
        };
        let count = self.config.count;
        let addr = self.addr.clone();
        let request = |message: String| NatsError::Request {
            addr: addr.clone(),
            what: "fetch",
            message,
        };
        rt.block_on(async {
            let fut = async {
                let mut batch = consumer
                    .fetch()
                    .max_messages(count)
                    .messages()
                    .await
                    .map_err(|e| request(e.to_string()))?;
                let mut got = Vec::new();
                while let Some(m) = batch.next().await {
                    got.push(m.map_err(|e| request(e.to_string()))?);
                }
                Ok(got)
            };
            tokio::time::timeout(IO_TIMEOUT, fut)
                .await
                .map_err(|_| NatsError::Timeout {
                    addr: addr.clone(),
                    what: "fetch",
                    timeout: IO_TIMEOUT,
                })?
        })
    }

    fn emit(&mut self, msg: jetstream::Message, out: &mut SpoutCollector<'_>) {
        let Ok(sequence) = msg.info().map(|i| i.stream_sequence) else {
            tracing::warn!(subject = %msg.subject, "nats source: a message without JetStream metadata; skipped");
            return;
        };
        if self.mode == ReliabilityMode::EffectivelyOnce {
            if sequence <= self.position {
                return;
            }
            self.position = sequence;
            if sequence % self.tasks != self.task_index {
                return;
            }
        }
        let values = vec![
            Value::Str(msg.subject.to_string()),
            Value::I64(sequence as i64),
            Value::Str(String::from_utf8_lossy(&msg.payload).into_owned()),
        ];
        match self.mode {
            ReliabilityMode::AtLeastOnce => {
                let id = self.next_id;
                self.next_id += 1;
                out.emit_with_id(id, values);
                self.pending.insert(id, msg);
            }
            ReliabilityMode::EffectivelyOnce => out.emit(values),
            ReliabilityMode::AtMostOnce => {
                out.emit(values);
                self.to_ack.push((msg, true));
            }
        }
        if let Some(m) = &self.metrics {
            m.messages.incr();
        }
    }
}

impl Spout for NatsSource {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(NATS_SOURCE_FIELDS);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        if self.config.stream.is_empty() || self.config.durable.is_empty() {
            return Err(NatsError::Config("a source needs a stream and a durable consumer name".into()).into());
        }
        self.mode = ctx.config().reliability_mode()?;
        self.task_index = u64::from(ctx.component_index());
        self.tasks = u64::from(ctx.parallelism().max(1));
        self.metrics = Some(Metrics {
            messages: ctx.register_counter("nats-source-messages", Duration::from_secs(1))?,
            retries: ctx.register_counter("nats-source-retries", Duration::from_secs(1))?,
        });
        let rt = runtime()?;
        self.js = Some(connect(&rt, &self.config.url)?);
        self.rt = Some(rt);
        // A missing stream or a refused consumer stops the start here, with the server's answer.
        self.consumer = Some(self.make_consumer()?);
        tracing::info!(
            addr = %self.addr,
            stream = %self.config.stream,
            durable = %self.config.durable,
            mode = self.mode.as_str(),
            position = self.position,
            "nats source: open"
        );
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if !self.backoff.ready() {
            return;
        }
        if let Err(e) = self.flush_acks() {
            self.failed(&e, out);
            return;
        }
        match self.fetch() {
            Ok(messages) => {
                self.backoff.reset();
                for m in messages {
                    self.emit(m, out);
                }
            }
            Err(e) => {
                // Under effectively-once the ephemeral consumer may be gone with the server: made again from the
                // position.
                if self.mode == ReliabilityMode::EffectivelyOnce {
                    self.consumer = None;
                }
                self.failed(&e, out);
            }
        }
        if self.mode == ReliabilityMode::AtMostOnce
            && let Err(e) = self.flush_acks()
        {
            self.failed(&e, out);
        }
    }

    fn ack(&mut self, id: MessageId) {
        if let Some(m) = self.pending.remove(&id) {
            self.to_ack.push((m, true));
        }
    }

    fn fail(&mut self, id: MessageId) {
        // The server delivers it again (a new fetch emits it with a new id).
        if let Some(m) = self.pending.remove(&id) {
            self.to_ack.push((m, false));
        }
    }

    fn close(&mut self) {
        if let Err(e) = self.flush_acks() {
            tracing::warn!(error = %e, "nats source: acks not sent at close (delivered again after ack_wait)");
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for NatsSource {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.position = match restored {
            None => 0,
            Some(bytes) => postcard::from_bytes(bytes).map_err(NatsError::BadState)?,
        };
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&postcard::to_stdvec(&self.position)?);
        Ok(())
    }
}
