//! The console's HTML pages, rendered on the server with maud: every
//! interpolated value is escaped, so event content (attacker-controlled)
//! is shown as text, never markup.  No inline script: the one script is
//! an embedded asset.  Forms post to the JSON API's actions with the
//! session's CSRF token; a form post is answered with a redirect back.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::auth::{self, Caller, LOGIN_COOKIE, SESSION_COOKIE};
use super::data::{self, EventsQuery, PAGE_SIZE};
use super::{CSS, ConsoleState, JS};
use crate::store::{DeliveryState, ListFilter};
use crate::text::excerpt;

/// Longest text of one field shown in a list cell.
const CELL_MAX: usize = 200;
/// Longest body shown on an event's page.
const BODY_MAX: usize = 64 * 1024;

/// The `flash` message a redirect back carries.
#[derive(Deserialize, Default)]
pub(super) struct Flash {
    /// What the last action did.
    flash: Option<String>,
}

fn csrf(caller: &Caller) -> &str {
    match caller {
        Caller::Session { csrf } => csrf,
        Caller::Bearer => "",
    }
}

/// The frame of every page: navigation, logout, the flash message.
fn layout(title: &str, caller: Option<&Caller>, flash: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ztbridge" }
                link rel="stylesheet" href=(CSS.path);
                script src=(JS.path) defer {}
            }
            body {
                header {
                    strong { "ztbridge" }
                    @if let Some(c) = caller {
                        nav {
                            a href="/" { "Overview" }
                            a href="/events" { "Events" }
                            a href="/dead-letters" { "Dead letters" }
                            a href="/routes" { "Routes" }
                        }
                        form method="post" action="/logout" class="logout" {
                            input type="hidden" name="csrf" value=(csrf(c));
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    @if let Some(f) = flash {
                        p.flash role="status" { (excerpt(f, CELL_MAX)) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn page(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn error_page(status: StatusCode, caller: Option<&Caller>, message: &str) -> Response {
    let mut r = page(layout(
        "Error",
        caller,
        None,
        html! { p.error { (message) } },
    ));
    *r.status_mut() = status;
    r
}

fn store_failed(caller: &Caller, e: &crate::store::StoreError) -> Response {
    tracing::error!(
        "console: the event store failed: {}",
        crate::text::error_chain(e)
    );
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(caller),
        "The event store failed (see the service log).",
    )
}

// -- login --

pub(super) async fn login_form(
    State(app): State<Arc<ConsoleState>>,
    headers: HeaderMap,
) -> Response {
    login_page(&app, &headers, None)
}

fn login_page(app: &ConsoleState, headers: &HeaderMap, error: Option<&str>) -> Response {
    let Ok(nonce) = auth::random_hex() else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, None, "no random bytes");
    };
    let body = html! {
        form method="post" action="/login" class="login" {
            input type="hidden" name="login_csrf" value=(nonce);
            label for="token" { "Admin token" }
            input id="token" type="password" name="token" autocomplete="current-password" required autofocus;
            button type="submit" { "Log in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
        }
    };
    let mut r = page(layout("Log in", None, None, body));
    if error.is_some() {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    if let Ok(v) = app
        .auth
        .set_cookie(headers, LOGIN_COOKIE, &nonce, 3600)
        .parse()
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn login(
    State(app): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let nonce_ok = match (
        auth::cookie(&headers, LOGIN_COOKIE),
        auth::body_field(&headers, &body, "login_csrf"),
    ) {
        (Some(c), Some(f)) => auth::same(c, &f),
        _ => false,
    };
    if !nonce_ok {
        tracing::warn!("console login refused: missing or wrong CSRF token");
        let mut r = login_page(&app, &headers, Some("The form expired: try again."));
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let token = auth::body_field(&headers, &body, "token").unwrap_or_default();
    if !app.auth.is_token(&token) {
        tracing::warn!("console login refused: wrong admin token");
        return login_page(&app, &headers, Some("Wrong token."));
    }
    let Ok(id) = app.auth.open() else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, None, "no random bytes");
    };
    tracing::info!("console: an operator logged in");
    let mut r = Redirect::to("/").into_response();
    for v in [
        app.auth
            .set_cookie(&headers, SESSION_COOKIE, &id, app.auth.ttl_secs()),
        app.auth.set_cookie(&headers, LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = v.parse() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

pub(super) async fn logout(State(app): State<Arc<ConsoleState>>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::cookie(&headers, SESSION_COOKIE) {
        app.auth.close(id);
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = app.auth.set_cookie(&headers, SESSION_COOKIE, "", 0).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

// -- overview --

/// A small line chart of per-minute counts.
fn sparkline(values: &[u32]) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{},{:.1}", i * 2, 22.0 - 20.0 * (*v as f64) / max))
        .collect();
    let total: u32 = values.iter().sum();
    html! {
        svg.spark width="120" height="24" viewBox="0 0 120 24" role="img" {
            title { (total) " deliveries in the last hour; at most " (max as u32) " a minute" }
            polyline points=(points.join(" ")) fill="none" stroke="currentColor" stroke-width="1.5" {}
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0} ms"))
}

fn age(s: Option<i64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h", s / 3600),
    }
}

pub(super) async fn overview(
    State(app): State<Arc<ConsoleState>>,
    Extension(caller): Extension<Caller>,
    Query(flash): Query<Flash>,
) -> Response {
    let o = match data::overview(&app).await {
        Ok(o) => o,
        Err(e) => return store_failed(&caller, &e),
    };
    let body = html! {
        p.muted { "As of " (o.generated_at) ". Rates, latencies and failures cover the last hour." }
        table #routes {
            thead { tr {
                th { "Route" } th { "State" } th { "Last success" } th { "Consecutive failures" }
                th { "Backlog" } th { "Oldest pending" } th { "Dead letters" }
                th { "Deliveries / min (1 h)" } th { "p50" } th { "p99" }
            } }
            tbody {
                @for r in &o.routes {
                    tr data-route=(r.name) {
                        td { a href={ "/events?route=" (urlenc(&r.name)) } { (r.name) } @if !r.configured { " (not configured)" } }
                        td { span class={ "state " (r.state) } { (r.state) } }
                        td { (r.last_success.as_deref().unwrap_or("–")) }
                        td { (r.consecutive_failures) }
                        td { (r.backlog) }
                        td { (age(r.oldest_pending_age_s)) }
                        td { a href={ "/dead-letters?route=" (urlenc(&r.name)) } { (r.dead_letters) } }
                        td { (sparkline(&r.per_minute)) }
                        td { (ms(r.p50_ms)) }
                        td { (ms(r.p99_ms)) }
                    }
                }
            }
        }
        h2 { "Loaded transforms" }
        table #transforms {
            thead { tr { th { "Route" } th { "Transform" } th { "Digest" } th { "Signed by" } th { "Contract" } th { "Egress" } } }
            tbody {
                @for t in &o.transforms {
                    tr {
                        td { (t.route) }
                        td { (t.name) " " (t.version) }
                        td { code { (t.digest) } }
                        td { (t.signed_by) }
                        td { (t.contract) }
                        td { (t.egress) }
                    }
                }
            }
        }
    };
    page(layout(
        "Overview",
        Some(&caller),
        flash.flash.as_deref(),
        body,
    ))
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn state_badge(s: DeliveryState) -> Markup {
    html! { span class={ "state " (s.as_str()) } { (s.as_str()) } }
}

/// The filter fields shared by the events and dead-letter pages.
fn filter_fields(q: &EventsQuery, routes: &[String], with_state: bool) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    html! {
        label { "Route " select name="route" {
            option value="" { "any" }
            @for r in routes { option value=(r) selected[q.route.as_deref() == Some(r.as_str())] { (r) } }
        } }
        @if with_state {
            label { "State " select name="state" {
                option value="" { "any" }
                @for s in ["pending", "in_flight", "delivered", "failed"] {
                    option value=(s) selected[q.state.as_deref() == Some(s)] { (s) }
                }
            } }
        }
        label { "Severity " input name="severity" value=(v(&q.severity)) size="8"; }
        label { "From " input type="datetime-local" name="since" value=(v(&q.since)); }
        label { "To " input type="datetime-local" name="until" value=(v(&q.until)); }
        label { "Text " input type="search" name="q" value=(v(&q.q)) placeholder="event ID, user, path"; }
    }
}

async fn route_names(app: &ConsoleState) -> Vec<String> {
    match data::route_states(app).await {
        Ok(m) => m.into_keys().collect(),
        Err(_) => app
            .dispatcher
            .routes()
            .iter()
            .map(|r| r.name.to_string())
            .collect(),
    }
}

fn rows_table(rows: &[crate::store::ListRow], tail: bool) -> Markup {
    html! {
        table #events {
            thead { tr {
                th { "Received" } th { "Receipt" } th { "Event ID" } th { "Severity" } th { "Alert state" }
                th { "Route" } th { "Delivery" } th { "Attempts" } th { "Last status" } th { "Reason" }
            } }
            tbody #tail data-live=(if tail { "on" } else { "off" }) {
                @for r in rows {
                    tr.row data-receipt=(r.receipt_id) data-route=(r.route) data-state=(r.delivery.as_str()) {
                        td { (crate::time::rfc3339_millis(r.received_ms)) }
                        td { a href={ "/events/" (urlenc(&r.receipt_id)) } { (excerpt(&r.receipt_id, CELL_MAX)) } }
                        td { (excerpt(r.event_id.as_deref().unwrap_or("–"), CELL_MAX)) }
                        td { (excerpt(&r.severity, CELL_MAX)) }
                        td { (excerpt(r.state.as_deref().unwrap_or("–"), CELL_MAX)) }
                        td { (r.route) }
                        td { (state_badge(r.delivery)) }
                        td { (r.attempts) }
                        td { (r.last_status.map(|s| s.to_string()).unwrap_or_default()) }
                        td { (excerpt(r.reason.as_deref().unwrap_or(""), CELL_MAX)) }
                    }
                }
            }
        }
    }
}

pub(super) async fn events(
    State(app): State<Arc<ConsoleState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let (filter, page_no) = match (q.filter(), q.page()) {
        (Ok(f), Ok(p)) => (f, p),
        (Err(m), _) | (_, Err(m)) => return error_page(StatusCode::BAD_REQUEST, Some(&caller), &m),
    };
    let p = match data::events(&app, filter, page_no).await {
        Ok(p) => p,
        Err(e) => return store_failed(&caller, &e),
    };
    let routes = route_names(&app).await;
    let body = html! {
        form method="get" action="/events" class="filters" {
            (filter_fields(&q, &routes, true))
            button type="submit" { "Filter" }
        }
        p.muted {
            (p.total) " deliveries · page " (p.page) " of " (p.pages) " · "
            @if p.page > 1 { a rel="prev" href={ "/events?" (q.with_page(p.page - 1)) } { "newer" } " " }
            @if p.page < p.pages { a rel="next" href={ "/events?" (q.with_page(p.page + 1)) } { "older" } }
            @if p.page == 1 { " · " span #live { "live: new deliveries appear at the top" } }
        }
        (rows_table(&p.rows, p.page == 1))
    };
    let _ = PAGE_SIZE;
    page(layout("Events", Some(&caller), None, body))
}

/// A hidden-field action form on an event's page.
fn action(caller: &Caller, path: &str, back: &str, route: &str, label: &str) -> Markup {
    html! {
        form method="post" action=(path) class="action" {
            input type="hidden" name="csrf" value=(csrf(caller));
            input type="hidden" name="back" value=(back);
            input type="hidden" name="route" value=(route);
            button type="submit" { (label) }
        }
    }
}

pub(super) async fn event(
    State(app): State<Arc<ConsoleState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let record = match data::event(&app, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(&caller),
                "No event with this receipt ID.",
            );
        }
        Err(e) => return store_failed(&caller, &e),
    };
    let dry = data::dry_runs(&app, &record).await;
    let back = format!("/events/{}", urlenc(&record.receipt_id));
    let pretty = record
        .body
        .as_ref()
        .and_then(|b| serde_json::to_string_pretty(b).ok())
        .unwrap_or_default();
    let headers = record
        .headers
        .as_ref()
        .and_then(|b| serde_json::to_string_pretty(b).ok())
        .unwrap_or_default();
    let body = html! {
        dl.summary {
            dt { "Receipt" } dd { (record.receipt_id) }
            dt { "Received" } dd { (crate::time::rfc3339_millis(record.received_ms)) }
            dt { "Event ID" } dd { (excerpt(record.event_id.as_deref().unwrap_or("–"), CELL_MAX)) }
            dt { "Severity" } dd { (excerpt(&record.severity, CELL_MAX)) }
            dt { "Alert state" } dd { (excerpt(record.state.as_deref().unwrap_or("–"), CELL_MAX)) }
        }
        @for d in &record.deliveries {
            section.delivery data-route=(d.route) data-state=(d.state.as_str()) data-open=(matches!(d.state, DeliveryState::Pending | DeliveryState::InFlight)) {
                h2 { "Route " (d.route) " " (state_badge(d.state)) }
                p {
                    (d.attempts_made) " attempts"
                    @if let Some(r) = &d.reason { " · " span.reason { (excerpt(r, 2000)) } }
                }
                div.actions {
                    @if matches!(d.state, DeliveryState::Pending | DeliveryState::Failed) {
                        (action(&caller, &format!("/api/events/{}/retry", urlenc(&record.receipt_id)), &back, &d.route, "Retry now"))
                        (action(&caller, &format!("/api/events/{}/skip", urlenc(&record.receipt_id)), &back, &d.route, "Mark skipped"))
                    }
                    @if d.state != DeliveryState::InFlight {
                        (action(&caller, &format!("/api/events/{}/rerun", urlenc(&record.receipt_id)), &back, &d.route, "Run again from scratch"))
                    }
                }
                @if !d.attempts.is_empty() {
                    table.attempts {
                        thead { tr { th { "#" } th { "At" } th { "Status" } th { "Duration" } th { "Transform" } th { "Outcome" } th { "Error" } } }
                        tbody {
                            @for a in &d.attempts {
                                tr {
                                    td { (a.attempt) }
                                    td { (crate::time::rfc3339_millis(a.at_ms)) }
                                    td { (a.last_status.map(|s| s.to_string()).unwrap_or_default()) }
                                    td { (format!("{:.0} ms", a.duration_ms)) }
                                    td { code { (excerpt(&a.transform_digest, 20)) } }
                                    td { pre.small { (excerpt(&a.outcome.to_string(), 4000)) } }
                                    td { pre.small { (excerpt(a.error.as_deref().unwrap_or(""), 4000)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @for (route, report) in &dry {
            h2 { "Dry run on route " (route) " (current transform, nothing sent)" }
            pre.body.dry-run data-route=(route) { (excerpt(&serde_json::to_string_pretty(report).unwrap_or_default(), BODY_MAX)) }
        }
        h2 { "Body as received (secrets redacted)" }
        pre.body { (excerpt(&pretty, BODY_MAX)) }
        h2 { "Headers kept" }
        pre.body { (excerpt(&headers, BODY_MAX)) }
    };
    page(layout("Event", Some(&caller), flash.flash.as_deref(), body))
}

/// The dead-letters page's query: the events filters and a flash.
#[derive(Deserialize, Default)]
pub(super) struct DeadQuery {
    /// The events filter fields.
    #[serde(flatten)]
    q: EventsQuery,
    /// What the last action did.
    flash: Option<String>,
}

pub(super) async fn dead_letters(
    State(app): State<Arc<ConsoleState>>,
    Extension(caller): Extension<Caller>,
    Query(dq): Query<DeadQuery>,
) -> Response {
    let q = EventsQuery {
        state: None,
        page: None,
        ..dq.q
    };
    let filter = match q.filter() {
        Ok(f) => ListFilter {
            state: Some(DeliveryState::Failed),
            ..f
        },
        Err(m) => return error_page(StatusCode::BAD_REQUEST, Some(&caller), &m),
    };
    let p = match data::events(&app, filter, 1).await {
        Ok(p) => p,
        Err(e) => return store_failed(&caller, &e),
    };
    let routes = route_names(&app).await;
    let back = format!("/dead-letters?{}", q.with_page(1));
    let hidden = |q: &EventsQuery| {
        html! {
            input type="hidden" name="csrf" value=(csrf(&caller));
            input type="hidden" name="back" value=(back);
            @for (k, v) in [("route", &q.route), ("severity", &q.severity), ("since", &q.since), ("until", &q.until), ("q", &q.q)] {
                @if let Some(v) = v { input type="hidden" name=(k) value=(v); }
            }
        }
    };
    let body = html! {
        form method="get" action="/dead-letters" class="filters" {
            (filter_fields(&q, &routes, false))
            button type="submit" { "Filter" }
        }
        p #dead-count { strong { (p.total) } " dead letters match this filter." }
        div.bulk {
            form method="post" action="/api/dead-letters/retry" #bulk-retry {
                (hidden(&q))
                label { input type="checkbox" name="confirm" value="yes" required; " Yes, retry these " (p.total) " dead letters" }
                button type="submit" { "Retry" }
            }
            form method="post" action="/api/dead-letters/purge" #purge-preview {
                (hidden(&q))
                button type="submit" { "Purge: dry run" }
            }
            form method="post" action="/api/dead-letters/purge" #purge {
                (hidden(&q))
                label { input type="checkbox" name="confirm" value="yes" required; " Yes, purge these " (p.total) " dead letters" }
                button type="submit" { "Purge" }
            }
        }
        (rows_table(&p.rows, false))
    };
    page(layout(
        "Dead letters",
        Some(&caller),
        dq.flash.as_deref(),
        body,
    ))
}

pub(super) async fn routes(
    State(app): State<Arc<ConsoleState>>,
    Extension(caller): Extension<Caller>,
    Query(flash): Query<Flash>,
) -> Response {
    let states = match data::route_states(&app).await {
        Ok(s) => s,
        Err(e) => return store_failed(&caller, &e),
    };
    let paused = app.dispatcher.paused();
    let running = app.dispatcher.routes();
    let body = html! {
        p.muted { "A paused route's deliveries wait; none is dropped, and the pause outlives a restart." }
        table #route-table {
            thead { tr { th { "Route" } th { "Open" } th { "Dead letters" } th { "Delivered" } th { "State" } th { "" } } }
            tbody {
                @for (name, [open, failed, delivered]) in &states {
                    @let is_paused = paused.contains(name);
                    tr data-route=(name) data-paused=(is_paused) {
                        td { (name) @if running.get(name).is_none() { " (not configured)" } }
                        td { (open) } td { (failed) } td { (delivered) }
                        td { span class={ "state " (if is_paused { "paused" } else { "running" }) } { (if is_paused { "paused" } else { "running" }) } }
                        td {
                            form method="post" action={ "/api/routes/" (urlenc(name)) "/" (if is_paused { "resume" } else { "pause" }) } class="pause" {
                                input type="hidden" name="csrf" value=(csrf(&caller));
                                input type="hidden" name="back" value="/routes";
                                button type="submit" { (if is_paused { "Resume" } else { "Pause" }) }
                            }
                            @if running.get(name).is_some() {
                                form method="post" action={ "/api/routes/" (urlenc(name)) "/test" } class="test-event" {
                                    input type="hidden" name="csrf" value=(csrf(&caller));
                                    button type="submit" title="A real delivery: the destination gets a test incident" { "Send a test event" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(layout(
        "Routes",
        Some(&caller),
        flash.flash.as_deref(),
        body,
    ))
}
