//! `ztbridge completions SHELL` and the hidden `ztbridge manpages --out
//! DIR`: shell completions and man pages generated from the command line's
//! own definition, so they never disagree with it.  The release packages
//! install both (`ci/release.sh`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::cli_command();
    clap_complete::generate(args.shell, &mut cmd, "ztbridge", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory for `ztbridge.1` and one page per subcommand
    /// (`ztbridge-events-list.1`...).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn manpages(args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cmd = crate::cli_command();
    clap_mangen::generate_to(cmd, &args.out)
        .with_context(|| format!("cannot write the man pages to {}", args.out.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.out)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", args.out.join(page).display());
    }
    Ok(ExitCode::SUCCESS)
}
