//! The publisher side: what instances and daemons use to send their totals to their container's metrics manager.

use std::io::Write;
use std::net::TcpStream;

use egret_proto::egret::{PublishMetrics, control};
use egret_transport::auth::TopologySecret;

/// Sends `PublishMetrics` frames, (re)connecting to wherever `locate` says the manager is (proving the topology's
/// secret on each connection).
pub struct MetricsClient {
    secret: TopologySecret,
    locate: Box<dyn Fn() -> Option<(String, u16)> + Send>,
    conn: Option<TcpStream>,
}

impl MetricsClient {
    pub fn new(secret: TopologySecret, locate: impl Fn() -> Option<(String, u16)> + Send + 'static) -> Self {
        MetricsClient {
            secret,
            locate: Box::new(locate),
            conn: None,
        }
    }

    /// Publishes one message; returns whether it was sent. A failure drops the connection, and the next call
    /// connects again (the manager may have been restarted on another port). Totals are resent every time, so a
    /// lost message loses nothing.
    pub fn publish(&mut self, message: PublishMetrics) -> bool {
        if self.conn.is_none() {
            self.conn = (self.locate)().and_then(|(host, port)| self.secret.connect_to(&host, port).ok());
        }
        let Some(stream) = self.conn.as_mut() else { return false };
        let frame = egret_transport::control_frame(control::Msg::PublishMetrics(message));
        if stream.write_all(&frame).is_err() {
            self.conn = None;
            return false;
        }
        true
    }
}
