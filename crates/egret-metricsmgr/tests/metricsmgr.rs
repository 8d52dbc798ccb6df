//! A manager on loopback: publishers over real sockets, scrapes over raw HTTP, a peer sending garbage, shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use egret_metricsmgr::{MetricsManager, exposition};
use egret_proto::egret::{MetricValue, PublishMetrics, control};
use egret_transport::auth::TopologySecret;
use egret_transport::control_frame;

const DEADLINE: Duration = Duration::from_secs(5);

fn publish(stream: &mut TcpStream, component: &str, task_id: i32, metrics: &[(&str, &str, f64)]) {
    let msg = PublishMetrics {
        component: component.into(),
        task_id,
        process: format!("instance-{task_id}"),
        metrics: metrics
            .iter()
            .map(|&(name, stream, value)| MetricValue {
                name: name.into(),
                stream: stream.into(),
                value,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    stream
        .write_all(&control_frame(control::Msg::PublishMetrics(msg)))
        .expect("publish");
}

/// A response: its status line, its headers (names in lower case) and its body.
struct Response {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One raw HTTP/1.1 request that asks the server to close the connection after its response.
fn request(port: u16, request_line: &str) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the http port");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "{request_line}\r\nHost: localhost\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read the response");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let response = Response {
        status,
        headers,
        body: body.to_string(),
    };
    let content_length: usize = response
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    // A response to HEAD gives the length of the body GET would have had, and no body.
    let expected_body = if request_line.starts_with("HEAD ") {
        0
    } else {
        content_length
    };
    assert_eq!(expected_body, response.body.len(), "Content-Length matches the body");
    response
}

/// Scrapes until every line of `wanted` is a line of the body, or fails after the deadline.
fn scrape_until(port: u16, wanted: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let r = request(port, "GET /metrics HTTP/1.1");
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
        let body = r.body;
        // Whatever it holds, the text must be valid exposition format.
        if let Err(e) = exposition::parse(&body) {
            panic!("the scrape does not parse: {e}\n{body}");
        }
        if wanted.iter().all(|w| body.lines().any(|l| l == *w)) {
            return body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "after {DEADLINE:?} the scrape still lacks some of {wanted:#?}:\n{body}"
        );
        // Poll, not wait: publishers are applied on their own threads.
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn publishers_are_scraped_garbage_is_rejected_and_shutdown_joins() {
    let manager = MetricsManager::bind("t", "127.0.0.1").expect("bind");
    let (pub_port, http_port) = (manager.publisher_port(), manager.http_port());
    assert_ne!(pub_port, 0);
    assert_ne!(http_port, 0);
    assert_ne!(pub_port, http_port);
    let shutdown = Arc::new(AtomicBool::new(false));
    let secret = TopologySecret::generate().unwrap();
    let server = {
        let shutdown = Arc::clone(&shutdown);
        let secret = secret.clone();
        thread::spawn(move || manager.serve(&secret, shutdown))
    };

    let mut word = secret.connect_to("127.0.0.1", pub_port).unwrap();
    let mut count = secret.connect_to("127.0.0.1", pub_port).unwrap();
    publish(&mut word, "word", 3, &[("__emit-count", "default", 10.0)]);
    publish(
        &mut word,
        "word",
        3,
        &[("__emit-count", "default", 42.0), ("__ack-count", "", 40.0)],
    );
    publish(
        &mut count,
        "count",
        5,
        &[
            ("__execute-count", "default", 17.0),
            ("__execute-latency", "", 0.5),
            ("__time_spent_back_pressure_by_compid/word", "", 3.0),
        ],
    );
    let body = scrape_until(
        http_port,
        &[
            r#"egret_emit_count{topology="t",component="word",task="3",stream="default"} 42"#,
            r#"egret_ack_count{topology="t",component="word",task="3"} 40"#,
            r#"egret_execute_count{topology="t",component="count",task="5",stream="default"} 17"#,
            r#"egret_execute_latency{topology="t",component="count",task="5"} 0.5"#,
            r#"egret_time_spent_back_pressure_by_compid_word{topology="t",component="count",task="5"} 3"#,
            r#"egret_metricsmgr_publishers{topology="t"} 2"#,
            r#"egret_metricsmgr_frames_rejected{topology="t"} 0"#,
        ],
    );
    assert!(body.contains("# TYPE egret_emit_count counter\n"), "{body}");
    assert!(body.contains("# TYPE egret_execute_latency gauge\n"), "{body}");
    assert_eq!(body.matches("# TYPE egret_emit_count ").count(), 1, "{body}");
    assert!(!body.contains(" 10\n"), "the older emit total was replaced:\n{body}");
    // What the tracker and the tests use to read it sees the same.
    let samples = egret_metricsmgr::scrape_samples("127.0.0.1", http_port).expect("scrape and parse");
    let emitted = samples
        .iter()
        .find(|s| s.name == "egret_emit_count" && s.label("component") == Some("word"))
        .expect("word's emit count");
    assert_eq!(
        (emitted.label("task"), emitted.label("stream"), emitted.value),
        (Some("3"), Some("default"), 42.0)
    );

    // A stranger without the topology's secret: its well-formed frame is refused at the handshake, nothing applied.
    let mut stranger = TcpStream::connect(("127.0.0.1", pub_port)).unwrap();
    publish(&mut stranger, "intruder", 9, &[("__emit-count", "default", 7.0)]);
    let mut rest = Vec::new();
    stranger.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stranger.read_to_end(&mut rest);
    assert!(
        rest.len() <= 37,
        "a stranger gets the challenge and nothing more: {rest:?}"
    );
    let body = egret_metricsmgr::scrape("127.0.0.1", http_port).expect("scrape");
    assert!(!body.contains("intruder"), "{body}");

    // Garbage: its first four bytes read as a length far beyond 1 MiB.
    let mut garbage = secret.connect_to("127.0.0.1", pub_port).unwrap();
    garbage.set_read_timeout(Some(DEADLINE)).unwrap();
    garbage.write_all(b"this is not an egret frame at all").unwrap();
    let mut rest = Vec::new();
    // The manager drops the connection: EOF (or a reset), not a timeout.
    match garbage.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "the manager kept the garbage connection open: {e}"
        ),
    }
    scrape_until(
        http_port,
        &[
            r#"egret_metricsmgr_frames_rejected{topology="t"} 1"#,
            r#"egret_metricsmgr_publishers{topology="t"} 2"#,
        ],
    );

    // The others are still served: a new total arrives, and a publisher that leaves keeps its last values.
    publish(&mut word, "word", 3, &[("__emit-count", "default", 50.0)]);
    drop(count);
    scrape_until(
        http_port,
        &[
            r#"egret_emit_count{topology="t",component="word",task="3",stream="default"} 50"#,
            r#"egret_execute_count{topology="t",component="count",task="5",stream="default"} 17"#,
            r#"egret_metricsmgr_publishers{topology="t"} 1"#,
            r#"egret_metricsmgr_frames_rejected{topology="t"} 1"#,
        ],
    );

    let r = request(http_port, "GET /other HTTP/1.1");
    assert_eq!(r.status, "HTTP/1.1 404 Not Found");
    assert_eq!(r.body, "not found; metrics are at /metrics\n");
    let r = request(http_port, "GET /metrics/x HTTP/1.1");
    assert_eq!(r.status, "HTTP/1.1 404 Not Found");
    let r = request(http_port, "POST /metrics HTTP/1.1");
    assert_eq!(r.status, "HTTP/1.1 405 Method Not Allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "{:?}", r.headers);
    let r = request(http_port, "GET /metrics?x=1 HTTP/1.1");
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    let r = request(http_port, "HEAD /metrics HTTP/1.1");
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    // A malformed request line is refused, and the server goes on serving.
    let mut s = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply}");

    // A scraper holding a keep-alive connection open does not delay the shutdown.
    let mut idle = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();

    // `word` is still connected: shutdown must close it rather than wait for it.
    shutdown.store(true, Ordering::Release);
    server
        .join()
        .expect("serve did not panic")
        .expect("serve ended cleanly");
    let mut buf = [0u8; 1];
    word.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(matches!(word.read(&mut buf), Ok(0) | Err(_)));
    // The idle scraper got its response, then the connection closed with the server.
    idle.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(
        rest.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // And nothing listens on the ports any more.
    assert!(TcpStream::connect(("127.0.0.1", http_port)).is_err());
    assert!(TcpStream::connect(("127.0.0.1", pub_port)).is_err());
}

#[test]
fn serves_on_listeners_it_is_given_and_stops_on_the_signal() {
    let publisher = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    let manager = MetricsManager::new("given", publisher, http);
    assert_eq!(manager.http_port(), http_port);
    let shutdown = Arc::new(AtomicBool::new(false));
    let secret = TopologySecret::generate().unwrap();
    let server = {
        let shutdown = Arc::clone(&shutdown);
        let secret = secret.clone();
        thread::spawn(move || manager.serve(&secret, shutdown))
    };
    scrape_until(http_port, &[r#"egret_metricsmgr_publishers{topology="given"} 0"#]);
    shutdown.store(true, Ordering::Release);
    server.join().expect("no panic").expect("a clean stop");
}
