//! One module per command.

pub mod keys_generate;
pub mod serve;
pub mod transform_inspect;
pub mod transform_new;
pub mod transform_run;
pub mod transform_sign;
pub mod transform_test;
pub mod transform_verify;

use ztbridge_runtime::config::LogFormat;

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
