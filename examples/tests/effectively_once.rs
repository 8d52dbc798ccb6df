//! Effectively-once in the simulator: the stateful word count's final counts equal the input's exact counts across
//! injected failures, corrupt checkpoints and an unwritable store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use egret::simulator::{Finished, Running, Simulator, SimulatorOptions};
use egret::{CheckpointId, KeyedState, ReliabilityMode, TaskId};
use egret_checkpoint::{CheckpointStore, LocalStore, MemoryStore, StoreError};
use egret_examples::reliable_word_count::{expected_counts, sentences};
use egret_examples::stateful_word_count::{self, CountBolt};
use proptest::prelude::*;

fn counts(finished: &Finished) -> BTreeMap<String, u64> {
    stateful_word_count::total_counts(finished.bolts::<CountBolt>("count"))
}

/// Runs until the input is exhausted and everything is processed, then stops. Without failures every word is
/// executed once, so the executed count says when.
fn finish(running: Running, words: u64) -> Finished {
    running
        .wait_until(Duration::from_secs(60), |m| m.component("count").executed >= words)
        .expect("every word reaches a counter");
    running.stop()
}

/// With failures, executed counts include replays; the end is a complete checkpoint whose spout positions are all at
/// the end of their input (its consistent cut then holds every word), read back from the store.
fn finish_at_checkpoint(running: Running, store: &dyn CheckpointStore, sentences: usize) -> Finished {
    let spouts: Vec<TaskId> = {
        let t = running.topology();
        let ci = t.component_index("sentence").unwrap();
        t.tasks_of(ci).collect()
    };
    // Partition p holds sentences p, p + PARTITIONS, ...: its end position is how many of them there are.
    let ends: std::collections::HashMap<i64, u64> = (0..stateful_word_count::PARTITIONS)
        .map(|p| {
            (
                p,
                (sentences as u64)
                    .saturating_sub(p as u64)
                    .div_ceil(stateful_word_count::PARTITIONS as u64),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    let at_end = |c: CheckpointId| {
        let mut positions = std::collections::HashMap::new();
        for &task in &spouts {
            match store.load(c, task).map(|b| KeyedState::<i64, u64>::restore(Some(&b))) {
                Ok(Ok(s)) => positions.extend(s.into_map()),
                _ => return false,
            }
        }
        positions.retain(|_, n| *n > 0);
        positions == ends
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running
        .checkpoints()
        .and_then(|s| s.complete.last().copied())
        .is_some_and(at_end)
    {
        assert!(Instant::now() < deadline, "no checkpoint holds the whole input");
        std::thread::sleep(Duration::from_millis(5));
    }
    running.stop()
}

fn with_store(store: Arc<dyn CheckpointStore>) -> SimulatorOptions {
    SimulatorOptions {
        checkpoint_store: Some(store),
        ..Default::default()
    }
}

fn word_total(expected: &BTreeMap<String, u64>) -> u64 {
    expected.values().sum()
}

#[test]
fn effectively_once_word_count_is_exact_and_checkpoints_complete() {
    let input = Arc::new(sentences(20_000, 1));
    let expected = expected_counts(&input);
    let t = stateful_word_count::topology(Arc::clone(&input), 2, 2, 3, 0.05, ReliabilityMode::EffectivelyOnce).unwrap();
    let running = Simulator::start(t).unwrap();
    let status = running.wait_for_checkpoints(3, Duration::from_secs(30)).unwrap();
    assert_eq!(status.epoch, 1, "no rollback happened");
    let finished = finish(running, word_total(&expected));
    assert_eq!(counts(&finished), expected);
    let status = finished.checkpoints.clone().unwrap();
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    assert!(
        status.complete.len() <= 5,
        "only the newest five are kept: {:?}",
        status.complete
    );
    assert!(status.last_bytes > 0);
    assert!(
        finished.metrics.component("count").checkpoints_saved >= 3 * 3,
        "each counter saved each checkpoint"
    );
}

#[test]
fn effectively_once_rolls_back_after_injected_failures_and_counts_exactly() {
    let input = Arc::new(sentences(200_000, 2));
    let expected = expected_counts(&input);
    let t = stateful_word_count::topology(Arc::clone(&input), 2, 2, 2, 0.05, ReliabilityMode::EffectivelyOnce).unwrap();
    let store = Arc::new(MemoryStore::new());
    let running = Simulator::start_with(t, with_store(store.clone())).unwrap();
    for task in [TaskId(1), TaskId(6), TaskId(3)] {
        running.wait_for_checkpoints(1, Duration::from_secs(30)).unwrap();
        assert!(running.fail_task(task));
    }
    let finished = finish_at_checkpoint(running, &*store, input.len());
    let status = finished.checkpoints.clone().unwrap();
    assert_eq!(status.stats.rollbacks, 3);
    assert_eq!(status.epoch, 4);
    assert!(
        finished.metrics.component("count").executed > word_total(&expected),
        "the rollbacks replayed some input"
    );
    assert_eq!(counts(&finished), expected, "nothing lost, nothing counted twice");
}

/// A store that damages what it writes once armed, as a torn write or a bad disk would.
struct DamagingStore {
    inner: MemoryStore,
    armed: AtomicBool,
}

impl CheckpointStore for DamagingStore {
    fn save(&self, checkpoint: CheckpointId, task: TaskId, state: &[u8]) -> Result<u64, StoreError> {
        let n = self.inner.save(checkpoint, task, state)?;
        if self.armed.load(SeqCst) {
            self.inner.tamper(checkpoint, task, |b| {
                let last = b.len() - 1;
                b[last] ^= 0x40;
            });
        }
        Ok(n)
    }
    fn load(&self, checkpoint: CheckpointId, task: TaskId) -> Result<Vec<u8>, StoreError> {
        self.inner.load(checkpoint, task)
    }
    fn delete(&self, checkpoint: CheckpointId) -> Result<(), StoreError> {
        self.inner.delete(checkpoint)
    }
    fn checkpoints(&self) -> Result<Vec<CheckpointId>, StoreError> {
        self.inner.checkpoints()
    }
    fn describe(&self) -> String {
        "a damaging in-memory store".into()
    }
}

#[test]
fn effectively_once_rolls_back_to_an_older_checkpoint_when_the_newest_is_corrupt() {
    let input = Arc::new(sentences(30_000, 3));
    let expected = expected_counts(&input);
    let t = stateful_word_count::topology(Arc::clone(&input), 2, 2, 2, 0.1, ReliabilityMode::EffectivelyOnce).unwrap();
    let store = Arc::new(DamagingStore {
        inner: MemoryStore::new(),
        armed: AtomicBool::new(false),
    });
    let options = SimulatorOptions {
        checkpoint_store: Some(store.clone()),
        ..Default::default()
    };
    let running = Simulator::start_with(t, options).unwrap();
    running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    store.armed.store(true, SeqCst);
    let damaged = running.wait_for_checkpoints(2, Duration::from_secs(30)).unwrap();
    assert!(running.fail_task(TaskId(1)));
    store.armed.store(false, SeqCst);
    let finished = finish_at_checkpoint(running, &*store, input.len());
    let status = finished.checkpoints.clone().unwrap();
    let newest_damaged = *damaged.complete.last().unwrap();
    assert!(
        status
            .errors
            .iter()
            .any(|e| e.contains(&format!("cannot restore checkpoint {newest_damaged}")) && e.contains("corrupt")),
        "{:?}",
        status.errors
    );
    assert!(!status.halted);
    assert_eq!(
        counts(&finished),
        expected,
        "the older checkpoint was restored, never the garbage"
    );
}

#[test]
fn effectively_once_keeps_running_with_a_clear_error_when_the_store_is_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("store");
    std::fs::write(&not_a_dir, b"a file where the store's directory should be").unwrap();
    let input = Arc::new(sentences(5_000, 4));
    let expected = expected_counts(&input);
    let t = stateful_word_count::topology(Arc::clone(&input), 1, 1, 2, 0.05, ReliabilityMode::EffectivelyOnce).unwrap();
    let options = SimulatorOptions {
        checkpoint_store: Some(Arc::new(LocalStore::new(&not_a_dir))),
        ..Default::default()
    };
    let running = Simulator::start_with(t, options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running
        .checkpoints()
        .unwrap()
        .errors
        .iter()
        .any(|e| e.contains("not saved"))
    {
        assert!(Instant::now() < deadline, "no checkpoint was attempted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = finish(running, word_total(&expected));
    let status = finished.checkpoints.clone().unwrap();
    assert_eq!(status.stats.completed, 0);
    assert!(
        status
            .errors
            .iter()
            .any(|e| e.contains("not saved") && e.contains(&not_a_dir.display().to_string())),
        "{:?}",
        status.errors
    );
    assert_eq!(counts(&finished), expected, "processing went on without checkpoints");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Failures of random tasks at random moments: the counts always equal the oracle's.
    #[test]
    fn effectively_once_counts_match_the_oracle_under_random_failures(
        seed in 0u64..1000,
        spouts in 1u32..3,
        counters in 1u32..4,
        failures in proptest::collection::vec((1u32..8, 0u64..120), 0..4),
    ) {
        let input = Arc::new(sentences(8_000, seed));
        let expected = expected_counts(&input);
        let t = stateful_word_count::topology(Arc::clone(&input), spouts, 2, counters, 0.02, ReliabilityMode::EffectivelyOnce)
            .unwrap();
        let tasks = t.task_count();
        let store = Arc::new(MemoryStore::new());
        let running = Simulator::start_with(t, with_store(store.clone())).unwrap();
        for (task, after_ms) in failures {
            std::thread::sleep(Duration::from_millis(after_ms));
            prop_assert!(running.fail_task(TaskId(1 + task % tasks)));
        }
        let finished = finish_at_checkpoint(running, &*store, input.len());
        prop_assert_eq!(counts(&finished), expected);
    }
}
