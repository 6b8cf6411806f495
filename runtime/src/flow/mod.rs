//! The multi-step transform flow for one event: `start`, perform the
//! requests the step asks for, `resume` with the responses, until the
//! transform is done or fails.  The same driver serves live delivery (with
//! [`crate::egress::HttpTransport`]) and the offline dry run (with
//! [`crate::egress::CannedTransport`]), so the dry run shows exactly what
//! would be sent.  A [`Route`] is what a flow runs for: a transform with
//! its resolved config, secrets and egress policy.
//!
//! May import: `sandbox`, `egress`, `store` (the transform-state
//! interface), `config`, `time`, `text`.

mod event;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use event::{FlowInput, record};
pub use route::{Filter, Route, RouteError, SAMPLE_EVENT, VALIDATE_KEY};

use crate::egress::{Destination, Policy, Transport, TransportFailure};
use crate::sandbox::bindings::types::{self, HttpRequest, Step};
use crate::sandbox::{Engine, FlowContext, GuestLog, Sandbox, SandboxError};
use crate::store::TransformState;
use crate::text::excerpt;
use crate::time::stage_cpu::{Stage, Timer, measure};

/// A request as recorded: secrets redacted, `Authorization` hidden.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// `GET`, `POST`...
    pub method: String,
    /// The URL, secrets redacted (cut at 2 KiB).
    pub url: String,
    /// Headers in order; `Authorization` and the like shown as `[redacted]`.
    pub headers: Vec<(String, String)>,
    /// The body, secrets redacted (cut at 1 MiB).
    pub body: String,
}

/// A response as recorded (body excerpt).
#[derive(Debug, Clone, Serialize)]
pub struct ResponseRecord {
    /// HTTP status; 0 when the request got no response.
    pub status: u16,
    /// The body (an excerpt, secrets redacted), or why there was none.
    pub body: String,
    /// Why the request got no response, when it got none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<TransportFailure>,
    /// The `Retry-After` header, as sent (the retry policy reads it).
    #[serde(skip)]
    pub(crate) retry_after: Option<String>,
    /// How long the destination took (metrics; not shown: dry runs stay
    /// deterministic).
    #[serde(skip)]
    pub(crate) elapsed: std::time::Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// What the step asked to send.
    pub requests: Vec<RequestRecord>,
    /// What came back, one per request sent (fewer when the flow stopped).
    pub responses: Vec<ResponseRecord>,
}

/// Which part of the flow failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The transform returned a failure (often a destination's answer).
    Transform,
    /// The sandbox stopped the transform (fuel, deadline, memory, trap).
    Sandbox,
    /// A request went outside the egress allow-list.
    Egress,
    /// The transform exceeded an output limit (steps, requests, sizes).
    Limit,
    /// The state store failed or a state limit was hit.
    State,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The transform finished; its short outcome.
    Done { message: String },
    /// The flow failed.
    Failed {
        kind: FailureKind,
        retryable: bool,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u32>,
    },
    /// A dry run had no canned response for a request.
    Incomplete { message: String },
}

impl Outcome {
    fn failed(kind: FailureKind, retryable: bool, message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            kind,
            retryable,
            message: message.into(),
            retry_after_seconds: None,
        }
    }
}

/// Everything that happened in one flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    /// The route the flow ran for.
    pub route: String,
    /// The transform's name (from `describe`).
    pub transform: String,
    /// Its own version.
    pub(crate) transform_version: String,
    /// `sha256:...` of the component: exactly what ran.
    pub(crate) transform_digest: String,
    /// Every step, in order.
    pub steps: Vec<StepRecord>,
    /// How the flow ended.
    pub outcome: Outcome,
    /// What the transform logged (bounded).
    pub logs: Vec<GuestLog>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) dropped_logs: usize,
    /// State writes committed by the flow (`null` = deleted).
    pub state_writes: BTreeMap<String, Option<String>>,
    /// Wasm fuel all steps used.
    pub fuel_used: u64,
    /// Wall-clock time of the whole flow, HTTP included.
    pub duration_ms: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Outcome messages kept (the rest is cut with a note).
const MAX_OUTCOME_BYTES: usize = 4096;

/// Runs `f` on the blocking pool (state commits block).
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("host task failed: {e}"))
}

/// Runs a sandbox call in this task, its CPU counted as the transform's.
/// A panic in host code fails this flow alone (its sandbox is dropped)
/// instead of the delivery task that runs it.
async fn guarded<R>(call: impl std::future::Future<Output = R>) -> Result<R, String> {
    use futures_util::FutureExt;
    measure(
        Stage::Transform,
        std::panic::AssertUnwindSafe(call).catch_unwind(),
    )
    .await
    .map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        format!("host task failed: {}", excerpt(&what, 1024))
    })
}

type StepResult = Result<Result<Step, types::Failure>, SandboxError>;

/// Runs the whole flow of `route`'s transform for `event`.
pub async fn run<T: Transport>(
    engine: &Arc<Engine>,
    route: &Route,
    state: &Arc<dyn TransformState>,
    event: types::Event,
    transport: &T,
) -> FlowReport {
    let started = Instant::now();
    let mut report = FlowReport {
        route: route.name.to_string(),
        transform: route.transform.info.name.clone(),
        transform_version: route.transform.info.version.clone(),
        transform_digest: route.transform.digest.clone(),
        steps: vec![],
        outcome: Outcome::Incomplete {
            message: "not started".into(),
        },
        logs: vec![],
        dropped_logs: 0,
        state_writes: BTreeMap::new(),
        fuel_used: 0,
        duration_ms: 0.0,
    };
    let ctx = FlowContext::new(
        route.name.clone(),
        route.config.clone(),
        state.clone(),
        route.redactor.clone(),
    )
    .for_event(&event);
    // The guest runs in this task, on a fiber that yields at each epoch
    // tick: no thread hop, and no worker held for a long step.
    let started_sandbox = guarded(async {
        let mut sandbox = Sandbox::new(engine, &route.transform, ctx).await?;
        let result = sandbox.start(&event).await;
        Ok::<_, SandboxError>((sandbox, result))
    })
    .await;
    let (mut sandbox, mut result): (Sandbox, StepResult) = match started_sandbox {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            report.outcome = Outcome::failed(FailureKind::Sandbox, false, e.to_string());
            report.duration_ms = ms(started);
            return report;
        }
        Err(e) => {
            report.outcome = Outcome::failed(FailureKind::Sandbox, false, e);
            report.duration_ms = ms(started);
            return report;
        }
    };

    let limits = engine.limits.clone();
    report.outcome = loop {
        // Commit what the step wrote before acting on it; a step the
        // sandbox stopped did not return, so its writes are dropped.
        if let Some((retryable, message)) = sandbox.take_state_error() {
            break Outcome::failed(FailureKind::State, retryable, message);
        }
        let writes = sandbox.take_state_writes();
        let writes = if result.is_err() {
            BTreeMap::new()
        } else {
            writes
        };
        if !writes.is_empty() {
            let (st, name, w) = (state.clone(), route.name.clone(), writes.clone());
            match blocking(move || st.apply(&name, &w)).await {
                Ok(Ok(())) => report.state_writes.extend(writes),
                Ok(Err(e)) => break Outcome::failed(FailureKind::State, true, e.to_string()),
                Err(e) => break Outcome::failed(FailureKind::State, true, e),
            }
        }

        let requests = match result {
            Err(e) => break Outcome::failed(FailureKind::Sandbox, false, e.to_string()),
            Ok(Err(f)) => {
                break Outcome::Failed {
                    kind: FailureKind::Transform,
                    retryable: f.retryable,
                    message: route
                        .redactor
                        .apply(&excerpt(&f.message, MAX_OUTCOME_BYTES)),
                    retry_after_seconds: f.retry_after_seconds,
                };
            }
            Ok(Ok(Step::Done(message))) => {
                break Outcome::Done {
                    message: route.redactor.apply(&excerpt(&message, MAX_OUTCOME_BYTES)),
                };
            }
            Ok(Ok(Step::Send(requests))) => requests,
        };

        if report.steps.len() >= limits.max_steps as usize {
            break Outcome::failed(
                FailureKind::Limit,
                false,
                format!(
                    "the transform asked for more than {} steps (limits.max_steps)",
                    limits.max_steps
                ),
            );
        }
        let destinations = match check_requests(route, &limits, &requests) {
            Ok(d) => d,
            Err(problem) => {
                // Record what was refused (redacted) so the operator sees it.
                report.steps.push(StepRecord {
                    requests: record_requests(route, &requests),
                    responses: vec![],
                });
                break problem;
            }
        };

        let mut step = StepRecord {
            requests: record_requests(route, &requests),
            responses: vec![],
        };
        let mut responses = Vec::with_capacity(requests.len());
        let mut missing = None;
        let mut denied = None;
        for (i, (req, to)) in requests.iter().zip(&destinations).enumerate() {
            let sent_at = Instant::now();
            match transport.send(req, to).await {
                Some(Ok(resp)) => {
                    let retry_after = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                        .map(|h| excerpt(&h.value, 64));
                    step.responses.push(ResponseRecord {
                        status: resp.status,
                        body: route.redactor.apply(&excerpt(&resp.body, 4096)),
                        failure: None,
                        retry_after,
                        elapsed: sent_at.elapsed(),
                    });
                    responses.push(Ok(resp));
                }
                Some(Err(e)) => {
                    // Recorded as status 0 with the reason; the guest gets
                    // the typed error.
                    let message = route.redactor.apply(&excerpt(&e.message, 4096));
                    step.responses.push(ResponseRecord {
                        status: 0,
                        body: message.clone(),
                        failure: Some(e.kind),
                        retry_after: None,
                        elapsed: sent_at.elapsed(),
                    });
                    if e.kind == TransportFailure::EgressDenied {
                        // Every address of the name was refused: nothing
                        // was sent, and the flow stops as for any egress
                        // violation.
                        denied = Some(message);
                        break;
                    }
                    let detail = route.redactor.apply(&excerpt(&e.detail, 4096));
                    responses.push(Err(transport_error(e.kind, detail)));
                }
                None => {
                    missing = Some(i);
                    break;
                }
            }
        }
        let step_no = report.steps.len() + 1;
        report.steps.push(step);
        if let Some(message) = denied {
            tracing::error!(route = %route.name, transform_digest = %route.transform.digest, "{message}");
            break Outcome::failed(FailureKind::Egress, false, message);
        }
        if let Some(i) = missing {
            break Outcome::Incomplete {
                message: format!("no canned response for request {} of step {step_no}", i + 1),
            };
        }

        match guarded(sandbox.resume(&responses)).await {
            Ok(r) => result = r,
            Err(e) => {
                report.outcome = Outcome::failed(FailureKind::Sandbox, false, e);
                report.duration_ms = ms(started);
                return report;
            }
        }
    };

    let (logs, dropped) = sandbox.take_logs();
    report.logs = logs;
    report.dropped_logs = dropped;
    report.fuel_used = sandbox.fuel_used();
    // Dropping the store resets its pool slot: part of the transform's cost.
    let timer = Timer::start();
    drop(sandbox);
    timer.stop(Stage::Transform);
    report.duration_ms = ms(started);
    report
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Output bounds, the egress policy and the headers the host owns;
/// nothing is sent on failure.  On success, where each request goes.
fn check_requests(
    route: &Route,
    limits: &crate::config::Limits,
    requests: &[HttpRequest],
) -> Result<Vec<Destination>, Outcome> {
    if requests.is_empty() {
        return Err(Outcome::failed(
            FailureKind::Limit,
            false,
            "the transform asked to send an empty list of requests",
        ));
    }
    if requests.len() > limits.max_requests_per_step {
        return Err(Outcome::failed(
            FailureKind::Limit,
            false,
            format!(
                "the transform asked for {} requests in one step; at most {} (limits.max_requests_per_step)",
                requests.len(),
                limits.max_requests_per_step
            ),
        ));
    }
    let mut destinations = Vec::with_capacity(requests.len());
    for req in requests {
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&req.method.as_str()) {
            return Err(Outcome::failed(
                FailureKind::Limit,
                false,
                format!(
                    "request method {:?} is not one of GET, POST, PUT, PATCH, DELETE",
                    excerpt(&req.method, 16)
                ),
            ));
        }
        if let Some(h) = req.headers.iter().find(|h| {
            reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(&h.value).is_err()
        }) {
            return Err(Outcome::failed(
                FailureKind::Limit,
                false,
                format!(
                    "request header {:?} is not a valid HTTP header name and value",
                    excerpt(&h.name, 64)
                ),
            ));
        }
        if req.body.len() > limits.max_request_body_bytes {
            return Err(Outcome::failed(
                FailureKind::Limit,
                false,
                format!(
                    "request body of {} bytes exceeds {} (limits.max_request_body_bytes)",
                    req.body.len(),
                    limits.max_request_body_bytes
                ),
            ));
        }
        if req.headers.len() > limits.max_request_headers {
            return Err(Outcome::failed(
                FailureKind::Limit,
                false,
                format!(
                    "{} headers exceed {} (limits.max_request_headers)",
                    req.headers.len(),
                    limits.max_request_headers
                ),
            ));
        }
        let checked = Policy::check_headers(req.headers.iter().map(|h| h.name.as_str()))
            .and_then(|()| route.egress.check(&req.url));
        match checked {
            Ok(to) => destinations.push(to),
            Err(e) => {
                let message = route.redactor.apply(&e.to_string());
                tracing::error!(route = %route.name, transform_digest = %route.transform.digest, "{message}");
                return Err(Outcome::failed(FailureKind::Egress, false, message));
            }
        }
    }
    Ok(destinations)
}

fn record_requests(route: &Route, requests: &[HttpRequest]) -> Vec<RequestRecord> {
    requests
        .iter()
        .take(64)
        .map(|r| RequestRecord {
            method: r.method.chars().take(16).collect(),
            url: route.redactor.apply(&excerpt(&r.url, 2048)),
            headers: r
                .headers
                .iter()
                .take(64)
                .map(|h| {
                    let sensitive = [
                        "authorization",
                        "proxy-authorization",
                        "x-api-key",
                        "cookie",
                    ]
                    .contains(&h.name.to_ascii_lowercase().as_str());
                    let value = if sensitive {
                        "[redacted]".to_string()
                    } else {
                        route.redactor.apply(&h.value)
                    };
                    (h.name.clone(), value)
                })
                .collect(),
            body: route.redactor.apply(&excerpt(&r.body, 1 << 20)),
        })
        .collect()
}

/// A transport failure as the contract gives it to the transform.
fn transport_error(kind: TransportFailure, message: String) -> types::TransportError {
    use types::TransportError as T;
    match kind {
        TransportFailure::Dns => T::Dns(message),
        TransportFailure::Connect => T::Connect(message),
        TransportFailure::Tls => T::Tls(message),
        TransportFailure::Timeout => T::Timeout(message),
        TransportFailure::TooLarge => T::TooLarge(message),
        TransportFailure::EgressDenied => T::EgressDenied(message),
        // Anything else that got no answer is, to the transform, a
        // connection that failed; so is a request the breaker held (the
        // contract has no variant for it, and the host decides what
        // becomes of the delivery).
        TransportFailure::Other | TransportFailure::BreakerOpen => T::Connect(message),
    }
}
