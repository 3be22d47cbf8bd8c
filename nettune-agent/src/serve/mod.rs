//! Serving what the agent sees: Prometheus metrics and the JSON API over HTTP, and
//! the client `nettune top` uses to read a running agent.
//!
//! - [`metrics`]: every metric declared once, and the `prometheus` collector
//!   that renders a published Snapshot;
//! - [`server`]: the HTTP endpoints (`/metrics`, `/api/v1/snapshot`, `/healthz`,
//!   `/readyz`), serving bytes rendered once per Snapshot;
//! - [`client`]: a bounded HTTP GET for `nettune top --agent`.

pub mod client;
pub mod metrics;
pub mod server;
