//! `ztbridge transform sign`: adds a signature to a component (existing
//! signatures are kept: several signers are allowed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ztbridge_runtime::trust::signing;

#[derive(clap::Args)]
pub struct Args {
    /// The component (.wasm).
    pub file: PathBuf,
    /// Secret key file (from `ztbridge keys generate`).
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the signed component (default: replace FILE).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = signing::load_secret_key(&args.key)?;
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let signed =
        signing::sign(&wasm, &key, None).with_context(|| format!("{}", args.file.display()))?;
    let out = args.out.unwrap_or_else(|| args.file.clone());
    // Write next to the target, then rename: never a half-written component.
    let tmp = out.with_extension("wasm.signing");
    std::fs::write(&tmp, &signed).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot replace {}", out.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "signed": out,
            "key_id": key.public_key().key_id(),
            "signers": signing::signers(&signed)?,
            "digest": ztbridge_runtime::sandbox::digest(&signed),
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
