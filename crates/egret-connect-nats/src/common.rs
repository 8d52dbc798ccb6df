//! What the source and the sink share: the runtime, connecting, back-off and the error type.

use std::time::Duration;

pub(crate) use egret_api::retry::Backoff;

/// Timeout of connecting and of each request.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the NATS connectors. Addresses are shown without credentials.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("nats {addr}: cannot connect: {message}")]
    Connect { addr: String, message: String },
    #[error("nats {addr}: stream {stream}: {message}")]
    Stream {
        addr: String,
        stream: String,
        message: String,
    },
    #[error("nats {addr}: {what}: {message}")]
    Request {
        addr: String,
        what: &'static str,
        message: String,
    },
    #[error("nats {addr}: {what}: no answer within {timeout:?}")]
    Timeout {
        addr: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("nats: cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("nats source: the saved position does not decode: {0}")]
    BadState(postcard::Error),
    #[error("nats: bad configuration: {0}")]
    Config(String),
}

/// The URL without user name and password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &url[..scheme + 3], &url[at + 1..]),
        (None, Some(at)) => url[at + 1..].to_string(),
        _ => url.to_string(),
    }
}

/// One worker thread: the client's connection task (pings, reconnection, sending acks) runs also while the Egret
/// task is not blocked on a call.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, NatsError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("nats-client")
        .enable_all()
        .build()
        .map_err(NatsError::Runtime)
}

/// Connects (the client then reconnects by itself when the server goes away) and makes the JetStream context.
pub(crate) fn connect(rt: &tokio::runtime::Runtime, url: &str) -> Result<async_nats::jetstream::Context, NatsError> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(IO_TIMEOUT)
        .request_timeout(Some(IO_TIMEOUT));
    let client = rt.block_on(async {
        tokio::time::timeout(IO_TIMEOUT * 2, options.connect(url))
            .await
            .map_err(|_| NatsError::Connect {
                addr: redact(url),
                message: "timed out".into(),
            })?
            .map_err(|e| NatsError::Connect {
                addr: redact(url),
                message: e.to_string(),
            })
    })?;
    // The context spawns its acknowledgement task on the runtime.
    let _guard = rt.enter();
    Ok(async_nats::jetstream::new(client))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_urls_are_redacted() {
        assert_eq!(super::redact("nats://u:p@127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(super::redact("u:p@127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(super::redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
