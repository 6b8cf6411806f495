//! `ztbridge transform inspect`: what a transform declares.

use std::process::ExitCode;

use ztbridge_runtime::trust::signing;
use ztbridge_runtime::trust::{Trust, load_transform};
use ztbridge_runtime::{config::Limits, sandbox::Engine};

use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// `builtin:NAME` or a path to a component (.wasm).
    pub transform: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(Limits::default())?;
    let t = load_transform(
        &engine,
        &args.transform,
        &builtin::all(),
        &Trust::AnyFile,
        None,
    )?;
    let signers = match args.transform.strip_prefix("builtin:") {
        Some(_) => serde_json::json!("built-in (trusted with the binary)"),
        None => serde_json::json!(signing::signers(&std::fs::read(&args.transform)?)?),
    };
    let out = serde_json::json!({
        "source": t.source,
        "digest": t.digest,
        "world": world(),
        "name": t.info.name,
        "version": t.info.version,
        "description": t.info.description,
        "egress": t.info.egress,
        "config": t.info.config,
        "signers": signers,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `ztbridge:transform/transform-world@0.1.0`, from the contract this binary
/// was built with (`wit/`).
fn world() -> String {
    let contract = crate::CONTRACTS.split(' ').next().unwrap_or_default();
    match contract.split_once('@') {
        Some((package, version)) => format!("{package}/transform-world@{version}"),
        None => format!("{contract}/transform-world"),
    }
}
