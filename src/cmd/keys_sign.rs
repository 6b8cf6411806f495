//! `ztbridge keys sign FILE` and `ztbridge keys verify FILE`: detached
//! signatures of whole files with the transform signing keys; a release
//! signs its `SHA256SUMS` this way.  The format is described in
//! `runtime/src/trust/detached.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ztbridge_runtime::trust::detached::DetachedSignature;
use ztbridge_runtime::trust::signing;

#[derive(clap::Args)]
pub struct SignArgs {
    /// The file to sign.
    pub file: PathBuf,
    /// Secret key file (from `ztbridge keys generate`).
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the signature (default: FILE.sig).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The signed file.
    pub file: PathBuf,
    /// Trusted public key files, or directories of `*.pub` (repeatable).
    #[arg(long, required = true)]
    pub trusted: Vec<PathBuf>,
    /// The signature file (default: FILE.sig).
    #[arg(long)]
    pub signature: Option<PathBuf>,
}

fn sig_path(file: &Path, given: Option<&PathBuf>) -> PathBuf {
    given.cloned().unwrap_or_else(|| {
        let mut s = file.as_os_str().to_owned();
        s.push(".sig");
        PathBuf::from(s)
    })
}

pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let key = signing::load_secret_key(&args.key)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig = DetachedSignature::sign(&bytes, &name, &key);
    let out = sig_path(&args.file, args.out.as_ref());
    std::fs::write(&out, sig.to_text())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: signed with key {} -> {}",
        args.file.display(),
        sig.key_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if args.trusted.is_empty() {
        bail!("pass --trusted KEY.pub (the release key)");
    }
    let trusted = signing::load_public_keys(&args.trusted)?;
    let sig_file = sig_path(&args.file, args.signature.as_ref());
    let text = std::fs::read_to_string(&sig_file)
        .with_context(|| format!("cannot read the signature {}", sig_file.display()))?;
    let sig = DetachedSignature::parse(&text).with_context(|| sig_file.display().to_string())?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    match sig.verify(&bytes, &trusted) {
        Ok(key_id) => {
            println!("{}: good signature by key {key_id}", args.file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            Ok(ExitCode::from(1))
        }
    }
}
