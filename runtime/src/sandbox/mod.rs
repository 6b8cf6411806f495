//! The sandbox: runs transform components under limits.  One wasmtime
//! [`Engine`] per process, each transform compiled once ([`Transform`],
//! optionally through the on-disk [`CompileCache`]), and a fresh
//! [`Sandbox`] (store + instance) per flow with the host imports.
//!
//! May import: `config`, `store` (the transform-state interface), `time`,
//! `text`.
//! Knows nothing of HTTP, routes or delivery.

pub mod bindings;
mod cache;
mod component;
mod engine;
mod host;
mod instance;
mod load;

pub use cache::{CacheOutcome, CompileCache};
pub use component::{ConfigKeyInfo, Transform, TransformInfo, digest};
pub use engine::{Engine, EngineError, TICK};
pub use host::{FlowContext, GuestLog};
pub use instance::{Sandbox, SandboxError, block_on};
pub(crate) use load::TransformError;
