//! `ztbridge store copy --from <sqlite data dir> --to <postgres url>`:
//! moves pending events, dead letters, history and transform state from a
//! single node's SQLite store to a shared PostgreSQL one.  Idempotent;
//! refuses a target that holds anything unless `--force`.  Stop the
//! SQLite service first (what it delivers meanwhile would be copied as
//! pending and delivered again).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ztbridge_runtime::store::copy::copy_sqlite_to_postgres;
use ztbridge_runtime::store::postgres::PgStore;

use super::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The SQLite data directory (holding events.sqlite3).
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL URL (default: the config's [store] url, or
    /// ZTBRIDGE_STORE_URL).
    #[arg(long)]
    pub to: Option<String>,
    /// Copy into a store that already holds events (those already there
    /// are skipped).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut options = super::store_migrate::pg_options(args.to.as_deref(), &args.store)?;
    options.migrate = true;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let to = PgStore::new(options)?;
        let report = copy_sqlite_to_postgres(&args.from, &to, args.force)
            .await
            .context("store copy")?;
        println!(
            "copied {} events ({} already there) and {} transform-state entries from {} to {}",
            report.events,
            report.skipped,
            report.state,
            args.from.display(),
            ztbridge_runtime::store::Store::describe(&to)
        );
        Ok(ExitCode::SUCCESS)
    })
}
