//! systemd integration (`Type=notify`): READY=1 once transforms are loaded,
//! the store has recovered and the port is bound; WATCHDOG=1 pings while
//! the service is really healthy; STOPPING=1 when shutdown begins.
//!
//! Every call is a no-op without `$NOTIFY_SOCKET` (not under systemd).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: &[NotifyState], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("systemd notification {what} failed: {e}");
    }
}

/// The service is ready to take webhooks.
pub fn ready() {
    send(
        &[
            NotifyState::Ready,
            NotifyState::Status("accepting webhooks"),
        ],
        "READY",
    );
}

/// A reload has begun (`systemctl reload`); `ready` ends it.
pub fn reloading() {
    send(
        &[NotifyState::Reloading, NotifyState::Status("reloading")],
        "RELOADING",
    );
}

/// Shutdown has begun.
pub(crate) fn stopping() {
    send(
        &[
            NotifyState::Stopping,
            NotifyState::Status("draining deliveries"),
        ],
        "STOPPING",
    );
}

/// Pings the watchdog at half its interval, but only while the service is
/// healthy: the delivery scheduler has looped recently and the event store
/// answers.  A wedged service stops pinging and systemd restarts it.
/// Returns at once when the watchdog is off (`WatchdogSec` unset).
pub(crate) async fn watchdog<F, Fut>(health: F)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog on"
    );
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        match health(period).await {
            Ok(()) => send(&[NotifyState::Watchdog], "WATCHDOG"),
            Err(why) => tracing::error!("not pinging the systemd watchdog: {why}"),
        }
    }
}
