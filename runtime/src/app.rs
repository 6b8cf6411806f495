//! Builds the running service from a configuration: engine, transforms,
//! routes, store, transport, dispatcher and the HTTP state.  The
//! composition root: it may import every module.

use std::sync::Arc;
use std::time::Duration;

use crate::Builtins;
use crate::config::{Config, ConfigError};
use crate::console::{AdminAuth, ConsoleState};
use crate::delivery::{Dispatcher, RouteSet};
use crate::egress::{ClientError, HttpTransport};
use crate::flow::{Route, RouteError};
use crate::http::{HttpState, Intake, WebhookAuth};
use crate::ops::Metrics;
use crate::sandbox::{CompileCache, Engine, EngineError};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::trust::{LoadError, SigningError, Trust, load_transform};

/// The running service.
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// The wasm engine every transform runs in.
    pub(crate) engine: Arc<Engine>,
    /// What the HTTP handlers share (intake, dispatcher, auth, metrics).
    pub(crate) http: Arc<HttpState>,
    /// Stores webhooks and runs their deliveries.
    pub dispatcher: Arc<Dispatcher>,
    /// Whether a route with missing config is an error (a config file was
    /// given) or skipped (the built-in default); reload does the same.
    pub(crate) strict: bool,
    /// Compiled components on disk (`<data_dir>/compile-cache`), so a
    /// restart or reload does not recompile.
    pub(crate) cache: CompileCache,
    /// The operator's console, when `[admin]` asks for one.
    pub(crate) console: Option<Arc<ConsoleState>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Transform(#[from] LoadError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("event store {dir}")]
    Store {
        dir: String,
        #[source]
        error: StoreError,
    },
    #[error("data directory {dir}: cannot make it private")]
    Files {
        dir: String,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("[trust] keys")]
    Trust(#[from] SigningError),
    #[error("no route is enabled: configure at least one (see the README)")]
    NoRoutes,
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
        // Before the compile cache is read: it trusts only a private
        // directory.
        make_private(&data_dir)?;
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
        let (store, disk_dir) = open_store(&config, None, false)?;
        if let Some(dir) = &disk_dir {
            // The store's new files, when the umask left them open.
            make_private(dir)?;
        }
        let routes = route_set(&config, routes);
        let metrics = Arc::new(Metrics::new());
        let dispatcher = Dispatcher::new(
            engine.clone(),
            routes,
            transport,
            config.delivery.clone(),
            store,
            disk_dir,
            metrics.clone(),
        );
        let max_connections = config
            .intake
            .max_connections_effective(config.limits.max_instances);
        let http = Arc::new(HttpState {
            max_connections,
            intake: Intake::new(config.intake.clone()),
            dispatcher: dispatcher.clone(),
            auth,
            metrics,
        });
        let console = match &config.admin {
            Some(admin) => {
                let inbound = match &config.inbound.token {
                    Some(t) => Some(t.resolve("inbound", "token")?),
                    None => None,
                };
                let token = crate::console::admin_token(admin, inbound.as_deref(), &data_dir)?;
                Some(Arc::new(ConsoleState {
                    dispatcher: dispatcher.clone(),
                    auth: AdminAuth::new(&token, admin.session_ttl_secs, admin.trust_proxy_headers),
                }))
            }
            None => None,
        };
        Ok(App {
            config,
            engine,
            http,
            dispatcher,
            cache,
            strict,
            console,
        })
    }
}

/// The store `config` names: PostgreSQL when `[store]` (or
/// `ZTBRIDGE_STORE_URL`) says so, else SQLite in the data directory
/// (`data_dir` overrides the config's; `existing`: refuse to create one).
/// Returns it with the directory whose free space guards intake (SQLite
/// only).  Needs a tokio runtime (PostgreSQL's group commits run on it).
pub fn open_store(
    config: &Config,
    data_dir: Option<&std::path::Path>,
    existing: bool,
) -> Result<(Arc<dyn Store>, Option<std::path::PathBuf>), AppError> {
    if let Some(s) = config.store_settings()? {
        let store = PgStore::new(PgOptions {
            url: s.url,
            password: s.password,
            node: s.node,
            lease: s.lease,
            pool_size: s.pool_size,
            migrate: s.migrate,
        })
        .map_err(|error| AppError::Store {
            dir: "[store]".into(),
            error,
        })?;
        return Ok((Arc::new(store), None));
    }
    let dir = data_dir.map_or_else(|| config.data_dir(), std::path::Path::to_path_buf);
    let opened = if existing {
        SqliteStore::open_existing(&dir)
    } else {
        SqliteStore::open(&dir)
    };
    let store = opened.map_err(|error| AppError::Store {
        dir: dir.display().to_string(),
        error,
    })?;
    Ok((Arc::new(store), Some(dir)))
}

/// The store for a command that only reads (`events list`, `events
/// show`): SQLite opened read-only; a shared store as `open_store` does
/// (its commands only run SELECTs).
pub fn open_store_read_only(
    config: &Config,
    data_dir: Option<&std::path::Path>,
) -> Result<Arc<dyn Store>, AppError> {
    if config.store_settings()?.is_some() {
        return open_store(config, data_dir, true).map(|(s, _)| s);
    }
    let dir = data_dir.map_or_else(|| config.data_dir(), std::path::Path::to_path_buf);
    let store = SqliteStore::open_read_only(&dir).map_err(|error| AppError::Store {
        dir: dir.display().to_string(),
        error,
    })?;
    Ok(Arc::new(store))
}

/// Makes the data directory and its files private (0700, 0600); logs
/// what an earlier run or umask had left open.
fn make_private(data_dir: &std::path::Path) -> Result<(), AppError> {
    let changed = crate::files::make_private(data_dir).map_err(|error| AppError::Files {
        dir: data_dir.display().to_string(),
        error,
    })?;
    for t in changed {
        tracing::warn!(path = %t.path.display(), "made private: mode {:o} -> {:o}", t.was, t.now);
    }
    Ok(())
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
        let transform = load_transform(engine, &rc.transform, builtins, trust, Some(cache))?;
        let built = Route::build(rc, transform, &|k| std::env::var(k).ok()).and_then(|route| {
            route.check_destinations(Some(Duration::from_secs(3)))?;
            // A broken template is refused now, not at delivery time.
            route.validate(engine)?;
            Ok(route)
        });
        match built {
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

/// The routes with the rate limits and bulkheads their config sets.
fn route_set(config: &Config, routes: Vec<Arc<Route>>) -> RouteSet {
    let running = || {
        config
            .routes
            .iter()
            .filter(|rc| routes.iter().any(|r| *r.name == *rc.name))
    };
    let limits = crate::delivery::rate::limits(running());
    let caps = crate::delivery::bulkhead::caps(
        running(),
        config.delivery.route_max_in_flight,
        config.limits.max_instances,
    );
    RouteSet::new(routes, limits, caps)
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
                &c.store,
                &c.admin,
            ))
            .unwrap_or_default()
        };
        if fixed(config) != fixed(&self.config) {
            tracing::warn!(
                "reload: listen, data_dir, [limits], [intake], [delivery], [inbound], [store] and [admin] changes need a restart; they are not applied"
            );
        }
        let summary = routes
            .iter()
            .map(|r| format!("{} {}", r.name, r.transform.digest))
            .collect();
        self.dispatcher.replace_routes(route_set(config, routes));
        Ok(summary)
    }
}

impl App {
    /// Starts delivering and serves webhooks on `listener` until
    /// `shutdown` completes, then drains.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let console = match (&self.console, &self.config.admin) {
            (Some(state), Some(admin)) => {
                let admin_listener =
                    tokio::net::TcpListener::bind(admin.listen)
                        .await
                        .map_err(|e| {
                            std::io::Error::new(
                                e.kind(),
                                format!("cannot listen on admin.listen {}: {e}", admin.listen),
                            )
                        })?;
                let state = state.clone();
                let rx = stop_rx.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = crate::console::run(admin_listener, state, stopped(rx)).await {
                        tracing::error!("the console stopped: {e}");
                    }
                }))
            }
            _ => None,
        };
        let served = crate::http::run(listener, self.http.clone(), async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
        if let Some(c) = console {
            let _ = c.await;
        }
        served
    }
}
