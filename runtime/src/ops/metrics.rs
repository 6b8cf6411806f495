//! Prometheus metrics (`GET /metrics`, text format), through the
//! `prometheus` crate.  One registry per running service, so services
//! built side by side (tests) do not mix their counts.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::flow::FlowReport;
use crate::time::stage_cpu;

/// Every metric the service exports.
pub(crate) struct Metrics {
    /// This service's own registry (services built side by side in tests do not mix counts).
    registry: Registry,
    /// Webhooks that reached `/webhook` (past authentication).
    pub(crate) webhooks_received: IntCounter,
    /// Webhooks stored and acknowledged with 202.
    pub(crate) webhooks_accepted: IntCounter,
    /// Repeats recognised within the duplicate window (200, not stored).
    pub(crate) webhooks_duplicate: IntCounter,
    /// Webhooks refused, by reason (the error code in the answer): 4xx
    /// reasons, `unauthorized` (401), `overloaded`, `disk_full` and
    /// `store_unavailable` (503), `internal` (500).
    pub(crate) webhooks_rejected: IntCounterVec,
    /// Delivery attempts by route and outcome (delivered, retry, failed).
    pub attempts: IntCounterVec,
    /// Attempts that will be retried, by route.
    pub(crate) retries: IntCounterVec,
    /// Deliveries given up (dead letters), by route.
    pub(crate) dead_letters: IntCounterVec,
    /// Open deliveries (pending or in flight), set at each scrape.
    pub(crate) queue_depth: IntGauge,
    /// Age of the oldest event with an open delivery, set at each scrape.
    pub(crate) oldest_pending_age: prometheus::Gauge,
    /// Shared store: dead letters of the whole cluster, set at each scrape.
    pub(crate) cluster_dead_letters: IntGauge,
    /// Shared store: nodes whose heartbeat is younger than a lease.
    pub(crate) cluster_live_nodes: IntGauge,
    /// Wall time of one transform flow (sandbox and HTTP), by route.
    pub(crate) flow_duration: HistogramVec,
    /// Fuel one flow used, by route.
    pub(crate) flow_fuel: HistogramVec,
    /// Time a destination took to answer one request, by route.
    pub(crate) destination_latency: HistogramVec,
    /// Accept latency of `/webhook` (intake + durable commit).
    pub(crate) accept_latency: Histogram,
    /// Webhook connections open now: how close the listener is to its cap.
    pub(crate) connections_open: IntGauge,
    /// Times a connection arrived with `intake.max_connections` open: the
    /// cap is being hit (slow or idle clients, or too small a cap).
    pub(crate) connection_cap_reached: IntCounter,
    /// Connections closed to make room for a new one at the cap (the
    /// oldest with no request in progress).
    pub(crate) connections_evicted: IntCounter,
    /// Connections closed because the request header (or the next one,
    /// on an idle keep-alive connection) did not arrive in time.
    pub(crate) connections_timed_out: IntCounter,
    /// Circuit breaker of each destination that failed (0 closed, 1 open,
    /// 2 half-open: a probe is out): which destinations are held now.
    pub(crate) breaker_state: IntGaugeVec,
    /// Breaker transitions by destination and new state: how often a
    /// destination flaps.
    pub(crate) breaker_transitions: IntCounterVec,
    /// Deliveries given back unattempted because their destination's
    /// breaker was open, by route (not attempts: no request was sent).
    pub(crate) held: IntCounterVec,
    /// Deliveries running now, by route: how full each bulkhead is.
    pub(crate) route_in_flight: IntGaugeVec,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new_custom(Some("ztbridge".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let histogram_vec = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["route"])
                .unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let seconds = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let queue_depth = IntGauge::new("queue_depth", "Open deliveries (pending or in flight)")
            .unwrap_or_else(|_| unreachable_metric("queue_depth"));
        let _ = registry.register(Box::new(queue_depth.clone()));
        let oldest_pending_age = prometheus::Gauge::new(
            "oldest_pending_age_seconds",
            "Age of the oldest event with an open delivery (0: none)",
        )
        .unwrap_or_else(|_| unreachable_metric("oldest_pending_age_seconds"));
        let _ = registry.register(Box::new(oldest_pending_age.clone()));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let cluster_dead_letters = gauge(
            "cluster_dead_letters",
            "Dead letters of the whole cluster, read from the shared store (0 on SQLite: see dead_letters_total)",
        );
        let cluster_live_nodes = gauge(
            "cluster_live_nodes",
            "Nodes whose heartbeat is younger than a lease, read from the shared store (0 on SQLite)",
        );
        let accept_latency = Histogram::with_opts(
            HistogramOpts::new(
                "webhook_accept_seconds",
                "Time from a webhook's body read to its answer (intake and durable commit)",
            )
            .buckets(seconds.clone()),
        )
        .unwrap_or_else(|_| unreachable_metric("webhook_accept_seconds"));
        let _ = registry.register(Box::new(accept_latency.clone()));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        Metrics {
            breaker_state: gauge_vec(
                "breaker_state",
                "Circuit breaker of a destination: 0 closed, 1 open (requests held), 2 half-open (one probe out)",
                &["destination"],
            ),
            breaker_transitions: counter_vec(
                "breaker_transitions_total",
                "Circuit breaker transitions, by destination and new state (closed, open, half_open)",
                &["destination", "to"],
            ),
            held: counter_vec(
                "deliveries_held_total",
                "Deliveries given back unattempted because their destination's breaker was open",
                &["route"],
            ),
            route_in_flight: gauge_vec(
                "route_in_flight",
                "Deliveries running now, by route (bounded by the route's max_in_flight)",
                &["route"],
            ),
            webhooks_received: counter("webhooks_received_total", "Webhooks received"),
            webhooks_accepted: counter(
                "webhooks_accepted_total",
                "Webhooks stored and acknowledged",
            ),
            webhooks_duplicate: counter(
                "webhooks_duplicate_total",
                "Webhooks recognised as repeats (not delivered again)",
            ),
            webhooks_rejected: counter_vec(
                "webhooks_rejected_total",
                "Webhooks refused, by reason",
                &["reason"],
            ),
            attempts: counter_vec(
                "delivery_attempts_total",
                "Delivery attempts by route and outcome (delivered, retry, failed)",
                &["route", "outcome"],
            ),
            retries: counter_vec("retries_total", "Attempts that will be retried", &["route"]),
            dead_letters: counter_vec(
                "dead_letters_total",
                "Deliveries given up (failed state)",
                &["route"],
            ),
            queue_depth,
            oldest_pending_age,
            cluster_dead_letters,
            cluster_live_nodes,
            flow_duration: histogram_vec(
                "transform_flow_seconds",
                "Wall time of one transform flow, HTTP calls included",
                seconds.clone(),
            ),
            flow_fuel: histogram_vec(
                "transform_fuel",
                "Fuel one transform flow used",
                prometheus::exponential_buckets(10_000.0, 4.0, 10).unwrap_or_default(),
            ),
            destination_latency: histogram_vec(
                "destination_seconds",
                "Time a destination took to answer one request",
                seconds,
            ),
            accept_latency,
            connections_open: gauge("webhook_connections_open", "Webhook connections open now"),
            connection_cap_reached: counter(
                "webhook_connection_cap_reached_total",
                "Connections that arrived with intake.max_connections open",
            ),
            connections_evicted: counter(
                "webhook_connections_evicted_total",
                "Idle or header-reading connections closed to make room at the cap",
            ),
            connections_timed_out: counter(
                "webhook_connections_timed_out_total",
                "Connections closed because a request header did not arrive within intake.header_read_timeout_secs",
            ),
            registry,
        }
    }

    /// Records one delivery attempt.
    pub(crate) fn attempt(&self, route: &str, outcome: &str, report: &FlowReport) {
        self.attempts.with_label_values(&[route, outcome]).inc();
        match outcome {
            "retry" => self.retries.with_label_values(&[route]).inc(),
            "failed" => self.dead_letters.with_label_values(&[route]).inc(),
            _ => {}
        }
        self.flow_duration
            .with_label_values(&[route])
            .observe(report.duration_ms / 1000.0);
        self.flow_fuel
            .with_label_values(&[route])
            .observe(report.fuel_used as f64);
        let latency = self.destination_latency.with_label_values(&[route]);
        for r in report.steps.iter().flat_map(|s| s.responses.iter()) {
            latency.observe(r.elapsed.as_secs_f64());
        }
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        // Process-wide (the stage clocks are not per service), and only
        // when measuring is on (`ZTBRIDGE_STAGE_CPU=1`, the e2e bench).
        if stage_cpu::enabled() {
            text.push_str("# HELP ztbridge_stage_cpu_seconds_total CPU time spent per stage of the event path (ZTBRIDGE_STAGE_CPU=1)\n");
            text.push_str("# TYPE ztbridge_stage_cpu_seconds_total counter\n");
            for (stage, secs) in stage_cpu::totals() {
                text.push_str(&format!(
                    "ztbridge_stage_cpu_seconds_total{{stage=\"{}\"}} {secs}\n",
                    stage.name()
                ));
            }
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Metric names and help texts are constants that the crate accepts; a
/// failure here is a programming error caught by the unit test below.
fn unreachable_metric<T>(name: &str) -> T {
    panic!("metric {name}: invalid definition")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_defined_and_rendered() {
        let m = Metrics::new();
        m.webhooks_received.inc();
        m.webhooks_rejected
            .with_label_values(&["malformed_json"])
            .inc();
        let text = m.render();
        assert!(
            text.contains("ztbridge_webhooks_received_total 1"),
            "{text}"
        );
        assert!(
            text.contains("ztbridge_webhooks_rejected_total{reason=\"malformed_json\"} 1"),
            "{text}"
        );
        assert!(text.contains("ztbridge_queue_depth 0"), "{text}");
    }
}
