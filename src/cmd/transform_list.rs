//! `ztbridge transform list`: the built-in transforms, one line each (or
//! JSON with `--json`), read from what each component declares.

use std::process::ExitCode;

use ztbridge_runtime::trust::{Trust, load_transform};
use ztbridge_runtime::{config::Limits, sandbox::Engine};

use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(Limits::default())?;
    let builtins = builtin::all();
    let mut names: Vec<&String> = builtins.keys().collect();
    names.sort();
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        let spec = format!("builtin:{name}");
        let t = load_transform(&engine, &spec, &builtins, &Trust::AnyFile, None)?;
        rows.push(serde_json::json!({
            "transform": spec,
            "name": t.info.name,
            "version": t.info.version,
            "description": t.info.description,
            "contract": t.info.contract,
            "egress": t.info.egress,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cell = |r: &serde_json::Value, k: &str| match &r[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    let cols = ["transform", "version", "contract", "egress", "description"];
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let mut out = String::new();
        for (i, v) in values.iter().enumerate() {
            if i + 1 == values.len() {
                out.push_str(v);
            } else {
                out.push_str(&format!("{v:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for r in &rows {
        line(cols.iter().map(|c| cell(r, c)).collect());
    }
    Ok(ExitCode::SUCCESS)
}
