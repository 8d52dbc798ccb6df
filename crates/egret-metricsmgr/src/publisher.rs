//! One publisher connection: a stream of CONTROL frames carrying `PublishMetrics`, applied as they arrive.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;

use egret_proto::egret::control;
use egret_transport::{Frame, FrameError, read_frame};

use crate::server::Shared;

/// Largest frame a publisher may send. A task's totals are a few dozen values; a megabyte is far beyond any
/// honest publisher and small enough that a bad length never costs real memory.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Why a publisher's connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("expected a CONTROL frame with PublishMetrics, got {0}")]
    Unexpected(String),
}

impl PublisherError {
    /// Whether the peer sent something it should not have (counted as a rejected frame), as opposed to the
    /// connection failing underneath it.
    fn is_rejection(&self) -> bool {
        !matches!(self, PublisherError::Frame(FrameError::Closed | FrameError::Io(_)))
    }
}

/// Names a frame that is not `PublishMetrics` without dumping its contents into the log.
fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Data { dest, raw } => format!("a DATA frame of {} bytes for task {dest}", raw.len()),
        Frame::Control(msg) => {
            let debug = format!("{msg:?}");
            let variant = debug.split(['(', ' ', '{']).next().unwrap_or("");
            format!("CONTROL {variant}")
        }
    }
}

/// Reads frames until the peer leaves or misbehaves. Returns `Ok` on a clean close.
fn read_loop(stream: TcpStream, shared: &Shared) -> Result<(), PublisherError> {
    let mut reader = BufReader::new(stream);
    loop {
        match read_frame(&mut reader, MAX_FRAME) {
            Ok(Frame::Control(control::Msg::PublishMetrics(msg))) => shared.apply(msg),
            Ok(other) => return Err(PublisherError::Unexpected(describe(&other))),
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serves one publisher until it disconnects, sends a bad frame, or the manager shuts its socket down. The values
/// it published stay.
pub fn serve_publisher(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    if let Err(e) = read_loop(stream, shared) {
        if e.is_rejection() {
            shared.frames_rejected.fetch_add(1, Relaxed);
            tracing::warn!(%peer, error = %e, "refused a frame from a publisher; dropping the connection");
        } else if !shared.shutdown.load(Relaxed) {
            tracing::warn!(%peer, error = %e, "publisher connection lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_proto::egret::Heartbeat;

    #[test]
    fn unexpected_frames_are_named_briefly() {
        let hb = Frame::Control(control::Msg::Heartbeat(Heartbeat { time_ms: 5 }));
        assert_eq!(describe(&hb), "CONTROL Heartbeat");
        let data = Frame::Data {
            dest: 4,
            raw: egret_transport::data_frame(4, b"xyz"),
        };
        assert_eq!(describe(&data), "a DATA frame of 12 bytes for task 4");
    }

    #[test]
    fn closes_are_not_rejections() {
        assert!(!PublisherError::Frame(FrameError::Closed).is_rejection());
        assert!(!PublisherError::Frame(FrameError::Io(std::io::Error::other("reset"))).is_rejection());
        assert!(PublisherError::Frame(FrameError::UnknownKind(9)).is_rejection());
        assert!(PublisherError::Unexpected("x".into()).is_rejection());
    }
}
