//! Inbound hardening through the real server: webhook authentication, and
//! a generated corpus of bad bodies that must each get a 4xx JSON answer
//! without disturbing the service.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-webhook-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_token_is_required_when_configured() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!(
        "[inbound]\ntoken = {TOKEN:?}\n{}",
        pagerduty_route(&pd, "")
    ))
    .await;
    let body = fixture("events/critical-lockout.json").into_bytes();
    let json = ("content-type", "application/json");

    let (s, v) = server.post(body.clone(), &[json]).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let wrong = format!("Bearer {TOKEN}x");
    let (s, _) = server
        .post(body.clone(), &[json, ("authorization", &wrong)])
        .await;
    assert_eq!(s, 401);
    let (s, _) = server
        .post(body.clone(), &[json, ("authorization", TOKEN)])
        .await;
    assert_eq!(s, 401, "the Bearer scheme is required in Authorization");
    // Every refusal is counted, with its reason.
    assert_eq!(server.rejected("unauthorized").await, 3.0);
    let right = format!("Bearer {TOKEN}");
    let (s, v) = server
        .post(body.clone(), &[json, ("authorization", &right)])
        .await;
    assert_eq!(s, 202, "{v}");
    pd.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pd.received().len(), 1, "refused webhooks are not delivered");
    // The API needs the token too; health stays open.
    let r = server
        .client
        .get(server.url("/api/events/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_header_token() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&format!(
        "[inbound]\ntoken = {TOKEN:?}\nheader = \"X-Superna-Token\"\n{}",
        pagerduty_route(&pd, "")
    ))
    .await;
    let body = fixture("events/critical-lockout.json").into_bytes();
    let (s, _) = server
        .post(
            body.clone(),
            &[
                ("content-type", "application/json"),
                ("x-superna-token", "nope"),
            ],
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = server
        .post(
            body,
            &[
                ("content-type", "application/json"),
                ("x-superna-token", TOKEN),
            ],
        )
        .await;
    assert_eq!(s, 202);
}

/// A small deterministic PRNG (xorshift) so the corpus is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// (label, body, content-type, content-encoding)
fn corpus() -> Vec<(String, Vec<u8>, &'static str, Option<&'static str>)> {
    let good = fixture("events/critical-lockout.json");
    let gz = gzip(good.as_bytes());
    let mut c = Vec::new();
    let json = "application/json";
    // Every truncation of a real gzip body.
    for n in 0..gz.len() - 1 {
        c.push((
            format!("truncated gzip {n}"),
            gz[..n].to_vec(),
            json,
            Some("gzip"),
        ));
    }
    // Every truncation of the JSON itself (a prefix is never valid JSON here).
    for n in (0..good.len() - 1).step_by(3) {
        c.push((
            format!("truncated json {n}"),
            good.as_bytes()[..n].to_vec(),
            json,
            None,
        ));
    }
    // A gzip bomb: 10 MB of zeros.
    c.push((
        "gzip bomb".into(),
        gzip(&vec![0u8; 10 << 20]),
        json,
        Some("gzip"),
    ));
    c.push((
        "gzip bomb of spaces".into(),
        gzip(&vec![b' '; 10 << 20]),
        json,
        Some("gzip"),
    ));
    // Invalid UTF-8 in various places.
    for (i, bad) in [
        &b"\xff"[..],
        b"\xc3\x28",
        b"\xe2\x82",
        b"\xf0\x28\x8c\xbc",
        b"\xed\xa0\x80",
    ]
    .iter()
    .enumerate()
    {
        let mut b = b"{\"user\": \"".to_vec();
        b.extend_from_slice(bad);
        b.extend_from_slice(b"\"}");
        c.push((format!("invalid utf8 {i}"), b.clone(), json, None));
        c.push((format!("invalid utf8 gz {i}"), gzip(&b), json, Some("gzip")));
    }
    // JSON that serde_json refuses although each token looks right: lone
    // UTF-16 surrogates and numbers beyond f64 (the event scanner must
    // refuse them too).
    for (i, bad) in [
        r#"{"user": "\ud800"}"#,
        r#"{"user": "\udc00x"}"#,
        r#"{"id": "a", "user": "\ud83d\u0041"}"#,
        r#"{"signalStrength": 1e400}"#,
        r#"{"n": [-2E+999]}"#,
    ]
    .iter()
    .enumerate()
    {
        c.push((
            format!("refused by serde {i}"),
            bad.as_bytes().to_vec(),
            json,
            None,
        ));
    }
    // Deep nesting.
    for depth in [65usize, 100, 1000, 100_000] {
        let arr = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        c.push((format!("deep array {depth}"), arr.into_bytes(), json, None));
        let obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        c.push((format!("deep object {depth}"), obj.into_bytes(), json, None));
    }
    // Wrong types at the top level.
    for v in [
        "[]",
        "[1,2]",
        "\"text\"",
        "42",
        "-1.5e300",
        "null",
        "true",
        "false",
        "[{\"id\":\"x\"}]",
    ] {
        c.push((format!("wrong type {v}"), v.as_bytes().to_vec(), json, None));
        c.push((
            format!("wrong type gz {v}"),
            gzip(v.as_bytes()),
            json,
            Some("gzip"),
        ));
    }
    // Empty and whitespace.
    for v in ["", " ", "\n\t ", "\u{feff}"] {
        c.push((format!("empty {v:?}"), v.as_bytes().to_vec(), json, None));
        c.push((
            format!("empty gz {v:?}"),
            gzip(v.as_bytes()),
            json,
            Some("gzip"),
        ));
    }
    // Huge (over the 2 MiB body limit).
    c.push((
        "huge".into(),
        format!("{{\"pad\":\"{}\"}}", "x".repeat(3 << 20)).into_bytes(),
        json,
        None,
    ));
    // Trailing garbage, bad escapes, lone surrogates in escapes, NaN...
    for v in [
        "{} x",
        "{}{}",
        "{\"a\":1,}",
        "{'a':1}",
        "{\"a\":\"\\x\"}",
        "{\"a\":NaN}",
        "{\"a\":01}",
        "{\"a\" 1}",
        "{\"a\":\"\u{0}\"}",
    ] {
        c.push((format!("bad json {v:?}"), v.as_bytes().to_vec(), json, None));
    }
    // Wrong content types and encodings on a good body.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/jsonx",
        "json",
        "",
    ] {
        c.push((
            format!("content type {ct:?}"),
            good.clone().into_bytes(),
            ct,
            None,
        ));
    }
    for ce in ["br", "deflate", "compress", "zstd", "gzip, br"] {
        c.push((
            format!("encoding {ce}"),
            good.clone().into_bytes(),
            json,
            Some(ce),
        ));
    }
    // Random bytes, labelled gzip or not.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..500 {
        let n = (rng.next() % 2048) as usize + 1;
        let mut b = rng.bytes(n);
        if i % 3 == 0 {
            // Make some look like gzip to reach the inflater.
            b.splice(0..0, [0x1f, 0x8b, 0x08, 0x00]);
        }
        let enc = if i % 2 == 0 { Some("gzip") } else { None };
        c.push((format!("random {i}"), b, json, enc));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_bodies_each_get_a_4xx_json_answer() {
    let pd = StubPagerDuty::start().await;
    let server = Server::start(&pagerduty_route(&pd, "")).await;
    let corpus = corpus();
    assert!(corpus.len() >= 1000, "corpus has {} bodies", corpus.len());
    let mut by_code = std::collections::BTreeMap::<String, usize>::new();
    // A fresh connection per request: after refusing an oversized body
    // without reading it the server closes the connection, and a pooled
    // connection would race with that close.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (label, body, ct, ce) in &corpus {
        let mut req = client.post(server.url("/webhook")).body(body.clone());
        if !ct.is_empty() {
            req = req.header("content-type", *ct);
        }
        if let Some(ce) = ce {
            req = req.header("content-encoding", *ce);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{label}: connection failed: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            (400..500).contains(&status),
            "{label}: answered {status} {text}"
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{label}: not JSON: {text:?}"));
        let code = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: no error code: {v}"));
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{label}: {v}"
        );
        *by_code.entry(code.to_string()).or_default() += 1;
    }
    println!("{} bad bodies refused: {by_code:?}", corpus.len());
    // The gzip bomb was refused as too large, not inflated whole.
    assert!(
        by_code
            .get("decompressed_too_large")
            .is_some_and(|n| *n >= 2),
        "{by_code:?}"
    );
    // Still serving, and nothing bad reached PagerDuty.
    let (status, _) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202);
    pd.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pd.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_answers_503_with_retry_after() {
    let config = format!(
        "[trust]\nallow_unsigned = true\n[limits]\nstep_timeout_ms = 1500\n[delivery]\nmax_pending = 1\ndedupe_window_secs = 0\n\
         [[route]]\nname = \"slow\"\ntransform = {:?}\n[route.config]\nmode = \"loop\"\n",
        wasm_path("hostile")
    );
    let server = Server::start(&config).await;
    let body = fixture("events/critical-lockout.json");
    let (s, _) = server.post_plain(&body).await;
    assert_eq!(s, 202);
    let resp = server
        .client
        .post(server.url("/webhook"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "30");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "overloaded");
    assert_eq!(server.rejected("overloaded").await, 1.0);
    // Once the first delivery ends (the deadline stops the loop), webhooks
    // are accepted again.
    let mut status = 0;
    for _ in 0..100 {
        status = server.post_plain(&body).await.0;
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_of_disk_space_answers_503_and_stores_nothing() {
    let pd = StubPagerDuty::start().await;
    // Ask for more free space than any test machine has (100 TB).
    let config = format!(
        "[delivery]\nmin_free_disk_mb = 100000000\n{}",
        pagerduty_route(&pd, "")
    );
    let server = Server::start(&config).await;
    let resp = server
        .client
        .post(server.url("/webhook"))
        .header("content-type", "application/json")
        .body(fixture("events/critical-lockout.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "30");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "disk_full", "{v}");
    assert_eq!(server.rejected("disk_full").await, 1.0);
    // Readiness asks the same question, now: not ready, for the same reason.
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "disk_full", "{ready}");
    // Nothing was stored, so nothing can be delivered.
    let backlog = server.app.dispatcher.store().backlog().await.unwrap();
    assert_eq!(backlog.open, 0);
    assert!(pd.received().is_empty());
}
