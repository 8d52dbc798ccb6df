//! The checkpoint coordinator of effectively-once: when a checkpoint starts, when it is complete, which ones are
//! kept, and where a rollback goes. I/O free (time is a parameter): the simulator runs it on a thread of its own, the
//! tmanager in its process. See `docs/checkpoints.md`.
//!
//! - **Checkpoints.** Every interval [`Coordinator::poll`] starts the next checkpoint, with an id greater than any
//!   before it (also across rollbacks and restarts: the caller gives the first id). Spouts take it and send markers;
//!   each task reports its save; when every task of the topology has saved it in the current epoch it is
//!   **complete** ([`Coordinator::saved`] returns [`Completed`]); the oldest complete ones beyond the number kept are
//!   handed back for deletion. One checkpoint is taken at a time: the next waits for it (under load, markers wait in
//!   queues behind tuples), unless it takes longer than [`Coordinator::timeout`] and is given up.
//! - **Rollback.** After any failure, [`Coordinator::rollback`] opens a new **epoch** restoring the newest complete
//!   checkpoint (no checkpoint: a clean start). Every task drops what belongs to older epochs. If a task's state for
//!   that checkpoint cannot be read back, [`Coordinator::restore_failed`] forgets that checkpoint and goes to the next
//!   older one; with none left it refuses rather than start from empty state and silently lose what was counted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use egret_api::{CheckpointId, TaskId};

/// The shortest time a checkpoint is given before it is given up.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A rollback (or the first start): every task restores `checkpoint` (`None`: a clean start) in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    pub epoch: u32,
    pub checkpoint: Option<CheckpointId>,
}

/// A checkpoint every task saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub checkpoint: CheckpointId,
    /// From its start to the last task's save.
    pub duration: Duration,
    /// The state of every task, in bytes.
    pub bytes: u64,
    /// Complete checkpoints no longer kept: delete them from the store.
    pub expired: Vec<CheckpointId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no complete checkpoint left to restore after {failed} could not be read back; refusing to start from empty state"
)]
pub struct NoCheckpointLeft {
    pub failed: CheckpointId,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoordinatorStats {
    pub started: u64,
    pub completed: u64,
    /// Started and never completed (given up when the next was due, or undone by a rollback).
    pub given_up: u64,
    pub rollbacks: u64,
}

struct Pending {
    checkpoint: CheckpointId,
    epoch: u32,
    started: Instant,
    waiting: BTreeSet<TaskId>,
    bytes: u64,
}

pub struct Coordinator {
    tasks: BTreeSet<TaskId>,
    interval: Duration,
    kept: usize,
    epoch: u32,
    next_id: u64,
    next_start: Instant,
    pending: Option<Pending>,
    /// Oldest first.
    complete: Vec<CheckpointId>,
    restored: Option<CheckpointId>,
    stats: CoordinatorStats,
}

impl Coordinator {
    /// A coordinator for a topology's `tasks`, starting a checkpoint every `interval` and keeping `kept` complete
    /// ones. `complete` are the complete checkpoints recorded by an earlier run (any order); new checkpoint ids are
    /// above `min_next_id` and above all of them, and new epochs above `last_epoch`.
    pub fn new(
        tasks: impl IntoIterator<Item = TaskId>,
        interval: Duration,
        kept: usize,
        mut complete: Vec<CheckpointId>,
        min_next_id: u64,
        last_epoch: u32,
        now: Instant,
    ) -> Self {
        complete.sort_unstable();
        complete.dedup();
        let next_id = complete.last().map_or(0, |c| c.0).max(min_next_id) + 1;
        Coordinator {
            tasks: tasks.into_iter().collect(),
            interval,
            kept: kept.max(1),
            epoch: last_epoch,
            next_id,
            next_start: now + interval,
            pending: None,
            complete,
            restored: None,
            stats: CoordinatorStats::default(),
        }
    }

    /// The first start: the newest complete checkpoint of an earlier run, or a clean start (also when `clean`,
    /// `topology.stateful.start.clean`, or when `from` names a checkpoint that is not complete: `Err`).
    pub fn start(&mut self, clean: bool, from: Option<CheckpointId>, now: Instant) -> Result<Rollback, CheckpointId> {
        let checkpoint = match from {
            Some(c) if !self.complete.contains(&c) => return Err(c),
            Some(c) => Some(c),
            None if clean => None,
            None => self.complete.last().copied(),
        };
        Ok(self.open_epoch(checkpoint, now))
    }

    /// After any failure: every task rolls back to the newest complete checkpoint in a new epoch.
    pub fn rollback(&mut self, now: Instant) -> Rollback {
        self.stats.rollbacks += 1;
        let newest = self.complete.last().copied().or(self.restored);
        self.open_epoch(newest, now)
    }

    /// A task's state for `checkpoint` could not be read back (corrupt, missing): that checkpoint is forgotten and
    /// the rollback goes to the next older complete one.
    pub fn restore_failed(&mut self, checkpoint: CheckpointId, now: Instant) -> Result<Rollback, NoCheckpointLeft> {
        self.complete.retain(|&c| c < checkpoint);
        match self.complete.last().copied() {
            Some(older) => Ok(self.open_epoch(Some(older), now)),
            None => Err(NoCheckpointLeft { failed: checkpoint }),
        }
    }

    /// A task or a stmgr was lost: the checkpoint being taken cannot complete consistently; it is given up. (The
    /// caller also stops calling [`Coordinator::poll`] and [`Coordinator::saved`] until it rolls back.)
    pub fn give_up(&mut self) {
        if self.pending.take().is_some() {
            self.stats.given_up += 1;
        }
    }

    fn open_epoch(&mut self, checkpoint: Option<CheckpointId>, now: Instant) -> Rollback {
        if self.pending.take().is_some() {
            self.stats.given_up += 1;
        }
        self.epoch += 1;
        self.restored = checkpoint;
        self.next_start = now + self.interval;
        Rollback {
            epoch: self.epoch,
            checkpoint,
        }
    }

    /// The topology's tasks changed (a rescale): checkpoints from now on wait for these. One under way is given up.
    pub fn set_tasks(&mut self, tasks: impl IntoIterator<Item = TaskId>) {
        self.tasks = tasks.into_iter().collect();
        self.give_up();
    }

    /// Makes the next checkpoint due now (a rescale waits for one) rather than an interval after the last.
    pub fn checkpoint_soon(&mut self, now: Instant) {
        self.next_start = self.next_start.min(now);
    }

    /// When a checkpoint is due, starts it: tell the spouts to take `checkpoint` in `epoch`.
    pub fn poll(&mut self, now: Instant) -> Option<(u32, CheckpointId)> {
        if now < self.next_start {
            return None;
        }
        // One checkpoint at a time: under load markers wait in queues behind tuples, and a checkpoint that is
        // overtaken by the next would never complete. One that takes far too long (a lost marker) is given up.
        if let Some(p) = &self.pending {
            if now.saturating_duration_since(p.started) < self.timeout() {
                return None;
            }
            self.pending = None;
            self.stats.given_up += 1;
        }
        let checkpoint = CheckpointId(self.next_id);
        self.next_id += 1;
        self.next_start = now + self.interval;
        self.stats.started += 1;
        self.pending = Some(Pending {
            checkpoint,
            epoch: self.epoch,
            started: now,
            waiting: self.tasks.clone(),
            bytes: 0,
        });
        Some((self.epoch, checkpoint))
    }

    /// `task` saved `checkpoint` (`bytes` of state) in `epoch`. Saves of another epoch or checkpoint are ignored.
    pub fn saved(
        &mut self,
        task: TaskId,
        epoch: u32,
        checkpoint: CheckpointId,
        bytes: u64,
        now: Instant,
    ) -> Option<Completed> {
        let p = self.pending.as_mut()?;
        if p.epoch != epoch || p.checkpoint != checkpoint || !p.waiting.remove(&task) {
            return None;
        }
        p.bytes += bytes;
        if !p.waiting.is_empty() {
            return None;
        }
        let p = self.pending.take()?;
        self.stats.completed += 1;
        self.complete.push(p.checkpoint);
        let excess = self.complete.len().saturating_sub(self.kept);
        let expired = self.complete.drain(..excess).collect();
        Some(Completed {
            checkpoint: p.checkpoint,
            duration: now.saturating_duration_since(p.started),
            bytes: p.bytes,
            expired,
        })
    }

    /// How long a checkpoint may take before it is given up: ten intervals, and at least [`MIN_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        (self.interval * 10).max(MIN_TIMEOUT)
    }

    /// When [`Coordinator::poll`] may next have work.
    pub fn next_start(&self) -> Instant {
        match &self.pending {
            Some(p) => self.next_start.max(p.started + self.timeout()),
            None => self.next_start,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The complete checkpoints kept, oldest first.
    pub fn complete(&self) -> &[CheckpointId] {
        &self.complete
    }

    /// The checkpoint being taken and the tasks whose save is still due.
    pub fn pending(&self) -> Option<(CheckpointId, usize)> {
        self.pending.as_ref().map(|p| (p.checkpoint, p.waiting.len()))
    }

    pub fn stats(&self) -> CoordinatorStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> Vec<TaskId> {
        vec![TaskId(1), TaskId(2), TaskId(3)]
    }

    #[test]
    fn a_checkpoint_completes_when_every_task_saved_it_in_the_current_epoch() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Coordinator::new(tasks(), s, 2, vec![], 0, 0, t0);
        assert_eq!(
            c.start(false, None, t0),
            Ok(Rollback {
                epoch: 1,
                checkpoint: None
            })
        );
        assert_eq!(c.poll(t0), None, "not due yet");
        let (epoch, ck) = c.poll(t0 + s).unwrap();
        assert_eq!((epoch, ck), (1, CheckpointId(1)));
        assert_eq!(c.saved(TaskId(1), 1, ck, 10, t0 + s), None);
        assert_eq!(c.saved(TaskId(1), 1, ck, 10, t0 + s), None, "a second save counts once");
        assert_eq!(
            c.saved(TaskId(2), 0, ck, 10, t0 + s),
            None,
            "another epoch's save is ignored"
        );
        assert_eq!(c.saved(TaskId(2), 1, ck, 20, t0 + s), None);
        let done = c.saved(TaskId(3), 1, ck, 30, t0 + s * 2).unwrap();
        assert_eq!((done.checkpoint, done.bytes, done.duration), (ck, 60, s));
        // Two more complete: the oldest is no longer kept.
        for _ in 0..2 {
            let (e, ck) = c.poll(c.next_start()).unwrap();
            let mut last = None;
            for t in tasks() {
                last = c.saved(t, e, ck, 1, c.next_start());
            }
            assert!(last.is_some());
            if ck == CheckpointId(3) {
                assert_eq!(last.unwrap().expired, vec![CheckpointId(1)]);
            }
        }
        assert_eq!(c.complete(), &[CheckpointId(2), CheckpointId(3)]);
    }

    #[test]
    fn a_rollback_opens_an_epoch_at_the_newest_complete_checkpoint_and_a_bad_one_falls_back_to_an_older() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Coordinator::new(tasks(), s, 5, vec![CheckpointId(7), CheckpointId(4)], 0, 3, t0);
        assert_eq!(
            c.start(false, None, t0),
            Ok(Rollback {
                epoch: 4,
                checkpoint: Some(CheckpointId(7))
            })
        );
        let (e, ck) = c.poll(t0 + s).unwrap();
        assert_eq!((e, ck), (4, CheckpointId(8)), "ids grow past the kept ones");
        c.saved(TaskId(1), e, ck, 1, t0 + s);
        let r = c.rollback(t0 + s);
        assert_eq!(
            r,
            Rollback {
                epoch: 5,
                checkpoint: Some(CheckpointId(7))
            }
        );
        assert_eq!(
            c.saved(TaskId(2), e, ck, 1, t0 + s),
            None,
            "the rollback gave up checkpoint 8"
        );
        assert_eq!(c.stats().given_up, 1);
        assert_eq!(
            c.restore_failed(CheckpointId(7), t0 + s),
            Ok(Rollback {
                epoch: 6,
                checkpoint: Some(CheckpointId(4))
            })
        );
        assert_eq!(
            c.restore_failed(CheckpointId(4), t0 + s),
            Err(NoCheckpointLeft {
                failed: CheckpointId(4)
            })
        );
        assert_eq!(c.poll(t0 + s * 3).unwrap().1, CheckpointId(9), "ids never repeat");
    }

    #[test]
    fn start_clean_and_an_explicit_checkpoint() {
        let t0 = Instant::now();
        let mk = || Coordinator::new(tasks(), Duration::from_secs(1), 5, vec![CheckpointId(2)], 0, 0, t0);
        assert_eq!(mk().start(true, None, t0).unwrap().checkpoint, None);
        assert_eq!(
            mk().start(false, Some(CheckpointId(2)), t0).unwrap().checkpoint,
            Some(CheckpointId(2))
        );
        assert_eq!(mk().start(false, Some(CheckpointId(3)), t0), Err(CheckpointId(3)));
    }
}
