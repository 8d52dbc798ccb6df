//! Connectors on the local cluster against a real PostgreSQL: files → word count → PostgreSQL under effectively-once
//! in 2 containers, while instances and stmgrs are killed with SIGKILL. The file source's positions are checkpointed
//! and the PostgreSQL sinks commit two-phase, so the upsert table ends with the exact counts and the append-only
//! table with each count row exactly once.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use egret_examples::reliable_word_count::{expected_counts, sentences};
use egret_testkit::postgres::PgServer;

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

#[test]
fn postgres_two_phase_sink_and_file_source_are_exact_while_instances_and_stmgrs_are_killed() {
    let input = sentences(SENTENCES, SEED);
    let expected = expected_counts(&input);
    let words: u64 = expected.values().sum();
    let pg = PgServer::start();
    pg.psql(
        "postgres",
        "CREATE TABLE word_counts (word text PRIMARY KEY, count bigint NOT NULL); \
         CREATE TABLE count_history (word text NOT NULL, count bigint NOT NULL)",
    );
    let c = Cluster::new();
    let dir = c.home.join("input");
    let writer = append_slowly(&dir, input, 15);
    let bin = env!("CARGO_BIN_EXE_connectors-check");
    let (dir_s, connection) = (dir.display().to_string(), pg.connection("postgres"));
    c.ok(&["submit", "local", bin, "--input", &dir_s, "--connection", &connection]);
    let t = "connectors-word-count";
    let killed = kill_randomly(&c, t, &["instance", "stmgr"], 6, || {
        format!(
            "{} count rows committed",
            scalar(&pg, "SELECT count(*) FROM count_history")
        )
    });
    writer.join().unwrap();
    // Settled: every count row committed, and nothing more for 3 s (a duplicate would show as more).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (-1, Instant::now());
    loop {
        let rows = scalar(&pg, "SELECT count(*) FROM count_history");
        if rows != last.0 {
            last = (rows, Instant::now());
        } else if rows >= words as i64 && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        if Instant::now() > deadline {
            c.print_logs();
            panic!("after killing {killed:?}: {rows} of {words} count rows committed within 90 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let got = table_counts(&pg);
    let diff: Vec<_> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .take(5)
        .map(|(w, n)| format!("{w}: {n} expected, {:?} in the table", got.get(w)))
        .collect();
    assert!(diff.is_empty(), "after killing {killed:?}: {diff:?}");
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM count_history"),
        words as i64,
        "after killing {killed:?}"
    );
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM (SELECT word FROM count_history GROUP BY word \
             HAVING count(*) <> max(count) OR count(DISTINCT count) <> count(*) OR min(count) <> 1) AS bad"
        ),
        0,
        "each word's counts 1..n exactly once, after killing {killed:?}"
    );
    c.ok(&["kill", "local", t]);
}
