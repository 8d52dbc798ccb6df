//! `topology.debug` in a running topology: the component that sets it logs its tuples (emitted and executed, with
//! their values) through `tracing`, at most `topology.egret.debug.lines.per.sec` lines a second per task, and a
//! component without it logs none. Its own test binary: it installs the process-wide log subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret::simulator::Simulator;
use egret::*;

/// Collects every formatted log line.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Numbers(i64);
impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if self.0 < 20_000 {
            out.emit((self.0,));
            self.0 += 1;
        }
    }
}

struct Relay;
impl Bolt for Relay {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }
    fn execute(&mut self, t: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        if let Ok(n) = t.get_i64("n") {
            out.emit((n + 1_000_000,));
        }
    }
}

struct Sink;
impl Bolt for Sink {
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

#[test]
fn topology_debug_logs_a_components_tuples_rate_limited_and_no_other_components() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    const PER_SEC: u64 = 40;
    let mut b = TopologyBuilder::new("debugged");
    b.set_spout("numbers", 1, || Numbers(0));
    b.set_bolt("relay", 1, || Relay)
        .shuffle_grouping("numbers")
        .config(keys::DEBUG, true)
        .config(keys::DEBUG_LINES_PER_SEC, PER_SEC);
    b.set_bolt("sink", 1, || Sink).shuffle_grouping("relay");
    let started = Instant::now();
    let running = Simulator::start(b.build().expect("a valid topology")).expect("started");
    running
        .wait_until(Duration::from_secs(30), |m| m.component("sink").executed == 20_000)
        .expect("every tuple reaches the sink");
    running.stop();
    let seconds = started.elapsed().as_secs() + 1;

    let text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    let of = |what: &str| text.lines().filter(|l| l.contains(what)).count() as u64;
    let (executed, emitted) = (of("executed component=relay"), of("emitted component=relay"));
    assert!(executed > 0 && emitted > 0, "relay logged its tuples:\n{text}");
    // One task, one limit for both kinds of line, one window per started second.
    assert!(
        executed + emitted <= PER_SEC * seconds,
        "{executed} + {emitted} lines in {seconds} s exceed {PER_SEC}/s"
    );
    assert!(
        text.contains("from_component=numbers") && text.contains("values=[I64("),
        "{text}"
    );
    assert!(text.contains("to=["), "an emitted line names its destinations:\n{text}");
    assert_eq!(of(" component=sink"), 0, "sink does not set topology.debug:\n{text}");
    assert_eq!(
        of(" component=numbers"),
        0,
        "numbers does not set topology.debug:\n{text}"
    );
}
