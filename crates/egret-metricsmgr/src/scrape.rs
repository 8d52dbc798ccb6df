//! The scraper side: `GET /metrics` from a metrics manager, as the tracker and the end-to-end tests read it (the
//! benchmark has its own copy of the request, for now). One plain blocking HTTP/1.1 request per scrape, with
//! `Connection: close` so that the response ends with the connection; no HTTP client library is needed for that.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::exposition::{self, ParseError, Sample};

/// A scrape that takes longer than this is abandoned, so one stuck metrics manager cannot hold its caller forever.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// A metrics manager of a large topology serves a few MiB at most; more is not a metrics manager.
const MAX_SCRAPE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} answered {status:?} instead of 200 OK")]
    Status { addr: String, status: String },
    #[error("{addr} sent a response without a header/body separator")]
    Malformed { addr: String },
    #[error("{addr} served text that is not Prometheus exposition format: {source}")]
    Parse {
        addr: String,
        #[source]
        source: ParseError,
    },
}

/// `GET /metrics` from the metrics manager at `host:port`; returns the body.
pub fn scrape(host: &str, port: u16) -> Result<String, ScrapeError> {
    let addr = format!("{host}:{port}");
    let io = |source| ScrapeError::Io {
        addr: addr.clone(),
        source,
    };
    let sock: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| ScrapeError::Resolve(addr.clone()))?;
    let mut s = TcpStream::connect_timeout(&sock, SCRAPE_TIMEOUT).map_err(io)?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT)).map_err(io)?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(io)?;
    // The request asked the server to close after the response, so reading to the end is the whole response.
    let mut raw = Vec::new();
    s.take(MAX_SCRAPE_BYTES).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ScrapeError::Malformed { addr: addr.clone() })?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Status {
            addr,
            status: status.to_string(),
        });
    }
    Ok(body.to_string())
}

/// [`scrape`], then [`exposition::parse`].
pub fn scrape_samples(host: &str, port: u16) -> Result<Vec<Sample>, ScrapeError> {
    let text = scrape(host, port)?;
    exposition::parse(&text).map_err(|source| ScrapeError::Parse {
        addr: format!("{host}:{port}"),
        source,
    })
}
