//! `ztbridge config check [FILE]`: validates the configuration and its
//! transforms (signatures, compilation, required config keys), warns about
//! what probably does not do what was meant (typos, impossible values), and
//! prints what would run, without serving and without creating anything:
//! no directory, no database, no compile cache.  Safe while the service
//! runs.  With `--event FILE`, also which routes that event would take and
//! the first request each would send (a dry run: nothing is sent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::Value;
use ztbridge_runtime::config::{Config, RouteConfig, env_name, suggest};
use ztbridge_runtime::egress::CannedTransport;
use ztbridge_runtime::flow::{self, Route};
use ztbridge_runtime::sandbox::Engine;
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::trust::{Trust, load_transform, signing};

use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration file (or --config FILE); without either, the
    /// built-in default configuration (with ZTBRIDGE_<ROUTE>_<KEY>
    /// variables).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The configuration file (the same as FILE).
    #[arg(long, short, value_name = "FILE", conflicts_with = "file")]
    pub config: Option<PathBuf>,
    /// A webhook body (JSON): show which routes it would take and the first
    /// request each would send.  Nothing is sent.
    #[arg(long, value_name = "EVENT.json")]
    pub event: Option<PathBuf>,
}

/// A route that would run, with what `--event` needs.
struct Ready {
    route: Route,
    engine: Arc<Engine>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let event = match &args.event {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => None,
    };
    check(args.file.or(args.config), event)
}

/// The check of `file` (or the built-in default), and with `event` (where
/// it comes from, its text) what that event would do.
pub(crate) fn check(
    file: Option<PathBuf>,
    event: Option<(String, String)>,
) -> anyhow::Result<ExitCode> {
    let builtins = builtin::all();
    let (config, strict) = match &file {
        Some(path) => (Config::load(path)?, true),
        None => (
            Config::builtin_default(&builtins.keys().cloned().collect::<Vec<_>>()),
            false,
        ),
    };
    super::init_logging(config.log_format);
    let mut errors: Vec<String> = Vec::new();
    let mut warnings = config.warnings();

    println!(
        "config: {}",
        file.as_ref()
            .map_or("built-in default".into(), |p| p.display().to_string())
    );
    println!("listen: {}", config.listen);
    let dir = config.data_dir();
    match data_dir_state(&dir) {
        Ok(state) => println!(
            "data_dir: {} ({}; {state})",
            dir.display(),
            config.data_dir_source()
        ),
        Err(problem) => errors.push(format!("data_dir {}: {problem}", dir.display())),
    }
    match config.store_settings() {
        Ok(Some(s)) => println!(
            "store: PostgreSQL at {} (node {}, lease {} s; not connected by this check)",
            shown_url(&s.url),
            s.node,
            s.lease.as_secs()
        ),
        Ok(None) => println!("store: SQLite in the data directory"),
        Err(e) => errors.push(e.to_string()),
    }
    match &config.inbound.token {
        None => println!("inbound: no authentication (keep `listen` on loopback)"),
        Some(token) => match token.resolve("inbound", "token") {
            Ok(t) if t.trim().len() >= 16 => {
                println!("inbound: token required (from {})", token.origin())
            }
            Ok(_) => errors.push("inbound.token must be at least 16 characters".into()),
            Err(e) => errors.push(e.to_string()),
        },
    }
    if config.inbound.token.is_none() && !config.listen.ip().is_loopback() {
        warnings.push(format!(
            "listen = {} is beyond loopback without webhook authentication: set [inbound] token",
            config.listen
        ));
    }

    let trust = if config.trust.allow_unsigned {
        warnings.push(
            "[trust] allow_unsigned = true: transform files load WITHOUT signature checks (development only)"
                .into(),
        );
        Trust::AnyFile
    } else if config.trust.keys.is_empty() {
        Trust::Keys(signing::load_public_keys(Vec::<PathBuf>::new())?)
    } else {
        match signing::load_public_keys(&config.trust.keys) {
            Ok(keys) => Trust::Keys(keys),
            Err(e) => {
                errors.push(format!("[trust] keys: {e}"));
                Trust::Keys(signing::load_public_keys(Vec::<PathBuf>::new())?)
            }
        }
    };
    let engine = Arc::new(Engine::new(config.limits.clone())?);

    let mut ready = Vec::new();
    for rc in &config.routes {
        if !rc.enabled {
            println!("route {}: not running (enabled = false)", rc.name);
            continue;
        }
        // No compile cache: checking creates nothing in the data directory.
        let transform = match load_transform(&engine, &rc.transform, &builtins, &trust, None) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("route `{}`: {}", rc.name, chain(&e)));
                continue;
            }
        };
        let declared: Vec<&str> = transform
            .info
            .config
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        for key in rc.config.keys().filter(|k| !declared.contains(&k.as_str())) {
            warnings.push(format!(
                "route `{}`: [route.config] {key} is not a key transform `{}` reads ({}){}",
                rc.name,
                transform.info.name,
                declared.join(", "),
                suggest(key, declared.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default()
            ));
        }
        let built = Route::build(rc, transform, &|k| std::env::var(k).ok()).and_then(|route| {
            // A destination no request could reach is an error now, not a
            // dead letter at delivery time.
            route.check_destinations(Some(std::time::Duration::from_secs(3)))?;
            // The transform's own validation (a template transform
            // compiles and renders its templates on a sample event).
            route.validate(&engine)?;
            Ok(route)
        });
        let route = match built {
            Ok(r) => r,
            Err(e) if !strict => {
                println!("route {}: not running ({e})", rc.name);
                continue;
            }
            Err(e) => {
                errors.push(chain(&e));
                continue;
            }
        };
        print_route(rc, &route);
        ready.push(Ready {
            route,
            engine: engine.clone(),
        });
    }

    for w in &warnings {
        println!("warning: {w}");
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        bail!(
            "{} error{} in {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            file.as_ref()
                .map_or("the built-in default configuration".into(), |p| p
                    .display()
                    .to_string())
        );
    }
    if ready.is_empty() {
        println!("no route would run");
        return Ok(ExitCode::from(1));
    }
    println!(
        "result: OK, {} route{} would run, {} warning{}",
        ready.len(),
        if ready.len() == 1 { "" } else { "s" },
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    if let Some((origin, body)) = event {
        show_event(&origin, body, &ready)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_route(rc: &RouteConfig, r: &Route) {
    let t = &r.transform;
    println!("route {}:", r.name);
    println!(
        "  transform: {} {} ({})",
        t.info.name, t.info.version, t.digest
    );
    println!("  source: {}", rc.transform);
    println!(
        "  takes: severities {}, states {}",
        list_or_all(&rc.severities),
        list_or_all(&rc.states)
    );
    if let Some(rate) = rc.rate_per_minute {
        println!("  rate: {rate}/min");
    }
    println!("  egress: {}", r.egress.describe());
    for key in &t.info.config {
        let env = env_name(&rc.name, &key.name);
        let origin = if std::env::var_os(&env).is_some() {
            format!(" (from {env})")
        } else {
            match rc.config.get(&key.name) {
                Some(v) => match v.literal() {
                    Some(_) => String::new(),
                    None => format!(" (from {})", v.origin()),
                },
                None => " (default)".into(),
            }
        };
        let shown = match r.config.get(&key.name) {
            None => "(unset)".to_string(),
            Some(_) if key.secret => format!("(set, secret){origin}"),
            Some(v) => format!("{v:?}{origin}"),
        };
        println!("  config {}: {shown}", key.name);
    }
}

/// The data directory as it is, without creating it: `Err` only when it
/// cannot be used at all.
fn data_dir_state(dir: &Path) -> Result<String, String> {
    use rustix::fs::{Access, access};
    if dir.is_dir() {
        let store = if dir.join("events.sqlite3").exists() {
            "event store present"
        } else {
            "no event store yet"
        };
        return Ok(match access(dir, Access::WRITE_OK | Access::EXEC_OK) {
            Ok(()) => format!("exists, writable, {store}"),
            Err(_) => {
                format!("exists, {store}, but NOT writable by this user: run as the service's user")
            }
        });
    }
    if dir.exists() {
        return Err("exists but is not a directory".into());
    }
    let parent = dir
        .ancestors()
        .skip(1)
        .find(|a| a.as_os_str().is_empty() || a.is_dir())
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .unwrap_or(Path::new("/"));
    Ok(format!(
        "does not exist yet: `serve` creates it (in {})",
        parent.display()
    ))
}

fn list_or_all(v: &[String]) -> String {
    if v.is_empty() {
        "all".into()
    } else {
        v.join(", ")
    }
}

/// An error and its causes, each said once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cur = err.source();
    }
    out
}

/// `--event`: the routes the event would take, and each one's first
/// request (what the flow sends before any answer), bodies as JSON.
fn show_event(origin: &str, body: String, ready: &[Ready]) -> anyhow::Result<()> {
    let parsed = zt_event::Event::parse(body.clone())
        .map_err(|e| anyhow::anyhow!("{origin}: not an event ztbridge accepts: {e}"))?;
    println!();
    println!(
        "event {} ({origin}): severity {}, state {} ({})",
        parsed.id().as_deref().unwrap_or("(no ID)"),
        parsed.severity().name(),
        parsed.state().as_deref().unwrap_or("(none)"),
        parsed.state_kind().name(),
    );
    let runtime = super::transform_run::offline_runtime()?;
    let mut taken = 0;
    for r in ready {
        let route = &r.route;
        if !route.filter.accepts(&parsed) {
            println!(
                "route {}: skips it (takes severities {}, states {})",
                route.name,
                list_or_all(&route.filter.severities),
                list_or_all(&route.filter.states)
            );
            continue;
        }
        taken += 1;
        let state: Arc<dyn TransformState> =
            Arc::new(MemoryState::with(&route.name, BTreeMap::new()));
        let event = flow::record(&flow::FlowInput {
            body: &body,
            receipt_id: "config-check",
            received_ms: ztbridge_runtime::time::now_millis(),
            attempt: 1,
        });
        let report = runtime.block_on(flow::run(
            &r.engine,
            route,
            &state,
            event,
            &CannedTransport::new(vec![]),
        ));
        let requests: Vec<Value> = report
            .steps
            .iter()
            .flat_map(|s| &s.requests)
            .map(super::transform_run::request_json)
            .collect();
        if requests.is_empty() {
            println!(
                "route {}: takes it, sends nothing ({})",
                route.name,
                serde_json::to_string(&report.outcome)?
            );
            continue;
        }
        println!(
            "route {}: takes it; first request (later ones depend on the destination's answers; secrets redacted):",
            route.name
        );
        for req in requests {
            println!("{}", serde_json::to_string_pretty(&req)?);
        }
    }
    if taken == 0 {
        println!("no route takes this event");
    }
    Ok(())
}

/// A store URL for output: without its password and query.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(a URL that does not parse)".into(),
    }
}
