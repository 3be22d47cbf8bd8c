//! The agent's HTTP endpoints: `/metrics` (Prometheus text), `/api/v1/snapshot`
//! (the latest Snapshot as versioned JSON), `/healthz` (the collection loop is
//! alive) and `/readyz` (probes attached and a first Snapshot published).

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{exporter, snapshot::Snapshot};

/// What the endpoints serve, shared with the collection loop.
pub struct Shared {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    last_tick: Mutex<Option<Instant>>,
    max_pod_series: usize,
    /// `/healthz` fails when no collection happened for this long.
    stale_after: Duration,
}

impl Shared {
    pub fn new(max_pod_series: usize, interval: Duration) -> Self {
        Self {
            snapshot: RwLock::new(None),
            last_tick: Mutex::new(None),
            max_pod_series,
            stale_after: interval * 3 + Duration::from_secs(5),
        }
    }

    /// Makes `snapshot` the one every endpoint serves.
    pub fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut s) = self.snapshot.write() {
            *s = Some(Arc::new(snapshot));
        }
        if let Ok(mut t) = self.last_tick.lock() {
            *t = Some(Instant::now());
        }
    }

    /// The latest Snapshot, if any.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().ok().and_then(|s| s.clone())
    }
}

/// The router for `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

fn not_yet() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "no collection yet\n").into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(s) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            exporter::render(&s, shared.max_pod_series),
        )
            .into_response(),
        None => not_yet(),
    }
}

async fn snapshot(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(s) => Json(s.as_ref().clone()).into_response(),
        None => not_yet(),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let last = shared.last_tick.lock().ok().and_then(|t| *t);
    match last {
        Some(t) if t.elapsed() <= shared.stale_after => (StatusCode::OK, "ok\n").into_response(),
        Some(t) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no collection for {:.0}s\n", t.elapsed().as_secs_f64()),
        )
            .into_response(),
        // Starting up: alive, not yet ready.
        None => (StatusCode::OK, "starting\n").into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => not_yet(),
    }
}
