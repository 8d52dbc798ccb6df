//! The NATS JetStream sink: a bolt publishing one message per tuple to a subject of a stream, in batches — every
//! message of a batch is published, then every JetStream acknowledgement awaited.
//!
//! - **at-least-once**: a tuple is acked once the stream acknowledged its message; when a batch fails its tuples
//!   are failed, so they replay (a message may then be stored twice).
//! - **at-most-once**: tuples are acked when received; a batch that fails is dropped (`nats-sink-messages-dropped`).
//! - **effectively-once**: batches as above plus the rest at each `pre_save`; messages that cannot be published then
//!   are saved in the checkpoint and published after. A rollback's replay may publish a message twice: the output
//!   is at-least-once.
//!
//! A failed batch is attempted again with back-off (`nats-sink-retries`). A refused connection or a missing stream
//! fails `prepare` with the server's answer.

use std::time::Duration;

use async_nats::jetstream;
use egret_api::metrics::Counter;
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OutputDeclarer, ReliabilityMode, SinkBatch, Stateful, TopologyContext, Tuple,
    UserError, ValueRef,
};

use crate::common::{Backoff, IO_TIMEOUT, NatsError, connect, redact, runtime};

/// Where and how a [`NatsSink`] publishes.
#[derive(Debug, Clone)]
pub struct NatsSinkConfig {
    /// `nats://[user:password@]host:port`.
    pub url: String,
    /// The stream that stores `subject` (checked at `prepare`).
    pub stream: String,
    pub subject: String,
    /// The tuple field whose value is the message's payload (strings and bytes as they are, numbers as text).
    pub payload_field: String,
    pub batch_messages: usize,
    pub batch_interval: Duration,
    pub retry_max: Duration,
}

impl NatsSinkConfig {
    pub fn new(url: impl Into<String>, stream: impl Into<String>, subject: impl Into<String>) -> Self {
        NatsSinkConfig {
            url: url.into(),
            stream: stream.into(),
            subject: subject.into(),
            payload_field: "payload".into(),
            batch_messages: 500,
            batch_interval: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }

    pub fn payload_field(mut self, field: impl Into<String>) -> Self {
        self.payload_field = field.into();
        self
    }

    pub fn batch(mut self, messages: usize, interval: Duration) -> Self {
        self.batch_messages = messages.max(1);
        self.batch_interval = interval;
        self
    }

    pub fn retry_max(mut self, max: Duration) -> Self {
        self.retry_max = max;
        self
    }
}

struct Metrics {
    published: Counter,
    dropped: Counter,
    rejected: Counter,
    retries: Counter,
}

#[derive(Debug, thiserror::Error)]
#[error("nats sink: field {field}: {message}")]
struct PayloadError {
    field: String,
    message: String,
}

/// The NATS JetStream sink bolt (see the module documentation). Declares no output.
pub struct NatsSink {
    config: NatsSinkConfig,
    addr: String,
    mode: ReliabilityMode,
    rt: Option<tokio::runtime::Runtime>,
    js: Option<jetstream::Context>,
    backoff: Backoff,
    /// Payloads to publish.
    batch: SinkBatch<Vec<u8>>,
    metrics: Option<Metrics>,
}

impl NatsSink {
    pub fn new(config: NatsSinkConfig) -> Self {
        NatsSink {
            addr: redact(&config.url),
            backoff: Backoff::new(config.retry_max),
            batch: SinkBatch::new(config.batch_messages, config.batch_interval),
            config,
            mode: ReliabilityMode::AtMostOnce,
            rt: None,
            js: None,
            metrics: None,
        }
    }

    fn payload(&self, tuple: &Tuple<'_>) -> Result<Vec<u8>, PayloadError> {
        let field = self.config.payload_field.as_str();
        let err = |message: String| PayloadError {
            field: field.to_string(),
            message,
        };
        Ok(match tuple.get(field).map_err(|e| err(e.to_string()))? {
            ValueRef::Null => Vec::new(),
            ValueRef::Bool(b) => b.to_string().into_bytes(),
            ValueRef::I64(i) => i.to_string().into_bytes(),
            ValueRef::F64(f) => f.to_string().into_bytes(),
            ValueRef::Str(s) => s.as_bytes().to_vec(),
            ValueRef::Bytes(b) => b.to_vec(),
            ValueRef::List(_) | ValueRef::Map(_) => return Err(err("a list or map is not a payload".into())),
        })
    }

    /// Publishes `payloads` and waits for every acknowledgement.
    fn publish(&self, payloads: &[Vec<u8>]) -> Result<(), NatsError> {
        let (Some(rt), Some(js)) = (&self.rt, &self.js) else {
            return Err(NatsError::Config("the sink is not prepared".into()));
        };
        let request = |message: String| NatsError::Request {
            addr: self.addr.clone(),
            what: "publish",
            message,
        };
        let timeout = IO_TIMEOUT * 2;
        rt.block_on(async {
            let fut = async {
                let mut acks = Vec::with_capacity(payloads.len());
                for p in payloads {
                    let ack = js
                        .publish(self.config.subject.clone(), bytes::Bytes::from(p.clone()))
                        .await
                        .map_err(|e| request(e.to_string()))?;
                    acks.push(ack);
                }
                for ack in acks {
                    ack.await.map_err(|e| request(e.to_string()))?;
                }
                Ok(())
            };
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| NatsError::Timeout {
                    addr: self.addr.clone(),
                    what: "publish",
                    timeout,
                })?
        })
    }

    fn publish_failed(&mut self, e: &NatsError) {
        tracing::warn!(error = %e, "nats sink: publishing failed; retrying with back-off");
        self.backoff.failed();
        if let Some(m) = &self.metrics {
            m.retries.incr();
        }
    }

    fn flush(&mut self, out: &mut BoltCollector<'_>) {
        if self.batch.is_empty() {
            return;
        }
        let payloads = self.batch.take();
        let result = if self.backoff.ready() {
            self.publish(&payloads)
        } else {
            Err(NatsError::Request {
                addr: self.addr.clone(),
                what: "publish",
                message: "waiting to retry".into(),
            })
        };
        match result {
            Ok(()) => {
                self.backoff.reset();
                if let Some(m) = &self.metrics {
                    m.published.incr_by(payloads.len() as u64);
                }
                self.batch.written(out);
            }
            Err(e) => {
                if self.backoff.ready() {
                    self.publish_failed(&e);
                }
                match self.mode {
                    ReliabilityMode::AtLeastOnce => self.batch.failed(out),
                    ReliabilityMode::AtMostOnce => {
                        if let Some(m) = &self.metrics {
                            m.dropped.incr_by(payloads.len() as u64);
                        }
                    }
                    ReliabilityMode::EffectivelyOnce => self.batch.keep(payloads),
                }
            }
        }
    }
}

impl Bolt for NatsSink {
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        if self.config.stream.is_empty() || self.config.subject.is_empty() {
            return Err(NatsError::Config("a sink needs a stream and a subject".into()).into());
        }
        self.mode = ctx.config().reliability_mode()?;
        self.metrics = Some(Metrics {
            published: ctx.register_counter("nats-sink-messages-published", Duration::from_secs(1))?,
            dropped: ctx.register_counter("nats-sink-messages-dropped", Duration::from_secs(1))?,
            rejected: ctx.register_counter("nats-sink-messages-rejected", Duration::from_secs(1))?,
            retries: ctx.register_counter("nats-sink-retries", Duration::from_secs(1))?,
        });
        let rt = runtime()?;
        let js = connect(&rt, &self.config.url)?;
        let stream = rt.block_on(async {
            tokio::time::timeout(IO_TIMEOUT, js.get_stream(&self.config.stream))
                .await
                .map_err(|_| "no answer".to_string())?
                .map_err(|e| e.to_string())
        });
        if let Err(message) = stream {
            return Err(NatsError::Stream {
                addr: self.addr.clone(),
                stream: self.config.stream.clone(),
                message,
            }
            .into());
        }
        self.js = Some(js);
        self.rt = Some(rt);
        tracing::info!(addr = %self.addr, subject = %self.config.subject, mode = self.mode.as_str(), "nats sink: ready");
        Ok(())
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if !tuple.is_tick() {
            match self.payload(tuple) {
                Ok(p) => self.batch.push(p, tuple, self.mode, out),
                Err(e) => {
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
            let payloads = self.batch.take();
            if let Err(e) = self.publish(&payloads) {
                tracing::warn!(error = %e, messages = payloads.len(), "nats sink: messages not published at cleanup");
            }
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for NatsSink {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        let payloads: Vec<Vec<u8>> = match restored {
            None => Vec::new(),
            Some(bytes) => postcard::from_bytes(bytes).map_err(NatsError::BadState)?,
        };
        self.batch.drop_items();
        self.batch.keep(payloads);
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        if !self.batch.is_empty() {
            let payloads = self.batch.take();
            match self.publish(&payloads) {
                Ok(()) => {
                    if let Some(m) = &self.metrics {
                        m.published.incr_by(payloads.len() as u64);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, messages = payloads.len(), "nats sink: messages kept in the checkpoint");
                    self.batch.keep(payloads);
                }
            }
        }
        out.extend_from_slice(&postcard::to_stdvec(self.batch.items())?);
        Ok(())
    }
}
