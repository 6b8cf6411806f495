//! Egress, as an attacker tries it: the host, not the transform, decides
//! which addresses a request reaches.  `config check` and start refuse a
//! configured URL that could never be delivered to; at delivery, ports,
//! user info and the headers the host owns are enforced, and loopback is
//! reached only with `private_networks`.  (The DNS side, a name resolving
//! inward, is held by the runtime's `egress::client` tests.)

mod common;

use std::time::Duration;

use common::*;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

const WAIT: Duration = Duration::from_secs(20);

/// A PagerDuty route to `url` with `extra` route settings.
fn pd_route(url: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"pagerduty\"\ntransform = \"builtin:pagerduty\"\n{extra}\n[route.config]\nrouting_key = {ROUTING_KEY:?}\nurl = {url:?}\n"
    )
}

/// `ztbridge config check` on `route` (a data_dir is added): exit code
/// and stderr.
fn config_check(route: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztbridge.toml");
    let text = format!(
        "data_dir = {:?}\n{route}",
        dir.path().join("data").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = ztbridge(&["config", "check", path.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn config_check_refuses_urls_that_could_never_be_delivered_to() {
    let http = "allow_http = true";
    let refused: &[(&str, &str, &str)] = &[
        ("http://127.0.0.1:9/v2/enqueue", http, "loopback"),
        ("http://2130706433:9/v2/enqueue", http, "loopback"),
        ("http://0x7f.0.0.1:9/v2/enqueue", http, "loopback"),
        ("http://localhost:9/v2/enqueue", http, "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/",
            http,
            "link-local",
        ),
        ("http://[::1]:9/v2/enqueue", http, "private_networks"),
        ("http://[::ffff:127.0.0.1]:9/v2/enqueue", http, "loopback"),
        ("http://10.1.2.3/v2/enqueue", http, "private"),
        ("http://100.64.0.1/v2/enqueue", http, "carrier-grade NAT"),
        ("http://0.0.0.0:9/v2/enqueue", http, "unspecified"),
        (
            "http://a:b@events.pagerduty.com@127.0.0.1/v2/enqueue",
            http,
            "user info",
        ),
        (
            "http://events.pagerduty.com/v2/enqueue",
            "",
            "scheme `http`",
        ),
        (
            "https://events.pagerduty.com/v2/enqueue",
            "egress = [\"other.example\"]",
            "not in the allow-list",
        ),
        (
            "http://127.0.0.1:9/v2/enqueue",
            "allow_http = true\nprivate_networks = [\"10.0.0.0/8\"]",
            "loopback",
        ),
    ];
    for (url, extra, why) in refused {
        let (code, stderr) = config_check(&pd_route(url, extra));
        assert_ne!(code, 0, "{url} passed config check:\n{stderr}");
        assert!(
            stderr.contains(why) && stderr.contains("could never be delivered to"),
            "{url}: expected `{why}` in:\n{stderr}"
        );
        // The message never shows user info.
        assert!(!stderr.contains("a:b"), "{stderr}");
    }
    let allowed: &[(&str, &str)] = &[
        ("https://events.pagerduty.com/v2/enqueue", ""),
        (
            "http://127.0.0.1:9/v2/enqueue",
            "allow_http = true\nprivate_networks = [\"127.0.0.1/32\"]",
        ),
        (
            "http://[::1]:9/v2/enqueue",
            "allow_http = true\nprivate_networks = [\"::1/128\"]",
        ),
        (
            "http://10.20.1.2:8080/v2/enqueue",
            "allow_http = true\nprivate_networks = [\"10.20.0.0/16\"]",
        ),
    ];
    for (url, extra) in allowed {
        let (code, stderr) = config_check(&pd_route(url, extra));
        assert_eq!(code, 0, "{url} refused:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_does_not_start_with_a_url_that_could_never_pass() {
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n{}",
        data.path().display().to_string(),
        pd_route("http://169.254.169.254/latest", "allow_http = true")
    );
    let config = Config::parse(&text, "test").unwrap();
    let err = match App::build(config, &builtins(), true) {
        Ok(_) => panic!("started with a link-local destination"),
        Err(e) => ztbridge_runtime::text::error_chain(&e),
    };
    assert!(err.contains("link-local"), "{err}");
}

/// A hostile route (mode `mode`, config `to`) whose `url` is `stub`.
fn hostile_route(stub: &StubPagerDuty, mode: &str, to: &str) -> String {
    format!(
        "[trust]\nallow_unsigned = true\n[[route]]\nname = \"hostile\"\ntransform = {:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = {mode:?}\nurl = {:?}\nto = {to:?}\n",
        wasm_path("hostile"),
        stub.url(),
    )
}

/// Posts one event; returns its settled delivery.
async fn one_delivery(server: &Server) -> serde_json::Value {
    let (status, answer) = server
        .post_gzip(&fixture("events/critical-lockout.json"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let record = server
        .settled(answer["receipt_id"].as_str().unwrap(), WAIT)
        .await;
    record["deliveries"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_user_info_and_host_owned_headers_are_refused_at_delivery() {
    let stub = StubPagerDuty::start().await;
    let port = stub.addr.port();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let cases = [
        // Another port of an allowed host: no port scan.
        (
            "fetch",
            format!("http://127.0.0.1:{other_port}/"),
            "is not in the allow-list",
        ),
        (
            "fetch",
            "http://127.0.0.1:22/".to_string(),
            "is not in the allow-list",
        ),
        // User info: refused, never sent as Basic auth.
        (
            "fetch",
            format!("http://a:b@allowed.example@127.0.0.1:{port}/v2/enqueue"),
            "user info",
        ),
        (
            "fetch",
            "http://169.254.169.254/latest/meta-data/".into(),
            "is not in the allow-list",
        ),
        ("host-header", String::new(), "header `Host`"),
        ("framing", String::new(), "header `Content-Length`"),
    ];
    for (mode, to, why) in cases {
        let server = Server::start(&hostile_route(&stub, mode, &to)).await;
        let d = one_delivery(&server).await;
        assert_eq!(d["state"], "failed", "{mode} {to}: {d}");
        let outcome = &d["attempts"][0]["outcome"];
        assert_eq!(outcome["kind"], "egress", "{mode} {to}: {d}");
        assert!(
            outcome["message"].as_str().unwrap().contains(why),
            "{mode} {to}: expected `{why}`: {d}"
        );
        assert!(!d.to_string().contains("a:b"), "{d}");
    }
    // The same route with a plain request is delivered: the refusals
    // above were the policy, not the setup.
    let server = Server::start(&hostile_route(&stub, "ok", "")).await;
    let d = one_delivery(&server).await;
    assert_eq!(d["state"], "delivered", "{d}");
    let received = stub.received();
    assert_eq!(received.len(), 1, "only the plain request arrives");
    assert_eq!(
        received[0].headers["host"],
        format!("127.0.0.1:{port}").as_str()
    );
    assert!(received[0].headers.get("authorization").is_none());
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_destination_is_delivered_to_with_its_opt_in() {
    let Some(stub) = StubPagerDuty::start_on("[::1]:0").await else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let url = stub.url();
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let server = Server::start(&format!(
        "{FAST_RETRY}{}",
        pd_route(&url, "allow_http = true\nprivate_networks = [\"::1/128\"]")
    ))
    .await;
    let d = one_delivery(&server).await;
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(stub.received().len(), 1);
}
