//! The one wasmtime [`Engine`] of the process and its epoch ticker.
//!
//! Every transform is compiled by and runs in this engine: the pooling
//! allocator pre-reserves instance slots (instantiation is then a few
//! microseconds), fuel bounds the work of a call, and epoch interruption
//! bounds its wall-clock time. One thread advances the epoch for the whole
//! engine; at each tick a running guest yields to the executor, and a step
//! that outlives its deadline in ticks is stopped.  Guests run on fibers
//! (wasmtime's async calls) whose stacks come from the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Limits;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: a computing guest yields to the executor
/// and checks its step deadline this often.
pub const TICK: Duration = Duration::from_millis(10);

/// The engine plus the thread that ticks its epoch.
pub struct Engine {
    /// The wasmtime engine every transform is compiled for.
    pub wasm: wasmtime::Engine,
    /// The limits stores are created with.
    pub(crate) limits: Limits,
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
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
