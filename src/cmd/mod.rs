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
pub mod store_copy;
pub mod store_migrate;
pub mod transform_inspect;
pub mod transform_list;
pub mod transform_new;
pub mod transform_run;
pub mod transform_sign;
pub mod transform_test;
pub mod transform_verify;

use std::sync::Arc;

use ztbridge_runtime::config::LogFormat;
use ztbridge_runtime::store::{Store, StoreError};
use ztbridge_runtime::text::escape_controls;

/// Logs to stderr: plain text (journald adds timestamps of its own but a
/// terminal does not, so they stay) or JSON.  `RUST_LOG` overrides the
/// default `info` level.  Text fields are `name=value` with plain values
/// (`path=/var/lib/ztbridge/events.sqlite3`, not `path="..."`), quoted only
/// when they hold a space, a quote or `=`.  Every field and message has its
/// control characters escaped ([`escape_controls`]): values carry event
/// and transform text, which must not forge a line or drive a terminal
/// (JSON escapes them already).
pub fn init_logging(format: LogFormat) {
    install_logging(format, std::io::stderr);
}

/// The service's logging: as [`init_logging`], but lines are written by a
/// thread of their own, and all the lines waiting are written at once.
/// In a storm the service logs two lines per event (thousands a second):
/// written in place, each cost its worker a `write` to stderr (to journald
/// under systemd) before the webhook was answered.  Nothing is dropped: a
/// full queue (64k lines) makes the logging call wait.  Lines still queued
/// are written when the returned guard drops (hold it for the service's
/// life); a `kill -9` loses the few queued at that instant.
pub fn init_service_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 << 10)
        .thread_name("ztbridge-log")
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    install_logging(format, writer);
    guard
}

fn install_logging<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.fmt_fields(PlainFields).try_init(),
    };
}

/// Formats event and span fields as `name=value` with plain values.
struct PlainFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            result: Ok(()),
            empty: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    result: std::fmt::Result,
    /// Nothing written yet (no separator needed).
    empty: bool,
}

impl PlainVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, value: &str) {
        // `log.target`, `log.file`...: where a `log` record came from
        // (tracing-log); the default formatter hides them too.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let value = &escape_controls(value);
        let sep = if self.empty { "" } else { " " };
        self.empty = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value}")
        } else if value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=')
        {
            write!(self.writer, "{sep}{}={value:?}", field.name())
        } else {
            write!(self.writer, "{sep}{}={value}", field.name())
        };
    }
}

impl tracing::field::Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field, value);
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        let mut text = value.to_string();
        let mut cause = value.source();
        while let Some(c) = cause {
            let t = c.to_string();
            if !text.contains(&t) {
                text = format!("{text}: {t}");
            }
            cause = c.source();
        }
        self.write(field, &text);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Where the `events` commands find the store: the config's `[store]` (or
/// `ZTBRIDGE_STORE_URL`) for PostgreSQL; else SQLite in `--data-dir`, else
/// the config file's `data_dir`, else the service's default
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

    /// The data directory, and how it was found (for messages).
    pub fn data_dir(&self) -> anyhow::Result<(std::path::PathBuf, String)> {
        if let Some(d) = &self.data_dir {
            return Ok((d.clone(), "--data-dir".into()));
        }
        let config = self.config()?;
        let how = match &self.config {
            Some(p) => format!("{}, {}", config.data_dir_source(), p.display()),
            None => format!("{}; no --config given", config.data_dir_source()),
        };
        Ok((config.data_dir(), how))
    }

    /// The store the service uses, for a command that runs to completion.
    /// Files it creates (WAL, SHM) are private, as the service's.  Where
    /// it looked is said once, in the error when there is none.
    pub fn open(&self) -> anyhow::Result<OpenStore> {
        self.open_as(false)
    }

    /// `open` for a command that only reads: SQLite is opened with
    /// `SQLITE_OPEN_READ_ONLY` (nothing can be changed, and it works
    /// beside the running service).
    pub fn open_read_only(&self) -> anyhow::Result<OpenStore> {
        self.open_as(true)
    }

    fn open_as(&self, read_only: bool) -> anyhow::Result<OpenStore> {
        ztbridge_runtime::files::private_umask();
        let mut config = self.config()?;
        if let Some(s) = config.store.as_mut() {
            // A command is not a node: it never claims, so any name does.
            s.node = Some(format!("cli:{}", std::process::id()));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let opened = {
            let _in_runtime = rt.enter();
            if read_only {
                ztbridge_runtime::app::open_store_read_only(&config, self.data_dir.as_deref())
                    .map(|s| (s, None))
            } else {
                ztbridge_runtime::app::open_store(&config, self.data_dir.as_deref(), true)
            }
        };
        let (store, _) = match opened {
            Ok(s) => s,
            Err(ztbridge_runtime::app::AppError::Store {
                error: StoreError::NotFound(_),
                ..
            }) => {
                let (dir, how) = self.data_dir()?;
                anyhow::bail!(
                    "no event store in {} (data directory from {how}): is this the service's data directory? \
                     Pass --config with the service's config file (and data_dir set in it), or --data-dir DIR",
                    dir.display()
                )
            }
            Err(e) => return Err(e.into()),
        };
        Ok(OpenStore {
            place: store.describe(),
            store,
            rt,
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
