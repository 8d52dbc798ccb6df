//! The back-off a component applies between attempts to reach an external system (a broker, a database): 100 ms
//! after the first failure, doubling up to a cap, back to the start after a success. Connectors keep one per
//! connection and ask it whether an attempt may be made now, so a task never sleeps on it and keeps serving acks
//! and checkpoints while the server is away.

use std::time::{Duration, Instant};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    max: Duration,
    next_attempt: Option<Instant>,
}

impl Backoff {
    /// The first wait.
    pub const INITIAL: Duration = Duration::from_millis(100);

    /// Waits double up to `max` (at least [`Backoff::INITIAL`]).
    pub fn new(max: Duration) -> Self {
        Backoff {
            delay: Self::INITIAL,
            max: max.max(Self::INITIAL),
            next_attempt: None,
        }
    }

    /// An attempt failed: the next one waits; returns how long.
    pub fn failed(&mut self) -> Duration {
        let wait = self.delay;
        self.next_attempt = Some(Instant::now() + wait);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }

    /// An attempt succeeded: the next failure waits [`Backoff::INITIAL`] again.
    pub fn reset(&mut self) {
        self.delay = Self::INITIAL;
        self.next_attempt = None;
    }

    /// Whether an attempt may be made now.
    pub fn ready(&self) -> bool {
        self.next_attempt.is_none_or(|t| Instant::now() >= t)
    }

    /// How long until an attempt may be made, if it may not be made now.
    pub fn wait(&self) -> Option<Duration> {
        self.next_attempt
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_and_reset_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(500));
        assert!(b.ready() && b.wait().is_none());
        let waits: Vec<u128> = (0..5).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert!(!b.ready() && b.wait().is_some());
        b.reset();
        assert!(b.ready());
        assert_eq!(b.failed(), Backoff::INITIAL);
    }
}
