//! The agent's HTTP endpoints: `/metrics` (Prometheus text), `/api/v1/snapshot`
//! (the latest Snapshot and tuner state as versioned JSON), `/healthz` (the
//! collection loop is alive) and `/readyz` (a first Snapshot has been published).
//!
//! Each published Snapshot is rendered once, into [`Bytes`] for `/metrics` and
//! for the JSON API, which every request then shares: serving never renders,
//! serializes or clones a Snapshot.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;

use super::exporter::Exporter;
use crate::model::snapshot::Published;

/// One published tick, rendered for every endpoint.
struct Rendered {
    published: Arc<Published>,
    metrics: Bytes,
    json: Bytes,
}

/// What the endpoints serve, shared between the collection loop (which
/// publishes) and the request handlers (which read).
pub struct ServerState {
    rendered: RwLock<Option<Arc<Rendered>>>,
    last_tick: Mutex<Option<Instant>>,
    exporter: Exporter,
    /// `/healthz` fails when no collection happened for this long.
    stale_after: Duration,
}

impl ServerState {
    /// State for an agent collecting every `interval`, exporting at most
    /// `max_pod_series` pods' own series.
    pub fn new(max_pod_series: usize, interval: Duration) -> Self {
        Self {
            rendered: RwLock::new(None),
            last_tick: Mutex::new(None),
            exporter: Exporter::new(max_pod_series),
            stale_after: interval * 3 + Duration::from_secs(5),
        }
    }

    /// Renders `published` for every endpoint and makes it the one they serve.
    pub fn publish(&self, published: Published) {
        let published = Arc::new(published);
        let json = serde_json::to_vec(published.as_ref())
            .map(Bytes::from)
            .unwrap_or_else(|e| Bytes::from(format!("{{\"error\":\"{e}\"}}")));
        let rendered = Arc::new(Rendered {
            metrics: self.exporter.render(published.clone()),
            json,
            published,
        });
        if let Ok(mut r) = self.rendered.write() {
            *r = Some(rendered);
        }
        if let Ok(mut t) = self.last_tick.lock() {
            *t = Some(Instant::now());
        }
    }

    /// The latest published tick, if any.
    pub fn latest(&self) -> Option<Arc<Published>> {
        self.rendered_latest().map(|r| r.published.clone())
    }

    fn rendered_latest(&self) -> Option<Arc<Rendered>> {
        self.rendered.read().ok().and_then(|r| r.clone())
    }
}

/// The router for `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn not_yet() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "no collection yet\n").into_response()
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    match state.rendered_latest() {
        Some(r) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            r.metrics.clone(),
        )
            .into_response(),
        None => not_yet(),
    }
}

async fn snapshot(State(state): State<Arc<ServerState>>) -> Response {
    match state.rendered_latest() {
        Some(r) => ([(header::CONTENT_TYPE, "application/json")], r.json.clone()).into_response(),
        None => not_yet(),
    }
}

async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let last = state.last_tick.lock().ok().and_then(|t| *t);
    match last {
        Some(t) if t.elapsed() <= state.stale_after => (StatusCode::OK, "ok\n").into_response(),
        Some(t) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no collection for {:.0}s\n", t.elapsed().as_secs_f64()),
        )
            .into_response(),
        // Starting up: alive, not yet ready.
        None => (StatusCode::OK, "starting\n").into_response(),
    }
}

async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    match state.rendered_latest() {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => not_yet(),
    }
}
