//! Host-side bindings of the `ztbridge:transform` WIT package.
//!
//! Exports are called with wasmtime's async support: the guest runs on a
//! fiber of the task that drives the flow, and yields to the executor at
//! each epoch tick (see `instance.rs`), so a long step never holds a
//! runtime worker.  `state-get` is async because the store behind it may
//! block (PostgreSQL); everything else the host provides answers at once.

wasmtime::component::bindgen!({
    world: "transform-world",
    path: "../wit",
    imports: { "ztbridge:transform/host.state-get": async },
    exports: { default: async },
});

pub use ztbridge::transform::types;
