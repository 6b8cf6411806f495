//! `ztbridge events retry`: failed (dead-letter) deliveries back to
//! pending.  The running service picks them up within a second and runs
//! them through the transform it has loaded now; a stopped one at its
//! next start.

use std::process::ExitCode;

use anyhow::bail;
use ztbridge_runtime::store::RetrySelection;

use super::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The receipt ID of the webhook whose failed deliveries to retry.
    pub id: Option<String>,
    /// Every failed delivery (of `--route` only, if given).
    #[arg(long, conflicts_with = "id")]
    pub all_failed: bool,
    /// Only this route's deliveries.
    #[arg(long)]
    pub route: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.id.is_none() && !args.all_failed {
        bail!("name a receipt ID, or pass --all-failed");
    }
    let horizon_ms = args.store.config()?.delivery.horizon_ms();
    let open = args.store.open()?;
    let selection = RetrySelection {
        receipt_id: args.id.clone(),
        route: args.route.clone(),
    };
    let retried = open.run(open.store.retry_failed(selection, horizon_ms))?;
    if retried.is_empty() {
        match &args.id {
            Some(id) if open.run(open.store.record(id, false))?.is_none() => {
                eprintln!("error: no webhook with receipt ID {id:?}");
                return Ok(ExitCode::from(1));
            }
            _ => eprintln!("no failed deliveries match"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (receipt, route) in &retried {
        println!("{receipt} {route}: pending");
    }
    eprintln!(
        "{} deliver{} queued again",
        retried.len(),
        if retried.len() == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}
