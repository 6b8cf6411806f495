//! The one wasmtime [`Engine`] of the process and its epoch ticker.
//!
//! Every transform is compiled by and runs in this engine: the pooling
//! allocator pre-reserves instance slots (instantiation is then a few
//! microseconds), fuel bounds the work of a call, and epoch interruption
//! bounds its wall-clock time. One thread advances the epoch for the whole
//! engine; each store sets its deadline in ticks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; the granularity of step deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Sandbox limits, per step (one `start` or `resume` call) and per flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wasm fuel per step (roughly one unit per instruction). The PagerDuty
    /// transform uses about a million on a typical event and 0.7 billion on
    /// an 8 MB one (the intake's default limit).
    pub fuel_per_step: u64,
    /// Wall-clock time per step, in milliseconds.
    pub step_timeout_ms: u64,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Steps (start + resumes) per flow.
    pub max_steps: u32,
    /// Requests one step may ask for.
    pub max_requests_per_step: usize,
    /// Body size of one outbound request, in bytes.
    pub max_request_body_bytes: usize,
    /// Headers on one outbound request.
    pub max_request_headers: usize,
    /// Response body kept and given back to the transform, in bytes.
    pub max_response_body_bytes: usize,
    /// Timeout of one outbound HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Guest stdout/stderr kept per flow, in bytes (more is an error).
    pub max_guest_output_bytes: usize,
    /// Instances that may exist at once (pooling allocator slots); also
    /// the number of flows running concurrently.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel_per_step: 3_000_000_000,
            step_timeout_ms: 5_000,
            memory_bytes: 64 << 20,
            max_steps: 16,
            max_requests_per_step: 8,
            max_request_body_bytes: 1 << 20,
            max_request_headers: 32,
            max_response_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            max_guest_output_bytes: 64 << 10,
            max_instances: 64,
        }
    }
}

/// The engine plus the thread that ticks its epoch.
pub struct Engine {
    /// The wasmtime engine every transform is compiled for.
    pub wasm: wasmtime::Engine,
    /// The limits stores are created with.
    pub limits: Limits,
    /// Tells the ticker thread to stop when the engine is dropped.
    stop: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not create the wasm engine: {0}")]
pub struct EngineError(String);

impl Engine {
    pub fn new(limits: Limits) -> Result<Engine, EngineError> {
        let mut pool = PoolingAllocationConfig::default();
        let slots = limits.max_instances.max(1);
        pool.total_component_instances(slots)
            // Rust std guests have one core instance plus WASI shims; other
            // languages more.  Size the pool for the per-component maximum so
            // running out of slots cannot happen below `max_instances`.
            .total_core_instances(slots.saturating_mul(16))
            .max_core_instances_per_component(16)
            .total_memories(slots.saturating_mul(2))
            .max_memories_per_component(2)
            .total_tables(slots.saturating_mul(16))
            .max_tables_per_component(16)
            .total_stacks(slots)
            .max_memory_size(limits.memory_bytes)
            // Reset a used slot by rewriting only the pages the guest
            // dirtied (found with Linux's PAGEMAP_SCAN, 6.7+) instead of
            // unmapping them: the next instance then takes no page faults.
            // Where the ioctl is missing, the first 64 KiB are memset and
            // the rest madvised.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(true)
            .epoch_interruption(true)
            .wasm_component_model(true)
            // A smaller reservation per memory keeps the pool's virtual
            // footprint modest; bounds checks stay elided up to it.
            .memory_reservation(1 << 30)
            .memory_guard_size(32 << 20)
            .max_wasm_stack(1 << 20);
        // `ZTBRIDGE_WASM_PROFILER=perfmap` writes /tmp/perf-<pid>.map so
        // `perf record` / `perf report` name the guests' compiled functions
        // (use unstripped guests to see their own names).
        if std::env::var("ZTBRIDGE_WASM_PROFILER").as_deref() == Ok("perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let wasm = wasmtime::Engine::new(&config).map_err(|e| EngineError(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (wasm.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ztbridge-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| EngineError(format!("epoch ticker thread: {e}")))?;
        Ok(Engine { wasm, limits, stop })
    }

    /// Step deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        (self.limits.step_timeout_ms / TICK.as_millis() as u64).max(1)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
