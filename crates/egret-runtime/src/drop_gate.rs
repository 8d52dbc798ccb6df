//! `topology.droptuples.upon.backpressure=true`: instead of stopping the spouts when a destination cannot keep up,
//! whoever queues for it drops what it cannot take (Heron's stmgr does the same; `docs/back-pressure.md`).
//!
//! [`DropGate`] is the one rule, used by the stmgr (bytes queued for a local instance or a peer stmgr, against the
//! back-pressure watermarks) and by the simulator (batches in a task's input queue, against its capacity): a
//! destination whose queue reached the high mark is *congested*, and everything for it is dropped until its queue has
//! drained to the low mark. The gap keeps it from flapping at every batch. No clock, no I/O.
//!
//! What is dropped is counted by the caller ([`data_records`] counts the tuples of a batch). Under at-least-once a
//! dropped tuple is never acked, so its root times out and the spout replays it; that is why validation refuses the
//! option under effectively-once, where nothing would replay it.

use crate::batch::{BatchReader, Record};

/// Whether one destination is congested, with hysteresis between a high and a low mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropGate {
    high: u64,
    low: u64,
    dropping: bool,
}

impl DropGate {
    /// `low` is clamped to at most `high`.
    pub fn new(high: u64, low: u64) -> Self {
        DropGate {
            high,
            low: low.min(high),
            dropping: false,
        }
    }

    /// Whether something may be queued for a destination that holds `queued` now (else it is dropped): false from
    /// the moment `queued` reaches the high mark until it is back at or below the low mark.
    pub fn admit(&mut self, queued: u64) -> bool {
        if self.dropping {
            self.dropping = queued > self.low;
        } else {
            self.dropping = queued >= self.high;
        }
        !self.dropping
    }

    /// Whether the destination is congested (as of the last [`DropGate::admit`]).
    pub fn dropping(&self) -> bool {
        self.dropping
    }
}

/// The tuples (DATA records) in a batch's records, up to the first corrupt one: what a drop loses.
pub fn data_records(records: &[u8]) -> u64 {
    BatchReader::new(records)
        .map_while(Result::ok)
        .filter(|r| matches!(r, Record::Data(_)))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use egret_api::{RootId, StreamIndex, TaskId};
    use std::time::Instant;

    #[test]
    fn drops_from_the_high_mark_until_drained_to_the_low_mark() {
        let mut gate = DropGate::new(100, 50);
        assert!(gate.admit(0));
        assert!(gate.admit(99));
        assert!(!gate.admit(100), "congested at the high mark");
        assert!(!gate.admit(70), "still congested between the marks");
        assert!(gate.dropping());
        assert!(gate.admit(50), "drained to the low mark");
        assert!(gate.admit(99), "not congested again below the high mark");
    }

    #[test]
    fn counts_only_the_data_records_of_a_batch() {
        let now = Instant::now();
        let mut b = BatchBuilder::new();
        b.push_data(now, TaskId(2), TaskId(1), StreamIndex(0), 0, &[], &[]);
        b.push_data(now, TaskId(2), TaskId(1), StreamIndex(0), 0, &[], &[]);
        b.push_fail(now, TaskId(2), RootId(7));
        assert_eq!(data_records(&b.take()), 2);
    }
}
