//! `ztbridge`: the command line.  A thin layer over `ztbridge-runtime`; one
//! file per command under `cmd/`.
//!
//! Conventions every command follows: the service's configuration file is
//! `--config FILE` (`-c`; `config check` also takes it as its argument),
//! what a command acts on is positional (`events show ID`, `transform sign
//! FILE`), and output meant for programs is JSON on stdout while messages
//! go to stderr.

mod alloc;
mod builtin;
mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `ztbridge -V`: the version, the commit and the build date.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("ZTBRIDGE_GIT_HASH"),
    ", built ",
    env!("ZTBRIDGE_BUILD_DATE"),
    ")"
);

/// `ztbridge --version`: also the transform contracts this binary runs
/// (read from `wit/` at build time) and the target it was built for.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ngit commit: ",
    env!("ZTBRIDGE_GIT_HASH"),
    "\nbuild date: ",
    env!("ZTBRIDGE_BUILD_DATE"),
    "\ncontracts:  ",
    env!("ZTBRIDGE_CONTRACTS"),
    "\ntarget:     ",
    env!("ZTBRIDGE_TARGET"),
);

#[derive(Parser)]
#[command(
    name = "ztbridge",
    version = VERSION,
    long_version = LONG_VERSION,
    about = "Superna Zero Trust webhooks to PagerDuty and Jitbit through WebAssembly-sandboxed transforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook service.
    Serve(cmd::serve::Args),
    /// Work with transforms offline.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
    /// Check a configuration and its transforms without serving.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The durable event store: list, show, retry, purge.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The PostgreSQL store of several nodes: migrate, copy from SQLite.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Send a sample Zero Trust event (gzip, as Superna does) to a running
    /// service: it creates a REAL incident or ticket at every destination
    /// that takes it, unless --dry-run.
    SendTest(cmd::send_test::Args),
    /// Signing keys: generate, and sign or verify files (a release's
    /// SHA256SUMS).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Write the man pages (packaging).
    #[command(hide = true)]
    Manpages(cmd::completions::ManArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate config and transforms (signatures, required keys, typos,
    /// data directory) and print what would run; with --event, what that
    /// event would do.  Creates nothing.
    Check(cmd::config_check::Args),
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Deliveries, newest first: receipt, event ID, route, state, attempts.
    List(cmd::events_list::Args),
    /// A webhook as received and each route's delivery with every attempt.
    Show(cmd::events_show::Args),
    /// Queue failed deliveries again (one webhook's, one Superna event's,
    /// or --all-failed).
    Retry(cmd::events_retry::Args),
    /// Delete webhooks delivered before a date.
    Purge(cmd::events_purge::Args),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Apply the PostgreSQL schema (safe while nodes run), or --check it.
    Migrate(cmd::store_migrate::Args),
    /// Copy an SQLite data directory's events and transform state into
    /// PostgreSQL (idempotent; refuses a non-empty target without --force).
    Copy(cmd::store_copy::Args),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate an Ed25519 key pair for signing transforms and releases.
    Generate(cmd::keys_generate::Args),
    /// Sign a file (detached): writes FILE.sig.
    Sign(cmd::keys_sign::SignArgs),
    /// Check a file against its detached signature (FILE.sig) and trusted
    /// public keys (exit 0 good, 1 bad).
    Verify(cmd::keys_sign::VerifyArgs),
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run a transform on an event without sending anything: prints each
    /// step's requests and the outcome as JSON.
    Run(cmd::transform_run::Args),
    /// Show what a transform declares: name, version, contract, egress,
    /// config keys, signer key IDs, digest.
    Inspect(cmd::transform_inspect::Args),
    /// List the built-in transforms: name, version, description, contract
    /// and where their requests may go.
    List(cmd::transform_list::Args),
    /// Add a signature to a component.
    Sign(cmd::transform_sign::Args),
    /// Check a component's signatures against trusted keys.
    Verify(cmd::transform_verify::Args),
    /// Golden tests: run a transform on every fixture of a directory and
    /// compare with the expected steps and outcome.
    Test(cmd::transform_test::Args),
    /// Create a new transform (Rust or JavaScript) with one fixture.
    New(cmd::transform_new::Args),
}

/// The command line's definition (completions, man pages).
pub(crate) fn cli_command() -> clap::Command {
    Cli::command()
}

/// A closed standard output (`ztbridge ... | head`) ends a printing
/// command quietly, as it ends `cat`: SIGPIPE back to its default action
/// (Rust starts programs with it ignored, so printing would panic).  Not
/// for `serve`, which must outlive a closed pipe or peer.
fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; called before any
    // thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    alloc::sqlite();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        default_sigpipe();
    }
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Transform { command } => match command {
            TransformCommand::Run(args) => cmd::transform_run::run(args),
            TransformCommand::Inspect(args) => cmd::transform_inspect::run(args),
            TransformCommand::List(args) => cmd::transform_list::run(args),
            TransformCommand::Sign(args) => cmd::transform_sign::run(args),
            TransformCommand::Verify(args) => cmd::transform_verify::run(args),
            TransformCommand::Test(args) => cmd::transform_test::run(args),
            TransformCommand::New(args) => cmd::transform_new::run(args),
        },
        Command::Config {
            command: ConfigCommand::Check(args),
        } => cmd::config_check::run(args),
        Command::Events { command } => match command {
            EventsCommand::List(args) => cmd::events_list::run(args),
            EventsCommand::Show(args) => cmd::events_show::run(args),
            EventsCommand::Retry(args) => cmd::events_retry::run(args),
            EventsCommand::Purge(args) => cmd::events_purge::run(args),
        },
        Command::Store { command } => match command {
            StoreCommand::Migrate(args) => cmd::store_migrate::run(args),
            StoreCommand::Copy(args) => cmd::store_copy::run(args),
        },
        Command::SendTest(args) => cmd::send_test::run(args),
        Command::Keys { command } => match command {
            KeysCommand::Generate(args) => cmd::keys_generate::run(args),
            KeysCommand::Sign(args) => cmd::keys_sign::sign(args),
            KeysCommand::Verify(args) => cmd::keys_sign::verify(args),
        },
        Command::Completions(args) => cmd::completions::run(args),
        Command::Manpages(args) => cmd::completions::manpages(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `: `-separated, each said once: a cause whose
/// text its parent already includes (`cannot write key file: File exists`
/// over `File exists`) is not repeated.
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
