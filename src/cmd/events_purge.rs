//! `ztbridge events purge --delivered-before DATE`: deletes webhooks
//! whose every delivery succeeded before DATE.  Failed and open
//! deliveries are never purged.

use std::process::ExitCode;

use anyhow::anyhow;
use ztbridge_runtime::time::{now_millis, parse_rfc3339_millis, rfc3339_millis};

use std::collections::BTreeMap;

use ztbridge_runtime::store::{DeliveryState, ListFilter};

use super::{OpenStore, StoreArgs};

#[derive(clap::Args)]
pub struct Args {
    /// `2025-06-01`, `2025-06-01T12:00:00Z`, or an age: `30d`, `12h`.
    #[arg(long)]
    pub delivered_before: String,
    /// Count what would be purged; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let before = parse_when(&args.delivered_before).ok_or_else(|| {
        anyhow!(
            "--delivered-before {:?}: expected a date (2025-06-01), an RFC 3339 time or an age (30d, 12h)",
            args.delivered_before
        )
    })?;
    let open = args.store.open()?;
    if args.dry_run {
        let n = would_purge(&open, before)?;
        println!(
            "would purge {n} webhook{} delivered before {} (dry run: nothing deleted; webhooks no route took are purged too and not counted here)",
            if n == 1 { "" } else { "s" },
            rfc3339_millis(before)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let n = open.run(open.store.purge_delivered_before(before))?;
    println!(
        "purged {n} webhook{} delivered before {}",
        if n == 1 { "" } else { "s" },
        rfc3339_millis(before)
    );
    Ok(ExitCode::SUCCESS)
}

/// Webhooks received before `before` whose every delivery was delivered
/// before it (its last attempt), through the store's read interface.
fn would_purge(open: &OpenStore, before: i64) -> anyhow::Result<usize> {
    let rows = open.run(open.store.list(ListFilter {
        state: None,
        route: None,
        limit: i64::MAX as usize,
        ..ListFilter::default()
    }))?;
    let mut all_delivered: BTreeMap<String, bool> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.received_ms < before) {
        *all_delivered.entry(r.receipt_id.clone()).or_insert(true) &=
            r.delivery == DeliveryState::Delivered;
    }
    let mut n = 0;
    for (receipt, delivered) in all_delivered {
        if !delivered {
            continue;
        }
        let Some(record) = open.run(open.store.record(&receipt, false))? else {
            continue;
        };
        let done_before = record.deliveries.iter().all(|d| {
            d.attempts
                .iter()
                .map(|a| a.at_ms)
                .max()
                .is_none_or(|at| at < before)
        });
        n += usize::from(done_before);
    }
    Ok(n)
}

fn parse_when(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(n) = s.strip_suffix('d').and_then(|n| n.parse::<i64>().ok()) {
        return Some(now_millis() - n.checked_mul(86_400_000)?);
    }
    if let Some(n) = s.strip_suffix('h').and_then(|n| n.parse::<i64>().ok()) {
        return Some(now_millis() - n.checked_mul(3_600_000)?);
    }
    parse_rfc3339_millis(s)
}
