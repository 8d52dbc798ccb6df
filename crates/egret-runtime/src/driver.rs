//! The task loops: how a thread drives a [`SpoutTask`] or [`BoltTask`] over its [`Link`]. The simulator (queues
//! between threads) and instance processes (a socket to the stmgr) both run these, so when a task sends, waits and
//! sleeps is decided here once.
//!
//! The policy, which keeps a topology cheap at moderate rates and fast at full rate:
//! - **A busy task fills batches.** A batch closes when full (`topology.egret.batch.tuples`) or, while the task keeps
//!   working, when it is older than `topology.egret.batch.flush.micros`.
//! - **An idle task sends at once.** When a bolt's input is empty, or a spout has nothing to emit, nothing will join
//!   its open batches soon: they go out now rather than after the flush interval, so latency is not paid at every
//!   hop.
//! - **An idle task sleeps.** It blocks on its link (input, room for output) until its next timer; it never spins.
//!   A spout whose `next_tuple` emitted nothing is asked again after `topology.egret.spout.wait.micros` (acks and
//!   fails are still handled as they arrive), so a slow source is polled in bursts, not once per tuple; while whole
//!   cycles emit nothing the wait doubles, up to `topology.egret.spout.wait.max.micros`; the waits end
//!   on a wall-clock grid ([`next_on_grid`]), so all spouts burst together and the rest of the topology wakes once
//!   per burst for all of them.

use std::time::{Duration, Instant};

use crate::checkpoint::{Snapshot, TaskCommand};
use crate::outbox::Transport;
use crate::task::{BoltTask, SpoutTask};

/// `next_tuple` calls per emit cycle between checks of the input and timers.
pub const EMIT_CYCLE_CALLS: usize = 1024;
/// Received batches handled between two sends of the outputs.
const RECEIVE_BATCHES: usize = 16;
/// The longest a task sleeps with nothing to do. Links wake it earlier on input; the simulator's link caps waits
/// shorter to see `stopping()` soon.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);

/// What a task's loop needs from its surroundings besides its link.
pub trait LoopControl {
    fn stopping(&self) -> bool;
    /// Whether spouts should emit (the topology is activated).
    fn active(&self) -> bool;
    /// A received item was fully processed and its outputs published (the simulator counts in-flight batches).
    fn processed(&self) {}
    /// A spout reports whether it has acted on the current activation state.
    fn active_seen(&self, _seen: bool) {}
    /// Effectively-once: the checkpoint coordinator's next command for this task, if any (checked once per loop,
    /// so it must be cheap when there is none).
    fn command(&self) -> Option<TaskCommand> {
        None
    }
    /// Effectively-once: a snapshot the task took, to be written to the store off the task's thread.
    fn save(&self, _snapshot: Snapshot) {}
    /// A command could not be carried out (a component failed to restore).
    fn command_failed(&self, _error: crate::task::TaskError) {}
}

/// A task's connection to the rest of the topology: it takes the task's batches (as a [`Transport`]) and delivers
/// its input. The simulator's link is a pair of queues; an instance's is its socket to the stmgr.
pub trait Link: Transport {
    /// Hands received batches to `f` without waiting, at most `max` of them; returns how many.
    fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Whether the last `receive` left nothing behind that could be handled now: the caller may go idle without
    /// asking again. A link that cannot tell says `false`.
    fn drained(&self) -> bool {
        false
    }
    /// Blocks until input may have arrived (when `want_input`), room for output may have appeared (when
    /// `want_room`), or `timeout` passed. A link that buffers writes keeps writing them while it waits.
    fn wait(&mut self, timeout: Duration, want_input: bool, want_room: bool);
}

/// The first instant after `now` that is a whole multiple of `period` on the wall clock. Every spout of a machine
/// (every process reads the same clock) then wakes at the same moments: their bursts travel together, and the stmgrs
/// and bolts wake once per period for all of them instead of once per spout. (Linux coalesces timers for the same
/// reason.) The wait is at most `period`, as without the grid.
pub fn next_on_grid(now: Instant, period: Duration) -> Instant {
    let period_ns = period.as_nanos().max(1);
    let wall_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let to_next = period_ns - wall_ns % period_ns;
    now + Duration::from_nanos(to_next.min(u64::MAX as u128) as u64)
}

fn until(at: Option<Instant>, now: Instant, cap: Duration) -> Duration {
    at.map_or(cap, |at| at.saturating_duration_since(now).min(cap))
}

/// Runs a spout task until `control.stopping()`. Input batches hold ACK/FAIL records.
pub fn run_spout(t: &mut SpoutTask, link: &mut dyn Link, control: &dyn LoopControl) {
    let (base_wait, max_wait) = t.spout_waits();
    // How long the spout waits after a call that emitted nothing: doubles while whole cycles emit nothing.
    let mut spout_wait = base_wait;
    // When `next_tuple` may be called again after a call that emitted nothing.
    let mut next_emit = Instant::now();
    while !control.stopping() {
        let now = Instant::now();
        while let Some(cmd) = control.command() {
            if let Err(e) = t.command(cmd, now) {
                control.command_failed(e);
            }
        }
        let active = control.active();
        t.set_active(active);
        // Acks and fails first: they make room under max spout pending.
        link.receive(RECEIVE_BATCHES * 4, &mut |batch| {
            let _ = t.handle_batch(batch, now);
            control.processed();
        });
        if t.next_timer().is_some_and(|at| at <= now) {
            t.on_timer(now);
        }
        if t.can_emit() && now >= next_emit {
            let cycle = t.emit_cycle(now, EMIT_CYCLE_CALLS);
            for s in t.take_snapshots() {
                control.save(s);
            }
            if cycle.source_empty {
                if cycle.emitted > 0 {
                    spout_wait = base_wait;
                }
                next_emit = next_on_grid(now, spout_wait);
                if cycle.emitted == 0 {
                    spout_wait = (spout_wait * 2).min(max_wait);
                }
            } else if cycle.emitted > 0 {
                // Busy: keep filling batches; only those older than the flush interval go now.
                t.outbox().flush_due(now);
                t.outbox().send(link);
                t.publish();
                continue;
            }
        }
        // Idle (nothing to emit now, deactivated, max pending reached or outputs full): nothing will join the open
        // batches soon, so they go now. Then sleep until input, room, a timer or the next emit.
        for s in t.take_snapshots() {
            control.save(s);
        }
        t.outbox().flush_all();
        t.outbox().send(link);
        t.publish();
        control.active_seen(t.is_active() == active);
        let now = Instant::now();
        let emit_at = (t.can_emit() && t.outbox().waiting() == 0).then_some(next_emit);
        let wake = [emit_at, t.next_timer()].into_iter().flatten().min();
        let want_room = t.outbox().waiting() > 0;
        link.wait(until(wake, now, IDLE_WAIT), true, want_room);
    }
}

/// Runs a bolt task until `control.stopping()`. Input batches hold DATA records.
pub fn run_bolt(t: &mut BoltTask, link: &mut dyn Link, control: &dyn LoopControl) {
    while !control.stopping() {
        let now = Instant::now();
        while let Some(cmd) = control.command() {
            if let Err(e) = t.command(cmd, now) {
                control.command_failed(e);
            }
            // A restore processes the input it held, which may complete an alignment.
            for s in t.take_snapshots() {
                control.save(s);
            }
        }
        if t.next_timer().is_some_and(|at| at <= now) {
            t.on_timer(now);
        }
        // Outputs first: while a downstream queue is full, take no more input (back pressure upstream).
        if !t.outbox().send(link) {
            t.publish();
            link.wait(until(t.next_timer(), now, IDLE_WAIT), false, true);
            continue;
        }
        let received = link.receive(RECEIVE_BATCHES, &mut |batch| {
            let _ = t.handle_batch(batch, Instant::now());
            for s in t.take_snapshots() {
                control.save(s);
            }
            // The outputs are published (counted as unflushed) before this batch stops counting as in flight, so
            // the topology never looks quiet while they wait.
            control.processed();
        });
        if received > 0 && !link.drained() {
            t.outbox().flush_due(Instant::now());
            t.outbox().send(link);
            t.publish();
            continue;
        }
        // Out of input: send everything now, then sleep until input or the next timer (a tick).
        t.outbox().flush_all();
        let sent = t.outbox().send(link);
        t.publish();
        let now = Instant::now();
        link.wait(until(t.next_timer(), now, IDLE_WAIT), true, !sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_wait_is_never_longer_than_the_period_and_lands_on_a_multiple_of_it() {
        let period = Duration::from_micros(1000);
        for _ in 0..100 {
            let now = Instant::now();
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let wait = next_on_grid(now, period) - now;
            assert!(wait > Duration::ZERO && wait <= period, "{wait:?}");
            // The wall clock then reads a whole multiple of the period (to within the time between the two reads).
            let landing = (wall + wait.as_nanos()) % period.as_nanos();
            let off = landing.min(period.as_nanos() - landing);
            assert!(off < 200_000, "lands {off} ns off the grid");
        }
    }
}
