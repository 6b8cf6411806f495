//! Several `ztbridge serve` children on one PostgreSQL, for the cluster
//! tests: start them, post to them, read what the PagerDuty stub got.

use std::time::Duration;

use serde_json::{Value, json};

use super::child::ChildServer;
use super::pg::PgServer;
use super::{Received, fixture, wait_until};

/// Quick retries; a 3 s lease so a dead node's claims are taken over soon
/// (the default is 30 s).
pub fn node_config(pg: &PgServer, routes: &str) -> String {
    format!(
        "[delivery]\ninitial_backoff_ms = 100\nmax_backoff_ms = 2000\n[store]\nurl = {:?}\nlease_secs = 3\npool_size = 6\n{routes}",
        pg.url()
    )
}

pub struct Cluster {
    pub nodes: Vec<Option<ChildServer>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    pub async fn start(n: usize, config: &str) -> Cluster {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().unwrap();
            nodes.push(Some(ChildServer::start(dir.path(), config).await));
            dirs.push(dir);
        }
        let cluster = Cluster { nodes, _dirs: dirs };
        // Ready: each has joined (its store answered).
        for url in cluster.urls() {
            let ready = wait_until(Duration::from_secs(60), || {
                let url = url.replace("/webhook", "/readyz");
                std::process::Command::new("curl")
                    .args(["-sf", &url])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|_| ())
            })
            .await;
            assert!(ready.is_some(), "{url} never ready");
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.url("/webhook"))
            .collect()
    }

    pub fn any(&self) -> &ChildServer {
        self.nodes.iter().flatten().next().expect("a live node")
    }
}

pub fn event(id: &str, seq: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("events/critical-lockout.json")).unwrap();
    v["id"] = json!(id);
    v["update_seq"] = json!(seq);
    serde_json::to_vec(&v).unwrap()
}

/// POSTs to `url`: the status, or None when the node did not answer.
pub async fn post(client: &reqwest::Client, url: &str, body: &[u8]) -> Option<(u16, Value)> {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.unwrap_or(Value::Null)))
}

/// (Superna event ID, update_seq) of a PagerDuty request.
pub fn carried(r: &Received) -> (String, u64) {
    let v = r.json();
    let ev = &v["payload"]["custom_details"]["received_event"];
    (
        ev["id"].as_str().unwrap_or("").to_string(),
        ev["update_seq"].as_u64().unwrap_or(u64::MAX),
    )
}
