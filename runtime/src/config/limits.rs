//! The numeric sections of the configuration: `[limits]` (the sandbox),
//! `[intake]` (inbound requests) and `[delivery]` (retries, back-pressure,
//! retention).  Plain data with defaults; the modules that enforce them
//! read them from here.

use serde::{Deserialize, Serialize};

/// Sandbox limits, per step (one `start` or `resume` call) and per flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wasm fuel per step (roughly one unit per instruction). The PagerDuty
    /// transform uses about a million on a typical event and 0.7 billion on
    /// an 8 MB one (the intake's default limit).
    pub fuel_per_step: u64,
    /// Wall-clock time per step, in milliseconds.
    pub step_timeout_ms: u64,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Steps (start + resumes) per flow.
    pub max_steps: u32,
    /// Requests one step may ask for.
    pub max_requests_per_step: usize,
    /// Body size of one outbound request, in bytes.
    pub max_request_body_bytes: usize,
    /// Headers on one outbound request.
    pub max_request_headers: usize,
    /// Response body kept and given back to the transform, in bytes.
    pub max_response_body_bytes: usize,
    /// Timeout of one outbound HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Guest stdout/stderr kept per flow, in bytes (more is an error).
    pub max_guest_output_bytes: usize,
    /// Instances that may exist at once (pooling allocator slots); also
    /// the number of flows running concurrently.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel_per_step: 3_000_000_000,
            step_timeout_ms: 5_000,
            memory_bytes: 64 << 20,
            max_steps: 16,
            max_requests_per_step: 8,
            max_request_body_bytes: 1 << 20,
            max_request_headers: 32,
            max_response_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            max_guest_output_bytes: 64 << 10,
            max_instances: 64,
        }
    }
}

/// Inbound limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeLimits {
    /// Request body as sent (compressed), in bytes.
    pub max_body_bytes: usize,
    /// Body after inflating, in bytes.
    pub max_decoded_bytes: usize,
    /// Nesting depth of JSON arrays and objects.
    pub max_json_depth: usize,
    /// A connection must send a request's whole header within this many
    /// seconds of being ready for it (accepted, or idle after an answer),
    /// else it is closed: slow clients cannot hold connections, and an
    /// idle keep-alive connection is closed after this long (hyper's
    /// header-read timer also runs between requests).
    pub header_read_timeout_secs: u64,
    /// A request body must arrive whole within this many seconds of its
    /// header, else the answer is 408 (a trickled body cannot hold a
    /// connection and its handler).
    pub body_read_timeout_secs: u64,
    /// Open webhook connections at most; at the cap the oldest connection
    /// with no request in progress is closed for a new one.  Default: the
    /// open-file limit less headroom for the store, destinations and the
    /// runtime (see `max_connections_default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

impl IntakeLimits {
    /// The connection cap in effect: `max_connections`, or the soft
    /// open-file limit (RLIMIT_NOFILE) less 64 descriptors for the store
    /// and the runtime and two per sandbox instance (`max_instances`) for
    /// connections to destinations; at least 16.
    pub fn max_connections_effective(&self, max_instances: u32) -> usize {
        self.max_connections
            .unwrap_or_else(|| max_connections_default(max_instances))
    }
}

/// See [`IntakeLimits::max_connections_effective`].
pub fn max_connections_default(max_instances: u32) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    let headroom = 64 + 2 * u64::from(max_instances);
    limit.saturating_sub(headroom).clamp(16, 1 << 20) as usize
}

impl Default for IntakeLimits {
    fn default() -> IntakeLimits {
        IntakeLimits {
            max_body_bytes: 2 << 20,
            max_decoded_bytes: 8 << 20,
            max_json_depth: 64,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 15,
            max_connections: None,
        }
    }
}

/// How deliveries are retried, bounded and kept (`[delivery]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryPolicy {
    /// Most attempts per route and event, the first included; 0: no limit
    /// but the retry horizon.
    pub max_attempts: u32,
    /// Keep retrying a delivery for this long after it was accepted (or
    /// re-queued by `events retry`), then give up.  Default: 24 hours.
    pub retry_horizon_secs: u64,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff_ms: u64,
    /// Upper bound of one delay (Retry-After included).
    pub max_backoff_ms: u64,
    /// Open (pending or in-flight) deliveries; past it `/webhook` answers
    /// 503 with Retry-After instead of accepting what it cannot keep.
    pub max_pending: usize,
    /// Free space the data directory must keep; below it `/webhook`
    /// answers 503.
    pub min_free_disk_mb: u64,
    /// The same body received again within this many seconds is
    /// recognised and delivered once (0: off).
    pub dedupe_window_secs: u64,
    /// Delivered events are kept this long, then purged (failed ones are
    /// kept until purged or retried).
    pub retain_delivered_hours: u64,
    /// On shutdown, how long running attempts may take to finish; what
    /// does not finish is attempted again at the next start.
    pub drain_timeout_ms: u64,
    /// Bulkheads: at most this many deliveries of one route run at once,
    /// so a route whose destination hangs holds only its share of the
    /// sandbox slots (`limits.max_instances`) while the others deliver.
    /// Default (unset): the slots divided by the number of routes, at
    /// least 1.  A route's own `max_in_flight` wins over it.
    pub route_max_in_flight: Option<u32>,
    /// Circuit breaker: after this many consecutive failures of one
    /// destination (scheme, host and port; connection, timeout, 5xx,
    /// 429), its requests are held and one probe goes at the back-off
    /// rate until one succeeds.  0: no breaker.
    pub breaker_failures: u32,
    /// The longest wait between two probes of an open breaker (the wait
    /// starts at `initial_backoff_ms` and doubles after each failed
    /// probe): how long, at most, deliveries wait after a destination
    /// came back.
    pub breaker_max_probe_ms: u64,
}

impl Default for DeliveryPolicy {
    fn default() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 0,
            retry_horizon_secs: 86_400,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            max_pending: 10_000,
            min_free_disk_mb: 256,
            dedupe_window_secs: 600,
            retain_delivered_hours: 168,
            drain_timeout_ms: 10_000,
            route_max_in_flight: None,
            breaker_failures: 5,
            breaker_max_probe_ms: 5_000,
        }
    }
}

impl DeliveryPolicy {
    /// `retry_horizon_secs` in milliseconds (deadlines are stored in ms).
    pub fn horizon_ms(&self) -> i64 {
        (self.retry_horizon_secs.saturating_mul(1000)).min(i64::MAX as u64) as i64
    }
}
