//! `ztbridge keys generate`: a new Ed25519 key pair for signing transforms
//! (and release checksums): `<name>.key`, secret, and `<name>.pub`, text.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ztbridge_runtime::trust::signing::KeyPair;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write `<name>.key` (secret, mode 0600) and `<name>.pub`.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Base name of the files.
    #[arg(long, default_value = "ztbridge-signing")]
    pub name: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let secret = args.out.join(format!("{}.key", args.name));
    let public = args.out.join(format!("{}.pub", args.name));
    let existing: Vec<String> = [&secret, &public]
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already exist{}: keys are never overwritten (transforms signed with the old key would stop verifying); choose another --name or --out, or delete the old pair first if you really mean to replace it",
            existing.join(" and "),
            if existing.len() == 1 { "s" } else { "" }
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let pair = KeyPair::generate();
    pair.write(&secret, &public)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "key_id": pair.public.key_id(),
            "secret_key": secret,
            "public_key": public,
            "next": "keep the .key file offline; put the .pub file (text: it can be mailed or pasted) in [trust] keys on every host",
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
