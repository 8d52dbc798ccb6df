//! A task's outgoing batches: one open batch per destination task, closed when full (`topology.egret.batch.tuples`)
//! or older than the flush interval (`topology.egret.batch.flush.micros`), or all at once when the task stops (a
//! spout that may not emit, a bolt at shutdown). Closed
//! batches wait in `ready` until the transport takes them; a full destination queue hands its batch back and only
//! that destination waits (order per destination is kept).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use egret_api::TaskId;

use crate::batch::{BATCH_CLOSE_BYTES, Batch, BatchBuilder};

/// Where batches go: a queue per destination task (simulator) or a connection (processes).
pub trait Transport {
    /// Hands `batch` to `dest`; gives it back if there is no room now.
    fn try_send(&mut self, dest: TaskId, batch: Batch) -> Result<(), Batch>;
    /// Called after a round of sends: a transport that buffers writes them out together here.
    fn flush(&mut self) {}
}

pub struct Outbox {
    /// Indexed by task id.
    builders: Vec<BatchBuilder>,
    /// Destinations with a non-empty open batch.
    open: Vec<TaskId>,
    ready: VecDeque<(TaskId, Batch, usize)>,
    batch_records: usize,
    flush_after: Duration,
    unflushed: usize,
    /// Effectively-once: every batch starts with an EPOCH record of this epoch.
    epoch: Option<u32>,
}

impl Outbox {
    pub fn new(max_task: u32, batch_records: usize, flush_after: Duration) -> Self {
        Outbox {
            builders: (0..=max_task).map(|_| BatchBuilder::new()).collect(),
            open: Vec::new(),
            ready: VecDeque::new(),
            batch_records,
            flush_after,
            unflushed: 0,
            epoch: None,
        }
    }

    /// Starts every batch opened from now on with an EPOCH record (effectively-once). Call [`Outbox::clear`] first
    /// when the epoch changes: batches of the old epoch must not be sent.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.epoch = Some(epoch);
    }

    /// Makes room for destinations up to `max_task` (a rescale added tasks).
    pub fn grow(&mut self, max_task: u32) {
        while self.builders.len() <= max_task as usize {
            self.builders.push(BatchBuilder::new());
        }
    }

    /// Drops every open and waiting batch (a rollback undoes them).
    pub fn clear(&mut self) {
        for d in self.open.drain(..) {
            self.builders[d.0 as usize].clear();
        }
        self.ready.clear();
        self.unflushed = 0;
    }

    /// The open batch for `dest`, to push one record into; call [`Outbox::pushed`] after.
    pub fn builder(&mut self, dest: TaskId) -> &mut BatchBuilder {
        let b = &mut self.builders[dest.0 as usize];
        if b.is_empty() {
            self.open.push(dest);
            if let (Some(epoch), 0) = (self.epoch, b.bytes()) {
                b.push_epoch(dest, epoch);
            }
        }
        b
    }

    /// Closes `dest`'s batch if it is full (in tuples, or in bytes: [`BATCH_CLOSE_BYTES`]).
    pub fn pushed(&mut self, dest: TaskId) {
        self.unflushed += 1;
        let b = &self.builders[dest.0 as usize];
        if b.records() >= self.batch_records || b.bytes() >= BATCH_CLOSE_BYTES {
            self.close(dest);
            if let Some(i) = self.open.iter().position(|&t| t == dest) {
                self.open.swap_remove(i);
            }
        }
    }

    fn close(&mut self, dest: TaskId) {
        let b = &mut self.builders[dest.0 as usize];
        let n = b.records();
        if n > 0 {
            self.ready.push_back((dest, b.take(), n));
        }
    }

    /// Closes batches opened more than the flush interval before `now`.
    pub fn flush_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.open.len() {
            let dest = self.open[i];
            let due = self.builders[dest.0 as usize]
                .opened_at()
                .is_none_or(|t| now.saturating_duration_since(t) >= self.flush_after);
            if due {
                self.close(dest);
                self.open.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Closes every open batch (nothing more will join them: do not make anyone wait).
    pub fn flush_all(&mut self) {
        for i in 0..self.open.len() {
            let dest = self.open[i];
            self.close(dest);
        }
        self.open.clear();
    }

    /// When the oldest open batch becomes due.
    pub fn next_flush(&self) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|d| self.builders[d.0 as usize].opened_at())
            .min()
            .map(|t| t + self.flush_after)
    }

    /// Sends closed batches; returns true when none is left waiting.
    pub fn send(&mut self, transport: &mut dyn Transport) -> bool {
        let mut blocked: Vec<TaskId> = Vec::new();
        for _ in 0..self.ready.len() {
            let Some((dest, batch, n)) = self.ready.pop_front() else {
                break;
            };
            if blocked.contains(&dest) {
                self.ready.push_back((dest, batch, n));
                continue;
            }
            match transport.try_send(dest, batch) {
                Ok(()) => self.unflushed -= n,
                Err(batch) => {
                    blocked.push(dest);
                    self.ready.push_back((dest, batch, n));
                }
            }
        }
        transport.flush();
        self.ready.is_empty()
    }

    /// Closed batches waiting for room downstream.
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// The first waiting batch's destination, to wait on its queue.
    pub fn first_waiting(&self) -> Option<TaskId> {
        self.ready.front().map(|(d, _, _)| *d)
    }

    /// Records pushed and not yet accepted by a transport.
    pub fn unflushed(&self) -> usize {
        self.unflushed
    }

    pub fn is_empty(&self) -> bool {
        self.unflushed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_api::RootId;

    struct Limited {
        room: usize,
        sent: Vec<(TaskId, usize)>,
    }
    impl Transport for Limited {
        fn try_send(&mut self, dest: TaskId, batch: Batch) -> Result<(), Batch> {
            if self.room == 0 {
                return Err(batch);
            }
            self.room -= 1;
            self.sent.push((dest, batch.len()));
            Ok(())
        }
    }

    fn push(o: &mut Outbox, dest: u32, now: Instant) {
        o.builder(TaskId(dest)).push_fail(now, TaskId(dest), RootId(1));
        o.pushed(TaskId(dest));
    }

    #[test]
    fn batches_close_when_full_or_due_and_wait_when_blocked() {
        let now = Instant::now();
        let mut o = Outbox::new(4, 2, Duration::from_micros(100));
        push(&mut o, 1, now);
        push(&mut o, 1, now);
        push(&mut o, 2, now);
        assert_eq!(o.waiting(), 1, "task 1's batch is full");
        let mut t = Limited { room: 0, sent: vec![] };
        assert!(!o.send(&mut t), "no room: the batch must stay");
        assert_eq!(o.unflushed(), 3);
        o.flush_due(now + Duration::from_micros(50));
        assert_eq!(o.waiting(), 1);
        o.flush_due(now + Duration::from_micros(100));
        assert_eq!(o.waiting(), 2);
        t.room = 10;
        assert!(o.send(&mut t));
        assert_eq!(
            t.sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![TaskId(1), TaskId(2)]
        );
        assert!(o.is_empty());
    }
}
