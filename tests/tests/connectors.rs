//! Connectors on the local cluster against a real PostgreSQL (and a real Kafka-protocol broker, tansu): files or
//! Kafka → word count → PostgreSQL in 2 containers, while instances and stmgrs are killed with SIGKILL.
//!
//! Under effectively-once the sources' positions are checkpointed and the PostgreSQL sinks commit two-phase, so the
//! upsert table ends with the exact counts and the append-only table with each count row exactly once. Under
//! at-least-once every input word reaches the tables at least once: an upsert table keyed by the word's place in the
//! input absorbs the replays, an append-only one shows them.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use egret_examples::reliable_word_count::{expected_counts, sentences};
use egret_testkit::kafka::TansuServer;
use egret_testkit::postgres::PgServer;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const SENTENCES: usize = 12_000;
const SEED: u64 = 5;

fn scalar(pg: &PgServer, sql: &str) -> i64 {
    pg.psql("postgres", sql).trim().parse().unwrap_or(-1)
}

fn table_counts(pg: &PgServer) -> BTreeMap<String, u64> {
    pg.psql("postgres", "SELECT word, count FROM word_counts")
        .lines()
        .filter_map(|l| {
            let (w, n) = l.split_once('|')?;
            Some((w.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// Appends the sentences to 3 files in `dir` over about `secs` seconds, in chunks.
fn append_slowly(dir: &Path, input: Vec<String>, secs: u64) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(dir).unwrap();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let mut files: Vec<std::fs::File> = (0..3)
            .map(|i| std::fs::File::create(dir.join(format!("words-{i}.txt"))).unwrap())
            .collect();
        let chunk = 100;
        let pause = Duration::from_millis(secs * 1000 * chunk as u64 / input.len() as u64);
        for (c, lines) in input.chunks(chunk).enumerate() {
            let mut text = lines.join("\n");
            text.push('\n');
            let n = files.len();
            files[c % n].write_all(text.as_bytes()).unwrap();
            std::thread::sleep(pause);
        }
    })
}

/// A thread producing sentences into a topic (see [`produce_slowly`]).
struct Producing {
    thread: std::thread::JoinHandle<()>,
    /// Held by the producer while it sends a batch: whoever holds it knows that no batch is in flight.
    gate: Arc<Mutex<()>>,
    /// Sentences sent (and acknowledged by the broker).
    sent: Arc<AtomicUsize>,
}

impl Producing {
    fn join(self) {
        self.thread.join().unwrap();
    }
}

/// Produces the sentences into `topic`, 100 per record batch, the batches round robin over its `partitions`, over
/// about `secs` seconds.
fn produce_slowly(broker: String, topic: &str, partitions: i32, input: Vec<String>, secs: u64) -> Producing {
    let topic = topic.to_string();
    let gate = Arc::new(Mutex::new(()));
    let sent = Arc::new(AtomicUsize::new(0));
    let (gate2, sent2) = (Arc::clone(&gate), Arc::clone(&sent));
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(ClientBuilder::new(vec![broker]).build()).unwrap();
        let clients: Vec<_> = (0..partitions)
            .map(|p| {
                rt.block_on(client.partition_client(topic.clone(), p, UnknownTopicHandling::Retry))
                    .unwrap()
            })
            .collect();
        let chunk = 100;
        let pause = Duration::from_millis(secs * 1000 * chunk as u64 / input.len() as u64);
        for (c, lines) in input.chunks(chunk).enumerate() {
            let records = lines
                .iter()
                .map(|l| Record {
                    key: None,
                    value: Some(l.as_bytes().to_vec()),
                    headers: BTreeMap::new(),
                    timestamp: chrono::Utc::now(),
                })
                .collect();
            {
                let _sending = gate2.lock().unwrap();
                rt.block_on(clients[c % clients.len()].produce(records, Compression::NoCompression))
                    .unwrap();
                sent2.fetch_add(lines.len(), Ordering::SeqCst);
            }
            std::thread::sleep(pause);
        }
    });
    Producing { thread, gate, sent }
}

/// Waits until the count `sql` answers reaches `want` and stays unchanged for 3 s (a duplicate would show as
/// more); panics with the logs after `limit`.
fn settle(c: &Cluster, pg: &PgServer, sql: &str, want: i64, limit: Duration, killed: &[String]) {
    let deadline = Instant::now() + limit;
    let mut last = (-1, Instant::now());
    loop {
        let rows = scalar(pg, sql);
        if rows != last.0 {
            last = (rows, Instant::now());
        } else if rows >= want && last.1.elapsed() > Duration::from_secs(3) {
            return;
        }
        if Instant::now() > deadline {
            c.print_logs();
            panic!("after killing {killed:?}: {sql} is {rows}, not {want}, after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The effectively-once tables: `word_counts` holds the exact counts, `count_history` each word's counts 1..n
/// exactly once.
fn assert_exact(pg: &PgServer, expected: &BTreeMap<String, u64>, killed: &[String]) {
    let words: u64 = expected.values().sum();
    let got = table_counts(pg);
    let diff: Vec<_> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .take(5)
        .map(|(w, n)| format!("{w}: {n} expected, {:?} in the table", got.get(w)))
        .collect();
    assert!(diff.is_empty(), "after killing {killed:?}: {diff:?}");
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        scalar(pg, "SELECT count(*) FROM count_history"),
        words as i64,
        "after killing {killed:?}"
    );
    assert_eq!(
        scalar(
            pg,
            "SELECT count(*) FROM (SELECT word FROM count_history GROUP BY word \
             HAVING count(*) <> max(count) OR count(DISTINCT count) <> count(*) OR min(count) <> 1) AS bad"
        ),
        0,
        "each word's counts 1..n exactly once, after killing {killed:?}"
    );
}

const COUNT_TABLES: &str = "CREATE TABLE word_counts (word text PRIMARY KEY, count bigint NOT NULL); \
                            CREATE TABLE count_history (word text NOT NULL, count bigint NOT NULL)";

#[test]
fn postgres_two_phase_sink_and_file_source_are_exact_while_instances_and_stmgrs_are_killed() {
    let input = sentences(SENTENCES, SEED);
    let expected = expected_counts(&input);
    let words: u64 = expected.values().sum();
    let pg = PgServer::start();
    pg.psql("postgres", COUNT_TABLES);
    let c = Cluster::new();
    let dir = c.home.join("input");
    let writer = append_slowly(&dir, input, 15);
    let bin = env!("CARGO_BIN_EXE_connectors-check");
    let (dir_s, connection) = (dir.display().to_string(), pg.connection("postgres"));
    c.ok(&["submit", "local", bin, "--input", &dir_s, "--connection", &connection]);
    let t = TOPOLOGY;
    let killed = kill_randomly(&c, t, &["instance", "stmgr"], 6, || {
        format!(
            "{} count rows committed",
            scalar(&pg, "SELECT count(*) FROM count_history")
        )
    });
    writer.join().unwrap();
    let history = "SELECT count(*) FROM count_history";
    settle(&c, &pg, history, words as i64, Duration::from_secs(90), &killed);
    assert_exact(&pg, &expected, &killed);
    c.ok(&["kill", "local", t]);
}

/// Kafka sentences for the Kafka tests: 4 partitions read by 2 spout tasks.
const KAFKA_SENTENCES: usize = 8_000;
const KAFKA_PARTITIONS: i32 = 4;
const TOPOLOGY: &str = "connectors-word-count";

/// `connectors-check` reading Kafka, running, with its servers (fields in drop order: the topology is killed before
/// its servers stop).
struct KafkaRun {
    c: Cluster,
    producer: Producing,
    broker: TansuServer,
    pg: PgServer,
    /// The input's word counts, and their sum.
    expected: BTreeMap<String, u64>,
    words: i64,
}

/// Starts PostgreSQL with `tables`, a broker (its records in PostgreSQL when `persistent`) with topic `sentences`, a
/// producer writing [`KAFKA_SENTENCES`] sentences (from `seed`) into it over `secs` seconds, and the topology with
/// the extra arguments `args`.
fn start_kafka_run(seed: u64, tables: &str, persistent: bool, secs: u64, args: &[&str]) -> KafkaRun {
    let input = sentences(KAFKA_SENTENCES, seed);
    let expected = expected_counts(&input);
    let words = expected.values().sum::<u64>() as i64;
    let pg = PgServer::start();
    pg.psql("postgres", tables);
    let broker = if persistent {
        TansuServer::start_on_postgres(&pg)
    } else {
        TansuServer::start()
    };
    broker.create_topic("sentences", KAFKA_PARTITIONS as u32);
    let c = Cluster::new();
    let producer = produce_slowly(broker.address(), "sentences", KAFKA_PARTITIONS, input, secs);
    let bin = env!("CARGO_BIN_EXE_connectors-check");
    let (address, connection) = (broker.address(), pg.connection("postgres"));
    let mut submit = vec![
        "submit",
        "local",
        bin,
        "--kafka",
        &address,
        "--topic",
        "sentences",
        "--connection",
        &connection,
    ];
    submit.extend_from_slice(args);
    c.ok(&submit);
    KafkaRun {
        c,
        producer,
        broker,
        pg,
        expected,
        words,
    }
}

#[test]
fn kafka_to_postgres_word_count_is_exact_under_effectively_once_while_instances_and_stmgrs_are_killed() {
    let run = start_kafka_run(SEED + 1, COUNT_TABLES, false, 15, &[]);
    let (c, pg) = (&run.c, &run.pg);
    let history = "SELECT count(*) FROM count_history";
    let killed = kill_randomly(c, TOPOLOGY, &["instance", "stmgr"], 6, || {
        format!("{} count rows committed", scalar(pg, history))
    });
    run.producer.join();
    settle(c, pg, history, run.words, Duration::from_secs(90), &killed);
    assert_exact(pg, &run.expected, &killed);
    c.ok(&["kill", "local", TOPOLOGY]);
}

const OCCURRENCE_TABLES: &str = "CREATE TABLE word_occurrences (id text PRIMARY KEY, word text NOT NULL); \
                                 CREATE TABLE word_deliveries (id text NOT NULL, word text NOT NULL)";

#[test]
fn kafka_to_postgres_at_least_once_counts_every_word_while_instances_and_stmgrs_are_killed() {
    let run = start_kafka_run(SEED + 2, OCCURRENCE_TABLES, false, 15, &["--at-least-once"]);
    let (c, pg, expected, words) = (&run.c, &run.pg, &run.expected, run.words);
    let occurrences = "SELECT count(*) FROM word_occurrences";
    let killed = kill_randomly(c, TOPOLOGY, &["instance", "stmgr"], 6, || {
        format!("{} words stored", scalar(pg, occurrences))
    });
    run.producer.join();
    // Replays of tuples lost with a killed process wait for the message timeout (10 s).
    settle(c, pg, occurrences, words, Duration::from_secs(90), &killed);
    let distinct = "SELECT count(DISTINCT id) FROM word_deliveries";
    settle(c, pg, distinct, words, Duration::from_secs(30), &killed);
    let counted: BTreeMap<String, u64> = pg
        .psql("postgres", "SELECT word, count(*) FROM word_occurrences GROUP BY word")
        .lines()
        .filter_map(|l| {
            let (w, n) = l.split_once('|')?;
            Some((w.to_string(), n.parse().ok()?))
        })
        .collect();
    let short: Vec<_> = expected
        .iter()
        .filter(|(w, n)| counted.get(*w).copied().unwrap_or(0) < **n)
        .take(5)
        .map(|(w, n)| format!("{w}: {n} expected, {:?} counted", counted.get(w)))
        .collect();
    assert!(short.is_empty(), "after killing {killed:?}: {short:?}");
    // The upsert table holds each word's place once: exactly the input's counts.
    assert_eq!(&counted, expected, "after killing {killed:?}");
    assert_eq!(scalar(pg, distinct), words);
    let delivered = scalar(pg, "SELECT count(*) FROM word_deliveries");
    assert!(delivered >= words);
    eprintln!(
        "after killing {killed:?}: {words} words, {delivered} deliveries ({} replayed)",
        delivered - words
    );
    c.ok(&["kill", "local", TOPOLOGY]);
}

/// The sum of the high watermarks of `topic`'s partitions: how many records the broker holds.
fn records_held(broker: &TansuServer, topic: &str, partitions: i32) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(ClientBuilder::new(vec![broker.address()]).build()).unwrap();
    (0..partitions)
        .map(|p| {
            let pc = rt
                .block_on(client.partition_client(topic.to_string(), p, UnknownTopicHandling::Retry))
                .unwrap();
            rt.block_on(pc.fetch_records(0, 1..2, 0)).unwrap().1
        })
        .sum()
}

#[test]
fn kafka_broker_restart_under_a_running_topology_loses_nothing_under_effectively_once() {
    // The broker keeps its records in PostgreSQL (database `tansu`), so a restart keeps them.
    let mut run = start_kafka_run(SEED + 3, COUNT_TABLES, true, 12, &[]);
    let history = "SELECT count(*) FROM count_history";
    wait_for("the first count rows", || (scalar(&run.pg, history) > 0).then_some(()));
    let (rows_at_stop, held_at_stop) = {
        // Between two of the producer's batches (none in flight), while the topology reads and counts.
        let _paused = run.producer.gate.lock().unwrap();
        let held = run.producer.sent.load(Ordering::SeqCst);
        run.broker.stop();
        let rows = scalar(&run.pg, history);
        // The sources notice, back off and say so in their metrics.
        wait_for("the Kafka sources to back off", || {
            let retries = run.c.metric_sum(TOPOLOGY, "egret_user_kafka_source_retries", "");
            let connected = run.c.metric_sum(TOPOLOGY, "egret_user_kafka_source_connected", "");
            (retries > 0.0 && connected == 0.0).then_some(())
        });
        std::thread::sleep(Duration::from_secs(3));
        run.broker.resume();
        assert_eq!(
            records_held(&run.broker, "sentences", KAFKA_PARTITIONS),
            held as i64,
            "the restarted broker keeps its records"
        );
        (rows, held)
    };
    let (c, pg, words) = (&run.c, &run.pg, run.words);
    run.producer.join();
    settle(c, pg, history, words, Duration::from_secs(90), &[]);
    assert_exact(pg, &run.expected, &[]);
    wait_for("both Kafka source tasks connected again", || {
        (c.metric_sum(TOPOLOGY, "egret_user_kafka_source_connected", "") == 2.0).then_some(())
    });
    let retries = c.metric_sum(TOPOLOGY, "egret_user_kafka_source_retries", "");
    eprintln!(
        "broker stopped for 3 s after {held_at_stop} of {KAFKA_SENTENCES} sentences were produced and {rows_at_stop} of \
         {words} count rows committed; {retries} retries; every count exact"
    );
    c.ok(&["kill", "local", TOPOLOGY]);
}
