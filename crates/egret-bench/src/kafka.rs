//! `egret-bench kafka`: the Kafka source feeding a word count, in the simulator, against a real Kafka-protocol
//! broker (a tansu broker with in-memory storage started for the run, `egret_testkit::kafka::TansuServer`, or
//! `--broker`).
//!
//! The topology: `kafka` (a [`KafkaSource`] over the topic's partitions) → `split` (shuffle; each record's value is
//! `<production time, µs since the epoch> <word> <word> ...`) → `count` (fields grouping on the word; counts words,
//! and in a latency run records, per word, the time from the record's production to its count).
//!
//! - **Throughput** (no `--rate`): `--records` records are produced first; the topology then reads them from the
//!   earliest offset, and the run measures the time from the topology's start until every word is counted
//!   (`records_per_s`, `words_per_s`). In the same run, `fetch_only_records_per_s` is a plain rskafka fetch loop
//!   reading the same records on one thread: what the broker serves without Egret.
//! - **Latency** (`--rate R`): the topology runs first; a producer then writes `R` records per second for
//!   `--seconds` (every 10 ms, what is due, in requests of at most 32 records to the partitions in turn, each record
//!   stamped just before its request is sent), and the counting bolt
//!   records, for every word, now − stamp: `p50_ms`, `p99_ms`, `max_ms` of the end-to-end latency (produce call,
//!   broker, fetch, split, count).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use egret::simulator::Simulator;
use egret::*;
use egret_connect_kafka::{KafkaSource, KafkaSourceConfig, StartAt};
use egret_examples::stateful_word_count::CountBolt;
use egret_examples::word_count;
use egret_testkit::kafka::TansuServer;
use hdrhistogram::Histogram;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::{Semantics, usage};

#[derive(Parser)]
pub struct KafkaArgs {
    /// A running broker, `host:port` (the topic is created by the bench when it starts its own broker only; with
    /// `--broker` it must exist, with `--partitions` partitions). Default: a tansu broker started for the run.
    #[arg(long)]
    broker: Option<String>,
    #[arg(long, default_value = "egret-bench")]
    topic: String,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Throughput run: the records produced first, then read.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Latency run: records per second produced while the topology runs.
    #[arg(long)]
    rate: Option<f64>,
    /// Latency run: how long to produce.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Words per record (from a dictionary of `--words` random 20-character words).
    #[arg(long, default_value_t = 8)]
    words_per_record: usize,
    #[arg(long, default_value_t = 10_000)]
    words: usize,
    #[arg(long, default_value_t = 2)]
    spouts: u32,
    #[arg(long, default_value_t = 2)]
    bolts: u32,
    /// How long a fetch waits on the broker at the end of a partition (`KafkaSourceConfig::fetch`).
    #[arg(long, default_value_t = 50)]
    fetch_wait_ms: u64,
    #[arg(long, value_enum, default_value = "atmost")]
    semantics: Semantics,
}

/// Records per produce request in a latency run.
const PRODUCE_RECORDS: usize = 32;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Splits `<stamp> <word> ...` into `(word, stamp)`.
struct StampedSplit;

impl BasicBolt for StampedSplit {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "stamp_us"]);
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        let mut parts = tuple.get_str("value")?.split_whitespace();
        let stamp: i64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or("a record without its production time")?;
        for word in parts {
            out.emit((word, stamp));
        }
        Ok(())
    }
}

/// Counts words (`CountBolt`: a running count in checkpointed state); with a histogram, records each word's latency
/// from its record's production (µs).
struct LatencyCount {
    count: CountBolt,
    latency: Option<Arc<Mutex<Histogram<u64>>>>,
}

impl BasicBolt for LatencyCount {
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
        self.count.execute(tuple, out)?;
        if let Some(h) = &self.latency {
            let us = (now_us() - tuple.get_i64("stamp_us")?).max(1) as u64;
            if let Ok(mut h) = h.lock() {
                h.saturating_record(us);
            }
        }
        Ok(())
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        self.count.stateful()
    }
}

/// A client and one partition client per partition, on a runtime of their own.
struct Producer {
    rt: tokio::runtime::Runtime,
    partitions: Vec<PartitionClient>,
    dictionary: Vec<String>,
    words_per_record: usize,
    next_word: usize,
}

impl Producer {
    fn connect(broker: &str, topic: &str, partitions: i32, a: &KafkaArgs) -> anyhow::Result<Producer> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client: Client = rt.block_on(ClientBuilder::new(vec![broker.to_string()]).build())?;
        let partitions = (0..partitions)
            .map(|p| rt.block_on(client.partition_client(topic.to_string(), p, UnknownTopicHandling::Retry)))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("the partitions of topic {topic:?} on {broker}"))?;
        Ok(Producer {
            rt,
            partitions,
            dictionary: word_count::random_dictionary(a.words.max(1), 0x5eed),
            words_per_record: a.words_per_record,
            next_word: 0,
        })
    }

    /// `n` records stamped now, sent as one batch to `partition`.
    fn send(&mut self, partition: usize, n: usize) -> anyhow::Result<()> {
        let stamp = now_us().to_string();
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let mut value = stamp.clone();
            for _ in 0..self.words_per_record {
                value.push(' ');
                value.push_str(&self.dictionary[self.next_word % self.dictionary.len()]);
                self.next_word = self.next_word.wrapping_mul(31).wrapping_add(17) % self.dictionary.len();
            }
            records.push(Record {
                key: None,
                value: Some(value.into_bytes()),
                headers: BTreeMap::new(),
                timestamp: chrono::Utc::now(),
            });
        }
        let pc = &self.partitions[partition % self.partitions.len()];
        self.rt.block_on(pc.produce(records, Compression::NoCompression))?;
        Ok(())
    }

    /// Reads every record of every partition once with plain fetches on this thread; returns how many.
    fn fetch_all(&self) -> anyhow::Result<u64> {
        let mut n = 0;
        for pc in &self.partitions {
            let (_, end) = self.rt.block_on(pc.fetch_records(0, 1..2, 0))?;
            let mut next = 0;
            while next < end {
                let (records, _) = self.rt.block_on(pc.fetch_records(next, 1..(1 << 20), 0))?;
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                n += records.len() as u64;
            }
        }
        Ok(n)
    }
}

fn topology(a: &KafkaArgs, broker: &str, latency: Option<Arc<Mutex<Histogram<u64>>>>) -> anyhow::Result<Topology> {
    let mut b = TopologyBuilder::new("kafka-bench");
    b.config().set(keys::RELIABILITY_MODE, a.semantics.reliability());
    if a.semantics == Semantics::EffectivelyOnce {
        b.config().set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 1);
    }
    let source = KafkaSourceConfig::new([broker.to_string()], a.topic.clone())
        .start(StartAt::Earliest)
        .fetch(1 << 20, Duration::from_millis(a.fetch_wait_ms));
    b.set_spout("kafka", a.spouts, move || KafkaSource::new(source.clone()));
    b.set_basic_bolt("split", a.spouts, || StampedSplit)
        .shuffle_grouping("kafka");
    b.set_basic_bolt("count", a.bolts, move || LatencyCount {
        count: CountBolt::default(),
        latency: latency.clone(),
    })
    .fields_grouping("split", ["word"]);
    Ok(b.build()?)
}

/// Waits until the counting bolts executed `words` tuples; the time it took, or an error after `limit`.
fn counted(running: &egret::simulator::Running, words: u64, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let done = running.metrics().component("count").executed;
        if done >= words {
            return Ok(start.elapsed());
        }
        if let Some((task, e)) = running.errors().first() {
            bail!("task {task} reported an error: {e}");
        }
        if start.elapsed() > limit {
            bail!("{done} of {words} words counted after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn run(a: KafkaArgs) -> anyhow::Result<()> {
    if a.partitions < 1 || a.spouts < 1 || a.bolts < 1 || a.words_per_record < 1 {
        bail!("--partitions, --spouts, --bolts and --words-per-record must be at least 1");
    }
    if a.rate.is_some_and(|r| r <= 0.0) || a.seconds <= 0.0 {
        bail!("--rate and --seconds must be positive");
    }
    // Our own broker unless one is given; kept alive until the end of the run.
    let own = match &a.broker {
        Some(_) => None,
        None => {
            let server = TansuServer::start();
            server.create_topic(&a.topic, a.partitions as u32);
            Some(server)
        }
    };
    let broker = match (&a.broker, &own) {
        (Some(b), _) => b.clone(),
        (None, Some(server)) => server.address(),
        (None, None) => bail!("no broker"),
    };
    let mut producer = Producer::connect(&broker, &a.topic, a.partitions, &a)?;
    let mut line = format!(
        "RESULT bench=kafka mode=simulator semantics={} partitions={} spouts={} bolts={} words_per_record={} \
         fetch_wait_ms={}",
        a.semantics.as_str(),
        a.partitions,
        a.spouts,
        a.bolts,
        a.words_per_record,
        a.fetch_wait_ms
    );
    match a.rate {
        None => {
            eprintln!("producing {} records", a.records);
            let produce_start = Instant::now();
            let batch = 1000;
            let mut sent = 0;
            let mut partition = 0;
            while sent < a.records {
                let n = batch.min(a.records - sent);
                producer.send(partition, n)?;
                sent += n;
                partition += 1;
            }
            eprintln!("produced in {:.2} s", produce_start.elapsed().as_secs_f64());
            let fetch_start = Instant::now();
            let fetched = producer.fetch_all()?;
            let fetch_s = fetch_start.elapsed().as_secs_f64();
            if fetched != a.records as u64 {
                bail!("the topic holds {fetched} records, not {}", a.records);
            }
            let words = (a.records * a.words_per_record) as u64;
            let (cpu0, _) = usage();
            let running = Simulator::start(topology(&a, &broker, None)?).context("starting the simulator")?;
            let took = counted(&running, words, Duration::from_secs(600))?;
            let (cpu1, _) = usage();
            running.abort();
            line.push_str(&format!(
                " records={} records_per_s={:.0} words_per_s={:.0} cpu_s={:.2} fetch_only_records_per_s={:.0}",
                a.records,
                a.records as f64 / took.as_secs_f64(),
                words as f64 / took.as_secs_f64(),
                (cpu1 - cpu0).as_secs_f64(),
                a.records as f64 / fetch_s
            ));
        }
        Some(rate) => {
            let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?));
            let running = Simulator::start(topology(&a, &broker, Some(Arc::clone(&histogram)))?)
                .context("starting the simulator")?;
            // The sources connect and resolve their positions before the first record is stamped.
            std::thread::sleep(Duration::from_secs(2));
            let tick = Duration::from_millis(10);
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(a.seconds);
            let (mut sent, mut partition) = (0usize, 0usize);
            let mut next = start;
            let mut sending = Duration::ZERO;
            while next < end {
                // Records due by now at the rate, in one batch per tick, the partitions in turn.
                let due = (next.duration_since(start).as_secs_f64() * rate) as usize;
                while due > sent {
                    // Small requests: against tansu on loopback, an rskafka produce request of more than about 8 KB
                    // took about 45 ms here (a request of 40 records about 0.5 ms), which would hold the rate back.
                    let n = (due - sent).min(PRODUCE_RECORDS);
                    let t = Instant::now();
                    producer.send(partition, n)?;
                    sending += t.elapsed();
                    partition += 1;
                    sent += n;
                }
                next += tick;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let produced_s = start.elapsed().as_secs_f64();
            eprintln!(
                "produced {sent} records in {produced_s:.2} s, {:.2} s of it in produce calls",
                sending.as_secs_f64()
            );
            counted(&running, (sent * a.words_per_record) as u64, Duration::from_secs(60))?;
            running.abort();
            let h = histogram
                .lock()
                .map_err(|_| anyhow::anyhow!("the latency histogram's lock"))?;
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            line.push_str(&format!(
                " rate={rate:.0} records={sent} achieved_rate={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
                sent as f64 / produced_s,
                ms(0.5),
                ms(0.99),
                h.max() as f64 / 1000.0
            ));
        }
    }
    println!("{line}");
    Ok(())
}
