//! The Redis Streams source as a Streamlet source: [`redis_entries`], each entry with its stream, id and the
//! configured fields. A [`RedisSource`] runs under it, so the delivery rules are the spout's: a consumer group with
//! one consumer per task; `XACK` at Egret's ack under at-least-once, at the checkpoint after the entry under
//! effectively-once, whose state is the last emitted id per stream.

use std::collections::BTreeMap;

use egret_api::{Tuple, UserError};
use egret_streamlet::{Builder, Streamlet};
use serde::{Deserialize, Serialize};

use crate::conn::EntryId;
use crate::source::{RedisSource, RedisSourceConfig};

/// One entry as [`redis_entries`] gives it: the fields the spout emits (`stream`, `id`, then the configured entry
/// fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisEntry {
    pub stream: String,
    pub id: EntryId,
    /// Each configured field's value (an empty string when the entry does not have it; invalid UTF-8 replaced).
    pub fields: BTreeMap<String, String>,
}

/// A source streamlet of the entries of `config.streams` read through the consumer group `config.group` (a
/// [`RedisSource`] per task).
pub fn redis_entries(builder: &Builder, config: RedisSourceConfig) -> Streamlet<RedisEntry> {
    let names = config.fields.clone();
    builder.new_spout_source(move || RedisSource::new(config.clone()), move |t| entry(t, &names))
}

fn entry(t: &Tuple<'_>, names: &[String]) -> Result<RedisEntry, UserError> {
    let id = t.get_str("id")?;
    let id = EntryId::parse(id).ok_or_else(|| format!("redis entry id {id:?} is not <ms>-<seq>"))?;
    let fields = names
        .iter()
        .map(|name| Ok((name.clone(), t.get_str(name.as_str())?.to_string())))
        .collect::<Result<_, UserError>>()?;
    Ok(RedisEntry {
        stream: t.get_str("stream")?.to_string(),
        id,
        fields,
    })
}
