//! `ztbridge events show ID`: a webhook as received and each route's
//! delivery with every attempt, as JSON.

use std::process::ExitCode;

use super::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A receipt ID (from the webhook's answer or `events list`), or a
    /// Superna event ID (every webhook that carried it).
    pub id: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let open = args.store.open_read_only()?;
    let store = &open.store;
    if let Some(record) = open.run(store.record(&args.id, true))? {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(ExitCode::SUCCESS);
    }
    let receipts = open.run(store.receipts_for_event_id(&args.id))?;
    if receipts.is_empty() {
        eprintln!(
            "error: no webhook with receipt ID or event ID {:?} in {}",
            args.id, open.place
        );
        return Ok(ExitCode::from(1));
    }
    let records: Vec<_> = receipts
        .iter()
        .filter_map(|r| open.run(store.record(r, true)).transpose())
        .collect::<Result<_, _>>()?;
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(ExitCode::SUCCESS)
}
