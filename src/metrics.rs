//! `--metrics ADDR`: the node's Prometheus series on `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use natsfn_actors::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` (failing at start-up, not later, if it is taken) and serves until the
/// returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<tokio::task::AbortHandle> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics {addr}: cannot listen"))?;
    let app = Router::new().route(
        "/metrics",
        get(move || async move { ([(CONTENT_TYPE, OPENMETRICS)], metrics.encode()) }),
    );
    tracing::info!(%addr, "serving /metrics");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(task.abort_handle())
}
