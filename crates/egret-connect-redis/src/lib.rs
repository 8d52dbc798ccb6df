//! Redis Streams connectors (issue 15): [`RedisSource`], a spout reading streams through a consumer group, and
//! [`RedisSink`], a bolt appending tuples to a stream with pipelined `XADD`s. Both use the `redis` crate's
//! synchronous connection: a task is one thread, and it blocks on each call (with timeouts). [`redis_entries`] is the
//! source as a Streamlet source. See `docs/connectors.md`.

mod conn;
mod sink;
mod source;
mod streamlet;

pub use conn::{EntryId, RedisError};
pub use sink::{RedisSink, RedisSinkConfig};
pub use source::{GroupStart, RedisSource, RedisSourceConfig};
pub use streamlet::{RedisEntry, redis_entries};
