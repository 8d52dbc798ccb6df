//! The Redis Streams source and sink against a real server (Debian's `redis-server`, started per test on a free
//! port): configuration errors, at-least-once with failed tuples re-emitted, effectively-once with injected
//! failures (exact counts), a server restart under a running topology (nothing lost), and the Streamlet source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret::metrics::MetricSample;
use egret::simulator::{Running, Simulator};
use egret::*;
use egret_connect_redis::{RedisEntry, RedisSink, RedisSinkConfig, RedisSource, RedisSourceConfig, redis_entries};
use egret_testkit::collect::{Collect, Received, fail_while_producing, received_union, task_of};
use egret_testkit::redis::RedisServer;

fn conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect to the test server")
}

/// Appends entries `n = from..to` to `stream`, pipelined.
fn produce(server: &RedisServer, stream: &str, from: u64, to: u64) {
    let mut c = conn(server);
    let mut i = from;
    while i < to {
        let mut pipe = redis::pipe();
        for n in i..to.min(i + 500) {
            pipe.cmd("XADD").arg(stream).arg("*").arg("n").arg(n).ignore();
        }
        let () = pipe.query(&mut c).expect("XADD");
        i = to.min(i + 500);
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Entries delivered to the group and not acknowledged.
fn group_pending(c: &mut redis::Connection, stream: &str, group: &str) -> Option<i64> {
    let v: redis::Value = redis::cmd("XPENDING").arg(stream).arg(group).query(c).ok()?;
    match v {
        redis::Value::Array(a) => match a.first() {
            Some(redis::Value::Int(n)) => Some(*n),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the group delivered every entry of the stream and none is pending.
fn group_done(server: &RedisServer, stream: &str, group: &str) -> bool {
    let Ok(client) = redis::Client::open(server.url()) else {
        return false;
    };
    let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return false;
    };
    let lag: Option<redis::Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(&mut c).ok();
    let lag_zero = match lag {
        Some(redis::Value::Array(groups)) => groups.iter().any(|g| {
            let redis::Value::Array(kv) = g else { return false };
            let fields: Vec<&redis::Value> = kv.iter().collect();
            let name_ok = fields.chunks(2).any(|p| {
                matches!(p, [redis::Value::BulkString(k), redis::Value::BulkString(v)] if k == b"name" && v == group.as_bytes())
            });
            let lag_ok = fields
                .chunks(2)
                .any(|p| matches!(p, [redis::Value::BulkString(k), redis::Value::Int(0)] if k == b"lag"));
            name_ok && lag_ok
        }),
        _ => false,
    };
    lag_zero && group_pending(&mut c, stream, group) == Some(0)
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

/// Counts the entries it sees by their `n` field; its counts are its state. Fails each `n` divisible by
/// `fail_every` the first time it sees it (at-least-once: the source emits it again).
#[derive(Default)]
struct CountBolt {
    counts: BTreeMap<u64, u64>,
    fail_every: u64,
    failed: std::collections::HashSet<u64>,
}

impl Bolt for CountBolt {
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let Ok(n) = tuple.get_str("n").map(|s| s.parse::<u64>().unwrap_or(u64::MAX)) else {
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

fn count_topology(source: RedisSourceConfig, mode: ReliabilityMode, fail_every: u64) -> Topology {
    let mut b = TopologyBuilder::new("redis-count");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5)
        .set(keys::MAX_SPOUT_PENDING, 1000)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    b.set_spout("entries", 2, move || RedisSource::new(source.clone()));
    b.set_bolt("count", 2, move || CountBolt {
        fail_every,
        ..Default::default()
    })
    .shuffle_grouping("entries");
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
fn redis_source_and_sink_report_configuration_errors_with_the_servers_answer() {
    let server = RedisServer::start();
    server.cli(&["SET", "plain", "x"]);
    server.cli(&["CONFIG", "SET", "requirepass", "secret"]);
    let good = format!("redis://:secret@127.0.0.1:{}", server.port);
    let cases = [
        (
            format!("redis://:wrong@127.0.0.1:{}", server.port),
            "in",
            "Password authentication failed",
        ),
        (
            format!("redis://127.0.0.1:{}", egret_testkit::zookeeper::free_port()),
            "in",
            "Connection refused",
        ),
        (good.clone(), "plain", "WRONGTYPE"),
    ];
    for (url, stream, expected) in &cases {
        let source = RedisSourceConfig::new(url.clone(), &[stream], "g", &["n"]);
        let e = start_error(count_topology(source, ReliabilityMode::AtLeastOnce, 0));
        assert!(e.contains(expected), "source: {e:?} does not contain {expected:?}");
        assert!(!e.contains("secret"), "no password in messages: {e}");
        let sink = RedisSinkConfig::new(url.clone(), *stream);
        let mut b = TopologyBuilder::new("redis-sink-errors");
        let source = RedisSourceConfig::new(good.clone(), &["ok"], "g", &["n"]);
        b.set_spout("entries", 1, move || RedisSource::new(source.clone()));
        b.set_bolt("sink", 1, move || RedisSink::new(sink.clone()))
            .shuffle_grouping("entries");
        let e = start_error(b.build().unwrap());
        let expected = if *stream == "plain" { "not a stream" } else { expected };
        assert!(e.contains(expected), "sink: {e:?} does not contain {expected:?}");
    }
}

#[test]
fn redis_source_at_least_once_counts_every_entry_and_acks_them_all_in_the_group() {
    let server = RedisServer::start();
    let n = 5_000;
    produce(&server, "in", 0, n);
    let source = RedisSourceConfig::new(server.url(), &["in"], "egret", &["n"]).count(100);
    let running = Simulator::start(count_topology(source, ReliabilityMode::AtLeastOnce, 7)).unwrap();
    // More entries while it runs.
    produce(&server, "in", n, 2 * n);
    wait_for("every entry acknowledged in the group", Duration::from_secs(60), || {
        group_done(&server, "in", "egret")
    });
    let failed = running.metrics().component("entries").failed;
    let counts = total_counts(running);
    assert_eq!(counts.len() as u64, 2 * n, "every entry counted");
    assert!(counts.values().all(|&c| c >= 1));
    assert!(failed >= 2 * n / 7, "failed tuples were emitted again: {failed} failed");
}

#[test]
fn redis_source_effectively_once_counts_exactly_across_injected_failures() {
    let server = RedisServer::start();
    let n = 20_000;
    let source = RedisSourceConfig::new(server.url(), &["in"], "egret", &["n"]).count(100);
    let running = Simulator::start(count_topology(source, ReliabilityMode::EffectivelyOnce, 0)).unwrap();
    // Entries arrive while tasks fail, spouts and counters in turn.
    let tasks: Vec<TaskId> = {
        let t = running.topology();
        t.tasks().map(|(task, _, _)| task).collect()
    };
    let producer = {
        let url = server.url();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url)
                .unwrap()
                .get_connection_with_timeout(Duration::from_secs(5))
                .unwrap();
            for chunk in 0..40u64 {
                let mut pipe = redis::pipe();
                for i in chunk * 500..(chunk + 1) * 500 {
                    pipe.cmd("XADD").arg("in").arg("*").arg("n").arg(i).ignore();
                }
                let () = pipe.query(&mut c).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for task in tasks.iter().cycle().take(4) {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(running.fail_task(*task));
    }
    producer.join().unwrap();
    wait_for("every entry in a complete checkpoint", Duration::from_secs(60), || {
        group_done(&server, "in", "egret")
    });
    let status = running.checkpoints().unwrap();
    assert!(status.stats.rollbacks >= 4, "{:?}", status.stats);
    let counts = total_counts(running);
    assert_eq!(counts.len() as u64, n, "every entry counted");
    let twice: Vec<_> = counts.iter().filter(|&(_, &c)| c != 1).take(5).collect();
    assert!(twice.is_empty(), "each entry counted exactly once: {twice:?}");
}

/// Passes `n` through to the sink.
struct Forward;

impl Bolt for Forward {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        match tuple.get_str("n") {
            Ok(n) => {
                out.emit_anchored(&[tuple], (n.to_string(),));
                out.ack(tuple);
            }
            Err(_) => out.fail(tuple),
        }
    }
}

#[test]
fn redis_source_to_sink_at_least_once_loses_nothing_across_a_server_restart() {
    let mut server = RedisServer::start();
    let n = 6_000u64;
    let source = RedisSourceConfig::new(server.url(), &["in"], "egret", &["n"])
        .count(50)
        .retry_max(Duration::from_millis(400));
    let sink = RedisSinkConfig::new(server.url(), "out")
        .batch(100, Duration::from_millis(20))
        .retry_max(Duration::from_millis(400));
    let mut b = TopologyBuilder::new("redis-restart");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .set(keys::MESSAGE_TIMEOUT_SECS, 3)
        .set(keys::MAX_SPOUT_PENDING, 500);
    b.set_spout("entries", 2, move || RedisSource::new(source.clone()));
    b.set_bolt("forward", 2, || Forward).shuffle_grouping("entries");
    b.set_bolt("sink", 2, move || RedisSink::new(sink.clone()))
        .shuffle_grouping("forward")
        .config(keys::TICK_TUPLE_FREQ_MS, 50);
    produce(&server, "in", 0, n / 2);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    wait_for("some entries written", Duration::from_secs(30), || {
        let written: i64 = redis::cmd("XLEN").arg("out").query(&mut conn(&server)).unwrap_or(0);
        written > 500
    });
    server.stop();
    std::thread::sleep(Duration::from_secs(1));
    server.resume();
    produce(&server, "in", n / 2, n);
    wait_for("every entry acknowledged in the group", Duration::from_secs(90), || {
        group_done(&server, "in", "egret")
    });
    let source_retries = user_metric(&running, "redis-source-retries");
    let sink_retries = user_metric(&running, "redis-sink-retries");
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let mut c = conn(&server);
    let out: Vec<(String, BTreeMap<String, String>)> = {
        let v: redis::Value = redis::cmd("XRANGE").arg("out").arg("-").arg("+").query(&mut c).unwrap();
        let redis::Value::Array(entries) = v else {
            panic!("XRANGE: {v:?}")
        };
        entries
            .iter()
            .map(|e| {
                let redis::Value::Array(e) = e else { panic!("{e:?}") };
                let id: String = redis::from_redis_value_ref(&e[0]).unwrap();
                let kv: BTreeMap<String, String> = redis::from_redis_value_ref(&e[1]).unwrap();
                (id, kv)
            })
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    for (_, kv) in &out {
        seen.insert(kv["n"].parse::<u64>().unwrap());
    }
    assert_eq!(
        seen.len() as u64,
        n,
        "every entry reached the output stream at least once"
    );
    assert!(source_retries + sink_retries > 0.0, "reconnections are counted");
}

#[test]
fn redis_entries_streamlet_delivers_every_entry_exactly_once_under_effectively_once_with_failures() {
    let server = RedisServer::start();
    let (chunk, chunks) = (100u64, 30);
    let produce = |from: u64, to: u64| {
        let mut c = conn(&server);
        for stream in ["a", "b"] {
            let mut pipe = redis::pipe();
            for i in from..to {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("n")
                    .arg(i)
                    .arg("w")
                    .arg(format!("{stream} word {i}"))
                    .ignore();
            }
            let () = pipe.query(&mut c).expect("XADD");
        }
    };
    let builder = streamlet::Builder::new();
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    let source = RedisSourceConfig::new(server.url(), &["a", "b"], "egret", &["n", "w", "missing"]).count(100);
    redis_entries(&builder, source)
        .name("entries")
        .parallelism(2)
        .map(|e: RedisEntry| {
            let field = |name: &str| e.fields.get(name).cloned().unwrap_or_else(|| format!("<no {name}>"));
            format!(
                "{}|{}|{}|{}|{}",
                e.stream,
                e.id,
                field("n"),
                field("w"),
                field("missing")
            )
        })
        .to_sink(move || Collect::new(&r))
        .name("collect")
        .parallelism(2);
    let config = Config::new()
        .with(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .with(keys::MAX_SPOUT_PENDING, 1000)
        .with(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    let topology = builder.build("redis-streamlet", config).unwrap();
    let victims = [
        task_of(&topology, "entries", 1),
        task_of(&topology, "collect", 0),
        task_of(&topology, "entries", 0),
    ];
    let running = Simulator::start(topology).unwrap();
    // Entries arrive while tasks fail: each failure rolls back what followed the last checkpoint, which replays.
    fail_while_producing(&running, &victims, chunks, |c| produce(c * chunk, (c + 1) * chunk));
    // What each entry must become: its stream, id and fields as the server has them (`missing` is in no entry).
    let mut c = conn(&server);
    let mut expected = BTreeSet::new();
    for stream in ["a", "b"] {
        let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .expect("XRANGE");
        for e in range.ids {
            let (n, w) = (e.get::<String>("n").unwrap(), e.get::<String>("w").unwrap());
            expected.insert(format!("{stream}|{}|{n}|{w}|", e.id));
        }
    }
    assert_eq!(expected.len() as u64, 2 * chunk * chunks);
    wait_for("every entry in the sinks", Duration::from_secs(60), || {
        received_union(&received).len() >= expected.len()
    });
    // Two more checkpoints: a rollback still under way would have ended (and replaced the sinks' state) before them.
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    let got = received_union(&received);
    // Every entry is acknowledged in the group once a checkpoint after it completed.
    wait_for("every entry acknowledged", Duration::from_secs(30), || {
        group_done(&server, "a", "egret") && group_done(&server, "b", "egret")
    });
    let status = running.checkpoints().unwrap();
    assert!(status.stats.rollbacks >= 3, "{:?}", status.stats);
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let twice: Vec<_> = got.iter().filter(|&(_, &c)| c != 1).take(5).collect();
    assert!(twice.is_empty(), "each entry received exactly once: {twice:?}");
    assert_eq!(got.into_keys().collect::<BTreeSet<_>>(), expected);
}
