//! NATS JetStream connectors (issue 15): [`NatsSource`], a spout reading a stream through a pull consumer, and
//! [`NatsSink`], a bolt publishing tuples with JetStream acknowledgements, in batches. Each task runs the
//! `async-nats` client on a tokio runtime of its own (one worker thread) and blocks on each call (with timeouts).
//! [`nats_messages`] and [`nats_payloads`] are the source as a Streamlet source. See `docs/connectors.md`.

mod common;
mod sink;
mod source;
mod streamlet;

pub use common::NatsError;
pub use sink::{NatsSink, NatsSinkConfig};
pub use source::{NATS_SOURCE_FIELDS, NatsSource, NatsSourceConfig};
pub use streamlet::{NatsMessage, nats_messages, nats_payloads};
