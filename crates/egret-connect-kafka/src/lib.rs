//! Kafka connectors over `rskafka` 0.6.0 (pure Rust, no consumer groups: Egret assigns partitions to the spout's
//! tasks itself and keeps the positions in its checkpoints).
//!
//! - [`KafkaSource`]: a spout reading a topic's partitions (partition `p` by task `p % parallelism`).
//! - [`KafkaSink`]: a bolt producing tuples as records, in batches.
//! - [`kafka_records`] and [`kafka_values`]: the source as a Streamlet source.

mod client;
mod sink;
mod source;
mod streamlet;

pub use client::{KafkaError, fnv1a};
pub use sink::{KafkaSink, KafkaSinkConfig};
pub use source::{KAFKA_SOURCE_FIELDS, KafkaSource, KafkaSourceConfig, StartAt, ValueFormat, partition_task};
pub use streamlet::{KafkaRecord, kafka_records, kafka_values};
