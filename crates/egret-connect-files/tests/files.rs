//! The file source and sink in the simulator, on real files: each mode's delivery, following appended lines and new
//! files, and effectively-once output that holds each line exactly once across injected failures.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret::simulator::{Simulator, SimulatorOptions};
use egret::*;
use egret_checkpoint::MemoryStore;
use egret_connect_files::{FileSink, FileSinkConfig, FileSource, FileSourceConfig, LineFileSink, file_lines};

/// What a collecting bolt saw: (file, offset, line) per tuple, in arrival order.
type Seen = Arc<Mutex<Vec<(String, i64, String)>>>;

/// Collects every tuple; under at-least-once fails each line once the first time it sees it (if `fail_first`).
struct Collect {
    seen: Seen,
    fail_first: bool,
    failed_once: std::collections::HashSet<(String, i64)>,
}

impl Bolt for Collect {
    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let (Ok(file), Ok(offset), Ok(line)) = (tuple.get_str("file"), tuple.get_i64("offset"), tuple.get_str("line"))
        else {
            out.fail(tuple);
            return;
        };
        self.seen
            .lock()
            .unwrap()
            .push((file.to_string(), offset, line.to_string()));
        if self.fail_first && self.failed_once.insert((file.to_string(), offset)) {
            out.fail(tuple);
        } else {
            out.ack(tuple);
        }
    }
}

/// Writes `files` files of `lines` lines each into `dir` (`f<i>.log`, lines `f<i> line <j>`); returns every line.
fn write_input(dir: &Path, files: usize, lines: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut all = Vec::new();
    for i in 0..files {
        let mut text = String::new();
        for j in 0..lines {
            let line = format!("f{i} line {j}");
            text.push_str(&line);
            text.push('\n');
            all.push(line);
        }
        std::fs::write(dir.join(format!("f{i}.log")), text).unwrap();
    }
    all.sort();
    all
}

fn source_topology(
    source: FileSourceConfig,
    spouts: u32,
    mode: ReliabilityMode,
    seen: &Seen,
    fail_first: bool,
) -> Topology {
    let mut b = TopologyBuilder::new("file-source-test");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5);
    b.set_spout("lines", spouts, move || FileSource::new(source.clone()));
    let seen = Arc::clone(seen);
    b.set_bolt("collect", 1, move || Collect {
        seen: Arc::clone(&seen),
        fail_first,
        failed_once: Default::default(),
    })
    .shuffle_grouping("lines");
    b.build().unwrap()
}

fn sorted_lines(seen: &Seen) -> Vec<String> {
    let mut v: Vec<String> = seen.lock().unwrap().iter().map(|(_, _, l)| l.clone()).collect();
    v.sort();
    v
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn file_source_reads_every_line_of_a_directory_once_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let expected = write_input(&input, 5, 300);
    // A hidden file (a writer's temporary file) is not read; a last line without a newline is.
    std::fs::write(input.join(".partial.inprogress"), "not this\n").unwrap();
    std::fs::write(input.join("tail.log"), "first\nno newline").unwrap();
    let mut expected = expected;
    expected.extend(["first".to_string(), "no newline".to_string()]);
    expected.sort();
    let seen: Seen = Default::default();
    let t = source_topology(
        FileSourceConfig::new(&input),
        3,
        ReliabilityMode::AtMostOnce,
        &seen,
        false,
    );
    let running = Simulator::start(t).unwrap();
    wait_for("every line", Duration::from_secs(30), || {
        seen.lock().unwrap().len() >= expected.len()
    });
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert_eq!(sorted_lines(&seen), expected);
    // Offsets are where each line starts in its file.
    for (file, offset, line) in seen.lock().unwrap().iter() {
        let bytes = std::fs::read(input.join(file)).unwrap();
        let at = &bytes[*offset as usize..];
        assert!(at.starts_with(line.as_bytes()), "{file}@{offset}: {line}");
    }
    let positions: BTreeMap<String, u64> = finished
        .spouts::<FileSource>("lines")
        .iter()
        .flat_map(|s| s.positions())
        .collect();
    assert_eq!(positions.len(), 6, "each file read by one task: {positions:?}");
    for (file, pos) in positions {
        assert_eq!(
            pos,
            std::fs::metadata(input.join(&file)).unwrap().len(),
            "{file} read to its end"
        );
    }
}

#[test]
fn file_source_follows_appended_lines_and_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.log"), "a0\na1\n").unwrap();
    let seen: Seen = Default::default();
    let source = FileSourceConfig::new(&input)
        .follow(true)
        .poll_interval(Duration::from_millis(20));
    let t = source_topology(source, 2, ReliabilityMode::AtMostOnce, &seen, false);
    let running = Simulator::start(t).unwrap();
    wait_for("the first lines", Duration::from_secs(20), || {
        seen.lock().unwrap().len() == 2
    });
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(input.join("a.log"))
        .unwrap();
    // Half a line is not emitted until its newline is written.
    a.write_all(b"a2 half").unwrap();
    a.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.lock().unwrap().len(), 2, "half a line is not a line");
    a.write_all(b" done\na3\n").unwrap();
    std::fs::write(input.join("b.log"), "b0\n").unwrap();
    wait_for("appended lines and the new file", Duration::from_secs(20), || {
        seen.lock().unwrap().len() >= 5
    });
    std::thread::sleep(Duration::from_millis(200));
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert_eq!(sorted_lines(&seen), ["a0", "a1", "a2 half done", "a3", "b0"]);
}

#[test]
fn file_source_replays_failed_lines_under_at_least_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let expected = write_input(&input, 3, 200);
    let seen: Seen = Default::default();
    let t = source_topology(
        FileSourceConfig::new(&input),
        2,
        ReliabilityMode::AtLeastOnce,
        &seen,
        true,
    );
    let running = Simulator::start(t).unwrap();
    running
        .wait_until(Duration::from_secs(30), |m| {
            m.component("lines").acked >= expected.len() as u64
        })
        .expect("every line acked after its replay");
    let finished = running.stop();
    let mut twice: Vec<String> = expected.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
    twice.sort();
    assert_eq!(sorted_lines(&seen), twice, "each line failed once, then replayed once");
    let m = finished.metrics.component("lines");
    assert_eq!((m.acked, m.failed), (expected.len() as u64, expected.len() as u64));
    assert!(finished.spouts::<FileSource>("lines").iter().all(|s| s.pending() == 0));
}

/// Every line in the visible (committed or rolled) files of `dir`, sorted; hidden files are not counted.
fn visible_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Lines as the default sink format writes a source tuple: `file<TAB>offset<TAB>line`.
fn sink_lines(input: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(input).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut offset = 0;
        for l in text.split_inclusive('\n') {
            v.push(format!("{name}\t{offset}\t{}", l.trim_end_matches('\n')));
            offset += l.len();
        }
    }
    v.sort();
    v
}

fn source_to_sink(input: &Path, sink: FileSinkConfig, mode: ReliabilityMode, interval_secs: f64) -> Topology {
    let mut b = TopologyBuilder::new("file-sink-test");
    b.config()
        .set(keys::RELIABILITY_MODE, mode)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, interval_secs)
        .set(keys::MESSAGE_TIMEOUT_SECS, 5)
        .set(keys::MAX_SPOUT_PENDING, 500);
    let source = FileSourceConfig::new(input);
    b.set_spout("lines", 2, move || FileSource::new(source.clone()));
    b.set_bolt("sink", 2, move || FileSink::new(sink.clone()))
        .shuffle_grouping("lines")
        .config(keys::TICK_TUPLE_FREQ_MS, 50);
    b.build().unwrap()
}

/// Appends 50 lines to each of `files` files in `dir` every 20 ms (so that a following source is paced by it) until
/// `stop` is set and at least `min_lines` lines went into each file. Writing until the test has done its failures,
/// rather than for a fixed time, keeps lines in flight at every failure however slow the machine is.
fn append_until_stopped(
    dir: &Path,
    files: usize,
    min_lines: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(dir).unwrap();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let mut handles: Vec<std::fs::File> = (0..files)
            .map(|i| std::fs::File::create(dir.join(format!("f{i}.log"))).unwrap())
            .collect();
        let chunk = 50;
        let mut written = 0;
        while written < min_lines || !stop.load(Ordering::SeqCst) {
            for (i, f) in handles.iter_mut().enumerate() {
                let mut text = String::new();
                for j in written..written + chunk {
                    text.push_str(&format!("f{i} line {j}\n"));
                }
                f.write_all(text.as_bytes()).unwrap();
            }
            written += chunk;
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn file_sink_effectively_once_holds_each_line_exactly_once_across_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = append_until_stopped(&input, 6, 5_000, stop_writing.clone());
    let mut b = TopologyBuilder::new("file-sink-test");
    b.config()
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.05);
    let source = FileSourceConfig::new(&input)
        .follow(true)
        .poll_interval(Duration::from_millis(10));
    b.set_spout("lines", 2, move || FileSource::new(source.clone()));
    let sink = FileSinkConfig::new(&output);
    b.set_bolt("sink", 2, move || FileSink::new(sink.clone()))
        .shuffle_grouping("lines");
    let store = Arc::new(MemoryStore::new());
    let options = SimulatorOptions {
        checkpoint_store: Some(store),
        ..Default::default()
    };
    let running = Simulator::start_with(b.build().unwrap(), options).unwrap();
    // Tasks 1-2 are the spouts (`lines`), 3-4 the sinks: fail each kind while the input is being written.
    for task in [TaskId(3), TaskId(1), TaskId(4)] {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        // Some output past the checkpoint first: written, not committed, to be discarded and written again.
        std::thread::sleep(Duration::from_millis(150));
        assert!(running.fail_task(task));
    }
    stop_writing.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let expected = sink_lines(&input);
    assert!(expected.len() >= 30_000, "{}", expected.len());
    wait_for("every line committed", Duration::from_secs(60), || {
        visible_lines(&output).len() >= expected.len()
    });
    // Two more checkpoints: nothing more may appear.
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    let finished = running.stop();
    let status = finished.checkpoints.clone().unwrap();
    assert_eq!(status.stats.rollbacks, 3, "{status:?}");
    assert!(
        finished.metrics.component("sink").executed > expected.len() as u64,
        "the rollbacks replayed lines"
    );
    assert_eq!(visible_lines(&output), expected, "each line exactly once");
    assert!(
        visible_files(&output)
            .iter()
            .all(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-")),
        "only committed checkpoint files are visible"
    );
}

#[test]
fn file_sink_rolls_by_size_under_at_least_once_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    write_input(&input, 2, 3_000);
    let expected = sink_lines(&input);
    let sink = FileSinkConfig::new(&output)
        .prefix("words")
        .roll_bytes(16 * 1024)
        .sync(100, Duration::from_millis(20));
    let t = source_to_sink(&input, sink, ReliabilityMode::AtLeastOnce, 1.0);
    let running = Simulator::start(t).unwrap();
    running
        .wait_until(Duration::from_secs(30), |m| {
            m.component("lines").acked >= expected.len() as u64
        })
        .expect("every line acked once it is on disk");
    let finished = running.stop();
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert_eq!(
        visible_lines(&output),
        expected,
        "no replay happened, so each line once"
    );
    let files = visible_files(&output);
    assert!(files.len() >= 6, "rolled by size: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len < 16 * 1024 + 200, "{} has {len} bytes", f.display());
    }
    let hidden: Vec<_> = std::fs::read_dir(&output)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(hidden.is_empty(), "the last file was rolled at stop: {hidden:?}");
}

#[test]
fn file_source_streamlet_to_file_sink_streamlet_is_exact_under_effectively_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    let lines = write_input(&input, 4, 2_000);
    let mut expected: Vec<String> = lines.iter().map(|l| l.to_uppercase()).collect();
    expected.sort();
    let builder = egret::streamlet::Builder::new();
    let sink = FileSinkConfig::new(&output).prefix("upper");
    file_lines(&builder, FileSourceConfig::new(&input))
        .parallelism(2)
        .map(|l: String| l.to_uppercase())
        .to_sink(move || LineFileSink::<String>::new(sink.clone()));
    let mut config = Config::new();
    config
        .set(keys::RELIABILITY_MODE, ReliabilityMode::EffectivelyOnce)
        .set(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS, 0.05);
    let t = builder.build("file-streamlets", config).unwrap();
    let running = Simulator::start(t).unwrap();
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    assert!(running.fail_task(TaskId(1)));
    wait_for("every line committed", Duration::from_secs(60), || {
        visible_lines(&output).len() >= expected.len()
    });
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    let _ = running.stop();
    assert_eq!(visible_lines(&output), expected);
}
