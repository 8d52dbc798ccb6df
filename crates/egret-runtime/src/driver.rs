//! The task loops: how a thread drives a [`SpoutTask`] or [`BoltTask`] between its input queue and its outputs.
//! The simulator (queues between threads) and instance processes (queues to a socket gateway) both run these.

use std::time::{Duration, Instant};

use crate::outbox::Transport;
use crate::queue::QueueReceiver;
use crate::task::{BoltTask, SpoutTask};

/// Tasks check for stop and activation changes at least this often.
pub const POLL: Duration = Duration::from_millis(2);
/// `next_tuple` calls per emit cycle between checks of the input queue and timers.
pub const EMIT_CYCLE_CALLS: usize = 1024;

/// What the loop needs from its surroundings.
pub trait LoopControl {
    fn stopping(&self) -> bool;
    /// Whether spouts should emit (the topology is activated).
    fn active(&self) -> bool;
    /// A received item was fully processed and its outputs published (the simulator counts in-flight batches).
    fn processed(&self) {}
    /// A spout reports whether it has acted on the current activation state.
    fn active_seen(&self, _seen: bool) {}
}

/// Runs a spout task until `control.stopping()`. Input items are batches of ACK/FAIL records.
pub fn run_spout<I: AsRef<[u8]>>(
    t: &mut SpoutTask,
    rx: &QueueReceiver<I>,
    transport: &mut dyn Transport,
    control: &dyn LoopControl,
) {
    while !control.stopping() {
        let active = control.active();
        t.set_active(active);
        let now = Instant::now();
        // Acks and fails first: they make room under max spout pending.
        for _ in 0..64 {
            let Some(batch) = rx.try_pop() else { break };
            let _ = t.handle_batch(batch.as_ref(), now);
            control.processed();
        }
        if t.next_timer().is_some_and(|at| at <= now) {
            t.on_timer(now);
        }
        t.outbox().send(transport);
        let emitted = if t.can_emit() {
            t.emit_cycle(now, EMIT_CYCLE_CALLS)
        } else {
            0
        };
        if emitted > 0 {
            t.outbox().send(transport);
            t.publish();
            continue;
        }
        // Idle (nothing to emit, deactivated, max pending reached or outputs full): send the batches that waited
        // the flush interval (`topology.egret.batch.flush.micros`) and wait for acks, room or the next flush. When
        // the spout cannot emit (deactivated, max pending), send everything: nothing more will join those batches.
        if t.can_emit() {
            t.outbox().flush_due(now);
        } else {
            t.outbox().flush_all();
        }
        t.outbox().send(transport);
        t.publish();
        control.active_seen(t.is_active() == active);
        let mut wait = if t.outbox().waiting() > 0 {
            Duration::from_micros(100)
        } else if t.can_emit() {
            // Nothing to emit right now: ask again soon.
            Duration::from_micros(200)
        } else {
            POLL
        };
        if let Some(at) = t.next_timer() {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(batch) = rx.pop_timeout(wait) {
            let _ = t.handle_batch(batch.as_ref(), Instant::now());
            control.processed();
        }
    }
}

/// Runs a bolt task until `control.stopping()`. Input items are batches of DATA records.
pub fn run_bolt<I: AsRef<[u8]>>(
    t: &mut BoltTask,
    rx: &QueueReceiver<I>,
    transport: &mut dyn Transport,
    control: &dyn LoopControl,
) {
    while !control.stopping() {
        // Outputs first: while a downstream queue is full, take no more input (back pressure upstream).
        if !t.outbox().send(transport) {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let now = Instant::now();
        let wait = t
            .next_timer()
            .map_or(POLL, |at| at.saturating_duration_since(now).min(POLL));
        let batch = match rx.try_pop() {
            Some(b) => Some(b),
            None => {
                // Out of input: send what waited the flush interval, then wait for input or the next flush.
                t.outbox().flush_due(now);
                t.outbox().send(transport);
                t.publish();
                let wait = t
                    .next_timer()
                    .map_or(wait, |at| at.saturating_duration_since(Instant::now()).min(wait));
                rx.pop_timeout(wait)
            }
        };
        if let Some(batch) = batch {
            let now = Instant::now();
            let _ = t.handle_batch(batch.as_ref(), now);
            // Publish the new outputs before this batch stops counting as in flight, so the topology never looks
            // quiet while they wait.
            control.processed();
            t.outbox().flush_due(now);
            t.outbox().send(transport);
            t.publish();
        }
        let now = Instant::now();
        if t.next_timer().is_some_and(|at| at <= now) {
            t.on_timer(now);
        }
    }
}
