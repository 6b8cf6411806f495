//! The operator's console over HTTP, without a browser: who gets in (the
//! admin token, not the inbound one; sessions; CSRF on every POST), the
//! security headers, the OpenAPI document covering every API route, a
//! pause that outlives a restart, and the configuration's refusals.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::child::ChildServer;
use common::{Server, StubPagerDuty, fixture, free_port, pagerduty_route, wait_listening};
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use ztbridge_runtime::config::Config;

const ADMIN_TOKEN: &str = "console-admin-token-0123456789";
const INBOUND_TOKEN: &str = "inbound-webhook-token-0123456789";

/// The header `name` of an answer, as text (it must be there).
fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()[name].to_str().unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn console_server(extra_admin: &str) -> (Server, String, StubPagerDuty) {
    let pd = StubPagerDuty::start().await;
    let port = free_port();
    let config = format!(
        "[inbound]\ntoken = {INBOUND_TOKEN:?}\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = {ADMIN_TOKEN:?}\n{extra_admin}\n{}",
        pagerduty_route(&pd, "")
    );
    let server = Server::start(&config).await;
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        wait_listening(port, Duration::from_secs(30)).await,
        "console listens"
    );
    (server, url, pd)
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or("").to_string())
    })
}

/// Logs in through the form; returns the session cookie's header lines.
async fn login(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let form = client.get(format!("{url}/login")).send().await.unwrap();
    let set = set_cookies(&form);
    let nonce = cookie_value(&set, "ztb_login").expect("login cookie");
    let html = form.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{nonce}\"")), "{html}");
    assert!(html.contains("name=\"token\""), "{html}");
    let mut req = client
        .post(format!("{url}/login"))
        .header("cookie", format!("ztb_login={nonce}"))
        .form(&[("login_csrf", nonce.as_str()), ("token", ADMIN_TOKEN)]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 303, "login answers a redirect");
    set_cookies(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_gets_in() {
    let (_server, url, _pd) = console_server("").await;
    let client = no_redirects();
    let get = |auth: Option<&str>| {
        let mut r = client.get(format!("{url}/api/overview"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for auth in [
        None,
        Some(format!("Bearer {INBOUND_TOKEN}")),
        Some("Bearer wrong-token-0123456789".into()),
        Some(ADMIN_TOKEN.into()),
    ] {
        let r = get(auth.as_deref()).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized", "{v}");
    }
    let r = get(Some(&format!("Bearer {ADMIN_TOKEN}"))).await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = header(&r, "content-security-policy").to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["routes"][0]["name"], "pagerduty", "{v}");
    assert_eq!(v["routes"][0]["state"], "healthy", "{v}");
    assert_eq!(v["transforms"][0]["signed_by"], "built-in", "{v}");
    assert!(
        v["transforms"][0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Pages send strangers to the login form.
    let r = client.get(format!("{url}/events")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    // A bearer caller needs no CSRF token (it sends no cookie); bad input
    // gets a clear JSON error.
    let r = client
        .post(format!("{url}/api/routes/nope/pause"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .get(format!("{url}/api/events?state=bogus"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_csrf() {
    let (_server, url, _pd) = console_server("").await;
    let client = no_redirects();
    // The login form itself carries a CSRF token.
    let r = client
        .post(format!("{url}/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let set = login(&client, &url, &[]).await;
    let session = set
        .iter()
        .find(|c| c.starts_with("ztb_session="))
        .expect("session cookie")
        .clone();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "plain HTTP, no trusted proxy: {session}"
    );
    let id = cookie_value(&set, "ztb_session").unwrap();
    let cookie = format!("ztb_session={id}");
    let page = client
        .get(format!("{url}/routes"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_string();
    let pause = |form: Vec<(&'static str, String)>| {
        client
            .post(format!("{url}/api/routes/pagerduty/pause"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
    };
    assert_eq!(
        pause(vec![("back", "/routes".into())])
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        pause(vec![("csrf", "0".repeat(64))])
            .await
            .unwrap()
            .status(),
        403
    );
    let ok = pause(vec![("csrf", csrf.clone()), ("back", "/routes".into())])
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    assert!(header(&ok, "location").starts_with("/routes?flash="));
    // An open redirect is not possible through `back`.
    let r = pause(vec![
        ("csrf", csrf.clone()),
        ("back", "//evil.example/".into()),
    ])
    .await
    .unwrap();
    assert!(header(&r, "location").starts_with("/?flash="));
    // Logout ends the session.
    let r = client
        .post(format!("{url}/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = client
        .get(format!("{url}/api/overview"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookie_behind_a_trusted_tls_proxy() {
    let (_server, url, _pd) = console_server("trust_proxy_headers = true").await;
    let client = no_redirects();
    let set = login(&client, &url, &[("x-forwarded-proto", "https")]).await;
    let session = set.iter().find(|c| c.starts_with("ztb_session=")).unwrap();
    assert!(session.contains("; Secure"), "{session}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_api_route() {
    let (_server, url, _pd) = console_server("").await;
    let doc: Value = reqwest::get(format!("{url}/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ztbridge_runtime::console::API_ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not in openapi.json"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ztbridge_runtime::console::API_ROUTES.len());
}

#[test]
fn the_console_refuses_to_listen_beyond_loopback_without_a_token() {
    let err = Config::parse("[admin]\nlisten = \"0.0.0.0:5001\"\n", "test").expect_err("refused");
    assert!(err.to_string().contains("admin.token"), "{err}");
    Config::parse(
        "[admin]\nlisten = \"0.0.0.0:5001\"\ntoken = \"console-admin-token-0123456789\"\n",
        "test",
    )
    .expect("with a token");
    let c = Config::parse("[admin]\n", "test").unwrap();
    assert_eq!(c.admin.unwrap().listen.to_string(), "127.0.0.1:5001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_must_differ_from_the_inbound_token() {
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[inbound]\ntoken = {INBOUND_TOKEN:?}\n[admin]\nlisten = \"127.0.0.1:{}\"\ntoken = {INBOUND_TOKEN:?}\n",
        data.path().display().to_string(),
        free_port()
    );
    let config = Config::parse(&text, "test").unwrap();
    let err = ztbridge_runtime::app::App::build(config, &common::builtins(), false)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("differ"), "{err}");
}

/// Each route's delivery state of `receipt`, from the console's API.
async fn delivery_states(
    client: &reqwest::Client,
    console: &str,
    receipt: &str,
) -> BTreeMap<String, String> {
    let v: Value = client
        .get(format!("{console}/api/events/{receipt}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["route"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// [`delivery_states`] once `route`'s is `state`, or as they are after
/// 400 polls 50 ms apart.
async fn states_when(
    client: &reqwest::Client,
    console: &str,
    receipt: &str,
    route: &str,
    state: &str,
) -> BTreeMap<String, String> {
    let mut states = delivery_states(client, console, receipt).await;
    for _ in 0..400 {
        if states[route] == state {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        states = delivery_states(client, console, receipt).await;
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_holds_deliveries_and_outlives_a_restart() {
    let pd = StubPagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}\n{}",
        pagerduty_route(&pd, ""),
        pagerduty_route(&pd, "").replace("name = \"pagerduty\"", "name = \"second\"")
    );
    let config = |port: u16| {
        format!(
            "[delivery]\ninitial_backoff_ms = 50\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = {ADMIN_TOKEN:?}\n\n{routes}"
        )
    };
    let port = free_port();
    let mut server = ChildServer::start(dir.path(), &config(port)).await;
    let client = reqwest::Client::new();
    let console = |port: u16| format!("http://127.0.0.1:{port}");
    let post = |url: String| {
        client
            .post(url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({}))
            .send()
    };
    assert!(
        wait_listening(port, Duration::from_secs(30)).await,
        "console listens"
    );
    let r = post(format!("{}/api/routes/pagerduty/pause", console(port)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["paused"], true);
    let (s, a) = server.post(&fixture("events/critical-lockout.json")).await;
    assert_eq!(s, 202, "{a}");
    let receipt = a["receipt_id"].as_str().unwrap().to_string();
    // The other route delivers; the paused one waits.
    pd.wait_for(1, Duration::from_secs(30)).await;
    let states = states_when(&client, &console(port), &receipt, "second", "delivered").await;
    assert_eq!(states["second"], "delivered");
    assert_eq!(
        states["pagerduty"], "pending",
        "a paused route's delivery waits"
    );
    // Restart: still paused, still waiting.
    server.terminate();
    server.wait_exit(Duration::from_secs(30)).await;
    let port = free_port();
    let _server = ChildServer::start(dir.path(), &config(port)).await;
    assert!(
        wait_listening(port, Duration::from_secs(30)).await,
        "console listens"
    );
    let overview: Value = client
        .get(format!("{}/api/overview", console(port)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = overview["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pagerduty")
        .unwrap()
        .clone();
    assert_eq!(route["state"], "paused", "{overview}");
    assert_eq!(route["backlog"], 1, "{overview}");
    assert_eq!(
        delivery_states(&client, &console(port), &receipt).await["pagerduty"],
        "pending"
    );
    assert_eq!(
        pd.received().len(),
        1,
        "nothing went out for the paused route"
    );
    let r = post(format!("{}/api/routes/pagerduty/resume", console(port)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    pd.wait_for(2, Duration::from_secs(30)).await;
    let states = states_when(&client, &console(port), &receipt, "pagerduty", "delivered").await;
    assert_eq!(states["pagerduty"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_tail_streams_new_deliveries_and_attempts() {
    let (server, url, pd) = console_server("").await;
    let mut stream = reqwest::Client::new()
        .get(format!("{url}/api/stream"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(header(&stream, "content-type").starts_with("text/event-stream"));
    let (s, a) = server
        .post(
            fixture("events/critical-lockout.json").into_bytes(),
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {INBOUND_TOKEN}")),
            ],
        )
        .await;
    assert_eq!(s, 202, "{a}");
    let receipt = a["receipt_id"].as_str().unwrap().to_string();
    pd.wait_for(1, Duration::from_secs(30)).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("event: delivery")
        && seen.contains(&receipt)
        && seen.contains("event: attempt"))
    {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the stream carried the delivery and the attempt within 30 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"ok\":true"), "{seen}");
}
