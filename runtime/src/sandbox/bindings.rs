//! Host-side bindings of the `ztbridge:transform` WIT package.

wasmtime::component::bindgen!({
    world: "transform-world",
    path: "../wit",
});

pub use ztbridge::transform::types;
