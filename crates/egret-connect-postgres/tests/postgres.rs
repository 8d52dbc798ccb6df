//! The PostgreSQL sink against a real server (a private cluster of Debian's PostgreSQL, started per test): its
//! configuration errors, an at-least-once run across a server restart, and the two-phase sink under effectively-once
//! with injected failures (file source → split → running count → an upsert table and an append-only table).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret::metrics::MetricSample;
use egret::simulator::{Simulator, SimulatorOptions};
use egret::*;
use egret_checkpoint::MemoryStore;
use egret_connect_files::{FileSource, FileSourceConfig};
use egret_connect_postgres::{PostgresSink, PostgresSinkConfig};
use egret_examples::reliable_word_count::{expected_counts, sentences};
use egret_examples::stateful_word_count::{RunningCountBolt, SplitField};
use egret_testkit::postgres::PgServer;

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scalar(pg: &PgServer, sql: &str) -> i64 {
    pg.psql("postgres", sql).trim().parse().unwrap_or(-1)
}

/// Emits `(id, value)` for ids `0..n`, at most `rate` per second, with message ids; failed ids are emitted again.
struct IdSpout {
    n: i64,
    next: i64,
    rate: f64,
    started: Option<Instant>,
    replay: Vec<MessageId>,
}

impl Spout for IdSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "value"]);
    }

    fn open(&mut self, _ctx: &TopologyContext) -> Result<(), UserError> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let elapsed = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        for _ in 0..32 {
            if let Some(id) = self.replay.pop() {
                out.emit_with_id(id, (id as i64, format!("value {id}")));
                continue;
            }
            if self.next >= self.n || self.next as f64 > elapsed * self.rate {
                return;
            }
            let id = self.next;
            self.next += 1;
            out.emit_with_id(id as MessageId, (id, format!("value {id}")));
        }
    }

    fn fail(&mut self, id: MessageId) {
        self.replay.push(id);
    }
}

fn id_topology(pg: &PgServer, mode: ReliabilityMode, table: PostgresSinkConfig, n: i64, rate: f64) -> Topology {
    let _ = pg;
    let mut b = TopologyBuilder::new("pg-ids");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5)
        .set(keys::MAX_SPOUT_PENDING, 1000);
    b.set_spout("ids", 1, move || IdSpout {
        n,
        next: 0,
        rate,
        started: None,
        replay: Vec::new(),
    });
    b.set_bolt("sink", 2, move || PostgresSink::new(table.clone()))
        .shuffle_grouping("ids")
        .config(keys::TICK_TUPLE_FREQ_MS, 50);
    b.build().unwrap()
}

fn start_error(topology: Topology, expected: &str) -> String {
    match Simulator::start(topology) {
        Ok(running) => {
            let _ = running.stop();
            panic!("the topology started; expected {expected:?}")
        }
        Err(e) => e.to_string(),
    }
}

#[test]
fn postgres_sink_reports_configuration_errors_at_prepare_with_the_servers_answer() {
    let pg = PgServer::start();
    pg.psql(
        "postgres",
        "CREATE TABLE items (id bigint PRIMARY KEY, value text); CREATE TABLE plain (id bigint, value text)",
    );
    let good = pg.connection("postgres");
    let cases = [
        (
            PostgresSinkConfig::upsert(
                format!(
                    "host=127.0.0.1 port={} user=postgres password=x dbname=postgres",
                    pg.port
                ),
                "items",
                &["id", "value"],
                &["id"],
            ),
            "password authentication failed for user \"postgres\"",
        ),
        (
            PostgresSinkConfig::upsert(
                format!(
                    "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
                    egret_testkit::zookeeper::free_port()
                ),
                "items",
                &["id", "value"],
                &["id"],
            ),
            "cannot connect to 127.0.0.1",
        ),
        (
            PostgresSinkConfig::upsert(good.clone(), "missing", &["id", "value"], &["id"]),
            "relation \"missing\" does not exist",
        ),
        (
            PostgresSinkConfig::upsert(good.clone(), "items", &["id", "nope"], &["id"]),
            "items has no column \"nope\"",
        ),
        (
            PostgresSinkConfig::upsert(good.clone(), "plain", &["id", "value"], &["id"]),
            "there is no unique or exclusion constraint matching the ON CONFLICT specification",
        ),
    ];
    for (config, answer) in cases {
        let e = start_error(
            id_topology(&pg, ReliabilityMode::AtMostOnce, config, 10, 1000.0),
            answer,
        );
        assert!(e.contains(answer), "expected {answer:?} in: {e}");
        assert!(!e.contains(PgServer::PASSWORD), "the password is not shown: {e}");
    }
}

fn user_metric(running: &egret::simulator::Running, name: &str) -> f64 {
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

#[test]
fn postgres_sink_at_least_once_survives_a_server_restart_without_losing_or_duplicating_rows() {
    let mut pg = PgServer::start();
    pg.psql("postgres", "CREATE TABLE items (id bigint PRIMARY KEY, value text)");
    let n = 20_000;
    let config = PostgresSinkConfig::upsert(pg.connection("postgres"), "items", &["id", "value"], &["id"])
        .batch(200, Duration::from_millis(20))
        .retry_max(Duration::from_millis(400));
    let running = Simulator::start(id_topology(&pg, ReliabilityMode::AtLeastOnce, config, n, 4000.0)).unwrap();
    wait_for("some rows", Duration::from_secs(30), || {
        scalar(&pg, "SELECT count(*) FROM items") > 2000
    });
    pg.stop();
    std::thread::sleep(Duration::from_millis(1500));
    pg.resume();
    running
        .wait_until(Duration::from_secs(60), |m| m.component("ids").acked >= n as u64)
        .expect("every id acked once written");
    let retries = user_metric(&running, "postgres-sink-retries");
    let finished = running.stop();
    let m = finished.metrics.component("ids");
    assert!(
        m.failed > 0,
        "rows not written while the server was away were failed and replayed"
    );
    assert!(retries > 0.0, "reconnections are counted");
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM items"),
        n,
        "every id once: replays upserted"
    );
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM items WHERE value <> 'value ' || id"),
        0
    );
}

/// Appends `sentences` to `files` files in `dir` over about two seconds (a following file source is paced by it).
fn append_slowly(dir: &Path, files: usize, sentences: Arc<Vec<String>>) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(dir).unwrap();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let mut handles: Vec<std::fs::File> = (0..files)
            .map(|i| std::fs::File::create(dir.join(format!("part-{i}.txt"))).unwrap())
            .collect();
        let chunk = 40;
        for (c, lines) in sentences.chunks(chunk).enumerate() {
            let mut text = lines.join("\n");
            text.push('\n');
            handles[c % files].write_all(text.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(2000 * chunk as u64 / sentences.len() as u64));
        }
    })
}

/// Reads the counts table: word → count.
fn table_counts(pg: &PgServer) -> BTreeMap<String, u64> {
    pg.psql("postgres", "SELECT word, count FROM word_counts")
        .lines()
        .filter_map(|l| {
            let (w, n) = l.split_once('|')?;
            Some((w.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn postgres_two_phase_sink_holds_exact_counts_and_each_row_once_under_effectively_once_with_failures() {
    let pg = PgServer::start();
    pg.psql(
        "postgres",
        "CREATE TABLE word_counts (word text PRIMARY KEY, count bigint NOT NULL); \
         CREATE TABLE count_history (word text NOT NULL, count bigint NOT NULL)",
    );
    let input = Arc::new(sentences(8_000, 11));
    let expected = expected_counts(&input);
    let words: u64 = expected.values().sum();
    let dir = tempfile::tempdir().unwrap();
    let writer = append_slowly(dir.path(), 4, Arc::clone(&input));

    let mut b = TopologyBuilder::new("pg-word-count");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.1);
    let source = FileSourceConfig::new(dir.path())
        .follow(true)
        .poll_interval(Duration::from_millis(10));
    b.set_spout("lines", 2, move || FileSource::new(source.clone()));
    b.set_basic_bolt("split", 2, || SplitField("line"))
        .shuffle_grouping("lines");
    b.set_basic_bolt("count", 2, RunningCountBolt::default)
        .fields_grouping("split", ["word"]);
    let counts = PostgresSinkConfig::upsert(pg.connection("postgres"), "word_counts", &["word", "count"], &["word"]);
    b.set_bolt("counts", 2, move || PostgresSink::new(counts.clone()))
        .fields_grouping("count", ["word"]);
    let history = PostgresSinkConfig::append(pg.connection("postgres"), "count_history", &["word", "count"]);
    b.set_bolt("history", 2, move || PostgresSink::new(history.clone()))
        .shuffle_grouping("count");
    let topology = b.build().unwrap();
    let task = |component: &str, index: u32| egret_testkit::collect::task_of(&topology, component, index);
    let victims = [
        task("counts", 0),
        task("lines", 1),
        task("history", 1),
        task("count", 0),
    ];
    let options = SimulatorOptions {
        checkpoint_store: Some(Arc::new(MemoryStore::new())),
        ..Default::default()
    };
    let running = Simulator::start_with(topology, options).unwrap();
    for victim in victims {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        // Rows past the checkpoint first: buffered or prepared, to be rolled back and written again.
        std::thread::sleep(Duration::from_millis(150));
        assert!(running.fail_task(victim));
    }
    writer.join().unwrap();
    wait_for("every count committed", Duration::from_secs(60), || {
        scalar(&pg, "SELECT count(*) FROM count_history") >= words as i64
    });
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM pg_prepared_xacts"),
        0,
        "every prepared transaction settled"
    );
    let finished = running.stop();
    let status = finished.checkpoints.clone().unwrap();
    assert_eq!(status.stats.rollbacks, 4, "{status:?}");
    assert!(
        finished.metrics.component("history").executed > words,
        "the rollbacks replayed counts"
    );
    let got = table_counts(&pg);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected, "the upsert table holds the exact counts");
    assert_eq!(scalar(&pg, "SELECT count(*) FROM count_history"), words as i64);
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM (SELECT word FROM count_history GROUP BY word \
             HAVING count(*) <> max(count) OR count(DISTINCT count) <> count(*) OR min(count) <> 1) AS bad"
        ),
        0,
        "each word's counts 1..n appear exactly once"
    );
}
