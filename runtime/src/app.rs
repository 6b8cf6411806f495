//! Builds the running service from a configuration: engine, transforms,
//! routes, state store, transport and dispatcher.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::engine::{Engine, EngineError};
use crate::intake::Intake;
use crate::outbound::{HttpTransport, TransportError};
use crate::route::{Route, RouteError};
use crate::state::{SqliteState, StateError, StateStore};
use crate::transform::{Transform, TransformError};
use crate::Builtins;

/// The service's shared state, handed to the HTTP handlers.
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    pub engine: Arc<Engine>,
    pub intake: Intake,
    pub dispatcher: Arc<Dispatcher>,
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
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("no route is enabled: configure at least one (see the README)")]
    NoRoutes,
}

/// Loads `builtin:NAME` from the embedded set, anything else from a file.
pub fn load_transform(engine: &Engine, spec: &str, builtins: &Builtins) -> Result<Arc<Transform>, TransformError> {
    match spec.strip_prefix("builtin:") {
        Some(name) => {
            let bytes = builtins.get(name).ok_or_else(|| TransformError::UnknownBuiltin {
                name: name.to_string(),
                known: builtins.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
            Transform::load(engine, spec, bytes)
        }
        None => {
            let bytes = std::fs::read(spec)
                .map_err(|e| TransformError::Read { origin: spec.to_string(), message: e.to_string() })?;
            Transform::load(engine, spec, &bytes)
        }
    }
}

impl App {
    /// Builds everything.  `strict`: a route whose required config is
    /// missing is an error (a config file was given); otherwise it is
    /// skipped with a warning (the built-in default configuration).
    pub fn build(config: Config, builtins: &Builtins, strict: bool) -> Result<App, AppError> {
        let engine = Arc::new(Engine::new(config.limits.clone())?);
        let data_dir = config.data_dir();
        let state: Arc<dyn StateStore> = Arc::new(
            SqliteState::open(&data_dir)
                .map_err(|error| AppError::State { dir: data_dir.display().to_string(), error })?,
        );
        let mut routes = Vec::new();
        for rc in config.routes.iter().filter(|r| r.enabled) {
            let transform = load_transform(&engine, &rc.transform, builtins)?;
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
        if routes.is_empty() && strict {
            return Err(AppError::NoRoutes);
        }
        if routes.is_empty() {
            tracing::warn!("no route is enabled: webhooks are accepted and validated but go nowhere (set ZTBRIDGE_PAGERDUTY_ROUTING_KEY or pass --config)");
        }
        let transport = HttpTransport::new(
            Duration::from_millis(config.limits.request_timeout_ms),
            config.limits.max_response_body_bytes,
        )?;
        let dispatcher = Dispatcher::new(engine.clone(), routes, state, transport, config.delivery.clone());
        let intake = Intake::new(config.intake.clone());
        Ok(App { config, engine, intake, dispatcher })
    }
}
