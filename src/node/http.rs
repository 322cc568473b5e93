//! The agent's HTTP endpoints: `/healthz` (the loop turns), `/readyz` (see
//! [`crate::node::health`]) and `/metrics` (Prometheus, OpenMetrics text), on a listener
//! that caps connections and closes silent or slow ones ([`super::guard`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::guard::{GuardedListener, Limits};
use super::shared::Shared;
use crate::node::health::{liveness, readiness};

/// Binds `addr`; fails at start-up when the address is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics-addr {addr}: cannot listen"))
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    axum::serve(GuardedListener::new(listener, Limits::default()), app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("HTTP server")
}

async fn healthz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let last = s.lock().last_turn;
    match liveness(last, Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let health = s.lock().health.clone();
    match readiness(&health) {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", why.join("\n")),
        ),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.scrape().await,
    )
}
