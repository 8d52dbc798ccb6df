//! The NATS JetStream source and sink against a real server (Debian's `nats-server -js`, started per test on a free
//! port): configuration errors, at-least-once with failed tuples NAKed and delivered again, effectively-once with
//! injected failures (exact counts), source → sink with published messages acknowledged by the stream, and the
//! Streamlet source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use egret::metrics::MetricSample;
use egret::simulator::{Running, Simulator, SimulatorOptions};
use egret::*;
use egret_checkpoint::{CheckpointStore, MemoryStore};
use egret_connect_nats::{
    NatsMessage, NatsSink, NatsSinkConfig, NatsSource, NatsSourceConfig, nats_messages, nats_payloads,
};
use egret_testkit::collect::{Collect, Received, fail_while_producing, received_union, task_of};
use egret_testkit::nats::NatsServer;

/// A test's own client.
struct Js {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
}

impl Js {
    fn new(server: &NatsServer) -> Js {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(async_nats::connect(server.url()))
            .expect("connect to the test server");
        let js = {
            let _guard = rt.enter();
            jetstream::new(client)
        };
        Js { rt, js }
    }

    fn create_stream(&self, name: &str, subjects: &[&str]) {
        self.rt
            .block_on(self.js.create_stream(stream::Config {
                name: name.to_string(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }))
            .expect("create stream");
    }

    /// Publishes payloads `from..to` to `subject`, acknowledged by the stream.
    fn publish(&self, subject: &str, from: u64, to: u64) {
        self.rt.block_on(async {
            let mut acks = Vec::new();
            for n in from..to {
                acks.push(
                    self.js
                        .publish(subject.to_string(), n.to_string().into())
                        .await
                        .unwrap(),
                );
                if acks.len() == 500 {
                    for a in acks.drain(..) {
                        a.await.unwrap();
                    }
                }
            }
            for a in acks {
                a.await.unwrap();
            }
        });
    }

    /// Whether the durable consumer delivered everything and has nothing unacknowledged.
    fn consumer_done(&self, stream: &str, durable: &str) -> bool {
        self.rt.block_on(async {
            let Ok(s) = self.js.get_stream(stream).await else {
                return false;
            };
            let Ok(mut c) = s.get_consumer::<pull::Config>(durable).await else {
                return false;
            };
            let Ok(info) = c.info().await else { return false };
            info.num_pending == 0 && info.num_ack_pending == 0
        })
    }

    /// Every message stored in `stream`: (subject, stream sequence, payload).
    fn messages(&self, stream: &str) -> Vec<(String, u64, String)> {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(stream).await.unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                let m = s.get_raw_message(seq).await.unwrap();
                out.push((
                    m.subject.to_string(),
                    m.sequence,
                    String::from_utf8_lossy(&m.payload).into_owned(),
                ));
            }
            out
        })
    }

    /// The payloads stored in `stream`, as numbers.
    fn payloads(&self, stream: &str) -> Vec<u64> {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(stream).await.unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                let m = s.get_raw_message(seq).await.unwrap();
                out.push(String::from_utf8_lossy(&m.payload).parse().unwrap());
            }
            out
        })
    }
}

fn user_metric(running: &Running, name: &str) -> f64 {
    running
        .user_metrics()
        .values()
        .flatten()
        .filter_map(|s| match s {
            MetricSample::Value { name: n, value, .. } if n == name => Some(*value),
            _ => None,
        })
        .sum()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts messages by payload; its counts are its state. Fails each payload divisible by `fail_every` the first
/// time it sees it.
#[derive(Default)]
struct CountBolt {
    counts: BTreeMap<u64, u64>,
    fail_every: u64,
    failed: std::collections::HashSet<u64>,
}

impl Bolt for CountBolt {
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let Some(n) = tuple.get_str("payload").ok().and_then(|s| s.parse::<u64>().ok()) else {
            out.fail(tuple);
            return;
        };
        if self.fail_every > 0 && n % self.fail_every == 0 && self.failed.insert(n) {
            out.fail(tuple);
            return;
        }
        *self.counts.entry(n).or_default() += 1;
        out.ack(tuple);
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for CountBolt {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        if let Some(b) = restored {
            self.counts = postcard::from_bytes(b)?;
        }
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        out.extend_from_slice(&postcard::to_stdvec(&self.counts)?);
        Ok(())
    }
}

fn total_counts(running: Running) -> BTreeMap<u64, u64> {
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let mut all = BTreeMap::new();
    for b in finished.bolts::<CountBolt>("count") {
        for (n, c) in &b.counts {
            *all.entry(*n).or_default() += c;
        }
    }
    all
}

fn count_topology(source: NatsSourceConfig, mode: ReliabilityMode, fail_every: u64) -> Topology {
    let mut b = TopologyBuilder::new("nats-count");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5)
        .set(keys::MAX_SPOUT_PENDING, 1000)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    b.set_spout("messages", 2, move || NatsSource::new(source.clone()));
    b.set_bolt("count", 2, move || CountBolt {
        fail_every,
        ..Default::default()
    })
    .shuffle_grouping("messages");
    b.build().unwrap()
}

fn start_error(topology: Topology) -> String {
    match Simulator::start(topology) {
        Ok(running) => {
            let _ = running.stop();
            panic!("the topology started")
        }
        Err(e) => e.to_string(),
    }
}

#[test]
fn nats_source_and_sink_report_configuration_errors_with_the_servers_answer() {
    let server = NatsServer::start();
    Js::new(&server).create_stream("ok", &["ok.>"]);
    let refused = format!("nats://127.0.0.1:{}", egret_testkit::zookeeper::free_port());
    let cases = [
        (refused.as_str(), "ok", "cannot connect"),
        (&server.url(), "missing", "stream not found"),
    ];
    for (url, stream, expected) in cases {
        let source = NatsSourceConfig::new(url, stream, "d");
        let e = start_error(count_topology(source, ReliabilityMode::AtLeastOnce, 0));
        assert!(
            e.to_lowercase().contains(expected),
            "source: {e:?} does not contain {expected:?}"
        );
        let sink = NatsSinkConfig::new(url, stream, "ok.out");
        let good = NatsSourceConfig::new(server.url(), "ok", "d");
        let mut b = TopologyBuilder::new("nats-sink-errors");
        b.set_spout("messages", 1, move || NatsSource::new(good.clone()));
        b.set_bolt("sink", 1, move || NatsSink::new(sink.clone()))
            .shuffle_grouping("messages");
        let e = start_error(b.build().unwrap());
        assert!(
            e.to_lowercase().contains(expected),
            "sink: {e:?} does not contain {expected:?}"
        );
    }
}

#[test]
fn nats_source_at_least_once_counts_every_message_and_acks_them_all() {
    let server = NatsServer::start();
    let js = Js::new(&server);
    js.create_stream("in", &["in.>"]);
    let n = 5_000;
    js.publish("in.a", 0, n);
    let source = NatsSourceConfig::new(server.url(), "in", "egret").count(100);
    let running = Simulator::start(count_topology(source, ReliabilityMode::AtLeastOnce, 7)).unwrap();
    js.publish("in.b", n, 2 * n);
    wait_for("every message acknowledged", Duration::from_secs(60), || {
        js.consumer_done("in", "egret")
    });
    let failed = running.metrics().component("messages").failed;
    let counts = total_counts(running);
    assert_eq!(counts.len() as u64, 2 * n, "every message counted");
    assert!(counts.values().all(|&c| c >= 1));
    assert!(
        failed >= 2 * n / 7,
        "failed tuples were NAKed and delivered again: {failed} failed"
    );
}

#[test]
fn nats_source_effectively_once_counts_exactly_across_injected_failures() {
    let server = NatsServer::start();
    let js = Js::new(&server);
    js.create_stream("in", &["in.>"]);
    let n = 20_000u64;
    let source = NatsSourceConfig::new(server.url(), "in", "egret").count(200);
    let store = Arc::new(MemoryStore::new());
    let options = SimulatorOptions {
        checkpoint_store: Some(store.clone()),
        ..Default::default()
    };
    let running = Simulator::start_with(count_topology(source, ReliabilityMode::EffectivelyOnce, 0), options).unwrap();
    let tasks: Vec<TaskId> = running.topology().tasks().map(|(task, _, _)| task).collect();
    let mut published = 0;
    for task in tasks.iter().cycle().take(4) {
        js.publish("in.a", published, published + n / 4);
        published += n / 4;
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(running.fail_task(*task));
    }
    // The end: a complete checkpoint in which every spout task went past the last message, so its cut holds them
    // all (no failure follows it).
    let spouts: Vec<TaskId> = {
        let t = running.topology();
        let ci = t.component_index("messages").unwrap();
        t.tasks()
            .filter(|&(_, c, _)| c == ci)
            .map(|(task, _, _)| task)
            .collect()
    };
    let at_end = |c: CheckpointId| {
        spouts.iter().all(|&task| {
            store
                .load(c, task)
                .ok()
                .and_then(|b| postcard::from_bytes::<u64>(&b).ok())
                .is_some_and(|p| p >= n)
        })
    };
    wait_for("a checkpoint past every message", Duration::from_secs(60), || {
        running
            .checkpoints()
            .and_then(|s| s.complete.last().copied())
            .is_some_and(at_end)
    });
    let status = running.checkpoints().unwrap();
    assert!(status.stats.rollbacks >= 4, "{:?}", status.stats);
    let counts = total_counts(running);
    assert_eq!(counts.len() as u64, n, "every message counted");
    let wrong: Vec<_> = counts.iter().filter(|&(_, &c)| c != 1).take(5).collect();
    assert!(wrong.is_empty(), "each message counted exactly once: {wrong:?}");
}

/// Passes `payload` through to the sink.
struct Forward;

impl Bolt for Forward {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["payload"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        match tuple.get_str("payload") {
            Ok(p) => {
                out.emit_anchored(&[tuple], (p.to_string(),));
                out.ack(tuple);
            }
            Err(_) => out.fail(tuple),
        }
    }
}

#[test]
fn nats_source_to_sink_at_least_once_publishes_every_message() {
    let server = NatsServer::start();
    let js = Js::new(&server);
    js.create_stream("in", &["in.>"]);
    js.create_stream("out", &["out.>"]);
    let n = 5_000u64;
    js.publish("in.a", 0, n);
    let source = NatsSourceConfig::new(server.url(), "in", "egret").count(100);
    let sink = NatsSinkConfig::new(server.url(), "out", "out.numbers").batch(200, Duration::from_millis(20));
    let mut b = TopologyBuilder::new("nats-pipe");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5)
        .set(keys::MAX_SPOUT_PENDING, 1000);
    b.set_spout("messages", 2, move || NatsSource::new(source.clone()));
    b.set_bolt("forward", 2, || Forward).shuffle_grouping("messages");
    b.set_bolt("sink", 2, move || NatsSink::new(sink.clone()))
        .shuffle_grouping("forward")
        .config(keys::TICK_TUPLE_FREQ_MS, 50);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    wait_for("every message acknowledged", Duration::from_secs(60), || {
        js.consumer_done("in", "egret")
    });
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let mut out = js.payloads("out");
    out.sort_unstable();
    out.dedup();
    assert_eq!(
        out,
        (0..n).collect::<Vec<_>>(),
        "every message published to the output stream"
    );
}

#[test]
fn nats_source_to_sink_at_least_once_loses_nothing_across_a_server_restart() {
    let mut server = NatsServer::start();
    let n = 6_000u64;
    {
        let js = Js::new(&server);
        js.create_stream("in", &["in.>"]);
        js.create_stream("out", &["out.>"]);
        js.publish("in.a", 0, n / 2);
    }
    let source = NatsSourceConfig::new(server.url(), "in", "egret")
        .count(50)
        .ack_wait(Duration::from_secs(3))
        .retry_max(Duration::from_millis(400));
    let sink = NatsSinkConfig::new(server.url(), "out", "out.numbers")
        .batch(100, Duration::from_millis(20))
        .retry_max(Duration::from_millis(400));
    let mut b = TopologyBuilder::new("nats-restart");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .set(keys::MESSAGE_TIMEOUT_SECS, 2)
        .set(keys::MAX_SPOUT_PENDING, 500);
    b.set_spout("messages", 2, move || NatsSource::new(source.clone()));
    b.set_bolt("forward", 2, || Forward).shuffle_grouping("messages");
    b.set_bolt("sink", 2, move || NatsSink::new(sink.clone()))
        .shuffle_grouping("forward")
        .config(keys::TICK_TUPLE_FREQ_MS, 50);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    wait_for("some messages published", Duration::from_secs(30), || {
        let js = Js::new(&server);
        js.rt.block_on(async {
            match js.js.get_stream("out").await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages > 500).unwrap_or(false),
                Err(_) => false,
            }
        })
    });
    server.stop();
    std::thread::sleep(Duration::from_secs(1));
    server.resume();
    let js = Js::new(&server);
    js.publish("in.b", n / 2, n);
    wait_for("every message acknowledged", Duration::from_secs(90), || {
        js.consumer_done("in", "egret")
    });
    // The client buffers while it reconnects, so a short outage may cost no failed request at all: the retries are
    // not asserted, only that nothing is lost. (Failed requests are also reported as errors: not checked either.)
    let retries = user_metric(&running, "nats-source-retries") + user_metric(&running, "nats-sink-retries");
    eprintln!("requests retried across the restart: {retries}");
    let _finished = running.stop();
    let mut out = js.payloads("out");
    out.sort_unstable();
    out.dedup();
    assert_eq!(
        out,
        (0..n).collect::<Vec<_>>(),
        "every message published to the output stream"
    );
}

#[test]
fn nats_messages_streamlet_delivers_every_message_exactly_once_under_effectively_once_with_failures() {
    let server = NatsServer::start();
    let js = Js::new(&server);
    js.create_stream("in", &["in.>"]);
    let (chunk, chunks) = (100u64, 30);

    let builder = streamlet::Builder::new();
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    let source = NatsSourceConfig::new(server.url(), "in", "egret").count(200);
    nats_messages(&builder, source)
        .name("messages")
        .parallelism(2)
        .map(|m: NatsMessage| format!("{}|{}|{}", m.subject, m.sequence, m.payload))
        .to_sink(move || Collect::new(&r))
        .name("collect")
        .parallelism(2);
    let config = Config::new()
        .with(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .with(keys::MAX_SPOUT_PENDING, 1000)
        .with(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    let topology = builder.build("nats-streamlet", config).unwrap();
    let victims = [
        task_of(&topology, "messages", 1),
        task_of(&topology, "collect", 0),
        task_of(&topology, "messages", 0),
    ];
    let running = Simulator::start(topology).unwrap();
    // Messages arrive while tasks fail: each failure rolls back what followed the last checkpoint, which replays.
    fail_while_producing(&running, &victims, chunks, |c| {
        let subject = if c % 2 == 0 { "in.a" } else { "in.b" };
        js.publish(subject, c * chunk, (c + 1) * chunk);
    });
    // What each message must become: its subject, sequence and payload as the stream has them.
    let expected: BTreeSet<String> = js
        .messages("in")
        .into_iter()
        .map(|(subject, sequence, payload)| format!("{subject}|{sequence}|{payload}"))
        .collect();
    assert_eq!(expected.len() as u64, chunk * chunks);
    wait_for("every message in the sinks", Duration::from_secs(60), || {
        received_union(&received).len() >= expected.len()
    });
    // Two more checkpoints: a rollback still under way would have ended (and replaced the sinks' state) before them.
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    let got = received_union(&received);
    let status = running.checkpoints().unwrap();
    assert!(status.stats.rollbacks >= 3, "{:?}", status.stats);
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let twice: Vec<_> = got.iter().filter(|&(_, &c)| c != 1).take(5).collect();
    assert!(twice.is_empty(), "each message received exactly once: {twice:?}");
    assert_eq!(got.into_keys().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn nats_payloads_streamlet_delivers_every_payload_at_least_once_and_acks_them_all() {
    let server = NatsServer::start();
    let js = Js::new(&server);
    js.create_stream("in", &["in.>"]);
    js.publish("in.a", 0, 1_000);
    let builder = streamlet::Builder::new();
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    nats_payloads(&builder, NatsSourceConfig::new(server.url(), "in", "egret"))
        .parallelism(2)
        .map(|p: String| format!("<{p}>"))
        .to_sink(move || Collect::new(&r));
    let config = Config::new()
        .with(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .with(keys::MESSAGE_TIMEOUT_SECS, 5);
    let running = Simulator::start(builder.build("nats-payloads", config).unwrap()).unwrap();
    let expected: BTreeSet<String> = (0..1_000).map(|n| format!("<{n}>")).collect();
    wait_for("every payload in the sink", Duration::from_secs(60), || {
        received_union(&received).len() >= expected.len()
    });
    // The durable consumer's messages are acked when their trees complete (at the sink).
    wait_for("every message acked", Duration::from_secs(30), || {
        js.consumer_done("in", "egret")
    });
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert_eq!(received_union(&received).into_keys().collect::<BTreeSet<_>>(), expected);
}
