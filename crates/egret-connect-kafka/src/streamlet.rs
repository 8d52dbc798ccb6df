//! The Kafka source as a Streamlet source: [`kafka_records`] (each record with its partition, offset and key) and
//! [`kafka_values`] (the values alone, as strings). A [`KafkaSource`] runs under each, so the delivery rules are the
//! spout's: under effectively-once the positions per partition are its checkpointed state and a rollback replays
//! exactly from the restored cut; under at-least-once failed records are emitted again.

use egret_api::{Tuple, UserError, ValueRef};
use egret_streamlet::{Builder, Streamlet};
use serde::{Deserialize, Serialize};

use crate::source::{KafkaSource, KafkaSourceConfig, ValueFormat};

/// One record as [`kafka_records`] gives it: the fields the spout emits (`KAFKA_SOURCE_FIELDS`), with the key and
/// the value as the bytes in the record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    /// `None` when the record has no key.
    pub key: Option<Vec<u8>>,
    /// Empty when the record has no value.
    pub value: Vec<u8>,
}

/// A source streamlet of the records of `config.topic` (a [`KafkaSource`] per task: partition `p` is read by task
/// `p % parallelism`). Keys and values are the record's bytes whatever `config.format` says.
pub fn kafka_records(builder: &Builder, config: KafkaSourceConfig) -> Streamlet<KafkaRecord> {
    let config = config.format(ValueFormat::Bytes);
    builder.new_spout_source(move || KafkaSource::new(config.clone()), record)
}

/// A source streamlet of the values of `config.topic`'s records as strings (invalid UTF-8 replaced by U+FFFD),
/// whatever `config.format` says; otherwise as [`kafka_records`].
pub fn kafka_values(builder: &Builder, config: KafkaSourceConfig) -> Streamlet<String> {
    let config = config.format(ValueFormat::String);
    builder.new_spout_source(
        move || KafkaSource::new(config.clone()),
        |t| Ok(t.get_str("value")?.to_string()),
    )
}

/// The element of a tuple the spout emitted with [`ValueFormat::Bytes`].
fn record(t: &Tuple<'_>) -> Result<KafkaRecord, UserError> {
    let key = match t.get("key")? {
        ValueRef::Null => None,
        ValueRef::Bytes(b) => Some(b.to_vec()),
        other => return Err(format!("kafka record key: expected bytes or null, got {other:?}").into()),
    };
    Ok(KafkaRecord {
        partition: i32::try_from(t.get_i64("partition")?)?,
        offset: t.get_i64("offset")?,
        key,
        value: t.get_bytes("value")?.to_vec(),
    })
}
