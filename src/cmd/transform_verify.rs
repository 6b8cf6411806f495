//! `ztbridge transform verify`: checks a component's signatures against
//! trusted public keys (exit 0 trusted, 1 refused).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ztbridge_runtime::trust::signing;

#[derive(clap::Args)]
pub struct Args {
    /// The component (.wasm).
    pub file: PathBuf,
    /// Trusted public key files or directories of `*.pub` (repeatable).
    /// Default: the `[trust] keys` of --config.
    #[arg(long)]
    pub trusted: Vec<PathBuf>,
    /// Configuration whose `[trust] keys` to use.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut key_paths = args.trusted.clone();
    if let Some(c) = &args.config {
        key_paths.extend(ztbridge_runtime::config::Config::load(c)?.trust.keys);
    }
    if key_paths.is_empty() {
        bail!(
            "no trusted keys: pass --trusted KEY.pub (or a directory) or --config FILE with [trust] keys"
        );
    }
    let trusted = signing::load_public_keys(&key_paths)?;
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let digest = ztbridge_runtime::sandbox::digest(&wasm);
    match signing::verify(&wasm, &trusted) {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "file": args.file, "trusted": true, "trusted_signers": v.key_ids,
                    "signers": signing::signers(&wasm).unwrap_or_default(), "digest": digest,
                }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "file": args.file, "trusted": false, "reason": e.to_string(),
                    "signers": signing::signers(&wasm).unwrap_or_default(), "digest": digest,
                }))?
            );
            eprintln!("{}: refused: {e}", args.file.display());
            Ok(ExitCode::from(1))
        }
    }
}
