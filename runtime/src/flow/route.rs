//! A configured route: a transform, its resolved config, the filter that
//! decides which events it takes, and its egress policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConfigError, RouteConfig, env_name};
use crate::egress::{EgressError, Policy};
use crate::sandbox::Transform;
use crate::sandbox::bindings::types::Step;
use crate::sandbox::{Engine, FlowContext, Sandbox};
use crate::store::{MemoryState, TransformState};
use crate::text::Redactor;

/// The config key a transform declares to offer a validation run
/// ([`Route::validate`]); the host sets it to `true` for that run only.
pub const VALIDATE_KEY: &str = "ztbridge_validate";

/// The event validation runs on: a typical lockout (the test fixture
/// `critical-lockout.json`).
pub const SAMPLE_EVENT: &str = r#"{
  "id": "RSW-20250611-000123",
  "severity": "Critical",
  "state": "LOCKED_OUT",
  "user": "CORP\\jsmith",
  "clientIPs": ["10.20.30.41"],
  "shares": ["\\\\prod-cluster-01\\finance"],
  "files": ["/ifs/data/finance/q2-forecast.xlsx.locked"],
  "detectors": ["Mass file rename"],
  "nes": ["prod-cluster-01"],
  "eventSource": "ISILON_CLUSTER",
  "detected": "2025-06-11T10:15:03Z",
  "url": "https://eyeglass.corp.example/RSW-20250611-000123"
}"#;

/// Which events a route takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Empty: every severity.
    pub severities: Vec<String>,
    /// Empty: every state.
    pub states: Vec<String>,
}

impl Filter {
    /// Whether the route takes this event.
    pub fn accepts(&self, event: &zt_event::Event) -> bool {
        let severity_ok = self.severities.is_empty()
            || zt_event::severity_matches(&event.severity(), &self.severities);
        let state_ok = self.states.is_empty()
            || event
                .state()
                .is_some_and(|s| zt_event::state_matches(&s, &self.states));
        severity_ok && state_ok
    }
}

/// A route ready to run.
pub struct Route {
    /// Unique name (logs, state namespace).
    pub name: Arc<str>,
    /// The compiled transform it runs.
    pub transform: Arc<Transform>,
    /// Config values the transform reads: route values over defaults.
    pub config: Arc<BTreeMap<String, String>>,
    /// Strips this route's secret values from logs and records.
    pub(crate) redactor: Arc<Redactor>,
    /// Where its requests may go.
    pub egress: Policy,
    /// The destinations its config names (`config:KEY` egress entries):
    /// key and URL, vetted at build and, with DNS, at start.
    destinations: Vec<(String, String)>,
    /// Which events it takes.
    pub filter: Filter,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "route `{route}`: required config key `{key}` is not set (set it in the route's [route.config] or in the environment as {env})"
    )]
    MissingConfig {
        route: String,
        key: String,
        env: String,
    },
    #[error(transparent)]
    Value(#[from] ConfigError),
    #[error("route `{route}`: {error}")]
    Egress {
        route: String,
        #[source]
        error: EgressError,
    },
    /// The transform's validation run (see [`Route::validate`]) refused
    /// the route's config.
    #[error("route `{route}`: the transform refused its config: {message}")]
    Invalid { route: String, message: String },
    #[error("route `{route}`: config key `{key}` ({error}): this URL could never be delivered to")]
    Destination {
        route: String,
        key: String,
        #[source]
        error: EgressError,
    },
}

impl Route {
    /// Resolves the route's config against what the transform declares.
    /// `env` looks up environment variables (injected for tests).
    ///
    /// One rule for the environment: `ZTBRIDGE_<ROUTE>_<KEY>`, when set,
    /// wins over the key's value in the file, whatever that value is (a
    /// literal, `{ env = ... }` or `{ file = ... }`, which is then not
    /// read, so a variable it names need not be set).
    pub fn build(
        cfg: &RouteConfig,
        transform: Arc<Transform>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Route, RouteError> {
        let mut values = BTreeMap::new();
        for key in &transform.info.config {
            if let Some(d) = &key.default_value {
                values.insert(key.name.clone(), d.clone());
            }
        }
        let mut overridden = BTreeMap::new();
        for key in &transform.info.config {
            if let Some(v) = env(&env_name(&cfg.name, &key.name)) {
                overridden.insert(key.name.clone(), v);
            }
        }
        for (key, value) in &cfg.config {
            if !transform.info.config.iter().any(|k| &k.name == key) {
                tracing::warn!(route = %cfg.name, "config key `{key}` is not one transform `{}` declares; passed on anyway", transform.info.name);
            }
            if !overridden.contains_key(key) {
                values.insert(key.clone(), value.resolve(&cfg.name, key)?);
            }
        }
        values.extend(overridden);
        for key in transform.info.config.iter().filter(|k| k.required) {
            if values.get(&key.name).is_none_or(|v| v.trim().is_empty()) {
                return Err(RouteError::MissingConfig {
                    route: cfg.name.clone(),
                    key: key.name.clone(),
                    env: env_name(&cfg.name, &key.name),
                });
            }
        }
        let redactor = Redactor::new(
            transform
                .secret_keys()
                .filter_map(|k| values.get(k).cloned()),
        );
        let networks: Vec<ipnet::IpNet> = cfg.private_networks.iter().map(|n| n.0).collect();
        let egress = Policy::new(
            &transform.info.egress,
            &values,
            cfg.egress.as_deref(),
            cfg.allow_http,
            &networks,
        )
        .map_err(|error| RouteError::Egress {
            route: cfg.name.clone(),
            error,
        })?;
        let destinations = transform
            .info
            .egress
            .iter()
            .filter_map(|e| e.strip_prefix("config:"))
            .filter_map(|key| {
                values
                    .get(key)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (key.to_string(), v.clone()))
            })
            .collect();
        let route = Route {
            name: Arc::from(cfg.name.as_str()),
            transform,
            config: Arc::new(values),
            redactor: Arc::new(redactor),
            egress,
            filter: Filter {
                severities: cfg.severities.clone(),
                states: cfg.states.clone(),
            },
            destinations,
        };
        route.check_destinations(None)?;
        Ok(route)
    }

    /// Runs the transform's validation, when it offers one: a transform
    /// that declares the config key [`VALIDATE_KEY`] is started once on
    /// [`SAMPLE_EVENT`] with that key set (and throwaway state); in that
    /// mode it checks its config (compiles templates...) and finishes
    /// without sending.  A failure refuses the route: a broken template is
    /// reported by `config check` and at start, not at delivery time.
    /// Transforms without the key are not run.  Returns the transform's
    /// message when it validated.
    pub fn validate(&self, engine: &Engine) -> Result<Option<String>, RouteError> {
        if !self
            .transform
            .info
            .config
            .iter()
            .any(|k| k.name == VALIDATE_KEY)
        {
            return Ok(None);
        }
        let invalid = |message: String| RouteError::Invalid {
            route: self.name.to_string(),
            message: self.redactor.apply(&message),
        };
        let mut config = (*self.config).clone();
        config.insert(VALIDATE_KEY.to_string(), "true".to_string());
        let event = super::record(&super::FlowInput {
            body: SAMPLE_EVENT,
            receipt_id: "ztbridge-validate",
            received_ms: 1_749_636_904_000,
            attempt: 1,
        });
        let state: Arc<dyn TransformState> =
            Arc::new(MemoryState::with(&self.name, BTreeMap::new()));
        let ctx = FlowContext::new(
            self.name.clone(),
            Arc::new(config),
            state,
            self.redactor.clone(),
        )
        .for_event(&event);
        let started = crate::sandbox::block_on(async {
            let mut sandbox = Sandbox::new(engine, &self.transform, ctx).await?;
            sandbox.start(&event).await
        });
        match started {
            Ok(Ok(Step::Done(message))) => Ok(Some(self.redactor.apply(&message))),
            Ok(Ok(Step::Send(_))) => Err(invalid(format!(
                "it declares `{VALIDATE_KEY}` but asked to send requests in validation mode"
            ))),
            Ok(Err(f)) => Err(invalid(f.message)),
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    /// Refuses a configured destination no request could reach: not a
    /// URL, a scheme or host the policy refuses, user info, a non-public
    /// address without `private_networks`.  With `dns`, names are also
    /// resolved (waiting at most that long) and refused when every address
    /// is; without, only `localhost` is known to be loopback.
    pub fn check_destinations(&self, dns: Option<std::time::Duration>) -> Result<(), RouteError> {
        for (key, url) in &self.destinations {
            self.egress
                .check_configured(url, dns)
                .map_err(|error| RouteError::Destination {
                    route: self.name.to_string(),
                    key: key.clone(),
                    error: match error {
                        // The message of a bad URL would show the value, which
                        // may be a secret.
                        EgressError::BadUrl(_) => {
                            EgressError::BadUrl("(the configured value)".into())
                        }
                        other => other,
                    },
                })?;
        }
        Ok(())
    }
}
