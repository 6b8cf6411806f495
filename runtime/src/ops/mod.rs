//! Operations: what the service tells its operators and its supervisor.
//! Prometheus [`metrics`], and systemd [`notify`] (readiness, watchdog,
//! stopping).
//!
//! May import: `flow` (the report an attempt's metrics are read from),
//! `time` (the stage CPU clocks).

pub(crate) mod metrics;
pub mod notify;

pub(crate) use metrics::Metrics;
