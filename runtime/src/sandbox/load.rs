//! Loading a transform: compile (or take from the cache), link against the
//! host imports, type-check once into an `InstancePre`, and read its
//! self-description with `describe()` in a throwaway sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{TransformWorld, TransformWorldPre};
use super::cache::CompileCache;
use super::component::{ConfigKeyInfo, Transform, TransformInfo, digest};
use super::engine::Engine;
use super::host::{FlowContext, HostState};
use super::instance::{Sandbox, SandboxError};
use crate::store::MemoryState;
use crate::text::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("{origin}: not a valid wasm component: {message}")]
    Compile { origin: String, message: String },
    #[error(
        "{origin}: imports something the host does not provide (a transform may only import ztbridge:transform/host and WASI p2): {message}"
    )]
    Link { origin: String, message: String },
    #[error("{origin}: describe() failed: {error}")]
    Describe { origin: String, error: SandboxError },
    #[error("{origin}: cannot read: {message}")]
    Read { origin: String, message: String },
    #[error("unknown built-in transform `{name}` (built-ins: {known})")]
    UnknownBuiltin { name: String, known: String },
}

impl Transform {
    /// Compiles, links and describes a component.
    pub fn load(
        engine: &Engine,
        source: &str,
        bytes: &[u8],
    ) -> Result<Arc<Transform>, TransformError> {
        Self::load_with_cache(engine, source, bytes, None)
    }

    /// [`Transform::load`], taking the compiled component from (and
    /// storing it in) an on-disk [`CompileCache`] when one is given.
    pub fn load_with_cache(
        engine: &Engine,
        source: &str,
        bytes: &[u8],
        cache: Option<&CompileCache>,
    ) -> Result<Arc<Transform>, TransformError> {
        let compile_err = |e: wasmtime::Error| TransformError::Compile {
            origin: source.into(),
            message: format!("{e:#}"),
        };
        let component = match cache {
            None => Component::new(&engine.wasm, bytes).map_err(compile_err)?,
            Some(cache) => {
                let (component, outcome) = cache.load(&engine.wasm, bytes).map_err(compile_err)?;
                tracing::debug!(source, ?outcome, "compile cache");
                component
            }
        };
        let mut linker: Linker<HostState> = Linker::new(&engine.wasm);
        let link_err = |e: wasmtime::Error| TransformError::Link {
            origin: source.into(),
            message: format!("{e:#}"),
        };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        TransformWorld::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(link_err)?;
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = TransformWorldPre::new(pre).map_err(link_err)?;

        let mut transform = Transform {
            source: source.to_string(),
            digest: digest(bytes),
            info: TransformInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                egress: vec![],
                config: vec![],
            },
            pre,
        };
        let ctx = FlowContext::new(
            Arc::from("describe"),
            Arc::new(BTreeMap::new()),
            Arc::new(MemoryState::default()),
            Arc::new(Redactor::default()),
        );
        let describe_err = |error| TransformError::Describe {
            origin: source.into(),
            error,
        };
        let mut sandbox = Sandbox::new(engine, &transform, ctx).map_err(describe_err)?;
        let info = sandbox.describe().map_err(describe_err)?;
        transform.info = TransformInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            egress: info.egress,
            config: info
                .config
                .into_iter()
                .map(|k| ConfigKeyInfo {
                    default_value: if k.secret { None } else { k.default_value },
                    name: k.name,
                    description: k.description,
                    required: k.required,
                    secret: k.secret,
                })
                .collect(),
        };
        Ok(Arc::new(transform))
    }
}
