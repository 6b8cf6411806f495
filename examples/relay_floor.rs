//! The floor of any relay on this machine: a webhook in, 202 out, and the
//! same body POSTed to the sink, with the crates ztbridge uses (axum in,
//! reqwest out, tokio) and nothing else: no store, no fsync, no sandbox, no
//! parse.  `benches/seed/compare.sh` measures it in the same run as the seed
//! and ztbridge, so ztbridge's figures read against what one inbound and
//! one outbound HTTP exchange per event cost here.
//!
//!   cargo run --release --example relay_floor -- PORT SINK_URL

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(sink)) = (args.next(), args.next()) else {
        return Err("usage: relay_floor PORT SINK_URL".into());
    };
    let app = Router::new()
        .route("/webhook", post(relay))
        .with_state((reqwest::Client::new(), sink));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Answers 202 at once and POSTs the body to the sink in a task of its own.
async fn relay(
    State((client, sink)): State<(reqwest::Client, String)>,
    body: Bytes,
) -> (StatusCode, &'static str) {
    tokio::spawn(async move {
        let sent = client
            .post(&sink)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        if let Err(e) = sent {
            eprintln!("relay_floor: {e}");
        }
    });
    (StatusCode::ACCEPTED, r#"{"status":"accepted"}"#)
}
