//! One module per command.

pub mod completions;
pub mod config_check;
pub mod events_list;
pub mod events_purge;
pub mod events_retry;
pub mod events_show;
pub mod keys_generate;
pub mod keys_sign;
pub mod send_test;
pub mod serve;
pub mod transform_inspect;
pub mod transform_new;
pub mod transform_run;
pub mod transform_sign;
pub mod transform_test;
pub mod transform_verify;

use std::sync::Arc;

use ztbridge_runtime::config::LogFormat;
use ztbridge_runtime::store::Store;
use ztbridge_runtime::store::sqlite::SqliteStore;

/// Logs to stderr: plain text (journald adds timestamps of its own but a
/// terminal does not, so they stay) or JSON.  `RUST_LOG` overrides the
/// default `info` level.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Where the `events` commands find the store: `--data-dir`, else the
/// config file's `data_dir`, else the service's default
/// (`$STATE_DIRECTORY` under systemd, `./ztbridge-data` otherwise).
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The service's configuration file (for its data_dir and [delivery]).
    #[arg(long, short, global = true)]
    pub config: Option<std::path::PathBuf>,
    /// The data directory (overrides the config file's).
    #[arg(long, global = true)]
    pub data_dir: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// The configuration in effect (the file, or the defaults).
    pub fn config(&self) -> anyhow::Result<ztbridge_runtime::config::Config> {
        Ok(match &self.config {
            Some(path) => ztbridge_runtime::config::Config::load(path)?,
            None => ztbridge_runtime::config::Config::builtin_default(&[]),
        })
    }

    /// The store the service uses, for a command that runs to completion.
    pub fn open(&self) -> anyhow::Result<OpenStore> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => self.config()?.data_dir(),
        };
        let store = SqliteStore::open_existing(&dir)?;
        Ok(OpenStore {
            place: store.describe(),
            store: Arc::new(store),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }
}

/// A store opened by a command, with the runtime its calls run on.
pub struct OpenStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where it is, for messages.
    pub place: String,
    /// Runs the store's async calls to completion.
    rt: tokio::runtime::Runtime,
}

impl OpenStore {
    /// Runs one store call to completion.
    pub fn run<F: std::future::Future>(&self, call: F) -> F::Output {
        self.rt.block_on(call)
    }
}
