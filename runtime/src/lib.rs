//! ztbridge host: receives Superna Zero Trust webhooks and delivers them
//! through WebAssembly-sandboxed transforms.
//!
//! # Layout
//!
//! A webhook travels through these modules, in this order:
//!
//! * [`server`]: the axum HTTP server (`POST /webhook`, `GET /healthz`,
//!   `GET /api/events/{receipt}`); [`server::run`] serves, [`server::router`]
//!   is the same service for in-process use. Handlers are thin: they call
//!   [`intake`] and hand the result to the [`dispatch`]er.
//! * [`auth`]: optional webhook authentication (bearer token or shared
//!   header, constant-time), a tower middleware on `/webhook`.
//! * [`intake`]: turns a request into an accepted event or a clear 4xx:
//!   content type, body size, gzip (sniffed, bounded while inflating), JSON.
//! * [`dispatch`]: admits accepted events into the [`store`] (committed
//!   before the 2xx) and runs each route's deliveries from it: scheduling
//!   in per-alert order, retries with back-off, dead letters,
//!   back-pressure.
//! * [`store`]: the durable event store (SQLite, group commit): events as
//!   received, per-route deliveries, every attempt.
//! * [`rate`]: per-destination delivery rate limits.
//! * [`route`]: one configured destination: its transform, resolved config,
//!   severity/state filter and egress policy.
//! * [`flow`]: drives one transform flow for one event: start, send the
//!   requested HTTP calls through a [`flow::Transport`], resume, until done.
//!   Used by the server and by the offline dry run (`transform run`).
//! * [`sandbox`]: one fresh wasmtime `Store` per flow with its limits (fuel,
//!   epoch deadline, memory cap) and the host imports (log, config, state).
//! * [`transform`]: a transform compiled once: its `Component`, reusable
//!   `InstancePre`, self-description and digest.
//! * [`cache`]: optional on-disk cache of compiled components (keyed by the
//!   wasm's sha256 and the engine's compatibility hash), used by
//!   [`transform::Transform::load_with_cache`].
//! * [`engine`]: the one wasmtime `Engine` (pooling allocator, fuel, epochs)
//!   and its single epoch ticker thread.
//! * [`bindings`]: host-side bindings generated from `wit/`.
//! * [`egress`]: the allow-list every outbound request is checked against.
//! * [`outbound`]: the reqwest (rustls) transport that performs requests.
//! * [`state`]: the per-route key/value state transforms keep (SQLite).
//! * [`redact`]: removes secret values from anything logged or shown.
//! * [`metrics`]: the Prometheus metrics `GET /metrics` exports.
//! * [`notify`]: systemd readiness, watchdog and stopping notifications.
//! * [`config`]: the TOML configuration and its validation.
//! * [`app`]: builds the running service from a configuration.
//! * [`time`]: RFC 3339 timestamps without a date crate.

pub mod app;
pub mod auth;
pub mod bindings;
pub mod cache;
pub mod config;
pub mod dispatch;
pub mod egress;
pub mod engine;
pub mod flow;
pub mod intake;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod rate;
pub mod redact;
pub mod route;
pub mod sandbox;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod time;
pub mod transform;

/// Built-in transforms: name -> component bytes (embedded by the binary).
pub type Builtins = std::collections::BTreeMap<String, std::sync::Arc<[u8]>>;
