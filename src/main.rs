//! `ztbridge`: the command line.  A thin layer over `ztbridge-runtime`; one
//! file per command under `cmd/`.

mod builtin;
mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ztbridge",
    version,
    about = "Superna Zero Trust webhooks to PagerDuty and Jitbit through WebAssembly-sandboxed transforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook service.
    Serve {
        /// TOML configuration; without it the built-in routes run with
        /// their config taken from ZTBRIDGE_<ROUTE>_<KEY> variables.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
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
    /// service; with --follow, print how each route delivered it.
    SendTest(cmd::send_test::Args),
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate config and transforms (signatures, required keys, data
    /// directory) and print what would run.
    Check(cmd::config_check::Args),
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Deliveries, newest first: receipt, event ID, route, state, attempts.
    List(cmd::events_list::Args),
    /// A webhook as received and each route's delivery with every attempt.
    Show(cmd::events_show::Args),
    /// Queue failed deliveries again (one webhook's, or --all-failed).
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
    /// Generate an Ed25519 key pair for signing transforms.
    Generate(cmd::keys_generate::Args),
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run a transform on an event without sending anything: prints each
    /// step's requests and the outcome as JSON.
    Run(cmd::transform_run::Args),
    /// Show what a transform declares: name, version, world, egress,
    /// config keys, signer key IDs, digest.
    Inspect(cmd::transform_inspect::Args),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => cmd::serve::run(config),
        Command::Transform {
            command: TransformCommand::Run(args),
        } => cmd::transform_run::run(args),
        Command::Transform {
            command: TransformCommand::Inspect(args),
        } => cmd::transform_inspect::run(args),
        Command::Transform {
            command: TransformCommand::Sign(args),
        } => cmd::transform_sign::run(args),
        Command::Transform {
            command: TransformCommand::Verify(args),
        } => cmd::transform_verify::run(args),
        Command::Transform {
            command: TransformCommand::Test(args),
        } => cmd::transform_test::run(args),
        Command::Transform {
            command: TransformCommand::New(args),
        } => cmd::transform_new::run(args),
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
        Command::Keys {
            command: KeysCommand::Generate(args),
        } => cmd::keys_generate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
