//! `ztbridge transform test`: golden tests.  Runs a transform on every
//! fixture of a directory (an event, canned responses, the expected steps
//! and outcome), prints a readable diff on mismatch and the fuel each
//! fixture used, and exits non-zero when any fixture fails.
//!
//! A fixture is one JSON file (see docs/writing-transforms.md):
//!
//! ```json
//! {
//!   "description": "a critical lockout triggers an alert",
//!   "event": { "id": "RSW-1", "severity": "CRITICAL" },
//!   "config": { "routing_key": "R0UTINGKEY" },
//!   "responses": [ { "status": 202, "body": "{}" } ],
//!   "expect": {
//!     "steps": [ { "requests": [ { "method": "POST", "url": "...", "body": { } } ] } ],
//!     "outcome": { "status": "done", "message": "..." }
//!   }
//! }
//! ```
//!
//! Optional: `event_file` (a path relative to the fixture) instead of
//! `event`, `state` (initial state), `attempt`, `received_at`, `receipt_id`,
//! `allow_http`, `private_networks` (a list, as in a route); in `expect`: `state_writes` and `logs`.  Only what
//! `expect` names is compared; a request without `headers` does not
//! compare headers; headers are written `"Name: value"`.  A request body given as JSON (not a string) is
//! compared as JSON.  `--update` writes what the transform did as the
//! expectation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use ztbridge_runtime::config::ConfigValue;
use ztbridge_runtime::flow::FlowReport;
use ztbridge_runtime::sandbox::CompileCache;
use ztbridge_runtime::sandbox::Transform;
use ztbridge_runtime::{config::Limits, sandbox::Engine};

use super::transform_run::{DryRun, offline_runtime, responses_from_json};
use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// `builtin:NAME` or a path to a component (.wasm).
    pub transform: String,
    /// Directory of fixtures (`*.json`), or one fixture file.
    pub fixtures: PathBuf,
    /// Write what the transform did as each fixture's `expect` (review the
    /// change with `git diff` before committing it).
    #[arg(long)]
    pub update: bool,
    /// Keep compiled components in this directory (large JavaScript or
    /// Python components compile in seconds; a cached one loads in
    /// milliseconds).
    #[arg(long, env = "ZTBRIDGE_COMPILE_CACHE")]
    pub cache: Option<PathBuf>,
}

const DEFAULT_RECEIVED_AT: &str = "2025-01-01T00:00:00Z";

fn fixture_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read fixtures directory {}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no fixtures (*.json) in {}", path.display());
    }
    Ok(files)
}

fn load(
    engine: &Engine,
    spec: &str,
    cache: Option<&CompileCache>,
) -> anyhow::Result<Arc<Transform>> {
    let bytes: Arc<[u8]> = match spec.strip_prefix("builtin:") {
        Some(name) => {
            let all = builtin::all();
            all.get(name).cloned().with_context(|| {
                format!(
                    "unknown built-in transform `{name}` (built-ins: {})",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?
        }
        None => Arc::from(std::fs::read(spec).with_context(|| format!("cannot read {spec}"))?),
    };
    Ok(Transform::load_with_cache(engine, spec, &bytes, cache)?)
}

fn strings(v: Option<&Value>, what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect(),
        Some(_) => bail!("`{what}` must be an object"),
    }
}

/// Reads a fixture into a dry run.
fn prepare(
    path: &Path,
    fixture: &Value,
    transform: &Arc<Transform>,
    spec: &str,
) -> anyhow::Result<DryRun> {
    let body = match (fixture.get("event"), fixture.get("event_file")) {
        (Some(Value::String(s)), None) => s.clone(),
        (Some(v), None) => v.to_string(),
        (None, Some(Value::String(f))) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(f);
            std::fs::read_to_string(&p).with_context(|| format!("event_file {}", p.display()))?
        }
        _ => bail!("a fixture needs `event` (the webhook body) or `event_file`, not both"),
    };
    let config = strings(fixture.get("config"), "config")?
        .into_iter()
        .map(|(k, v)| (k, ConfigValue::Text(v)))
        .collect();
    let responses = match fixture.get("responses") {
        None | Some(Value::Null) => vec![],
        Some(v) => responses_from_json(v).context("`responses`")?,
    };
    Ok(DryRun {
        transform: transform.clone(),
        spec: spec.to_string(),
        route: fixture
            .get("route")
            .and_then(Value::as_str)
            .unwrap_or(&transform.info.name)
            .to_string(),
        config,
        allow_http: fixture
            .get("allow_http")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        private_networks: match fixture.get("private_networks") {
            None | Some(Value::Null) => vec![],
            Some(v) => serde_json::from_value(v.clone()).context("`private_networks`")?,
        },
        state: strings(fixture.get("state"), "state")?,
        event: ztbridge_runtime::flow::record(&ztbridge_runtime::flow::FlowInput {
            body: &body,
            receipt_id: fixture
                .get("receipt_id")
                .and_then(Value::as_str)
                .unwrap_or("fixture"),
            received_ms: {
                let at = fixture
                    .get("received_at")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_RECEIVED_AT);
                ztbridge_runtime::time::parse_rfc3339_millis(at)
                    .with_context(|| format!("received_at {at:?}: expected an RFC 3339 time"))?
            },
            attempt: fixture
                .get("attempt")
                .and_then(Value::as_u64)
                .map(|a| a as u32)
                .unwrap_or(1),
        }),
        responses,
    })
}

/// A body as JSON when it is JSON text, else the string.
fn body_value(body: &str) -> Value {
    match serde_json::from_str::<Value>(body) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
        _ => Value::String(body.to_string()),
    }
}

/// What the transform did, in fixture form.
fn actual(report: &FlowReport) -> Value {
    let steps: Vec<Value> = report
        .steps
        .iter()
        .map(|s| {
            json!({ "requests": s.requests.iter().map(|r| json!({
                "method": r.method,
                "url": r.url,
                "headers": r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>(),
                "body": body_value(&r.body),
            })).collect::<Vec<_>>() })
        })
        .collect();
    json!({
        "steps": steps,
        "outcome": report.outcome,
        "state_writes": report.state_writes,
        "logs": report.logs,
    })
}

/// `actual` cut down to what `expect` names, bodies in the form `expect`
/// uses, so the two compare (and diff) like for like.
fn project(actual: &Value, expect: &Value) -> Value {
    let mut out = Map::new();
    let Some(expect) = expect.as_object() else {
        return actual.clone();
    };
    for key in expect.keys() {
        let a = actual.get(key).cloned().unwrap_or(Value::Null);
        let v = if key == "steps" {
            project_steps(&a, &expect[key])
        } else {
            a
        };
        out.insert(key.clone(), v);
    }
    Value::Object(out)
}

fn project_steps(actual: &Value, expect: &Value) -> Value {
    let (Some(steps), Some(exp_steps)) = (actual.as_array(), expect.as_array()) else {
        return actual.clone();
    };
    Value::Array(
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let exp_reqs = exp_steps
                    .get(i)
                    .and_then(|s| s.get("requests"))
                    .and_then(Value::as_array);
                let reqs = step["requests"].as_array().cloned().unwrap_or_default();
                let reqs: Vec<Value> = reqs
                    .into_iter()
                    .enumerate()
                    .map(|(j, mut r)| {
                        let exp = exp_reqs.and_then(|e| e.get(j));
                        if let (Some(obj), Some(exp)) = (r.as_object_mut(), exp) {
                            if exp.get("headers").is_none() {
                                obj.remove("headers");
                            }
                            if exp.get("body").is_none() {
                                obj.remove("body");
                            } else if exp["body"].is_string() {
                                // Compare as text when the fixture has text.
                                if let Some(b) = obj.get("body").filter(|b| !b.is_string()) {
                                    let text = b.to_string();
                                    obj.insert("body".into(), Value::String(text));
                                }
                            }
                        }
                        r
                    })
                    .collect();
                json!({ "requests": reqs })
            })
            .collect(),
    )
}

/// Line diff (the `similar` crate's Myers diff, which stays fast on
/// large bodies): `-` expected, `+` actual, with three lines of context
/// around each change and `...` between hunks.
pub(crate) fn diff(expected: &str, actual: &str) -> String {
    let d = similar::TextDiff::from_lines(expected, actual);
    let mut out = String::from("    --- expected\n    +++ actual\n");
    for (n, group) in d.grouped_ops(3).iter().enumerate() {
        let first = group.first().map_or(0, |op| op.old_range().start);
        if n > 0 || first > 0 {
            out.push_str("    ...\n");
        }
        for op in group {
            for change in d.iter_changes(op) {
                let tag = match change.tag() {
                    similar::ChangeTag::Equal => ' ',
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                };
                let line = change.value().trim_end_matches(['\n', '\r']);
                out.push_str(&format!("    {tag} {line}\n"));
            }
        }
    }
    out
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

enum Verdict {
    Pass,
    Fail(String),
    Updated,
}

fn run_one(
    path: &Path,
    transform: &Arc<Transform>,
    spec: &str,
    engine: &Arc<Engine>,
    runtime: &tokio::runtime::Runtime,
    update: bool,
) -> anyhow::Result<(Verdict, u64, f64)> {
    let text = std::fs::read_to_string(path).context("cannot read")?;
    let mut fixture: Value = serde_json::from_str(&text).context("not JSON")?;
    let dry = prepare(path, &fixture, transform, spec)?;
    // Fixtures are self-contained: no ZTBRIDGE_* variables.
    let (report, _) = dry.run(engine, runtime, &|_| None)?;
    let got = actual(&report);
    if update {
        let mut expect = fixture
            .get("expect")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({ "steps": null, "outcome": null }));
        let keys: Vec<String> = expect.as_object().unwrap().keys().cloned().collect();
        for key in keys {
            expect[&key] = got.get(&key).cloned().unwrap_or(Value::Null);
        }
        fixture["expect"] = expect;
        std::fs::write(path, serde_json::to_string_pretty(&fixture)? + "\n")
            .context("cannot write")?;
        return Ok((Verdict::Updated, report.fuel_used, report.duration_ms));
    }
    let Some(expect) = fixture.get("expect").filter(|e| e.is_object()) else {
        bail!("no `expect` object (run with --update to record one)");
    };
    let got = project(&got, expect);
    let verdict = if &got == expect {
        Verdict::Pass
    } else {
        Verdict::Fail(diff(
            &serde_json::to_string_pretty(expect)?,
            &serde_json::to_string_pretty(&got)?,
        ))
    };
    Ok((verdict, report.fuel_used, report.duration_ms))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Quiet unless asked: the fixture lines are the output.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: single-threaded at this point (before any runtime).
        unsafe { std::env::set_var("RUST_LOG", "error") };
    }
    super::init_logging(Default::default());
    let files = fixture_files(&args.fixtures)?;
    let engine = Arc::new(Engine::new(Limits::default())?);
    let cache = args.cache.as_ref().map(CompileCache::new);
    let t = Instant::now();
    let transform = load(&engine, &args.transform, cache.as_ref())?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{} {} ({}), {} fixture(s); loaded in {:.0} ms{}",
        transform.info.name,
        transform.info.version,
        transform.digest,
        files.len(),
        load_ms,
        if cache.is_some() {
            " (compile cache on)"
        } else {
            ""
        },
    );
    let runtime = offline_runtime()?;
    let width = files
        .iter()
        .map(|f| f.file_stem().unwrap_or_default().len())
        .max()
        .unwrap_or(0);
    let (mut passed, mut failed, mut updated) = (0, 0, 0);
    for path in &files {
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        match run_one(
            path,
            &transform,
            &args.transform,
            &engine,
            &runtime,
            args.update,
        ) {
            Ok((verdict, fuel, ms)) => {
                let stats = format!("fuel {:>13}  {ms:>8.2} ms", thousands(fuel));
                match verdict {
                    Verdict::Pass => {
                        passed += 1;
                        println!("ok      {name:<width$}  {stats}");
                    }
                    Verdict::Updated => {
                        updated += 1;
                        println!("updated {name:<width$}  {stats}");
                    }
                    Verdict::Fail(d) => {
                        failed += 1;
                        println!("FAIL    {name:<width$}  {stats}\n{d}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL    {name:<width$}  {}: {e:#}", path.display());
            }
        }
    }
    if args.update {
        println!("{updated} fixture(s) updated, {failed} failed");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let e = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let a = "a\nb\nc\nd\nX\nf\ng\nh\ni\n";
        let d = diff(e, a);
        assert!(d.contains("    - e\n    + X\n"), "{d}");
        assert!(d.contains("    ...\n"), "{d}");
        assert!(!d.contains("  a\n"), "{d}");
    }

    #[test]
    fn projection_drops_what_expect_does_not_name() {
        let got = json!({
            "steps": [{ "requests": [{ "method": "POST", "url": "u", "headers": ["a: b"], "body": {"x": 1} }] }],
            "outcome": { "status": "done", "message": "m" },
            "logs": [],
        });
        let expect = json!({
            "steps": [{ "requests": [{ "method": "POST", "url": "u", "body": "{\"x\":1}" }] }],
            "outcome": { "status": "done", "message": "m" },
        });
        assert_eq!(project(&got, &expect), expect);
    }
}
