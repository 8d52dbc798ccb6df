//! Asking a topology's tmanager for its time series and exception summaries: one `MetricsQuery` control frame on
//! a fresh connection, answered by one `MetricsQueryResponse` (or a `Status` refusal).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use egret_proto::egret::{MetricsQuery, MetricsQueryResponse, control};
use egret_statemgr::StateManager;
use egret_transport::Frame;

use crate::TrackerError;

/// A tmanager that takes longer than this is treated as unreachable, so one stuck tmanager cannot hold a request.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// An hour of every series of a large topology fits well within this; a bigger frame is not a tmanager's answer.
const MAX_RESPONSE_FRAME: usize = 64 << 20;

/// Sends `q` (with the topology's id, so a stale location pointing at another topology's tmanager is refused) to
/// the tmanager the state manager locates for `topology`.
pub fn query(
    state: &dyn StateManager,
    secret: &egret_transport::auth::TopologySecret,
    topology: &str,
    mut q: MetricsQuery,
) -> Result<MetricsQueryResponse, TrackerError> {
    let unreachable = |reason: String| TrackerError::Tmanager {
        topology: topology.to_string(),
        reason,
    };
    if let Some(definition) = state.get_topology(topology)? {
        q.topology_id = definition.id;
    }
    let location = state
        .locations(topology)?
        .into_iter()
        .find(|l| l.process == "tmanager")
        .ok_or_else(|| unreachable("the state manager has no location for it yet (still starting?)".into()))?;
    let addr = format!("{}:{}", location.host, location.port);
    let port =
        u16::try_from(location.port).map_err(|_| unreachable(format!("its port {} is out of range", location.port)))?;
    let sock: SocketAddr = (location.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| unreachable(format!("cannot resolve {addr}")))?;
    let io = |e: std::io::Error| unreachable(format!("{addr}: {e}"));
    let mut stream = TcpStream::connect_timeout(&sock, QUERY_TIMEOUT).map_err(io)?;
    secret
        .connect(&mut stream)
        .map_err(|e| unreachable(format!("{addr}: {e}")))?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(QUERY_TIMEOUT)).map_err(io)?;
    let (mut reader, mut writer) = egret_transport::split(stream, MAX_RESPONSE_FRAME).map_err(io)?;
    writer.send_control(control::Msg::MetricsQuery(q)).map_err(io)?;
    match reader.read() {
        Ok(Frame::Control(control::Msg::MetricsQueryResponse(r))) => Ok(r),
        Ok(Frame::Control(control::Msg::Status(s))) => Err(unreachable(format!("{addr} refused: {}", s.message))),
        Ok(other) => {
            // Peer data: name the frame without echoing what may be megabytes of it.
            let mut what = format!("{other:?}");
            what.truncate(what.floor_char_boundary(120));
            Err(unreachable(format!("{addr} answered with an unexpected frame {what}")))
        }
        Err(e) => Err(unreachable(format!("{addr}: {e}"))),
    }
}
