//! ztbridge host: receives Superna Zero Trust webhooks and delivers them
//! through WebAssembly-sandboxed transforms.
//!
//! # Layout
//!
//! The folders follow the path of one event, in this order:
//!
//! * [`http`]: the router; webhook intake (limits, gzip, auth) turns a
//!   request into an accepted event or a clear 4xx; the read API; probes.
//! * [`delivery`]: admits accepted events into the store (durable before
//!   the 2xx) and runs each route's deliveries from it: the scheduler, one
//!   attempt, the retry policy, rate limits, back-pressure, housekeeping.
//! * [`store`]: the [`store::Store`] interface and its backends (`sqlite`,
//!   embedded; `postgres`, shared by several nodes): events as received,
//!   deliveries, attempts, transform state, rate state.
//! * [`flow`]: the multi-step transform flow for one event on one
//!   [`flow::Route`]: start, send the requested HTTP calls, resume, until
//!   done.  Used by delivery and by the offline dry run.
//! * [`sandbox`]: the wasmtime engine, compiled transforms (and their
//!   on-disk cache), a fresh instance per flow with its limits, the host
//!   imports, the WIT bindings.
//! * [`egress`]: the allow-list every request is checked against and the
//!   HTTP client that performs it.
//!
//! Beside the path:
//!
//! * [`trust`]: signed transforms and the policy that loads them.
//! * [`ops`]: Prometheus metrics and systemd notifications.
//! * [`config`]: the TOML configuration and its validation.
//! * [`console`]: the operator's console in the browser (`[admin]`): pages,
//!   the JSON API behind them, login and CSRF, on its own listener.
//! * [`app`]: builds the running service from a configuration (the only
//!   module that may import all others).
//! * [`time`] and [`text`]: timestamps; excerpts, display IDs, redaction,
//!   control characters escaped.
//! * [`files`]: the data directory private (0700, files 0600) whatever
//!   the umask.
//! * `fuzzing`: entry points for the fuzz targets in `fuzz/` (not an API).
//!
//! Each folder's `mod.rs` says what it may import; `tests/module_graph.rs`
//! checks that no two modules import each other, directly or not.

pub mod app;
pub mod config;
pub mod console;
pub mod delivery;
pub mod egress;
pub mod files;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ops;
pub mod sandbox;
pub mod store;
pub mod text;
pub mod time;
pub mod trust;

/// Built-in transforms: name -> component bytes (embedded by the binary).
pub type Builtins = std::collections::BTreeMap<String, std::sync::Arc<[u8]>>;
