//! Frames: how every Egret process talks to another over TCP. This crate knows bytes and peers, never tuples.
//!
//! ```text
//! frame   = u32 length (LE, bytes after this field) | u8 kind | body
//! CONTROL   body = one protobuf `egret.Control` envelope
//! DATA      body = u32 destination task (LE) | batch records (egret_runtime::batch) for that task
//! ```
//!
//! A stmgr routes a DATA frame by its destination task alone and forwards the frame's bytes unchanged. The reader
//! checks the length against a maximum before allocating and rejects unknown kinds; an error names the peer's
//! offence, and the caller drops the connection.

pub mod auth;

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use crossbeam_channel::{Sender, bounded};

use egret_proto::Message;
use egret_proto::egret::{Control, control};

pub const KIND_CONTROL: u8 = 1;
pub const KIND_DATA: u8 = 2;
/// Largest frame accepted by default (Heron's stmgr uses 10 MB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Length field + kind.
pub const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame (no kind byte)")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("DATA frame of {0} bytes is too short for its destination task")]
    ShortData(usize),
    #[error("CONTROL frame does not decode: {0}")]
    BadControl(#[from] egret_proto::prost::DecodeError),
    #[error("CONTROL frame carries no message")]
    EmptyControl,
}

/// A frame as read: the kind and the body (without header).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Control(control::Msg),
    /// `raw` is the whole frame including its header, so it can be forwarded without copying it again.
    Data {
        dest: u32,
        raw: Vec<u8>,
    },
}

impl Frame {
    /// The batch records of a DATA frame.
    pub fn data_records(raw: &[u8]) -> &[u8] {
        &raw[HEADER_LEN + 4..]
    }
}

/// Encodes a CONTROL frame.
pub fn control_frame(msg: control::Msg) -> Vec<u8> {
    let env = Control { msg: Some(msg) };
    let len = env.encoded_len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&((len + 1) as u32).to_le_bytes());
    out.push(KIND_CONTROL);
    env.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Encodes a DATA frame around batch records for `dest`.
pub fn data_frame(dest: u32, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + records.len());
    out.extend_from_slice(&data_header(dest, records.len()));
    out.extend_from_slice(records);
    out
}

/// A frame read in place from a buffer: DATA records are borrowed, not copied.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameRef<'a> {
    Control(control::Msg),
    Data { dest: u32, records: &'a [u8] },
}

fn check_len(len: usize, max: usize) -> Result<(), FrameError> {
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(())
}

/// Interprets one whole frame (header included, its length already checked).
fn parse_ref(frame: &[u8]) -> Result<FrameRef<'_>, FrameError> {
    match frame[4] {
        KIND_CONTROL => {
            let env = Control::decode(&frame[HEADER_LEN..])?;
            env.msg.map(FrameRef::Control).ok_or(FrameError::EmptyControl)
        }
        KIND_DATA => {
            if frame.len() < HEADER_LEN + 4 {
                return Err(FrameError::ShortData(frame.len()));
            }
            let dest = u32::from_le_bytes([frame[5], frame[6], frame[7], frame[8]]);
            Ok(FrameRef::Data {
                dest,
                records: &frame[HEADER_LEN + 4..],
            })
        }
        kind => Err(FrameError::UnknownKind(kind)),
    }
}

/// What is at the start of a buffer of received bytes.
// A control message (a plan) makes this ~220 bytes; it is returned once per frame (a batch of tuples), not per
// tuple, so boxing would cost an allocation per control frame for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next<'a> {
    /// Not a whole frame yet: the frame needs `needed` bytes in all.
    Incomplete { needed: usize },
    /// A whole frame of `len` bytes (header included). Its contents may be bad (an unknown kind, a CONTROL frame that
    /// does not decode): the frame can be skipped and the stream read on.
    Frame {
        len: usize,
        frame: Result<FrameRef<'a>, FrameError>,
    },
}

/// Finds the frame at the start of `buf` without copying it (the sans-I/O half of [`read_frame`]). An `Err` means the
/// stream cannot be read further (a length over `max`, or zero): the caller drops the connection.
pub fn next_frame(buf: &[u8], max: usize) -> Result<Next<'_>, FrameError> {
    if buf.len() < 4 {
        return Ok(Next::Incomplete { needed: HEADER_LEN });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    check_len(len, max)?;
    if buf.len() < 4 + len {
        return Ok(Next::Incomplete { needed: 4 + len });
    }
    Ok(Next::Frame {
        len: 4 + len,
        frame: parse_ref(&buf[..4 + len]),
    })
}

/// Reads one frame from `r`. Checks the length before allocating.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            e.into()
        });
    }
    let len = u32::from_le_bytes(len) as usize;
    check_len(len, max)?;
    let mut raw = vec![0u8; 4 + len];
    raw[..4].copy_from_slice(&(len as u32).to_le_bytes());
    r.read_exact(&mut raw[4..])?;
    parse(raw)
}

/// Interprets a whole frame (header included).
pub fn parse(raw: Vec<u8>) -> Result<Frame, FrameError> {
    if raw.len() < HEADER_LEN {
        return Err(FrameError::Empty);
    }
    let dest = match parse_ref(&raw)? {
        FrameRef::Control(msg) => return Ok(Frame::Control(msg)),
        FrameRef::Data { dest, .. } => dest,
    };
    Ok(Frame::Data { dest, raw })
}

/// The header of a DATA frame whose records (`records_len` bytes) follow it.
pub fn data_header(dest: u32, records_len: usize) -> [u8; HEADER_LEN + 4] {
    let mut h = [0u8; HEADER_LEN + 4];
    h[..4].copy_from_slice(&((1 + 4 + records_len) as u32).to_le_bytes());
    h[4] = KIND_DATA;
    h[5..].copy_from_slice(&dest.to_le_bytes());
    h
}

/// A buffered, blocking connection split into a reader and a writer that can live on different threads.
pub struct FrameReader {
    inner: BufReader<TcpStream>,
    max: usize,
}

impl FrameReader {
    pub fn read(&mut self) -> Result<Frame, FrameError> {
        read_frame(&mut self.inner, self.max)
    }
}

pub struct FrameWriter {
    inner: BufWriter<TcpStream>,
}

impl FrameWriter {
    /// Buffers a whole frame; call [`FrameWriter::flush`] when no more frames are ready.
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        self.inner.write_all(frame)
    }

    pub fn send_control(&mut self, msg: control::Msg) -> io::Result<()> {
        self.write(&control_frame(msg))?;
        self.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn shutdown(&self) {
        let _ = self.inner.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

/// Splits a connected stream into a frame reader and writer (64 KiB buffers, Nagle off).
pub fn split(stream: TcpStream, max_frame: usize) -> io::Result<(FrameReader, FrameWriter)> {
    stream.set_nodelay(true)?;
    let read = stream.try_clone()?;
    Ok((
        FrameReader {
            inner: BufReader::with_capacity(64 * 1024, read),
            max: max_frame,
        },
        FrameWriter {
            inner: BufWriter::with_capacity(64 * 1024, stream),
        },
    ))
}

/// The feeding end of a connection's writer thread: frames sent here are written in order, batched into as few
/// `write` calls as the queue allows. The channel is bounded, so a slow peer makes its feeders wait (TCP back
/// pressure reaches them); a failed connection ends the thread, and sends fail from then on.
#[derive(Clone)]
pub struct Writer {
    tx: Sender<Vec<u8>>,
    alive: Arc<AtomicBool>,
    /// Bytes queued and not yet written to the socket (back pressure watches this).
    queued: Arc<AtomicU64>,
}

impl Writer {
    /// Queues a frame, waiting while the queue is full. Fails when the connection is gone.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        let len = frame.len() as u64;
        self.queued.fetch_add(len, SeqCst);
        self.tx.send(frame).map_err(|e| {
            self.queued.fetch_sub(len, SeqCst);
            e.into_inner()
        })
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(SeqCst)
    }

    /// Whether two handles feed the same writer thread (the same connection).
    pub fn same(&self, other: &Writer) -> bool {
        Arc::ptr_eq(&self.alive, &other.alive)
    }

    /// Whether the writer thread still runs (its connection has not failed).
    pub fn is_open(&self) -> bool {
        self.alive.load(SeqCst)
    }
}

/// Starts a writer thread for `writer` with a queue of `capacity` frames; `name` labels its log line.
pub fn spawn_writer(mut writer: FrameWriter, capacity: usize, name: String) -> Writer {
    let (tx, rx) = bounded::<Vec<u8>>(capacity);
    let alive = Arc::new(AtomicBool::new(true));
    let queued = Arc::new(AtomicU64::new(0));
    let (flag, written) = (Arc::clone(&alive), Arc::clone(&queued));
    std::thread::spawn(move || {
        while let Ok(frame) = rx.recv() {
            let mut bytes = frame.len() as u64;
            let mut result = writer.write(&frame);
            while result.is_ok() {
                match rx.try_recv() {
                    Ok(f) => {
                        bytes += f.len() as u64;
                        result = writer.write(&f);
                    }
                    Err(_) => break,
                }
            }
            let result = result.and_then(|()| writer.flush());
            written.fetch_sub(bytes, SeqCst);
            if let Err(e) = result {
                tracing::warn!(to = %name, error = %e, "write failed; closing the connection");
                break;
            }
        }
        flag.store(false, SeqCst);
        // Whatever is still queued will never be written.
        written.store(0, SeqCst);
        writer.shutdown();
    });
    Writer { tx, alive, queued }
}

/// How a control-plane daemon serves its listener: a thread per connection, until told to stop.
pub struct ThreadPerConnection<'a> {
    /// Names the threads and the log lines ("tmanager", "metricsmgr-pub").
    pub role: &'static str,
    /// Connections served at once at most; more are turned away (a misbehaving peer cannot exhaust threads).
    pub max_connections: usize,
    /// How long the accept loop sleeps when nothing is pending: bounds the delay before a new connection is served
    /// and before `keep_serving` is asked again.
    pub poll: std::time::Duration,
    /// Asked between accepts; serving ends when it says false.
    pub keep_serving: &'a dyn Fn() -> bool,
    /// Every connection must answer this secret's challenge ([`auth`]) before it is served.
    pub secret: &'a auth::TopologySecret,
}

impl ThreadPerConnection<'_> {
    /// Serves `listener` until `keep_serving` says false, then calls `stopping` (so that connection errors the
    /// shutdown itself causes need not be logged), shuts every open connection down (which wakes its blocked
    /// thread) and joins the threads.
    pub fn run(
        &self,
        listener: &TcpListener,
        serve: impl Fn(TcpStream, std::net::SocketAddr) + Send + Sync + 'static,
        stopping: impl FnOnce(),
    ) -> io::Result<()> {
        /// Connections accepted per loop turn, so a flood of connections cannot delay the shutdown check.
        const ACCEPT_BURST: usize = 64;
        listener.set_nonblocking(true)?;
        let serve = Arc::new(serve);
        let mut conns: Vec<(TcpStream, std::thread::JoinHandle<()>)> = Vec::new();
        while (self.keep_serving)() {
            let mut accepted = false;
            for _ in 0..ACCEPT_BURST {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        accepted = true;
                        if let Err(e) = self.start(stream, peer, &serve, &mut conns) {
                            tracing::warn!(role = self.role, %peer, error = %e, "cannot serve a connection");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of descriptors, an aborted handshake...: the listener itself is fine; try again later.
                        tracing::warn!(role = self.role, error = %e, "accept failed");
                        break;
                    }
                }
            }
            // Join the threads of connections that ended, so their sockets and handles do not pile up.
            let mut i = 0;
            while i < conns.len() {
                if conns[i].1.is_finished() {
                    let _ = conns.swap_remove(i).1.join();
                } else {
                    i += 1;
                }
            }
            if !accepted {
                std::thread::sleep(self.poll);
            }
        }
        stopping();
        for (socket, _) in &conns {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        for (_, thread) in conns {
            let _ = thread.join();
        }
        Ok(())
    }

    fn start<F: Fn(TcpStream, std::net::SocketAddr) + Send + Sync + 'static>(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        serve: &Arc<F>,
        conns: &mut Vec<(TcpStream, std::thread::JoinHandle<()>)>,
    ) -> io::Result<()> {
        if conns.len() >= self.max_connections {
            return Err(io::Error::other(format!(
                "{} connections already served",
                self.max_connections
            )));
        }
        // Some platforms hand out accepted sockets in the listener's non-blocking mode.
        stream.set_nonblocking(false)?;
        let socket = stream.try_clone()?;
        let serve = Arc::clone(serve);
        let (secret, role) = (self.secret.clone(), self.role);
        let thread = std::thread::Builder::new()
            .name(format!("{}-{peer}", self.role))
            .spawn(move || {
                let mut stream = stream;
                match secret.accept(&mut stream) {
                    Ok(()) => serve(stream, peer),
                    Err(e) => tracing::warn!(role, %peer, error = %e, "connection refused"),
                }
            })?;
        conns.push((socket, thread));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_proto::egret::Heartbeat;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let c = control_frame(control::Msg::Heartbeat(Heartbeat { time_ms: 5 }));
        let d = data_frame(7, b"records");
        let mut bytes = &[c.clone(), d.clone()].concat()[..];
        assert_eq!(
            read_frame(&mut bytes, 1024).unwrap(),
            Frame::Control(control::Msg::Heartbeat(Heartbeat { time_ms: 5 }))
        );
        match read_frame(&mut bytes, 1024).unwrap() {
            Frame::Data { dest, raw } => {
                assert_eq!(dest, 7);
                assert_eq!(Frame::data_records(&raw), b"records");
                assert_eq!(raw, d);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_frame(&mut bytes, 1024), Err(FrameError::Closed)));
    }

    #[test]
    fn bad_frames_are_named() {
        let big = (2000u32).to_le_bytes();
        assert!(matches!(
            read_frame(&mut &big[..], 1024),
            Err(FrameError::TooLarge { len: 2000, max: 1024 })
        ));
        let unknown = [1, 0, 0, 0, 9];
        assert!(matches!(
            read_frame(&mut &unknown[..], 1024),
            Err(FrameError::UnknownKind(9))
        ));
        let short = [3, 0, 0, 0, KIND_DATA, 1, 2];
        assert!(matches!(
            read_frame(&mut &short[..], 1024),
            Err(FrameError::ShortData(7))
        ));
        let garbage = [3, 0, 0, 0, KIND_CONTROL, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &garbage[..], 1024),
            Err(FrameError::BadControl(_))
        ));
    }

    proptest! {
        /// Any prefix of a valid stream of frames reads the whole frames it contains, then a clean error.
        #[test]
        fn truncated_frames_give_a_clean_error(dest in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..200) {
            let stream = [
                control_frame(control::Msg::Heartbeat(Heartbeat { time_ms: 7 })),
                data_frame(dest, &body),
            ]
            .concat();
            let cut = cut.min(stream.len());
            let mut r = &stream[..cut];
            let mut whole = 0;
            loop {
                match read_frame(&mut r, 4096) {
                    Ok(_) => whole += 1,
                    Err(FrameError::Closed) | Err(FrameError::Io(_)) => break,
                    Err(other) => prop_assert!(false, "a prefix of valid frames gave {other}"),
                }
            }
            prop_assert!(whole <= 2);
            if cut == stream.len() {
                prop_assert_eq!(whole, 2);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut r = &bytes[..];
            for _ in 0..8 {
                if read_frame(&mut r, 4096).is_err() { break; }
            }
        }
    }
}
