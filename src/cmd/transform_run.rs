//! `ztbridge transform run`: the dry run.  Runs a transform on an event
//! with canned responses; nothing is sent anywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::Value;
use ztbridge_runtime::config::{ConfigValue, RouteConfig};
use ztbridge_runtime::egress::CannedTransport;
use ztbridge_runtime::flow::Route;
use ztbridge_runtime::flow::{self, FlowReport, Outcome};
use ztbridge_runtime::sandbox::Transform;
use ztbridge_runtime::sandbox::bindings::types::{Event, Header, HttpResponse};
use ztbridge_runtime::store::{MemoryState, TransformState};
use ztbridge_runtime::trust::{Trust, load_transform};
use ztbridge_runtime::{config::Limits, sandbox::Engine};

use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// `builtin:NAME` or a path to a component (.wasm).
    pub transform: String,
    /// The webhook body (JSON); `-` reads standard input.
    #[arg(long)]
    pub event: PathBuf,
    /// A config value, `key=value` (repeatable); wins over --config.  Keys
    /// also come from ZTBRIDGE_<ROUTE>_<KEY>.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The service's configuration: the route named by --route (default:
    /// the one running this transform) gives its [route.config] and
    /// allow_http and private_networks.  (`--config KEY=VALUE`, the old spelling of --set, is
    /// still read as --set.)
    #[arg(long, short, value_name = "FILE")]
    pub config: Vec<String>,
    /// Canned responses, a JSON array consumed one per request, in order.
    /// Each is `{"status": 202, "headers": {"Name": "value"}, "body": ...}`
    /// (a non-string body is sent as JSON text); nested arrays group the
    /// responses of one step.  Without it the flow stops at its first
    /// request and shows it.
    #[arg(long)]
    pub responses: Option<PathBuf>,
    /// Transform state as a JSON object; read before and written after.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Route name (for state and ZTBRIDGE_<NAME>_<KEY>); default: the
    /// transform's name.
    #[arg(long)]
    pub route: Option<String>,
    /// Allow http:// URLs as a route with `allow_http = true` would.
    #[arg(long)]
    pub allow_http: bool,
    /// Allow requests to this non-public network (CIDR, or an address) as
    /// a route's `private_networks` would (repeatable).
    #[arg(long = "private-network", value_parser = parse_network)]
    pub private_networks: Vec<ztbridge_runtime::config::Network>,
    /// Verify the file's signature against these public keys first (files
    /// or directories; repeatable).  Without it any file runs: nothing is
    /// sent in a dry run.
    #[arg(long)]
    pub trusted: Vec<PathBuf>,
    /// Delivery attempt number given to the transform.
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// Keep compiled components in this directory: 12-18 MB JavaScript and
    /// Python components compile in seconds; a cached one loads in
    /// milliseconds.
    #[arg(long, env = "ZTBRIDGE_COMPILE_CACHE")]
    pub cache: Option<PathBuf>,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn parse_response(v: &Value) -> anyhow::Result<HttpResponse> {
    let status = v
        .get("status")
        .and_then(Value::as_u64)
        .context("each canned response needs a numeric `status`")?;
    let headers = match v.get("headers") {
        None | Some(Value::Null) => vec![],
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| Header {
                name: k.clone(),
                value: v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            })
            .collect(),
        Some(_) => bail!("`headers` of a canned response must be an object"),
    };
    let body = match v.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(HttpResponse {
        status: u16::try_from(status).context("status out of range")?,
        headers,
        body,
    })
}

fn load_responses(path: &PathBuf) -> anyhow::Result<Vec<HttpResponse>> {
    let v: Value = serde_json::from_str(&read(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    responses_from_json(&v).with_context(|| path.display().to_string())
}

/// Canned responses from their JSON form (see `--responses`).
pub(crate) fn responses_from_json(v: &Value) -> anyhow::Result<Vec<HttpResponse>> {
    let Value::Array(items) = v else {
        bail!("expected a JSON array of responses")
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Array(group) => {
                for r in group {
                    out.push(parse_response(r)?);
                }
            }
            other => out.push(parse_response(other)?),
        }
    }
    Ok(out)
}

/// One offline flow: what `transform run` and `transform test` share.
pub(crate) struct DryRun {
    pub transform: Arc<Transform>,
    /// The transform as named on the command line (`builtin:NAME` or a path).
    pub spec: String,
    pub route: String,
    pub config: BTreeMap<String, ConfigValue>,
    pub allow_http: bool,
    /// Non-public networks the requests may go to, as a route's
    /// `private_networks`.
    pub private_networks: Vec<ztbridge_runtime::config::Network>,
    pub state: BTreeMap<String, String>,
    pub event: Event,
    pub responses: Vec<HttpResponse>,
}

impl DryRun {
    /// Runs the flow with canned responses; `env` supplies
    /// ZTBRIDGE_<ROUTE>_<KEY> values.  Returns the report and the state
    /// after the flow.
    pub(crate) fn run(
        self,
        engine: &Arc<Engine>,
        runtime: &tokio::runtime::Runtime,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<(FlowReport, BTreeMap<String, String>)> {
        let route_config = RouteConfig {
            name: self.route.clone(),
            transform: self.spec.clone(),
            enabled: true,
            severities: vec![],
            states: vec![],
            allow_http: self.allow_http,
            egress: None,
            private_networks: self.private_networks,
            rate_per_minute: None,
            rate_burst: None,
            rate_key: None,
            max_in_flight: None,
            config: self.config,
        };
        let route = Route::build(&route_config, self.transform, env)?;
        let memory = Arc::new(MemoryState::with(&self.route, self.state));
        let state: Arc<dyn TransformState> = memory.clone();
        let transport = CannedTransport::new(self.responses);
        let report = runtime.block_on(flow::run(engine, &route, &state, self.event, &transport));
        let after = memory.dump(&self.route)?;
        Ok((report, after))
    }
}

/// The single-threaded runtime the offline commands drive flows on.
pub(crate) fn offline_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging(Default::default());
    let body = read(&args.event)?;
    serde_json::from_str::<Value>(&body)
        .with_context(|| format!("{} is not valid JSON", args.event.display()))?;
    let responses = match &args.responses {
        Some(p) => load_responses(p)?,
        None => vec![],
    };
    let mut sets = args.set.clone();
    let mut file = None;
    for c in &args.config {
        if c.contains('=') && !std::path::Path::new(c).exists() {
            eprintln!(
                "note: --config {c}: read as --set {c} (--config names the service's config file)"
            );
            sets.push(c.clone());
        } else if file.replace(PathBuf::from(c)).is_some() {
            bail!("--config FILE given twice");
        }
    }
    let mut config = BTreeMap::new();
    let mut allow_http = args.allow_http;
    let mut private_networks = args.private_networks.clone();
    let mut route_name = args.route.clone();
    if let Some(path) = &file {
        let service = ztbridge_runtime::config::Config::load(path)?;
        let wanted = |r: &&RouteConfig| match &args.route {
            Some(name) => r.name == *name,
            None => r.transform == args.transform,
        };
        let Some(rc) = service.routes.iter().find(wanted) else {
            bail!(
                "{}: no route {} (routes: {})",
                path.display(),
                match &args.route {
                    Some(n) => format!("named `{n}`"),
                    None => format!("runs {}; pass --route NAME", args.transform),
                },
                service
                    .routes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        config = rc.config.clone();
        allow_http |= rc.allow_http;
        private_networks.extend(rc.private_networks.iter().cloned());
        route_name.get_or_insert_with(|| rc.name.clone());
    }
    for kv in &sets {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        config.insert(k.trim().to_string(), ConfigValue::Text(v.to_string()));
    }

    let engine = Arc::new(Engine::new(Limits::default())?);
    let trust = if args.trusted.is_empty() {
        Trust::AnyFile
    } else {
        Trust::Keys(ztbridge_runtime::trust::signing::load_public_keys(
            &args.trusted,
        )?)
    };
    let cache = args
        .cache
        .as_ref()
        .map(ztbridge_runtime::sandbox::CompileCache::new);
    let transform = load_transform(
        &engine,
        &args.transform,
        &builtin::all(),
        &trust,
        cache.as_ref(),
    )?;
    let name = route_name.unwrap_or_else(|| transform.info.name.clone());
    let initial: BTreeMap<String, String> = match &args.state {
        Some(p) if p.exists() => serde_json::from_str(&read(p)?)
            .with_context(|| format!("{}: expected a JSON object of strings", p.display()))?,
        _ => BTreeMap::new(),
    };
    let event = ztbridge_runtime::flow::record(&ztbridge_runtime::flow::FlowInput {
        body: &body,
        receipt_id: "dry-run",
        received_ms: ztbridge_runtime::time::now_millis(),
        attempt: args.attempt,
    });
    let dry = DryRun {
        transform: transform.clone(),
        spec: args.transform.clone(),
        route: name.clone(),
        config,
        allow_http,
        private_networks,
        state: initial,
        event,
        responses,
    };
    let (report, after) = dry.run(&engine, &offline_runtime()?, &|k| std::env::var(k).ok())?;

    if let Some(p) = &args.state {
        std::fs::write(p, serde_json::to_string_pretty(&after)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let out = serde_json::json!({
        "transform": { "source": transform.source, "name": transform.info.name, "version": transform.info.version, "digest": transform.digest },
        "route": name,
        "steps": steps_json(&report)?,
        "outcome": report.outcome,
        "logs": report.logs,
        "state_writes": report.state_writes,
        "fuel_used": report.fuel_used,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(match report.outcome {
        Outcome::Failed { .. } => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// `--private-network` as a route's `private_networks` entry.
fn parse_network(s: &str) -> Result<ztbridge_runtime::config::Network, String> {
    ztbridge_runtime::config::Network::try_from(s.to_string())
}

/// A request as shown: its body as JSON when it is JSON (not as a string
/// of escaped JSON), else as text.
pub(crate) fn request_json(r: &ztbridge_runtime::flow::RequestRecord) -> Value {
    let body = match serde_json::from_str::<Value>(&r.body) {
        Ok(v) if !r.body.trim().is_empty() => v,
        _ => Value::String(r.body.clone()),
    };
    serde_json::json!({
        "method": r.method,
        "url": r.url,
        "headers": r.headers,
        "body": body,
    })
}

/// The report's steps with [`request_json`] bodies.
fn steps_json(report: &FlowReport) -> anyhow::Result<Value> {
    let mut steps = serde_json::to_value(&report.steps)?;
    for (step, record) in steps
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(&report.steps)
    {
        step["requests"] = record.requests.iter().map(request_json).collect();
    }
    Ok(steps)
}
