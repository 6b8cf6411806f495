//! One flow's sandbox: a fresh wasmtime `Store` with its limits (fuel,
//! epoch deadline, memory, hostcall bytes) around one instance.
//!
//! Calls are async: the guest runs on a fiber inside the flow's task, so a
//! step costs no thread hop, and it yields to the executor at every epoch
//! tick, so a step that computes for its whole deadline shares the worker
//! with the intake instead of stalling it.  [`block_on`] runs the same
//! calls for callers that are not async.
//!
//! A step's deadline is wall-clock time, held twice: the epoch callback
//! stops a guest that computes past it, and a timer around the call stops
//! one that waits past it inside a host call (a `state-get` on a slow
//! store, a WASI sleep), where no epoch check runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};

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
    /// Wall-clock bound of each call (`limits.step_timeout_ms`).
    step_timeout_ms: u64,
    /// Fuel consumed by all steps so far.
    fuel_used: u64,
}

impl Sandbox {
    /// Instantiates `transform` in a fresh store with the engine's limits.
    pub async fn new(
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
            deadline: Instant::now(),
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
        // At each tick: yield to the executor, or stop the step when its
        // deadline has passed (a trap the sandbox reports as `Deadline`).
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let mut sandbox = Sandbox {
            store,
            world: None,
            logged: (0, 0),
            fuel_per_step: limits.fuel_per_step,
            step_timeout_ms: limits.step_timeout_ms,
            fuel_used: 0,
        };
        let deadline = sandbox.arm();
        let world = match within(
            deadline,
            transform.pre.instantiate_async(&mut sandbox.store),
        )
        .await
        {
            Some(Ok(w)) => w,
            Some(Err(e)) => {
                return Err(SandboxError::Instantiate(sandbox.classify(e).to_string()));
            }
            None => return Err(SandboxError::Deadline(sandbox.step_timeout_ms)),
        };
        sandbox.account();
        sandbox.world = Some(world);
        Ok(sandbox)
    }

    /// Gives the next call its fuel and deadline, and returns the deadline.
    fn arm(&mut self) -> Instant {
        let _ = self.store.set_fuel(self.fuel_per_step);
        let deadline = Instant::now() + Duration::from_millis(self.step_timeout_ms);
        self.store.data_mut().deadline = deadline;
        self.store.set_epoch_deadline(1);
        deadline
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

    /// Arms the next export call and lends out the instance's exports,
    /// with the call's deadline.
    fn begin(&mut self) -> Result<(TransformWorld, Instant), SandboxError> {
        let deadline = self.arm();
        let world = self
            .world
            .take()
            .ok_or_else(|| SandboxError::Instantiate("instance is not available".into()))?;
        Ok((world, deadline))
    }

    /// Takes the exports back and accounts for the call.  `None` is a call
    /// stopped by its timer while waiting in a host call: the instance was
    /// left mid-call, so it takes no further calls.
    fn end<R>(
        &mut self,
        world: TransformWorld,
        result: Option<wasmtime::Result<R>>,
    ) -> Result<R, SandboxError> {
        self.account();
        let Some(result) = result else {
            self.flush_output();
            return Err(SandboxError::Deadline(self.step_timeout_ms));
        };
        self.world = Some(world);
        match result {
            Ok(r) => {
                self.flush_output();
                Ok(r)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    pub(crate) async fn describe(&mut self) -> Result<Info, SandboxError> {
        let (world, deadline) = self.begin()?;
        let call = world
            .ztbridge_transform_transform()
            .call_describe(&mut self.store);
        let r = within(deadline, call).await;
        self.end(world, r)
    }

    pub async fn start(
        &mut self,
        event: &types::Event,
    ) -> Result<Result<Step, Failure>, SandboxError> {
        let (world, deadline) = self.begin()?;
        let call = world
            .ztbridge_transform_transform()
            .call_start(&mut self.store, event);
        let r = within(deadline, call).await;
        self.end(world, r)
    }

    pub async fn resume(
        &mut self,
        responses: &[Result<HttpResponse, TransportError>],
    ) -> Result<Result<Step, Failure>, SandboxError> {
        let (world, deadline) = self.begin()?;
        let call = world
            .ztbridge_transform_transform()
            .call_resume(&mut self.store, responses);
        let r = within(deadline, call).await;
        self.end(world, r)
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

/// Runs a sandboxed call until `deadline`: `None` if the deadline passed
/// first.  The timer needs tokio's; outside a runtime the call runs
/// unbounded by it, and only the epoch callback bounds it (a sync caller:
/// a transform's `describe` at load, a benchmark).  Dropping a call's
/// future mid-call is safe: wasmtime unwinds the guest's fiber, and the
/// instance is not called again.
async fn within<F: Future>(deadline: Instant, call: F) -> Option<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::time::timeout_at(deadline.into(), call).await.ok(),
        Err(_) => Some(call.await),
    }
}

/// Runs a sandbox future to completion on the calling thread, for callers
/// that are not async: reading a transform's `describe` at load, a route's
/// validation, benchmarks.  It works inside a runtime too (start-up runs
/// in one): it parks the thread rather than entering the runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// Wakes the parked caller.
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}
