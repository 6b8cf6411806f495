//! This node's own connection, outside the pool: it holds the node-name
//! lock (a session advisory lock: one live process per node name, like
//! `serve.lock` for a data directory; a killed process's session ends and
//! its lock with it) and LISTENs for other nodes' admits.  When the
//! database goes away, it reconnects by itself, takes its lock again,
//! LISTENs again, and wakes the scheduler (it may have missed a NOTIFY).
//!
//! Admits never NOTIFY inside their transaction: that takes a
//! cluster-wide lock at commit and serialises every notifying commit (4-6x
//! fewer admits/s, docs/notes/postgres.md section 8).  One NOTIFY follows,
//! in a transaction of its own without waiting for its flush, at most one
//! at a time, coalescing the admits that commit meanwhile.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use super::{PgOptions, Target, claims, pg_error};
use crate::store::StoreError;

/// The channel admits are announced on.
const CHANNEL: &str = "ztbridge_due";

/// The session, supervised.
pub(super) struct Session;

impl Session {
    /// Connects, takes the node-name lock (waiting up to 15 s for a
    /// previous session of this node to end), registers the node and
    /// takes its own claims of a previous life back.  Returns the
    /// supervising task and how many claims were recovered.
    pub(super) async fn start(
        target: Target,
        pool: Pool,
        options: PgOptions,
        wake: Arc<Notify>,
    ) -> Result<(JoinHandle<()>, usize), StoreError> {
        let (client, driver) = open(&target, &options.node, &wake, true).await?;
        let c = pool.get().await.map_err(super::pool_error)?;
        c.execute(
            "INSERT INTO nodes (node_id, version) VALUES ($1, $2)
             ON CONFLICT (node_id) DO UPDATE
                SET started_at = clock_timestamp(), heartbeat_at = clock_timestamp(),
                    version = excluded.version, stopping = false",
            &[&options.node, &env!("CARGO_PKG_VERSION")],
        )
        .await
        .map_err(pg_error("register this node"))?;
        let recovered = claims::recover(&c, &options.node).await?;
        drop(c);
        tracing::info!(
            node = %options.node,
            store = %target.shown,
            lease_secs = options.lease.as_secs_f64(),
            "joined the cluster on PostgreSQL"
        );
        let task = tokio::spawn(supervise(target, options.node, wake, client, driver));
        Ok((task, recovered))
    }
}

/// Keeps the session up: reconnects when it ends.
async fn supervise(
    target: Target,
    node: String,
    wake: Arc<Notify>,
    client: Client,
    driver: JoinHandle<()>,
) {
    let (mut client, mut driver) = (client, driver);
    loop {
        let _ = (&mut driver).await;
        drop(client);
        tracing::warn!("lost the PostgreSQL session; reconnecting");
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::time::sleep(backoff).await;
            match open(&target, &node, &wake, false).await {
                Ok((c, d)) => {
                    (client, driver) = (c, d);
                    tracing::info!("PostgreSQL session back");
                    wake.notify_one();
                    break;
                }
                Err(e) => {
                    tracing::debug!("reconnecting: {}", crate::text::error_chain(&e));
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One session: connected, locked (`wait`: up to 15 s; else a try), and
/// listening; notifications wake `wake`.
async fn open(
    target: &Target,
    node: &str,
    wake: &Arc<Notify>,
    wait: bool,
) -> Result<(Client, JoinHandle<()>), StoreError> {
    let (client, mut conn) = target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(pg_error(
            "cannot connect to PostgreSQL (is it running, and the [store] url right?)",
        ))?;
    let w = wake.clone();
    let driver = tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(_)) => w.notify_one(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let key = "ztbridge-node:".to_string() + node;
    let locked: bool = if wait {
        client
            .batch_execute("SET lock_timeout = '15s'")
            .await
            .map_err(pg_error("session settings"))?;
        match client
            .execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
            .await
        {
            Ok(_) => true,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                false
            }
            Err(e) => return Err(pg_error("take the node lock")(e)),
        }
    } else {
        client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )
            .await
            .map_err(pg_error("take the node lock"))?
            .try_get(0)?
    };
    if !locked {
        if wait {
            return Err(StoreError::Busy(format!(
                "another ztbridge node named {node:?} is connected to this database: give each node its own [store] node name"
            )));
        }
        tracing::error!(
            node,
            "another process took this node's name while the session was down"
        );
    }
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg_error("LISTEN"))?;
    Ok((client, driver))
}

/// Sends one NOTIFY per wake-up (coalescing those that come meanwhile).
pub(super) async fn notifier(pool: Pool, rung: Arc<Notify>) {
    loop {
        rung.notified().await;
        if let Ok(c) = pool.get().await {
            let _ = c
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('{CHANNEL}', ''); COMMIT"
                ))
                .await;
        }
    }
}
