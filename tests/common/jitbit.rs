//! A stub Jitbit Helpdesk REST API on loopback, speaking the documented
//! protocol (see `shared/reference/jitbit-api.md`):
//!
//! * every call needs `Authorization: Basic` ([`USER`]:[`PASSWORD`]) or
//!   `Bearer` ([`TOKEN`]); anything else gets 401 and is counted;
//! * `GET /api/categories` -> JSON array of `{CategoryID, Name, SectionID,
//!   Section, NameWithSection, ForTechsOnly}`;
//! * `POST /api/ticket` (form: categoryId, subject, body, priorityId,
//!   tags) -> the new ticket ID as a bare integer;
//! * `POST /api/comment` (form: id, body) -> 200; unknown ticket -> 404;
//! * `GET /api/Search?query=&count=` -> JSON array of `{IssueID, Subject,
//!   Status, CategoryID}` for tickets whose subject or body contains the
//!   query (case-insensitive), newest first;
//! * `POST /api/UpdateTicket` (form: id, statusId) -> 200; unknown -> 404.
//!
//! Paths are case-insensitive, as on Jitbit.  Scripted answers (429 with
//! Retry-After, 500...) replace the normal behaviour for the next requests,
//! optionally after performing the operation (an answer lost on the way
//! back).  Every request is recorded, and the tickets with their comments
//! are kept so tests assert on the resulting helpdesk.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Answer, wait_until};

pub const USER: &str = "CORP\\ztbridge";
pub const PASSWORD: &str = "Jb-pa55w0rd-9f8e7d";
pub const TOKEN: &str = "jbtok-0123456789abcdef0123456789abcdef";
pub const CATEGORY: &str = "Storage Security Event";
pub const CATEGORY_ID: u64 = 7;

/// `statusId` values.
pub const STATUS_NEW: u32 = 1;
pub const STATUS_CLOSED: u32 = 3;

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct JitbitRequest {
    pub at: Instant,
    pub method: String,
    /// Path as sent (`/api/Search`).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: String,
    /// What the stub answered.
    pub status: u16,
}

impl JitbitRequest {
    /// `GET categories`, `POST ticket`...: method and the last path segment
    /// lower-cased, for asserting on a flow's sequence of calls.
    pub fn call(&self) -> String {
        let last = self
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_lowercase();
        format!("{} {last}", self.method)
    }

    /// The form fields of the body.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_urlencoded(&self.body)
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn authorization(&self) -> String {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// A ticket as the stub keeps it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: u64,
    pub category_id: u64,
    pub subject: String,
    pub body: String,
    pub priority_id: i64,
    pub tags: Option<String>,
    pub status_id: u32,
    pub comments: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Category {
    pub id: u64,
    pub name: String,
    pub section: String,
}

/// A scripted answer and what it applies to.
struct Scripted {
    /// Only requests to this path (case-insensitive); `None`: any.
    path: Option<String>,
    answer: Answer,
    /// Perform the operation first, then give this answer instead of the
    /// real one (the answer was lost on the way back).
    perform: bool,
}

struct Inner {
    received: Vec<JitbitRequest>,
    script: VecDeque<Scripted>,
    tickets: BTreeMap<u64, Ticket>,
    categories: Vec<Category>,
    next_id: u64,
    auth_failures: usize,
}

/// The stub server; clones share it.
#[derive(Clone)]
pub struct StubJitbit {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

/// Status, headers, body (the same shape as a scripted [`Answer`]).
type Reply = Answer;

fn reply(status: StatusCode, body: impl Into<String>) -> Reply {
    (status.as_u16(), vec![], body.into())
}

fn reply_json(v: Value) -> Reply {
    (
        200,
        vec![("content-type", "application/json; charset=utf-8".into())],
        v.to_string(),
    )
}

fn into_response((status, headers, body): Reply) -> Response {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(k, v.parse().expect("header value"));
    }
    (StatusCode::from_u16(status).expect("status"), h, body).into_response()
}

/// Decodes `application/x-www-form-urlencoded` text (also query strings).
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match (
                bytes[i],
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (b'+', _, _) => out.push(b' '),
                (b'%', Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                (b, _, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The `Authorization` value of HTTP Basic for `user`:`password`, built by
/// reqwest so the stub does not carry its own base64.
pub fn basic_header(user: &str, password: &str) -> String {
    let req = reqwest::Client::new()
        .get("http://127.0.0.1/")
        .basic_auth(user, Some(password))
        .build()
        .expect("request");
    req.headers()["authorization"]
        .to_str()
        .expect("ascii")
        .to_string()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn status_name(id: u32) -> &'static str {
    match id {
        STATUS_NEW => "New",
        2 => "In Progress",
        STATUS_CLOSED => "Closed",
        _ => "Unknown",
    }
}

impl Inner {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        got == basic_header(USER, PASSWORD) || got == format!("Bearer {TOKEN}")
    }

    /// The documented behaviour of one call.
    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        headers: &HeaderMap,
        body: &str,
    ) -> Reply {
        if !self.authorized(headers) {
            self.auth_failures += 1;
            return reply(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        let form_ok = headers.get("content-type").is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
        if *method == Method::POST && !form_ok {
            return reply(
                StatusCode::BAD_REQUEST,
                "POST parameters must be form fields",
            );
        }
        let form = parse_urlencoded(body);
        match (method.as_str(), path.to_lowercase().as_str()) {
            ("GET", "/api/categories") => self.categories(),
            ("POST", "/api/ticket") => self.create(&form),
            ("POST", "/api/comment") => self.comment(&form),
            ("GET", "/api/search") => self.search(query),
            ("POST", "/api/updateticket") => self.update(&form),
            _ => reply(StatusCode::NOT_FOUND, "Not found"),
        }
    }

    fn categories(&self) -> Reply {
        let list: Vec<Value> = self
            .categories
            .iter()
            .map(|c| {
                json!({
                    "CategoryID": c.id, "Name": c.name, "SectionID": 1, "Section": c.section,
                    "NameWithSection": format!("{} / {}", c.section, c.name), "ForTechsOnly": false,
                })
            })
            .collect();
        reply_json(Value::Array(list))
    }

    fn create(&mut self, form: &[(String, String)]) -> Reply {
        let Some(category_id) = field(form, "categoryId").and_then(|c| c.parse::<u64>().ok())
        else {
            return reply(StatusCode::BAD_REQUEST, "categoryId is required");
        };
        if !self.categories.iter().any(|c| c.id == category_id) {
            return reply(StatusCode::BAD_REQUEST, "Category not found");
        }
        let subject = field(form, "subject").unwrap_or_default();
        if subject.trim().is_empty() {
            return reply(StatusCode::BAD_REQUEST, "subject is required");
        }
        let priority_id = match field(form, "priorityId").map(str::parse::<i64>) {
            None => 0,
            Some(Ok(p)) if (-1..=2).contains(&p) => p,
            Some(_) => return reply(StatusCode::BAD_REQUEST, "priorityId must be -1, 0, 1 or 2"),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.tickets.insert(
            id,
            Ticket {
                id,
                category_id,
                subject: subject.to_string(),
                body: field(form, "body").unwrap_or_default().to_string(),
                priority_id,
                tags: field(form, "tags").map(str::to_string),
                status_id: STATUS_NEW,
                comments: vec![],
            },
        );
        // A bare integer, not JSON, like Jitbit.
        (
            200,
            vec![("content-type", "text/plain; charset=utf-8".into())],
            id.to_string(),
        )
    }

    fn ticket_mut(&mut self, form: &[(String, String)]) -> Option<&mut Ticket> {
        let id = field(form, "id").and_then(|i| i.trim().parse::<u64>().ok())?;
        self.tickets.get_mut(&id)
    }

    fn comment(&mut self, form: &[(String, String)]) -> Reply {
        let body = field(form, "body").unwrap_or_default().to_string();
        if body.trim().is_empty() {
            return reply(StatusCode::BAD_REQUEST, "body is required");
        }
        match self.ticket_mut(form) {
            Some(t) => {
                t.comments.push(body);
                reply(StatusCode::OK, "")
            }
            None => reply(StatusCode::NOT_FOUND, "Ticket not found"),
        }
    }

    fn search(&self, query: &[(String, String)]) -> Reply {
        let q = query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("query"))
            .map(|(_, v)| v.to_lowercase())
            .unwrap_or_default();
        let count = query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("count"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(25);
        let hits: Vec<Value> = self
            .tickets
            .values()
            .rev()
            .filter(|t| {
                !q.is_empty()
                    && (t.subject.to_lowercase().contains(&q) || t.body.to_lowercase().contains(&q))
            })
            .take(count)
            .map(|t| {
                json!({
                    "IssueID": t.id, "Subject": t.subject, "Status": status_name(t.status_id),
                    "StatusID": t.status_id, "CategoryID": t.category_id, "Priority": t.priority_id,
                })
            })
            .collect();
        reply_json(Value::Array(hits))
    }

    fn update(&mut self, form: &[(String, String)]) -> Reply {
        let status = field(form, "statusId").map(str::parse::<u32>);
        let Some(t) = self.ticket_mut(form) else {
            return reply(StatusCode::NOT_FOUND, "Ticket not found");
        };
        match status {
            None => {}
            Some(Ok(s)) if (1..=3).contains(&s) => t.status_id = s,
            Some(_) => return reply(StatusCode::BAD_REQUEST, "bad statusId"),
        }
        reply(StatusCode::OK, "")
    }

    /// The first scripted answer that applies to `path`.
    fn take_script(&mut self, path: &str) -> Option<Scripted> {
        let i = self.script.iter().position(|s| {
            s.path
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(path))
        })?;
        self.script.remove(i)
    }
}

async fn serve(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let body = String::from_utf8_lossy(&body).into_owned();
    let path = uri.path().to_string();
    let query = parse_urlencoded(uri.query().unwrap_or_default());
    let mut s = inner.lock().unwrap();
    let answer = match s.take_script(&path) {
        Some(scripted) => {
            if scripted.perform {
                s.handle(&method, &path, &query, &headers, &body);
            }
            scripted.answer
        }
        None => s.handle(&method, &path, &query, &headers, &body),
    };
    s.received.push(JitbitRequest {
        at,
        method: method.to_string(),
        path,
        query,
        headers,
        body,
        status: answer.0,
    });
    into_response(answer)
}

impl StubJitbit {
    /// A helpdesk with the categories "General" (1) and [`CATEGORY`] (7).
    pub async fn start() -> StubJitbit {
        StubJitbit::with_categories(&[(1, "General"), (CATEGORY_ID, CATEGORY)]).await
    }

    pub async fn with_categories(categories: &[(u64, &str)]) -> StubJitbit {
        let inner = Arc::new(Mutex::new(Inner {
            received: vec![],
            script: VecDeque::new(),
            tickets: BTreeMap::new(),
            categories: categories
                .iter()
                .map(|(id, name)| Category {
                    id: *id,
                    name: name.to_string(),
                    section: "Helpdesk".into(),
                })
                .collect(),
            next_id: 1001,
            auth_failures: 0,
        }));
        let app = Router::new().fallback(serve).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stub serve") });
        StubJitbit { addr, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// The API base, as a route's `url`.
    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Answers to give to the next requests, whatever they are.
    pub fn script(&self, answers: Vec<Answer>) {
        let mut s = self.lock();
        for answer in answers {
            s.script.push_back(Scripted {
                path: None,
                answer,
                perform: false,
            });
        }
    }

    /// Answers to give to the next requests to `path` (e.g. `/api/ticket`).
    pub fn script_on(&self, path: &str, answers: Vec<Answer>) {
        let mut s = self.lock();
        for answer in answers {
            s.script.push_back(Scripted {
                path: Some(path.into()),
                answer,
                perform: false,
            });
        }
    }

    /// The next request to `path` is performed, but answered with `answer`
    /// (as when a proxy times out after the helpdesk did the work).
    pub fn lose_answer(&self, path: &str, answer: Answer) {
        self.lock().script.push_back(Scripted {
            path: Some(path.into()),
            answer,
            perform: true,
        });
    }

    pub fn received(&self) -> Vec<JitbitRequest> {
        self.lock().received.clone()
    }

    /// `GET categories`, `POST ticket`... of every request so far.
    pub fn calls(&self) -> Vec<String> {
        self.received().iter().map(JitbitRequest::call).collect()
    }

    pub fn auth_failures(&self) -> usize {
        self.lock().auth_failures
    }

    pub fn tickets(&self) -> Vec<Ticket> {
        self.lock().tickets.values().cloned().collect()
    }

    pub fn ticket(&self, id: u64) -> Ticket {
        self.lock()
            .tickets
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("no ticket {id}"))
    }

    /// A ticket made outside ztbridge; returns its ID.
    pub fn add_ticket(&self, subject: &str, body: &str) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.tickets.insert(
            id,
            Ticket {
                id,
                category_id: CATEGORY_ID,
                subject: subject.into(),
                body: body.into(),
                priority_id: 0,
                tags: None,
                status_id: STATUS_NEW,
                comments: vec![],
            },
        );
        id
    }

    /// Deletes a ticket (as an agent would in the Jitbit UI).
    pub fn remove_ticket(&self, id: u64) {
        self.lock().tickets.remove(&id);
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<JitbitRequest> {
        wait_until(timeout, || {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "stub Jitbit got {} requests, expected {n}",
                self.received().len()
            )
        })
    }
}

/// A `jitbit` route pointing at `stub` with Basic credentials, plus
/// `extra` config lines (`key = value`).
pub fn jitbit_route(stub: &StubJitbit, extra: &str) -> String {
    jitbit_route_with(
        stub,
        &format!("username = {USER:?}\npassword = {PASSWORD:?}\n{extra}"),
    )
}

/// A `jitbit` route pointing at `stub` with exactly these config lines
/// (besides `url`).
pub fn jitbit_route_with(stub: &StubJitbit, config: &str) -> String {
    format!(
        "[[route]]\nname = \"jitbit\"\ntransform = \"builtin:jitbit\"\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nurl = {:?}\n{config}\n",
        stub.url()
    )
}
