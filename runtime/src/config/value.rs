//! A config value: literal, or taken from the environment or a file, and
//! the `ZTBRIDGE_<ROUTE>_<KEY>` environment names.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A config value: literal, or taken from the environment or a file
/// (systemd `LoadCredential` puts secrets in `$CREDENTIALS_DIRECTORY`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Env { env: String },
    File { file: PathBuf },
}

/// `ZTBRIDGE_<ROUTE>_<KEY>`, upper-cased, non-alphanumerics as `_`.
pub fn env_name(route: &str, key: &str) -> String {
    format!("ZTBRIDGE_{route}_{key}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl ConfigValue {
    /// The value as text, reading the environment or a file as declared.
    pub(crate) fn resolve(&self, route: &str, key: &str) -> Result<String, ConfigError> {
        let err = |message: String| ConfigError::Value {
            route: route.into(),
            key: key.into(),
            message,
        };
        match self {
            ConfigValue::Text(s) => Ok(s.clone()),
            ConfigValue::Integer(i) => Ok(i.to_string()),
            ConfigValue::Float(f) => Ok(f.to_string()),
            ConfigValue::Bool(b) => Ok(b.to_string()),
            ConfigValue::Env { env } => std::env::var(env)
                .map_err(|_| err(format!("environment variable `{env}` is not set"))),
            ConfigValue::File { file } => {
                let path = match (
                    file.is_relative(),
                    std::env::var_os("CREDENTIALS_DIRECTORY"),
                ) {
                    (true, Some(dir)) => PathBuf::from(dir).join(file),
                    _ => file.clone(),
                };
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))
            }
        }
    }
}
