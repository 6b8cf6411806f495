//! The host side of the `ztbridge:transform/host` imports (log, config,
//! state, event fields) and of WASI, as one flow's store data:
//! [`HostState`].
//!
//! WASI is linked with nothing granted: no preopened directories, no
//! environment, no arguments, no network (the sockets interfaces exist but
//! every address is denied).  Guest stdout/stderr are captured (bounded) and
//! logged under the route's name.  No ambient time or randomness: the wall
//! clock reads the event's receive time, the monotonic clock stands still,
//! and random bytes are a stream seeded from the receipt ID (given only to
//! a transform that declares `needs-random`; see `load.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::types::{self, Field, LogLevel};
use super::bindings::ztbridge;
use crate::store::{MAX_KEY_BYTES, MAX_VALUE_BYTES, TransformState};
use crate::text::{Redactor, escape_controls};

/// Log lines kept per flow (more are counted, not kept).
const MAX_LOG_LINES: usize = 200;

/// A log line a transform wrote (through `host.log` or stdout/stderr).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestLog {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub(crate) level: &'static str,
    /// The line, secrets redacted.
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) fields: Vec<(String, String)>,
}

/// What the host imports see of the route and the event.
pub struct FlowContext {
    /// Route name: the log target of everything the guest says.
    pub route: Arc<str>,
    /// Resolved config values (route values over the transform's defaults).
    pub config: Arc<BTreeMap<String, String>>,
    /// Durable state behind `state-get`.
    pub(crate) state: Arc<dyn TransformState>,
    /// Secret values to strip from guest logs.
    pub(crate) redactor: Arc<Redactor>,
    /// Writes made during the current step, committed by the flow driver
    /// after the step returns; reads see them first.
    pub(super) pending: BTreeMap<String, Option<String>>,
    /// A state read failure or a limit breach; fails the flow after the
    /// step (the guest cannot handle it meaningfully).
    pub(crate) state_error: Option<(bool, String)>,
    /// Lines logged so far (bounded) and how many were dropped.
    pub(super) logs: Vec<GuestLog>,
    /// Lines past the bound, counted only.
    pub(super) dropped_logs: usize,
    /// The event the flow runs for: what `event-field`, the clocks and the
    /// random bytes are derived from.
    pub(super) event: FlowEvent,
    /// Whether the transform declared `needs-random` (set by the sandbox).
    pub(super) needs_random: bool,
    /// The random stream a `needs-random` transform reads, made on first use.
    pub(super) rng: Option<StdRng>,
}

/// What a flow knows of its event besides the record it hands the guest.
#[derive(Default)]
pub(crate) struct FlowEvent {
    /// The JSON text as received (`event-field` reads it).
    raw: Arc<str>,
    /// `raw` as a tree, built on the first `event-field` call.
    value: OnceLock<Option<serde_json::Value>>,
    /// The receive time, ms since the epoch: the wall clock's only reading.
    pub(super) received_ms: i64,
    /// SHA-256 of the receipt ID: the seed of every random stream.
    pub(super) seed: [u8; 32],
}

impl FlowEvent {
    /// A value by dotted path (`a.b.0.c`): strings as they are, other
    /// values as compact JSON.
    fn field(&self, path: &str) -> Option<String> {
        let root = self
            .value
            .get_or_init(|| serde_json::from_str(&self.raw).ok())
            .as_ref()?;
        let mut v = root;
        for part in path.split('.') {
            v = match v {
                serde_json::Value::Object(m) => m.get(part)?,
                serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// A random stream seeded from the receipt ID; `salt` separates the
    /// streams WASI hands out.
    pub(super) fn rng(&self, salt: u8) -> StdRng {
        let mut seed = self.seed;
        seed[0] ^= salt;
        StdRng::from_seed(seed)
    }
}

/// The wall clock of a flow: the event's receive time, always.
struct EventClock(i64);

impl wasmtime_wasi::HostWallClock for EventClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.max(0) as u64)
    }
}

/// The monotonic clock of a flow: it does not move.
struct StillClock;

impl wasmtime_wasi::HostMonotonicClock for StillClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

impl FlowContext {
    pub fn new(
        route: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        state: Arc<dyn TransformState>,
        redactor: Arc<Redactor>,
    ) -> FlowContext {
        FlowContext {
            route,
            config,
            state,
            redactor,
            pending: BTreeMap::new(),
            state_error: None,
            logs: Vec::new(),
            dropped_logs: 0,
            event: FlowEvent::default(),
            needs_random: false,
            rng: None,
        }
    }

    /// For a flow of `event`: `event-field` reads it, the wall clock reads
    /// its receive time and random streams are seeded from its receipt ID.
    pub fn for_event(mut self, event: &types::Event) -> FlowContext {
        self.event = FlowEvent {
            raw: Arc::from(event.raw.as_str()),
            value: OnceLock::new(),
            received_ms: crate::time::parse_rfc3339_millis(&event.received_at).unwrap_or(0),
            seed: Sha256::digest(event.receipt_id.as_bytes()).into(),
        };
        self
    }

    pub(super) fn push_log(
        &mut self,
        level: &'static str,
        message: &str,
        fields: Vec<(String, String)>,
    ) {
        let message = self.redactor.apply(message);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (self.redactor.apply(&k), self.redactor.apply(&v)))
            .collect();
        let route = &*self.route;
        // The line is the transform's text: control characters escaped so
        // that it stays one log line (kept as written in the report).
        let shown = escape_controls(&message);
        let rendered: String = fields
            .iter()
            .map(|(k, v)| format!(" {}={v:?}", escape_controls(k)))
            .collect();
        match level {
            "error" => tracing::error!(target: "transform", route, "{shown}{rendered}"),
            "warn" => tracing::warn!(target: "transform", route, "{shown}{rendered}"),
            "info" => tracing::info!(target: "transform", route, "{shown}{rendered}"),
            "debug" => tracing::debug!(target: "transform", route, "{shown}{rendered}"),
            _ => tracing::trace!(target: "transform", route, "{shown}{rendered}"),
        }
        if self.logs.len() < MAX_LOG_LINES {
            self.logs.push(GuestLog {
                level,
                message,
                fields,
            });
        } else {
            self.dropped_logs += 1;
        }
    }
}

/// Caps linear memory and table growth, and remembers that it refused.
pub(super) struct Limiter {
    /// Bytes of linear memory an instance may have.
    pub(super) memory_bytes: usize,
    /// Set when a grow was refused, so the trap is reported as a memory
    /// limit rather than a bare trap.
    pub(super) hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.memory_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The store's data.
pub(crate) struct HostState {
    /// WASI with nothing granted, made on the guest's first WASI call (most
    /// flows make none; building one costs ~0.3 µs, 5% of the per-event
    /// floor).
    pub(super) wasi: Option<WasiCtx>,
    /// Guest stdout and stderr (bounded), made with `wasi`; the sandbox
    /// reads them back after each call.
    pub(super) output: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    /// Bytes each of stdout and stderr may hold.
    pub(super) output_limit: usize,
    /// WASI resources (streams).
    pub(super) table: ResourceTable,
    /// Memory cap.
    pub(super) limiter: Limiter,
    /// When the running call must end: at each epoch tick the guest
    /// yields to the executor, and past this instant it is stopped.
    pub(super) deadline: std::time::Instant,
    /// Route, config, state and logs.
    pub(crate) ctx: FlowContext,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (output, limit) = (&mut self.output, self.output_limit);
        let ev = &self.ctx.event;
        let ctx_event = (
            ev.received_ms,
            ev.rng(1),
            ev.rng(2),
            u128::from_le_bytes(ev.seed[..16].try_into().unwrap_or_default()),
        );
        let ctx = self.wasi.get_or_insert_with(|| {
            let (stdout, stderr) = output.get_or_insert_with(|| {
                (MemoryOutputPipe::new(limit), MemoryOutputPipe::new(limit))
            });
            let event = ctx_event;
            WasiCtxBuilder::new()
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .wall_clock(EventClock(event.0))
                .monotonic_clock(StillClock)
                .secure_random(event.1)
                .insecure_random(event.2)
                .insecure_random_seed(event.3)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl ztbridge::transform::types::Host for HostState {}

impl ztbridge::transform::host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String, fields: Vec<Field>) {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        let message: String = message.chars().take(4096).collect();
        let fields = fields
            .into_iter()
            .take(32)
            .map(|f| {
                (
                    f.key.chars().take(64).collect(),
                    f.value.chars().take(1024).collect(),
                )
            })
            .collect();
        self.ctx.push_log(level, &message, fields);
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }

    /// The store may block (PostgreSQL waits on the network): the read
    /// runs on the blocking pool, and the guest's fiber waits for it
    /// without holding a runtime worker.  Outside a runtime (a sync caller
    /// of the sandbox) it runs in place.
    async fn state_get(&mut self, key: String) -> Option<String> {
        if let Some(v) = self.ctx.pending.get(&key) {
            return v.clone();
        }
        let (state, route) = (self.ctx.state.clone(), self.ctx.route.clone());
        let read = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(move || state.get(&route, &key))
                .await
                .unwrap_or_else(|e| {
                    let message = format!("the state read did not finish: {e}");
                    Err(crate::store::StateError::backend(message, e))
                }),
            Err(_) => state.get(&route, &key),
        };
        match read {
            Ok(v) => v,
            Err(e) => {
                self.ctx.state_error.get_or_insert((true, format!("{e}")));
                None
            }
        }
    }

    fn state_set(&mut self, key: String, value: String) {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            self.ctx.state_error.get_or_insert((
                false,
                format!("state-set refused: keys are limited to {MAX_KEY_BYTES} bytes and values to {MAX_VALUE_BYTES}"),
            ));
            return;
        }
        if self.ctx.pending.len() >= 1000 {
            self.ctx.state_error.get_or_insert((
                false,
                "state-set refused: more than 1000 writes in one step".into(),
            ));
            return;
        }
        self.ctx.pending.insert(key, Some(value));
    }

    fn state_delete(&mut self, key: String) {
        if key.len() > MAX_KEY_BYTES || self.ctx.pending.len() >= 1000 {
            self.ctx.state_error.get_or_insert((
                false,
                format!("state-delete refused: keys are limited to {MAX_KEY_BYTES} bytes and 1000 writes per step"),
            ));
            return;
        }
        self.ctx.pending.insert(key, None);
    }

    fn event_field(&mut self, path: String) -> Option<String> {
        self.ctx.event.field(&path)
    }
}
