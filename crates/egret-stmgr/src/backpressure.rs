//! Back pressure: when this stmgr cannot drain what it queues for one of its instances, every spout of the
//! topology stops until it can. The only module that decides it; it does no I/O and takes time as a parameter.
//!
//! - **Own state.** The stmgr reports, whenever one of those queues moves, the largest number of bytes queued for any of its
//!   local instances. At or above the high watermark it *starts* back pressure (tells every peer, clamps its own
//!   spouts); once every queue is at or below the low watermark it *stops*. The gap between the two avoids
//!   flapping.
//! - **Peers.** A peer's start is remembered until its stop, or until its connection goes away (a dead peer must
//!   not clamp the topology forever).
//! - **Clamp.** Local spouts are not read while this stmgr or any peer holds back pressure: their sockets fill,
//!   their links' queues fill, and `next_tuple` is no longer called. Bolts keep being read, so the topology drains.
//!
//! Memory therefore stays near `high watermark + one frame per spout connection + TCP buffers` per instance queue.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What the stmgr must tell its peers after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Start,
    Stop,
}

#[derive(Debug)]
pub struct BackPressure {
    high: u64,
    low: u64,
    own: bool,
    peers: BTreeSet<String>,
    /// When the current clamp (own or peers') began.
    clamped_since: Option<Instant>,
    /// When our own back pressure began.
    own_since: Option<Instant>,
    clamped_total: Duration,
    own_total: Duration,
}

impl BackPressure {
    /// `low` is clamped to at most `high`.
    pub fn new(high: u64, low: u64) -> Self {
        BackPressure {
            high,
            low: low.min(high),
            own: false,
            peers: BTreeSet::new(),
            clamped_since: None,
            own_since: None,
            clamped_total: Duration::ZERO,
            own_total: Duration::ZERO,
        }
    }

    /// Feeds the largest queue of any local instance; returns a change to announce to the peers.
    pub fn observe(&mut self, max_queued: u64, now: Instant) -> Option<Change> {
        let change = if !self.own && max_queued >= self.high {
            self.own = true;
            self.own_since = Some(now);
            Some(Change::Start)
        } else if self.own && max_queued <= self.low {
            self.own = false;
            if let Some(since) = self.own_since.take() {
                self.own_total += now.saturating_duration_since(since);
            }
            Some(Change::Stop)
        } else {
            None
        };
        self.update_clamp(now);
        change
    }

    pub fn peer_start(&mut self, peer: &str, now: Instant) {
        self.peers.insert(peer.to_string());
        self.update_clamp(now);
    }

    /// A peer stopped, or its connection went away.
    pub fn peer_stop(&mut self, peer: &str, now: Instant) {
        self.peers.remove(peer);
        self.update_clamp(now);
    }

    /// (high, low) in bytes.
    pub fn watermarks(&self) -> (u64, u64) {
        (self.high, self.low)
    }

    /// Whether local spouts must not be read.
    pub fn clamped(&self) -> bool {
        self.own || !self.peers.is_empty()
    }

    /// Whether this stmgr itself holds back pressure (and so must re-announce it to a peer that reconnects).
    pub fn holding(&self) -> bool {
        self.own
    }

    fn update_clamp(&mut self, now: Instant) {
        match (self.clamped(), self.clamped_since) {
            (true, None) => self.clamped_since = Some(now),
            (false, Some(since)) => {
                self.clamped_total += now.saturating_duration_since(since);
                self.clamped_since = None;
            }
            _ => {}
        }
    }

    /// Time the local spouts were clamped, for any reason, up to `now`.
    pub fn clamped_time(&self, now: Instant) -> Duration {
        self.clamped_total
            + self
                .clamped_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Time this stmgr itself held back pressure (Heron's `__time_spent_back_pressure_initiated`).
    pub fn initiated_time(&self, now: Instant) -> Duration {
        self.own_total
            + self
                .own_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_at_high_stops_at_low_with_hysteresis() {
        let t = Instant::now();
        let mut bp = BackPressure::new(100, 50);
        assert_eq!(bp.observe(99, t), None);
        assert_eq!(bp.observe(100, t), Some(Change::Start));
        assert!(bp.clamped());
        assert_eq!(bp.observe(120, t + MS), None, "announced once");
        assert_eq!(bp.observe(60, t + 2 * MS), None, "between the watermarks it holds");
        assert_eq!(bp.observe(50, t + 10 * MS), Some(Change::Stop));
        assert!(!bp.clamped());
        assert_eq!(bp.initiated_time(t + 20 * MS), 10 * MS);
        assert_eq!(bp.clamped_time(t + 20 * MS), 10 * MS);
    }

    #[test]
    fn peers_clamp_until_they_stop_or_go_away() {
        let t = Instant::now();
        let mut bp = BackPressure::new(100, 50);
        bp.peer_start("stmgr-2", t);
        bp.peer_start("stmgr-3", t);
        assert!(bp.clamped() && !bp.holding());
        bp.peer_stop("stmgr-2", t + MS);
        assert!(bp.clamped(), "stmgr-3 still holds it");
        bp.peer_stop("stmgr-3", t + 4 * MS);
        assert!(!bp.clamped());
        assert_eq!(bp.clamped_time(t + 9 * MS), 4 * MS);
        assert_eq!(bp.initiated_time(t + 9 * MS), Duration::ZERO);
    }

    #[test]
    fn own_and_peer_pressure_overlap_without_double_counting() {
        let t = Instant::now();
        let mut bp = BackPressure::new(10, 5);
        bp.observe(10, t);
        bp.peer_start("p", t + MS);
        bp.observe(0, t + 2 * MS);
        assert!(bp.clamped(), "the peer still holds it");
        bp.peer_stop("p", t + 3 * MS);
        assert_eq!(bp.clamped_time(t + 5 * MS), 3 * MS);
        assert_eq!(bp.initiated_time(t + 5 * MS), 2 * MS);
    }
}
