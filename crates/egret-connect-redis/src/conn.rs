//! What the source and the sink share: connecting (with timeouts), telling a lost connection from an answer of the
//! server, back-off between attempts, entry ids, and the error type.

use std::fmt;
use std::time::Duration;

pub(crate) use egret_api::retry::Backoff;

/// Timeout of a connection attempt and of each reply.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the Redis connectors. Addresses are shown without user name or password.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis {addr}: {source}")]
    Redis {
        addr: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis {addr}: stream {stream}: {message}")]
    Stream {
        addr: String,
        stream: String,
        message: String,
    },
    #[error("redis {addr}: unexpected reply to {command}: {reply}")]
    Reply {
        addr: String,
        command: &'static str,
        reply: String,
    },
    #[error("redis source: the saved position does not decode: {0}")]
    BadState(postcard::Error),
    #[error("redis: bad configuration: {0}")]
    Config(String),
}

impl RedisError {
    /// The connection is gone or the server does not answer (retried with back-off), rather than an answer of the
    /// server (an error of the command or the configuration). `NOGROUP` counts as lost too: a server that lost its
    /// data (no persistence) forgot the group, which a new connection creates again.
    pub(crate) fn is_connection_lost(&self) -> bool {
        match self {
            RedisError::Redis { source, .. } => {
                source.code() == Some("NOGROUP")
                    || source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || source.is_timeout()
                    || source.is_unrecoverable_error()
            }
            _ => false,
        }
    }
}

/// The URL without its user name and password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &url[..scheme + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Opens a connection to `url` with connect, read and write timeouts.
pub(crate) fn connect(url: &str) -> Result<redis::Connection, RedisError> {
    let wrap = |source| RedisError::Redis {
        addr: redact(url),
        source,
    };
    let client = redis::Client::open(url).map_err(wrap)?;
    let conn = client.get_connection_with_timeout(IO_TIMEOUT).map_err(wrap)?;
    conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(wrap)?;
    conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(wrap)?;
    Ok(conn)
}

/// A stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One entry of a stream: its id and its field/value pairs (`None`: the entry was deleted while pending).
pub(crate) struct Entry {
    pub stream: String,
    pub id: EntryId,
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn bytes(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        redis::Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// Parses the reply of `XREADGROUP` (RESP2: `[[stream, [[id, [f, v, ...] | nil], ...]], ...]`, or nil when there
/// is nothing).
pub(crate) fn parse_read_reply(reply: &redis::Value) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    let streams = match reply {
        redis::Value::Nil => return Some(out),
        redis::Value::Array(a) => a,
        _ => return None,
    };
    for s in streams {
        let redis::Value::Array(pair) = s else {
            return None;
        };
        let [name, entries] = pair.as_slice() else {
            return None;
        };
        let stream = String::from_utf8_lossy(&bytes(name)?).into_owned();
        let redis::Value::Array(entries) = entries else {
            return None;
        };
        for e in entries {
            let redis::Value::Array(e) = e else {
                return None;
            };
            let [id, fields] = e.as_slice() else {
                return None;
            };
            let id = EntryId::parse(&String::from_utf8_lossy(&bytes(id)?))?;
            let fields = match fields {
                redis::Value::Nil => None,
                redis::Value::Array(kv) => {
                    let mut pairs = Vec::with_capacity(kv.len() / 2);
                    for chunk in kv.chunks(2) {
                        let [k, v] = chunk else {
                            return None;
                        };
                        pairs.push((bytes(k)?, bytes(v)?));
                    }
                    Some(pairs)
                }
                _ => return None,
            };
            out.push(Entry {
                stream: stream.clone(),
                id,
                fields,
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_entry_ids_order_and_urls_are_redacted() {
        let a = EntryId::parse("1700000000000-5").unwrap();
        let b = EntryId::parse("1700000000001-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert!(EntryId::parse("x-1").is_none());
        assert_eq!(
            redact("redis://user:secret@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
