//! `ztbridge serve`: the webhook service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;
use ztbridge_runtime::server;

use crate::builtin;

pub fn run(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let builtins = builtin::all();
    let (config, strict) = match &config_path {
        Some(path) => (Config::load(path)?, true),
        None => (
            Config::builtin_default(&builtins.keys().cloned().collect::<Vec<_>>()),
            false,
        ),
    };
    super::init_logging(config.log_format);
    match &config_path {
        Some(p) => {
            tracing::info!(config = %p.display(), "starting ztbridge {}", env!("CARGO_PKG_VERSION"))
        }
        None => tracing::info!(
            "starting ztbridge {} with the built-in default configuration",
            env!("CARGO_PKG_VERSION")
        ),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let app = Arc::new(App::build(config, &builtins, strict)?);
        let addr = app.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        server::run(listener, app, shutdown_signal())
            .await
            .context("server")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
