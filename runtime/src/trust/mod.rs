//! Trust: which transform files may run.  [`signing`] reads and writes
//! signatures (Ed25519 in the WebAssembly tool-conventions format);
//! [`Trust`] is the policy `[trust]` configures, and [`load_transform`]
//! checks a file against it before anything of it is compiled.
//! [`detached`] signs other files (a release's `SHA256SUMS`) with the same
//! keys.
//!
//! May import: `sandbox` (to compile what passed), `config`.

pub mod detached;
pub mod signing;

use std::sync::Arc;

use crate::Builtins;
use crate::config::TrustConfig;
use crate::sandbox::{CompileCache, Engine, Transform, TransformError};
pub use signing::{SigningError, TrustedKeys, load_public_keys};

/// Which files may load.
pub enum Trust {
    /// Only files signed by one of these keys.
    Keys(TrustedKeys),
    /// Anything (development switch, dry runs).
    AnyFile,
}

impl Trust {
    /// From the `[trust]` config section.
    pub(crate) fn from_config(cfg: &TrustConfig) -> Result<Trust, SigningError> {
        if cfg.allow_unsigned {
            tracing::warn!(
                "DEVELOPMENT MODE: [trust] allow_unsigned = true: transform files load WITHOUT signature checks"
            );
            return Ok(Trust::AnyFile);
        }
        Ok(Trust::Keys(if cfg.keys.is_empty() {
            TrustedKeys::new()
        } else {
            load_public_keys(&cfg.keys)?
        }))
    }
}

/// Why a transform could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Its signature does not satisfy the trust policy.
    #[error("{origin}: refused")]
    Untrusted {
        /// The file.
        origin: String,
        #[source]
        error: SigningError,
    },
    /// It was trusted but could not be compiled, linked or described.
    #[error(transparent)]
    Transform(#[from] TransformError),
}

/// Loads `builtin:NAME` from the embedded set, anything else from a file
/// whose signature `trust` accepts (checked before compiling), through the
/// compile cache when one is given (keyed by the bytes' digest).
pub fn load_transform(
    engine: &Engine,
    spec: &str,
    builtins: &Builtins,
    trust: &Trust,
    cache: Option<&CompileCache>,
) -> Result<Arc<Transform>, LoadError> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        let bytes = builtins
            .get(name)
            .ok_or_else(|| TransformError::UnknownBuiltin {
                name: name.to_string(),
                known: builtins.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let t = Transform::load_with_cache(engine, spec, bytes, cache)?;
        let _ = t.signed_by.set("built-in".into());
        return Ok(t);
    }
    let bytes = std::fs::read(spec).map_err(|e| TransformError::Read {
        origin: spec.to_string(),
        message: e.to_string(),
    })?;
    let signed_by = match trust {
        Trust::AnyFile => {
            let claimed = signing::signers(&bytes).unwrap_or_default();
            if claimed.is_empty() {
                tracing::warn!(
                    file = spec,
                    "loading an UNSIGNED transform (development mode)"
                );
                "unsigned (development mode)".to_string()
            } else {
                format!("unverified: {}", claimed.join(", "))
            }
        }
        Trust::Keys(keys) => {
            let verified = signing::verify(&bytes, keys).map_err(|error| LoadError::Untrusted {
                origin: spec.to_string(),
                error,
            })?;
            tracing::info!(file = spec, signers = %verified.key_ids.join(","), "transform signature verified");
            verified.key_ids.join(", ")
        }
    };
    let t = Transform::load_with_cache(engine, spec, &bytes, cache)?;
    let _ = t.signed_by.set(signed_by);
    Ok(t)
}
