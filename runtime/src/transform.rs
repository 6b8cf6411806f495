//! A transform compiled once and ready to instantiate many times.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};

use crate::bindings::{TransformWorld, TransformWorldPre};
use crate::cache::CompileCache;
use crate::engine::Engine;
use crate::redact::Redactor;
use crate::sandbox::{FlowContext, HostState, Sandbox, SandboxError};
use crate::state::MemoryState;

/// What a transform says about itself (`describe`), in host form.
#[derive(Debug, Clone, Serialize)]
pub struct TransformInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Egress allow-list entries as declared (see the WIT `info` record).
    pub egress: Vec<String>,
    pub config: Vec<ConfigKeyInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigKeyInfo {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub secret: bool,
    /// Never shown for secret keys.
    pub default_value: Option<String>,
}

/// A loaded transform.
pub struct Transform {
    /// Where it came from (`builtin:pagerduty` or a file path), for logs.
    pub source: String,
    /// `sha256:<hex>` of the component bytes: identifies exactly what ran.
    pub digest: String,
    /// Its self-description, read once at load.
    pub info: TransformInfo,
    /// Linked and type-checked once; each flow instantiates from it.
    pub(crate) pre: TransformWorldPre<HostState>,
}

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
    #[error("{origin}: refused: {error}")]
    Untrusted {
        origin: String,
        error: crate::signing::SigningError,
    },
    #[error("unknown built-in transform `{name}` (built-ins: {known})")]
    UnknownBuiltin { name: String, known: String },
}

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Transform {
    /// Compiles, links and describes a component.
    pub fn load(
        engine: &Engine,
        source: &str,
        bytes: &[u8],
    ) -> Result<Arc<Transform>, TransformError> {
        Transform::load_with_cache(engine, source, bytes, None)
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

    /// Names of the config keys the transform marks secret.
    pub fn secret_keys(&self) -> impl Iterator<Item = &str> {
        self.info
            .config
            .iter()
            .filter(|k| k.secret)
            .map(|k| k.name.as_str())
    }
}
