//! How long to wait before starting again a process that exited: not at all the first time, then 0.5 s, doubling to
//! 30 s while it keeps exiting, and from the start again once it has run for [`HEALTHY_AFTER`]. The executor applies
//! it to its processes and the supervisor to the executors, so a crash loop costs little CPU and a rare crash is
//! repaired at once (under effectively-once the whole topology waits for the lost task before it rolls back).

use std::time::Duration;

pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long was healthy: its next crash starts the back-off over. A crash loop exits within
/// seconds of starting (a bad config, a missing file); a process that did ten seconds of work and then died did not.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Duration::ZERO }
    }
}

impl Backoff {
    /// The wait before the next start of a process that exited after running for `ran`.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran > HEALTHY_AFTER {
            self.next = Duration::ZERO;
        }
        let wait = self.next;
        self.next = (self.next * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_while_crashing_and_resets_after_good_health() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let waits: Vec<u64> = (0..9).map(|_| b.after_exit(quick).as_millis() as u64).collect();
        assert_eq!(waits, [0, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
        assert_eq!(b.after_exit(HEALTHY_AFTER + quick), Duration::ZERO);
        assert_eq!(b.after_exit(quick), MIN_BACKOFF);
    }
}
