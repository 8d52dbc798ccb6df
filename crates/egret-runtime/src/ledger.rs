//! The at-least-once XOR ledger of one spout task: `root -> xor` of the keys of every tuple copy in its tree.
//!
//! The spout starts a root with the XOR of the keys of the copies it sent. A bolt that acks an input sends
//! `input key ^ keys of the children it anchored on that input`, once per root of the input. Every key therefore
//! enters the XOR exactly twice (when created, when acked), so the value is zero exactly when the whole tree is
//! acked, whatever order the acks arrive in. A fail, or a timeout, ends the root at once.
//!
//! Timeouts use rotating buckets (as Heron's stmgr does): roots start in the newest bucket; every
//! `timeout / (BUCKETS - 1)` the oldest bucket is dropped and its roots fail. A root therefore fails between
//! `timeout` and `timeout * BUCKETS / (BUCKETS - 1)` after it started, and memory stays proportional to the roots
//! in flight. The ledger does no I/O and takes time as a parameter.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use egret_api::{MessageId, RootId};

/// Number of timeout buckets.
pub const BUCKETS: usize = 4;

/// Root ids are uniformly random, so their value is already a good hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type IdMap<V> = HashMap<RootId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    xor: u64,
    message_id: MessageId,
    started: Instant,
}

/// A root that completed: its tree was fully acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub message_id: MessageId,
    pub latency: Duration,
}

pub struct XorLedger {
    /// Front = newest.
    buckets: VecDeque<IdMap<Entry>>,
    /// `None`: timeouts are disabled (`topology.enable.message.timeouts=false`).
    rotate_every: Option<Duration>,
    next_rotation: Option<Instant>,
    in_flight: usize,
}

impl XorLedger {
    pub fn new(timeout: Option<Duration>, now: Instant) -> Self {
        let rotate_every = timeout.map(|t| (t / (BUCKETS as u32 - 1)).max(Duration::from_millis(1)));
        XorLedger {
            buckets: (0..BUCKETS).map(|_| IdMap::default()).collect(),
            rotate_every,
            next_rotation: rotate_every.map(|d| now + d),
            in_flight: 0,
        }
    }

    /// Roots started and not yet completed, failed or expired.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Starts a root. `xor` is the XOR of the keys of the copies sent; zero (no consumer) completes it at once.
    pub fn start(&mut self, root: RootId, message_id: MessageId, xor: u64, now: Instant) -> Option<Completed> {
        if xor == 0 {
            return Some(Completed {
                message_id,
                latency: Duration::ZERO,
            });
        }
        let entry = Entry {
            xor,
            message_id,
            started: now,
        };
        if self.buckets[0].insert(root, entry).is_none() {
            self.in_flight += 1;
        }
        None
    }

    fn find(&mut self, root: RootId) -> Option<(usize, &mut Entry)> {
        let i = self.buckets.iter().position(|b| b.contains_key(&root))?;
        self.buckets[i].get_mut(&root).map(|e| (i, e))
    }

    /// XORs an ack into a root; returns the completion when the value reaches zero. Unknown roots (already failed
    /// or expired) are ignored, as in Heron.
    pub fn ack(&mut self, root: RootId, xor: u64, now: Instant) -> Option<Completed> {
        let (bucket, entry) = self.find(root)?;
        entry.xor ^= xor;
        if entry.xor != 0 {
            return None;
        }
        let e = self.buckets[bucket].remove(&root)?;
        self.in_flight -= 1;
        Some(Completed {
            message_id: e.message_id,
            latency: now.saturating_duration_since(e.started),
        })
    }

    /// Fails a root now; returns its message id if it was in flight.
    pub fn fail(&mut self, root: RootId) -> Option<MessageId> {
        let (bucket, _) = self.find(root)?;
        let e = self.buckets[bucket].remove(&root)?;
        self.in_flight -= 1;
        Some(e.message_id)
    }

    /// Rotates the buckets that are due and pushes the message ids of expired roots into `expired`.
    pub fn expire(&mut self, now: Instant, expired: &mut Vec<MessageId>) {
        let (Some(every), Some(mut next)) = (self.rotate_every, self.next_rotation) else {
            return;
        };
        while now >= next {
            let oldest = self.buckets.pop_back().unwrap_or_default();
            self.in_flight -= oldest.len();
            expired.extend(oldest.values().map(|e| e.message_id));
            let mut fresh = oldest;
            fresh.clear();
            self.buckets.push_front(fresh);
            next += every;
        }
        self.next_rotation = Some(next);
    }

    /// When [`XorLedger::expire`] next has work to do.
    pub fn next_expiry_check(&self) -> Option<Instant> {
        self.next_rotation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::FastRng;
    use proptest::prelude::*;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn tree_completes_when_every_key_is_acked() {
        let now = Instant::now();
        let mut l = XorLedger::new(Some(T), now);
        let (a, b, c) = (0x1111u64, 0x2222u64, 0x4444u64);
        // Spout sent copy `a`; bolt 1 acks `a` having emitted children `b`, `c`; bolt 2 acks `b` then `c`.
        assert_eq!(l.start(RootId(1), 10, a, now), None);
        assert_eq!(l.ack(RootId(1), c, now), None);
        assert_eq!(l.ack(RootId(1), a ^ b ^ c, now), None);
        assert_eq!(l.in_flight(), 1);
        let done = l.ack(RootId(1), b, now + Duration::from_millis(5)).unwrap();
        assert_eq!(
            done,
            Completed {
                message_id: 10,
                latency: Duration::from_millis(5)
            }
        );
        assert_eq!(l.in_flight(), 0);
        // Late acks for a finished root are ignored.
        assert_eq!(l.ack(RootId(1), a, now), None);
    }

    #[test]
    fn root_without_consumers_completes_at_start() {
        let now = Instant::now();
        let mut l = XorLedger::new(Some(T), now);
        assert!(l.start(RootId(1), 3, 0, now).is_some());
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn timeout_fails_the_root_within_the_bucket_precision() {
        let now = Instant::now();
        let mut l = XorLedger::new(Some(T), now);
        l.start(RootId(1), 7, 5, now);
        let mut expired = Vec::new();
        l.expire(now + T - Duration::from_millis(1), &mut expired);
        assert!(expired.is_empty(), "expired before the timeout");
        l.expire(now + T * BUCKETS as u32 / (BUCKETS as u32 - 1), &mut expired);
        assert_eq!(expired, vec![7]);
        assert_eq!(l.in_flight(), 0);
        assert_eq!(
            l.ack(RootId(1), 5, now),
            None,
            "an expired root must not complete later"
        );
    }

    #[test]
    fn fail_ends_the_root_once() {
        let now = Instant::now();
        let mut l = XorLedger::new(None, now);
        l.start(RootId(9), 1, 5, now);
        assert_eq!(l.fail(RootId(9)), Some(1));
        assert_eq!(l.fail(RootId(9)), None);
        let mut expired = Vec::new();
        l.expire(now + Duration::from_secs(3600), &mut expired);
        assert!(expired.is_empty());
    }

    proptest! {
        /// Every root completes exactly once, whatever the order of acks, for random trees.
        #[test]
        fn every_root_completes_exactly_once(seed in any::<u64>(), roots in 1usize..20, order_seed in any::<u64>()) {
            let mut rng = FastRng::new(seed);
            let now = Instant::now();
            let mut l = XorLedger::new(Some(T), now);
            // Build each tree: the spout emits 1-3 copies; each node acks with its key ^ its children's keys.
            let mut acks: Vec<(RootId, u64)> = Vec::new();
            for r in 0..roots {
                let root = RootId(r as u64 + 1);
                let mut frontier: Vec<u64> = (0..1 + rng.below(3)).map(|_| rng.next_key()).collect();
                let start_xor = frontier.iter().fold(0, |x, k| x ^ k);
                l.start(root, r as u64, start_xor, now);
                let mut depth = 0;
                while let Some(key) = frontier.pop() {
                    let children: Vec<u64> = if depth < 12 { (0..rng.below(3)).map(|_| rng.next_key()).collect() } else { vec![] };
                    depth += 1;
                    acks.push((root, children.iter().fold(key, |x, k| x ^ k)));
                    frontier.extend(children);
                }
            }
            // Shuffle the acks.
            let mut order = FastRng::new(order_seed);
            for i in (1..acks.len()).rev() {
                acks.swap(i, order.below(i + 1));
            }
            let mut completed = Vec::new();
            for (root, xor) in acks {
                if let Some(c) = l.ack(root, xor, now) {
                    completed.push(c.message_id);
                }
            }
            completed.sort();
            prop_assert_eq!(completed, (0..roots as u64).collect::<Vec<_>>());
            prop_assert_eq!(l.in_flight(), 0);
        }
    }
}
