//! How long to wait before starting again a process that exited: 0.5 s, doubling to 30 s while it keeps exiting,
//! and back to 0.5 s once it has run for a minute. The executor applies it to its processes and the supervisor to
//! the executors, so a crash loop costs little CPU and a rare crash is repaired at once.

use std::time::Duration;

pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long was healthy: its next crash starts the back-off over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The wait before the next start of a process that exited after running for `ran`.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran > HEALTHY_AFTER {
            self.next = MIN_BACKOFF;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
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
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(b.after_exit(HEALTHY_AFTER + quick), MIN_BACKOFF);
        assert_eq!(b.after_exit(quick), MIN_BACKOFF * 2);
    }
}
