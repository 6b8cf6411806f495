//! End to end: webhooks into the real server, the real Jitbit component in
//! the sandbox, a stub Jitbit Helpdesk on loopback that keeps tickets and
//! comments; plus the dry run of the multi-step flow through the binary.

mod common;

use std::time::Duration;

use common::jitbit::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const EVENT_ID: &str = "RSW-20250611-000123";

/// The one delivery of a record (one route in these tests).
fn delivery(record: &Value) -> &Value {
    &record["deliveries"][0]
}

fn assert_delivered(record: &Value) -> String {
    let d = delivery(record);
    assert_eq!(d["state"], "delivered", "{record}");
    let attempts = d["attempts"].as_array().expect("attempts");
    attempts.last().expect("an attempt")["outcome"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn only_ticket(stub: &StubJitbit) -> Ticket {
    let tickets = stub.tickets();
    assert_eq!(
        tickets.len(),
        1,
        "expected exactly one ticket: {tickets:#?}"
    );
    tickets.into_iter().next().expect("ticket")
}

/// The critical-lockout fixture with a change applied.
fn lockout_with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut v: Value =
        serde_json::from_str(&fixture("events/critical-lockout.json")).expect("fixture");
    change(v.as_object_mut().expect("object"));
    v.to_string()
}

async fn server_for(stub: &StubJitbit, extra: &str) -> Server {
    Server::start(&format!("{FAST_RETRY}{}", jitbit_route(stub, extra))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_event_creates_one_ticket_in_the_category_with_its_priority() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;

    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let outcome = assert_delivered(&record);
    assert_eq!(outcome, "Jitbit ticket 1001 created");
    assert_eq!(
        stub.calls(),
        ["GET categories", "GET search", "POST ticket"]
    );

    let t = only_ticket(&stub);
    assert_eq!(t.category_id, CATEGORY_ID);
    assert_eq!(t.priority_id, 2, "critical maps to priority 2");
    assert_eq!(
        t.subject,
        format!("[ZT {EVENT_ID}] Critical: CORP\\jsmith locked out on prod-cluster-01")
    );
    for part in [
        "<table",
        "CORP\\jsmith",
        "10.20.30.41",
        "\\\\prod-cluster-01\\finance",
        "/ifs/data/finance/q2/budget.xlsx.locked",
        "Mass file rename, Honeypot access",
        "LOCKED_OUT",
        "2025-06-11T10:15:03Z",
        "<a href=\"https://eyeglass.corp.example/RansomwareDefender/#/events/RSW-20250611-000123\">",
        "<pre>",
        "&quot;threatDetectors&quot;",
    ] {
        assert!(
            t.body.contains(part),
            "ticket body lacks {part:?}:\n{}",
            t.body
        );
    }
    let search = &stub.received()[1];
    assert_eq!(
        search.param("query").as_deref(),
        Some(format!("[ZT {EVENT_ID}]").as_str())
    );
    assert!(
        stub.received()
            .iter()
            .all(|r| r.authorization() == basic_header(USER, PASSWORD))
    );

    // Another event: the category is cached, a major gets priority 1.
    let record = server
        .deliver(
            &fixture("events/major-delayed-lockout-snake-case.json"),
            WAIT,
        )
        .await;
    assert_eq!(assert_delivered(&record), "Jitbit ticket 1002 created");
    assert_eq!(
        stub.calls()[3..],
        ["GET search", "POST ticket"],
        "categories are looked up once"
    );
    let major = stub.ticket(1002);
    assert_eq!(major.priority_id, 1);
    assert_eq!(major.category_id, CATEGORY_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_become_comments_saying_what_changed() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    assert_delivered(
        &server
            .deliver(&fixture("events/critical-lockout.json"), WAIT)
            .await,
    );
    let before = stub.received().len();

    // 1: more files encrypted.  Updates for one event are sent one after
    // another (the host does not order them yet).
    let more_files = lockout_with(|o| {
        o.insert(
            "files".into(),
            json!([
                "/ifs/data/finance/q2/budget.xlsx.locked",
                "/ifs/data/finance/q2/forecast.xlsx.locked"
            ]),
        );
    });
    let outcome = assert_delivered(&server.deliver(&more_files, WAIT).await);
    assert_eq!(outcome, "comment added to ticket 1001");
    // 2: access restored (a partial update: no files).
    let restored = lockout_with(|o| {
        o.insert("state".into(), json!("ACCESS_RESTORED"));
        o.remove("files");
    });
    assert_delivered(&server.deliver(&restored, WAIT).await);
    // 3: the same again.
    assert_delivered(&server.deliver(&restored, WAIT).await);

    let t = only_ticket(&stub);
    assert_eq!(t.comments.len(), 3, "{:#?}", t.comments);
    assert!(
        t.comments[0].contains("New files (1)") && t.comments[0].contains("forecast.xlsx.locked"),
        "{}",
        t.comments[0]
    );
    assert!(
        t.comments[0].contains("Files: 1 &rarr; 2"),
        "{}",
        t.comments[0]
    );
    assert!(
        !t.comments[0].contains("State:"),
        "the state did not change: {}",
        t.comments[0]
    );
    assert!(
        t.comments[1].contains("State: <b>LOCKED_OUT</b> &rarr; <b>ACCESS_RESTORED</b>"),
        "{}",
        t.comments[1]
    );
    assert!(
        !t.comments[1].contains("Files:"),
        "a partial update does not remove files: {}",
        t.comments[1]
    );
    assert!(
        t.comments[2].contains("No change since the previous update"),
        "{}",
        t.comments[2]
    );
    assert_eq!(t.status_id, STATUS_NEW, "close_on_end is off by default");
    // The ticket is known from state: no search, no category look-up.
    assert_eq!(
        stub.calls()[before..],
        ["POST comment", "POST comment", "POST comment"]
    );
    let c = &stub.received()[before];
    assert_eq!(c.field("id").as_deref(), Some("1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_end_closes_the_ticket_after_commenting() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "close_on_end = true\n").await;
    assert_delivered(
        &server
            .deliver(&fixture("events/critical-lockout.json"), WAIT)
            .await,
    );
    assert_eq!(
        only_ticket(&stub).status_id,
        STATUS_NEW,
        "a lockout is not an end state"
    );
    let outcome = assert_delivered(
        &server
            .deliver(&fixture("events/critical-access-restored.json"), WAIT)
            .await,
    );
    assert_eq!(outcome, "comment added to ticket 1001; ticket closed");
    let calls = stub.calls();
    assert_eq!(
        calls[calls.len() - 2..],
        ["POST comment", "POST updateticket"]
    );
    let update = stub.received().pop().expect("request");
    assert_eq!(update.field("statusId").as_deref(), Some("3"));
    assert_eq!(update.field("id").as_deref(), Some("1001"));
    let t = only_ticket(&stub);
    assert_eq!(t.status_id, STATUS_CLOSED);
    assert_eq!(t.comments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_state_finds_the_ticket_by_search() {
    let stub = StubJitbit::start().await;
    {
        let first = server_for(&stub, "").await;
        assert_delivered(
            &first
                .deliver(&fixture("events/critical-lockout.json"), WAIT)
                .await,
        );
    }
    // A fresh data directory: no state at all.
    let second = server_for(&stub, "").await;
    let before = stub.received().len();
    let outcome = assert_delivered(
        &second
            .deliver(&fixture("events/critical-access-restored.json"), WAIT)
            .await,
    );
    assert_eq!(
        outcome,
        "comment added to ticket 1001 (ticket found by search)"
    );
    assert_eq!(
        stub.calls()[before..],
        ["GET categories", "GET search", "POST comment"]
    );
    let t = only_ticket(&stub);
    assert_eq!(t.comments.len(), 1);
    assert!(
        t.comments[0].contains("no record of earlier updates"),
        "{}",
        t.comments[0]
    );
    assert!(
        t.comments[0].contains("ACCESS_RESTORED"),
        "{}",
        t.comments[0]
    );

    // The ticket found is remembered: the next update comments directly.
    let before = stub.received().len();
    assert_delivered(
        &second
            .deliver(&fixture("events/critical-access-restored.json"), WAIT)
            .await,
    );
    assert_eq!(stub.calls()[before..], ["POST comment"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_made_before_ztbridge_is_found_by_its_marker() {
    let stub = StubJitbit::start().await;
    let existing = stub.add_ticket(
        &format!("[ZT {EVENT_ID}] Critical: CORP\\jsmith locked out"),
        "made by hand",
    );
    let server = server_for(&stub, "").await;
    let outcome = assert_delivered(
        &server
            .deliver(&fixture("events/critical-lockout.json"), WAIT)
            .await,
    );
    assert_eq!(
        outcome,
        format!("comment added to ticket {existing} (ticket found by search)")
    );
    assert_eq!(only_ticket(&stub).comments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_hits_that_only_mention_the_marker_are_not_matched() {
    let stub = StubJitbit::start().await;
    // The stub's search matches these for "[ZT RSW-1]" (bodies and
    // subjects, substring), but none is the ticket of event RSW-1.
    let other = stub.add_ticket(
        "[ZT RSW-12] Critical: CORP\\bob locked out",
        "follows up [ZT RSW-1] from yesterday",
    );
    let forwarded = stub.add_ticket(
        "Fwd: [ZT RSW-1] Critical: CORP\\eve locked out",
        "forwarded",
    );
    let server = server_for(&stub, "").await;
    let event = lockout_with(|o| {
        o.insert("id".into(), json!("RSW-1"));
    });
    let outcome = assert_delivered(&server.deliver(&event, WAIT).await);
    assert_eq!(outcome, "Jitbit ticket 1003 created");
    let search = stub
        .received()
        .into_iter()
        .find(|r| r.call() == "GET search")
        .expect("searched");
    assert_eq!(search.status, 200);
    assert!(stub.ticket(1003).subject.starts_with("[ZT RSW-1] "));
    assert!(stub.ticket(other).comments.is_empty());
    assert!(stub.ticket(forwarded).comments.is_empty());

    // And RSW-12's own ticket is found for RSW-12, not RSW-1's.
    let event = lockout_with(|o| {
        o.insert("id".into(), json!("RSW-12"));
    });
    let outcome = assert_delivered(&server.deliver(&event, WAIT).await);
    assert_eq!(
        outcome,
        format!("comment added to ticket {other} (ticket found by search)")
    );
    assert!(stub.ticket(1003).comments.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_category_is_a_clear_configuration_error() {
    let stub = StubJitbit::with_categories(&[(1, "General"), (2, "Storage")]).await;
    let server = server_for(&stub, "").await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let d = delivery(&record);
    assert_eq!(d["state"], "failed", "{record}");
    let attempts = d["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "a configuration error is not retried: {record}"
    );
    let outcome = &attempts[0]["outcome"];
    assert_eq!(outcome["retryable"], false);
    let msg = outcome["message"].as_str().expect("message");
    assert!(
        msg.contains("\"Storage Security Event\"") && msg.contains("administrator"),
        "{msg}"
    );
    assert!(
        msg.contains("General, Storage"),
        "the message lists what exists: {msg}"
    );
    assert_eq!(stub.calls(), ["GET categories"]);
    assert!(stub.tickets().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_once_and_are_never_retried() {
    let stub = StubJitbit::start().await;
    let config = jitbit_route_with(
        &stub,
        &format!("username = {USER:?}\npassword = \"wrong-password-123\"\n"),
    );
    let server = Server::start(&format!("{FAST_RETRY}{config}")).await;
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let d = delivery(&record);
    assert_eq!(d["state"], "failed", "{record}");
    assert_eq!(
        d["attempts"].as_array().expect("attempts").len(),
        1,
        "{record}"
    );
    let outcome = &d["attempts"][0]["outcome"];
    assert_eq!(outcome["retryable"], false);
    assert!(
        outcome["message"]
            .as_str()
            .unwrap_or_default()
            .contains("401"),
        "{outcome}"
    );
    assert!(
        !record.to_string().contains("wrong-password-123"),
        "the password leaked: {record}"
    );
    // Give a (wrong) retry time to happen before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.auth_failures(), 1, "three failures would block the IP");
    assert_eq!(stub.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    stub.script(vec![
        (
            429,
            vec![("retry-after", "1".into())],
            "Too many requests".into(),
        ),
        (500, vec![], "oops".into()),
    ]);
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    assert_eq!(assert_delivered(&record), "Jitbit ticket 1001 created");
    let statuses: Vec<u64> = delivery(&record)["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["last_status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![429, 500, 200]);
    let got = stub.received();
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_millis(990),
        "Retry-After: 1 was not honoured ({waited:?})"
    );
    only_ticket(&stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_twice_is_one_ticket_and_a_comment() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    let body = fixture("events/critical-lockout.json");
    assert_eq!(
        assert_delivered(&server.deliver(&body, WAIT).await),
        "Jitbit ticket 1001 created"
    );
    assert_eq!(
        assert_delivered(&server.deliver(&body, WAIT).await),
        "comment added to ticket 1001"
    );
    let t = only_ticket(&stub);
    assert_eq!(t.comments.len(), 1);
    assert!(t.comments[0].contains("No change"), "{}", t.comments[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_does_not_duplicate_the_ticket() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    // Jitbit creates the ticket, but the answer never arrives intact.
    stub.lose_answer("/api/ticket", (502, vec![], "Bad gateway".into()));
    let record = server
        .deliver(&fixture("events/critical-lockout.json"), WAIT)
        .await;
    let outcome = assert_delivered(&record);
    assert_eq!(
        outcome,
        "comment added to ticket 1001 (ticket found by search)"
    );
    assert_eq!(
        delivery(&record)["attempts"]
            .as_array()
            .expect("attempts")
            .len(),
        2
    );
    assert_eq!(
        stub.calls(),
        [
            "GET categories",
            "GET search",
            "POST ticket",
            "GET search",
            "POST comment"
        ]
    );
    assert_eq!(only_ticket(&stub).comments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_ticket_is_forgotten_and_made_again() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    assert_delivered(
        &server
            .deliver(&fixture("events/critical-lockout.json"), WAIT)
            .await,
    );
    stub.remove_ticket(1001);
    let before = stub.received().len();
    let outcome = assert_delivered(
        &server
            .deliver(&fixture("events/critical-access-restored.json"), WAIT)
            .await,
    );
    assert_eq!(outcome, "Jitbit ticket 1002 created");
    assert_eq!(
        stub.calls()[before..],
        ["POST comment", "GET search", "POST ticket"]
    );
    assert!(
        only_ticket(&stub)
            .subject
            .starts_with(&format!("[ZT {EVENT_ID}]"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_and_other_event_text_are_escaped() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    // This fixture has a file named `<script>alert(1)</script>.docx`.
    assert_delivered(
        &server
            .deliver(
                &fixture("events/major-delayed-lockout-snake-case.json"),
                WAIT,
            )
            .await,
    );
    let t = only_ticket(&stub);
    assert!(
        t.body
            .contains("/ifs/data/hr/&lt;script&gt;alert(1)&lt;/script&gt;.docx"),
        "{}",
        t.body
    );
    assert!(
        !t.body.to_lowercase().contains("<script"),
        "raw <script> in the ticket body:\n{}",
        t.body
    );

    // New hostile names in an update are escaped in the comment too.
    let mut update: Value =
        serde_json::from_str(&fixture("events/major-delayed-lockout-snake-case.json"))
            .expect("json");
    update["file_paths"] = json!(["/ifs/data/hr/<img src=x onerror=alert(1)>.docx"]);
    update["user_name"] = json!("<b>CORP\\adoe</b>");
    assert_delivered(&server.deliver(&update.to_string(), WAIT).await);
    let comment = &only_ticket(&stub).comments[0];
    assert!(
        comment.contains("&lt;img src=x onerror=alert(1)&gt;.docx"),
        "{comment}"
    );
    assert!(
        comment.contains("&lt;b&gt;CORP\\adoe&lt;/b&gt;"),
        "{comment}"
    );
    assert!(
        !comment.contains("<img") && !comment.contains("<b>CORP"),
        "{comment}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_subject_is_inert_and_still_one_ticket_with_its_comments() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    let hostile = |state: &str| {
        lockout_with(|o| {
            o.insert("user".into(), json!("<script>alert(1)</script>CORP\\x"));
            o.insert(
                "nes".into(),
                json!(["<img src=x onerror=alert(2)>&lt;b&gt;\"'`\r\nBcc: x"]),
            );
            o.insert("state".into(), json!(state));
        })
    };
    assert_delivered(&server.deliver(&hostile("LOCKED_OUT"), WAIT).await);
    assert_delivered(&server.deliver(&hostile("LOCKED_OUT"), WAIT).await);
    assert_delivered(&server.deliver(&hostile("ACCESS_RESTORED"), WAIT).await);

    let t = only_ticket(&stub);
    let marker = format!("[ZT {EVENT_ID}] ");
    assert!(t.subject.starts_with(&marker), "{}", t.subject);
    for bad in ['<', '>', '&', '"', '\'', '`', '\r', '\n'] {
        assert!(
            !t.subject.contains(bad),
            "{bad:?} in subject {:?}",
            t.subject
        );
    }
    assert!(
        t.subject.contains("script alert(1) /script"),
        "{}",
        t.subject
    );
    assert_eq!(t.comments.len(), 2, "{:#?}", t.comments);

    // With the ticket forgotten (lost state), the search still finds it by
    // its marker: no second ticket.
    let server = server_for(&stub, "").await;
    assert_delivered(&server.deliver(&hostile("RECOVERED"), WAIT).await);
    let t = only_ticket(&stub);
    assert_eq!(t.comments.len(), 3, "{:#?}", t.comments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_mode_works() {
    let stub = StubJitbit::start().await;
    let config = jitbit_route_with(
        &stub,
        &format!(
            "token = {TOKEN:?}\ncategory = \"storage SECURITY event\"\npriority_map = \"critical=1,other=0\"\ntags = \"superna,zero-trust\"\n"
        ),
    );
    let server = Server::start(&format!("{FAST_RETRY}{config}")).await;
    assert_eq!(
        assert_delivered(
            &server
                .deliver(&fixture("events/critical-lockout.json"), WAIT)
                .await
        ),
        "Jitbit ticket 1001 created"
    );
    let bearer = format!("Bearer {TOKEN}");
    assert!(stub.received().iter().all(|r| r.authorization() == bearer));
    let t = only_ticket(&stub);
    assert_eq!(
        t.category_id, CATEGORY_ID,
        "category names match case-insensitively"
    );
    assert_eq!(t.priority_id, 1, "priority_map is honoured");
    assert_eq!(t.tags.as_deref(), Some("superna,zero-trust"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_an_id_still_gets_a_ticket() {
    let stub = StubJitbit::start().await;
    let server = server_for(&stub, "").await;
    assert_delivered(
        &server
            .deliver(&fixture("events/nfs-no-id.json"), WAIT)
            .await,
    );
    let t = only_ticket(&stub);
    assert!(t.subject.starts_with("[ZT body-"), "{}", t.subject);
    assert!(t.body.contains("/ifs/data/nfs/projects/a.txt.crypt"));
}

// --- The dry run through the real binary --------------------------------

fn path(rel: &str) -> String {
    format!("{}/tests/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn dry_run(event: &str, responses: &str) -> (i32, Value, String) {
    ztbridge(&[
        "transform",
        "run",
        "builtin:jitbit",
        "--event",
        &path(event),
        "--set",
        "url=https://acme.jitbit.com/helpdesk/api",
        "--set",
        &format!("token={TOKEN}"),
        "--responses",
        &path(responses),
    ])
}

/// (method, url) of each step's request.
fn steps(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let r = &s["requests"][0];
            (
                r["method"].as_str().unwrap_or_default().to_string(),
                r["url"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn dry_run_shows_the_multi_step_flow_of_a_new_ticket() {
    let (code, report, stderr) = dry_run(
        "fixtures/events/critical-lockout.json",
        "fixtures/jitbit/new-ticket.json",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["outcome"]["status"], "done", "{report}");
    assert_eq!(report["outcome"]["message"], "Jitbit ticket 1001 created");
    let base = "https://acme.jitbit.com/helpdesk/api";
    assert_eq!(
        steps(&report),
        [
            ("GET".to_string(), format!("{base}/categories")),
            (
                "GET".to_string(),
                format!("{base}/Search?query=%5BZT+{EVENT_ID}%5D&count=100")
            ),
            ("POST".to_string(), format!("{base}/ticket")),
        ],
        "categories -> search -> create (the search hit is another event's ticket)"
    );
    let create = &report["steps"][2]["requests"][0];
    let headers = create["headers"].as_array().expect("headers");
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "Authorization" && h[1] == "[redacted]"),
        "{headers:?}"
    );
    assert!(!report.to_string().contains(TOKEN), "the token leaked");
    let form = parse_urlencoded(create["body"].as_str().expect("body"));
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("categoryId"), "7");
    assert_eq!(field("priorityId"), "2");
    assert!(field("subject").starts_with(&format!("[ZT {EVENT_ID}] Critical")));
    let writes = &report["state_writes"];
    assert_eq!(writes["category:storage security event"], "7", "{writes}");
    assert_eq!(writes[format!("ticket:{EVENT_ID}")], "1001", "{writes}");
    assert!(writes[format!("last:{EVENT_ID}")].is_string(), "{writes}");
}

#[test]
fn dry_run_comments_on_a_ticket_found_by_search() {
    let (code, report, stderr) = dry_run(
        "fixtures/events/critical-access-restored.json",
        "fixtures/jitbit/existing-ticket.json",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report["outcome"]["message"], "comment added to ticket 4242 (ticket found by search)",
        "{report}"
    );
    let s = steps(&report);
    assert_eq!(s.len(), 3);
    assert!(s[2].1.ends_with("/comment"));
    let form = parse_urlencoded(
        report["steps"][2]["requests"][0]["body"]
            .as_str()
            .expect("body"),
    );
    assert!(
        form.contains(&("id".to_string(), "4242".to_string())),
        "{form:?}"
    );
}

#[test]
fn dry_run_of_an_event_without_id_warns_and_uses_a_body_hash() {
    let (code, report, stderr) = dry_run(
        "fixtures/events/nfs-no-id.json",
        "fixtures/jitbit/new-ticket.json",
    );
    assert_eq!(code, 0, "{stderr}");
    let logs = report["logs"].as_array().expect("logs");
    assert!(logs.iter().any(|l| {
        l["level"] == "warn"
            && l["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no recognisable event ID")
    }));
    let url = &steps(&report)[1].1;
    assert!(url.contains("query=%5BZT+body-"), "{url}");
}

#[test]
fn dry_run_reports_bad_credentials_as_not_retryable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let responses = dir.path().join("r.json");
    std::fs::write(&responses, r#"[{"status": 401, "body": "Unauthorized"}]"#).expect("write");
    let (code, report, _) = ztbridge(&[
        "transform",
        "run",
        "builtin:jitbit",
        "--event",
        &path("fixtures/events/critical-lockout.json"),
        "--set",
        "url=https://acme.jitbit.com/helpdesk/api",
        "--set",
        "username=admin",
        "--set",
        "password=hunter2-secret",
        "--responses",
        &responses.display().to_string(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(report["outcome"]["status"], "failed");
    assert_eq!(report["outcome"]["retryable"], false);
    assert!(!report.to_string().contains("hunter2-secret"));
}

#[test]
fn inspect_declares_secrets_and_egress() {
    let (code, info, _) = ztbridge(&["transform", "inspect", "builtin:jitbit"]);
    assert_eq!(code, 0);
    assert_eq!(info["name"], "jitbit");
    let egress: Vec<&str> = info["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(egress, ["*.jitbit.com", "config:url"]);
    let keys = info["config"].as_array().expect("config");
    let key = |n: &str| {
        keys.iter()
            .find(|k| k["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(key("url")["required"], true);
    assert_eq!(key("token")["secret"], true);
    assert_eq!(key("password")["secret"], true);
    assert_eq!(key("category")["default_value"], "Storage Security Event");
}

#[test]
fn dry_run_bounds_a_huge_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<String> = (0..40_000)
        .map(|i| format!("/ifs/data/finance/q2/file-{i:06}.xlsx.locked"))
        .collect();
    let big = json!({"id": "RSW-HUGE-1", "severity": "Critical", "state": "LOCKED_OUT", "user": "CORP\\big", "files": files, "note": "x".repeat(300_000)});
    let event = dir.path().join("big.json");
    std::fs::write(&event, big.to_string()).expect("write");
    let (code, report, stderr) = ztbridge(&[
        "transform",
        "run",
        "builtin:jitbit",
        "--event",
        &event.display().to_string(),
        "--set",
        "url=https://acme.jitbit.com/helpdesk/api",
        "--set",
        "token=abc",
        "--responses",
        &path("fixtures/jitbit/new-ticket.json"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["outcome"]["status"], "done", "{report}");
    let raw = report["steps"][2]["requests"][0]["body"]
        .as_str()
        .expect("body");
    assert!(raw.len() < 256 * 1024, "request is {} bytes", raw.len());
    let form = parse_urlencoded(raw);
    let body = &form
        .iter()
        .find(|(k, _)| k == "body")
        .expect("body field")
        .1;
    assert!(
        body.contains("40000<ul>") && body.contains("and 39950 more"),
        "files are counted and listed bounded"
    );
    assert!(body.contains("cut to 32 KB"));
    let last = report["state_writes"]["last:RSW-HUGE-1"]
        .as_str()
        .expect("last");
    assert!(
        last.len() < 1024,
        "the remembered summary stays small: {last}"
    );
}
