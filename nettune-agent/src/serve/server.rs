//! The agent's HTTP endpoints: `/metrics` (Prometheus text), `/api/v1/snapshot`
//! (the latest Snapshot and tuner state as versioned JSON), `/healthz` (the
//! collection loop is alive) and `/readyz` (a first Snapshot has been published).
//!
//! Each published Snapshot is rendered at most once per endpoint, into [`Bytes`]
//! that every later request shares, and only when first asked for: ticks come
//! every second, scrapes every 15 or 30 s, so rendering every tick cost more
//! than all the scrapes (the profile at 200 namespaces). A request never waits
//! for a collection, and a render runs off the async workers.
//!
//! The agent runs on every node, on the host network: [`serve`] bounds what a
//! client can hold — at most [`MAX_CONNECTIONS`] connections, and
//! [`MAX_CONNECTIONS_PER_CLIENT`] from one client (more are closed at once, so
//! one client's idle connections cannot starve the kubelet's `/healthz`),
//! [`HEADER_TIMEOUT`] to send a request, [`CONNECTION_TIMEOUT`] for the
//! whole exchange, one request per connection — and [`Endpoints::Metrics`]
//! keeps the JSON API (pod names, processes, ports, tuning decisions) off the
//! public address.

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
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};

use super::metrics::Exporter;
use crate::model::snapshot::{Folding, Published};

/// One published tick, and its renderings once asked for.
struct Rendered {
    published: Arc<Published>,
    metrics: std::sync::OnceLock<Bytes>,
    json: std::sync::OnceLock<Bytes>,
}

/// What the endpoints serve, shared between the collection loop (which
/// publishes) and the request handlers (which read).
pub struct ServerState {
    rendered: RwLock<Option<Arc<Rendered>>>,
    last_tick: Mutex<Option<Instant>>,
    exporter: Exporter,
    max_pod_series: usize,
    /// Which pods have their own series, kept from tick to tick.
    folding: Mutex<Folding>,
    /// `/healthz` fails when no collection happened for this long.
    stale_after: Duration,
    /// Renderings done so far (both endpoints).
    renders: std::sync::atomic::AtomicU64,
}

impl ServerState {
    /// State for an agent collecting every `interval`, exporting at most
    /// `max_pod_series` pods' own series.
    pub fn new(max_pod_series: usize, interval: Duration) -> Self {
        Self {
            rendered: RwLock::new(None),
            last_tick: Mutex::new(None),
            exporter: Exporter::new(),
            max_pod_series,
            folding: Mutex::new(Folding::default()),
            stale_after: interval * 3 + Duration::from_secs(5),
            renders: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes `published` the tick every endpoint serves (rendered when first
    /// asked for).
    pub fn publish(&self, mut published: Published) {
        match self.folding.lock() {
            Ok(mut folding) => published
                .snapshot
                .fold_stable(self.max_pod_series, &mut folding),
            Err(_) => published.snapshot.fold(self.max_pod_series),
        }
        let rendered = Arc::new(Rendered {
            published: Arc::new(published),
            metrics: std::sync::OnceLock::new(),
            json: std::sync::OnceLock::new(),
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

    fn count_render(&self) {
        self.renders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Renderings done so far, of either endpoint.
    pub fn renders(&self) -> u64 {
        self.renders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latest tick's `/metrics` text, rendered if no one asked before.
    pub fn metrics_text(&self) -> Option<Bytes> {
        let r = self.rendered_latest()?;
        Some(
            r.metrics
                .get_or_init(|| {
                    self.count_render();
                    self.exporter.render(&r.published)
                })
                .clone(),
        )
    }

    /// The latest tick's JSON, serialized if no one asked before: at most
    /// `max_pod_series` pods, like `/metrics`.
    pub fn snapshot_json(&self) -> Option<Bytes> {
        let r = self.rendered_latest()?;
        Some(
            r.json
                .get_or_init(|| {
                    self.count_render();
                    let p = &r.published;
                    let served = Published {
                        snapshot: p.snapshot.clone().without_folded(),
                        tuning: p.tuning.clone(),
                        mode_demoted: p.mode_demoted,
                        kernel_log_records: p.kernel_log_records,
                        run_netns_unpropagated: p.run_netns_unpropagated,
                        event_collections_suppressed: p.event_collections_suppressed,
                        events_received: p.events_received,
                    };
                    serde_json::to_vec(&served)
                        .map(Bytes::from)
                        .unwrap_or_else(|e| Bytes::from(format!("{{\"error\":\"{e}\"}}")))
                })
                .clone(),
        )
    }
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// `/metrics`, `/healthz`, `/readyz`: what Prometheus and the kubelet need,
    /// safe on a public address.
    Metrics,
    /// Those and the JSON API.
    All,
}

/// The router for `state`.
pub fn router(state: Arc<ServerState>, endpoints: Endpoints) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    match endpoints {
        Endpoints::Metrics => router,
        Endpoints::All => router.route("/api/v1/snapshot", get(snapshot)),
    }
    .with_state(state)
}

/// Most connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Most connections one client (an IPv4 address, an IPv6 /64) holds at once;
/// more are closed at once, so one client cannot take the others' room (the
/// kubelet's probes, Prometheus' scrapes).
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 8;
/// Time a client has to send its request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one connection (one request) may take in all.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Who a connection counts against: its IPv4 address, or the /64 of its IPv6
/// address (one host usually holds a whole /64, so counting single IPv6
/// addresses would not bound it).
fn client_of(peer: std::net::SocketAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Connections held per client.
#[derive(Default)]
struct Clients(Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One admitted connection of `client`: counted until dropped.
struct Held {
    clients: Arc<Clients>,
    client: std::net::IpAddr,
}

impl Clients {
    /// Counts a connection of `client`, unless it holds its share already.
    fn admit(self: &Arc<Self>, client: std::net::IpAddr) -> Option<Held> {
        let mut held = self.0.lock().ok()?;
        let n = held.entry(client).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Held {
            clients: self.clone(),
            client,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut held) = self.clients.0.lock()
            && let Some(n) = held.get_mut(&self.client)
        {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Serves `router` on `listener` until `stop` changes: one request per
/// connection, bounded in number (in all and per client) and time.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(Clients::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    log::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Beyond either limit the connection is closed before anything is read.
        let Some(held) = clients.admit(client_of(peer)) else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop((permit, held));
        });
    }
}

fn not_yet() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "no collection yet\n").into_response()
}

/// `render` on a blocking thread (a large node's render takes milliseconds),
/// served with `content_type`.
async fn rendered(
    state: Arc<ServerState>,
    content_type: &'static str,
    render: fn(&ServerState) -> Option<Bytes>,
) -> Response {
    match tokio::task::spawn_blocking(move || render(&state)).await {
        Ok(Some(body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Ok(None) => not_yet(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    rendered(
        state,
        "text/plain; version=0.0.4; charset=utf-8",
        ServerState::metrics_text,
    )
    .await
}

async fn snapshot(State(state): State<Arc<ServerState>>) -> Response {
    rendered(state, "application/json", ServerState::snapshot_json).await
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

/// Helpers for tests that need a live server.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;

    use super::*;
    use crate::serve::client;

    /// Serves `state` on a loopback port from a runtime on its own thread.
    pub(crate) fn serving(
        state: Arc<ServerState>,
        endpoints: Endpoints,
    ) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    serve(listener, router(state, endpoints), stop_rx).await;
                });
        });
        (addr, stop)
    }

    /// `n` connections to `addr` from the local address `from` (any of
    /// 127.0.0.0/8 is this host's), each having sent `sent`.
    pub(crate) fn connections_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
        n: usize,
        sent: &[u8],
    ) -> Vec<std::net::TcpStream> {
        use std::io::Write as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (0..n)
            .map(|_| {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(from, 0)).unwrap();
                let stream = runtime
                    .block_on(socket.connect(addr))
                    .unwrap()
                    .into_std()
                    .unwrap();
                stream.set_nonblocking(false).unwrap();
                // A connection the server closed already may refuse this.
                let _ = (&stream).write_all(sent);
                stream
            })
            .collect()
    }

    pub(crate) fn get(addr: SocketAddr, path: &str) -> u16 {
        client::get_raw_blocking(addr, path, Duration::from_secs(5), 1 << 20)
            .map_or(0, |(status, _)| status)
    }
}

#[cfg(test)]
mod tests;
