//! `ztbridge store migrate`: applies the PostgreSQL store's schema (under
//! the migration lock, so it is safe while nodes run), or with `--check`
//! only says whether the database's schema is the one this binary needs.

use std::process::ExitCode;

use anyhow::{Context, bail};
use ztbridge_runtime::store::postgres::{PgOptions, PgStore};

use super::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Only check: exit 1 when the schema is older or newer than this
    /// binary's.
    #[arg(long)]
    pub check: bool,
    /// The database (default: the config's [store] url, or
    /// ZTBRIDGE_STORE_URL).
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The PostgreSQL store named by `url`, or by the configuration.
pub(super) fn pg_options(url: Option<&str>, store: &StoreArgs) -> anyhow::Result<PgOptions> {
    let settings = store.config()?.store_settings()?;
    let (url, password) = match (url, settings.as_ref()) {
        (Some(u), _) => (u.to_string(), None),
        (None, Some(s)) => (s.url.clone(), s.password.clone()),
        (None, None) => bail!(
            "no PostgreSQL store: pass --url, set [store] url in --config, or ZTBRIDGE_STORE_URL"
        ),
    };
    Ok(PgOptions {
        url,
        password,
        node: format!("cli:{}", std::process::id()),
        lease: std::time::Duration::from_secs(30),
        pool_size: 2,
        migrate: false,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = pg_options(args.url.as_deref(), &args.store)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = PgStore::new(options)?;
        let place = ztbridge_runtime::store::Store::describe(&store);
        match store.migrate(!args.check).await {
            Ok(s) if args.check => {
                println!("{place}: schema version {} (this ztbridge's): OK", s.now);
                Ok(ExitCode::SUCCESS)
            }
            Ok(s) if s.was == s.now => {
                println!("{place}: schema version {} already", s.now);
                Ok(ExitCode::SUCCESS)
            }
            Ok(s) => {
                println!(
                    "{place}: schema migrated from version {} to {}",
                    s.was, s.now
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ ztbridge_runtime::store::StoreError::Schema(_)) if args.check => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e).context("store migrate"),
        }
    })
}
