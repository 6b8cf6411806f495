//! Jitbit Helpdesk transform: one ticket per Superna Zero Trust event, a
//! comment per update.
//!
//! The flow is a small state machine across `start` / `resume` (one arrow
//! per step; bracketed steps are skipped when not needed):
//!
//! ```text
//! ticket known in state ─────────────────────────────► POST /comment ─┐
//! ticket not in state ─► [GET /categories] ─► GET /Search ─┬─► POST /comment ─┤
//!                        (category not cached)             └─► POST /ticket ──┤
//!                                     [POST /UpdateTicket statusId=3] ◄───────┘
//!                                     (close_on_end and an end state)
//! ```
//!
//! * Every ticket's subject starts with a unique marker, `[ZT <event ID>]`
//!   (a hash of the ID when it is long or odd, a hash of the body, with a
//!   warning, when the event has no recognisable ID).
//! * State (per route): `category:<name>` -> Jitbit category ID,
//!   `ticket:<event>` -> Jitbit ticket ID, `last:<event>` -> a bounded
//!   summary of the last update seen (to say what changed in a comment).
//! * When state has no ticket, the flow ALWAYS searches for the marker
//!   before creating: a retry after a crash between "ticket created" and
//!   "state saved" finds the ticket instead of making a second one.  A
//!   search hit counts only when the subject starts with the marker exactly
//!   (the search also matches bodies and other tickets).
//! * A comment on a ticket known from state that Jitbit no longer has (404)
//!   forgets it and falls back to search / create.
//! * 401/403 are never retried (three failed logins block the client IP for
//!   five minutes); 429 and 5xx are retried, honouring Retry-After.  A
//!   missing category is a configuration error: the API cannot create one.
//! * Everything from the event that reaches HTML is escaped, and every list
//!   and value is bounded.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::{Value, json};
use ztbridge_sdk::config::key;
use ztbridge_sdk::event::{Severity, StateKind};
use ztbridge_sdk::{
    EgressRule, Event, EventInput, Failure, Guest, HttpResponse, Info, LogLevel, Request, Response,
    Step, config, export, failure, join_url, log, send, single, state, text,
};

const DEFAULT_CATEGORY: &str = "Storage Security Event";
const DEFAULT_PRIORITY_MAP: &str = "critical=2,major=1,warning=0,other=-1";
/// Jitbit's `statusId` of a closed ticket.
const STATUS_CLOSED: &str = "3";
/// Search results asked for (the marker may also appear in other tickets'
/// bodies).
const SEARCH_COUNT: &str = "100";
/// Items of a list (files, shares...) shown; the rest are counted.
const MAX_LIST_ITEMS: usize = 50;
/// Bytes of one value shown in HTML.
const MAX_VALUE_BYTES: usize = 1000;
/// Bytes of the received event shown in the ticket body.
const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Characters of a ticket subject.
const MAX_SUBJECT_CHARS: usize = 250;
/// Longest event ID used as is in the marker and state keys (bytes).
const MAX_PLAIN_ID_BYTES: usize = 100;
/// Files remembered (as short hashes) to tell which ones are new.
const MAX_REMEMBERED_FILES: usize = 256;
/// Items of the other remembered lists (client IPs, detectors).
const MAX_REMEMBERED_ITEMS: usize = 32;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// How requests authenticate.
enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// The route's configuration, read once per flow.
struct Settings {
    /// API base, e.g. `https://acme.jitbit.com/helpdesk/api`.
    base: String,
    auth: Auth,
    category: String,
    priority_map: Vec<(String, String)>,
    close_on_end: bool,
    tags: Option<String>,
}

impl Settings {
    fn load() -> Result<Settings, Failure> {
        let base = config::require("url")?.trim().to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(failure::config(&format!(
                "`url` must be the Jitbit API base, e.g. https://company.jitbit.com/helpdesk/api (got `{}`)",
                text::truncate(&base, 200)
            )));
        }
        let auth = match (
            config::get("token"),
            config::get("username"),
            config::get("password"),
        ) {
            (Some(token), _, _) => Auth::Bearer(token.trim().to_string()),
            (None, Some(user), Some(password)) => Auth::Basic { user, password },
            (None, Some(_), None) => {
                return Err(failure::config("`username` is set but `password` is not"));
            }
            (None, None, _) => {
                return Err(failure::config(
                    "set `token` (API token), or `username` and `password`",
                ));
            }
        };
        Ok(Settings {
            base,
            auth,
            category: config::get_or("category", DEFAULT_CATEGORY)
                .trim()
                .to_string(),
            priority_map: config::map("priority_map", DEFAULT_PRIORITY_MAP)?,
            close_on_end: config::flag("close_on_end", false)?,
            tags: config::get("tags").map(|t| t.trim().to_string()),
        })
    }

    fn authorize(&self, req: Request) -> Request {
        match &self.auth {
            Auth::Basic { user, password } => req.basic_auth(user, password),
            Auth::Bearer(token) => req.bearer(token),
        }
    }

    fn get(&self, path: &str) -> Request {
        self.authorize(Request::get(&join_url(&self.base, path)))
    }

    /// A POST with form fields (Jitbit takes no JSON bodies).
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Request {
        self.authorize(Request::post(&join_url(&self.base, path)))
            .form(fields)
    }

    /// Jitbit `priorityId` (-1 low .. 2 critical) for a severity.
    fn priority(&self, severity: &Severity) -> Result<String, Failure> {
        let name = match severity {
            Severity::Other(_) => "other".to_string(),
            s => s.name(),
        };
        let Some((_, value)) = self
            .priority_map
            .iter()
            .find(|(k, _)| *k == name)
            .or_else(|| self.priority_map.iter().find(|(k, _)| k == "other"))
        else {
            return Ok("0".into());
        };
        match value.trim().parse::<i32>() {
            Ok(p) if (-1..=2).contains(&p) => Ok(p.to_string()),
            _ => Err(failure::config(&format!(
                "`priority_map`: `{value}` is not a Jitbit priority (-1 low, 0 normal, 1 high, 2 critical)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// The flow
// ---------------------------------------------------------------------------

/// The response the flow waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Categories,
    Search,
    Create,
    Comment,
    Close,
}

/// Where a ticket ID came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    State,
    Search,
    Created,
}

struct Flow {
    settings: Settings,
    ev: Event,
    receipt_id: String,
    received_at: String,
    /// Identifies the event in state keys.
    key: String,
    /// `[ZT <id>]`, the start of the subject.
    marker: String,
    category_id: Option<String>,
    ticket: Option<(u64, Found)>,
    /// The last update seen, when state remembers one.
    previous: Option<Summary>,
    waiting: Waiting,
}

static FLOW: Mutex<Option<Flow>> = Mutex::new(None);

struct Jitbit;

impl Guest for Jitbit {
    fn describe() -> Info {
        Info {
            name: "jitbit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Superna Zero Trust events to Jitbit Helpdesk tickets: one ticket per event, a comment per update".into(),
            egress: vec![
                EgressRule::Wildcard("jitbit.com".into()),
                EgressRule::ConfigUrl("url".into()),
            ],
            needs_random: false,
            config: vec![
                key("url", "Jitbit API base: https://company.jitbit.com/helpdesk/api (hosted) or https://host/api (self-hosted)", true, false, None),
                key("token", "API token (Bearer); used instead of username/password when set", false, true, None),
                key("username", "User name for Basic authentication (on-premise also DOMAIN\\user)", false, false, None),
                key("password", "Password for Basic authentication", false, true, None),
                key("category", "Name of the ticket category (an administrator must create it)", false, false, Some(DEFAULT_CATEGORY)),
                key("priority_map", "Superna severity to Jitbit priorityId (-1 low, 0 normal, 1 high, 2 critical)", false, false, Some(DEFAULT_PRIORITY_MAP)),
                key("close_on_end", "Close the ticket (statusId 3) when the event reaches an end state (access restored, recovered, false positive)", false, false, Some("false")),
                key("tags", "Tags for new tickets, comma-separated", false, false, None),
            ],
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        let settings = Settings::load()?;
        let receipt_id = input.receipt_id.clone();
        let received_at = input.received_at.clone();
        let ev = Event::new(input);
        let (key, marker) = identity(&ev, ev.raw_text());
        let ticket =
            state::get(&format!("ticket:{key}")).and_then(|t| t.trim().parse::<u64>().ok());
        let previous = state::get(&format!("last:{key}")).and_then(|s| Summary::from_json(&s));
        let mut flow = Flow {
            settings,
            ev,
            receipt_id,
            received_at,
            key,
            marker,
            category_id: None,
            ticket: ticket.map(|t| (t, Found::State)),
            previous,
            waiting: Waiting::Categories,
        };
        let step = flow.begin();
        keep(flow, &step);
        step
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        let resp = single(responses)?;
        let taken = FLOW.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut flow = taken
            .ok_or_else(|| failure::permanent("resume called with no Jitbit flow in progress"))?;
        let step = flow.advance(&resp);
        keep(flow, &step);
        step
    }
}

/// Keeps the flow for the next `resume` when the step sends requests.
fn keep(flow: Flow, step: &Result<Step, Failure>) {
    if matches!(step, Ok(Step::Send(_))) {
        *FLOW.lock().unwrap_or_else(|p| p.into_inner()) = Some(flow);
    }
}

impl Flow {
    /// The first step: comment on a known ticket, else look for one.
    fn begin(&mut self) -> Result<Step, Failure> {
        match self.ticket {
            Some((id, _)) => Ok(self.comment(id)),
            None => Ok(self.find_or_create()),
        }
    }

    /// Category (unless cached), then search before any create.
    fn find_or_create(&mut self) -> Step {
        self.category_id = state::get(&self.category_key());
        match self.category_id {
            Some(_) => self.search(),
            None => {
                self.waiting = Waiting::Categories;
                send(vec![self.settings.get("categories")])
            }
        }
    }

    fn search(&mut self) -> Step {
        self.waiting = Waiting::Search;
        let req = self
            .settings
            .get("Search")
            .query(&[("query", &self.marker), ("count", SEARCH_COUNT)]);
        send(vec![req])
    }

    fn create(&mut self) -> Result<Step, Failure> {
        let Some(category_id) = self.category_id.clone() else {
            return Err(failure::permanent(
                "internal error: creating a ticket without a category",
            ));
        };
        let priority = self.settings.priority(&self.ev.severity())?;
        let subject = subject(&self.ev, &self.marker);
        let body = ticket_html(&self.ev, &self.marker, &self.receipt_id, &self.received_at);
        let mut fields = vec![
            ("categoryId", category_id.as_str()),
            ("subject", subject.as_str()),
            ("body", body.as_str()),
            ("priorityId", priority.as_str()),
        ];
        if let Some(tags) = &self.settings.tags {
            fields.push(("tags", tags.as_str()));
        }
        self.waiting = Waiting::Create;
        Ok(send(vec![self.settings.post("ticket", &fields)]))
    }

    fn comment(&mut self, ticket: u64) -> Step {
        self.waiting = Waiting::Comment;
        let body = comment_html(
            &self.ev,
            &self.marker,
            self.previous.as_ref(),
            &self.receipt_id,
            &self.received_at,
        );
        send(vec![self.settings.post(
            "comment",
            &[("id", &ticket.to_string()), ("body", &body)],
        )])
    }

    fn close(&mut self, ticket: u64) -> Step {
        self.waiting = Waiting::Close;
        send(vec![self.settings.post(
            "UpdateTicket",
            &[("id", &ticket.to_string()), ("statusId", STATUS_CLOSED)],
        )])
    }

    /// Handles the response to the request of the last step.
    fn advance(&mut self, resp: &HttpResponse) -> Result<Step, Failure> {
        match self.waiting {
            Waiting::Categories => self.on_categories(resp),
            Waiting::Search => self.on_search(resp),
            Waiting::Create => self.on_created(resp),
            Waiting::Comment => self.on_commented(resp),
            Waiting::Close => self.on_closed(resp),
        }
    }

    fn on_categories(&mut self, resp: &HttpResponse) -> Result<Step, Failure> {
        failure::check(resp, "Jitbit categories")?;
        let categories = json_list(resp, "Jitbit categories")?;
        let Some(id) = find_category(&categories, &self.settings.category) else {
            return Err(missing_category(&self.settings.category, &categories));
        };
        state::set(&self.category_key(), &id);
        self.category_id = Some(id);
        Ok(self.search())
    }

    fn on_search(&mut self, resp: &HttpResponse) -> Result<Step, Failure> {
        failure::check(resp, "Jitbit search")?;
        let results = json_list(resp, "Jitbit search")?;
        let matches = matching_tickets(&results, &self.marker);
        let Some(&ticket) = matches.first() else {
            return self.create();
        };
        if matches.len() > 1 {
            log::with(
                LogLevel::Warn,
                "several Jitbit tickets carry this event's marker; commenting on the oldest",
                &[
                    ("marker", &self.marker),
                    ("tickets", &format!("{matches:?}")),
                ],
            );
        }
        log::with(
            LogLevel::Info,
            "found the event's Jitbit ticket by search",
            &[("ticket", &ticket.to_string()), ("marker", &self.marker)],
        );
        state::set(&self.ticket_key(), &ticket.to_string());
        self.ticket = Some((ticket, Found::Search));
        Ok(self.comment(ticket))
    }

    fn on_created(&mut self, resp: &HttpResponse) -> Result<Step, Failure> {
        if let Err(f) = failure::check(resp, "Jitbit ticket creation") {
            if !f.retryable && resp.status != 401 && resp.status != 403 {
                // The cached category may have been deleted: look it up
                // again next time.
                state::delete(&self.category_key());
            }
            return Err(f);
        }
        let Some(ticket) = parse_ticket_id(&resp.body) else {
            // The ticket probably exists: the retry finds it by search.
            return Err(failure::retryable(
                &format!(
                    "Jitbit ticket creation: answer is not a ticket ID: {}",
                    text::truncate(resp.body.trim(), 200)
                ),
                None,
            ));
        };
        state::set(&self.ticket_key(), &ticket.to_string());
        self.ticket = Some((ticket, Found::Created));
        log::with(
            LogLevel::Info,
            "Jitbit ticket created",
            &[("ticket", &ticket.to_string()), ("marker", &self.marker)],
        );
        Ok(self.delivered(ticket))
    }

    fn on_commented(&mut self, resp: &HttpResponse) -> Result<Step, Failure> {
        if resp.status == 404
            && let Some((stale, Found::State)) = self.ticket
        {
            log::with(
                LogLevel::Warn,
                "the Jitbit ticket remembered for this event no longer exists; searching again",
                &[("ticket", &stale.to_string()), ("marker", &self.marker)],
            );
            state::delete(&self.ticket_key());
            self.ticket = None;
            return Ok(self.find_or_create());
        }
        failure::check(resp, "Jitbit comment")?;
        let Some((ticket, _)) = self.ticket else {
            return Err(failure::permanent(
                "internal error: commented without a ticket",
            ));
        };
        Ok(self.delivered(ticket))
    }

    fn on_closed(&mut self, resp: &HttpResponse) -> Result<Step, Failure> {
        failure::check(resp, "Jitbit close ticket")?;
        Ok(Step::Done(format!("{}; ticket closed", self.outcome())))
    }

    /// After the ticket or comment: remember this update, then close when
    /// asked to.
    fn delivered(&mut self, ticket: u64) -> Step {
        state::set(
            &self.last_key(),
            &Summary::of(&self.ev, self.previous.as_ref()).to_json(),
        );
        if self.settings.close_on_end && self.ev.state_kind().is_end() {
            return self.close(ticket);
        }
        Step::Done(self.outcome())
    }

    fn outcome(&self) -> String {
        match self.ticket {
            Some((id, Found::Created)) => format!("Jitbit ticket {id} created"),
            Some((id, Found::Search)) => {
                format!("comment added to ticket {id} (ticket found by search)")
            }
            Some((id, Found::State)) => format!("comment added to ticket {id}"),
            None => "no ticket".into(),
        }
    }

    fn category_key(&self) -> String {
        bounded_key("category:", &self.settings.category.to_lowercase())
    }

    fn ticket_key(&self) -> String {
        format!("ticket:{}", self.key)
    }

    fn last_key(&self) -> String {
        format!("last:{}", self.key)
    }
}

// ---------------------------------------------------------------------------
// Identity, responses
// ---------------------------------------------------------------------------

/// (state key, subject marker) of an event: its ID when short and plain, a
/// hash of the ID otherwise, a hash of the body when it has no ID.
fn identity(ev: &Event, body: &str) -> (String, String) {
    let key = match ev.id() {
        Some(id) if is_plain_id(&id) => id.into_owned(),
        Some(id) => format!("sha256-{}", &text::sha256_hex(id.as_bytes())[..32]),
        None => {
            let k = format!("body-{}", &text::sha256_hex(body.as_bytes())[..32]);
            log::warn(&format!(
                "event has no recognisable event ID: updates cannot be correlated; using marker [ZT {k}]"
            ));
            k
        }
    };
    let marker = format!("[ZT {key}]");
    (key, marker)
}

/// Short, printable, without the marker's brackets and without markup
/// (so the marker goes into the subject unchanged).
fn is_plain_id(id: &str) -> bool {
    id.len() <= MAX_PLAIN_ID_BYTES
        && !id
            .chars()
            .any(|c| c.is_control() || c == '[' || c == ']' || is_markup(c))
}

/// Characters that make markup in HTML (tags, entities, attributes).
fn is_markup(c: char) -> bool {
    matches!(c, '<' | '>' | '&' | '"' | '\'' | '`')
}

/// `prefix` + `s`, or + a hash of `s` when too long for a state key.
fn bounded_key(prefix: &str, s: &str) -> String {
    if s.len() <= 200 {
        format!("{prefix}{s}")
    } else {
        format!("{prefix}sha256-{}", text::sha256_hex(s.as_bytes()))
    }
}

/// A JSON array answer, or a permanent failure (an HTML page here usually
/// means `url` is not the API base).
fn json_list(resp: &HttpResponse, what: &str) -> Result<Vec<Value>, Failure> {
    match serde_json::from_str::<Value>(&resp.body) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(failure::permanent(&format!(
            "{what}: the answer is not a JSON list (is `url` the API base, e.g. \
             https://company.jitbit.com/helpdesk/api?): {}",
            text::truncate(resp.body.trim(), 200)
        ))),
    }
}

/// A numeric ID given as a JSON number or a string.
fn as_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The new ticket's ID: a bare integer, tolerating a JSON number or a
/// quoted string and surrounding whitespace.
fn parse_ticket_id(body: &str) -> Option<u64> {
    let body = body.trim();
    body.parse::<u64>()
        .ok()
        .or_else(|| {
            serde_json::from_str::<Value>(body)
                .ok()
                .as_ref()
                .and_then(as_id)
        })
        .filter(|id| *id > 0)
}

/// The ID of the category named `name` (case-insensitive; `Name` first,
/// then `NameWithSection`).
fn find_category(categories: &[Value], name: &str) -> Option<String> {
    let named = |field: &str| {
        categories.iter().find(|c| {
            c.get(field)
                .and_then(Value::as_str)
                .is_some_and(|n| n.trim().to_lowercase() == name.to_lowercase())
        })
    };
    named("Name")
        .or_else(|| named("NameWithSection"))
        .and_then(|c| c.get("CategoryID"))
        .and_then(as_id)
        .map(|id| id.to_string())
}

fn missing_category(name: &str, categories: &[Value]) -> Failure {
    let mut known: Vec<&str> = categories
        .iter()
        .filter_map(|c| c.get("Name").and_then(Value::as_str))
        .take(20)
        .collect();
    known.sort_unstable();
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    failure::config(&format!(
        "Jitbit category \"{name}\" does not exist (or this user cannot see it). A Jitbit administrator must \
         create it (the API cannot create categories), or set `category` to an existing one. \
         Categories visible: {known}"
    ))
}

/// IDs of the search results whose subject starts with the marker, oldest
/// (lowest ID) first.
fn matching_tickets(results: &[Value], marker: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = results
        .iter()
        .filter(|r| {
            r.get("Subject")
                .and_then(Value::as_str)
                .is_some_and(|s| s.trim_start().starts_with(marker))
        })
        .filter_map(|r| r.get("IssueID").and_then(as_id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

// ---------------------------------------------------------------------------
// Last-seen summary
// ---------------------------------------------------------------------------

/// What `last:<event>` remembers of an update, bounded.
#[derive(Debug, Default, Clone)]
struct Summary {
    state: Option<String>,
    severity: String,
    file_count: usize,
    /// Short hashes of the files, when there are few enough to remember.
    file_hashes: Option<Vec<String>>,
    client_ips: Vec<String>,
    detectors: Vec<String>,
}

fn file_hash(path: &str) -> String {
    text::sha256_hex(path.as_bytes())[..12].to_string()
}

/// At most 32 items of 100 bytes: even if every byte is a control
/// character (escaped as 6 in JSON) the summary stays well under the host's
/// 64 KiB state value limit.
fn bounded_list(items: Vec<Cow<str>>) -> Vec<String> {
    items
        .into_iter()
        .take(MAX_REMEMBERED_ITEMS)
        .map(|s| text::truncate(&s, 100))
        .collect()
}

impl Summary {
    /// This update, over what was remembered before: fields a partial
    /// update does not carry keep their earlier values.
    fn of(ev: &Event, prev: Option<&Summary>) -> Summary {
        let files = ev.files();
        let mut s = Summary {
            state: ev.state().map(|s| text::truncate(&s, 200)),
            severity: severity_label(ev).unwrap_or_default(),
            file_count: files.len(),
            file_hashes: (files.len() <= MAX_REMEMBERED_FILES)
                .then(|| files.iter().map(|f| file_hash(f)).collect()),
            client_ips: bounded_list(ev.client_ips()),
            detectors: bounded_list(ev.detectors()),
        };
        if let Some(p) = prev {
            if s.state.is_none() {
                s.state = p.state.clone();
            }
            if s.severity.is_empty() {
                s.severity = p.severity.clone();
            }
            if files.is_empty() {
                s.file_count = p.file_count;
                s.file_hashes = p.file_hashes.clone();
            }
            if s.client_ips.is_empty() {
                s.client_ips = p.client_ips.clone();
            }
            if s.detectors.is_empty() {
                s.detectors = p.detectors.clone();
            }
        }
        s
    }

    fn to_json(&self) -> String {
        json!({
            "state": self.state,
            "severity": self.severity,
            "files": self.file_count,
            "file_hashes": self.file_hashes,
            "client_ips": self.client_ips,
            "detectors": self.detectors,
        })
        .to_string()
    }

    fn from_json(s: &str) -> Option<Summary> {
        let v: Value = serde_json::from_str(s).ok()?;
        let strings = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Summary {
            state: v.get("state").and_then(Value::as_str).map(str::to_string),
            severity: v
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            file_count: v.get("files").and_then(Value::as_u64).unwrap_or(0) as usize,
            file_hashes: v
                .get("file_hashes")
                .filter(|h| h.is_array())
                .map(|_| strings("file_hashes")),
            client_ips: strings("client_ips"),
            detectors: strings("detectors"),
        })
    }
}

/// What changed since `prev`, as escaped HTML list items.  Fields the
/// update does not carry (partial updates) are not reported as changes.
fn changes(prev: &Summary, ev: &Event) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(state) = ev
        .state()
        .filter(|s| prev.state.as_deref() != Some(text::truncate(s, 200).as_str()))
    {
        out.push(format!(
            "State: <b>{}</b> &rarr; <b>{}</b>",
            esc(prev.state.as_deref().unwrap_or("none")),
            esc(&state)
        ));
    }
    if let Some(severity) = severity_label(ev).filter(|s| *s != prev.severity) {
        let before = if prev.severity.is_empty() {
            "none"
        } else {
            prev.severity.as_str()
        };
        out.push(format!(
            "Severity: <b>{}</b> &rarr; <b>{}</b>",
            esc(before),
            esc(&severity)
        ));
    }
    let files = ev.files();
    if !files.is_empty() && files.len() != prev.file_count {
        out.push(format!("Files: {} &rarr; {}", prev.file_count, files.len()));
    }
    if let Some(known) = &prev.file_hashes {
        let known: HashSet<&str> = known.iter().map(String::as_str).collect();
        let new: Vec<Cow<str>> = files
            .into_iter()
            .filter(|f| !known.contains(file_hash(f).as_str()))
            .collect();
        if !new.is_empty() {
            out.push(format!("New files ({}): {}", new.len(), html_list(&new)));
        }
    }
    for (label, now, before) in [
        ("New client IPs", ev.client_ips(), &prev.client_ips),
        ("New threat detectors", ev.detectors(), &prev.detectors),
    ] {
        // A full remembered list may have dropped items: say nothing then.
        if before.len() >= MAX_REMEMBERED_ITEMS {
            continue;
        }
        let new: Vec<Cow<str>> = now
            .into_iter()
            .filter(|x| !before.contains(&text::truncate(x, 200)))
            .collect();
        if !new.is_empty() {
            out.push(format!("{label}: {}", esc_join(&new)));
        }
    }
    out
}

/// The event's severity label, `None` when it has none.
fn severity_label(ev: &Event) -> Option<String> {
    match ev.severity() {
        Severity::Other(s) if s.is_empty() => None,
        s => Some(text::truncate(&s.label(), 200)),
    }
}

// ---------------------------------------------------------------------------
// Subject and HTML
// ---------------------------------------------------------------------------

fn esc(s: &str) -> String {
    text::html_escape(&text::truncate(s, MAX_VALUE_BYTES))
}

fn esc_join<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(MAX_LIST_ITEMS)
        .map(|s| esc(s.as_ref()))
        .collect();
    let mut out = shown.join(", ");
    if items.len() > MAX_LIST_ITEMS {
        out.push_str(&format!(
            " &hellip; and {} more",
            items.len() - MAX_LIST_ITEMS
        ));
    }
    out
}

/// A bounded `<ul>`, with the count of what is not shown.
fn html_list<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::from("<ul>");
    for item in items.iter().take(MAX_LIST_ITEMS) {
        out.push_str(&format!("<li>{}</li>", esc(item.as_ref())));
    }
    if items.len() > MAX_LIST_ITEMS {
        out.push_str(&format!(
            "<li>&hellip; and {} more</li>",
            items.len() - MAX_LIST_ITEMS
        ));
    }
    out.push_str("</ul>");
    out
}

/// What a state means, for the subject.
fn state_phrase(ev: &Event) -> String {
    match ev.state_kind() {
        StateKind::Lockout => "locked out".into(),
        StateKind::DelayedLockout => "delayed lockout".into(),
        StateKind::AccessRestored => "access restored".into(),
        StateKind::Recovered => "recovered".into(),
        StateKind::FalsePositive => "flagged false positive".into(),
        StateKind::Other => match ev.state() {
            Some(s) => format!("alert ({s})"),
            None => "alert".into(),
        },
    }
}

/// `[ZT RSW-123] Critical: CORP\jsmith locked out on prod-cluster-01`:
/// plain text, bounded.  After the marker (which is kept exactly: updates
/// find the ticket by it), control characters and markup characters
/// (`<`, `>`, `&`, quotes) from the event become spaces, so no tag,
/// attribute or entity reaches a page that shows the subject unescaped.
fn subject(ev: &Event, marker: &str) -> String {
    let user = ev.user().unwrap_or_else(|| "unknown user".into());
    let mut rest = format!("{}: {user} {}", ev.severity().label(), state_phrase(ev));
    if let Some(cluster) = ev.clusters().first() {
        rest.push_str(&format!(" on {cluster}"));
    }
    let clean: String = rest
        .chars()
        .map(|c| {
            if c.is_control() || is_markup(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    text::truncate_chars(&format!("{marker} {clean}"), MAX_SUBJECT_CHARS)
}

/// Table rows of what the event says (absent fields are left out).
/// `all_files`: list the files (bounded), else only count them.
fn details_rows(ev: &Event, all_files: bool) -> Vec<(&'static str, String)> {
    let mut rows: Vec<(&'static str, String)> = Vec::new();
    let mut text_row = |label: &'static str, v: Option<Cow<str>>| {
        if let Some(v) = v {
            rows.push((label, esc(&v)));
        }
    };
    text_row("Event ID", ev.id());
    text_row("Severity", Some(Cow::Owned(ev.severity().label())));
    text_row("State", ev.state());
    text_row("User", ev.user());
    text_row("Signal strength", ev.signal_strength());
    text_row("Protection mode", ev.protection_mode());
    text_row("Event source", ev.event_source());
    // Times in RFC 3339 when they are readable, else as received.
    let time = |readable: Option<String>, raw: Option<Cow<str>>| match readable {
        Some(t) => Some(t),
        None => raw.map(|r| text::truncate_chars(&r, 256)),
    };
    text_row(
        "Detected",
        time(ev.detected(), ev.detected_raw()).map(Cow::Owned),
    );
    text_row(
        "Updated",
        time(ev.updated(), ev.updated_raw()).map(Cow::Owned),
    );
    for (label, items) in [
        ("Client IPs", ev.client_ips()),
        ("Shares", ev.shares()),
        ("Threat detectors", ev.detectors()),
        ("Clusters", ev.clusters()),
        ("Snapshots", ev.snapshots()),
    ] {
        if !items.is_empty() {
            rows.push((label, esc_join(&items)));
        }
    }
    let files = ev.files();
    if !files.is_empty() {
        let cell = if all_files {
            format!("{}{}", files.len(), html_list(&files))
        } else {
            files.len().to_string()
        };
        rows.push(("Files", cell));
    }
    if let Some(url) = ev.console_url() {
        let url = esc(&url);
        rows.push(("Superna console", format!("<a href=\"{url}\">{url}</a>")));
    }
    rows
}

fn table(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">");
    for (label, cell) in rows {
        out.push_str(&format!(
            "<tr><th align=\"left\" valign=\"top\">{label}</th><td>{cell}</td></tr>"
        ));
    }
    out.push_str("</table>");
    out
}

fn receipt_line(receipt_id: &str, received_at: &str) -> String {
    format!(
        "<p><small>ztbridge receipt {} received {}</small></p>",
        esc(receipt_id),
        esc(received_at)
    )
}

/// Pretty JSON of `v`, at most `max` bytes (with "…" when cut); true when
/// cut.  Serialisation stops at the limit, so a huge event costs little.
fn pretty_bounded(v: &Value, max: usize) -> (String, bool) {
    /// Keeps the first `max` bytes, then refuses more (which stops serde).
    struct Capped {
        buf: Vec<u8>,
        max: usize,
    }
    impl std::io::Write for Capped {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            if data.len() > room {
                return Err(std::io::Error::other("limit reached"));
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // One byte over the limit tells "exactly max" from "cut".
    let mut w = Capped {
        buf: Vec::new(),
        max: max + 1,
    };
    let complete = serde_json::to_writer_pretty(&mut w, v).is_ok();
    let text = String::from_utf8_lossy(&w.buf).into_owned();
    if complete && text.len() <= max {
        (text, false)
    } else {
        (text::truncate(&text, max), true)
    }
}

/// The new ticket's body: the details table and the received event.
fn ticket_html(ev: &Event, marker: &str, receipt_id: &str, received_at: &str) -> String {
    let (pretty, cut) = pretty_bounded(ev.raw(), MAX_EVENT_BYTES);
    let mut out = format!(
        "<p><b>Superna Zero Trust event</b> {}</p>{}<p><b>Received event</b>{}</p><pre>{}</pre>",
        esc(marker),
        table(&details_rows(ev, true)),
        if cut {
            " (cut to 32 KB; ztbridge keeps the whole event)"
        } else {
            ""
        },
        text::html_escape(&pretty),
    );
    out.push_str(&receipt_line(receipt_id, received_at));
    out
}

/// A comment: what changed since the last update seen, then the details.
fn comment_html(
    ev: &Event,
    marker: &str,
    previous: Option<&Summary>,
    receipt_id: &str,
    received_at: &str,
) -> String {
    let mut out = format!("<p><b>Superna Zero Trust update</b> {}</p>", esc(marker));
    match previous.map(|p| changes(p, ev)) {
        Some(list) if list.is_empty() => out.push_str(&format!(
            "<p>No change since the previous update (state {}).</p>",
            esc(ev.state().as_deref().unwrap_or("none"))
        )),
        Some(list) => {
            out.push_str("<ul>");
            for item in list {
                out.push_str(&format!("<li>{item}</li>"));
            }
            out.push_str("</ul>");
        }
        None => out.push_str(
            "<p>ztbridge has no record of earlier updates of this event (its state was lost, or the \
             ticket predates ztbridge); the current details follow.</p>",
        ),
    }
    out.push_str(&table(&details_rows(ev, previous.is_none())));
    out.push_str(&receipt_line(receipt_id, received_at));
    out
}

export!(Jitbit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_ids_are_read_tolerantly() {
        assert_eq!(parse_ticket_id("1001"), Some(1001));
        assert_eq!(parse_ticket_id(" 1001\r\n"), Some(1001));
        assert_eq!(parse_ticket_id("\"1001\""), Some(1001));
        assert_eq!(parse_ticket_id("<html>"), None);
        assert_eq!(parse_ticket_id("0"), None);
    }

    #[test]
    fn only_subjects_starting_with_the_marker_match() {
        let results = json!([
            {"IssueID": 5, "Subject": "[ZT RSW-12] Critical: x"},
            {"IssueID": 6, "Subject": "Fwd: [ZT RSW-1] Critical: x"},
            {"IssueID": "9", "Subject": "[ZT RSW-1] Critical: x"},
            {"IssueID": 7, "Subject": "[ZT RSW-1] duplicate"},
        ]);
        let results = results.as_array().unwrap();
        assert_eq!(matching_tickets(results, "[ZT RSW-1]"), vec![7, 9]);
        assert_eq!(matching_tickets(results, "[ZT RSW-2]"), Vec::<u64>::new());
    }

    #[test]
    fn changes_name_what_is_new_and_ignore_what_is_absent() {
        let first = Event::parse(r#"{"id": "A", "severity": "Major", "state": "LOCKED_OUT", "files": ["/a"], "clientIPs": ["10.0.0.1"]}"#).unwrap();
        let prev = Summary::from_json(&Summary::of(&first, None).to_json()).unwrap();
        let update = Event::parse(r#"{"id": "A", "state": "ACCESS_RESTORED", "files": ["/a", "/<b>"], "clientIPs": ["10.0.0.2"]}"#).unwrap();
        let list = changes(&prev, &update);
        assert_eq!(list.len(), 4, "{list:?}");
        assert!(list[0].contains("LOCKED_OUT") && list[0].contains("ACCESS_RESTORED"));
        assert!(
            list.iter()
                .any(|c| c.contains("New files (1)") && c.contains("/&lt;b&gt;"))
        );
        assert!(list.iter().any(|c| c.contains("10.0.0.2")));
        // Severity absent in the update: no change reported, and remembered.
        let merged = Summary::of(&update, Some(&prev));
        assert_eq!(merged.severity, "Major");
        assert!(changes(&merged, &update).is_empty());
        // A partial update without files keeps the files.
        let partial = Event::parse(r#"{"id": "A", "state": "ACCESS_RESTORED"}"#).unwrap();
        assert!(changes(&merged, &partial).is_empty());
        assert_eq!(Summary::of(&partial, Some(&merged)).file_count, 2);
    }

    #[test]
    fn long_or_odd_ids_are_hashed_in_the_marker() {
        let (key, marker) = identity(&Event::parse(r#"{"id": "RSW-1"}"#).unwrap(), "");
        assert_eq!((key.as_str(), marker.as_str()), ("RSW-1", "[ZT RSW-1]"));
        let long = format!(r#"{{"id": "{}"}}"#, "x".repeat(300));
        assert!(
            identity(&Event::parse(&long).unwrap(), "")
                .1
                .starts_with("[ZT sha256-")
        );
        assert!(
            identity(&Event::parse(r#"{"id": "a]b"}"#).unwrap(), "")
                .1
                .starts_with("[ZT sha256-")
        );
    }

    #[test]
    fn the_subject_carries_no_markup_and_keeps_the_marker() {
        let ev = Event::parse(
            r#"{"id": "RSW-7", "severity": "Critical", "state": "LOCKED_OUT",
                "user": "<script>alert(1)</script>", "clusters": ["<img src=x onerror=alert(2)>&amp;\"'`"]}"#,
        )
        .unwrap();
        let (_, marker) = identity(&ev, "");
        let s = subject(&ev, &marker);
        assert!(s.starts_with("[ZT RSW-7] Critical: "), "{s}");
        assert!(!s.chars().any(is_markup), "{s}");
        assert!(s.contains("script alert(1) /script"), "{s}");
        // An ID with markup is hashed, so the marker never carries any.
        let ev = Event::parse(r#"{"id": "<b>RSW-8</b>", "user": "u"}"#).unwrap();
        let (_, marker) = identity(&ev, "");
        assert!(marker.starts_with("[ZT sha256-"), "{marker}");
        assert!(subject(&ev, &marker).starts_with(&marker));
    }

    #[test]
    fn the_received_event_is_bounded() {
        let small = json!({"a": 1});
        assert_eq!(
            pretty_bounded(&small, 100),
            ("{\n  \"a\": 1\n}".to_string(), false)
        );
        let big = json!({"files": vec!["x".repeat(100); 1000]});
        let (text, cut) = pretty_bounded(&big, 1000);
        assert!(cut && text.len() <= 1000 && text.ends_with('…'));
    }

    #[test]
    fn times_are_shown_normalised_or_as_received() {
        let row = |event: &str, label: &str| {
            details_rows(&Event::parse(event).unwrap(), false)
                .into_iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v)
        };
        let e = r#"{"detected": "2025-06-11 10:15:03", "updated": 1749636903250}"#;
        assert_eq!(row(e, "Detected").as_deref(), Some("2025-06-11T10:15:03Z"));
        assert_eq!(
            row(e, "Updated").as_deref(),
            Some("2025-06-11T10:15:03.250Z")
        );
        let e = r#"{"detected": "2025-02-31T00:00:00Z", "updated": "<soon>"}"#;
        assert_eq!(row(e, "Detected").as_deref(), Some("2025-02-31T00:00:00Z"));
        assert_eq!(row(e, "Updated").as_deref(), Some("&lt;soon&gt;"));
        assert_eq!(row(r#"{"detected": ""}"#, "Detected"), None);
    }

    #[test]
    fn categories_match_case_insensitively() {
        let cats = json!([{"CategoryID": 1, "Name": "General"}, {"CategoryID": 7, "Name": "Storage Security Event"}]);
        assert_eq!(
            find_category(cats.as_array().unwrap(), "storage security EVENT").as_deref(),
            Some("7")
        );
        assert_eq!(find_category(cats.as_array().unwrap(), "Nope"), None);
    }
}
