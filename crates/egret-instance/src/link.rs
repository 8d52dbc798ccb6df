//! The instance's link to its stmgr: one non-blocking socket owned by the task thread.
//!
//! The task thread reads frames into one buffer and hands each DATA frame's records to the task in place (no copy,
//! no allocation per frame); it writes its batches as DATA frames with one `writev` per round of sends (header and
//! batch side by side, no copy). With nothing to do it sleeps in `poll(2)` on the socket, so an instance wakes once
//! per arriving burst of frames and not on timers. There are no gateway threads to hand batches between.
//!
//! Bytes from the stmgr never panic the instance: a frame whose contents are bad (an unknown kind, a CONTROL frame
//! that does not decode or is not one an instance expects, a DATA frame for another task) is counted as the task's
//! error and skipped; only a length that breaks the framing (zero, or over the maximum) ends the connection, since
//! nothing after it can be trusted.
//!
//! Under effectively-once the link also carries the checkpoint coordinator's word (`crate::checkpointing`):
//! - **In.** A physical plan's rollback, `StartCheckpoint` and `CheckpointCommitted` become commands for the task
//!   loop. After queueing one, `receive` stops reading frames, so the loop carries it out before it handles any
//!   frame that came after it (a restore then drops a stale batch that followed the plan instead of executing it in
//!   the old component), and `wait` does not sleep while a command waits.
//! - **Out.** The instance's reports (`InstanceStateStored`, `RestoreFailed`) join the out queue as whole CONTROL
//!   frames, ahead of the DATA frames waiting there (behind only a frame already part written and earlier reports),
//!   so that back pressure does not hold a checkpoint's completion, and regardless of `out_limit` (that bound is for
//!   the task's batches; reports are a few per checkpoint). `receive`, `flush` and `wait` move them there; the writer thread
//!   signals an eventfd that `wait` polls beside the socket, so a report written while the task sleeps goes out at
//!   once rather than at the next wakeup (up to 100 ms later).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use egret_api::{CheckpointId, TaskId};
use egret_proto::api::TopologyState;
use egret_proto::egret::control;
use egret_runtime::checkpoint::TaskCommand;
use egret_runtime::driver::Link;
use egret_runtime::{Batch, TaskMetrics, Transport};
use egret_transport::{FrameError, FrameRef, HEADER_LEN, Next, control_frame, data_header, next_frame};

use crate::Control;

/// Bytes read from the socket per `read` call at least (the buffer grows for larger frames).
const READ_CHUNK: usize = 256 * 1024;

/// A frame being written: a DATA frame's header then its batch (side by side, never copied together), or a whole
/// CONTROL frame in `body` with an empty header.
struct OutFrame {
    header: [u8; HEADER_LEN + 4],
    header_len: usize,
    body: Batch,
    /// Bytes of this frame already written.
    written: usize,
}

impl OutFrame {
    fn data(dest: TaskId, batch: Batch) -> OutFrame {
        OutFrame {
            header: data_header(dest.0, batch.len()),
            header_len: HEADER_LEN + 4,
            body: batch,
            written: 0,
        }
    }

    fn control(msg: control::Msg) -> OutFrame {
        OutFrame {
            header: [0; HEADER_LEN + 4],
            header_len: 0,
            body: control_frame(msg),
            written: 0,
        }
    }

    fn header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }

    fn len(&self) -> usize {
        self.header_len + self.body.len()
    }
}

pub(crate) struct StmgrLink {
    stream: TcpStream,
    task: TaskId,
    max_frame: usize,
    /// Received bytes; `inbuf[start..end]` is not parsed yet.
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    out: VecDeque<OutFrame>,
    /// How many frames the task may have queued before `try_send` hands batches back (control frames are not
    /// held to it).
    out_limit: usize,
    /// The last read emptied the socket (and nothing has woken `wait` since).
    socket_empty: bool,
    ctl: Arc<Control>,
    metrics: Arc<TaskMetrics>,
}

impl StmgrLink {
    /// Takes a connected stream (registration done, nothing read after the reply) and makes it non-blocking.
    pub(crate) fn new(
        stream: TcpStream,
        task: TaskId,
        out_limit: usize,
        ctl: Arc<Control>,
        metrics: Arc<TaskMetrics>,
    ) -> io::Result<StmgrLink> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(StmgrLink {
            stream,
            task,
            max_frame: egret_transport::DEFAULT_MAX_FRAME,
            inbuf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            out: VecDeque::new(),
            out_limit: out_limit.max(1),
            socket_empty: false,
            ctl,
            metrics,
        })
    }

    /// Waits up to `timeout` for the first whole CONTROL frame (the registration's reply).
    pub(crate) fn first_control(&mut self, timeout: Duration) -> Result<control::Msg, FrameError> {
        let deadline = Instant::now() + timeout;
        loop {
            match next_frame(&self.inbuf[self.start..self.end], self.max_frame)? {
                Next::Frame { len, frame } => {
                    self.start += len;
                    return match frame? {
                        FrameRef::Control(msg) => Ok(msg),
                        FrameRef::Data { .. } => Err(FrameError::Io(io::Error::other("DATA before the reply"))),
                    };
                }
                Next::Incomplete { needed } => {
                    if self.fill(needed)?.0 == 0 {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(FrameError::Io(io::ErrorKind::TimedOut.into()));
                        }
                        poll(self.stream.as_raw_fd(), true, false, None, left);
                    }
                }
            }
        }
    }

    /// Reads what the socket has (without waiting), making room for a frame of `needed` bytes. Returns how much was
    /// read and whether that emptied the socket (a read shorter than the room it had); a closed or failed
    /// connection is an error.
    fn fill(&mut self, needed: usize) -> Result<(usize, bool), FrameError> {
        if self.start > 0 && (self.start == self.end || self.inbuf.len() - self.end < READ_CHUNK / 4) {
            self.inbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.inbuf.len() - self.start < needed {
            self.inbuf.resize(self.start + needed.max(READ_CHUNK), 0);
        }
        loop {
            let room = self.inbuf.len() - self.end;
            return match self.stream.read(&mut self.inbuf[self.end..]) {
                Ok(0) => Err(FrameError::Closed),
                Ok(n) => {
                    self.end += n;
                    Ok((n, n < room))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((0, true)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Whether a whole frame waits in the buffer.
    fn has_frame(&self) -> bool {
        matches!(
            next_frame(&self.inbuf[self.start..self.end], self.max_frame),
            Ok(Next::Frame { .. }) | Err(_)
        )
    }

    fn lost(&self, e: &FrameError) {
        if !self.ctl.stop.swap(true, SeqCst) {
            tracing::warn!(error = %e, "the stmgr connection ended; stopping the task");
        }
    }

    /// Handles a CONTROL frame from the stmgr; returns whether it queued a command for the task loop.
    fn control(&self, msg: control::Msg) -> bool {
        let checkpointing = self.ctl.checkpointing.as_ref();
        match (msg, checkpointing) {
            (control::Msg::PhysicalPlan(pplan), _) => {
                let running = pplan.topology.as_ref().map(|t| t.state) == Some(TopologyState::Running as i32);
                self.ctl.active.store(running, SeqCst);
                let (topology, present) = self.ctl.plan_topology(pplan.topology.as_ref());
                if !present {
                    // A rescale removed this task: it stops (its executor stops the process too).
                    tracing::info!("this task is not in the rescaled topology; stopping");
                    self.ctl.removed.store(true, SeqCst);
                    self.ctl.stop.store(true, SeqCst);
                    return true;
                }
                // Outside effectively-once a rollback means nothing to the task: ignored.
                let restore = match (pplan.rollback, checkpointing) {
                    (Some(rollback), Some(c)) => c.rollback(rollback, &topology),
                    _ => false,
                };
                restore || self.ctl.commands_waiting()
            }
            (control::Msg::StartCheckpoint(s), Some(c)) => {
                c.push_command(TaskCommand::Checkpoint {
                    epoch: s.epoch,
                    checkpoint: CheckpointId(s.checkpoint),
                });
                true
            }
            (control::Msg::CheckpointCommitted(s), Some(c)) => {
                c.push_command(TaskCommand::Committed {
                    checkpoint: CheckpointId(s.checkpoint),
                });
                true
            }
            (other, _) => {
                // Only plans (and, under effectively-once, checkpoint commands) have business here: anything else is
                // the peer's fault, counted (not logged, so a hostile peer cannot flood the log) like a bad frame,
                // under the message's kind alone.
                let debug = format!("{other:?}");
                let kind = debug.split(['(', ' ']).next().unwrap_or_default();
                self.metrics
                    .record_error(format!("a {kind} control message reached task {}", self.task));
                false
            }
        }
    }

    /// Moves the reports waiting for the stmgr into the out queue (one atomic load when there are none).
    fn queue_reports(&mut self) {
        let Some(c) = &self.ctl.checkpointing else { return };
        if self.ctl.stop.load(SeqCst) {
            return;
        }
        for msg in c.take_reports() {
            // Ahead of the queued batches (behind a frame already part written, and behind earlier reports, in
            // order): under back pressure a report waiting behind megabytes of tuples would make its checkpoint time
            // out.
            let at = self
                .out
                .iter()
                .take_while(|f| f.written > 0 || f.header_len == 0)
                .count();
            self.out.insert(at, OutFrame::control(msg));
        }
    }

    /// Whether commands wait for the task loop (it must run before the link sleeps).
    fn commands_waiting(&self) -> bool {
        self.ctl.commands_waiting()
    }

    /// Writes queued frames until they are all out or the socket is full.
    fn write_out(&mut self) {
        while !self.out.is_empty() && !self.ctl.stop.load(SeqCst) {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * self.out.len().min(64));
            for f in self.out.iter().take(64) {
                let header = f.header();
                if f.written < header.len() {
                    slices.push(IoSlice::new(&header[f.written..]));
                    slices.push(IoSlice::new(&f.body));
                } else {
                    slices.push(IoSlice::new(&f.body[f.written - header.len()..]));
                }
            }
            let mut n = match self.stream.write_vectored(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.lost(&e.into()),
            };
            while n > 0 {
                let Some(f) = self.out.front_mut() else { break };
                let left = f.len() - f.written;
                if n >= left {
                    n -= left;
                    self.out.pop_front();
                } else {
                    f.written += n;
                    n = 0;
                }
            }
        }
    }
}

impl Transport for StmgrLink {
    fn try_send(&mut self, dest: TaskId, batch: Batch) -> Result<(), Batch> {
        if self.ctl.stop.load(SeqCst) {
            // The connection is gone and the process is stopping: nothing can be sent.
            return Ok(());
        }
        if self.out.len() >= self.out_limit {
            return Err(batch);
        }
        self.out.push_back(OutFrame::data(dest, batch));
        Ok(())
    }

    fn flush(&mut self) {
        self.queue_reports();
        self.write_out();
    }
}

impl Link for StmgrLink {
    fn drained(&self) -> bool {
        self.socket_empty && !self.has_frame()
    }

    fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut handled = 0;
        // After a read that emptied the socket, another would only say "nothing yet": saves a syscall per wakeup.
        let mut socket_empty = false;
        self.socket_empty = false;
        self.queue_reports();
        while handled < max && !self.ctl.stop.load(SeqCst) {
            let next = match next_frame(&self.inbuf[self.start..self.end], self.max_frame) {
                Ok(next) => next,
                Err(e) => {
                    self.lost(&e);
                    break;
                }
            };
            match next {
                Next::Frame { len, frame } => {
                    let at = self.start;
                    self.start += len;
                    match frame {
                        Ok(FrameRef::Data { dest, records }) if dest == self.task.0 => {
                            f(records);
                            handled += 1;
                        }
                        Ok(FrameRef::Data { dest, .. }) => self
                            .metrics
                            .record_error(format!("a DATA frame for task {dest} reached task {}", self.task)),
                        Ok(FrameRef::Control(msg)) => {
                            if self.control(msg) {
                                // The loop carries the command out before any later frame is handled.
                                break;
                            }
                        }
                        Err(e) => self
                            .metrics
                            .record_error(format!("bad frame at stream offset +{at}: {e}")),
                    }
                }
                Next::Incomplete { .. } if socket_empty => {
                    self.socket_empty = true;
                    break;
                }
                Next::Incomplete { needed } => match self.fill(needed) {
                    Ok((0, _)) => {
                        self.socket_empty = true;
                        break;
                    }
                    Ok((_, emptied)) => socket_empty = emptied,
                    Err(e) => {
                        self.lost(&e);
                        break;
                    }
                },
            }
        }
        handled
    }

    fn wait(&mut self, timeout: Duration, want_input: bool, _want_room: bool) {
        if self.ctl.stop.load(SeqCst) || (want_input && self.has_frame()) || self.commands_waiting() {
            return;
        }
        self.queue_reports();
        // Queued frames are written whenever the socket takes them, whatever the task waits for.
        let want_write = !self.out.is_empty();
        let wakeup = self.ctl.checkpointing.as_ref().map(|c| c.wakeup_fd());
        let fd = self.stream.as_raw_fd();
        let mut ready = None;
        let mut block = || ready = Some(poll(fd, want_input, want_write, wakeup, timeout));
        match AROUND_WAIT.get() {
            Some(around) if !timeout.is_zero() => around(&mut block),
            _ => block(),
        }
        let Some(ready) = ready else { return };
        if ready.woken {
            // The writer thread left a report: out it goes now; the socket most likely has room for it. The eventfd
            // is quieted first in any case, or a signal whose report was already taken would keep waking us.
            if let Some(c) = &self.ctl.checkpointing {
                c.clear_wakeup();
            }
            self.queue_reports();
        }
        if ready.writable || ready.woken {
            self.write_out();
        }
    }
}

/// How the task thread blocks in [`StmgrLink`]'s waits: by default it just does; a host whose task thread holds a
/// lock that other threads need while the task waits (the Python instance: the GIL, for the user's own threads)
/// wraps every wait to let go of it ([`set_around_wait`]). The wrapped function only polls sockets.
static AROUND_WAIT: std::sync::OnceLock<fn(&mut dyn FnMut())> = std::sync::OnceLock::new();

/// Sets how the task thread blocks (once per process; later calls return `false` and change nothing).
pub fn set_around_wait(around: fn(&mut dyn FnMut())) -> bool {
    AROUND_WAIT.set(around).is_ok()
}

/// What [`poll`] saw. (Input needs no flag: the caller reads the socket whatever the reason it woke.)
struct Ready {
    /// The socket has room, or hung up.
    writable: bool,
    /// The wakeup descriptor was signalled.
    woken: bool,
}

/// `ppoll(2)` on the socket `fd` and, if given, a `wakeup` descriptor watched for input (microsecond timeouts,
/// where `poll` rounds to milliseconds). A hang-up counts as writable: the next write (or read) sees it.
fn poll(fd: RawFd, read: bool, write: bool, wakeup: Option<RawFd>, timeout: Duration) -> Ready {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    let mut pfds = [
        libc::pollfd { fd, events, revents: 0 },
        // A negative descriptor is ignored by ppoll.
        libc::pollfd {
            fd: wakeup.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid pollfds and timespec for the duration of the call; no signal mask change.
    let n = unsafe { libc::ppoll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if n <= 0 {
        return Ready {
            writable: false,
            woken: false,
        };
    }
    let r = pfds[0].revents;
    let failed = r & (libc::POLLHUP | libc::POLLERR) != 0;
    Ready {
        writable: r & libc::POLLOUT != 0 || failed,
        woken: pfds[1].revents & libc::POLLIN != 0,
    }
}
