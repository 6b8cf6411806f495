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
    Env {
        env: String,
    },
    File {
        file: PathBuf,
        /// Where a relative `file` is read when `$CREDENTIALS_DIRECTORY` is
        /// unset (outside systemd): the `credentials/` directory beside the
        /// config file, the directory the unit's `LoadCredential=` lines
        /// name (`/etc/ztbridge/credentials`).  Set by [`super::Config::load`].
        #[serde(skip)]
        outside_systemd: Option<PathBuf>,
    },
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
    /// A literal value's text; `None` for `{ env }` and `{ file }`.
    pub fn literal(&self) -> Option<String> {
        match self {
            ConfigValue::Text(s) => Some(s.clone()),
            ConfigValue::Integer(i) => Some(i.to_string()),
            ConfigValue::Float(f) => Some(f.to_string()),
            ConfigValue::Bool(b) => Some(b.to_string()),
            ConfigValue::Env { .. } | ConfigValue::File { .. } => None,
        }
    }

    /// Where the value comes from, for messages: `the file`,
    /// `environment variable X`, `credential file /path`.
    pub fn origin(&self) -> String {
        match self {
            ConfigValue::Env { env } => format!("environment variable {env}"),
            ConfigValue::File { .. } => match self.file_path() {
                Some(p) => format!("credential file {}", p.display()),
                None => "a credential file".into(),
            },
            _ => "the config file".into(),
        }
    }

    /// The path a `{ file }` value is read from: absolute as written, or
    /// relative to `$CREDENTIALS_DIRECTORY` (systemd), or else to the
    /// `credentials/` directory beside the config file, or else to the
    /// current directory.
    fn file_path(&self) -> Option<PathBuf> {
        let ConfigValue::File {
            file,
            outside_systemd,
        } = self
        else {
            return None;
        };
        if !file.is_relative() {
            return Some(file.clone());
        }
        Some(
            match (std::env::var_os("CREDENTIALS_DIRECTORY"), outside_systemd) {
                (Some(dir), _) => PathBuf::from(dir).join(file),
                (None, Some(dir)) => dir.join(file),
                (None, None) => file.clone(),
            },
        )
    }

    /// The value as text, reading the environment or a file as declared.
    pub fn resolve(&self, route: &str, key: &str) -> Result<String, ConfigError> {
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
            ConfigValue::File { file, .. } => {
                let path = self.file_path().unwrap_or_else(|| file.clone());
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| {
                        let outside = std::env::var_os("CREDENTIALS_DIRECTORY").is_none();
                        if !(file.is_relative() && outside) {
                            return err(format!("cannot read {}: {e}", path.display()));
                        }
                        let place = match self {
                            ConfigValue::File { outside_systemd: Some(_), .. } => {
                                "the `credentials/` directory beside the config file"
                            }
                            _ => "the current directory",
                        };
                        let name = file.display();
                        err(format!(
                            "credential file `{name}`: cannot read {} ({e}). A credential file holds one \
                             secret, kept out of the config: under systemd the unit's \
                             `LoadCredential={name}:/etc/ztbridge/credentials/{name}` hands it to the service \
                             in $CREDENTIALS_DIRECTORY. Outside systemd ($CREDENTIALS_DIRECTORY is not set) a \
                             relative name is read from {place}: put the secret in {} (mode 0600), or give \
                             an absolute path",
                            path.display(),
                            path.display(),
                        ))
                    })
            }
        }
    }
}
