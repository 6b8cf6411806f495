//! The TOML configuration (see `ztbridge.example.toml` and the README):
//! its sections as plain data with defaults, loading and validation, and
//! config values taken from the environment or credential files.
//!
//! May import: nothing of the crate (every other module reads it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod limits;
mod value;
mod warnings;

pub use limits::{DeliveryPolicy, IntakeLimits, Limits};
pub use value::{ConfigValue, env_name};
pub use warnings::suggest;

/// The one name of the inbound token's variable: the built-in default
/// configuration reads it, the example config names it in `[inbound]`, and
/// `send-test` sends it.
pub const INBOUND_TOKEN_ENV: &str = "ZTBRIDGE_INBOUND_TOKEN";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the webhook server binds (keep it on loopback unless the
    /// appliance must reach it over the network).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where state is kept.  Default: `$STATE_DIRECTORY` (systemd), else
    /// `./ztbridge-data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// `text` (journald friendly) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Inbound request limits.
    #[serde(default)]
    pub intake: IntakeLimits,
    /// Retries of failed deliveries.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
    /// Optional authentication of `POST /webhook`.
    #[serde(default)]
    pub inbound: InboundAuth,
    /// Which transform files may load.
    #[serde(default)]
    pub trust: TrustConfig,
    /// Where events and deliveries live when several nodes share them
    /// (PostgreSQL).  Absent: SQLite in `data_dir`, nothing to run.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// The operator's console in the browser (`[admin]`): absent, there
    /// is none.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Destinations.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// `[admin]`: the operator's console, on its own listener (never the
/// webhook port).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the console's listener; beyond loopback only with a
    /// `token`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// The admin token operators log in with (not the inbound webhook
    /// token): a string, `{ env = "..." }` or `{ file = "..." }`.
    /// Without one (loopback only), a random token is written to
    /// `<data_dir>/admin-token` at each start.
    #[serde(default)]
    pub token: Option<ConfigValue>,
    /// How long a login lasts without being renewed (seconds).
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// Believe `X-Forwarded-Proto: https` from a TLS-terminating proxy in
    /// front of the console (its session cookie is then `Secure`).
    #[serde(default)]
    pub trust_proxy_headers: bool,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5001))
}

fn default_session_ttl_secs() -> u64 {
    8 * 3600
}

/// `[store]`: a PostgreSQL database shared by several nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host:5432/db?sslmode=verify-full&sslrootcert=...`;
    /// a string, `{ env = "..." }` or `{ file = "..." }`.
    /// `ZTBRIDGE_STORE_URL` wins over it.
    pub url: Option<ConfigValue>,
    /// The password, when kept out of the URL (`{ file = "..." }` for a
    /// systemd credential).  `ZTBRIDGE_STORE_PASSWORD` wins over it.
    #[serde(default)]
    pub password: Option<ConfigValue>,
    /// How long a node's claim lasts without its heartbeat: how long a
    /// dead node's work waits before another takes it over.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Pooled connections per node.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// This node's name, unique among the nodes and the same across its
    /// restarts (default: host name and listen port).
    #[serde(default)]
    pub node: Option<String>,
    /// Apply schema migrations at start (false: `ztbridge store migrate`
    /// does, and a node only checks the version).
    #[serde(default = "yes")]
    pub migrate: bool,
}

fn default_lease_secs() -> u64 {
    30
}

fn default_pool_size() -> usize {
    16
}

/// The store in effect, resolved: `[store]` with the environment's
/// overrides.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The PostgreSQL URL.
    pub url: String,
    /// The password, when kept apart.
    pub password: Option<String>,
    /// Lease length.
    pub lease: std::time::Duration,
    /// Pooled connections.
    pub pool_size: usize,
    /// This node's name.
    pub node: String,
    /// Apply migrations at start.
    pub migrate: bool,
}

/// Trust policy for transforms loaded from files.  Built-in transforms are
/// part of the binary and trusted with it (their digests are printed at
/// start); a file must carry a valid signature by one of `keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Public key files, or directories of `*.pub` files.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// Development only: load unsigned (or untrusted) files.  Logged as a
    /// warning at every start.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// Authentication of incoming webhooks.  Superna can send a static custom
/// header; ztbridge compares it in constant time.  With `token` unset every
/// webhook is accepted (keep `listen` on loopback then).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundAuth {
    /// The shared secret.  `{ env = "..." }` or `{ file = "..." }` keep it
    /// out of the file.
    pub token: Option<ConfigValue>,
    /// Header carrying it.  Default `Authorization`, as `Bearer <token>`;
    /// any other header carries the bare token (e.g. `X-Ztbridge-Token`).
    pub header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

fn yes() -> bool {
    true
}

/// One destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name: used in logs, state and `ZTBRIDGE_<NAME>_<KEY>`.
    pub name: String,
    /// `builtin:pagerduty`, `builtin:jitbit`, or a path to a `.wasm`.
    pub transform: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Deliver only these severities (`critical`, `major`, `warning`, or any
    /// other value as received).  Empty: all.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Deliver only these states: kinds (`lockout`, `delayed_lockout`,
    /// `access_restored`, `recovered`, `false_positive`) or raw values.
    /// Empty: all.
    #[serde(default)]
    pub states: Vec<String>,
    /// Allow plain `http://` requests (lab and loopback tests only).
    #[serde(default)]
    pub allow_http: bool,
    /// Narrows the transform's egress allow-list to these hosts
    /// (`host`, `host:port`, `*.domain`, IP addresses; no port: the
    /// scheme's default).
    #[serde(default)]
    pub egress: Option<Vec<String>>,
    /// Private, loopback or otherwise non-public networks this route may
    /// reach (`"10.20.0.0/16"`, `"127.0.0.1/32"`): on-premises
    /// destinations such as a self-hosted Jitbit.  Empty (the default):
    /// public addresses only.
    #[serde(default)]
    pub private_networks: Vec<Network>,
    /// At most this many deliveries (flows) per minute to this route's
    /// destination; none: unlimited.  PagerDuty accepts about 120 events
    /// a minute per routing key: the built-in default route uses 100.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Deliveries allowed at once before the rate applies (default: a
    /// tenth of `rate_per_minute`, at least 1).
    #[serde(default)]
    pub rate_burst: Option<u32>,
    /// Routes with the same `rate_key` share one limit (e.g. two routes
    /// using one PagerDuty routing key).  Default: the route's name.
    #[serde(default)]
    pub rate_key: Option<String>,
    /// At most this many of this route's deliveries run at once (its
    /// bulkhead); default: `delivery.route_max_in_flight`.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// The transform's config keys.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
}

/// A network in CIDR notation (`10.20.0.0/16`, `fd00::/8`); a bare
/// address is that one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(pub ipnet::IpNet);

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Network, String> {
        let t = s.trim();
        t.parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|n| Network(n.trunc()))
            .map_err(|_| {
                format!("`{s}` is not a network in CIDR notation (e.g. \"10.20.0.0/16\") or an IP address")
            })
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.0.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("route `{route}`: config key `{key}`: {message}")]
    Value {
        route: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        let beside = path
            .parent()
            .map_or_else(|| PathBuf::from("credentials"), |d| d.join("credentials"));
        config.set_credentials_dir(&beside);
        Ok(config)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: warnings::explain_unknown_field(&e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Where relative `{ file = ... }` values are read outside systemd
    /// (see [`ConfigValue::File`]).
    fn set_credentials_dir(&mut self, dir: &Path) {
        let values = self
            .routes
            .iter_mut()
            .flat_map(|r| r.config.values_mut())
            .chain(self.inbound.token.as_mut())
            .chain(self.admin.as_mut().and_then(|a| a.token.as_mut()));
        for value in values {
            if let ConfigValue::File {
                outside_systemd, ..
            } = value
            {
                *outside_systemd = Some(dir.to_path_buf());
            }
        }
    }

    /// The configuration used without a file: the built-in PagerDuty and
    /// Jitbit routes, each enabled only when its required keys are set
    /// through the environment (`ZTBRIDGE_PAGERDUTY_ROUTING_KEY`...), and
    /// webhook authentication when `ZTBRIDGE_INBOUND_TOKEN` is set.
    pub fn builtin_default(builtin_names: &[String]) -> Config {
        let routes = builtin_names
            .iter()
            .map(|name| RouteConfig {
                name: name.clone(),
                transform: format!("builtin:{name}"),
                enabled: true,
                severities: if name == "pagerduty" {
                    vec!["critical".into(), "major".into()]
                } else {
                    vec![]
                },
                states: vec![],
                allow_http: false,
                egress: None,
                private_networks: vec![],
                rate_per_minute: (name == "pagerduty").then_some(100),
                rate_burst: None,
                rate_key: None,
                max_in_flight: None,
                config: BTreeMap::new(),
            })
            .collect();
        Config {
            listen: default_listen(),
            data_dir: None,
            log_format: LogFormat::default(),
            limits: Limits::default(),
            intake: IntakeLimits::default(),
            delivery: DeliveryPolicy::default(),
            inbound: InboundAuth {
                token: std::env::var_os(INBOUND_TOKEN_ENV).map(|_| ConfigValue::Env {
                    env: INBOUND_TOKEN_ENV.into(),
                }),
                header: None,
            },
            trust: TrustConfig::default(),
            store: None,
            admin: None,
            routes,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(admin) = &self.admin {
            if admin.token.is_none() && !admin.listen.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "admin.listen {} is beyond loopback: set admin.token (the console refuses to listen beyond loopback without one)",
                    admin.listen
                )));
            }
            if admin.listen == self.listen {
                return Err(ConfigError::Invalid(
                    "admin.listen must differ from listen: the console never shares the webhook port".into(),
                ));
            }
            if !(60..=30 * 86_400).contains(&admin.session_ttl_secs) {
                return Err(ConfigError::Invalid(
                    "admin.session_ttl_secs must be 60..=2592000".into(),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.routes {
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid(format!(
                    "route name `{}` must be non-empty ASCII letters, digits, `-` or `_`",
                    r.name
                )));
            }
            if !seen.insert(r.name.to_ascii_lowercase()) {
                return Err(ConfigError::Invalid(format!(
                    "route name `{}` is used twice",
                    r.name
                )));
            }
        }
        let l = &self.limits;
        for r in &self.routes {
            if r.max_in_flight.is_some_and(|n| !(1..=10_000).contains(&n)) {
                return Err(ConfigError::Invalid(format!(
                    "route `{}`: max_in_flight must be 1..=10000 (omit it for the default share)",
                    r.name
                )));
            }
            if r.rate_per_minute == Some(0) || r.rate_burst == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "route `{}`: rate_per_minute and rate_burst must be positive (omit them for no limit)",
                    r.name
                )));
            }
        }
        let d = &self.delivery;
        let checks: [(bool, &str); 19] = [
            (
                d.route_max_in_flight
                    .is_none_or(|n| (1..=10_000).contains(&n)),
                "delivery.route_max_in_flight must be 1..=10000 (omit it for the slots divided by the routes)",
            ),
            (
                (100..=3_600_000).contains(&d.breaker_max_probe_ms),
                "delivery.breaker_max_probe_ms must be 100..=3600000",
            ),
            (l.fuel_per_step > 0, "limits.fuel_per_step must be positive"),
            (
                (1..=600_000).contains(&l.step_timeout_ms),
                "limits.step_timeout_ms must be 1..=600000",
            ),
            (
                (1 << 20..=4 << 30).contains(&l.memory_bytes),
                "limits.memory_bytes must be 1 MiB..=4 GiB",
            ),
            (
                (1..=1000).contains(&l.max_steps),
                "limits.max_steps must be 1..=1000",
            ),
            (
                (1..=10_000).contains(&l.max_instances),
                "limits.max_instances must be 1..=10000",
            ),
            (
                (100..=3_600_000).contains(&l.request_timeout_ms),
                "limits.request_timeout_ms must be 100..=3600000",
            ),
            (
                d.max_attempts <= 100_000,
                "delivery.max_attempts must be 0 (no limit but the horizon)..=100000",
            ),
            (
                (1..=30 * 86_400).contains(&d.retry_horizon_secs),
                "delivery.retry_horizon_secs must be 1..=2592000 (30 days)",
            ),
            (
                d.max_pending >= 1,
                "delivery.max_pending must be at least 1",
            ),
            (
                d.initial_backoff_ms >= 1 && d.initial_backoff_ms <= d.max_backoff_ms,
                "delivery.initial_backoff_ms must be 1..=max_backoff_ms",
            ),
            (
                d.dedupe_window_secs <= 30 * 86_400,
                "delivery.dedupe_window_secs must be at most 2592000 (30 days)",
            ),
            (
                self.delivery.max_backoff_ms <= 86_400_000,
                "delivery.max_backoff_ms must be at most a day",
            ),
            (
                (1024..=(1 << 30)).contains(&self.intake.max_decoded_bytes),
                "intake.max_decoded_bytes must be 1 KiB..=1 GiB",
            ),
            (
                (1024..=(1 << 30)).contains(&self.intake.max_body_bytes),
                "intake.max_body_bytes must be 1 KiB..=1 GiB",
            ),
            (
                (1..=3600).contains(&self.intake.header_read_timeout_secs),
                "intake.header_read_timeout_secs must be 1..=3600",
            ),
            (
                (1..=3600).contains(&self.intake.body_read_timeout_secs),
                "intake.body_read_timeout_secs must be 1..=3600",
            ),
            (
                self.intake
                    .max_connections
                    .is_none_or(|n| (1..=1 << 20).contains(&n)),
                "intake.max_connections must be 1..=1048576",
            ),
        ];
        if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(ConfigError::Invalid((*why).to_string()));
        }
        Ok(())
    }

    /// The shared store in effect: `[store]`, or `ZTBRIDGE_STORE_URL`
    /// alone; `None`: SQLite in the data directory.
    pub fn store_settings(&self) -> Result<Option<StoreSettings>, ConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let section = self.store.clone();
        let url = match (
            env("ZTBRIDGE_STORE_URL"),
            section.as_ref().and_then(|s| s.url.as_ref()),
        ) {
            (Some(url), _) => url,
            (None, Some(v)) => resolve_store(v, "url")?,
            (None, None) if section.is_some() => {
                return Err(ConfigError::Invalid(
                    "[store] needs url (or ZTBRIDGE_STORE_URL)".into(),
                ));
            }
            (None, None) => return Ok(None),
        };
        let password = match (
            env("ZTBRIDGE_STORE_PASSWORD"),
            section.as_ref().and_then(|s| s.password.as_ref()),
        ) {
            (Some(p), _) => Some(p),
            (None, Some(v)) => Some(resolve_store(v, "password")?),
            (None, None) => None,
        };
        let lease_secs = section
            .as_ref()
            .map_or(default_lease_secs(), |s| s.lease_secs);
        let pool_size = section
            .as_ref()
            .map_or(default_pool_size(), |s| s.pool_size);
        if !(1..=3600).contains(&lease_secs) {
            return Err(ConfigError::Invalid(
                "store.lease_secs must be 1..=3600".into(),
            ));
        }
        if !(2..=1000).contains(&pool_size) {
            return Err(ConfigError::Invalid(
                "store.pool_size must be 2..=1000".into(),
            ));
        }
        let node = section
            .as_ref()
            .and_then(|s| s.node.clone())
            .or_else(|| env("ZTBRIDGE_STORE_NODE"))
            .unwrap_or_else(|| format!("{}:{}", host_name(), self.listen.port()));
        Ok(Some(StoreSettings {
            url,
            password,
            lease: std::time::Duration::from_secs(lease_secs),
            pool_size,
            node,
            migrate: section.as_ref().is_none_or(|s| s.migrate),
        }))
    }

    /// Why [`Config::data_dir`] is what it is, for messages.
    pub fn data_dir_source(&self) -> &'static str {
        if self.data_dir.is_some() {
            "data_dir in the config"
        } else if std::env::var_os("STATE_DIRECTORY").is_some() {
            "$STATE_DIRECTORY, set by systemd"
        } else {
            "the default: data_dir is not set and $STATE_DIRECTORY (systemd) is not either"
        }
    }

    /// The data directory in effect.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            std::env::var_os("STATE_DIRECTORY")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("ztbridge-data"))
        })
    }
}

/// A `[store]` value, read from the environment or a file as declared.
fn resolve_store(v: &ConfigValue, key: &str) -> Result<String, ConfigError> {
    v.resolve("store", key).map_err(|e| match e {
        ConfigError::Value { message, .. } => {
            ConfigError::Invalid(format!("store.{key}: {message}"))
        }
        other => other,
    })
}

/// This machine's name (the default node name's first part).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ztbridge".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../../ztbridge.example.toml");
        let c = Config::parse(text, "example").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
        assert!(c.routes.iter().any(|r| r.transform == "builtin:pagerduty"));
    }

    #[test]
    fn rejects_unknown_keys_and_duplicate_routes() {
        assert!(Config::parse("listn = \"x\"", "t").is_err());
        let dup = "[[route]]\nname='a'\ntransform='builtin:x'\n[[route]]\nname='A'\ntransform='builtin:y'\n";
        assert!(matches!(
            Config::parse(dup, "t"),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn private_networks_parse_as_cidr_or_address() {
        let text = "[[route]]\nname='a'\ntransform='builtin:x'\nprivate_networks = ['10.20.0.0/16', '127.0.0.1', '::1', '10.1.2.3/8']\n";
        let c = Config::parse(text, "t").unwrap();
        let nets: Vec<String> = c.routes[0]
            .private_networks
            .iter()
            .map(|n| String::from(*n))
            .collect();
        assert_eq!(
            nets,
            ["10.20.0.0/16", "127.0.0.1/32", "::1/128", "10.0.0.0/8"]
        );
        let bad =
            "[[route]]\nname='a'\ntransform='builtin:x'\nprivate_networks = ['10.20.0.0/33']\n";
        let e = Config::parse(bad, "t").unwrap_err().to_string();
        assert!(e.contains("not a network in CIDR notation"), "{e}");
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("pagerduty", "routing_key"),
            "ZTBRIDGE_PAGERDUTY_ROUTING_KEY"
        );
        assert_eq!(env_name("pd-eu", "url"), "ZTBRIDGE_PD_EU_URL");
    }
}
