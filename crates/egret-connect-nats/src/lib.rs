//! NATS JetStream connectors (issue 15): [`NatsSource`], a spout reading a stream through a pull consumer, and
//! [`NatsSink`], a bolt publishing tuples with JetStream acknowledgements, in batches. Each task runs the
//! `async-nats` client on a tokio runtime of its own (one worker thread) and blocks on each call (with timeouts). See
//! `docs/connectors.md`.

mod common;
mod sink;
mod source;

pub use common::NatsError;
pub use sink::{NatsSink, NatsSinkConfig};
pub use source::{NatsSource, NatsSourceConfig};
