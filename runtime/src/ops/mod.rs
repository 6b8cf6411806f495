//! Operations: what the service tells its operators and its supervisor.
//! Prometheus [`metrics`], systemd [`notify`] (readiness, watchdog,
//! stopping), and the [`sample`] alert that checks a route end to end.
//!
//! May import: `flow` (the report an attempt's metrics are read from),
//! `time` (the stage CPU clocks).

pub(crate) mod metrics;
pub mod notify;
pub mod sample;

pub(crate) use metrics::Metrics;
