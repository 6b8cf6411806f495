//! Loading a transform: compile (or take from the cache), link against the
//! host imports, type-check once into an `InstancePre`, and read its
//! self-description with `describe()` in a throwaway sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::types::EgressRule;
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
    #[error(
        "{origin}: built for {found}; this ztbridge runs {CONTRACT}. Rebuild it against this release's wit/ztbridge.wit (Rust: the ztbridge-sdk of this release; JavaScript and Python: import from 'ztbridge:transform/host@0.2.0'); see the README, \"Upgrading a transform from contract 0.1\""
    )]
    Contract { origin: String, found: String },
}

/// The contract this host implements: the WIT package and version.
pub const CONTRACT: &str = "ztbridge:transform@0.2.0";

/// The contract a component was built for: `ztbridge:transform@X` from the
/// name of its exported `transform` interface.
fn contract_of(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .exports(&engine.wasm)
        .find_map(|(name, _)| {
            let (package, version) = name.split_once('@')?;
            (package == "ztbridge:transform/transform")
                .then(|| format!("ztbridge:transform@{version}"))
        })
}

/// Random bytes for the guest: a stream seeded from the receipt ID, for a
/// transform that declared `needs-random`; a trap naming the call for one
/// that did not (WASI's own implementation would hand out real entropy).
fn link_random(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use rand::Rng;
    fn stream<'a>(
        state: &'a mut HostState,
        call: &str,
    ) -> wasmtime::Result<&'a mut rand::rngs::StdRng> {
        if !state.ctx.needs_random {
            wasmtime::bail!(
                "the transform called {call} but does not declare needs-random in describe(): randomness is only given to transforms that declare it (seeded from the receipt ID, so a replay is reproducible)"
            );
        }
        let ev = &state.ctx.event;
        Ok(state.ctx.rng.get_or_insert_with(|| ev.rng(0)))
    }
    linker.allow_shadowing(true);
    let mut random = linker.instance("wasi:random/random@0.2.12")?;
    random.func_wrap(
        "get-random-bytes",
        |mut store: wasmtime::StoreContextMut<'_, HostState>, (len,): (u64,)| {
            let rng = stream(store.data_mut(), "wasi:random/random.get-random-bytes")?;
            let len = usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20);
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            Ok((bytes,))
        },
    )?;
    random.func_wrap(
        "get-random-u64",
        |mut store: wasmtime::StoreContextMut<'_, HostState>, (): ()| {
            let rng = stream(store.data_mut(), "wasi:random/random.get-random-u64")?;
            Ok((rng.next_u64(),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
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
        let contract = contract_of(engine, &component);
        match contract.as_deref() {
            Some(CONTRACT) | None => {}
            Some(found) => {
                return Err(TransformError::Contract {
                    origin: source.into(),
                    found: found.to_string(),
                });
            }
        }
        let mut linker: Linker<HostState> = Linker::new(&engine.wasm);
        let link_err = |e: wasmtime::Error| TransformError::Link {
            origin: source.into(),
            message: format!("{e:#}"),
        };
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        link_random(&mut linker).map_err(link_err)?;
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
                needs_random: false,
                contract: CONTRACT.to_string(),
            },
            signed_by: std::sync::OnceLock::new(),
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
        // `describe` may read random bytes whatever the transform declares
        // (it has not said yet): componentize-py's runtime reseeds Python's
        // `random` module on an instance's first export call.  The stream is
        // seeded from the describe context's receipt ID, so it is
        // deterministic like every other.
        transform.info.needs_random = true;
        let info = super::block_on(async {
            let mut sandbox = Sandbox::new(engine, &transform, ctx).await?;
            sandbox.describe().await
        })
        .map_err(describe_err)?;
        transform.info = TransformInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            egress: info.egress.into_iter().map(egress_entry).collect(),
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
            needs_random: info.needs_random,
            contract: CONTRACT.to_string(),
        };
        Ok(Arc::new(transform))
    }
}

/// An egress rule as the policy reads it: `host`, `*.domain` or
/// `config:KEY`.
fn egress_entry(rule: EgressRule) -> String {
    match rule {
        EgressRule::Host(h) => h,
        EgressRule::Wildcard(d) => format!("*.{}", d.trim_start_matches("*.")),
        EgressRule::ConfigUrl(k) => format!("config:{k}"),
    }
}
