//! The NATS JetStream source as a Streamlet source: [`nats_messages`] (each message with its subject and stream
//! sequence) and [`nats_payloads`] (the payloads alone). A [`NatsSource`] runs under each, so the delivery rules are
//! the spout's: a durable pull consumer acked at Egret's ack (NAKed at its fail) under at-least-once; under
//! effectively-once the stream sequence is the checkpointed state and a restore reads again from after it.

use egret_api::{Tuple, UserError};
use egret_streamlet::{Builder, Streamlet};
use serde::{Deserialize, Serialize};

use crate::source::{NatsSource, NatsSourceConfig};

/// One message as [`nats_messages`] gives it: the fields the spout emits (`NATS_SOURCE_FIELDS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatsMessage {
    pub subject: String,
    /// The stream sequence.
    pub sequence: u64,
    /// UTF-8, invalid bytes replaced.
    pub payload: String,
}

/// A source streamlet of the messages of `config.stream` (a [`NatsSource`] per task).
pub fn nats_messages(builder: &Builder, config: NatsSourceConfig) -> Streamlet<NatsMessage> {
    builder.new_spout_source(move || NatsSource::new(config.clone()), message)
}

/// A source streamlet of the payloads of `config.stream`'s messages; otherwise as [`nats_messages`].
pub fn nats_payloads(builder: &Builder, config: NatsSourceConfig) -> Streamlet<String> {
    builder.new_spout_source(
        move || NatsSource::new(config.clone()),
        |t| Ok(t.get_str("payload")?.to_string()),
    )
}

fn message(t: &Tuple<'_>) -> Result<NatsMessage, UserError> {
    Ok(NatsMessage {
        subject: t.get_str("subject")?.to_string(),
        sequence: u64::try_from(t.get_i64("sequence")?)?,
        payload: t.get_str("payload")?.to_string(),
    })
}
