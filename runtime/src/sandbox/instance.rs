//! One flow's sandbox: a fresh wasmtime `Store` with its limits (fuel,
//! epoch deadline, memory, hostcall bytes) around one instance.

use std::collections::BTreeMap;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};

use super::bindings::TransformWorld;
use super::bindings::types::{self, Failure, HttpResponse, Info, Step, TransportError};
use super::component::Transform;
use super::engine::Engine;
use super::host::{FlowContext, GuestLog, HostState, Limiter};
use crate::config::Limits;

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
fn hostcall_budget(limits: &Limits) -> usize {
    limits
        .max_requests_per_step
        .saturating_add(1)
        .saturating_mul(limits.max_request_body_bytes.saturating_add(64 << 10))
        .saturating_mul(2)
        .clamp(4 << 20, 256 << 20)
}

/// A fresh instance of a transform for one flow.
pub struct Sandbox {
    /// The wasmtime store: this flow's memory, fuel and host state.
    store: Store<HostState>,
    /// The instance's exports (`None` only while a call borrows it).
    world: Option<TransformWorld>,
    /// Bytes of stdout/stderr already logged.
    logged: (usize, usize),
    /// Fuel each call starts with (`limits.fuel_per_step`).
    fuel_per_step: u64,
    /// Wall-clock bound of a call, for messages.
    step_timeout_ms: u64,
    /// The same bound in epoch ticks.
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
        let mut state = state;
        state.ctx.needs_random = transform.info.needs_random;
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

    pub(crate) fn describe(&mut self) -> Result<Info, SandboxError> {
        self.call(|w, s| w.ztbridge_transform_transform().call_describe(s))
    }

    pub fn start(&mut self, event: &types::Event) -> Result<Result<Step, Failure>, SandboxError> {
        self.call(|w, s| w.ztbridge_transform_transform().call_start(s, event))
    }

    pub fn resume(
        &mut self,
        responses: &[Result<HttpResponse, TransportError>],
    ) -> Result<Result<Step, Failure>, SandboxError> {
        self.call(|w, s| w.ztbridge_transform_transform().call_resume(s, responses))
    }

    /// State writes of the last step (to commit before sending requests).
    pub(crate) fn take_state_writes(&mut self) -> BTreeMap<String, Option<String>> {
        std::mem::take(&mut self.store.data_mut().ctx.pending)
    }

    /// A state failure raised during the last step: (retryable, message).
    pub(crate) fn take_state_error(&mut self) -> Option<(bool, String)> {
        self.store.data_mut().ctx.state_error.take()
    }

    /// Log lines so far, and how many were dropped.
    pub(crate) fn take_logs(&mut self) -> (Vec<GuestLog>, usize) {
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
