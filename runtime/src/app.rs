//! Builds the running service from a configuration: engine, transforms,
//! routes, state store, transport and dispatcher.

use std::sync::Arc;
use std::time::Duration;

use crate::Builtins;
use crate::auth::WebhookAuth;
use crate::cache::CompileCache;
use crate::config::{Config, ConfigError, TrustConfig};
use crate::dispatch::Dispatcher;
use crate::engine::{Engine, EngineError};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::outbound::{HttpTransport, TransportError};
use crate::rate::RateLimits;
use crate::route::{Route, RouteError};
use crate::signing::{self, SigningError, TrustedKeys, load_public_keys};
use crate::state::{SqliteState, StateError, StateStore};
use crate::store::{Store, StoreError};
use crate::transform::{Transform, TransformError};

/// The service's shared state, handed to the HTTP handlers.
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    pub engine: Arc<Engine>,
    pub intake: Intake,
    pub dispatcher: Arc<Dispatcher>,
    /// Webhook authentication, when configured.
    pub auth: Arc<Option<WebhookAuth>>,
    /// What `/metrics` exports.
    pub metrics: Arc<Metrics>,
    /// Whether a route with missing config is an error (a config file was
    /// given) or skipped (the built-in default); reload does the same.
    pub strict: bool,
    /// Compiled components on disk (`<data_dir>/compile-cache`), so a
    /// restart or reload does not recompile.
    pub cache: CompileCache,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("data directory {dir}: {error}")]
    State { dir: String, error: StateError },
    #[error("data directory {dir}: {error}")]
    Store { dir: String, error: StoreError },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("[trust] keys: {0}")]
    Trust(#[from] SigningError),
    #[error("no route is enabled: configure at least one (see the README)")]
    NoRoutes,
}

/// Which files may load.
pub enum Trust {
    /// Only files signed by one of these keys.
    Keys(TrustedKeys),
    /// Anything (development switch, dry runs).
    AnyFile,
}

impl Trust {
    /// From the `[trust]` config section.
    pub fn from_config(cfg: &TrustConfig) -> Result<Trust, SigningError> {
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

/// Loads `builtin:NAME` from the embedded set, anything else from a file
/// whose signature `trust` accepts (checked before compiling).
pub fn load_transform(
    engine: &Engine,
    spec: &str,
    builtins: &Builtins,
    trust: &Trust,
) -> Result<Arc<Transform>, TransformError> {
    load_transform_cached(engine, spec, builtins, trust, None)
}

/// [`load_transform`] with an on-disk compile cache (the signature is
/// checked on the wasm bytes first; the cache is keyed by their digest).
pub fn load_transform_cached(
    engine: &Engine,
    spec: &str,
    builtins: &Builtins,
    trust: &Trust,
    cache: Option<&CompileCache>,
) -> Result<Arc<Transform>, TransformError> {
    match spec.strip_prefix("builtin:") {
        Some(name) => {
            let bytes = builtins
                .get(name)
                .ok_or_else(|| TransformError::UnknownBuiltin {
                    name: name.to_string(),
                    known: builtins.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
            Transform::load_with_cache(engine, spec, bytes, cache)
        }
        None => {
            let bytes = std::fs::read(spec).map_err(|e| TransformError::Read {
                origin: spec.to_string(),
                message: e.to_string(),
            })?;
            match trust {
                Trust::AnyFile => {
                    if signing::signers(&bytes)
                        .map(|s| s.is_empty())
                        .unwrap_or(true)
                    {
                        tracing::warn!(
                            file = spec,
                            "loading an UNSIGNED transform (development mode)"
                        );
                    }
                }
                Trust::Keys(keys) => {
                    let verified = signing::verify(&bytes, keys).map_err(|error| {
                        TransformError::Untrusted {
                            origin: spec.to_string(),
                            error,
                        }
                    })?;
                    tracing::info!(file = spec, signers = ?verified.key_ids, "transform signature verified");
                }
            }
            Transform::load_with_cache(engine, spec, &bytes, cache)
        }
    }
}

impl App {
    /// Builds everything.  `strict`: a route whose required config is
    /// missing is an error (a config file was given); otherwise it is
    /// skipped with a warning (the built-in default configuration).
    pub fn build(config: Config, builtins: &Builtins, strict: bool) -> Result<App, AppError> {
        let auth = Arc::new(WebhookAuth::from_config(&config.inbound)?);
        if auth.is_none() && !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen, "listening beyond loopback without webhook authentication: set [inbound] token");
        }
        let trust = Trust::from_config(&config.trust)?;
        let engine = Arc::new(Engine::new(config.limits.clone())?);
        let data_dir = config.data_dir();
        let state: Arc<dyn StateStore> = Arc::new(SqliteState::open(&data_dir).map_err(
            |error| AppError::State {
                dir: data_dir.display().to_string(),
                error,
            },
        )?);
        let cache = CompileCache::new(data_dir.join("compile-cache"));
        let routes = build_routes(&config, &engine, builtins, &trust, strict, &cache)?;
        if routes.is_empty() && strict {
            return Err(AppError::NoRoutes);
        }
        if routes.is_empty() {
            tracing::warn!(
                "no route is enabled: webhooks are accepted and validated but go nowhere (set ZTBRIDGE_PAGERDUTY_ROUTING_KEY or pass --config)"
            );
        }
        let transport = HttpTransport::new(
            Duration::from_millis(config.limits.request_timeout_ms),
            config.limits.max_response_body_bytes,
        )?;
        let store = Arc::new(Store::open(&data_dir).map_err(|error| AppError::Store {
            dir: data_dir.display().to_string(),
            error,
        })?);
        let rates = rate_limits(&config, &routes);
        let metrics = Arc::new(Metrics::new());
        let dispatcher = Dispatcher::new(
            engine.clone(),
            routes,
            state,
            transport,
            config.delivery.clone(),
            store,
            rates,
            metrics.clone(),
        );
        let intake = Intake::new(config.intake.clone());
        Ok(App {
            config,
            engine,
            intake,
            dispatcher,
            auth,
            metrics,
            cache,
            strict,
        })
    }
}

/// Loads every enabled route's transform (signature checked before
/// compiling) and resolves its config.
fn build_routes(
    config: &Config,
    engine: &Engine,
    builtins: &Builtins,
    trust: &Trust,
    strict: bool,
    cache: &CompileCache,
) -> Result<Vec<Arc<Route>>, AppError> {
    let mut routes = Vec::new();
    for rc in config.routes.iter().filter(|r| r.enabled) {
        let transform = load_transform_cached(engine, &rc.transform, builtins, trust, Some(cache))?;
        match Route::build(rc, transform, &|k| std::env::var(k).ok()) {
            Ok(route) => {
                tracing::info!(
                    route = %route.name,
                    transform = %route.transform.info.name,
                    version = %route.transform.info.version,
                    digest = %route.transform.digest,
                    egress = %route.egress.describe(),
                    "route ready"
                );
                routes.push(Arc::new(route));
            }
            Err(e @ RouteError::MissingConfig { .. }) if !strict => {
                tracing::warn!("route `{}` disabled: {e}", rc.name);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(routes)
}

fn rate_limits(config: &Config, routes: &[Arc<Route>]) -> RateLimits {
    RateLimits::new(
        config
            .routes
            .iter()
            .filter(|rc| routes.iter().any(|r| *r.name == *rc.name)),
    )
}

impl App {
    /// Reload (SIGHUP): re-reads the routes and the trust policy from
    /// `config`, verifies and compiles every transform, and only if all of
    /// that succeeds replaces the running routes.  On any error the old
    /// routes keep running.  Attempts in flight finish on the version they
    /// started with.  Settings that need a restart (listen, data_dir,
    /// limits, intake, delivery, inbound) are reported, not applied.
    /// Returns the new routes' names and digests.
    pub fn reload(&self, config: &Config, builtins: &Builtins) -> Result<Vec<String>, AppError> {
        let trust = Trust::from_config(&config.trust)?;
        let routes = build_routes(
            config,
            &self.engine,
            builtins,
            &trust,
            self.strict,
            &self.cache,
        )?;
        if routes.is_empty() && self.strict {
            return Err(AppError::NoRoutes);
        }
        let fixed = |c: &Config| {
            serde_json::to_string(&(
                &c.listen,
                &c.data_dir,
                &c.limits,
                &c.intake,
                &c.delivery,
                &c.inbound,
            ))
            .unwrap_or_default()
        };
        if fixed(config) != fixed(&self.config) {
            tracing::warn!(
                "reload: listen, data_dir, [limits], [intake], [delivery] and [inbound] changes need a restart; they are not applied"
            );
        }
        let summary = routes
            .iter()
            .map(|r| format!("{} {}", r.name, r.transform.digest))
            .collect();
        let rates = rate_limits(config, &routes);
        self.dispatcher
            .replace_routes(crate::dispatch::RouteSet::new(routes, rates));
        Ok(summary)
    }
}
