//! One flow's sandbox: a fresh wasmtime `Store` with its limits, and the
//! host side of the `ztbridge:transform/host` imports.
//!
//! WASI is linked with nothing granted: no preopened directories, no
//! environment, no arguments, no network (the sockets interfaces exist but
//! every address is denied).  Guest stdout/stderr are captured (bounded) and
//! logged under the route's name.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::types::{self, Failure, Field, HttpResponse, Info, LogLevel, Step};
use crate::bindings::{TransformWorld, ztbridge};
use crate::engine::Engine;
use crate::redact::Redactor;
use crate::state::{MAX_KEY_BYTES, MAX_VALUE_BYTES, StateStore};
use crate::transform::Transform;

/// Log lines kept per flow (more are counted, not kept).
const MAX_LOG_LINES: usize = 200;

/// A log line a transform wrote (through `host.log` or stdout/stderr).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestLog {
    pub level: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// What the host imports see of the route and the event.
pub struct FlowContext {
    /// Route name: the log target of everything the guest says.
    pub route: Arc<str>,
    /// Resolved config values (route values over the transform's defaults).
    pub config: Arc<BTreeMap<String, String>>,
    /// Durable state behind `state-get`.
    pub state: Arc<dyn StateStore>,
    /// Secret values to strip from guest logs.
    pub redactor: Arc<Redactor>,
    /// Writes made during the current step, committed by the flow driver
    /// after the step returns; reads see them first.
    pending: BTreeMap<String, Option<String>>,
    /// A state read failure or a limit breach; fails the flow after the
    /// step (the guest cannot handle it meaningfully).
    pub(crate) state_error: Option<(bool, String)>,
    /// Lines logged so far (bounded) and how many were dropped.
    logs: Vec<GuestLog>,
    dropped_logs: usize,
}

impl FlowContext {
    pub fn new(
        route: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        state: Arc<dyn StateStore>,
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
        }
    }

    fn push_log(&mut self, level: &'static str, message: &str, fields: Vec<(String, String)>) {
        let message = self.redactor.apply(message);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (self.redactor.apply(&k), self.redactor.apply(&v)))
            .collect();
        let route = &*self.route;
        let rendered: String = fields.iter().map(|(k, v)| format!(" {k}={v:?}")).collect();
        match level {
            "error" => tracing::error!(target: "transform", route, "{message}{rendered}"),
            "warn" => tracing::warn!(target: "transform", route, "{message}{rendered}"),
            "info" => tracing::info!(target: "transform", route, "{message}{rendered}"),
            "debug" => tracing::debug!(target: "transform", route, "{message}{rendered}"),
            _ => tracing::trace!(target: "transform", route, "{message}{rendered}"),
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
struct Limiter {
    /// Bytes of linear memory an instance may have.
    memory_bytes: usize,
    /// Set when a grow was refused, so the trap is reported as a memory
    /// limit rather than a bare trap.
    hit: bool,
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
pub struct HostState {
    /// WASI with nothing granted, made on the guest's first WASI call (most
    /// flows make none; building one costs ~0.3 µs, 5% of the per-event
    /// floor).
    wasi: Option<WasiCtx>,
    /// Guest stdout and stderr (bounded), made with `wasi`; the sandbox
    /// reads them back after each call.
    output: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    /// Bytes each of stdout and stderr may hold.
    output_limit: usize,
    /// WASI resources (streams).
    table: ResourceTable,
    /// Memory cap.
    limiter: Limiter,
    /// Route, config, state and logs.
    pub(crate) ctx: FlowContext,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (output, limit) = (&mut self.output, self.output_limit);
        let ctx = self.wasi.get_or_insert_with(|| {
            let (stdout, stderr) = output.get_or_insert_with(|| {
                (MemoryOutputPipe::new(limit), MemoryOutputPipe::new(limit))
            });
            WasiCtxBuilder::new()
                .stdout(stdout.clone())
                .stderr(stderr.clone())
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

    fn state_get(&mut self, key: String) -> Option<String> {
        if let Some(v) = self.ctx.pending.get(&key) {
            return v.clone();
        }
        match self.ctx.state.get(&self.ctx.route, &key) {
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
}

/// Why a sandboxed call did not return normally.  None of these is
/// retryable: the same transform on the same event would do it again.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum SandboxError {
    #[error("fuel exhausted: the step needed more than {0} units of fuel (limits.fuel_per_step)")]
    OutOfFuel(u64),
    #[error("deadline exceeded: the step ran longer than {0} ms (limits.step_timeout_ms)")]
    Deadline(u64),
    #[error("memory limit: the transform tried to grow past {0} bytes (limits.memory_bytes)")]
    Memory(usize),
    #[error("transform trapped: {0}")]
    Trap(String),
    #[error("could not instantiate the transform: {0}")]
    Instantiate(String),
}

/// Bytes one call may lift into the host: a generous multiple of the
/// largest legitimate step (every request at the body limit).
fn hostcall_budget(limits: &crate::engine::Limits) -> usize {
    limits
        .max_requests_per_step
        .saturating_add(1)
        .saturating_mul(limits.max_request_body_bytes.saturating_add(64 << 10))
        .saturating_mul(2)
        .clamp(4 << 20, 256 << 20)
}

/// A fresh instance of a transform for one flow.
pub struct Sandbox {
    store: Store<HostState>,
    /// The instance's exports (`None` only while a call borrows it).
    world: Option<TransformWorld>,
    /// Bytes of stdout/stderr already logged.
    logged: (usize, usize),
    fuel_per_step: u64,
    step_timeout_ms: u64,
    deadline_ticks: u64,
    /// Fuel consumed by all steps so far.
    fuel_used: u64,
}

impl Sandbox {
    /// Instantiates `transform` in a fresh store with the engine's limits.
    pub fn new(
        engine: &Engine,
        transform: &Transform,
        ctx: FlowContext,
    ) -> Result<Sandbox, SandboxError> {
        let limits = &engine.limits;
        let state = HostState {
            wasi: None,
            output: None,
            output_limit: limits.max_guest_output_bytes,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: limits.memory_bytes,
                hit: false,
            },
            ctx,
        };
        let mut store = Store::new(&engine.wasm, state);
        store.limiter(|s| &mut s.limiter);
        // Bounds what one call may copy from the guest into the host (a
        // step's requests, a log line): wasmtime charges every lifted byte,
        // aliased strings included, so a guest cannot make the host allocate
        // more than this however it lays out its answer.
        store.set_hostcall_fuel(hostcall_budget(limits));
        store.epoch_deadline_trap();
        let mut sandbox = Sandbox {
            store,
            world: None,
            logged: (0, 0),
            fuel_per_step: limits.fuel_per_step,
            step_timeout_ms: limits.step_timeout_ms,
            deadline_ticks: engine.deadline_ticks(),
            fuel_used: 0,
        };
        sandbox.arm();
        let world = match transform.pre.instantiate(&mut sandbox.store) {
            Ok(w) => w,
            Err(e) => return Err(SandboxError::Instantiate(sandbox.classify(e).to_string())),
        };
        sandbox.account();
        sandbox.world = Some(world);
        Ok(sandbox)
    }

    /// Gives the next call its fuel and deadline.
    fn arm(&mut self) {
        let _ = self.store.set_fuel(self.fuel_per_step);
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    /// Adds the fuel the last call used.
    fn account(&mut self) {
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_used += self.fuel_per_step.saturating_sub(left);
    }

    fn classify(&mut self, e: wasmtime::Error) -> SandboxError {
        self.flush_output();
        if self.store.data().limiter.hit {
            return SandboxError::Memory(self.store.data().limiter.memory_bytes);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => SandboxError::OutOfFuel(self.fuel_per_step),
            Some(Trap::Interrupt) => SandboxError::Deadline(self.step_timeout_ms),
            _ => {
                let stderr = match &self.store.data().output {
                    Some((_, stderr)) => String::from_utf8_lossy(&stderr.contents())
                        .trim()
                        .to_string(),
                    None => String::new(),
                };
                let tail: String = stderr
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ");
                let mut msg = format!("{e:#}");
                if !tail.is_empty() {
                    msg.push_str(&format!(
                        " (guest stderr: {})",
                        self.store.data().ctx.redactor.apply(&tail)
                    ));
                }
                SandboxError::Trap(msg.chars().take(2000).collect())
            }
        }
    }

    /// Logs what the guest printed since the last call.
    fn flush_output(&mut self) {
        let Some((stdout, stderr)) = self.store.data().output.clone() else {
            return; // the guest never touched WASI
        };
        for (which, pipe) in [(0, stdout), (1, stderr)] {
            let bytes = pipe.contents();
            let seen = if which == 0 {
                &mut self.logged.0
            } else {
                &mut self.logged.1
            };
            if bytes.len() <= *seen {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes[*seen..]).to_string();
            *seen = bytes.len();
            let level = if which == 0 { "info" } else { "warn" };
            let stream = if which == 0 { "stdout" } else { "stderr" };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                self.store.data_mut().ctx.push_log(
                    level,
                    line,
                    vec![("stream".into(), stream.into())],
                );
            }
        }
    }

    /// Runs one export call with fresh fuel and deadline.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&TransformWorld, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, SandboxError> {
        self.arm();
        let Some(world) = self.world.take() else {
            return Err(SandboxError::Instantiate(
                "instance is not available".into(),
            ));
        };
        let result = f(&world, &mut self.store);
        self.world = Some(world);
        self.account();
        match result {
            Ok(r) => {
                self.flush_output();
                Ok(r)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    pub fn describe(&mut self) -> Result<Info, SandboxError> {
        self.call(|w, s| w.ztbridge_transform_transform().call_describe(s))
    }

    pub fn start(&mut self, event: &types::Event) -> Result<Result<Step, Failure>, SandboxError> {
        self.call(|w, s| w.ztbridge_transform_transform().call_start(s, event))
    }

    pub fn resume(
        &mut self,
        responses: &[HttpResponse],
    ) -> Result<Result<Step, Failure>, SandboxError> {
        self.call(|w, s| w.ztbridge_transform_transform().call_resume(s, responses))
    }

    /// State writes of the last step (to commit before sending requests).
    pub fn take_state_writes(&mut self) -> BTreeMap<String, Option<String>> {
        std::mem::take(&mut self.store.data_mut().ctx.pending)
    }

    /// A state failure raised during the last step: (retryable, message).
    pub fn take_state_error(&mut self) -> Option<(bool, String)> {
        self.store.data_mut().ctx.state_error.take()
    }

    /// Log lines so far, and how many were dropped.
    pub fn take_logs(&mut self) -> (Vec<GuestLog>, usize) {
        let ctx = &mut self.store.data_mut().ctx;
        (
            std::mem::take(&mut ctx.logs),
            std::mem::take(&mut ctx.dropped_logs),
        )
    }

    /// Fuel used by every call so far.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }
}
