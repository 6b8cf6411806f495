//! `ztbridge events purge --delivered-before DATE`: deletes webhooks
//! whose every delivery succeeded before DATE.  Failed and open
//! deliveries are never purged.

use std::process::ExitCode;

use anyhow::anyhow;
use ztbridge_runtime::time::{now_millis, parse_rfc3339_millis, rfc3339_millis};

use super::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// `2025-06-01`, `2025-06-01T12:00:00Z`, or an age: `30d`, `12h`.
    #[arg(long)]
    pub delivered_before: String,
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
    let n = open.run(open.store.purge_delivered_before(before))?;
    println!(
        "purged {n} webhook{} delivered before {}",
        if n == 1 { "" } else { "s" },
        rfc3339_millis(before)
    );
    Ok(ExitCode::SUCCESS)
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
