//! `ztbridge serve`: the webhook service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// TOML configuration; without it the built-in routes run with
    /// their config taken from ZTBRIDGE_<ROUTE>_<KEY> variables.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config_path = args.config;
    // Everything the service writes is private, whatever umask it got.
    ztbridge_runtime::files::private_umask();
    let builtins = builtin::all();
    let (config, strict) = match &config_path {
        Some(path) => (Config::load(path)?, true),
        None => (
            Config::builtin_default(&builtins.keys().cloned().collect::<Vec<_>>()),
            false,
        ),
    };
    let _log = super::init_service_logging(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("{warning} (see `ztbridge config check`)");
    }
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
        #[cfg(unix)]
        tokio::spawn(reload_on_sighup(
            app.clone(),
            config_path.clone(),
            builtins.clone(),
        ));
        let addr = app.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        app.clone()
            .serve(listener, shutdown_signal())
            .await
            .context("server")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUP (`systemctl reload`): re-read the config and transforms; a new
/// transform version is verified and compiled before it replaces the old;
/// on any failure the old keeps running and the error is logged.
#[cfg(unix)]
async fn reload_on_sighup(
    app: Arc<App>,
    config_path: Option<PathBuf>,
    builtins: ztbridge_runtime::Builtins,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload is off");
        return;
    };
    let builtins = Arc::new(builtins);
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading configuration and transforms");
        // Notify only a running service: not before READY, not after STOPPING.
        let notify = app.dispatcher.is_running();
        if notify {
            ztbridge_runtime::ops::notify::reloading();
        }
        let (app2, path, builtins2) = (app.clone(), config_path.clone(), builtins.clone());
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let config = match &path {
                Some(p) => Config::load(p)?,
                None => Config::builtin_default(&builtins2.keys().cloned().collect::<Vec<_>>()),
            };
            Ok(app2.reload(&config, &builtins2)?)
        })
        .await;
        match result {
            Ok(Ok(routes)) => tracing::info!(routes = %routes.join(", "), "reloaded"),
            Ok(Err(e)) => {
                tracing::error!("reload failed; the previous configuration keeps running: {e:#}")
            }
            Err(e) => {
                tracing::error!("reload failed; the previous configuration keeps running: {e}")
            }
        }
        ztbridge_runtime::ops::notify::ready();
    }
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
