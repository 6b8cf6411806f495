//! `ztbridge transform new`: scaffolds a buildable transform with one
//! fixture, in Rust (a standalone crate on the guest SDK), JavaScript
//! (componentize-js) or Python (componentize-py).  Every scaffold does the
//! same thing, POST a JSON summary of the event to the URL in config key
//! `url`, and passes the same fixture.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(clap::Args)]
pub struct Args {
    /// Transform name: lower-case letters, digits and `-`; also the
    /// directory created.
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Create the transform in this directory instead of `./NAME`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust: path of the guest SDK crate (`transforms/sdk` in a ztbridge
    /// checkout).  Default: the SDK of the source tree this binary was
    /// built from, when it still exists.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

const WIT: &str = include_str!("../../wit/ztbridge.wit");
/// Pinned: the version CI builds webhook-js with (transforms-js/webhook).
const COMPONENTIZE_JS: &str = "0.23.0";
/// componentize-js 0.23.0 imports it without declaring it.
const PREVIEW2_SHIM: &str = "0.25.0";

/// Pinned: the version ci/py.sh builds the Python transforms with.
const COMPONENTIZE_PY: &str = "0.25.1";
/// The Python SDK helper (transforms-py/sdk), copied into each project.
const PY_SDK: &str = include_str!("../../transforms-py/sdk/ztbridge_sdk.py");

const FIXTURE: &str = r#"{
  "description": "a critical lockout is posted to the configured URL",
  "event": {
    "id": "RSW-20250611-000123",
    "severity": "CRITICAL",
    "state": "LOCKED_OUT",
    "user": "CORP\\jsmith",
    "files": ["/ifs/data/finance/q2/budget.xlsx.locked"]
  },
  "config": { "url": "https://hooks.example.com/ztbridge" },
  "responses": [ { "status": 200, "body": "ok" } ],
  "expect": {
    "steps": [
      {
        "requests": [
          {
            "method": "POST",
            "url": "https://hooks.example.com/ztbridge",
            "headers": ["Content-Type: application/json"],
            "body": {
              "summary": "critical event RSW-20250611-000123: LOCKED_OUT",
              "event": {
                "id": "RSW-20250611-000123",
                "severity": "CRITICAL",
                "state": "LOCKED_OUT",
                "user": "CORP\\jsmith",
                "files": ["/ifs/data/finance/q2/budget.xlsx.locked"]
              }
            }
          }
        ]
      }
    ],
    "outcome": { "status": "done", "message": "delivered (HTTP 200)" }
  }
}
"#;

const RUST_CARGO: &str = r#"[package]
name = "{{NAME}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
ztbridge-sdk = { path = "{{SDK}}" }
serde_json = { version = "1", features = ["preserve_order"] }

# Small, fast components (tens of KB instead of MB).
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A workspace of its own, even when created inside another one.
[workspace]
"#;

const RUST_LIB: &str = r#"//! {{NAME}}: a ztbridge transform.  Posts a JSON summary of each Superna
//! Zero Trust event to the URL in config key `url`.
//!
//! Build: cargo build --release --target wasm32-wasip2
//! Test:  ztbridge transform test target/wasm32-wasip2/release/{{FILE}}.wasm fixtures

use serde_json::json;
use ztbridge_sdk::config::key;
use ztbridge_sdk::{
    EgressRule, Event, EventInput, Failure, Guest, Info, Request, Response, Step, config, export,
    failure, send, single,
};

struct Transform;

impl Guest for Transform {
    fn describe() -> Info {
        Info {
            name: "{{NAME}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Superna Zero Trust events as JSON to a webhook".into(),
            // Requests may only go to the host of the URL in config `url`.
            egress: vec![EgressRule::ConfigUrl("url".into())],
            config: vec![key("url", "Where to POST events", true, false, None)],
            needs_random: false,
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        let url = config::require("url")?;
        // The host read the event (contract 0.2): ID, severity, state,
        // user, paths... are fields of `input`; `ev.field("a.b")` reads
        // any other.
        let ev = Event::new(input);
        let summary = format!(
            "{} event {}: {}",
            ev.severity().name(),
            ev.id().unwrap_or_else(|| "unknown".into()),
            ev.state().unwrap_or_else(|| "unknown".into()),
        );
        let body = json!({ "summary": summary, "event": ev.raw() });
        Ok(send(vec![Request::post(&url).json(&body)]))
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        // No answer (DNS, connect, timeout): retryable.
        let resp = single(responses)?;
        // 2xx: fine; 429, 5xx: retryable; anything else: permanent.
        failure::check(&resp, "webhook")?;
        Ok(Step::Done(format!("delivered (HTTP {})", resp.status)))
    }
}

export!(Transform);
"#;

const JS_PACKAGE: &str = r#"{
  "name": "{{NAME}}",
  "version": "0.2.0",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "componentize-js app.js --wit wit -n transform-world -d stdio random clocks http fetch-event -o {{NAME}}.wasm"
  },
  "devDependencies": {
    "@bytecodealliance/componentize-js": "{{COMPONENTIZE_JS}}",
    "@bytecodealliance/preview2-shim": "{{PREVIEW2_SHIM}}"
  }
}
"#;

const JS_APP: &str = r#"// {{NAME}}: a ztbridge transform.  Posts a JSON summary of each Superna
// Zero Trust event to the URL in config key `url`.
//
// Build: npm install && npm run build
// Test:  ztbridge transform test {{NAME}}.wasm fixtures
//
// The contract is wit/ztbridge.wit.  Host functions are imported from
// 'ztbridge:transform/host@0.2.0'; the `transform` export implements
// describe/start/resume.  Records use camelCase fields; a variant is
// { tag, val }; throwing a failure record makes the call return an error.
// The host reads the event: `start` gets its fields (eventId, severity,
// state, user, paths...), and `eventField('a.b')` reads any other.

import { log, configGet } from 'ztbridge:transform/host@0.2.0';

const permanent = (message) => ({ retryable: false, message, retryAfterSeconds: undefined });
const retryable = (message, retryAfterSeconds) => ({ retryable: true, message, retryAfterSeconds });

export const transform = {
  describe() {
    return {
      name: '{{NAME}}',
      version: '0.2.0',
      description: 'Superna Zero Trust events as JSON to a webhook',
      // Requests may only go to the host of the URL in config `url`.
      egress: [{ tag: 'config-url', val: 'url' }],
      needsRandom: false,
      config: [
        { name: 'url', description: 'Where to POST events', required: true, secret: false, defaultValue: undefined },
      ],
    };
  },

  start(input) {
    const url = configGet('url');
    if (!url) throw permanent('config key `url` is not set');
    const severity = input.severity === 'other' ? input.severityText.toLowerCase() : input.severity;
    const id = input.eventId ?? 'unknown';
    if (id === 'unknown') log('warn', 'event has no ID', []);
    const summary = `${severity} event ${id}: ${input.state ?? 'unknown'}`;
    const event = JSON.parse(input.raw);
    return {
      tag: 'send',
      val: [{
        method: 'POST',
        url,
        headers: [{ name: 'Content-Type', value: 'application/json' }],
        body: JSON.stringify({ summary, event }),
      }],
    };
  },

  resume(responses) {
    const result = responses[0];
    // No response: { tag: 'err', val: { tag: 'dns' | 'connect' | 'tls' | 'timeout' | ..., val: message } }.
    if (result.tag === 'err') throw retryable(`webhook unreachable (${result.val.tag}): ${result.val.val}`);
    const r = result.val;
    if (r.status >= 200 && r.status < 300) return { tag: 'done', val: `delivered (HTTP ${r.status})` };
    if (r.status === 429 || r.status >= 500) {
      throw retryable(`webhook: HTTP ${r.status}: ${r.body.slice(0, 300)}`);
    }
    throw permanent(`webhook refused (HTTP ${r.status}): ${r.body.slice(0, 300)}`);
  },
};
"#;

const PY_APP: &str = r#""""{{NAME}}: a ztbridge transform.  Posts a JSON summary of each Superna
Zero Trust event to the URL in config key `url`.

Build: ./build.sh            (componentize-py {{COMPONENTIZE_PY}} in .venv)
Test:  ./test.sh             (ztbridge transform test {{NAME}}.wasm fixtures)

The contract is wit/ztbridge.wit; componentize-py turns it into the
`wit_world` package at build time.  Define a class `Transform` with
`describe`, `start(event)` and `resume(responses)`.  Records are
dataclasses with snake_case fields (event.event_id, event.severity_text...),
an option is the value or None, an enum is a Python Enum
(Severity.CRITICAL), a variant case is a class (Step_Send, Step_Done), and
raising `Err(failure)` returns the failure (ztbridge_sdk.fail does it).  The
host reads the event: `start` gets its fields, and
`ztbridge_sdk.event_field('a.b')` reads any other.  ztbridge_sdk.py holds
the helpers (config, requests, failures classified by status).
"""

import json

from ztbridge_sdk import (
    EgressRule_ConfigUrl, Info, check, config_require, done, key, log, post, send,
    severity_name, single,
)


class Transform:
    def describe(self):
        return Info(
            name="{{NAME}}",
            version="0.1.0",
            description="Superna Zero Trust events as JSON to a webhook",
            # Requests may only go to the host of the URL in config `url`.
            egress=[EgressRule_ConfigUrl("url")],
            config=[key("url", "Where to POST events", required=True)],
            # Always True in Python: componentize-py's runtime reseeds the
            # `random` module on an instance's first call.  The host's random
            # bytes follow the receipt ID, so a replay is still the same.
            needs_random=True,
        )

    def start(self, event):
        url = config_require("url")          # a permanent failure when unset
        event_id = event.event_id or "unknown"
        if event.event_id is None:
            log("warn", "event has no ID")
        summary = f"{severity_name(event)} event {event_id}: {event.state or 'unknown'}"
        body = {"summary": summary, "event": json.loads(event.raw)}
        return send(post(url, json_body=body))

    def resume(self, responses):
        resp = single(responses)      # no answer (dns, connect...): retryable
        check(resp, "webhook")        # 2xx ok; 429/5xx retryable; else permanent
        return done(f"delivered (HTTP {resp.status})")
"#;

const PY_BUILD: &str = r#"#!/bin/sh
# Builds {{NAME}}.wasm with componentize-py {{COMPONENTIZE_PY}} (pinned),
# installed in .venv the first time.  Needs Python 3.10+ with venv.
set -eu
cd "$(dirname "$0")"
if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py {{COMPONENTIZE_PY}}" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r requirements.txt
fi
.venv/bin/componentize-py -d wit -w transform-world componentize -p . app -o {{NAME}}.wasm
ls -l {{NAME}}.wasm
"#;

const PY_TEST: &str = r#"#!/bin/sh
# Builds, then runs the golden fixtures.  ZTBRIDGE: the ztbridge binary
# (default: the one on PATH).  Compiled components are cached in .cache.
set -eu
cd "$(dirname "$0")"
./build.sh
"${ZTBRIDGE:-ztbridge}" transform test {{NAME}}.wasm fixtures --cache "${ZTBRIDGE_COMPILE_CACHE:-.cache}"
"#;

const README: &str = r#"# {{NAME}}

A ztbridge transform ({{LANG}}).  See docs/writing-transforms.md in the
ztbridge repository for the contract, fixtures, signing and deployment.

    {{BUILD}}
    ztbridge transform test {{WASM}} fixtures
    ztbridge transform run {{WASM}} --event event.json --set url=https://...
"#;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn default_sdk() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("transforms/sdk");
    p.join("Cargo.toml").is_file().then_some(p)
}

fn write(root: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
}

/// `write`, then mark the file executable (a build or test script).
fn write_executable(root: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    write(root, rel, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(rel);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", p.display()))?;
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !valid_name(&args.name) {
        bail!(
            "`{}`: a transform name is lower-case letters, digits and `-`, starting with a letter",
            args.name
        );
    }
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if root.exists() && std::fs::read_dir(&root)?.next().is_some() {
        bail!("{} exists and is not empty", root.display());
    }
    let name = args.name.as_str();
    let fill = |t: &str| t.replace("{{NAME}}", name);
    let (build, wasm, lang) = match args.lang {
        Lang::Rust => {
            let sdk = match args.sdk.clone().or_else(default_sdk) {
                Some(s) => s,
                None => bail!(
                    "where is the guest SDK? pass --sdk PATH/TO/ztbridge/transforms/sdk (this binary's source tree is gone)"
                ),
            };
            let sdk = std::path::absolute(&sdk)?;
            if !sdk.join("Cargo.toml").is_file() {
                bail!(
                    "{}: no Cargo.toml (expected transforms/sdk of a ztbridge checkout)",
                    sdk.display()
                );
            }
            let file = name.replace('-', "_");
            let sdk_text = sdk.display().to_string().replace('\\', "/");
            write(
                &root,
                "Cargo.toml",
                &fill(RUST_CARGO).replace("{{SDK}}", &sdk_text),
            )?;
            write(
                &root,
                "src/lib.rs",
                &fill(RUST_LIB).replace("{{FILE}}", &file),
            )?;
            write(&root, ".gitignore", "/target\n")?;
            (
                "cargo build --release --target wasm32-wasip2".to_string(),
                format!("target/wasm32-wasip2/release/{file}.wasm"),
                "Rust",
            )
        }
        Lang::Js => {
            write(
                &root,
                "package.json",
                &fill(JS_PACKAGE)
                    .replace("{{COMPONENTIZE_JS}}", COMPONENTIZE_JS)
                    .replace("{{PREVIEW2_SHIM}}", PREVIEW2_SHIM),
            )?;
            write(&root, "app.js", &fill(JS_APP))?;
            write(&root, "wit/ztbridge.wit", WIT)?;
            write(&root, ".gitignore", "node_modules/\n*.wasm\n")?;
            (
                "npm install && npm run build".to_string(),
                format!("{name}.wasm"),
                "JavaScript",
            )
        }
        Lang::Python => {
            let fill_py = |t: &str| fill(t).replace("{{COMPONENTIZE_PY}}", COMPONENTIZE_PY);
            write(&root, "app.py", &fill_py(PY_APP))?;
            write(&root, "ztbridge_sdk.py", PY_SDK)?;
            write(&root, "wit/ztbridge.wit", WIT)?;
            write(
                &root,
                "requirements.txt",
                &format!("componentize-py=={COMPONENTIZE_PY}\n"),
            )?;
            write_executable(&root, "build.sh", &fill_py(PY_BUILD))?;
            write_executable(&root, "test.sh", &fill_py(PY_TEST))?;
            write(
                &root,
                ".gitignore",
                ".venv/\n.cache/\n__pycache__/\n*.wasm\n",
            )?;
            ("./build.sh".to_string(), format!("{name}.wasm"), "Python")
        }
    };
    write(&root, "fixtures/basic.json", FIXTURE)?;
    // The fixture's event on its own, for `transform run --event`.
    let fixture: serde_json::Value = serde_json::from_str(FIXTURE)?;
    write(
        &root,
        "event.json",
        &(serde_json::to_string_pretty(&fixture["event"])? + "\n"),
    )?;
    let readme = fill(README)
        .replace("{{LANG}}", lang)
        .replace("{{BUILD}}", &build)
        .replace("{{WASM}}", &wasm);
    write(&root, "README.md", &readme)?;
    println!("created {} ({lang})", root.display());
    println!(
        "next:\n  cd {}\n  {build}\n  ztbridge transform test {wasm} fixtures",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for ok in ["slack", "my-hook2"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", "Slack", "2x", "a_b", "a-", "../x"] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }

    /// The Python scaffold opens with a module docstring that is closed
    /// (a raw-string slip once left it with two quotes).
    #[test]
    fn python_scaffold_docstring() {
        assert!(super::PY_APP.starts_with("\"\"\"{{NAME}}"));
        assert_eq!(super::PY_APP.matches("\"\"\"").count(), 2);
    }
}
