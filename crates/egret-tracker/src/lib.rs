//! Egret's tracker: Heron's Tracker for Egret. A long-running HTTP service that answers JSON about the topologies
//! of the local cluster, read from the state manager and, for metrics and back pressure, scraped on each request
//! from the topologies' metrics managers. Every route is under `/api/v1` and described by the OpenAPI 3 document
//! at `/api/v1/openapi.json`. Errors are `{"error": "..."}` with 404 for an unknown cluster, topology or process,
//! 400 for a bad query, 502 when no metrics manager answers and 500 when the state manager fails.
//!
//! The explain data ([`explain`]) lives here too: `egret explain --json` prints the same thing the tracker serves.

mod api;
mod error;
pub mod explain;
pub mod logs;
pub mod prometheus;
mod tmanager;
mod ui;

use std::path::PathBuf;

pub use api::router;
pub use error::TrackerError;

/// What the tracker serves.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `$EGRET_HOME`: the state manager, and the logs, of the `local` cluster live under it.
    pub egret_home: PathBuf,
}

/// Serves the tracker on `listener` until the process ends (or the listener fails).
pub async fn serve(opts: Opts, listener: tokio::net::TcpListener) -> Result<(), TrackerError> {
    axum::serve(listener, router(opts)).await.map_err(TrackerError::Serve)
}
