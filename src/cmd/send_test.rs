//! `ztbridge send-test`: sends a realistic sample Zero Trust event the way
//! Superna does (gzip JSON, its headers) to the service `--config`
//! describes (its `listen` address and inbound token), prints the answer
//! and which routes took it, and with `--follow` how each delivered it.
//! It says plainly that this creates a real incident; `--dry-run` sends
//! nothing and shows what would be sent.  Replaces the curl template of
//! Superna's integration guides.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use ztbridge_runtime::config::Config;
use ztbridge_runtime::ops::sample::{Sample, sample_event};

#[derive(clap::Args)]
pub struct Args {
    /// The service's configuration: its `listen` address and `[inbound]`
    /// token are used (and, with --dry-run, its routes).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The webhook URL (default: from --config's `listen`, else
    /// http://127.0.0.1:5000/webhook).
    #[arg(long)]
    pub url: Option<String>,
    /// Send nothing: print the sample event and what each route of
    /// --config (or the built-in default) would send.
    #[arg(long)]
    pub dry_run: bool,
    /// critical, major or warning.
    #[arg(long, default_value = "critical")]
    pub severity: String,
    /// Send an update of this earlier event ID (default state
    /// ACCESS_RESTORED, which resolves in PagerDuty and comments in Jitbit).
    #[arg(long, value_name = "EVENT_ID")]
    pub update: Option<String>,
    /// The event's state (default LOCKED_OUT for a new event).
    #[arg(long)]
    pub state: Option<String>,
    /// Wait and print how each route delivered it.
    #[arg(long)]
    pub follow: bool,
    /// How long --follow waits, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The inbound token, when the service has `[inbound] token` (default:
    /// the one --config names).
    #[arg(long, env = "ZTBRIDGE_INBOUND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where to send and how to authenticate, from the flags and --config.
struct Target {
    url: String,
    /// Header name and value carrying the token, if any.
    auth: Option<(String, String)>,
}

fn target(args: &Args) -> anyhow::Result<Target> {
    let config = match &args.config {
        Some(p) => Some(Config::load(p)?),
        None => None,
    };
    let url = match (&args.url, &config) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => {
            // A wildcard listen address is reached on loopback.
            let mut addr = c.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}/webhook")
        }
        (None, None) => "http://127.0.0.1:5000/webhook".into(),
    };
    let header = config
        .as_ref()
        .and_then(|c| c.inbound.header.clone())
        .unwrap_or_else(|| "authorization".into());
    let token =
        match (&args.token, &config) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(c)) => match &c.inbound.token {
                Some(v) => Some(v.resolve("inbound", "token").context(
                    "the config's [inbound] token (send-test sends it; or pass --token)",
                )?),
                None => None,
            },
            (None, None) => None,
        };
    let auth = token.map(|t| {
        if header.eq_ignore_ascii_case("authorization") {
            ("authorization".to_string(), format!("Bearer {}", t.trim()))
        } else {
            (header.clone(), t.trim().to_string())
        }
    });
    Ok(Target { url, auth })
}

fn sample(args: &Args) -> anyhow::Result<(String, Value)> {
    let severity = match args.severity.to_ascii_lowercase().as_str() {
        "critical" => "CRITICAL",
        "major" => "MAJOR",
        "warning" => "WARNING",
        other => bail!("--severity {other}: expected critical, major or warning"),
    };
    let now = ztbridge_runtime::time::now_millis();
    let id = args
        .update
        .clone()
        .unwrap_or_else(|| format!("ZTBRIDGE-TEST-{now}"));
    let state = args.state.clone().unwrap_or_else(|| {
        if args.update.is_some() {
            "ACCESS_RESTORED".into()
        } else {
            "LOCKED_OUT".into()
        }
    });
    let mut event = sample_event(&Sample {
        id: &id,
        severity,
        state: &state,
        user: "CORP\\ztbridge-test",
        note: "ztbridge send-test (not a real alert)",
        at_ms: now,
    });
    event["url"] = json!(format!(
        "https://eyeglass.example/RansomwareDefender/#/events/{id}"
    ));
    Ok((id, event))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (id, event) = sample(&args)?;
    if args.dry_run {
        println!(
            "dry run: nothing is sent. The sample event {id}:\n{}",
            serde_json::to_string_pretty(&event)?
        );
        let checked = super::config_check::check(
            args.config.clone(),
            Some(("the sample event".into(), event.to_string())),
        )?;
        return Ok(checked);
    }
    let target = target(&args)?;
    eprintln!(
        "note: this is a real test: every route that takes the sample event delivers it, creating a REAL \
         incident or ticket at the destination (PagerDuty, Jitbit...). Resolve it with `ztbridge send-test \
         --update <EVENT_ID>`; see what would be sent, without sending, with --dry-run."
    );
    let body = serde_json::to_vec(&event)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body)?;
    let gz = gz.finish()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut req = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("user-agent", "ztbridge-send-test")
            .body(gz);
        if let Some((name, value)) = &target.auth {
            req = req.header(name.as_str(), value.as_str());
        }
        println!(
            "sending event {id} ({}, {}) to {}",
            event["severity"].as_str().unwrap_or(""),
            event["state"].as_str().unwrap_or(""),
            target.url
        );
        let resp = req.send().await.with_context(|| {
            format!("cannot reach {} (is `ztbridge serve` running?)", target.url)
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        println!("HTTP {} {}", status.as_u16(), text.trim());
        if !status.is_success() {
            if status.as_u16() == 401 {
                println!(
                    "outcome: refused: the service requires its [inbound] token (pass --config FILE or --token)"
                );
            }
            return Ok(ExitCode::from(1));
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let routes: Vec<&str> = answer["routes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let receipt = answer["receipt_id"].as_str().unwrap_or("?");
        match (answer["status"].as_str(), routes.is_empty()) {
            (Some("duplicate"), _) => println!(
                "outcome: a duplicate of webhook {receipt}: not delivered again"
            ),
            (_, true) => println!(
                "outcome: accepted, but no route takes a {} {} event: nothing will be delivered \
                 (`ztbridge config check` shows what each route takes)",
                args.severity.to_ascii_lowercase(),
                event["state"].as_str().unwrap_or("")
            ),
            (_, false) => println!(
                "outcome: accepted for {}{}",
                routes.join(", "),
                if args.follow {
                    ""
                } else {
                    "; see how it went with `ztbridge events show` or --follow"
                }
            ),
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        if answer["receipt_id"].as_str().is_none() {
            bail!("the answer has no receipt_id to follow");
        }
        let base = target
            .url
            .strip_suffix("/webhook")
            .unwrap_or(target.url.trim_end_matches('/'));
        follow(
            &client,
            &format!("{base}/api/events/{receipt}"),
            target.auth.as_ref(),
            Duration::from_secs(args.timeout),
        )
        .await
    })
}

async fn follow(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&(String, String)>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut shown = String::new();
    loop {
        let mut req = client.get(url);
        if let Some((name, value)) = auth {
            req = req.header(name.as_str(), value.as_str());
        }
        let text = req.send().await?.text().await?;
        let record: Value =
            serde_json::from_str(&text).with_context(|| format!("{url} answered {text:?}"))?;
        let deliveries = record["deliveries"].as_array().cloned().unwrap_or_default();
        let line = deliveries
            .iter()
            .map(|d| {
                format!(
                    "{}={}",
                    d["route"].as_str().unwrap_or("?"),
                    d["state"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        if line != shown {
            println!(
                "[{:>5.1}s] {}",
                started.elapsed().as_secs_f64(),
                if line.is_empty() {
                    "no route took the event"
                } else {
                    &line
                }
            );
            shown = line;
        }
        let settled = deliveries
            .iter()
            .all(|d| d["state"] == "delivered" || d["state"] == "failed");
        if settled || started.elapsed() > timeout {
            for d in &deliveries {
                let last = d["attempts"]
                    .as_array()
                    .and_then(|a| a.last())
                    .cloned()
                    .unwrap_or(Value::Null);
                println!(
                    "  {}: {} after {} attempt(s); last HTTP {}; {}",
                    d["route"].as_str().unwrap_or("?"),
                    d["state"].as_str().unwrap_or("?"),
                    d["attempts"].as_array().map(|a| a.len()).unwrap_or(0),
                    last["last_status"],
                    d["reason"]
                        .as_str()
                        .or(last["outcome"]["message"].as_str())
                        .unwrap_or(""),
                );
            }
            let ok = settled && deliveries.iter().all(|d| d["state"] == "delivered");
            if !settled {
                println!(
                    "still not settled after {} s (see `ztbridge events show`)",
                    timeout.as_secs()
                );
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
