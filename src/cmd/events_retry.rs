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
    /// A receipt ID (that webhook's failed deliveries) or a Superna event
    /// ID (the failed deliveries of every webhook that carried it).
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
        bail!("name a receipt ID or a Superna event ID, or pass --all-failed");
    }
    let horizon_ms = args.store.config()?.delivery.horizon_ms();
    let open = args.store.open()?;
    // A receipt ID, else every webhook that carried this Superna event ID.
    let receipts: Vec<Option<String>> = match &args.id {
        None => vec![None],
        Some(id) if open.run(open.store.record(id, false))?.is_some() => vec![Some(id.clone())],
        Some(id) => {
            let found = open.run(open.store.receipts_for_event_id(id))?;
            if found.is_empty() {
                eprintln!(
                    "error: no webhook with receipt ID or Superna event ID {id:?} in {}",
                    open.place
                );
                return Ok(ExitCode::from(1));
            }
            found.into_iter().map(Some).collect()
        }
    };
    let mut retried = Vec::new();
    for receipt_id in receipts {
        let selection = RetrySelection {
            receipt_id,
            route: args.route.clone(),
        };
        retried.extend(open.run(open.store.retry_failed(selection, horizon_ms))?);
    }
    if retried.is_empty() {
        eprintln!("no failed deliveries match");
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
