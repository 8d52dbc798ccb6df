//! The HTTP side: `GET /metrics` for Prometheus, served with axum (as the tracker is) on a single-threaded tokio
//! runtime of its own thread, so the rest of the manager stays plain std threads.
//!
//! Rendering takes the snapshot's lock for a copy and renders outside it, so a scrape never holds up publishers for
//! longer than a clone. Scrapes in progress when the manager stops are cut off with the runtime; a scraper retries.

use std::future::IntoFuture;
use std::net::TcpListener;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::oneshot;

use crate::server::Shared;

/// The content type of the text exposition format Prometheus negotiates for (version 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `GET /metrics` (HEAD too, as axum serves it for GET routes); any other method there is 405 with `Allow`, any
/// other path 404.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], shared.render()) }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n").into_response() })
}

/// Serves `/metrics` on `listener` until `stop` fires (or its sender is dropped). Blocks; run it on its own thread.
pub fn serve(listener: TcpListener, shared: Arc<Shared>, stop: oneshot::Receiver<()>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let listener = runtime.block_on(async { tokio::net::TcpListener::from_std(listener) })?;
    // axum's server only returns on a fatal error, which it has none of (it retries failed accepts): it runs until
    // the runtime is dropped.
    runtime.spawn(axum::serve(listener, router(shared)).into_future());
    // A dropped sender means the manager's `serve` has gone: stop either way.
    let _ = runtime.block_on(stop);
    // Dropping the runtime ends the server and the connection tasks still running.
    Ok(())
}
