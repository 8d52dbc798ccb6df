//! The Kafka connectors against a real Kafka-protocol broker (tansu, started by each test: see
//! `egret_testkit::kafka::TansuServer`), in the simulator: the spout and the sink bolt, and the Streamlet source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egret::metrics::MetricSample;
use egret::simulator::{Running, Simulator, SimulatorOptions};
use egret::*;
use egret_checkpoint::{CheckpointStore, MemoryStore};
use egret_connect_kafka::{
    KafkaRecord, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, StartAt, kafka_records, kafka_values,
};
use egret_examples::reliable_word_count::{expected_counts, sentences};
use egret_examples::stateful_word_count::{CountBolt, SplitField, total_counts};
use egret_testkit::collect::{Collect, Received, fail_while_producing, received_union, task_of};
use egret_testkit::kafka::TansuServer;
use egret_testkit::wait_for;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(rt: &tokio::runtime::Runtime, broker: &TansuServer) -> Client {
    rt.block_on(ClientBuilder::new(vec![broker.address()]).build()).unwrap()
}

/// Produces `values` round robin over the topic's `partitions`, in batches; returns each partition's end offset.
fn produce(broker: &TansuServer, topic: &str, partitions: i32, values: &[String]) -> BTreeMap<i32, i64> {
    let rt = runtime();
    let c = client(&rt, broker);
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let pc = rt
            .block_on(c.partition_client(topic, p, UnknownTopicHandling::Retry))
            .unwrap();
        let mine: Vec<&String> = values.iter().skip(p as usize).step_by(partitions as usize).collect();
        for chunk in mine.chunks(500) {
            let records = chunk
                .iter()
                .map(|v| Record {
                    key: None,
                    value: Some(v.as_bytes().to_vec()),
                    headers: BTreeMap::new(),
                    timestamp: chrono::Utc::now(),
                })
                .collect();
            rt.block_on(pc.produce(records, Compression::NoCompression)).unwrap();
        }
        // The high watermark: tansu 0.6.0's ListOffsets(latest) is the last batch's base offset + 1.
        let (_, high_watermark) = rt.block_on(pc.fetch_records(0, 1..2, 0)).unwrap();
        ends.insert(p, high_watermark);
    }
    ends
}

/// Every record's value in the topic, per partition in offset order.
fn read_all(broker: &TansuServer, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<String>> {
    let rt = runtime();
    let c = client(&rt, broker);
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        let pc = rt
            .block_on(c.partition_client(topic, p, UnknownTopicHandling::Retry))
            .unwrap();
        let (_, end) = rt.block_on(pc.fetch_records(0, 1..2, 0)).unwrap();
        let mut values = Vec::new();
        let mut next = 0;
        while next < end {
            let (records, _) = rt.block_on(pc.fetch_records(next, 1..1_000_000, 100)).unwrap();
            for r in records {
                next = r.offset + 1;
                values.push(String::from_utf8(r.record.value.unwrap_or_default()).unwrap());
            }
        }
        all.insert(p, values);
    }
    all
}

fn user_metric(running: &Running, name: &str) -> Vec<f64> {
    running
        .user_metrics()
        .values()
        .flatten()
        .filter_map(|s| match s {
            MetricSample::Value { name: n, value, .. } if n == name => Some(*value),
            _ => None,
        })
        .collect()
}

#[test]
fn kafka_source_word_count_is_exact_under_effectively_once_with_failures() {
    let broker = TansuServer::start();
    broker.create_topic("sentences", 3);
    let input = sentences(6_000, 7);
    let expected = expected_counts(&input);
    let ends = produce(&broker, "sentences", 3, &input);
    assert_eq!(ends.values().sum::<i64>(), input.len() as i64);

    let mut b = TopologyBuilder::new("kafka-word-count");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    let source = KafkaSourceConfig::new([broker.address()], "sentences").start(StartAt::Earliest);
    b.set_spout("kafka", 2, move || KafkaSource::new(source.clone()));
    b.set_basic_bolt("split", 2, || SplitField("value"))
        .shuffle_grouping("kafka");
    b.set_basic_bolt("count", 2, CountBolt::default)
        .fields_grouping("split", ["word"]);
    let topology = b.build().unwrap();
    let spouts = [task_of(&topology, "kafka", 0), task_of(&topology, "kafka", 1)];
    let victims = [
        spouts[1],
        task_of(&topology, "count", 0),
        spouts[0],
        task_of(&topology, "split", 1),
    ];
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let options = SimulatorOptions {
        checkpoint_store: Some(Arc::clone(&store) as Arc<dyn CheckpointStore>),
        ..Default::default()
    };
    let running = Simulator::start_with(topology, options).unwrap();
    for victim in victims {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(running.fail_task(victim));
    }
    // The end: a complete checkpoint whose spout positions are every partition's end (its cut holds every record).
    let at_end = |c: CheckpointId| {
        let mut positions = BTreeMap::new();
        for t in spouts {
            let Ok(bytes) = store.load(c, t) else { return false };
            let Ok(p) = egret_api::KeyedState::<i32, i64>::restore(Some(&bytes)) else {
                return false;
            };
            positions.extend(p.into_map());
        }
        positions == ends
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !running
        .checkpoints()
        .and_then(|s| s.complete.last().copied())
        .is_some_and(at_end)
    {
        assert!(Instant::now() < deadline, "no checkpoint holds the whole topic");
        std::thread::sleep(Duration::from_millis(10));
    }
    let lags = user_metric(&running, "kafka-source-lag-0");
    let finished = running.stop();
    let status = finished.checkpoints.clone().unwrap();
    assert_eq!(status.stats.rollbacks, 4, "{status:?}");
    assert_eq!(total_counts(finished.bolts::<CountBolt>("count")), expected);
    assert!(!lags.is_empty(), "the lag of partition 0 is reported");
}

/// A spout emitting `n` numbered values, each with a message id, until acked (at-least-once).
struct Numbers {
    n: u64,
    next: u64,
    failed: Vec<u64>,
}

impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "value"]);
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        if let Some(i) = self.failed.pop() {
            out.emit_with_id(i, (format!("k{}", i % 10), format!("v{i}")));
        } else if self.next < self.n {
            let i = self.next;
            self.next += 1;
            out.emit_with_id(i, (format!("k{}", i % 10), format!("v{i}")));
        }
    }

    fn fail(&mut self, id: MessageId) {
        self.failed.push(id);
    }
}

#[test]
fn kafka_sink_at_least_once_acks_after_the_broker_and_keys_pick_partitions() {
    let broker = TansuServer::start();
    broker.create_topic("out", 2);
    let n = 3_000u64;
    let mut b = TopologyBuilder::new("kafka-sink");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .set(keys::MAX_SPOUT_PENDING, 500);
    b.set_spout("numbers", 1, move || Numbers {
        n,
        next: 0,
        failed: Vec::new(),
    });
    let sink = KafkaSinkConfig::new([broker.address()], "out", "value")
        .key_field("key")
        .batch(200, Duration::from_millis(20));
    b.set_bolt("sink", 2, move || KafkaSink::new(sink.clone()))
        .shuffle_grouping("numbers")
        .config(keys::TICK_TUPLE_FREQ_MS, 50);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    running
        .wait_until(Duration::from_secs(60), |m| m.component("numbers").acked >= n)
        .expect("every value acked");
    let written: f64 = user_metric(&running, "kafka-sink-records-written").iter().sum();
    running.stop();
    let all = read_all(&broker, "out", 2);
    let values: BTreeSet<&String> = all.values().flatten().collect();
    assert_eq!(values.len() as u64, n, "every acked value is in the topic");
    assert!(written >= 0.0);
    // One key always lands in the same partition.
    for (p, vs) in &all {
        for v in vs {
            let i: u64 = v[1..].parse().unwrap();
            let key = format!("k{}", i % 10);
            assert_eq!(
                egret_connect_kafka::fnv1a(key.as_bytes()) % 2,
                *p as u64,
                "{v} in partition {p}"
            );
        }
    }
}

#[test]
fn kafka_source_at_least_once_reads_from_latest() {
    let broker = TansuServer::start();
    broker.create_topic("events", 2);
    let old: Vec<String> = (0..100).map(|i| format!("old-{i}")).collect();
    produce(&broker, "events", 2, &old);

    let mut b = TopologyBuilder::new("kafka-latest");
    b.config().set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce);
    let source = KafkaSourceConfig::new([broker.address()], "events").start(StartAt::Latest);
    b.set_spout("kafka", 1, move || KafkaSource::new(source.clone()));
    b.set_basic_bolt("split", 1, || SplitField("value"))
        .shuffle_grouping("kafka");
    b.set_basic_bolt("count", 1, CountBolt::default)
        .fields_grouping("split", ["word"]);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    wait_for("the source's first listing", Duration::from_secs(30), || {
        (!user_metric(&running, "kafka-source-connected").is_empty()).then_some(())
    });
    // Positions at latest are resolved at the first fetch of each partition; give them a moment.
    std::thread::sleep(Duration::from_millis(500));
    let new: Vec<String> = (0..200).map(|i| format!("new-{i}")).collect();
    produce(&broker, "events", 2, &new);
    running
        .wait_until(Duration::from_secs(30), |m| m.component("kafka").acked >= 200)
        .expect("the new records acked");
    let finished = running.stop();
    let counts = total_counts(finished.bolts::<CountBolt>("count"));
    assert!(counts.keys().all(|w| w.starts_with("new-")), "old records are skipped");
    assert_eq!(counts.len(), 200);
}

#[test]
fn kafka_source_retries_a_broker_that_is_away_and_then_reads_everything() {
    let mut broker = TansuServer::start();
    broker.stop();
    let mut b = TopologyBuilder::new("kafka-away");
    b.config().set(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce);
    let source = KafkaSourceConfig::new([broker.address()], "late")
        .call_timeout(Duration::from_secs(1))
        .retry_max(Duration::from_millis(400));
    b.set_spout("kafka", 2, move || KafkaSource::new(source.clone()));
    b.set_basic_bolt("split", 1, || SplitField("value"))
        .shuffle_grouping("kafka");
    b.set_basic_bolt("count", 1, CountBolt::default)
        .fields_grouping("split", ["word"]);
    let running = Simulator::start(b.build().unwrap()).unwrap();
    wait_for(
        "failed attempts while the broker is away",
        Duration::from_secs(30),
        || (user_metric(&running, "kafka-source-retries").iter().sum::<f64>() >= 2.0).then_some(()),
    );
    broker.resume();
    broker.create_topic("late", 2);
    let input: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    produce(&broker, "late", 2, &input);
    running
        .wait_until(Duration::from_secs(60), |m| m.component("kafka").acked >= 300)
        .expect("every record read once the broker is back");
    let finished = running.stop();
    let counts = total_counts(finished.bolts::<CountBolt>("count"));
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&n| n == 1), "each record once without failures");
}

#[test]
fn kafka_to_kafka_under_effectively_once_with_failures_writes_every_record_at_least_once() {
    let broker = TansuServer::start();
    broker.create_topic("in", 2);
    broker.create_topic("copy", 2);
    let input: Vec<String> = (0..4_000).map(|i| format!("r{i}")).collect();
    produce(&broker, "in", 2, &input);

    let mut b = TopologyBuilder::new("kafka-copy");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    let source = KafkaSourceConfig::new([broker.address()], "in");
    b.set_spout("kafka", 2, move || KafkaSource::new(source.clone()));
    let sink = KafkaSinkConfig::new([broker.address()], "copy", "value");
    b.set_bolt("sink", 2, move || KafkaSink::new(sink.clone()))
        .shuffle_grouping("kafka");
    let topology = b.build().unwrap();
    let victims = [task_of(&topology, "sink", 0), task_of(&topology, "kafka", 1)];
    let options = SimulatorOptions {
        checkpoint_store: Some(Arc::new(MemoryStore::new())),
        ..Default::default()
    };
    let running = Simulator::start_with(topology, options).unwrap();
    for victim in victims {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(running.fail_task(victim));
    }
    // Everything read is produced at the next checkpoints.
    let expected: BTreeSet<String> = input.iter().cloned().collect();
    wait_for("every record copied", Duration::from_secs(60), || {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        let copied: BTreeSet<String> = read_all(&broker, "copy", 2).into_values().flatten().collect();
        (copied == expected).then_some(())
    });
    let finished = running.stop();
    assert_eq!(finished.checkpoints.unwrap().stats.rollbacks, 2);
}

/// Records, for each tuple, the time since the production stamp in its value (µs since the epoch).
struct Latency(Arc<Mutex<Vec<Duration>>>);

impl BasicBolt for Latency {
    fn execute(&mut self, tuple: &Tuple<'_>, _out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let stamp: u128 = tuple
            .get_str("value")?
            .parse()
            .map_err(|_| "a value that is not a stamp")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        if let Ok(mut l) = self.0.lock() {
            l.push(Duration::from_micros(now.saturating_sub(stamp) as u64));
        }
        Ok(())
    }
}

#[test]
fn kafka_source_emits_records_that_trickle_in_without_waiting_for_full_batches() {
    let broker = TansuServer::start();
    broker.create_topic("trickle", 2);
    // One task reads both partitions: a call that waited on each in turn while records kept coming would never end
    // its emit cycle, and its open batch would wait to fill (1024 tuples: seconds at this rate).
    let mut b = TopologyBuilder::new("kafka-trickle");
    let source = KafkaSourceConfig::new([broker.address()], "trickle");
    b.set_spout("kafka", 1, move || KafkaSource::new(source.clone()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&latencies);
    b.set_basic_bolt("latency", 1, move || Latency(Arc::clone(&seen)))
        .shuffle_grouping("kafka");
    let running = Simulator::start(b.build().unwrap()).unwrap();
    wait_for("the source's first listing", Duration::from_secs(30), || {
        (!user_metric(&running, "kafka-source-connected").is_empty()).then_some(())
    });
    let rt = runtime();
    let c = client(&rt, &broker);
    let partitions: Vec<_> = (0..2)
        .map(|p| {
            rt.block_on(c.partition_client("trickle", p, UnknownTopicHandling::Retry))
                .unwrap()
        })
        .collect();
    // 100 records a second for 3 s, one per request, the partitions in turn.
    let n = 300;
    for i in 0..n {
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros();
        let record = Record {
            key: None,
            value: Some(stamp.to_string().into_bytes()),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        };
        rt.block_on(partitions[i % 2].produce(vec![record], Compression::NoCompression))
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    running
        .wait_until(Duration::from_secs(60), |m| m.component("latency").executed >= n as u64)
        .expect("every record read");
    running.stop();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let (p50, max) = (l[l.len() / 2], l[l.len() - 1]);
    eprintln!("latency from production to the bolt: p50 {p50:?}, max {max:?}");
    // A fetch waits at most 50 ms; a second leaves room for a loaded machine, and is far below a batch's fill time.
    assert!(max < Duration::from_secs(1), "p50 {p50:?}, max {max:?}");
}

#[test]
fn kafka_records_streamlet_delivers_every_record_exactly_once_under_effectively_once_with_failures() {
    let broker = TansuServer::start();
    let partitions: i32 = 2;
    broker.create_topic("records", partitions as u32);
    // Record `i` goes to partition `i % 2` (so its offset is `i / 2`), keyed `k<i>` when `i` is even and without a
    // key otherwise; its value ends with a byte that is not UTF-8, so it must come through as bytes.
    let rt = runtime();
    let c = client(&rt, &broker);
    let pcs: Vec<_> = (0..partitions)
        .map(|p| {
            rt.block_on(c.partition_client("records", p, UnknownTopicHandling::Retry))
                .unwrap()
        })
        .collect();
    let produce = |from: usize, to: usize| {
        for (p, pc) in pcs.iter().enumerate() {
            let records = (from..to)
                .filter(|i| i % pcs.len() == p)
                .map(|i| Record {
                    key: (i % 2 == 0).then(|| format!("k{i}").into_bytes()),
                    value: Some([format!("v{i}").as_bytes(), &[0xff]].concat()),
                    headers: BTreeMap::new(),
                    timestamp: chrono::Utc::now(),
                })
                .collect();
            rt.block_on(pc.produce(records, Compression::NoCompression)).unwrap();
        }
    };
    let (chunk, chunks) = (200usize, 30);
    let expected: BTreeSet<String> = (0..chunk * chunks)
        .map(|i| {
            let key = (i % 2 == 0).then(|| format!("k{i}"));
            format!("{}:{}:{key:?}:v{i}\u{fffd}", i % 2, i / 2)
        })
        .collect();

    let builder = streamlet::Builder::new();
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    let source = KafkaSourceConfig::new([broker.address()], "records").start(StartAt::Earliest);
    kafka_records(&builder, source)
        .name("kafka")
        .parallelism(2)
        .map(|r: KafkaRecord| {
            let key = r.key.map(|k| String::from_utf8_lossy(&k).into_owned());
            let value = String::from_utf8_lossy(&r.value);
            format!("{}:{}:{key:?}:{value}", r.partition, r.offset)
        })
        .to_sink(move || Collect::new(&r))
        .name("collect")
        .parallelism(2);
    let config = Config::new()
        .with(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .with(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    let topology = builder.build("kafka-streamlet", config).unwrap();
    let victims = [
        task_of(&topology, "kafka", 1),
        task_of(&topology, "collect", 0),
        task_of(&topology, "kafka", 0),
    ];
    let running = Simulator::start(topology).unwrap();
    // Records arrive while tasks fail: each failure rolls back what followed the last checkpoint, which replays.
    fail_while_producing(&running, &victims, chunks as u64, |c| {
        let c = c as usize;
        produce(c * chunk, (c + 1) * chunk)
    });
    wait_for("every record in the sinks", Duration::from_secs(90), || {
        (received_union(&received).len() >= expected.len()).then_some(())
    });
    // Two more checkpoints: a rollback still under way would have ended (and replaced the sinks' state) before them.
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    let got = received_union(&received);
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let status = finished.checkpoints.unwrap();
    assert!(status.stats.rollbacks >= 3, "{status:?}");
    let twice: Vec<_> = got.iter().filter(|&(_, &c)| c != 1).take(5).collect();
    assert!(twice.is_empty(), "each record received exactly once: {twice:?}");
    assert_eq!(got.into_keys().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn kafka_values_streamlet_delivers_every_value_at_least_once() {
    let broker = TansuServer::start();
    broker.create_topic("values", 2);
    let input: Vec<String> = (0..1_000).map(|i| format!("value {i}")).collect();
    produce(&broker, "values", 2, &input);
    let builder = streamlet::Builder::new();
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    // `kafka_values` reads the values as strings whatever format the configuration says.
    let source = KafkaSourceConfig::new([broker.address()], "values").format(egret_connect_kafka::ValueFormat::Bytes);
    kafka_values(&builder, source)
        .parallelism(2)
        .map(|v: String| v.to_uppercase())
        .to_sink(move || Collect::new(&r));
    let config = Config::new()
        .with(keys::RELIABILITY_MODE, ReliabilityMode::AtLeastOnce)
        .with(keys::MESSAGE_TIMEOUT_SECS, 5);
    let running = Simulator::start(builder.build("kafka-values", config).unwrap()).unwrap();
    let expected: BTreeSet<String> = input.iter().map(|v| v.to_uppercase()).collect();
    wait_for("every value in the sink", Duration::from_secs(60), || {
        (received_union(&received).len() >= expected.len()).then_some(())
    });
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert_eq!(received_union(&received).into_keys().collect::<BTreeSet<_>>(), expected);
}
