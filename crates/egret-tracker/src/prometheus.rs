//! Reading what a metrics manager serves: its Prometheus text (`egret_<name>{labels} value` lines), fetched with
//! one plain HTTP/1.1 GET per scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A scrape that takes longer than this is abandoned, so one stuck metrics manager cannot hold a request forever.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// A metrics manager of a large topology serves a few MiB at most; more is not a metrics manager.
const MAX_SCRAPE_BYTES: u64 = 64 << 20;

/// One series of one family, as a metrics manager rendered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family without its `egret_` prefix: `execute_count`.
    pub name: String,
    pub component: String,
    pub task: i64,
    pub stream: Option<String>,
    /// Set only when two processes published for the same (component, task).
    pub process: Option<String>,
    pub value: f64,
}

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
}

/// `GET /metrics` from a metrics manager; returns the body.
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
    // The metrics manager answers with Content-Length and closes, so reading to the end is the whole response.
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

/// The `egret_*` series of a Prometheus text that carry a component and a task; comments, the metrics manager's
/// own series (no component) and lines that do not parse are skipped, since one odd line must not hide the rest.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let rest = line.strip_prefix("egret_")?;
    let open = rest.find('{')?;
    let name = &rest[..open];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let (labels, after) = parse_labels(&rest[open + 1..])?;
    // After the labels: the value, then optionally a timestamp.
    let value = parse_value(after.split_whitespace().next()?)?;
    let mut component = None;
    let mut task = None;
    let mut stream = None;
    let mut process = None;
    for (k, v) in labels {
        match k.as_str() {
            "component" => component = Some(v),
            "task" => task = v.parse::<i64>().ok(),
            "stream" => stream = Some(v),
            "process" => process = Some(v),
            _ => {}
        }
    }
    Some(Sample {
        name: name.to_string(),
        component: component?,
        task: task?,
        stream,
        process,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (the text after `{`), unescaping values; returns the pairs and the text after `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut pairs = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((pairs, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        pairs.push((key, value));
        rest = &rest[end + 1..];
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP egret_emit_count Tuples emitted by a task (emit calls), per output stream.
# TYPE egret_emit_count counter
egret_emit_count{topology=\"t\",component=\"numbers\",task=\"1\",stream=\"default\"} 1500
egret_execute_count{topology=\"t\",component=\"to-all\",task=\"5\",stream=\"numbers/default\"} 3e3
egret_time_spent_back_pressure{topology=\"t\",component=\"__stmgr__\",task=\"2\",process=\"stmgr-2-bp\"} 12.5
egret_back_pressure_active{topology=\"t\",component=\"__stmgr__\",task=\"2\"} 0 1700000000000
egret_metricsmgr_publishers{topology=\"t\"} 7
";

    #[test]
    fn parses_series_with_component_and_task() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(
            s[0],
            Sample {
                name: "emit_count".into(),
                component: "numbers".into(),
                task: 1,
                stream: Some("default".into()),
                process: None,
                value: 1500.0
            }
        );
        assert_eq!(s[1].value, 3000.0);
        assert_eq!(s[1].stream.as_deref(), Some("numbers/default"));
        assert_eq!(s[2].process.as_deref(), Some("stmgr-2-bp"));
        assert_eq!(s[2].stream, None);
        assert_eq!(s[3].name, "back_pressure_active");
        assert_eq!(s[3].value, 0.0, "a trailing timestamp is not the value");
    }

    #[test]
    fn unescapes_label_values() {
        let s = parse("egret_x{component=\"a\\\"b\\\\c\\nd,}\",task=\"3\"} 1\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].component, "a\"b\\c\nd,}");
    }

    #[test]
    fn skips_what_does_not_parse() {
        let bad = "egret_x{component=\"a\",task=\"3\"}\n\
                   egret_x{component=\"a\",task=\"three\"} 1\n\
                   egret_x{component=\"a\",task=\"3\" 1\n\
                   egret_x{component=\"a\",task=\"3\"} one\n\
                   other_x{component=\"a\",task=\"3\"} 1\n\
                   egret_{component=\"a\",task=\"3\"} 1\n\
                   egret_ok{component=\"a\",task=\"3\"} +Inf\n";
        let s = parse(bad);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].name, "ok");
        assert!(s[0].value.is_infinite());
    }
}
