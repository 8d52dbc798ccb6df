//! The instance's link to its stmgr: one non-blocking socket owned by the task thread.
//!
//! The task thread reads frames into one buffer and hands each DATA frame's records to the task in place (no copy,
//! no allocation per frame); it writes its batches as DATA frames with one `writev` per round of sends (header and
//! batch side by side, no copy). With nothing to do it sleeps in `poll(2)` on the socket, so an instance wakes once
//! per arriving burst of frames and not on timers. There are no gateway threads to hand batches between.
//!
//! Bytes from the stmgr never panic the instance: a frame whose contents are bad (an unknown kind, a CONTROL frame
//! that does not decode or is not a physical plan, a DATA frame for another task) is counted as the task's error and skipped; only a length
//! that breaks the framing (zero, or over the maximum) ends the connection, since nothing after it can be trusted.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use egret_api::TaskId;
use egret_proto::api::TopologyState;
use egret_proto::egret::control;
use egret_runtime::driver::Link;
use egret_runtime::{Batch, TaskMetrics, Transport};
use egret_transport::{FrameError, FrameRef, HEADER_LEN, Next, data_header, next_frame};

use crate::Control;

/// Bytes read from the socket per `read` call at least (the buffer grows for larger frames).
const READ_CHUNK: usize = 256 * 1024;

/// A DATA frame being written: its header, then its batch.
struct OutFrame {
    header: [u8; HEADER_LEN + 4],
    batch: Batch,
    /// Bytes of this frame already written.
    written: usize,
}

impl OutFrame {
    fn len(&self) -> usize {
        self.header.len() + self.batch.len()
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
    /// How many frames the task may have queued before `try_send` hands batches back.
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
                        poll(self.stream.as_raw_fd(), true, false, left);
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

    fn control(&self, msg: control::Msg) {
        match msg {
            control::Msg::PhysicalPlan(pplan) => {
                let running = pplan.topology.as_ref().map(|t| t.state) == Some(TopologyState::Running as i32);
                self.ctl.active.store(running, SeqCst);
            }
            other => {
                // Only plans have business here: anything else is the peer's fault, counted (not logged, so a
                // hostile peer cannot flood the log) like a bad frame, under the message's kind alone.
                let debug = format!("{other:?}");
                let kind = debug.split(['(', ' ']).next().unwrap_or_default();
                self.metrics
                    .record_error(format!("a {kind} control message reached task {}", self.task));
            }
        }
    }

    /// Writes queued frames until they are all out or the socket is full.
    fn write_out(&mut self) {
        while !self.out.is_empty() && !self.ctl.stop.load(SeqCst) {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * self.out.len().min(64));
            for f in self.out.iter().take(64) {
                if f.written < f.header.len() {
                    slices.push(IoSlice::new(&f.header[f.written..]));
                    slices.push(IoSlice::new(&f.batch));
                } else {
                    slices.push(IoSlice::new(&f.batch[f.written - f.header.len()..]));
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
        self.out.push_back(OutFrame {
            header: data_header(dest.0, batch.len()),
            batch,
            written: 0,
        });
        Ok(())
    }

    fn flush(&mut self) {
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
                        Ok(FrameRef::Control(msg)) => self.control(msg),
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
        if self.ctl.stop.load(SeqCst) || (want_input && self.has_frame()) {
            return;
        }
        // Queued frames are written whenever the socket takes them, whatever the task waits for.
        let want_write = !self.out.is_empty();
        let (_, writable) = poll(self.stream.as_raw_fd(), want_input, want_write, timeout);
        if writable {
            self.write_out();
        }
    }
}

/// `ppoll(2)` on one socket (microsecond timeouts, where `poll` rounds to milliseconds); returns (readable,
/// writable). A hang-up counts as both: the next read or write sees it.
fn poll(fd: i32, read: bool, write: bool, timeout: Duration) -> (bool, bool) {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and timespec for the duration of the call; no signal mask change.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if n <= 0 {
        return (false, false);
    }
    let r = pfd.revents;
    let failed = r & (libc::POLLHUP | libc::POLLERR) != 0;
    (r & libc::POLLIN != 0 || failed, r & libc::POLLOUT != 0 || failed)
}
