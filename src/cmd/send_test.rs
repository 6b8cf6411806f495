//! `ztbridge send-test`: sends a realistic sample Zero Trust event the way
//! Superna does (gzip JSON, its headers), prints the answer, and with
//! `--follow` how each route delivered it.  Replaces the curl template of
//! Superna's integration guides.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// The webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:5000/webhook")]
    pub url: String,
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
    /// Bearer token, when the service has `[inbound] token`.
    #[arg(long, env = "ZTBRIDGE_INBOUND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    let at = ztbridge_runtime::time::rfc3339_millis(now);
    let event = json!({
        "id": id,
        "severity": severity,
        "state": state,
        "user": "CORP\\ztbridge-test",
        "clientIPs": ["192.0.2.10"],
        "shares": ["\\\\test-cluster\\ztbridge-test"],
        "files": ["/ifs/data/ztbridge-test/sample.docx.locked"],
        "eventSource": "ISILON_CLUSTER",
        "nes": ["test-cluster"],
        "signalStrength": 3,
        "threatDetectors": ["ztbridge send-test (not a real alert)"],
        "detected": at,
        "lastUpdated": at,
        "url": format!("https://eyeglass.example/RansomwareDefender/#/events/{id}"),
    });
    Ok((id, event))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (id, event) = sample(&args)?;
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
            .post(&args.url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("user-agent", "ztbridge-send-test")
            .body(gz);
        if let Some(t) = &args.token {
            req = req.bearer_auth(t);
        }
        println!(
            "sending event {id} ({}, {}) to {}",
            event["severity"].as_str().unwrap_or(""),
            event["state"].as_str().unwrap_or(""),
            args.url
        );
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {} (is `ztbridge serve` running?)", args.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        println!("HTTP {} {}", status.as_u16(), text.trim());
        if !status.is_success() {
            return Ok(ExitCode::from(1));
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(receipt) = answer["receipt_id"].as_str() else {
            bail!("the answer has no receipt_id to follow");
        };
        let base = args
            .url
            .strip_suffix("/webhook")
            .unwrap_or(args.url.trim_end_matches('/'));
        follow(
            &client,
            &format!("{base}/api/events/{receipt}"),
            args.token.as_deref(),
            Duration::from_secs(args.timeout),
        )
        .await
    })
}

async fn follow(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut shown = String::new();
    loop {
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
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
