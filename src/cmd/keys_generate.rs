//! `ztbridge keys generate`: a new Ed25519 key pair for signing transforms.

use std::path::PathBuf;
use std::process::ExitCode;

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
    std::fs::create_dir_all(&args.out)?;
    let secret = args.out.join(format!("{}.key", args.name));
    let public = args.out.join(format!("{}.pub", args.name));
    let pair = KeyPair::generate();
    pair.write(&secret, &public)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "key_id": pair.public.key_id(),
            "secret_key": secret,
            "public_key": public,
            "next": "keep the .key file offline; put the .pub file in [trust] keys on every host",
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
