//! `ztbridge config check [FILE]`: validates the configuration and its
//! transforms (signatures, required config keys, a usable data directory)
//! and prints what would run, without serving.  Safe while the service
//! runs (the stores allow other processes).

use std::path::PathBuf;
use std::process::ExitCode;

use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

use crate::builtin;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration file; without it, the built-in default
    /// configuration (with ZTBRIDGE_<ROUTE>_<KEY> variables).
    pub file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // It may create the data directory and the store: private, as serve's.
    ztbridge_runtime::files::private_umask();
    let builtins = builtin::all();
    let (config, strict) = match &args.file {
        Some(path) => (Config::load(path)?, true),
        None => (
            Config::builtin_default(&builtins.keys().cloned().collect::<Vec<_>>()),
            false,
        ),
    };
    super::init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Building the app is the check: it verifies signatures, compiles each
    // transform, resolves required config and opens both stores.
    let app = runtime.block_on(async { App::build(config, &builtins, strict) })?;
    let c = &app.config;
    println!(
        "config: OK ({})",
        args.file
            .as_ref()
            .map_or("built-in default".into(), |p| p.display().to_string())
    );
    println!("listen: {}", c.listen);
    println!("data_dir: {} (writable)", c.data_dir().display());
    println!("store: {}", app.dispatcher.store().describe());
    match &app.config.inbound.token {
        Some(_) => println!("inbound: token required"),
        None => println!("inbound: no authentication (keep `listen` on loopback)"),
    }
    let routes = app.dispatcher.routes();
    let mut n = 0;
    for r in routes.iter() {
        n += 1;
        let t = &r.transform;
        println!("route {}:", r.name);
        println!(
            "  transform: {} {} ({})",
            t.info.name, t.info.version, t.digest
        );
        let rc = c.routes.iter().find(|rc| rc.name == *r.name);
        if let Some(rc) = rc {
            println!("  source: {}", rc.transform);
            println!(
                "  takes: severities {}, states {}",
                list_or_all(&rc.severities),
                list_or_all(&rc.states)
            );
            if let Some(rate) = rc.rate_per_minute {
                println!("  rate: {rate}/min");
            }
        }
        println!("  egress: {}", r.egress.describe());
        for key in &t.info.config {
            let shown = match r.config.get(&key.name) {
                None => "(unset)".to_string(),
                Some(_) if key.secret => "(set, secret)".to_string(),
                Some(v) => format!("{v:?}"),
            };
            println!("  config {}: {shown}", key.name);
        }
    }
    for rc in c
        .routes
        .iter()
        .filter(|rc| routes.iter().all(|r| *r.name != *rc.name))
    {
        println!(
            "route {}: not running ({})",
            rc.name,
            if rc.enabled {
                "required config missing"
            } else {
                "enabled = false"
            }
        );
    }
    if n == 0 {
        println!("no route would run");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn list_or_all(v: &[String]) -> String {
    if v.is_empty() {
        "all".into()
    } else {
        v.join(", ")
    }
}
