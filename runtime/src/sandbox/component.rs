//! A transform compiled once and ready to instantiate many times.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bindings::TransformWorldPre;
use super::host::HostState;

/// What a transform says about itself (`describe`), in host form.
#[derive(Debug, Clone, Serialize)]
pub struct TransformInfo {
    /// Short machine name, e.g. "pagerduty".
    pub name: String,
    /// The transform's own version, e.g. "0.1.0".
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// Egress allow-list entries as declared (see the WIT `info` record).
    pub egress: Vec<String>,
    /// The config keys it reads.
    pub config: Vec<ConfigKeyInfo>,
    /// It uses random bytes (seeded from the receipt ID).
    pub needs_random: bool,
    /// The contract it implements, `ztbridge:transform@0.2.0`.
    pub contract: String,
}

/// One config key a transform reads.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigKeyInfo {
    /// The key, e.g. `routing_key`.
    pub name: String,
    /// What it sets, for operators.
    pub description: String,
    /// The route must set it.
    pub(crate) required: bool,
    /// Never logged or shown.
    pub secret: bool,
    /// Never shown for secret keys.
    pub(crate) default_value: Option<String>,
}

/// A loaded transform.
pub struct Transform {
    /// Where it came from (`builtin:pagerduty` or a file path), for logs.
    pub source: String,
    /// `sha256:<hex>` of the component bytes: identifies exactly what ran.
    pub digest: String,
    /// Its self-description, read once at load.
    pub info: TransformInfo,
    /// Who signed it, as the trust policy saw it at load (`built-in`,
    /// verified key IDs, or `unverified: ...`): shown by the console.
    pub signed_by: std::sync::OnceLock<String>,
    /// Linked and type-checked once; each flow instantiates from it.
    pub(crate) pre: TransformWorldPre<HostState>,
}

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Transform {
    /// Names of the config keys the transform marks secret.
    pub(crate) fn secret_keys(&self) -> impl Iterator<Item = &str> {
        self.info
            .config
            .iter()
            .filter(|k| k.secret)
            .map(|k| k.name.as_str())
    }
}
