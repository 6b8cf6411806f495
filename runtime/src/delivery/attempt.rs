//! One attempt: run the route's flow for a claimed delivery in a fresh
//! sandbox, decide what is next ([`super::retry`]), log it under the
//! event's span, and record it in the store (retrying the record until it
//! lands: a delivery left in flight would only resume at the next start).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::Dispatcher;
use super::breaker::Guarded;
use super::bulkhead::Seat;
use super::retry::{self, Answer, Decision, Ending};
use crate::egress::HttpTransport;
use crate::flow::{self, FlowReport, Outcome};
use crate::ops::Metrics;
use crate::sandbox::Engine;
use crate::store::{AttemptRecord, Claim, Next, TransformState};
use crate::text::{display_id, excerpt};
use crate::time::{now_millis, rfc3339_millis};

/// What an attempt needs besides the claim and the route.
pub(super) struct Runner {
    /// Runs the transforms.
    pub(super) engine: Arc<Engine>,
    /// The transforms' durable state.
    pub(super) state: Arc<dyn TransformState>,
    /// Performs their requests.
    pub(super) transport: HttpTransport,
    /// Outcomes, flow durations and fuel, destination latency.
    pub(super) metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub(super) async fn attempt(
        self: Arc<Self>,
        claim: Claim,
        permit: OwnedSemaphorePermit,
        seat: Seat,
    ) {
        let span = tracing::info_span!(
            "event",
            event_id = %display_id(claim.event_id.as_deref()),
            receipt_id = %claim.receipt_id,
            route = %claim.key.route,
        );
        async move {
            let Some(route) = self.routes().get(&claim.key.route).cloned() else {
                // Removed by a reload between claim and start: give it back
                // (it waits for the route, like any stranded delivery).
                self.release(&claim).await;
                drop((permit, seat));
                self.wake.notify_one();
                return;
            };
            // Past its deadline (the retry horizon from acceptance, or from
            // `events retry`): a dead letter, not attempted.  Claimed late
            // after a stop, or held behind its alert's earlier events.
            let now = now_millis();
            if now > claim.deadline_ms {
                let reason = format!(
                    "gave up before attempt {}: the retry deadline (delivery.retry_horizon_secs) passed {} ago, at {}; `ztbridge events retry` re-queues it",
                    claim.attempt,
                    humanize_ms(now - claim.deadline_ms),
                    rfc3339_millis(claim.deadline_ms)
                );
                tracing::warn!(attempt = claim.attempt, "dead letter: {reason}");
                r_metrics_dead(&self.runner.metrics, &claim.key.route);
                let row = AttemptRecord {
                    attempt: claim.attempt,
                    at_ms: now,
                    outcome: serde_json::json!({ "outcome": "not_attempted", "reason": "retry_deadline" }),
                    last_status: None,
                    error: Some(reason.clone()),
                    steps: 0,
                    fuel_used: 0,
                    duration_ms: 0.0,
                    transform_digest: String::new(),
                };
                if self
                    .record_attempt(&claim, row, Next::Failed { reason })
                    .await
                {
                    self.room.settled();
                }
                drop(permit);
                self.wake.notify_one();
                return;
            }
            let input = flow::record(&flow::FlowInput {
                body: &claim.body,
                receipt_id: &claim.receipt_id,
                received_ms: claim.received_ms,
                attempt: claim.attempt,
            });
            let r = &self.runner;
            let guarded = Guarded::new(&r.transport, &self.breakers);
            // Boxed: the flow's future is about 14 KB (the sandbox's calls);
            // inline it made this task's future 15 KB, copied on every spawn
            // and at completion (memcpy was 4 % of the workers' samples).
            let report = Box::pin(flow::run(&r.engine, &route, &r.state, input, &guarded)).await;
            let (held, asked) = guarded.into_sets();
            let now = now_millis();
            // A request was held by its destination's breaker and the flow
            // did not finish: no attempt is counted (nothing reached the
            // destination), the delivery waits for the breaker.  Past its
            // retry horizon it goes through the retry policy instead.
            if !held.is_empty()
                && !matches!(report.outcome, Outcome::Done { .. })
                && now <= claim.deadline_ms
            {
                self.hold(&claim, held).await;
                drop((permit, seat));
                self.wake.notify_one();
                return;
            }
            self.breakers.settle_route(&claim.key.route, &asked);
            let next = next_for(&self.policy, &claim, &report, now);
            log(&claim, &report, &next);
            let outcome = match &next {
                Next::Delivered => "delivered",
                Next::Retry { .. } => "retry",
                Next::Failed { .. } => "failed",
            };
            r.metrics.attempt(&claim.key.route, outcome, &report);
            let settled = !matches!(next, Next::Retry { .. });
            if !self
                .record_attempt(&claim, record_of(&claim, &report, now), next)
                .await
            {
                return;
            }
            if settled {
                self.room.settled();
            }
            drop((permit, seat));
            self.wake.notify_one();
        }
        .instrument(span)
        .await
    }

    /// Gives a delivery whose request a breaker held back to pending,
    /// unattempted, and holds its route until the breaker's next probe.
    async fn hold(&self, claim: &Claim, destinations: BTreeSet<String>) {
        let list = destinations.iter().cloned().collect::<Vec<_>>().join(", ");
        tracing::info!(
            attempt = claim.attempt,
            destination = %list,
            "held, not attempted: destination breaker open; it goes when a probe gets through"
        );
        self.runner
            .metrics
            .held
            .with_label_values(&[&claim.key.route])
            .inc();
        // Before the store hands it out again: the scheduler must see the
        // route as held by then.
        self.breakers.hold_route(&claim.key.route, destinations);
        let reason = format!(
            "destination breaker open ({list}): held, not attempted; it goes when the destination answers a probe"
        );
        if let Err(e) = self.store.hold(claim.key.clone(), reason).await {
            tracing::error!(
                "cannot give a held delivery back (it resumes at the next start): {}",
                crate::text::error_chain(&e)
            );
        }
    }

    /// Records the attempt, retrying while the store fails; `false` when
    /// the service stopped first (the delivery resumes at the next start).
    async fn record_attempt(&self, claim: &Claim, row: AttemptRecord, next: Next) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .store
                .finish(claim.key.clone(), row.clone(), next.clone())
                .await
            {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(
                        "cannot record the attempt (retrying): {}",
                        crate::text::error_chain(&e)
                    );
                    if self.stopping() {
                        return false;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// The last response (or transport failure) of a flow.
fn last_answer(report: &FlowReport) -> Option<Answer> {
    let last = report.steps.last()?.responses.last()?;
    Some(match last.failure {
        Some(kind) => Answer::Transport(kind),
        None => Answer::Status {
            code: last.status,
            retry_after: last.retry_after.clone(),
        },
    })
}

/// Where the delivery goes after this attempt.
fn next_for(
    policy: &crate::config::DeliveryPolicy,
    claim: &Claim,
    report: &FlowReport,
    now: i64,
) -> Next {
    let failed = match &report.outcome {
        Outcome::Done { .. } => None,
        Outcome::Failed {
            kind,
            retryable,
            message,
            retry_after_seconds,
        } => Some((
            *retryable,
            *retry_after_seconds,
            format!("{kind:?} error: {}", excerpt(message, 500)),
        )),
        Outcome::Incomplete { message } => Some((
            false,
            None,
            format!("incomplete flow: {}", excerpt(message, 500)),
        )),
    };
    let ending = match &failed {
        None => Ending::Done,
        Some((retryable, retry_after_seconds, message)) => Ending::Failed {
            retryable: Some(*retryable),
            retry_after_seconds: *retry_after_seconds,
            message,
        },
    };
    let salt = claim
        .receipt_id
        .bytes()
        .chain(claim.key.route.bytes())
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let attempt = retry::Attempt {
        number: claim.attempt,
        ending,
        last: last_answer(report),
        deadline_ms: claim.deadline_ms,
        now_ms: now,
        salt,
    };
    match retry::decide(policy, &attempt) {
        Decision::Done => Next::Delivered,
        Decision::RetryAt(at_ms) => Next::Retry { at_ms },
        Decision::DeadLetter(reason) => Next::Failed { reason },
    }
}

/// The attempt as recorded.
fn record_of(claim: &Claim, report: &FlowReport, now: i64) -> AttemptRecord {
    AttemptRecord {
        attempt: claim.attempt,
        at_ms: now,
        outcome: serde_json::to_value(&report.outcome).unwrap_or(serde_json::Value::Null),
        last_status: report
            .steps
            .last()
            .and_then(|s| s.responses.last())
            .map(|r| r.status),
        error: match &report.outcome {
            Outcome::Done { .. } => None,
            Outcome::Failed { message, .. } | Outcome::Incomplete { message } => {
                Some(excerpt(message, 500))
            }
        },
        steps: report.steps.len() as u32,
        fuel_used: report.fuel_used,
        duration_ms: report.duration_ms,
        transform_digest: report.transform_digest.clone(),
    }
}

/// One log line per attempt, under the event's span; fields in plain form.
fn log(claim: &Claim, report: &FlowReport, next: &Next) {
    let last_status = report
        .steps
        .last()
        .and_then(|s| s.responses.last())
        .map(|r| r.status);
    let digest = report.transform_digest.as_str();
    match next {
        Next::Delivered => {
            let message = match &report.outcome {
                Outcome::Done { message } => message.as_str(),
                _ => "",
            };
            tracing::info!(
                attempt = claim.attempt,
                fuel = report.fuel_used,
                ms = report.duration_ms,
                transform_digest = digest,
                "delivered: {message}"
            );
        }
        Next::Retry { at_ms } => {
            let error = match &report.outcome {
                Outcome::Failed { message, .. } | Outcome::Incomplete { message } => {
                    excerpt(message, 500)
                }
                Outcome::Done { .. } => String::new(),
            };
            tracing::warn!(
                attempt = claim.attempt,
                last_status,
                transform_digest = digest,
                next_attempt_at = %rfc3339_millis(*at_ms),
                "delivery failed, will retry: {error}"
            );
        }
        Next::Failed { reason } => tracing::error!(
            attempt = claim.attempt,
            last_status,
            transform_digest = digest,
            "delivery failed (dead letter): {reason}"
        ),
    }
}

/// A duration for a message: "3 s", "2 min", "5 h".
fn humanize_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        ..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// Counts a dead letter given up before an attempt.
fn r_metrics_dead(metrics: &Metrics, route: &str) {
    metrics.dead_letters.with_label_values(&[route]).inc();
}
