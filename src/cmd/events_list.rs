//! `ztbridge events list`: deliveries, newest first.

use std::process::ExitCode;

use anyhow::bail;
use ztbridge_runtime::store::{DeliveryState, ListFilter};

use ztbridge_runtime::text::{clip_escaped, escape_controls};
use ztbridge_runtime::time::rfc3339_millis;

use super::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Only deliveries in this state: pending, in_flight, delivered, failed.
    #[arg(long)]
    pub state: Option<String>,
    /// Only this route's deliveries.
    #[arg(long)]
    pub route: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON (an array) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = match args.state.as_deref() {
        None => None,
        Some(s) => match DeliveryState::parse(s) {
            Some(st) => Some(st),
            None => bail!("--state {s}: expected pending, in_flight, delivered or failed"),
        },
    };
    let open = args.store.open_read_only()?;
    let rows = open.run(open.store.list(ListFilter {
        state,
        route: args.route.clone(),
        limit: args.limit,
        ..ListFilter::default()
    }))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no deliveries match");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<34} {:<24} {:<24} {:<12} {:<10} {:>3} {:>4}  DETAIL",
        "RECEIPT", "RECEIVED", "EVENT ID", "ROUTE", "STATE", "TRY", "HTTP"
    );
    for r in rows {
        let detail = match r.delivery {
            DeliveryState::Pending => match (r.next_attempt_ms.map(rfc3339_millis), &r.reason) {
                (Some(at), Some(why)) => format!("next {at}; last: {why}"),
                (Some(at), None) => format!("next {at}"),
                _ => String::new(),
            },
            _ => r.reason.clone().unwrap_or_default(),
        };
        println!(
            "{:<34} {:<24} {:<24} {:<12} {:<10} {:>3} {:>4}  {}",
            escape_controls(&r.receipt_id),
            rfc3339_millis(r.received_ms),
            clip_escaped(r.event_id.as_deref().unwrap_or("-"), 24),
            clip_escaped(&r.route, 12),
            r.delivery.as_str(),
            r.attempts,
            r.last_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            clip_escaped(&detail, 160),
        );
    }
    Ok(ExitCode::SUCCESS)
}
