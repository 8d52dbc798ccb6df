//! A minimal HTTP/1.1 server side for one scrape per connection: read the request head, answer, close.
//!
//! Only what Prometheus needs: `GET /metrics`. Each connection gets one response with `Content-Length` and
//! `Connection: close`, so no keep-alive or chunked bodies are needed and a connection's thread always ends.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest request head accepted: Prometheus sends a few hundred bytes; more is not a scraper.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its head or take the response before its connection is dropped, so a slow
/// or silent client cannot hold a thread for long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("request head exceeds {MAX_HEAD} bytes")]
    TooLarge,
    #[error("connection closed before the end of the request head ({0} bytes read)")]
    Truncated(usize),
    #[error("i/o while reading the request head: {0}")]
    Io(#[from] io::Error),
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Reads up to and including the blank line that ends the request head (`\r\n\r\n`, or a lenient `\n\n`).
pub fn read_head(r: &mut impl Read) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Truncated(head.len())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head[from..]) {
            if from + end > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            head.truncate(from + end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Index just past the blank line ending a head, if `buf` holds one.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Routes a request head by its request line. An unknown path is 404 whatever the method; `/metrics` with a
/// method other than GET is 405. A query string is ignored.
pub fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        Route::NotFound
    } else if method != "GET" {
        Route::MethodNotAllowed
    } else {
        Route::Metrics
    }
}

/// A whole response: status line, headers and body.
pub fn response(status: &str, content_type: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Serves one connection: reads its head, answers with `metrics()` for `GET /metrics`, closes.
pub fn serve_connection(mut stream: TcpStream, metrics: impl FnOnce() -> String) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let text = "text/plain; charset=utf-8";
    let reply = match read_head(&mut stream) {
        Ok(head) => match route(&head) {
            Route::Metrics => response("200 OK", CONTENT_TYPE, "", &metrics()),
            Route::NotFound => response("404 Not Found", text, "", "not found; metrics are at /metrics\n"),
            Route::MethodNotAllowed => response("405 Method Not Allowed", text, "Allow: GET\r\n", "use GET\n"),
            Route::BadRequest => response("400 Bad Request", text, "", "malformed request line\n"),
        },
        Err(HeadError::TooLarge) => response(
            "431 Request Header Fields Too Large",
            text,
            "",
            "request head exceeds 8 KiB\n",
        ),
        // Nothing useful to answer to a client that left or stalled.
        Err(e) => return Err(io::Error::other(e)),
    };
    stream.write_all(&reply)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_the_blank_line() {
        let mut r = &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nbody"[..];
        assert_eq!(read_head(&mut r).unwrap(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut r = &b"GET / HTTP/1.0\n\n"[..];
        assert_eq!(read_head(&mut r).unwrap(), b"GET / HTTP/1.0\n\n");
        let mut r = &b"GET / HTTP/1.1\r\n"[..];
        assert!(matches!(read_head(&mut r), Err(HeadError::Truncated(16))));
        let big = vec![b'a'; MAX_HEAD + 10];
        assert!(matches!(read_head(&mut &big[..]), Err(HeadError::TooLarge)));
        let mut just_over = vec![b'a'; MAX_HEAD - 3];
        just_over.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(read_head(&mut &just_over[..]), Err(HeadError::TooLarge)));
        just_over.remove(0);
        assert_eq!(read_head(&mut &just_over[..]).unwrap().len(), MAX_HEAD);
    }

    /// A reader handing out one byte at a time, so the blank line straddles reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_blank_line_split_across_reads_is_found() {
        let head = read_head(&mut Trickle(b"GET /metrics HTTP/1.1\r\n\r\nmore")).unwrap();
        assert_eq!(head, b"GET /metrics HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn requests_are_routed() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics FTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let r = response("200 OK", CONTENT_TYPE, "", "abc");
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 3\r\n\
              Connection: close\r\n\r\nabc"
        );
    }
}
